package bench

import (
	"bytes"
	"errors"
	"strconv"
)

// Event is one dispatched SSE event. Its slices alias the Parser's buffers
// and are valid only until the callback returns: copy what you keep.
type Event struct {
	// ID is the stream's last event ID after this event (the id buffer of
	// the WHATWG algorithm, which persists across events).
	ID []byte
	// HasID reports whether this event carried its own id field.
	HasID bool
	// Type is the event field, empty for the default "message".
	Type []byte
	// Data is the data lines joined by "\n", without the final "\n".
	Data []byte
}

// maxSSELine bounds a partial line a Parser buffers: a peer that never ends
// a line must not grow a load-generator connection without limit.
const maxSSELine = 1 << 20

// ErrLineTooLong is returned by Parser.Feed when a line exceeds 1 MiB.
var ErrLineTooLong = errors.New("bench: SSE line too long")

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// Parser is an incremental text/event-stream parser following the WHATWG
// algorithm (HTML §9.2.6): lines end in CR, LF or CRLF (also when the CR and
// the LF arrive in different Feed calls), lines starting with ':' are
// comments, a field without ':' has an empty value, one space after ':' is
// dropped, data lines are joined with "\n", and a blank line dispatches.
// The zero value is ready to use; a Parser is not safe for concurrent use.
type Parser struct {
	line  []byte // partial line carried between Feed calls
	data  []byte
	typ   []byte
	id    []byte
	idSet bool // an id field was seen in the event being built
	bom   int  // UTF-8 BOM bytes matched so far; -1 once past the stream start
	cr    bool // the previous input ended with CR: skip one leading LF

	// Retry is the last valid retry field in milliseconds; HasRetry
	// reports whether one was seen.
	Retry    int64
	HasRetry bool
	// Comments counts comment lines (heartbeats are ":" comments).
	Comments int64
}

// Feed parses b and calls emit for each complete event. b is not retained.
func (p *Parser) Feed(b []byte, emit func(*Event)) error {
	if p.bom >= 0 {
		b = p.skipBOM(b)
		if len(b) == 0 {
			return nil
		}
	}
	for len(b) > 0 {
		if p.cr {
			p.cr = false
			if b[0] == '\n' {
				b = b[1:]
				continue
			}
		}
		i := indexEOL(b)
		if i < 0 {
			if len(p.line)+len(b) > maxSSELine {
				p.line = p.line[:0]
				return ErrLineTooLong
			}
			p.line = append(p.line, b...)
			return nil
		}
		line := b[:i]
		if len(p.line) > 0 {
			if len(p.line)+i > maxSSELine {
				p.line = p.line[:0]
				return ErrLineTooLong
			}
			p.line = append(p.line, line...)
			line = p.line
		}
		p.cr = b[i] == '\r'
		b = b[i+1:]
		p.processLine(line, emit)
		p.line = p.line[:0]
	}
	return nil
}

// skipBOM drops a UTF-8 BOM at the very start of the stream, even when it is
// split across Feed calls.
func (p *Parser) skipBOM(b []byte) []byte {
	for len(b) > 0 && p.bom < len(utf8BOM) {
		if b[0] != utf8BOM[p.bom] {
			// Not a BOM after all: the bytes matched so far are content.
			matched := p.bom
			p.bom = -1
			if matched > 0 {
				p.line = append(p.line, utf8BOM[:matched]...)
			}
			return b
		}
		p.bom++
		b = b[1:]
	}
	if p.bom == len(utf8BOM) {
		p.bom = -1
	}
	return b
}

// indexEOL returns the index of the first CR or LF in b, or -1. A hand loop:
// bytes.IndexAny builds its ASCII set on every call.
func indexEOL(b []byte) int {
	for i, c := range b {
		if c == '\n' || c == '\r' {
			return i
		}
	}
	return -1
}

func (p *Parser) processLine(line []byte, emit func(*Event)) {
	if len(line) == 0 {
		p.dispatch(emit)
		return
	}
	if line[0] == ':' {
		p.Comments++
		return
	}
	field, value := line, []byte(nil)
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		field, value = line[:i], line[i+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch string(field) {
	case "data":
		p.data = append(p.data, value...)
		p.data = append(p.data, '\n')
	case "event":
		p.typ = append(p.typ[:0], value...)
	case "id":
		if bytes.IndexByte(value, 0) < 0 {
			p.id = append(p.id[:0], value...)
			p.idSet = true
		}
	case "retry":
		if n, err := strconv.ParseInt(string(value), 10, 64); err == nil && n >= 0 && isDigits(value) {
			p.Retry, p.HasRetry = n, true
		}
	}
}

func (p *Parser) dispatch(emit func(*Event)) {
	hasID := p.idSet
	p.idSet = false
	if len(p.data) == 0 {
		p.typ = p.typ[:0]
		return
	}
	data := p.data[:len(p.data)-1]
	ev := Event{ID: p.id, HasID: hasID, Type: p.typ, Data: data}
	emit(&ev)
	p.data, p.typ = p.data[:0], p.typ[:0]
}

func isDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}
