package bench

import (
	"bytes"
	"errors"
	"strconv"
)

// Errors of the load generator's HTTP response reader.
var (
	// ErrBadResponse means a response head or chunked body is malformed.
	ErrBadResponse = errors.New("bench: malformed HTTP response")
	// ErrHeadTooLarge means a response head exceeds maxRespHead bytes.
	ErrHeadTooLarge = errors.New("bench: HTTP response head too large")
)

// maxRespHead bounds a buffered response head.
const maxRespHead = 16 << 10

// respHead is what the load generator needs from a response head.
type respHead struct {
	status      int
	chunked     bool
	contentType string
}

// parseRespHead looks for a complete response head at the start of b. It
// returns the head length n (0 when more bytes are needed) or an error.
func parseRespHead(b []byte) (h respHead, n int, err error) {
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		if len(b) > maxRespHead {
			return h, 0, ErrHeadTooLarge
		}
		return h, 0, nil
	}
	n = end + 4
	lines := bytes.Split(b[:end], []byte("\r\n"))
	// Status line: HTTP/1.x SP 3DIGIT [SP reason]
	sl := lines[0]
	if len(sl) < 12 || !bytes.HasPrefix(sl, []byte("HTTP/1.")) || sl[8] != ' ' || (len(sl) > 12 && sl[12] != ' ') {
		return h, 0, ErrBadResponse
	}
	code, err := strconv.Atoi(string(sl[9:12]))
	if err != nil {
		return h, 0, ErrBadResponse
	}
	h.status = code
	for _, l := range lines[1:] {
		i := bytes.IndexByte(l, ':')
		if i <= 0 {
			return h, 0, ErrBadResponse
		}
		name, value := l[:i], bytes.TrimSpace(l[i+1:])
		switch {
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			h.chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Content-Type")):
			h.contentType = string(value)
		}
	}
	return h, n, nil
}

// chunkDecoder decodes a chunked body incrementally (RFC 9112 §7.1): chunk
// extensions and trailers are skipped. The zero value is ready to use.
type chunkDecoder struct {
	state   uint8
	n       int64 // bytes left in the current chunk, or the size being read
	digits  int
	lineLen int // trailer line length so far
}

const (
	chunkSize uint8 = iota
	chunkExt
	chunkData
	chunkDataEnd
	chunkTrailer
	chunkDone
)

// feed decodes b and passes each piece of chunk data to out. done reports
// that the last chunk and trailers were read; bytes after that are ignored.
func (d *chunkDecoder) feed(b []byte, out func([]byte)) (done bool, err error) {
	for len(b) > 0 {
		switch d.state {
		case chunkSize, chunkExt:
			c := b[0]
			b = b[1:]
			switch {
			case c == '\n':
				if d.digits == 0 {
					return false, ErrBadResponse
				}
				if d.n == 0 {
					d.state, d.lineLen = chunkTrailer, 0
				} else {
					d.state = chunkData
				}
				d.digits = 0
			case c == '\r':
			case d.state == chunkExt:
			case c == ';' || c == ' ' || c == '\t':
				d.state = chunkExt
			default:
				v := unhex(c)
				if v < 0 || d.digits >= 12 {
					return false, ErrBadResponse
				}
				d.n = d.n<<4 | int64(v)
				d.digits++
			}
		case chunkData:
			k := int64(len(b))
			if k > d.n {
				k = d.n
			}
			out(b[:k])
			b = b[k:]
			d.n -= k
			if d.n == 0 {
				d.state = chunkDataEnd
			}
		case chunkDataEnd:
			c := b[0]
			b = b[1:]
			switch c {
			case '\r':
			case '\n':
				d.state = chunkSize
			default:
				return false, ErrBadResponse
			}
		case chunkTrailer:
			c := b[0]
			b = b[1:]
			switch c {
			case '\r':
			case '\n':
				if d.lineLen == 0 {
					d.state = chunkDone
					return true, nil
				}
				d.lineLen = 0
			default:
				d.lineLen++
			}
		case chunkDone:
			return true, nil
		}
	}
	return d.state == chunkDone, nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}
