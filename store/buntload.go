package store

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/tidwall/buntdb"
)

// load checks every record once, when the file is opened (buntdb has just
// read all of it into memory), and recovers the state kept outside buntdb.
//
// A record is damaged if its value fails its checksum or does not decode, if
// its key has none of the layout's forms, or, in a file that was closed
// cleanly, if it contradicts the others: an index entry without its event,
// an event without its index entry, metadata whose count is wrong or whose
// key has no events. A damaged file is refused with ErrCorrupt naming the
// file, the offset of the first damaged record and its event id, unless
// Options.Repair is set (see fixup). Records written before checksums are
// accepted, logged once, and sealed.
//
// It also sets the ids of this open (see Incarnations): the epoch, and
// b.next to the id before the first one it hands out.
func (b *Bunt) load() error {
	s := loadScan{counts: make(map[string]uint64), metas: make(map[string]keyMeta)}
	err := b.db.View(func(tx *buntdb.Tx) error {
		if err := s.scan(tx); err != nil {
			return err
		}
		if s.clean && len(s.damaged) == 0 {
			return s.check(tx)
		}
		return nil
	})
	if err != nil {
		return b.wrap(err)
	}
	last := s.maxID // the last id in the file
	b.lastTime, b.floor = s.maxTime, s.floor
	if s.lastOK {
		last, b.lastTime = max(last, s.lastID), max(b.lastTime, s.lastTime)
	}
	empty := s.n == 0
	var problems []damage
	if b.path != "" {
		problems = append(slices.Clip(s.damaged), s.inconsistent...)
		if len(problems) > 0 && !b.opts.Repair {
			return b.damageError(problems)
		}
		if s.legacy > 0 {
			b.opts.Logger.Warn("store: file has records without checksums (written by an older sseloop); adding checksums",
				"path", b.path, "records", s.legacy)
		}
	}
	repairing := len(problems) > 0 || b.framingCut
	unclean := b.path != "" && !empty && (!s.clean || b.framingCut)
	next := last
	if unclean || repairing {
		// Clients may have seen ids that did not reach the disk, or that a
		// damaged record held: they are never handed out again.
		next += uncleanIDSkip
	}
	start := idBase(b.opts.Now(), next)
	if start > MaxID {
		return fmt.Errorf("%w: %s: last id %d", ErrIDSpace, b.name(), next)
	}
	epoch := s.epoch
	if empty || epoch == 0 {
		// A new incarnation, or a file from before epochs: its ids began at 1.
		epoch = max(1, start*boolUint(empty))
	}
	if s.epochLost || repairing && !empty && s.epoch == 0 {
		// Damaged, or perhaps in a damaged record of no known form, or in
		// cut-out framing: unknown. A new incarnation, so that a client
		// resuming with an id of an earlier one is told of a gap (a false
		// one at worst).
		epoch = start
	}
	b.epoch = epoch
	// Every acknowledged event is in the file if the open that crashed
	// fsynced before acknowledging (SyncAlways, recorded and sound), or if
	// only its process died (see keptWrites). Otherwise anything before the
	// new start may have been lost, and so may anything in cut-out framing.
	kept := s.keptWrites(b.boot)
	var lostThrough uint64
	if unclean && (!kept || b.framingCut) {
		lostThrough = start - 1
	}
	defer func() { b.next = start - 1 }()
	if b.path == "" || !repairing && !unclean && s.sealed && s.legacy == 0 {
		return nil
	}
	var backup string
	if repairing {
		if backup, err = b.backup(); err != nil {
			return err
		}
	}
	var lost lossReport
	err = b.db.Update(func(tx *buntdb.Tx) error {
		var err error
		lost, err = b.fixup(tx, &s, fixPlan{repairing: repairing, unclean: unclean, last: last, next: next, lostThrough: lostThrough})
		return err
	})
	if err != nil {
		if unclean && !repairing {
			return fmt.Errorf("store: repair %s after unclean shutdown: %w", b.path, b.wrap(err))
		}
		return fmt.Errorf("store: repair %s: %w", b.path, b.wrap(err))
	}
	b.writes.Add(1)
	if unclean && !repairing {
		b.opts.Logger.Warn("store: file was not closed cleanly; rebuilt its index and counts from the log",
			"path", b.path, "sync_before", s.sync, "same_boot", s.sameBoot(b.boot), "last_id", last, "all_keys_gap_through", lost.all,
			"keys_with_lost_events", len(lost.keys), "next_id", start)
	}
	if repairing {
		b.corruptN.Add(uint64(len(s.damaged)))
		first := "none"
		if len(problems) > 0 {
			first = describeRecord(problems[0].key) + ": " + problems[0].reason
		}
		b.opts.Logger.Warn("store: repaired a damaged file: dropped its damaged records; clients resuming from before them get a gap",
			"path", b.path, "copy", backup, "damaged_records", len(problems), "first", first,
			"keys_with_lost_events", len(lost.keys), "all_keys_gap_before_id", lost.all, "next_id", start)
	}
	return nil
}

