package httpparse

import (
	"bufio"
	"bytes"
	"net/http"
	"strings"
	"testing"
)

// benchRequests are the heads sseloop sees most: a subscription from
// EventSource, a trigger from an application, and a browser head with
// cookies and client hints.
var benchRequests = []struct {
	name string
	in   string
}{
	{"small_get", "GET /events?key=news HTTP/1.1\r\nHost: localhost:8080\r\nAccept: text/event-stream\r\n\r\n"},
	{"trigger_post", "POST /trigger/user-42?event=update HTTP/1.1\r\n" +
		"Host: sse.internal:8080\r\n" +
		"User-Agent: GuzzleHttp/7\r\n" +
		"Accept: application/json\r\n" +
		"Content-Type: application/json\r\n" +
		"Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhcHAiLCJleHAiOjE3MDAwMDAwMDB9.c2lnbmF0dXJl\r\n" +
		"Content-Length: 27\r\n\r\n"},
	{"large_head", "GET /events?key=user-42&key=news&lastEventId=1234 HTTP/1.1\r\n" +
		"Host: app.example.com\r\n" +
		"Connection: keep-alive\r\n" +
		"Accept: text/event-stream\r\n" +
		"Cache-Control: no-cache\r\n" +
		"Last-Event-ID: 1234\r\n" +
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n" +
		"sec-ch-ua: \"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\"\r\n" +
		"sec-ch-ua-mobile: ?0\r\n" +
		"sec-ch-ua-platform: \"Linux\"\r\n" +
		"Origin: https://app.example.com\r\n" +
		"Sec-Fetch-Site: same-origin\r\n" +
		"Sec-Fetch-Mode: cors\r\n" +
		"Sec-Fetch-Dest: empty\r\n" +
		"Referer: https://app.example.com/dashboard/projects/42?tab=activity\r\n" +
		"Accept-Encoding: gzip, deflate, br, zstd\r\n" +
		"Accept-Language: en-GB,en;q=0.9,fr;q=0.8,de;q=0.7\r\n" +
		"Authorization: Bearer " + strings.Repeat("eyJhbGciOiJSUzI1NiJ9", 20) + "\r\n" +
		"Cookie: session=" + strings.Repeat("0123456789abcdef", 64) + "; _ga=GA1.2.1234567890.1700000000; theme=dark; csrftoken=" + strings.Repeat("x", 64) + "\r\n" +
		"X-Request-ID: 7f3c9a52-5d4e-4b8a-9e3f-2c1d0b9a8e7f\r\n" +
		"X-Forwarded-For: 203.0.113.7, 198.51.100.23\r\n" +
		"X-Forwarded-Proto: https\r\n\r\n"},
}

func BenchmarkParse(b *testing.B) {
	for _, bb := range benchRequests {
		b.Run(bb.name, func(b *testing.B) {
			in := []byte(bb.in)
			var r Request
			b.ReportAllocs()
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				if _, err := r.Parse(in, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkNetHTTPReadRequest is the standard-library baseline on the same
// heads. The readers are reused, so only ReadRequest's own work counts.
func BenchmarkNetHTTPReadRequest(b *testing.B) {
	for _, bb := range benchRequests {
		b.Run(bb.name, func(b *testing.B) {
			in := []byte(bb.in)
			rd := bytes.NewReader(in)
			br := bufio.NewReaderSize(rd, 16<<10)
			b.ReportAllocs()
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				rd.Reset(in)
				br.Reset(rd)
				if _, err := http.ReadRequest(br); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkHeader(b *testing.B) {
	var r Request
	if _, err := r.Parse([]byte(benchRequests[2].in), nil); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if r.Header("x-forwarded-proto") == nil {
			b.Fatal("missing")
		}
	}
}

func BenchmarkDecodeChunked(b *testing.B) {
	var in []byte
	for range 16 {
		in = append(in, "100\r\n"...)
		in = append(in, bytes.Repeat([]byte("d"), 256)...)
		in = append(in, "\r\n"...)
	}
	in = append(in, "0\r\n\r\n"...)
	dst := make([]byte, 0, 4096)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, _, err := DecodeChunked(dst, in, 1<<20); err != nil {
			b.Fatal(err)
		}
	}
}
