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
	v, err := tx.Delete(logKey(id))
	if errors.Is(err, buntdb.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	r, ok := decodeEvent(v)
	if !ok || len(r.name) == 0 || r.name[0] != extMarker {
		return nil
	}
	var ev Event
	if !setNameSlot(&ev, r.name) || ev.PubID == "" {
		return nil
	}
	pk := pubKeyBunt(ev.PubID)
	if cur, err := tx.Get(pk); err == nil {
		if x, ok := decodeUvarint(cur); ok && x == id {
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
		v, err := tx.Get(pubKeyBunt(pubID))
		if errors.Is(err, buntdb.ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		x, ok := decodeUvarint(v)
		if !ok {
			return b.corrupt("PubID index entry")
		}
		rec, err := tx.Get(logKey(x))
		if errors.Is(err, buntdb.ErrNotFound) {
			return nil // removed by a trim of an older version of the file
		} else if err != nil {
			return err
		}
		if t, ok := eventTime(rec); !ok || t <= cutoff {
			return nil // expired, not swept yet
		}
		id, found = x, true
		return nil
	})
	if err != nil {
		return 0, false, b.wrap(err)
	}
	return id, found, nil
}
