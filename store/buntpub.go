package store

import (
	"context"
	"errors"

	"github.com/tidwall/buntdb"
)

var _ IDResolver = (*Bunt)(nil)

// deleteLog deletes the log record of id, and the PubID index entry that
// points to it, if any.
func deleteLog(tx *buntdb.Tx, id uint64) error {
	lk := logKey(id)
	v, err := tx.Delete(lk)
	if errors.Is(err, buntdb.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	body, ok := unseal(lk, v)
	if !ok {
		return nil // damaged (counted by the read that found it); the next open checks the PubID index
	}
	r, ok := decodeEvent(body)
	if !ok || len(r.name) == 0 || r.name[0] != extMarker {
		return nil
	}
	var ev Event
	if !setNameSlot(&ev, r.name) || ev.PubID == "" {
		return nil
	}
	pk := pubKeyBunt(ev.PubID)
	if cur, err := tx.Get(pk); err == nil {
		if x, ok := decodePubEntry(pk, cur); ok && x == id {
			return deleteIfExists(tx, pk) // not if a newer event took the id over
		}
	}
	return nil
}

// ResolveID implements IDResolver.
func (b *Bunt) ResolveID(ctx context.Context, pubID string) (uint64, bool, error) {
	if err := b.check(ctx); err != nil {
		return 0, false, err
	}
	if pubID == "" {
		return 0, false, nil
	}
	defer b.readLock()()
	cutoff := b.cutoff()
	var id uint64
	var found bool
	err := b.db.View(func(tx *buntdb.Tx) error {
		pk := pubKeyBunt(pubID)
		v, err := tx.Get(pk)
		if errors.Is(err, buntdb.ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		x, ok := decodePubEntry(pk, v)
		if !ok {
			b.damagedRead(pk, 0)
			return nil // damaged: as if unknown (the client is told of a gap)
		}
		lk := logKey(x)
		rec, err := tx.Get(lk)
		if errors.Is(err, buntdb.ErrNotFound) {
			return nil // removed by a trim of an older version of the file
		} else if err != nil {
			return err
		}
		if _, r, ok := b.readEvent(lk, rec); !ok || r.time <= cutoff {
			return nil // damaged, or expired and not swept yet
		}
		id, found = x, true
		return nil
	})
	if err != nil {
		return 0, false, b.wrap(err)
	}
	return id, found, nil
}

// decodePubEntry decodes the PubID index entry pk (its value v): the id of
// the event. It reports false if the entry fails its checksum.
func decodePubEntry(pk, v string) (uint64, bool) {
	body, ok := unseal(pk, v)
	if !ok {
		return 0, false
	}
	return decodeUvarint(body)
}
