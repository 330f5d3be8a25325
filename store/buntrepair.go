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
//   - adds missing index entries and deletes index entries without a log
//     record; a key that had such an entry lost that event: its dropped is
//     raised to the entry's id;
//   - recounts every key's metadata, deleting it for keys with no events
//     left; a key with fewer events than its metadata counted lost events the
//     file does not name (the lost part of a transaction): its dropped is
//     raised to the last id in the file;
//   - keeps the prev id of every index entry: the prev of a key's oldest
//     retained event was dropped (see Retention), even if the metadata update
//     that recorded it was lost;
//   - raises every key's dropped, and the floor, to lostThrough (0 for none):
//     under SyncEverySecond or SyncNever acknowledged events up to there may
//     be lost without a trace in the file.
//
// Under SyncAlways (lostThrough 0) no event that was acknowledged, or seen
// by a reader, can be missing (Append fsyncs before either), so a key whose
// events are all in the file reports no gap.
//
// The caller has added uncleanIDSkip to b.next: clients may have seen ids
// that did not reach the disk, and those must not be handed out again.
//
// It reads the whole database, like buntdb's load before it, and it runs only
// after a crash.
func (b *Bunt) repair(lostThrough uint64) error {
	err := b.db.Update(func(tx *buntdb.Tx) error {
		last := b.next - uncleanIDSkip // the last id in the file
		counts := make(map[string]uint64)
		newest := make(map[string]uint64)
		lost := make(map[string]uint64) // keys that lost events: the highest id known lost
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
			newest[r.key] = id
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
				lost[key] = max(lost[key], id)
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
		floor := max(b.floor, lostThrough)
		for _, e := range metas {
			key := e.k[1:]
			c := counts[key]
			m, ok := decodeMeta(e.v) // rewritten below even if damaged
			if !ok || c < m.count {
				lost[key] = max(lost[key], last)
			}
			if c == 0 {
				// Forgotten: Retention reports the floor for it.
				floor = max(floor, m.dropped, lost[key])
				if err := deleteIfExists(tx, e.k); err != nil {
					return err
				}
				continue
			}
			m.count, m.newest = c, newest[key]
			m.dropped = max(m.dropped, lostThrough, lost[key])
			if _, _, err := tx.Set(e.k, m.encode(), nil); err != nil {
				return err
			}
			delete(counts, key)
		}
		for key, c := range counts {
			// Events without metadata: the transaction that added the
			// key's first events lost its metadata update; nothing was
			// dropped by it, but the key may have been forgotten before.
			m := keyMeta{count: c, newest: newest[key], dropped: max(b.floor, lostThrough, lost[key])}
			if _, _, err := tx.Set(metaKey(key), m.encode(), nil); err != nil {
				return err
			}
		}
		for key, id := range lost {
			if _, ok := newest[key]; !ok {
				floor = max(floor, id) // a key left without events
			}
		}

		if _, _, err := tx.Set(keyFloor, encodeUvarint(floor), nil); err != nil {
			return err
		}
		if _, _, err := tx.Set(keyLast, encodeLast(b.next, b.lastTime), nil); err != nil {
			return err
		}
		b.floor = floor
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: repair %s after unclean shutdown: %w", b.path, b.wrap(err))
	}
	b.writes.Add(1)
	return nil
}
