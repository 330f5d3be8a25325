package store

import "encoding/binary"

// Keys and values of the buntdb layout (see the comment on Bunt).

const (
	prefixLog   = 'e'
	prefixIndex = 'k'
	prefixPub   = 'p' // PubID index: 'p' pubID -> uvarint(id), see IDResolver

	logFirst = "e" // lowest possible log key
	logEnd   = "f" // first key after the log
	idxFirst = "k"
	idxEnd   = "l"
	metaEnd  = "n" // first key after the metadata ("m" is the lowest)

	keyLast  = "n:last"
	keyFloor = "n:floor"
	keyClean = "n:clean"
	keySync  = "n:sync"
	keyEpoch = "n:epoch"

	// logLast is above every log key.
	logLast = "e\xff\xff\xff\xff\xff\xff\xff\xff"
)

// keyBufSize fits a maximal engine key (256 bytes) plus prefix, length and id,
// so building a key needs one allocation (the string) and no growing.
const keyBufSize = 1 + binary.MaxVarintLen64 + 256 + 8

// logKey returns the log key of id: 'e' and the id in 8 bytes big-endian, so
// byte order is id order.
func logKey(id uint64) string {
	var b [9]byte
	b[0] = prefixLog
	binary.BigEndian.PutUint64(b[1:], id)
	return string(b[:])
}

// logID returns the id of a log key.
func logID(k string) (uint64, bool) {
	if len(k) != 9 || k[0] != prefixLog {
		return 0, false
	}
	return beUint64(k[1:]), true
}

// appendIndexPrefix appends the prefix shared by the index keys of key and by
// no other key: 'k', the length as a uvarint, the key. A uvarint is never a
// prefix of another uvarint, so two keys share a prefix only if they have the
// same length, and then only if they are equal: "a" never matches "a:b".
func appendIndexPrefix(dst []byte, key string) []byte {
	dst = append(dst, prefixIndex)
	dst = binary.AppendUvarint(dst, uint64(len(key)))
	return append(dst, key...)
}

// indexPrefix returns appendIndexPrefix as a string.
func indexPrefix(key string) string {
	var buf [keyBufSize]byte
	return string(appendIndexPrefix(buf[:0], key))
}

// indexKey returns the index key of the event id of key.
func indexKey(key string, id uint64) string {
	var buf [keyBufSize]byte
	return string(binary.BigEndian.AppendUint64(appendIndexPrefix(buf[:0], key), id))
}

// parseIndexKey splits an index key into the subscription key and the id.
func parseIndexKey(k string) (key string, id uint64, ok bool) {
	if len(k) < 1+1+8 || k[0] != prefixIndex {
		return "", 0, false
	}
	n, w := uvarintString(k[1:])
	if w <= 0 || uint64(len(k)-1-w) != n+8 {
		return "", 0, false
	}
	key = k[1+w : len(k)-8]
	return key, beUint64(k[len(k)-8:]), true
}

// indexID returns the id at the end of an index key that starts with a known prefix.
func indexID(k string) uint64 { return beUint64(k[len(k)-8:]) }

// metaKey returns the metadata key of key. Metadata is only read by exact key,
// never by range, so the key needs no length prefix.
func metaKey(key string) string { return "m" + key }

// appendEvent appends the log value of ev: uvarint(len key) key
// uvarint(len name) name varint(time) data. The data runs to the end, so it
// needs no length.
func appendEvent(dst []byte, ev *Event) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(ev.Key)))
	dst = append(dst, ev.Key...)
	name := nameSlot(ev) // the name, or the name and the Mercure fields (ext.go)
	dst = binary.AppendUvarint(dst, uint64(len(name)))
	dst = append(dst, name...)
	dst = binary.AppendVarint(dst, ev.Time)
	return append(dst, ev.Data...)
}

// rawEvent is a decoded log value. Its strings point into the value.
type rawEvent struct {
	key, name, data string
	time            int64
}