// loadScan is what load learns in one pass over the database.
type loadScan struct {
	n      int  // records
	sealed bool // n:crc present: every value must be sealed
	clean  bool // n:clean present
	legacy int  // values without checksums

	epoch     uint64 // n:epoch, 0 if absent
	epochLost bool   // n:epoch damaged
	sync      string // n:sync ("" if absent or damaged)
	boot      string // n:boot ("" if absent, damaged or unknown when written)

	lastOK   bool // n:last present and sound
	lastID   uint64
	lastTime int64
	floor    uint64
	maxID    uint64 // newest sound log record
	maxTime  int64

	nLog, nIndex int
	counts       map[string]uint64  // sound log records per subscription key
	metas        map[string]keyMeta // sound metadata per subscription key
	missing      []string           // index keys missing for sound log records
	pubs         []pubEntry         // sound PubID index entries

	damaged      []damage // records to drop
	inconsistent []damage // records that contradict others (check, clean files only)
}

// sameBoot reports whether the file was last opened under the running
// kernel, whose boot id is boot: a process that crashed since then lost
// nothing it had written, as the kernel's page cache survived it.
func (s *loadScan) sameBoot(boot string) bool {
	return s.boot != "" && s.boot == boot
}

// keptWrites reports whether the file holds every event acknowledged before
// an unclean shutdown: the open that crashed fsynced each before
// acknowledging it (SyncAlways), or wrote each into the page cache of the
// kernel still running (sameBoot: a killed process, not a crashed machine).
// buntdb's Commit returns after write(2) took the whole transaction, so a
// kill -9 can cut off only a transaction that was never acknowledged.
func (s *loadScan) keptWrites(boot string) bool {
	return s.sync == SyncAlways.String() || s.sameBoot(boot)
}

// pubEntry is a PubID index entry: 'p'+pubID -> id.
type pubEntry struct {
	key string
	id  uint64
}

// damage is one damaged record.
type damage struct {
	key    string // its buntdb key
	id     uint64 // event id of a log record, 0 for other records
	reason string
	hint   string // subscription key the damaged log record holds, if it decodes: perhaps the damaged part
}

// body returns the body of the value v of record k: sealed values must pass
// their checksum; in a file not yet sealed (no n:crc), values without a seal
// are taken as they are. A file being sealed when the process died has both.
func (s *loadScan) body(k, v string) (string, bool) {
	if s.sealed || isSealed(v) {
		return unseal(k, v)
	}
	s.legacy++
	return v, true
}

func (s *loadScan) damage(k string, id uint64, reason string) {
	s.damaged = append(s.damaged, damage{key: k, id: id, reason: reason})
}

// scan reads every record.
func (s *loadScan) scan(tx *buntdb.Tx) error {
	if v, err := tx.Get(keyCRC); err == nil {
		s.sealed = true
		if _, ok := unseal(keyCRC, v); !ok {
			s.damage(keyCRC, 0, "checksum mismatch")
		}
	}
	return tx.Ascend("", func(k, v string) bool {
		s.n++
		if k == "" {
			s.damage(k, 0, "key matches no record of the layout")
			return true
		}
		switch k[0] {
		case prefixLog:
			id, ok := logID(k)
			if !ok {
				s.damage(k, 0, "key matches no record of the layout")
				return true
			}
			body, ok := s.body(k, v)
			if !ok {
				s.damage(k, id, "checksum mismatch (its id, key or data changed)")
				if r, ok := decodeEvent(v[min(len(v), sealHeader):]); ok {
					s.damaged[len(s.damaged)-1].hint = r.key
				}
				return true
			}
			r, ok := decodeEvent(body)
			var ev Event
			if ok {
				ok = setNameSlot(&ev, r.name) // the Mercure fields, if any
			}
			if !ok {
				s.damage(k, id, "cannot be decoded")
				return true
			}
			s.nLog++
			s.counts[r.key]++
			if _, err := tx.Get(indexKey(r.key, id)); err != nil {
				s.missing = append(s.missing, k)
			}
			s.maxID, s.maxTime = max(s.maxID, id), max(s.maxTime, r.time)
		case prefixIndex:
			if _, _, ok := parseIndexKey(k); !ok {
				s.damage(k, 0, "key matches no record of the layout")
				return true
			}
			body, ok := s.body(k, v)
			if ok {
				_, ok = decodePrev(body)
			}
			if !ok {
				s.damage(k, 0, "checksum mismatch or cannot be decoded")
				return true
			}
			s.nIndex++
		case prefixPub:
			body, ok := s.body(k, v)
			var id uint64
			if ok {
				id, ok = decodeUvarint(body)
			}
			if !ok || len(k) < 2 {
				s.damage(k, 0, "checksum mismatch or cannot be decoded")
				return true
			}
			s.pubs = append(s.pubs, pubEntry{key: k, id: id})
		case 'm':
			body, ok := s.body(k, v)
			if !ok {
				s.damage(k, 0, "checksum mismatch")
				return true
			}
			m, ok := decodeMeta(body)
			if !ok {
				s.damage(k, 0, "cannot be decoded")
				return true
			}
			s.metas[k[1:]] = m
		default:
			s.names(k, v)
		}
		return true
	})
}

