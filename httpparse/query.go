package httpparse

import "bytes"

// NextQuery splits the first name=value pair off the raw query string q.
// Pairs are separated by '&' (';' is an ordinary byte, as in net/url since
// Go 1.17); a pair without '=' has an empty value, and "a&&b" yields an
// empty pair in the middle. name and value are still percent-encoded (decode
// them with AppendUnescape) and, like rest, point into q.
//
//	for len(q) > 0 {
//		name, value, q = httpparse.NextQuery(q)
//		...
//	}
func NextQuery(q []byte) (name, value, rest []byte) {
	pair := q
	if i := bytes.IndexByte(q, '&'); i >= 0 {
		pair, rest = q[:i], q[i+1:]
	}
	if i := bytes.IndexByte(pair, '='); i >= 0 {
		return pair[:i], pair[i+1:], rest
	}
	return pair, pair[len(pair):], rest
}

// AppendUnescape appends the percent-decoded s to dst and returns the
// extended slice. With plus set, '+' decodes to a space, as in query
// strings; leave it unset for paths. A '%' not followed by two hex digits
// returns ErrMalformed and dst unchanged. It does not allocate when dst has
// room for len(s) more bytes (the decoded form is never longer).
func AppendUnescape(dst, s []byte, plus bool) ([]byte, error) {
	n0 := len(dst)
	for len(s) > 0 {
		// Copy the longest run that needs no decoding in one append.
		i := 0
		for i < len(s) && s[i] != '%' && (s[i] != '+' || !plus) {
			i++
		}
		dst = append(dst, s[:i]...)
		if i == len(s) {
			break
		}
		if s[i] == '+' {
			dst = append(dst, ' ')
			s = s[i+1:]
			continue
		}
		if i+2 >= len(s) || unhex(s[i+1])|unhex(s[i+2]) > 15 {
			return dst[:n0], ErrMalformed
		}
		dst = append(dst, unhex(s[i+1])<<4|unhex(s[i+2]))
		s = s[i+3:]
	}
	return dst, nil
}
