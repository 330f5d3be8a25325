package engine

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// FuzzRequestPath sends arbitrary bytes through the whole request path of a
// real engine on 127.0.0.1:0: parser, router, auth, CORS, triggers, streams.
// Why: whatever a client sends, every answer must be a well-formed HTTP
// response (or a valid event stream), and the server must keep serving.
// Seeds: the cases below and testdata/fuzz/FuzzRequestPath.
//
//	go test -run='^$' -fuzz='^FuzzRequestPath$' -fuzztime=30s ./engine/
func FuzzRequestPath(f *testing.F) {
	s := startServer(f, func(c *Config) {
		c.Loops = 1
		c.Auth.JWTSecret = testSecret
		c.Auth.PublicKeys = []string{"pub*"}
		c.Auth.PublishKeys = []string{"fuzz-publisher"}
		c.CORS.AllowedOrigins = []string{"https://app.example"}
		c.Limits.MaxHeadBytes = 2048
		c.Limits.MaxBodyBytes = 2048
	})
	for _, seed := range []string{
		"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
		"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /events?key=pub1&lastEventId=0 HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n\r\n",
		"GET /events/secret HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a.b.c\r\n\r\n",
		"POST /trigger/pub1?event=e HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer fuzz-publisher\r\nContent-Length: 5\r\n\r\nhello",
		"POST /trigger HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer fuzz-publisher\r\nTransfer-Encoding: chunked\r\n\r\n1c\r\n{\"events\":[{\"key\":\"pub2\"}]}\r\n0\r\n\r\n",
		"OPTIONS /trigger/a HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n\r\n",
		"POST /trigger/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET /metrics HTTP/1.0\r\n\r\n",
		"\x16\x03\x01\x00",
	} {
		f.Add([]byte(seed))
	}
	client := &http.Client{Timeout: 5 * time.Second}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 4096 {
			return
		}
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = c.Write(in)
		// Half-close: the server sees EOF and closes after answering what
		// it could, so every exchange ends without waiting for a timeout.
		_ = c.(*net.TCPConn).CloseWrite()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		out, err := io.ReadAll(c)
		if err != nil && !isPeerGone(err) {
			t.Fatalf("server did not finish the exchange: %v (got %q)", err, out)
		}
		if err := checkResponses(out); err != nil {
			t.Fatalf("%v\ninput:  %q\noutput: %q", err, in, out)
		}
		resp, err := client.Get(s.url("/healthz"))
		if err != nil {
			t.Fatalf("server stopped serving after input %q: %v", in, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("healthz %d after input %q", resp.StatusCode, in)
		}
	})
}

// checkResponses checks that out is a sequence of complete HTTP/1.1
// responses, optionally ending in an event stream.
func checkResponses(out []byte) error {
	br := bufio.NewReader(bytes.NewReader(out))
	for {
		if _, err := br.Peek(1); err == io.EOF {
			return nil
		}
		// Read as the answer to a HEAD, then decide: a HEAD /healthz answer
		// has a Content-Length but no body. Our bodies never start with
		// "HTTP/1." (they are fixed texts, JSON or metrics).
		resp, err := http.ReadResponse(br, &http.Request{Method: "HEAD"})
		if err != nil {
			return errors.New("malformed response head: " + err.Error())
		}
		if resp.ProtoMajor != 1 || resp.ProtoMinor != 1 || resp.StatusCode < 100 || resp.StatusCode > 599 {
			return errors.New("bad status line " + resp.Status)
		}
		if resp.StatusCode >= 400 && !resp.Close {
			return errors.New("error response without Connection: close")
		}
		if resp.Header.Get("Content-Type") == "text/event-stream" {
			return checkStream(br)
		}
		if resp.StatusCode < 200 || resp.StatusCode == 204 || resp.ContentLength <= 0 {
			continue
		}
		if next, _ := br.Peek(7); string(next) == "HTTP/1." || len(next) == 0 {
			continue // the answer to a HEAD
		}
		if _, err := io.CopyN(io.Discard, br, resp.ContentLength); err != nil {
			return errors.New("body shorter than Content-Length")
		}
	}
}

// checkStream checks the rest of out is SSE: "retry:" first, then fields
// and comments only.
func checkStream(br *bufio.Reader) error {
	first, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(first, "retry: ") {
		return errors.New("stream does not start with retry: " + first)
	}
	for {
		line, err := br.ReadString('\n')
		if err == io.EOF {
			if line != "" {
				return errors.New("stream ends inside a line")
			}
			return nil
		}
		switch {
		case line == "\n", strings.HasPrefix(line, ":"), strings.HasPrefix(line, "id: "),
			strings.HasPrefix(line, "event: "), strings.HasPrefix(line, "data: "), line == "data:\n":
		default:
			return errors.New("not an SSE line: " + line)
		}
	}
}