// names checks the n: records.
func (s *loadScan) names(k, v string) {
	switch k {
	case keyCRC:
		// checked first
	case keyClean:
		if v != "" {
			s.damage(k, 0, "key matches no record of the layout")
			return
		}
		s.clean = true
	case keyLast:
		body, ok := s.body(k, v)
		if ok {
			s.lastID, s.lastTime, ok = decodeLast(body)
		}
		if !ok {
			s.damage(k, 0, "checksum mismatch or cannot be decoded")
			return
		}
		s.lastOK = true
	case keyEpoch:
		body, ok := s.body(k, v)
		if ok {
			s.epoch, ok = decodeUvarint(body)
		}
		if !ok || s.epoch > MaxID {
			s.epoch, s.epochLost = 0, true
			s.damage(k, 0, "checksum mismatch or cannot be decoded")
		}
	case keySync:
		body, ok := s.body(k, v)
		if !ok {
			s.damage(k, 0, "checksum mismatch")
			return
		}
		if _, err := ParseSync(body); err != nil {
			s.damage(k, 0, "cannot be decoded")
			return
		}
		s.sync = body
	case keyBoot:
		body, ok := s.body(k, v)
		if !ok {
			s.damage(k, 0, "checksum mismatch")
			return
		}
		if body != "" && !validBootID(body) {
			s.damage(k, 0, "cannot be decoded")
			return
		}
		s.boot = body
	case keyFloor:
		body, ok := s.body(k, v)
		var floor uint64
		if ok {
			floor, ok = decodeUvarint(body)
		}
		if !ok {
			s.damage(k, 0, "checksum mismatch or cannot be decoded")
			return
		}
		s.floor = floor
	default:
		s.damage(k, 0, "key matches no record of the layout")
	}
}

// check finds contradictions between the sound records of a cleanly closed
// file, where every transaction was written whole. A damaged key (a record
// stored under another key than it was written with) shows up here.
func (s *loadScan) check(tx *buntdb.Tx) error {
	for _, k := range s.missing {
		id, _ := logID(k)
		s.inconsistent = append(s.inconsistent, damage{key: k, id: id, reason: "event has no index entry"})
	}
	if s.nIndex != s.nLog-len(s.missing) {
		// Some index entry has no event, or another key's.
		err := tx.AscendRange("", idxFirst, idxEnd, func(k, _ string) bool {
			if orphanIndex(tx, k) {
				s.inconsistent = append(s.inconsistent, damage{key: k, reason: "index entry without its event"})
			}
			return true
		})
		if err != nil {
			return err
		}
	}
	for _, p := range s.pubs {
		if !pubEntrySound(tx, p) {
			s.inconsistent = append(s.inconsistent, damage{key: p.key, reason: fmt.Sprintf("PubID index entry without its event %d", p.id)})
		}
	}
	for key, c := range s.counts {
		m, ok := s.metas[key]
		if !ok {
			s.inconsistent = append(s.inconsistent, damage{key: metaKey(key), reason: "key has events but no metadata"})
		} else if m.count != c {
			s.inconsistent = append(s.inconsistent, damage{key: metaKey(key),
				reason: fmt.Sprintf("metadata counts %d events, the log holds %d", m.count, c)})
		}
	}
	for key := range s.metas {
		if s.counts[key] == 0 {
			s.inconsistent = append(s.inconsistent, damage{key: metaKey(key), reason: "metadata of a key without events"})
		}
	}
	return nil
}

// orphanIndex reports whether the index entry k lacks a sound log record of
// the same key.
func orphanIndex(tx *buntdb.Tx, k string) bool {
	key, id, ok := parseIndexKey(k)
	if !ok {
		return true
	}
	ev, ok := soundEvent(tx, id)
	return !ok || ev.Key != key
}

// pubEntrySound reports whether the event p points to is in the log, sound,
// with the PubID p names.
func pubEntrySound(tx *buntdb.Tx, p pubEntry) bool {
	ev, ok := soundEvent(tx, p.id)
	return ok && ev.PubID == p.key[1:]
}

