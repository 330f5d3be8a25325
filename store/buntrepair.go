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

// fixPlan is what load decided about the file.
type fixPlan struct {
	repairing   bool   // damaged records to drop (Options.Repair)
	unclean     bool   // not closed cleanly (or damaged framing was cut out)
	last        uint64 // the last id in the file
	next        uint64 // last plus uncleanIDSkip: written to n:last
	lostThrough uint64 // every key may have lost acknowledged events up to here (0: none)
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
//   - every key's metadata is recounted; a key with fewer events than its
//     metadata counted, beyond the losses the file names (the lost part of a
//     transaction), or, in a damaged file, whose count was wrong at all,
//     reports a gap up to the last id, since what it dropped is unknown;
//   - the prev id of every index entry is kept: the prev of a key's oldest
//     retained event was dropped (see Retention), even if the metadata
//     update that recorded it was lost;
//   - PubID index entries that do not point to a sound event with their
//     PubID are deleted, and the newest event of a PubID left without one
//     gets it back;
//   - every key's dropped, and the floor, go to p.lostThrough: after a
//     machine crash under SyncEverySecond or SyncNever, acknowledged events
//     up to there may be lost without a trace in the file (0 under
//     SyncAlways, or after only the process died, see keptWrites: nothing
//     acknowledged can be missing, so a key whose events are all in the file
//     reports no gap);
//   - in a damaged file whose metadata, n:floor or n:last was lost, the floor
//     (what a key without metadata reports) goes to the last id too;
//   - n:last is p.next: ids skip uncleanIDSkip, so an id a client saw on an
//     event that is now lost is never handed out again.
//
// unclean: buntdb writes each transaction with one Write (see Durability)
// but keeps no transaction boundaries in the file, so a crash (power loss,
// kernel panic, or a kill -9 arriving while write(2) copies) can leave part
// of the last one: an index entry without its log record, a log record
// without its index entry, a count that is off, a MaxEvents trim whose
// dropped id was lost.
//
// It reads the whole database, like buntdb's load before it.
func (b *Bunt) fixup(tx *buntdb.Tx, s *loadScan, p fixPlan) (lossReport, error) {
	lost := lossReport{keys: make(map[string]uint64)}
	last := p.last
	var damagedEvents []damage
	floorUnknown := false
	if p.repairing {
		for _, d := range s.damaged {
			if err := deleteIfExists(tx, d.key); err != nil {
				return lost, err
			}
			switch _, _, isIndex := parseIndexKey(d.key); {
			case d.id != 0:
				damagedEvents = append(damagedEvents, d)
			case isIndex, d.key == keyCRC, d.key == keyEpoch, d.key == keySync, d.key == keyBoot,
				len(d.key) > 0 && d.key[0] == prefixPub:
				// Rebuilt below, or nothing lost with it.
			default:
				floorUnknown = true // metadata, n:floor, n:last or a key of no known form
			}
		}
	}
	if err := b.seal(tx, s); err != nil {
		return lost, err
	}
	if !p.repairing && !p.unclean {
		return lost, nil
	}

	counts := make(map[string]uint64)
	newest := make(map[string]uint64)
	pubNewest := make(map[string]uint64)
	var missing []string
	err := tx.AscendRange("", logFirst, logEnd, func(k, v string) bool {
		id, _ := logID(k)
		body, _ := unseal(k, v)   // sound: damaged records were deleted above
		r, _ := decodeEvent(body) // and the others sealed
		counts[r.key]++
		newest[r.key] = id
		var ev Event
		if setNameSlot(&ev, r.name) && ev.PubID != "" {
			pubNewest[ev.PubID] = id
		}
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
	lostN := make(map[string]uint64)
	err = tx.AscendRange("", idxFirst, idxEnd, func(k, _ string) bool {
		if orphanIndex(tx, k) {
			orphans = append(orphans, k)
			if key, id, ok := parseIndexKey(k); ok {
				lost.keys[key] = max(lost.keys[key], id)
				lostN[key]++
				if !exists(tx, logKey(id)) {
					lostEntries = append(lostEntries, orphan{key: key, id: id})
				}
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
			// counts as that one (ids skip past both).
			lost.all = max(lost.all, min(d.id, last))
		}
	}

	type kv struct{ k, v string }
	var metas, pubs []kv
	err = tx.AscendRange("", "m", metaEnd, func(k, v string) bool {
		metas = append(metas, kv{k, v})
		return true
	})
	if err != nil {
		return lost, err
	}
	err = tx.AscendRange("", string(rune(prefixPub)), string(rune(prefixPub+1)), func(k, v string) bool {
		pubs = append(pubs, kv{k, v})
		return true
	})
	if err != nil {
		return lost, err
	}

	for _, k := range missing {
		// The prev is unknown (0): the metadata's dropped covers the key.
		if _, _, err := tx.Set(k, encodePrev(k, 0), nil); err != nil {
			return lost, err
		}
	}
	for _, k := range orphans {
		if err := deleteIfExists(tx, k); err != nil {
			return lost, err
		}
	}
	for _, e := range pubs {
		id, ok := decodePubEntry(e.k, e.v)
		if ok && pubEntrySound(tx, pubEntry{key: e.k, id: id}) {
			delete(pubNewest, e.k[1:])
			continue
		}
		if err := deleteIfExists(tx, e.k); err != nil {
			return lost, err
		}
	}
	for pub, id := range pubNewest {
		pk := pubKeyBunt(pub)
		if _, _, err := tx.Set(pk, encodeUvarint(pk, id), nil); err != nil {
			return lost, err
		}
	}

	raise := max(lost.all, p.lostThrough)
	floor := max(b.floor, raise)
	if floorUnknown {
		floor = max(floor, last)
	}
	for _, e := range metas {
		key := e.k[1:]
		c := counts[key]
		body, _ := unseal(e.k, e.v) // sound, as above
		m, ok := decodeMeta(body)
		if !ok || c+lostN[key] < m.count || p.repairing && c != m.count && lost.keys[key] == 0 {
			// Wrong for no known reason: what it dropped is unknown.
			lost.keys[key] = max(lost.keys[key], last)
		}
		if c == 0 {
			// Forgotten: Retention reports the floor for it.
			floor = max(floor, m.dropped, lost.keys[key])
			if err := deleteIfExists(tx, e.k); err != nil {
				return lost, err
			}
			continue
		}
		m.count, m.newest = c, newest[key]
		m.dropped = max(m.dropped, raise, lost.keys[key])
		if _, _, err := tx.Set(e.k, b.encodeMeta(e.k, m), nil); err != nil {
			return lost, err
		}
		delete(counts, key)
	}
	for _, key := range slices.Sorted(maps.Keys(counts)) {
		// Events without metadata: the transaction that added the key's
		// first events lost its metadata update (nothing was dropped by it,
		// but the key may have been forgotten before), or it was damaged.
		dropped := max(b.floor, raise, lost.keys[key])
		if p.repairing {
			dropped = max(dropped, last)
		}
		mk := metaKey(key)
		if _, _, err := tx.Set(mk, b.encodeMeta(mk, keyMeta{count: counts[key], newest: newest[key], dropped: dropped}), nil); err != nil {
			return lost, err
		}
	}
	for key, id := range lost.keys {
		if _, ok := newest[key]; !ok {
			floor = max(floor, id) // a key left without events
		}
	}

	if _, _, err := tx.Set(keyFloor, encodeUvarint(keyFloor, floor), nil); err != nil {
		return lost, err
	}
	if _, _, err := tx.Set(keyLast, encodeLast(p.next, b.lastTime), nil); err != nil {
		return lost, err
	}
	b.floor = floor
	lost.all = max(lost.all, raise)
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
		case k == keyClean, k == keyCRC:
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
