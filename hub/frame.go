package hub

import (
	"github.com/sseloop/sseloop/store"
	"strconv"
	"unicode/utf8"
)

// AppendFrame appends one SSE event frame to dst and returns the extended slice:
//
//	id: <id>
//	event: <name>        (only when name is not empty)
//	data: <line>         (one per line of data)
//	<blank line>
//
// The SSE parser in browsers splits data on CR, LF and CRLF, so all three end
// a line here too: a bare CR inside data would otherwise start a new field.
// Empty data is written as a single empty "data:" line so that the browser
// still dispatches the event. The caller validates name (no CR or LF).
func AppendFrame(dst []byte, id uint64, name string, data []byte) []byte {
	dst = append(dst, "id: "...)
	dst = strconv.AppendUint(dst, id, 10)
	dst = append(dst, '\n')
	if name != "" {
		dst = append(dst, "event: "...)
		dst = append(dst, name...)
		dst = append(dst, '\n')
	}
	for {
		i := 0
		for i < len(data) && data[i] != '\n' && data[i] != '\r' {
			i++
		}
		dst = append(dst, "data: "...)
		dst = append(dst, data[:i]...)
		dst = append(dst, '\n')
		if i == len(data) {
			break
		}
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
	return append(dst, '\n')
}

// AppendPoke appends the JSON payload of a poke (a trigger with an empty
// body): {"key":"K","id":"N","ts":MS}. The id is a string because JavaScript
// numbers lose precision above 2^53.
func AppendPoke(dst []byte, key string, id uint64, ts int64) []byte {
	dst = append(dst, `{"key":`...)
	dst = appendJSONString(dst, key)
	dst = append(dst, `,"id":"`...)
	dst = strconv.AppendUint(dst, id, 10)
	dst = append(dst, `","ts":`...)
	dst = strconv.AppendInt(dst, ts, 10)
	return append(dst, '}')
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string literal. Invalid UTF-8 becomes
// U+FFFD, as encoding/json does.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			switch {
			case b == '"' || b == '\\':
				dst = append(dst, '\\', b)
			case b < 0x20 || b == 0x7f:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			default:
				dst = append(dst, b)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}

// appendEventFrame encodes ev, rendering a poke (empty data) as its JSON.
func appendEventFrame(dst []byte, ev *store.Event, scratch *[]byte) []byte {
	data := ev.Data
	if len(data) == 0 {
		*scratch = AppendPoke((*scratch)[:0], ev.Key, ev.ID, ev.Time)
		data = *scratch
	}
	return AppendFrame(dst, ev.ID, ev.Name, data)
}

// AppendGap appends the event named "gap" that tells a stream it missed
// events of keys: {"keys":["a","b"],"oldest":"81"}, where oldest is the
// oldest id still retained among them ("0" when nothing is). It has no id
// field, so it does not move the client's Last-Event-ID; the app re-syncs
// instead of silently missing data.
func AppendGap(dst []byte, keys []string, oldest uint64) []byte {
	dst = append(dst, "event: gap\ndata: {\"keys\":["...)
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, k)
	}
	dst = append(dst, `],"oldest":"`...)
	dst = strconv.AppendUint(dst, oldest, 10)
	return append(dst, "\"}\n\n"...)
}
