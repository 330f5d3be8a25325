package httpparse

import (
	"errors"
	"strings"
	"testing"
)

var goodChunked = []struct {
	name string
	in   string
	want string
	n    int // bytes consumed; 0 means all of in
}{
	{"one_chunk", "5\r\nhello\r\n0\r\n\r\n", "hello", 0},
	{"empty_body", "0\r\n\r\n", "", 0},
	{"several_chunks", "3\r\nabc\r\n1\r\n\n\r\n2\r\nde\r\n0\r\n\r\n", "abc\nde", 0},
	{"hex_sizes", "a\r\n0123456789\r\nB\r\n0123456789A\r\n0\r\n\r\n", "01234567890123456789A", 0},
	{"leading_zeros", "0000000000000003\r\nabc\r\n0\r\n\r\n", "abc", 0},
	{"extensions_ignored", "3;name=value;x\r\nabc\r\n0;last=\"q\"\r\n\r\n", "abc", 0},
	{"trailing_whitespace", "3 \t\r\nabc\r\n0 \r\n\r\n", "abc", 0},
	{"trailers_ignored", "3\r\nabc\r\n0\r\nX-Checksum: 1\r\nX-Empty:\r\n\r\n", "abc", 0},
	{"data_with_crlf", "4\r\n\r\n\r\n\r\n0\r\n\r\n", "\r\n\r\n", 0},
	{"pipelined_request_follows", "3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n", "abc", 13},
}

var badChunked = []struct {
	name string
	in   string
	err  error
}{
	{"size_not_hex", "x\r\nabc\r\n0\r\n\r\n", ErrMalformed},
	{"size_empty", "\r\nabc\r\n0\r\n\r\n", ErrMalformed},
	{"size_negative", "-3\r\nabc\r\n0\r\n\r\n", ErrMalformed},
	{"size_0x_prefix", "0x3\r\nabc\r\n0\r\n\r\n", ErrMalformed},
	{"size_leading_space", " 3\r\nabc\r\n0\r\n\r\n", ErrMalformed},
	{"size_space_before_ext", "3 ;x\r\nabc\r\n0\r\n\r\n", ErrMalformed},
	{"size_17_digits", "00000000000000003\r\nabc\r\n0\r\n\r\n", ErrMalformed},
	{"size_overflow", "8000000000000000\r\n", ErrMalformed},
	{"size_line_too_long", "3;" + strings.Repeat("x", maxChunkLine) + "\r\nabc\r\n0\r\n\r\n", ErrMalformed},
	{"size_line_too_long_early", "3;" + strings.Repeat("x", maxChunkLine), ErrMalformed},
	{"smuggle_bare_lf_size_line", "3\nabc\r\n0\r\n\r\n", ErrMalformed},
	{"smuggle_bare_cr_in_ext", "3;a\rb\r\nabc\r\n0\r\n\r\n", ErrMalformed},
	{"smuggle_bare_cr_early", "3;a\rb", ErrMalformed},
	{"smuggle_lf_in_ext", "3;a\nb\r\nabc\r\n0\r\n\r\n", ErrMalformed},
	{"data_too_long", "3\r\nabcd\r\n0\r\n\r\n", ErrMalformed},
	{"data_missing_lf", "3\r\nabc\rx0\r\n\r\n", ErrMalformed},
	{"data_bare_lf", "3\r\nabc\n0\r\n\r\n", ErrMalformed},
	{"trailer_no_colon", "0\r\nX-A\r\n\r\n", ErrMalformed},
	{"trailer_obs_fold", "0\r\nX-A: 1\r\n 2\r\n\r\n", ErrMalformed},
	{"trailer_bare_lf", "0\r\nX-A: 1\n\r\n", ErrMalformed},
	{"trailer_bad_value", "0\r\nX-A: \x00\r\n\r\n", ErrMalformed},
	{"final_bare_lf", "0\r\n\n", ErrMalformed},
}

func TestDecodeChunkedGood(t *testing.T) {
	for _, tt := range goodChunked {
		t.Run(tt.name, func(t *testing.T) {
			wantN := tt.n
			if wantN == 0 {
				wantN = len(tt.in)
			}
			out, n, err := DecodeChunked([]byte("pre:"), []byte(tt.in), -1)
			if err != nil || n != wantN || string(out) != "pre:"+tt.want {
				t.Fatalf("DecodeChunked = %q, %d, %v; want %q, %d, nil", out, n, err, "pre:"+tt.want, wantN)
			}
		})
	}
}

func TestDecodeChunkedBad(t *testing.T) {
	for _, tt := range badChunked {
		t.Run(tt.name, func(t *testing.T) {
			out, n, err := DecodeChunked([]byte("pre:"), []byte(tt.in), -1)
			if !errors.Is(err, tt.err) {
				t.Fatalf("DecodeChunked(%q) error %v, want %v", tt.in, err, tt.err)
			}
			if n != 0 || string(out) != "pre:" {
				t.Errorf("on error: %q, %d; want dst unchanged, 0", out, n)
			}
		})
	}
}

// TestDecodeChunkedIncremental cuts every good body at every byte: each
// prefix needs more, and leaves dst as it was.
func TestDecodeChunkedIncremental(t *testing.T) {
	for _, tt := range goodChunked {
		t.Run(tt.name, func(t *testing.T) {
			_, n, err := DecodeChunked(nil, []byte(tt.in), -1)
			if err != nil {
				t.Fatal(err)
			}
			for k := range n {
				out, m, err := DecodeChunked([]byte("pre:"), []byte(tt.in[:k]), -1)
				if !errors.Is(err, ErrNeedMore) || m != 0 || string(out) != "pre:" {
					t.Fatalf("prefix %q: %q, %d, %v; want pre:, 0, ErrNeedMore", tt.in[:k], out, m, err)
				}
			}
		})
	}
}

func TestDecodeChunkedMax(t *testing.T) {
	tests := []struct {
		name string
		in   string
		max  int
		err  error
	}{
		{"at_max", "5\r\nhello\r\n0\r\n\r\n", 5, nil},
		{"over_max", "5\r\nhello\r\n0\r\n\r\n", 4, ErrBodyTooLarge},
		{"sum_over_max", "3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n", 5, ErrBodyTooLarge},
		{"zero_max_empty_body", "0\r\n\r\n", 0, nil},
		{"zero_max", "1\r\na\r\n0\r\n\r\n", 0, ErrBodyTooLarge},
		// 413 from the size line alone: no need to wait for 16 MiB of data.
		{"announced_before_data", "1000000\r\nabc", 1 << 20, ErrBodyTooLarge},
		{"largest_size", "7fffffffffffffff\r\n", 1 << 20, ErrBodyTooLarge},
		{"need_more_under_max", "5\r\nhel", 5, ErrNeedMore},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := DecodeChunked(nil, []byte(tt.in), tt.max)
			if tt.err == nil && err != nil || !errors.Is(err, tt.err) {
				t.Fatalf("DecodeChunked(max %d) = %v, want %v", tt.max, err, tt.err)
			}
		})
	}
}
