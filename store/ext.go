package store

import (
	"context"
	"encoding/binary"
	"strings"
)

// The Mercure fields of an event (Topics, Private, Retry, PubID) are stored
// in the slot of its name, so that both stores keep their record layouts and
// records written before these fields existed read back unchanged: an event
// with any of them set has the name slot
//
//	0x00 0x01 uvarint(flags) uvarint(retry) str(pubID) uvarint(n) n×str(topic) name
//
// where str is a uvarint length and the bytes, flags bit 0 is Private, and
// the real name runs to the end. A name never starts with 0x00 (the engine
// refuses control characters in names and Mercure refuses NUL in types), so
// the leading 0x00 tells an extended slot from a plain name; the next byte
// is the version of the layout.
const (
	extMarker  = 0x00
	extVersion = 0x01
)

// hasExt reports whether ev carries any Mercure field.
func hasExt(ev *Event) bool {
	return len(ev.Topics) > 0 || ev.Private || ev.Retry != 0 || ev.PubID != ""
}

// nameSlot returns what a store writes in the name slot of ev: its name, or
// the extended slot above. A plain event costs nothing.
func nameSlot(ev *Event) string {
	if !hasExt(ev) {
		return ev.Name
	}
	n := 2 + 3*binary.MaxVarintLen64 + len(ev.PubID) + len(ev.Name)
	for _, t := range ev.Topics {
		n += binary.MaxVarintLen64 + len(t)
	}
	b := make([]byte, 0, n)
	b = append(b, extMarker, extVersion)
	var flags uint64
	if ev.Private {
		flags |= 1
	}
	b = binary.AppendUvarint(b, flags)
	b = binary.AppendUvarint(b, uint64(max(ev.Retry, 0)))
	b = binary.AppendUvarint(b, uint64(len(ev.PubID)))
	b = append(b, ev.PubID...)
	b = binary.AppendUvarint(b, uint64(len(ev.Topics)))
	for _, t := range ev.Topics {
		b = binary.AppendUvarint(b, uint64(len(t)))
		b = append(b, t...)
	}
	b = append(b, ev.Name...)
	return string(b)
}

// setNameSlot decodes a name slot into ev. The strings it sets point into
// slot. It reports false for an extended slot it cannot read.
func setNameSlot(ev *Event, slot string) bool {
	if len(slot) == 0 || slot[0] != extMarker {
		ev.Name = slot
		return true
	}
	if len(slot) < 2 || slot[1] != extVersion {
		return false
	}
	v := slot[2:]
	flags, n := uvarintString(v)
	if n <= 0 {
		return false
	}
	v = v[n:]
	retry, n := uvarintString(v)
	if n <= 0 || retry > 1<<62 {
		return false
	}
	v = v[n:]
	pub, v, ok := cutString(v)
	if !ok {
		return false
	}
	nt, n := uvarintString(v)
	if n <= 0 || nt > uint64(len(v)) {
		return false
	}
	v = v[n:]
	var topics []string
	if nt > 0 {
		topics = make([]string, nt)
		for i := range topics {
			if topics[i], v, ok = cutString(v); !ok {
				return false
			}
		}
	}
	ev.Private = flags&1 != 0
	ev.Retry = int64(retry)
	ev.PubID = pub
	ev.Topics = topics
	ev.Name = v
	return true
}

// IDResolver is implemented by stores that index publisher-supplied ids
// ([Event.PubID]), so that a client resuming with such an id (a Mercure
// Last-Event-ID) finds its position.
type IDResolver interface {
	// ResolveID returns the id of the retained event whose PubID is pubID
	// (the newest, if several had it), or false when no retained event has
	// it: it expired, was trimmed, or never existed.
	ResolveID(ctx context.Context, pubID string) (id uint64, ok bool, err error)
}

// pubKeyBunt returns the buntdb key of the PubID index entry of pubID.
func pubKeyBunt(pubID string) string {
	var sb strings.Builder
	sb.Grow(1 + len(pubID))
	sb.WriteByte(prefixPub)
	sb.WriteString(pubID)
	return sb.String()
}
