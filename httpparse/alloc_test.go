//go:build !race

package httpparse

import "testing"

func init() { checkAllocs = true }

func TestParseAllocs(t *testing.T) {
	for _, tt := range benchRequests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			var r Request
			if allocs := testing.AllocsPerRun(100, func() {
				if _, err := r.Parse(in, nil); err != nil {
					t.Fatal(err)
				}
			}); allocs != 0 {
				t.Errorf("Parse: %v allocs per run, want 0", allocs)
			}
		})
	}
}

func TestHeaderAllocs(t *testing.T) {
	var r Request
	if _, err := r.Parse([]byte(benchRequests[2].in), nil); err != nil {
		t.Fatal(err)
	}
	if allocs := testing.AllocsPerRun(100, func() {
		if r.Header("X-FORWARDED-PROTO") == nil || r.Header("absent") != nil {
			t.Fatal("wrong Header result")
		}
	}); allocs != 0 {
		t.Errorf("Header: %v allocs per run, want 0", allocs)
	}
}

func TestQueryAllocs(t *testing.T) {
	q := []byte("key=user%2D42&key=news+feed&lastEventId=1234&flag")
	dst := make([]byte, 0, 256)
	if allocs := testing.AllocsPerRun(100, func() {
		dst = dst[:0]
		for rest := q; len(rest) > 0; {
			var name, value []byte
			name, value, rest = NextQuery(rest)
			var err error
			if dst, err = AppendUnescape(dst, name, true); err != nil {
				t.Fatal(err)
			}
			if dst, err = AppendUnescape(dst, value, true); err != nil {
				t.Fatal(err)
			}
		}
	}); allocs != 0 {
		t.Errorf("NextQuery+AppendUnescape: %v allocs per run, want 0", allocs)
	}
}

func TestDecodeChunkedAllocs(t *testing.T) {
	in := []byte("5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n")
	dst := make([]byte, 0, 64)
	if allocs := testing.AllocsPerRun(100, func() {
		if _, _, err := DecodeChunked(dst, in, 1024); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Errorf("DecodeChunked: %v allocs per run, want 0", allocs)
	}
}