// decodeEvent decodes a log value without copying.
func decodeEvent(v string) (r rawEvent, ok bool) {
	if r.key, v, ok = cutString(v); !ok {
		return r, false
	}
	if r.name, v, ok = cutString(v); !ok {
		return r, false
	}
	u, n := uvarintString(v)
	if n <= 0 {
		return r, false
	}
	r.time = unzigzag(u)
	r.data = v[n:]
	return r, true
}

// eventTime decodes only the time of a log value.
func eventTime(v string) (int64, bool) {
	r, ok := decodeEvent(v)
	return r.time, ok
}

// cutString reads a uvarint length and that many bytes.
func cutString(v string) (s, rest string, ok bool) {
	n, w := uvarintString(v)
	if w <= 0 || n > uint64(len(v)-w) {
		return "", "", false
	}
	v = v[w:]
	return v[:n], v[n:], true
}

// keyMeta is the metadata of a key with retained events.
type keyMeta struct {
	count   uint64 // index entries of the key
	dropped uint64 // highest id of the key removed by MaxEvents or TTL
	newest  uint64 // id of the key's newest event (0 in files written before it existed)
}

func (m keyMeta) encode() string {
	var buf [3 * binary.MaxVarintLen64]byte
	b := binary.AppendUvarint(buf[:0], m.count)
	b = binary.AppendUvarint(b, m.dropped)
	return string(binary.AppendUvarint(b, m.newest))
}

func decodeMeta(v string) (m keyMeta, ok bool) {
	var n, w int
	if m.count, n = uvarintString(v); n <= 0 {
		return m, false
	}
	if m.dropped, w = uvarintString(v[n:]); w <= 0 {
		return m, false
	}
	n += w
	if n == len(v) {
		return m, true // written before newest existed
	}
	if m.newest, w = uvarintString(v[n:]); w <= 0 || n+w != len(v) {
		return m, false
	}
	return m, true
}

// decodePrev decodes the value of an index entry: the id of the key's event
// before this one (uvarint), or nothing (0: unknown, written before it
// existed).
func decodePrev(v string) uint64 {
	if v == "" {
		return 0
	}
	p, n := uvarintString(v)
	if n <= 0 {
		return 0
	}
	return p
}

// encodeLast encodes the n:last record: the last id and the last time.
func encodeLast(id uint64, t int64) string {
	var buf [2 * binary.MaxVarintLen64]byte
	b := binary.AppendUvarint(buf[:0], id)
	return string(binary.AppendVarint(b, t))
}

func decodeLast(v string) (id uint64, t int64, ok bool) {
	id, n := uvarintString(v)
	if n <= 0 {
		return 0, 0, false
	}
	u, m := uvarintString(v[n:])
	if m <= 0 {
		return 0, 0, false
	}
	return id, unzigzag(u), true
}

func encodeUvarint(x uint64) string {
	var buf [binary.MaxVarintLen64]byte
	return string(binary.AppendUvarint(buf[:0], x))
}

func decodeUvarint(v string) (uint64, bool) {
	x, n := uvarintString(v)
	return x, n > 0 && n == len(v)
}

// uvarintString is binary.Uvarint for a string, which buntdb hands out:
// converting to []byte would copy.
func uvarintString(s string) (uint64, int) {
	var x uint64
	var shift uint
	for i := 0; i < len(s) && i < binary.MaxVarintLen64; i++ {
		c := s[i]
		if c < 0x80 {
			if i == binary.MaxVarintLen64-1 && c > 1 {
				return 0, -(i + 1) // overflow
			}
			return x | uint64(c)<<shift, i + 1
		}
		x |= uint64(c&0x7f) << shift
		shift += 7
	}
	return 0, 0
}

// unzigzag undoes the zig-zag encoding binary.AppendVarint uses.
func unzigzag(u uint64) int64 {
	x := int64(u >> 1)
	if u&1 != 0 {
		x = ^x
	}
	return x
}

func beUint64(s string) uint64 {
	_ = s[7]
	return uint64(s[7]) | uint64(s[6])<<8 | uint64(s[5])<<16 | uint64(s[4])<<24 |
		uint64(s[3])<<32 | uint64(s[2])<<40 | uint64(s[1])<<48 | uint64(s[0])<<56
}