// soundEvent reads and decodes the log record of id, sealed or (before the
// file is sealed) not; false if it is missing or damaged. The event's
// strings point into the record.
func soundEvent(tx *buntdb.Tx, id uint64) (Event, bool) {
	lk := logKey(id)
	v, err := tx.Get(lk)
	if err != nil {
		return Event{}, false
	}
	body, ok := unseal(lk, v)
	if !ok && !isSealed(v) {
		body, ok = v, true // not sealed yet
	}
	if !ok {
		return Event{}, false
	}
	r, ok := decodeEvent(body)
	if !ok {
		return Event{}, false
	}
	ev := Event{ID: id, Key: r.key, Time: r.time}
	return ev, setNameSlot(&ev, r.name)
}

// describeRecord names a record of the layout for errors and logs; it never
// quotes more than a few bytes of a damaged key.
func describeRecord(k string) string {
	if id, ok := logID(k); ok {
		return fmt.Sprintf("log record of event %d", id)
	}
	if key, id, ok := parseIndexKey(k); ok {
		return fmt.Sprintf("index entry of key %s, event %d", quoteShort(key), id)
	}
	switch k {
	case keyLast, keyFloor, keyClean, keyCRC, keyEpoch, keySync, keyBoot:
		return "record " + k
	}
	if len(k) > 0 && k[0] == prefixPub {
		return "PubID index entry " + quoteShort(k[1:])
	}
	if len(k) > 0 && k[0] == 'm' {
		return "metadata of key " + quoteShort(k[1:])
	}
	return "unknown record " + quoteShort(k)
}

// quoteShort quotes s, cut to 40 bytes (a damaged key can be anything).
func quoteShort(s string) string {
	const limit = 40
	if len(s) > limit {
		return strconv.Quote(s[:limit]) + "..."
	}
	return strconv.Quote(s)
}

// damageError is the error of a damaged file: the first damaged record in
// file order, with its offset and event id, and the way out.
func (b *Bunt) damageError(problems []damage) error {
	keys := make([]string, len(problems))
	for i, p := range problems {
		keys[i] = p.key
	}
	offsets := recordOffsets(b.path, keys)
	first, off := problems[0], int64(-1)
	for _, p := range problems {
		if o, ok := offsets[p.key]; ok && (off < 0 || o < off) {
			first, off = p, o
		}
	}
	where := ""
	if off >= 0 {
		where = fmt.Sprintf("offset %d: ", off)
	}
	more := ""
	if len(problems) > 1 {
		more = fmt.Sprintf(" (%d damaged records in all)", len(problems))
	}
	return fmt.Errorf("%w: %s: %s%s: %s%s; to drop the damaged records, repair the file: "+
		"start sseloop once with --store.repair (store.Options.Repair), which keeps a copy of the file "+
		"and tells clients resuming across the loss with a gap event", ErrCorrupt, b.path, where,
		describeRecord(first.key), first.reason, more)
}

// recordOffsets returns the offset of the last SET or DEL of each of keys in
// the buntdb file at path (the record whose value buntdb kept). Keys it
// cannot find (or a file it cannot read) are left out.
func recordOffsets(path string, keys []string) map[string]int64 {
	want := make(map[string]int64, len(keys))
	for _, k := range keys {
		want[k] = -1
	}
	f, err := os.Open(path)
	if err == nil {
		_, _, _ = scanAOF(f, want)
		_ = f.Close()
	}
	for k, off := range want {
		if off < 0 {
			delete(want, k)
		}
	}
	return want
}

// backup copies the file to <path>.damaged-<unix seconds> before repair
// changes it, and makes the copy durable.
func (b *Bunt) backup() (string, error) {
	if b.backupPath != "" {
		return b.backupPath, nil // one copy per open: of the file as it was
	}
	src, err := os.Open(b.path)
	if err != nil {
		return "", fmt.Errorf("store: copy %s before repair: %w", b.path, err)
	}
	defer src.Close()
	base := fmt.Sprintf("%s.damaged-%d", b.path, b.opts.Now().Unix())
	for i := 0; ; i++ {
		name := base
		if i > 0 {
			name = fmt.Sprintf("%s-%d", base, i)
		}
		dst, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) && i < 100 {
			continue
		} else if err != nil {
			return "", fmt.Errorf("store: copy %s before repair: %w", b.path, err)
		}
		_, err = io.Copy(dst, src)
		if err == nil {
			err = dst.Sync()
		}
		if cerr := dst.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = syncDir(filepath.Dir(name))
		}
		if err != nil {
			return "", fmt.Errorf("store: copy %s to %s before repair: %w", b.path, name, err)
		}
		b.backupPath = name
		return name, nil
	}
}
