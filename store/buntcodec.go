package store

import (
	"encoding/binary"
	"hash/crc32"
)

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
	keyBoot  = "n:boot"
	keyEpoch = "n:epoch"
	keyCRC   = "n:crc" // present once every value of the file is sealed
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

// # Checksums
//
// Every value sseloop writes except n:clean (log records, index entries,
// metadata, PubID index entries, n:last, n:floor, n:epoch, n:sync, n:crc) is
// sealed: sealMagic, the CRC-32C (Castagnoli) of the record's buntdb key
// followed by the body, 4 bytes big-endian, then the body. The key is covered
// so that a damaged key (another id, another subscription key) fails the
// check as surely as a damaged value. n:clean is empty; load also checks the
// index against the log. The Mercure fields of an event (ext.go) live in its
// log record's name slot, under the record's checksum.
//
// sealMagic is uvarint(2^28-1): no value written before checksums starts with
// it (it would be a 256 MiB key length or count), and an older sseloop reads
// a sealed log record as a key longer than the record, so it reports the
// record as damaged instead of decoding garbage.
const (
	sealMagic  = "\xff\xff\xff\x7f"
	sealHeader = len(sealMagic) + 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// appendSealHeader starts a sealed value; sealValue fills in its checksum
// once the body follows.
func appendSealHeader(dst []byte) []byte {
	return append(dst, sealMagic+"\x00\x00\x00\x00"...)
}

// sealValue writes the checksum of v, a value started with appendSealHeader,
// stored under the buntdb key k.
func sealValue(k string, v []byte) {
	binary.BigEndian.PutUint32(v[len(sealMagic):], checksum(k, v[sealHeader:]))
}

// sealString returns body sealed under the buntdb key k.
func sealString(k string, body []byte) string {
	var buf [64]byte
	v := append(appendSealHeader(buf[:0]), body...)
	sealValue(k, v)
	return string(v)
}

func checksum(k string, body []byte) uint32 {
	return crc32.Update(crc32.Update(0, castagnoli, stringBytes(k)), castagnoli, body)
}

// isSealed reports whether v starts like a sealed value.
func isSealed(v string) bool {
	return len(v) >= sealHeader && v[:len(sealMagic)] == sealMagic
}

// unseal returns the body of the sealed value v stored under k, and false if
// v is not sealed or its checksum does not match. The body points into v.
func unseal(k, v string) (string, bool) {
	if !isSealed(v) {
		return "", false
	}
	body := v[sealHeader:]
	sum := uint32(v[4])<<24 | uint32(v[5])<<16 | uint32(v[6])<<8 | uint32(v[7])
	return body, sum == checksum(k, stringBytes(body))
}

// appendEvent appends the body of the log value of ev: uvarint(len key) key
// uvarint(len name) name varint(time) data. The data runs to the end, so it
// needs no length. Log values written before checksums are this body alone.
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

// decodeEvent decodes the body of a log value without copying.
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

// appendTo appends the value of the metadata record k (metaKey of the key).
// (Bunt.encodeMeta encodes into its buffer: a stack array would escape to
// the heap through hash/crc32.)
func (m keyMeta) appendTo(dst []byte, k string) []byte {
	start := len(dst)
	dst = appendSealHeader(dst)
	dst = binary.AppendUvarint(dst, m.count)
	dst = binary.AppendUvarint(dst, m.dropped)
	dst = binary.AppendUvarint(dst, m.newest)
	sealValue(k, dst[start:])
	return dst
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

// encodePrev returns the value of the index entry k: prev, the id of the
// key's event before this one, sealed.
func encodePrev(k string, prev uint64) string {
	return string(appendPrev(nil, k, prev))
}

// appendPrev appends the value of the index entry k (see encodePrev).
// Append encodes into its buffer: a stack array would escape to the heap
// through hash/crc32.
func appendPrev(dst []byte, k string, prev uint64) []byte {
	start := len(dst)
	dst = appendSealHeader(dst)
	dst = binary.AppendUvarint(dst, prev)
	sealValue(k, dst[start:])
	return dst
}

// decodePrev decodes the body of an index entry's value: the id of the key's
// event before this one (uvarint), or nothing (0: unknown, written before it
// existed).
func decodePrev(body string) (uint64, bool) {
	if body == "" {
		return 0, true
	}
	return decodeUvarint(body)
}

// encodeLast encodes the n:last record: the last id and the last time.
func encodeLast(id uint64, t int64) string {
	var buf [2 * binary.MaxVarintLen64]byte
	b := binary.AppendUvarint(buf[:0], id)
	return sealString(keyLast, binary.AppendVarint(b, t))
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

// encodeUvarint encodes x as the record k (n:floor, n:epoch, a PubID index
// entry).
func encodeUvarint(k string, x uint64) string {
	var buf [binary.MaxVarintLen64]byte
	return sealString(k, binary.AppendUvarint(buf[:0], x))
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
