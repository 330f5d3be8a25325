package store

import (
	"maps"
	"slices"

	"github.com/tidwall/buntdb"
)

// lossReport is what a repair learned about lost events.
type lossReport struct {
	all  uint64            // every key reports a gap for resuming before this id
	keys map[string]uint64 // per key: highest id of a lost event
}

// fixup runs at open, in one write transaction, when the file needs it: it
// was written before checksums, it was not closed cleanly, or it is damaged
// and Options.Repair is set. One transaction: a crash in the middle leaves
// the file as it was (the cut-off transaction is dropped at the next open).
//
// Damaged records (repairing) are deleted. Values written before checksums
// are sealed. Then, if repairing or unclean, the layout is rebuilt from the
// log, which is the truth:
//   - missing index entries are added; index entries without their event are
//     deleted, and the event counts as lost for the key they name;
//   - a damaged event whose key no index entry names is lost for every key;
//   - every key's metadata is recounted; a key whose count was wrong for no
//     known reason, or whose metadata was lost, reports a gap up to the last
//     id, since what it dropped before is unknown;
//   - the floor (what a key without metadata reports) is raised to the last
//     id, since a lost n:floor or a key whose events were all lost is not
//     otherwise visible;
//   - ids skip uncleanIDSkip, so an id a client saw on an event that is now
//     lost is never handed out again.
//
// unclean: buntdb writes each transaction with one write(2) but keeps no
// transaction boundaries in the file, so a crash (power loss, kernel panic)
// can persist part of the last one: an index entry without its log record, a
// log record without its index entry, a count that is off, a MaxEvents trim
// whose dropped id was lost. So every key's dropped is raised to the last id
// as well: a client resuming from before it is told it may have missed
// events (a false gap at worst).
//
// It reads the whole database, like buntdb's load before it.
func (b *Bunt) fixup(tx *buntdb.Tx, s *loadScan, repairing, unclean bool) (lossReport, error) {
	lost := lossReport{keys: make(map[string]uint64)}
	last := b.next
	var damagedEvents []damage
	if repairing {
		for _, d := range s.damaged {
			if err := deleteIfExists(tx, d.key); err != nil {
				return lost, err
			}
			if d.id != 0 {
				damagedEvents = append(damagedEvents, d)
			}
		}
	}
	if err := b.seal(tx, s); err != nil {
		return lost, err
	}
	if !repairing && !unclean {
		return lost, nil
	}

	counts := make(map[string]uint64)
	var missing []string
	err := tx.AscendRange("", logFirst, logEnd, func(k, v string) bool {
		id, _ := logID(k)
		body, _ := unseal(k, v)   // sound: damaged records were deleted above
		r, _ := decodeEvent(body) // and the others sealed
		counts[r.key]++
		if ik := indexKey(r.key, id); !exists(tx, ik) {
			missing = append(missing, ik)
		}
		return true
	})
	if err != nil {
		return lost, err
	}

	var orphans []string
	type orphan struct {
		key  string
		id   uint64
		used bool
	}
	var lostEntries []orphan // orphans whose event is gone
	err = tx.AscendRange("", idxFirst, idxEnd, func(k, _ string) bool {
		if orphanIndex(tx, k) {
			orphans = append(orphans, k)
			// An entry whose event is there under another key had its own
			// key changed: nothing is lost (the event's entry is added back).
			if key, id, ok := parseIndexKey(k); ok && !exists(tx, logKey(id)) {
				lost.keys[key] = max(lost.keys[key], id)
				lostEntries = append(lostEntries, orphan{key: key, id: id})
			}
		}
		return true
	})
	if err != nil {
		return lost, err
	}
	// Each damaged event should be one of the index entries left without
	// their event: the one with its id or, when its id is what changed, one
	// of the key it holds. Those keys report the loss above. A damaged event
	// matched by neither has a key nobody knows: every key reports it.
	match := func(ok func(o *orphan) bool) bool {
		for i := range lostEntries {
			if o := &lostEntries[i]; !o.used && ok(o) {
				o.used = true
				return true
			}
		}
		return false
	}
	var unmatched []damage
	for _, d := range damagedEvents {
		if !match(func(o *orphan) bool { return o.id == d.id }) {
			unmatched = append(unmatched, d)
		}
	}
	for _, d := range unmatched {
		if d.hint == "" || !match(func(o *orphan) bool { return o.key == d.hint }) {
			// Its id may be damaged too: an id past the newest sound one
			// counts as that one (ids skip past both below).
			lost.all = max(lost.all, min(d.id, last))
		}
	}

	type kv struct{ k, v string }
	var metas []kv
	err = tx.AscendRange("", "m", metaEnd, func(k, v string) bool {
		metas = append(metas, kv{k, v})
		return true
	})
	if err != nil {
		return lost, err
	}

	for _, k := range missing {
		if _, _, err := tx.Set(k, "", nil); err != nil {
			return lost, err
		}
	}
	for _, k := range orphans {
		if err := deleteIfExists(tx, k); err != nil {
			return lost, err
		}
	}
	next := last + uncleanIDSkip
	raise := lost.all
	switch {
	case b.framingCut:
		raise = next // events of any id may have been in the cut-out bytes
	case unclean:
		raise = last
	}
	for _, e := range metas {
		key := e.k[1:]
		c := counts[key]
		if c == 0 {
			// No events left: the key reports the floor, raised below.
			if err := deleteIfExists(tx, e.k); err != nil {
				return lost, err
			}
			continue
		}
		body, _ := unseal(e.k, e.v) // sound, as above
		m, _ := decodeMeta(body)
		dropped := max(m.dropped, raise, lost.keys[key])
		if m.count != c && lost.keys[key] == 0 {
			dropped = max(last, raise) // wrong for no known reason: what it dropped is unknown
		}
		m.count, m.dropped = c, dropped
		if _, _, err := tx.Set(e.k, b.encodeMeta(e.k, m), nil); err != nil {
			return lost, err
		}
		delete(counts, key)
	}
	for _, key := range slices.Sorted(maps.Keys(counts)) {
		mk := metaKey(key)
		if _, _, err := tx.Set(mk, b.encodeMeta(mk, keyMeta{count: counts[key], dropped: max(last, raise)}), nil); err != nil {
			return lost, err
		}
	}

	floor := max(b.floor, last, raise)
	if _, _, err := tx.Set(keyFloor, encodeUvarint(keyFloor, floor), nil); err != nil {
		return lost, err
	}
	if _, _, err := tx.Set(keyLast, encodeLast(next, b.lastTime), nil); err != nil {
		return lost, err
	}
	b.floor, b.next = floor, next
	if unclean {
		lost.all = max(lost.all, raise)
	}
	return lost, nil
}

// seal adds checksums to the values written before them, and n:crc.
func (b *Bunt) seal(tx *buntdb.Tx, s *loadScan) error {
	if s.sealed && s.legacy == 0 {
		return nil
	}
	type kv struct{ k, v string }
	var legacy []kv
	err := tx.Ascend("", func(k, v string) bool {
		switch {
		case k == "", k[0] == prefixIndex, k == keyClean, k == keyCRC:
		case !isSealed(v):
			legacy = append(legacy, kv{k, v})
		}
		return true
	})
	if err != nil {
		return err
	}
	for _, e := range legacy {
		if _, _, err := tx.Set(e.k, sealString(e.k, []byte(e.v)), nil); err != nil {
			return err
		}
	}
	_, _, err = tx.Set(keyCRC, sealString(keyCRC, nil), nil)
	return err
}

func exists(tx *buntdb.Tx, k string) bool {
	_, err := tx.Get(k)
	return err == nil
}
