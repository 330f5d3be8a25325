package store

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// checkAOF reads a buntdb file (a series of RESP commands: SET, DEL, FLUSHDB)
// and accepts exactly what buntdb's loader accepts, so that OpenBunt can
// report damage before buntdb sees it. Three reasons to check first instead of
// parsing buntdb's error:
//   - buntdb's ErrInvalid does not say where the damage is; this says which
//     record (the byte offset where it starts).
//   - buntdb panics on some damage (a command name shorter than three bytes
//     indexes past its end).
//   - buntdb allocates a declared bulk length before reading it: a damaged
//     length can ask for terabytes. Here a length longer than the rest of the
//     file is a cut-off record.
//
// A file that ends inside a record has a cut-off last record (a crash during a
// write): checkAOF returns torn and the offset where that record starts, and
// the caller truncates there, as buntdb's loader would. Any other damage is an
// *aofError.
func checkAOF(rd io.Reader) (end int64, torn bool, err error) {
	return scanAOF(rd, nil)
}

// scanAOF is checkAOF that also sets want[k], for each key k in want, to the
// offset of the last SET or DEL of k.
func scanAOF(rd io.Reader, want map[string]int64) (end int64, torn bool, err error) {
	c := aofChecker{r: bufio.NewReaderSize(rd, 64<<10), want: want}
	for {
		start := c.off
		b, err := c.r.ReadByte()
		if err == io.EOF {
			return start, false, nil
		} else if err != nil {
			return start, false, err
		}
		c.off++
		if b == 0 {
			continue // buntdb skips NUL bytes between records (zero-filled tails)
		}
		if err := c.r.UnreadByte(); err != nil {
			return start, false, err
		}
		c.off--
		err = c.record()
		switch {
		case err == nil:
			if want != nil && c.n >= 2 && len(c.parts[0]) >= 3 {
				if _, ok := want[c.parts[1]]; ok {
					switch strings.ToLower(c.parts[0][:3]) {
					case "set", "del":
						want[c.parts[1]] = start
					}
				}
			}
		case errors.Is(err, io.ErrUnexpectedEOF):
			return start, true, nil
		default:
			var ae *aofError
			if errors.As(err, &ae) {
				ae.off = start
			}
			return start, false, err
		}
	}
}

// aofError is damage in a buntdb file.
type aofError struct {
	off    int64 // where the bad record starts
	reason string
}

func (e *aofError) Error() string { return fmt.Sprintf("offset %d: %s", e.off, e.reason) }

type aofChecker struct {
	r     *bufio.Reader
	off   int64 // offset of the next byte of r
	parts [5]string
	n     int              // parts of the last record
	want  map[string]int64 // see scanAOF; nil when not wanted
}

// maxWantedKey is how much of a key scanAOF keeps: more than any key of the
// layout (an index key is at most about 270 bytes).
const maxWantedKey = 1024

// maxKeptPart is how much of a part record() keeps: enough for every command
// name and expiry argument buntdb understands.
const maxKeptPart = 32

// record checks one command. It returns io.ErrUnexpectedEOF if the file ends
// inside it.
func (c *aofChecker) record() error {
	n, err := c.number('*')
	if err != nil {
		return err
	}
	c.n = n
	for i := range n {
		size, err := c.number('$')
		if err != nil {
			return err
		}
		if i < len(c.parts) && (size <= maxKeptPart || i == 1 && c.want != nil && size <= maxWantedKey) {
			var small [maxKeptPart + 2]byte
			buf := small[:]
			if size > maxKeptPart {
				buf = make([]byte, size+2)
			}
			if _, err := io.ReadFull(c.r, buf[:size+2]); err != nil {
				return unexpected(err)
			}
			c.off += int64(size + 2)
			if buf[size] != '\r' || buf[size+1] != '\n' {
				return &aofError{reason: "bulk string not followed by CRLF"}
			}
			c.parts[i] = string(buf[:size])
			continue
		}
		if i < len(c.parts) {
			c.parts[i] = "" // too long to be a command name or argument
		}
		if d, err := c.r.Discard(size); err != nil {
			c.off += int64(d)
			return unexpected(err)
		}
		c.off += int64(size)
		var crlf [2]byte
		if _, err := io.ReadFull(c.r, crlf[:]); err != nil {
			return unexpected(err)
		}
		c.off += 2
		if crlf != [2]byte{'\r', '\n'} {
			return &aofError{reason: "bulk string not followed by CRLF"}
		}
	}
	return c.command(n)
}

// command checks a complete command the way buntdb's readLoad does: the first
// three bytes of the name pick SET or DEL, FLUSHDB must match in full.
func (c *aofChecker) command(n int) error {
	if n == 0 {
		return nil // buntdb ignores an empty command
	}
	name := c.parts[0]
	if len(name) < 3 {
		return &aofError{reason: "bad command name"}
	}
	switch strings.ToLower(name[:3]) {
	case "set":
		switch {
		case n == 3:
			return nil
		case n == 5:
			arg := strings.ToLower(c.parts[3])
			if arg != "ex" && arg != "ae" {
				return &aofError{reason: "bad SET option"}
			}
			if _, err := strconv.ParseInt(c.parts[4], 10, 64); err != nil {
				return &aofError{reason: "bad SET expiry"}
			}
			return nil
		}
		return &aofError{reason: "bad SET arity"}
	case "del":
		if n != 2 {
			return &aofError{reason: "bad DEL arity"}
		}
		return nil
	}
	if strings.ToLower(name) == "flushdb" {
		return nil // any arity, like buntdb
	}
	return &aofError{reason: "unknown command"}
}

// maxDigits bounds a RESP number: buntdb's int would overflow past 18 digits.
const maxDigits = 18

// number reads "<kind><digits>\r\n" with buntdb's rules: at least one digit,
// only digits.
func (c *aofChecker) number(kind byte) (int, error) {
	line, err := c.r.ReadSlice('\n')
	c.off += int64(len(line))
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return 0, &aofError{reason: "line too long"}
		}
		return 0, unexpected(err)
	}
	if line[0] != kind {
		return 0, &aofError{reason: fmt.Sprintf("expected %q", kind)}
	}
	digits := line[1 : len(line)-1]
	if len(digits) < 2 || digits[len(digits)-1] != '\r' {
		return 0, &aofError{reason: "line not terminated by CRLF"}
	}
	digits = digits[:len(digits)-1]
	if len(digits) > maxDigits {
		return 0, &aofError{reason: "number too large"}
	}
	n := 0
	for _, d := range digits {
		if d < '0' || d > '9' {
			return 0, &aofError{reason: "bad number"}
		}
		n = n*10 + int(d-'0')
	}
	return n, nil
}

// unexpected turns the end of the file inside a record into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
