package httpparse

import "bytes"

// maxChunkLine bounds a chunk-size or trailer line, CRLF included, like
// net/http's maxLineLength: a sender cannot make us buffer an endless
// chunk extension while we wait for its end.
const maxChunkLine = 4096

// DecodeChunked decodes a complete chunked body (RFC 9112 section 7.1) at the
// start of buf and appends its data to dst. It returns the extended slice and
// n, the bytes of buf consumed: chunks, last-chunk, trailer section and final
// CRLF. The next pipelined request starts at buf[n].
//
// Chunk sizes are 1 to 16 hex digits, optionally followed by spaces or tabs
// before the CRLF. Chunk extensions (";..." right after the size) and
// trailer fields are checked for framing and otherwise ignored. Every line
// must end in CRLF and be at most 4096 bytes; unlike the head, a bare LF is
// malformed here, as in net/http, since line-ending disagreements inside
// bodies are a known smuggling vector.
//
// max is the largest decoded size allowed in bytes (a negative max means no
// limit). ErrBodyTooLarge is returned as soon as a chunk-size line announces
// more, before the data arrives. ErrNeedMore means buf ends before the body
// does: call again with the whole buffer and the same dst. ErrMalformed
// means bad framing. On any error out is dst, with its length unchanged.
//
// It does not allocate when dst has room for the decoded data.
func DecodeChunked(dst, buf []byte, max int) (out []byte, n int, err error) {
	n0 := len(dst)
	total := 0
	i := 0
	for {
		size, next, err := chunkSize(buf, i)
		if err != nil {
			return dst[:n0], 0, err
		}
		if max >= 0 && size > uint64(max-total) {
			return dst[:n0], 0, ErrBodyTooLarge
		}
		i = next
		if size == 0 {
			break
		}
		// Check the CRLF after the data as soon as its bytes are here, so
		// a bad frame is reported without waiting for more input.
		avail := uint64(len(buf) - i)
		if avail > size && buf[i+int(size)] != '\r' || avail > size+1 && buf[i+int(size)+1] != '\n' {
			return dst[:n0], 0, ErrMalformed
		}
		if avail < size+2 {
			return dst[:n0], 0, ErrNeedMore
		}
		dst = append(dst, buf[i:i+int(size)]...)
		total += int(size)
		i += int(size) + 2
	}

	// trailer-section CRLF
	for {
		line, next, err := chunkLine(buf, i)
		if err != nil {
			return dst[:n0], 0, err
		}
		i = next
		if len(line) == 0 {
			return dst, i, nil
		}
		if !validFieldLine(line) {
			return dst[:n0], 0, ErrMalformed
		}
	}
}

// chunkSize parses the chunk-size line at buf[i:] and returns the size and
// the index after its CRLF. It follows net/http: trailing whitespace is
// removed, then anything from the first ';' (the extension) is ignored,
// and what is left must be 1 to 16 hex digits.
func chunkSize(buf []byte, i int) (size uint64, next int, err error) {
	line, next, err := chunkLine(buf, i)
	if err != nil {
		return 0, 0, err
	}
	for len(line) > 0 && (line[len(line)-1] == ' ' || line[len(line)-1] == '\t') {
		line = line[:len(line)-1]
	}
	if j := bytes.IndexByte(line, ';'); j >= 0 {
		line = line[:j]
	}
	if len(line) == 0 || len(line) > 16 {
		return 0, 0, ErrMalformed
	}
	for _, c := range line {
		d := unhex(c)
		if d > 15 {
			return 0, 0, ErrMalformed
		}
		size = size<<4 | uint64(d)
	}
	if size > 1<<63-1 {
		return 0, 0, ErrMalformed // would overflow every int64 length below
	}
	return size, next, nil
}

// chunkLine returns the line at buf[i:] without its CRLF, and the index
// after the CRLF. A CR anywhere but before the LF, or an LF without CR, is
// malformed.
func chunkLine(buf []byte, i int) (line []byte, next int, err error) {
	rest := buf[i:]
	if len(rest) > maxChunkLine {
		rest = rest[:maxChunkLine]
	}
	lf := bytes.IndexByte(rest, '\n')
	if lf < 0 {
		// A CR that is not the last byte is not followed by LF.
		if cr := bytes.IndexByte(rest, '\r'); cr >= 0 && cr != len(rest)-1 || len(rest) == maxChunkLine {
			return nil, 0, ErrMalformed
		}
		return nil, 0, ErrNeedMore
	}
	if lf == 0 || rest[lf-1] != '\r' {
		return nil, 0, ErrMalformed
	}
	line = rest[:lf-1]
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, 0, ErrMalformed
	}
	return line, i + lf + 1, nil
}

// validFieldLine checks a trailer field line: token ":" field-value.
func validFieldLine(line []byte) bool {
	k := 0
	for k < len(line) && class[line[k]]&cToken != 0 {
		k++
	}
	if k == 0 || k == len(line) || line[k] != ':' {
		return false
	}
	for _, c := range line[k+1:] {
		if class[c]&cValue == 0 {
			return false
		}
	}
	return true
}
