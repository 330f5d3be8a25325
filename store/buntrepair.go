package store

import (
	"fmt"

	"github.com/tidwall/buntdb"
)

// repair runs when a non-empty file was not closed cleanly. buntdb writes each
// transaction with one write(2) but keeps no transaction boundaries in the
// file, so a crash (power loss, kernel panic) can persist part of the last
// one: an index entry without its log record, a log record without its index
// entry, a count that is off, a MaxEvents trim whose dropped id was lost.
//
// The log is the truth. repair, in one transaction:
//   - adds missing index entries and deletes index entries without a log record;
//   - recounts every key's metadata, deleting it for keys with no events left;
//   - raises every key's dropped, and the floor, to the last id: the lost part
//     of a transaction may have removed events without recording it, so any
//     client resuming from before the last id is told it may have missed
//     events (a false gap at worst);
//   - skips uncleanIDSkip ids: under SyncEverySecond or SyncNever, clients may
//     have seen ids that did not reach the disk, and those must not be handed
//     out again for other events.
//
// It reads the whole database, like buntdb's load before it, and it runs only
// after a crash.
func (b *Bunt) repair() error {
	err := b.db.Update(func(tx *buntdb.Tx) error {
		last := b.next
		counts := make(map[string]uint64)
		var missing []string
		var bad error
		err := tx.AscendRange("", logFirst, logEnd, func(k, v string) bool {
			id, ok := logID(k)
			if !ok {
				bad = b.corrupt(fmt.Sprintf("log key %q", k))
				return false
			}
			r, ok := decodeEvent(v)
			if !ok {
				bad = b.corruptID(id)
				return false
			}
			counts[r.key]++
			ik := indexKey(r.key, id)
			if _, err := tx.Get(ik); err != nil {
				missing = append(missing, ik)
			}
			return true
		})
		if err == nil {
			err = bad
		}
		if err != nil {
			return err
		}

		var orphans []string
		err = tx.AscendRange("", idxFirst, idxEnd, func(k, _ string) bool {
			key, id, ok := parseIndexKey(k)
			if ok {
				if v, gerr := tx.Get(logKey(id)); gerr == nil {
					r, _ := decodeEvent(v) // all log records decoded above
					if r.key == key {
						return true
					}
				}
			}
			orphans = append(orphans, k)
			return true
		})
		if err != nil {
			return err
		}

		type kv struct{ k, v string }
		var metas []kv
		err = tx.AscendRange("", "m", metaEnd, func(k, v string) bool {
			metas = append(metas, kv{k, v})
			return true
		})
		if err != nil {
			return err
		}

		for _, k := range missing {
			if _, _, err := tx.Set(k, "", nil); err != nil {
				return err
			}
		}
		for _, k := range orphans {
			if err := deleteIfExists(tx, k); err != nil {
				return err
			}
		}
		for _, e := range metas {
			key := e.k[1:]
			c := counts[key]
			if c == 0 {
				if err := deleteIfExists(tx, e.k); err != nil {
					return err
				}
				continue
			}
			m, _ := decodeMeta(e.v) // rewritten below even if damaged
			m.count, m.dropped = c, max(m.dropped, last)
			if _, _, err := tx.Set(e.k, m.encode(), nil); err != nil {
				return err
			}
			delete(counts, key)
		}
		for key, c := range counts {
			if _, _, err := tx.Set(metaKey(key), keyMeta{count: c, dropped: last}.encode(), nil); err != nil {
				return err
			}
		}

		floor := max(b.floor, last)
		if _, _, err := tx.Set(keyFloor, encodeUvarint(floor), nil); err != nil {
			return err
		}
		next := last + uncleanIDSkip
		if _, _, err := tx.Set(keyLast, encodeLast(next, b.lastTime), nil); err != nil {
			return err
		}
		b.floor, b.next = floor, next
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: repair %s after unclean shutdown: %w", b.path, b.wrap(err))
	}
	b.writes.Add(1)
	return nil
}
