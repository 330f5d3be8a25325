package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/buntdb"
)

// Bunt is the embedded Store, on buntdb (":memory:" or one append-only file).
//
// # Layout
//
// Everything lives in buntdb's one ordered key tree. No buntdb indexes (they
// are not persisted, so each open would rebuild them) and no buntdb TTLs
// (Ascend returns expired-but-unswept items, and buntdb's sweep holds the
// global lock for as long as it takes).
//
//	e<id:8>                    the log (change feed): one record per event, the
//	                           id 8 bytes big-endian so key order is id order.
//	                           Value: uvarint(len key) key uvarint(len name)
//	                           name varint(time ms) data.
//	k<uvarint(len)><key><id:8> the per-key index, value uvarint(prev): the id
//	                           of the key's event before this one (empty in
//	                           older files). Replay scans the range of one key
//	                           and reads the events from the log. The length
//	                           prefix keeps "a" out of the range of "a:b" (see
//	                           appendIndexPrefix). Events go oldest first, so
//	                           the prev of the oldest retained entry is a
//	                           dropped event: Retention needs no other record
//	                           of it, which keeps a gap reported even when a
//	                           crash lost the metadata update of a trim.
//	m<key>                     per-key metadata: uvarint(count) uvarint(dropped)
//	                           uvarint(newest id), updated in the transaction
//	                           that adds or removes the key's events. It
//	                           exists only while the key has events, so
//	                           metadata never outgrows the data.
//	n:floor                    uvarint(floor): what Retention reports as
//	                           Dropped for a key without metadata (all its
//	                           events swept, or it never had any), and where a
//	                           new key's dropped starts: perhaps a false gap,
//	                           never a missed one. The sweeper raises it to the
//	                           last id it removed (every event up to it is
//	                           gone), repair to what may have been lost.
//	n:last                     uvarint(last id) varint(last time). Written by
//	                           the sweeper (which can delete the newest event)
//	                           and by repair; otherwise the newest log record
//	                           holds both. Ids never go backwards, even after
//	                           everything expired and a restart.
//	n:clean                    present only from a clean Close to the next open.
//	n:sync                     the SyncPolicy of the current open ("always",
//	                           ...), written and fsynced at open: after a
//	                           crash, repair knows whether acknowledged events
//	                           can have been lost.
//	n:boot                     the kernel's boot id at the current open (Linux
//	                           /proc/sys/kernel/random/boot_id; empty if
//	                           unknown), written with n:sync: after a crash,
//	                           the same boot id means only the process died
//	                           and the kernel kept every completed write.
//	n:crc                      present once every value of the file is sealed.
//	p<pubID>                   uvarint(id): the newest retained event whose
//	                           Event.PubID is pubID (see IDResolver), deleted
//	                           with that event.
//
// Every value above except n:clean (empty) is sealed: a magic prefix and a
// CRC-32C of the record's key and body come first (see Integrity).
//
//	n:epoch                    uvarint: Head.Epoch, the first id of the file's
//	                           incarnation, written when the file is created
//	                           (1 for files from before it existed).
//
// # Incarnations
//
// A memory store, and a new (or deleted, or emptied) file, is a new
// incarnation: its Epoch is max(1, unix_ms*1000) at open (see the package
// doc). A reopened file keeps its epoch and history, but every open starts
// its ids at max(last+1, unix_ms*1000) and LastID at the id before: a file
// restored from an older copy cannot hand out again ids that clients hold,
// and a reader following from LastID sees no hole.
//
// # Retention
//
// MaxEvents is enforced in Append's transaction: a key's oldest index entries
// and their log records go, and dropped is raised. TTL is enforced by Sweep,
// not buntdb: events are appended in time order (an event's time is clamped to
// never decrease with the id), so Sweep walks the log from its start, deletes
// events older than the TTL with their index entries and metadata updates, and
// stops at the first young one, 1,000 events per write transaction so the lock
// is never held long. Readers filter by time, so an expired event is never
// returned even if the sweeper is behind.
//
// # Durability
//
// buntdb's own fsync is off: it drops fsync errors, and under EverySecond it
// fsyncs while holding the database lock exclusively. Bunt fsyncs the file
// itself, through its own descriptor: under SyncAlways inside Append, before
// any reader can see the new events; under SyncEverySecond from a background
// goroutine, outside any lock. A failed fsync is returned and makes the store
// refuse further writes (ErrSync). buntdb's Shrink replaces the file; Bunt
// notices (same path, new file) and fsyncs the new file and its directory.
//
// buntdb hands each write transaction to the kernel with one Write of one
// buffer: one write(2), or more if Go splits it (over 1 GiB) or the kernel
// takes only part of it (a full disk, a fatal signal arriving mid-copy).
// Commit, so Append, returns only after the last byte was taken. buntdb has no record of where
// a transaction ends, so a crash can leave part of the last one, which was
// never acknowledged. A clean Close writes n:clean; opening a non-empty file
// without it repairs the layout (index and metadata rebuilt from the log, see
// fixup) and skips uncleanIDSkip ids, so ids that clients may have seen but
// that were lost with unsynced data are never handed out again. What else
// repair assumes lost depends on what crashed:
//   - nothing acknowledged under SyncAlways, or under any policy when n:boot
//     is the running kernel's boot id: only the process died (kill -9, OOM
//     kill, panic), and every write(2) it completed is in the page cache,
//     which the open reads and fsyncs. Repair raises no key's dropped except
//     where the file shows a loss.
//   - otherwise (the machine crashed or lost power, or the boot id is
//     unknown) the last second(s) of events may be gone without a trace, so
//     every key's dropped and the floor go to the new start's id - 1.
//
// Not covered: a write error in the kernel's writeback that a fsync of the
// killed process already reported (ErrSync), then a kill -9 in the same
// boot: the kernel may have dropped the pages it could not write, and the
// next open cannot tell.
//
// # Integrity
//
// Every value Bunt decodes is sealed with a CRC-32C of its buntdb key and
// body (see sealMagic). Opening a file checks every record (buntload.go): a
// bad checksum, a key of no known form, or, in a cleanly closed file, records
// that contradict each other fail the open with ErrCorrupt, unless
// Options.Repair drops them (buntrepair.go; damaged framing: buntframing.go)
// and records the loss in the metadata, so that Retention reports it. Reads
// after open check each record they decode again and skip one that fails
// (damagedRead).
type Bunt struct {
	db   *buntdb.DB
	path string // "" for memory
	opts Options
	ttl  int64 // milliseconds, -1 forever

	// lastID is the highest id whose events are visible (and, under
	// SyncAlways, durable). After checks it before taking any lock.
	lastID atomic.Uint64

	// epoch is Head.Epoch, fixed at open.
	epoch uint64

	// Guarded by buntdb's lock: written only in write transactions.
	next     uint64 // last id handed out (0: none yet); a failed commit leaves a hole
	lastTime int64  // time of the newest event
	floor    uint64 // see n:floor
	buf      []byte // encoding buffer

	// durable: SyncAlways on a file. Append then holds rmu exclusively across
	// commit and fsync, and readers hold it shared, so no reader sees an event
	// that a crash could still take back.
	durable bool
	rmu     sync.RWMutex

	fmu      sync.Mutex
	openFile func(path string) (syncFile, error)
	syncf    syncFile    // our descriptor of the file, nil for memory or after Close
	syncInfo os.FileInfo // identity of syncf, to notice buntdb's Shrink replacing the file
	synced   uint64      // value of writes at the last fsync
	writes   atomic.Uint64

	failed atomic.Pointer[error] // sticky fsync failure
	bgErr  atomic.Pointer[error] // last background sweep error, nil after a success

	// Records found damaged after open (see damagedRead).
	corruptN atomic.Uint64       // CorruptRecords
	lostAll  atomic.Uint64       // highest damaged event id: every key reports it dropped
	badMu    sync.Mutex          //
	bad      map[string]struct{} // buntdb keys already counted, under badMu

	lock *os.File // <path>.lock, flocked while open; nil for memory

	// Set by Repair at open.
	backupPath string // the copy of the damaged file
	framingCut bool   // damaged framing was cut out: what it held is unknown

	boot string // bootID() at open, recorded in n:boot

	closed atomic.Bool
	stop   context.CancelFunc
	wg     sync.WaitGroup
}

const (
	// sweepBatch bounds the events one write transaction of Sweep removes, so
	// that Append never waits long for the lock.
	sweepBatch = 1000
	// uncleanIDSkip is how far ids jump after an unclean shutdown: more events
	// than can be lost with the unsynced tail of the file (about a second
	// under SyncEverySecond, about 30 s of Linux dirty writeback under
	// SyncNever) at hundreds of thousands of events per second.
	uncleanIDSkip = 1 << 24
	// autoShrinkMinSize: buntdb rewrites the file once it is this large and
	// twice its size after the previous rewrite (AutoShrinkPercentage 100), so
	// under churn the file stays within about twice the live data, or this.
	autoShrinkMinSize = 4 << 20
)

// Compile-time checks.
var (
	_ Store      = (*Bunt)(nil)
	_ Sweeper    = (*Bunt)(nil)
	_ HeadReader = (*Bunt)(nil)
)

// syncFile is the part of an *os.File through which Bunt makes buntdb's
// writes durable: buntdb writes each commit with one Write on its own
// descriptor, Bunt fsyncs the same file through this one. Tests wrap it to
// record the order of writes, fsyncs and returns.
type syncFile interface {
	Sync() error
	Stat() (os.FileInfo, error)
	Close() error
}

func openSyncFile(path string) (syncFile, error) { return os.OpenFile(path, os.O_RDWR, 0) }

// OpenBunt opens a buntdb store: path ":memory:" (or "") keeps everything in
// memory; anything else is a file, created if missing, with a lock file
// beside it (path + ".lock"): a second open of the same file, from this
// process or another, fails with ErrLocked. A file whose last record was cut
// off (a crash during a write) opens without that record; any other damage
// fails with ErrCorrupt naming the file and the offset, or with
// Options.Repair is repaired.
func OpenBunt(path string, opts Options) (*Bunt, error) {
	return openBuntFile(path, opts, openSyncFile)
}

func openBuntFile(path string, opts Options, openFile func(string) (syncFile, error)) (*Bunt, error) {
	o, err := opts.normalize()
	if err != nil {
		return nil, err
	}
	if path == "" {
		path = ":memory:"
	}
	b := &Bunt{opts: o, ttl: o.ttlMillis(), openFile: openFile}
	if path != ":memory:" {
		b.path = path
		b.durable = o.Sync == SyncAlways
		b.boot = bootID()
		if b.lock, err = lockFile(path + ".lock"); err != nil {
			return nil, fmt.Errorf("store: lock %s: %w", path, err)
		}
		if err := b.prepareFile(); err != nil {
			_ = b.lock.Close()
			return nil, err
		}
	}
	b.db, err = buntdb.Open(path)
	if err != nil {
		if b.lock != nil {
			_ = b.lock.Close()
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if err := b.init(); err != nil {
		_ = b.db.Close()
		if b.syncf != nil {
			_ = b.syncf.Close()
		}
		if b.lock != nil {
			_ = b.lock.Close()
		}
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	b.stop = stop
	b.wg.Add(1)
	go b.background(ctx)
	return b, nil
}

// prepareFile checks an existing file and cuts off a torn last record.
// Damaged framing fails with ErrCorrupt, or with Options.Repair is cut out
// (repairFraming).
func (b *Bunt) prepareFile() error {
	path := b.path
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("store: open %s: %w", path, err)
	}
	defer f.Close()
	end, torn, err := checkAOF(f)
	var ae *aofError
	switch {
	case errors.As(err, &ae):
	case err != nil:
		return fmt.Errorf("store: read %s: %w", path, err)
	case torn && closedCleanly(f):
		// The last write was Close's: nothing after it was cut off by a
		// crash, so the record that runs past the end of the file is a
		// damaged length, and cutting there would drop the records after it.
		ae = &aofError{off: end, reason: "record runs past the end of a file that was closed cleanly"}
	case torn:
		if err := f.Truncate(end); err != nil {
			return fmt.Errorf("store: truncate %s at its cut-off last record (offset %d): %w", path, end, err)
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrSync, path, err)
		}
		return nil
	default:
		return nil
	}
	if !b.opts.Repair {
		return fmt.Errorf("%w: %s: %w: %w; to cut out the damaged bytes, repair the file: start sseloop once with "+
			"--store.repair (store.Options.Repair), which keeps a copy of the file and tells every resuming client "+
			"about a possible gap", ErrCorrupt, path, ae, buntdb.ErrInvalid)
	}
	return b.repairFraming(f)
}

// cleanRecord is the record Close writes last (buntdb writes it this way).
const cleanRecord = "*3\r\n$3\r\nset\r\n$7\r\n" + keyClean + "\r\n$0\r\n\r\n"

// closedCleanly reports whether the file f ends with cleanRecord (and NUL
// bytes, which buntdb skips).
func closedCleanly(f *os.File) bool {
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	var buf [4096]byte
	off := max(0, fi.Size()-int64(len(buf)))
	n, err := f.ReadAt(buf[:fi.Size()-off], off)
	if err != nil && !errors.Is(err, io.EOF) {
		return false
	}
	tail := strings.TrimRight(string(buf[:n]), "\x00")
	return strings.HasSuffix(tail, cleanRecord)
}

// init configures buntdb and recovers the state kept outside it.
func (b *Bunt) init() error {
	var cfg buntdb.Config
	if err := b.db.ReadConfig(&cfg); err != nil {
		return b.wrap(err)
	}
	cfg.SyncPolicy = buntdb.Never // Bunt fsyncs itself: see Durability above
	cfg.AutoShrinkDisabled = false
	cfg.AutoShrinkPercentage = 100
	cfg.AutoShrinkMinSize = autoShrinkMinSize
	if err := b.db.SetConfig(cfg); err != nil {
		return b.wrap(err)
	}
	if b.path != "" {
		f, err := b.openFile(b.path)
		if err != nil {
			return fmt.Errorf("store: open %s: %w", b.path, err)
		}
		b.syncf = f
		if b.syncInfo, err = f.Stat(); err != nil {
			return fmt.Errorf("store: stat %s: %w", b.path, err)
		}
	}
	err := b.load()
	if err != nil {
		return err
	}
	if b.path != "" {
		if err := b.db.Update(func(tx *buntdb.Tx) error {
			if _, _, err := tx.Set(keyEpoch, encodeUvarint(keyEpoch, b.epoch), nil); err != nil {
				return err
			}
			if _, _, err := tx.Set(keySync, sealString(keySync, []byte(b.opts.Sync.String())), nil); err != nil {
				return err
			}
			if _, _, err := tx.Set(keyBoot, sealString(keyBoot, []byte(b.boot)), nil); err != nil {
				return err
			}
			_, err := tx.Delete(keyClean)
			if errors.Is(err, buntdb.ErrNotFound) {
				return nil
			}
			return err
		}); err != nil {
			return b.wrap(err)
		}
		b.writes.Add(1)
		// The next open must see the marker gone, or it would skip the
		// repair, and must see this open's sync policy and boot id. This
		// fsync also makes durable what a killed process of the same boot
		// left in the page cache, before any client is told it was kept.
		if err := b.syncFile(false); err != nil {
			return err
		}
	}
	b.lastID.Store(b.next)
	return nil
}

// background sweeps expired events and, under SyncEverySecond, fsyncs.
func (b *Bunt) background(ctx context.Context) {
	defer b.wg.Done()
	var sweep, tick <-chan time.Time
	if b.opts.SweepInterval > 0 && b.ttl >= 0 {
		t := time.NewTicker(b.opts.SweepInterval)
		defer t.Stop()
		sweep = t.C
	}
	if b.path != "" && b.opts.Sync != SyncNever {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-sweep:
			if _, err := b.Sweep(ctx); err != nil && ctx.Err() == nil {
				b.bgErr.Store(&err)
			} else {
				b.bgErr.Store(nil)
			}
		case <-tick:
			// SyncEverySecond: fsync what was written. SyncAlways: Append
			// fsyncs, but if buntdb's automatic Shrink replaced the file, make
			// the new file durable even if no Append follows.
			if err := b.syncFile(b.opts.Sync == SyncAlways); err != nil {
				b.fail(err)
			}
		}
	}
}

// syncFile fsyncs the file if anything was written since the last fsync (or,
// with onlyIfReplaced, only if buntdb's Shrink replaced the file). If Shrink
// replaced it, it fsyncs the new file and the directory and keeps a descriptor
// of the new file. It returns nil for memory stores and after Close.
func (b *Bunt) syncFile(onlyIfReplaced bool) error {
	b.fmu.Lock()
	defer b.fmu.Unlock()
	if b.syncf == nil {
		return nil
	}
	writes := b.writes.Load()
	if !onlyIfReplaced && writes != b.synced {
		if err := b.syncf.Sync(); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrSync, b.path, err)
		}
	}
	fi, err := os.Stat(b.path)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrSync, b.path, err)
	}
	if !os.SameFile(fi, b.syncInfo) {
		f, err := b.openFile(b.path)
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrSync, b.path, err)
		}
		if fi, err = f.Stat(); err == nil {
			err = f.Sync()
		}
		if err == nil {
			err = syncDir(filepath.Dir(b.path))
		}
		if err != nil {
			_ = f.Close()
			return fmt.Errorf("%w: %s: %w", ErrSync, b.path, err)
		}
		_ = b.syncf.Close()
		b.syncf, b.syncInfo = f, fi
	}
	if !onlyIfReplaced {
		b.synced = writes
	}
	return nil
}

func boolUint(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil // directories cannot be fsynced there; NTFS journals renames
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// fail records a sticky fsync failure.
func (b *Bunt) fail(err error) { b.failed.CompareAndSwap(nil, &err) }

// check returns the error a method must return before doing anything.
func (b *Bunt) check(ctx context.Context) error {
	if b.closed.Load() {
		return ErrClosed
	}
	return ctx.Err()
}

// wrap turns buntdb errors into store errors.
func (b *Bunt) wrap(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, buntdb.ErrDatabaseClosed):
		return ErrClosed
	case errors.Is(err, ErrCorrupt), errors.Is(err, ErrSync), errors.Is(err, ErrClosed):
		return err
	}
	return fmt.Errorf("store: %s: %w", b.name(), err)
}

func (b *Bunt) name() string {
	if b.path == "" {
		return ":memory:"
	}
	return b.path
}

// cutoff returns the time at or before which events are expired.
func (b *Bunt) cutoff() int64 {
	if b.ttl < 0 {
		return math.MinInt64
	}
	return b.opts.Now().UnixMilli() - b.ttl
}

// keyAppend is the per-key state of one Append.
type keyAppend struct {
	key     string
	n       int    // events of the key in the batch
	seen    int    // events of the key assigned an id so far
	dropped uint64 // highest id dropped at once (more than MaxEvents in the batch)
	prev    uint64 // id of the key's event before the next one
	m       keyMeta
}

// Append implements Store.
func (b *Bunt) Append(ctx context.Context, evs []Event) error {
	if err := b.check(ctx); err != nil {
		return err
	}
	if p := b.failed.Load(); p != nil {
		return *p
	}
	if len(evs) == 0 {
		return nil
	}
	if b.durable {
		b.rmu.Lock()
		defer b.rmu.Unlock()
	}
	var last uint64
	err := b.db.Update(func(tx *buntdb.Tx) error {
		var err error
		last, err = b.appendTx(tx, evs)
		return err
	})
	if err != nil {
		for i := range evs {
			evs[i].ID, evs[i].Time = 0, 0
		}
		return b.wrap(err)
	}
	b.writes.Add(1)
	if b.durable {
		if err := b.syncFile(false); err != nil {
			b.fail(err)
			// The events are committed in memory and ids must not be reused:
			// publish them, but report that they may not survive a crash.
			atomicMax(&b.lastID, last)
			return err
		}
	}
	atomicMax(&b.lastID, last)
	return nil
}

func (b *Bunt) appendTx(tx *buntdb.Tx, evs []Event) (uint64, error) {
	t := max(b.opts.Now().UnixMilli(), b.lastTime)
	// Group by key. Most batches are one trigger: no map then.
	var one [1]keyAppend
	ks := one[:0]
	var pos map[string]int
	if len(evs) > 1 {
		pos = make(map[string]int)
	}
	find := func(key string) int {
		if pos == nil {
			return 0
		}
		i, ok := pos[key]
		if !ok {
			i = len(ks)
			pos[key] = i
			ks = append(ks, keyAppend{key: key})
		}
		return i
	}
	if pos == nil {
		ks = append(ks, keyAppend{key: evs[0].Key})
	}
	for i := range evs {
		k := find(evs[i].Key) // before indexing: find may grow ks
		ks[k].n++
	}
	for i := range ks {
		m, err := b.meta(tx, ks[i].key)
		if err != nil {
			return 0, err
		}
		ks[i].m, ks[i].prev = m, m.newest
	}
	maxEvents := b.opts.MaxEvents
	id := b.next
	if id+uint64(len(evs)) > MaxID {
		return 0, fmt.Errorf("%w: last id %d", ErrIDSpace, id)
	}
	for i := range evs {
		ev := &evs[i]
		id++
		ev.ID, ev.Time = id, t
		ka := &ks[find(ev.Key)] // every key is in ks already
		ka.seen++
		prev := ka.prev
		ka.prev = id
		if ka.seen <= ka.n-maxEvents {
			// More than MaxEvents of this key in one batch: the oldest would be
			// trimmed by this very transaction, so they are not written at all.
			ka.dropped = id
			continue
		}
		lk := logKey(id)
		b.buf = appendEvent(appendSealHeader(b.buf[:0]), ev)
		sealValue(lk, b.buf)
		if _, _, err := tx.Set(lk, string(b.buf), nil); err != nil {
			return 0, err
		}
		ik := indexKey(ev.Key, id)
		b.buf = appendPrev(b.buf[:0], ik, prev)
		if _, _, err := tx.Set(ik, string(b.buf), nil); err != nil {
			return 0, err
		}
		if ev.PubID != "" {
			pk := pubKeyBunt(ev.PubID)
			if _, _, err := tx.Set(pk, encodeUvarint(pk, id), nil); err != nil {
				return 0, err
			}
		}
	}
	for i := range ks {
		ka := &ks[i]
		m := ka.m
		m.newest = ka.prev
		m.count += uint64(min(ka.n, maxEvents))
		m.dropped = max(m.dropped, ka.dropped)
		if m.count > uint64(maxEvents) {
			removed, top, err := b.trim(tx, ka.key, int(m.count-uint64(maxEvents)))
			if err != nil {
				return 0, err
			}
			m.count -= uint64(removed)
			m.dropped = max(m.dropped, top)
		}
		mk := metaKey(ka.key)
		if _, _, err := tx.Set(mk, b.encodeMeta(mk, m), nil); err != nil {
			return 0, err
		}
	}
	b.next, b.lastTime = id, t
	return id, nil
}

// meta reads the metadata of key. A key without metadata has no events, and
// its history may have been forgotten: it starts with dropped = floor, so a
// new event does not hide the gap Retention reported before it. Damaged
// metadata is rebuilt: the count from the index, dropped as high as any id
// handed out (what it held is unknown: a false gap, never a missed one).
func (b *Bunt) meta(tx *buntdb.Tx, key string) (keyMeta, error) {
	mk := metaKey(key)
	v, err := tx.Get(mk)
	if errors.Is(err, buntdb.ErrNotFound) {
		return keyMeta{dropped: b.floor}, nil
	} else if err != nil {
		return keyMeta{}, err
	}
	if m, ok := b.readMeta(mk, v); ok {
		return m, nil
	}
	m := keyMeta{dropped: max(b.floor, b.next)}
	prefix := indexPrefix(key)
	err = tx.AscendGreaterOrEqual("", prefix, func(k, _ string) bool {
		if !strings.HasPrefix(k, prefix) {
			return false
		}
		m.count++
		m.newest = indexID(k)
		return true
	})
	return m, err
}

// encodeMeta returns the value of the metadata record mk. Call it in a write
// transaction: it uses b.buf.
func (b *Bunt) encodeMeta(mk string, m keyMeta) string {
	b.buf = m.appendTo(b.buf[:0], mk)
	return string(b.buf)
}

// readMeta decodes the metadata record mk, and counts it as damaged if it
// fails its checksum.
func (b *Bunt) readMeta(mk, v string) (keyMeta, bool) {
	if body, ok := unseal(mk, v); ok {
		if m, ok := decodeMeta(body); ok {
			return m, true
		}
	}
	b.damagedRead(mk, 0)
	return keyMeta{}, false
}

// readPrev decodes the index entry k (its value v), and counts it as damaged
// if it fails its checksum.
func (b *Bunt) readPrev(k, v string) (uint64, bool) {
	if body, ok := unseal(k, v); ok {
		if prev, ok := decodePrev(body); ok {
			return prev, true
		}
	}
	b.damagedRead(k, 0)
	return 0, false
}

// readEvent returns the body of the log record k (its value v) and its
// decoded fields. If the record fails its checksum it is counted as damaged
// and ok is false: the caller skips it, as if it had been dropped.
func (b *Bunt) readEvent(k, v string) (body string, r rawEvent, ok bool) {
	if body, ok = unseal(k, v); ok {
		if r, ok = decodeEvent(body); ok {
			return body, r, true
		}
	}
	id, _ := logID(k)
	b.damagedRead(k, id)
	return "", r, false
}

// damagedRead records a record that failed its checksum after open (load
// verified every record, so the bytes changed in memory): it is counted once
// (CorruptRecords), the first is logged, and for an event every key reports
// it dropped from now on (the key of a damaged record cannot be trusted), so
// a client resuming across it is told with a gap, never left with a hole.
// The record stays in the file: the next open checks it again.
func (b *Bunt) damagedRead(k string, id uint64) {
	b.badMu.Lock()
	if b.bad == nil {
		b.bad = make(map[string]struct{})
	}
	_, seen := b.bad[k]
	b.bad[k] = struct{}{}
	b.badMu.Unlock()
	if seen {
		return
	}
	if id != 0 {
		atomicMax(&b.lostAll, id)
	}
	if b.corruptN.Add(1) == 1 {
		b.opts.Logger.Error("store: a record failed its checksum after open; skipping it and reporting a gap (further damaged records are only counted)",
			"path", b.name(), "record", describeRecord(k), "event_id", id)
	}
}

// CorruptRecords returns how many records failed their checksum since open:
// the damaged records Repair dropped at open, and those reads skipped later.
func (b *Bunt) CorruptRecords() uint64 { return b.corruptN.Load() }

// trim removes the n oldest events of key and returns how many it removed
// and the highest removed id.
func (b *Bunt) trim(tx *buntdb.Tx, key string, n int) (int, uint64, error) {
	prefix := indexPrefix(key)
	var victims []string
	err := tx.AscendGreaterOrEqual("", prefix, func(k, _ string) bool {
		if !strings.HasPrefix(k, prefix) {
			return false
		}
		victims = append(victims, k)
		return len(victims) < n
	})
	if err != nil {
		return 0, 0, err
	}
	var top uint64
	for _, k := range victims {
		id := indexID(k)
		top = max(top, id)
		if err := deleteIfExists(tx, k); err != nil {
			return 0, 0, err
		}
		if err := deleteLog(tx, id); err != nil {
			return 0, 0, err
		}
	}
	return len(victims), top, nil
}

func deleteIfExists(tx *buntdb.Tx, k string) error {
	_, err := tx.Delete(k)
	if errors.Is(err, buntdb.ErrNotFound) {
		return nil
	}
	return err
}

// atomicMax raises a to at least v. Appends publish their last id after
// commit, possibly out of order, so a plain Store could go backwards.
func atomicMax(a *atomic.Uint64, v uint64) {
	for {
		cur := a.Load()
		if cur >= v || a.CompareAndSwap(cur, v) {
			return
		}
	}
}

// readLock keeps readers from seeing events that are not yet durable under
// SyncAlways.
func (b *Bunt) readLock() func() {
	if !b.durable {
		return func() {}
	}
	b.rmu.RLock()
	return b.rmu.RUnlock
}

// After implements Store.
func (b *Bunt) After(ctx context.Context, afterID uint64, limit int) ([]Event, error) {
	if b.closed.Load() {
		return nil, ErrClosed
	}
	// Called every poll by every node: when nothing is new, one atomic load.
	last := b.lastID.Load()
	if afterID >= last || limit <= 0 {
		if afterID > last {
			return nil, fmt.Errorf("%w: after %d, last id %d", ErrCursorAhead, afterID, last)
		}
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	defer b.readLock()()
	cutoff := b.cutoff()
	// Sized for the common case; ids may have holes (trims, a skip after an
	// unclean shutdown), so last-afterID can be far more than will come back.
	evs := make([]Event, 0, min(uint64(limit), last-afterID, 256))
	err := b.db.View(func(tx *buntdb.Tx) error {
		return tx.AscendRange("", logKey(afterID+1), logEnd, func(k, v string) bool {
			id, _ := logID(k)
			if id > last {
				// A later commit may be visible before its Append publishes
				// lastID; a cursor must never pass LastID.
				return false
			}
			body, r, ok := b.readEvent(k, v)
			if !ok || r.time <= cutoff {
				return true // damaged, or expired and the sweeper has not got here yet
			}
			evs = append(evs, Event{ID: id, Time: r.time, Key: body})
			return len(evs) < limit
		})
	})
	if err != nil {
		return nil, b.wrap(err)
	}
	return finish(evs), nil
}

// finish decodes events whose Key still holds the body of their log value (buntdb's
// string, valid and immutable after the transaction, so the copying happens
// outside the lock). Keys and names of all events share one string, data one
// []byte: three allocations per call, not three per event.
func finish(evs []Event) []Event {
	if len(evs) == 0 {
		return nil
	}
	var nstr, ndata int
	for i := range evs {
		r, _ := decodeEvent(evs[i].Key) // checked when read
		nstr += len(r.key) + len(r.name)
		ndata += len(r.data)
	}
	var sb strings.Builder
	sb.Grow(nstr)
	for i := range evs {
		r, _ := decodeEvent(evs[i].Key)
		sb.WriteString(r.key)
		sb.WriteString(r.name)
	}
	strs := sb.String()
	var data []byte
	if ndata > 0 {
		data = make([]byte, 0, ndata)
	}
	for i := range evs {
		r, _ := decodeEvent(evs[i].Key)
		evs[i].Key, strs = strs[:len(r.key)], strs[len(r.key):]
		var slot string
		slot, strs = strs[:len(r.name)], strs[len(r.name):]
		if !setNameSlot(&evs[i], slot) {
			evs[i].Name = "" // damaged Mercure fields (records are checked elsewhere)
		}
		if len(r.data) > 0 {
			start := len(data)
			data = append(data, r.data...)
			evs[i].Data = data[start:len(data):len(data)]
		}
	}
	return evs
}

// expiredThrough returns the highest id of an expired event still in the log
// (0 if none): times never decrease with ids, so every event up to it is
// expired, and it costs as many steps as the sweeper is behind.
func (b *Bunt) expiredThrough(tx *buntdb.Tx, cutoff int64) (uint64, error) {
	if b.ttl < 0 {
		return 0, nil
	}
	var through uint64
	err := tx.AscendRange("", logFirst, logEnd, func(k, v string) bool {
		_, r, ok := b.readEvent(k, v)
		if !ok {
			return true // damaged: reported dropped by Retention
		}
		if r.time > cutoff {
			return false
		}
		through, _ = logID(k)
		return true
	})
	return through, err
}

// Replay implements Store.
func (b *Bunt) Replay(ctx context.Context, keys []string, afterID uint64, limit int) ([]Event, error) {
	if err := b.check(ctx); err != nil {
		return nil, err
	}
	if limit <= 0 || len(keys) == 0 || afterID >= b.lastID.Load() {
		return nil, nil
	}
	if len(keys) > 1 {
		keys = slices.Clone(keys)
		slices.Sort(keys)
		keys = slices.Compact(keys)
	}
	defer b.readLock()()
	cutoff := b.cutoff()
	var evs []Event
	err := b.db.View(func(tx *buntdb.Tx) error {
		from, err := b.expiredThrough(tx, cutoff)
		if err != nil {
			return err
		}
		from = max(from, afterID)
		if from == math.MaxUint64 {
			return nil
		}
		// Collect the first limit ids of each key, keeping only the limit
		// lowest overall; once there are that many, a key's scan stops at the
		// highest kept id.
		var ids []uint64
		bound := uint64(math.MaxUint64)
		var buf [keyBufSize]byte
		for _, key := range keys {
			prefix := appendIndexPrefix(buf[:0], key)
			n := len(prefix)
			start := string(binary.BigEndian.AppendUint64(prefix, from+1))
			got := 0
			err := tx.AscendGreaterOrEqual("", start, func(k, _ string) bool {
				if len(k) != n+8 || k[:n] != start[:n] {
					return false
				}
				id := indexID(k)
				if id > bound {
					return false
				}
				ids = append(ids, id)
				got++
				return got < limit
			})
			if err != nil {
				return err
			}
			if len(keys) > 1 && len(ids) >= limit {
				slices.Sort(ids)
				ids = ids[:limit]
				bound = ids[limit-1]
			}
		}
		if len(keys) > 1 {
			slices.Sort(ids)
		}
		evs = make([]Event, 0, len(ids))
		for _, id := range ids {
			lk := logKey(id)
			v, err := tx.Get(lk)
			if errors.Is(err, buntdb.ErrNotFound) {
				continue // cannot happen after load; tolerate it anyway
			} else if err != nil {
				return err
			}
			body, r, ok := b.readEvent(lk, v)
			if !ok {
				continue // damaged: reported dropped by Retention
			}
			evs = append(evs, Event{ID: id, Time: r.time, Key: body})
		}
		return nil
	})
	if err != nil {
		return nil, b.wrap(err)
	}
	return finish(evs), nil
}

// Retention implements Store.
func (b *Bunt) Retention(ctx context.Context, keys []string) ([]Retention, error) {
	if err := b.check(ctx); err != nil {
		return nil, err
	}
	out := make([]Retention, len(keys))
	defer b.readLock()()
	cutoff := b.cutoff()
	err := b.db.View(func(tx *buntdb.Tx) error {
		expired, err := b.expiredThrough(tx, cutoff)
		if err != nil {
			return err
		}
		lost := b.lostAll.Load()
		for i, key := range keys {
			mk := metaKey(key)
			v, err := tx.Get(mk)
			if errors.Is(err, buntdb.ErrNotFound) {
				out[i].Dropped = max(b.floor, lost) // nothing retained, history forgotten
				continue
			} else if err != nil {
				return err
			}
			m, ok := b.readMeta(mk, v)
			if !ok {
				m.dropped = max(b.floor, b.next) // unknown: a false gap, never a missed one
			}
			out[i].Dropped = max(m.dropped, lost)
			prefix := indexPrefix(key)
			err = tx.AscendGreaterOrEqual("", prefix, func(k, v string) bool {
				if !strings.HasPrefix(k, prefix) {
					return false
				}
				id := indexID(k)
				if id <= expired { // expired but not yet swept: as good as dropped
					out[i].Dropped = max(out[i].Dropped, id)
					return true
				}
				out[i].Oldest = id
				// The key's event before the oldest retained one is gone. If
				// the entry is damaged, that event is somewhere before it.
				prev, ok := b.readPrev(k, v)
				if !ok {
					prev = id - 1
				}
				out[i].Dropped = max(out[i].Dropped, prev)
				return false
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, b.wrap(err)
	}
	return out, nil
}

// LastID implements Store.
func (b *Bunt) LastID(ctx context.Context) (uint64, error) {
	if err := b.check(ctx); err != nil {
		return 0, err
	}
	return b.lastID.Load(), nil
}

// Head implements HeadReader. The epoch of a Bunt never changes while it is
// open: its state cannot vanish under it.
func (b *Bunt) Head(ctx context.Context) (Head, error) {
	if err := b.check(ctx); err != nil {
		return Head{}, err
	}
	return Head{Epoch: b.epoch, LastID: b.lastID.Load()}, nil
}

// Ping implements Store. It fails after an fsync failure, and while the
// background sweeper fails.
func (b *Bunt) Ping(ctx context.Context) error {
	if err := b.check(ctx); err != nil {
		return err
	}
	if p := b.failed.Load(); p != nil {
		return *p
	}
	if p := b.bgErr.Load(); p != nil {
		return fmt.Errorf("store: background sweep: %w", *p)
	}
	return b.wrap(b.db.View(func(tx *buntdb.Tx) error {
		_, err := tx.Len()
		return err
	}))
}

// Sweep implements Sweeper: it removes the events older than the TTL, in
// write transactions of at most sweepBatch events.
func (b *Bunt) Sweep(ctx context.Context) (int, error) {
	if err := b.check(ctx); err != nil {
		return 0, err
	}
	if p := b.failed.Load(); p != nil {
		return 0, *p
	}
	if b.ttl < 0 {
		return 0, nil
	}
	total := 0
	for {
		var n int
		err := b.db.Update(func(tx *buntdb.Tx) error {
			var err error
			n, err = b.sweepTx(tx)
			return err
		})
		if err != nil {
			return total, b.wrap(err)
		}
		total += n
		if n > 0 {
			b.writes.Add(1)
			if b.durable {
				if err := b.syncFile(false); err != nil {
					b.fail(err)
					return total, err
				}
			}
		}
		if n < sweepBatch {
			return total, nil
		}
		if err := b.check(ctx); err != nil {
			return total, err
		}
	}
}

// keySweep is the per-key state of one sweep transaction.
type keySweep struct {
	n   uint64
	top uint64
}

func (b *Bunt) sweepTx(tx *buntdb.Tx) (int, error) {
	cutoff := b.cutoff()
	type victim struct {
		id  uint64
		key string
	}
	var victims []victim
	err := tx.AscendRange("", logFirst, logEnd, func(k, v string) bool {
		id, _ := logID(k)
		_, r, ok := b.readEvent(k, v)
		if !ok {
			return true // damaged: left for the next open to find, reported dropped meanwhile
		}
		if r.time > cutoff {
			return false
		}
		victims = append(victims, victim{id, r.key})
		return len(victims) < sweepBatch
	})
	if err != nil || len(victims) == 0 {
		return 0, err
	}
	perKey := make(map[string]*keySweep)
	for _, v := range victims {
		if err := deleteLog(tx, v.id); err != nil {
			return 0, err
		}
		if err := deleteIfExists(tx, indexKey(v.key, v.id)); err != nil {
			return 0, err
		}
		ks := perKey[v.key]
		if ks == nil {
			ks = &keySweep{}
			perKey[v.key] = ks
		}
		ks.n++
		ks.top = v.id
	}
	for key, ks := range perKey {
		m, err := b.meta(tx, key)
		if err != nil {
			return 0, err
		}
		if m.count <= ks.n {
			// Nothing retained: forget the key. Its dropped is at most the
			// floor set below, which Retention reports for keys without
			// metadata.
			if err := deleteIfExists(tx, metaKey(key)); err != nil {
				return 0, err
			}
			continue
		}
		m.count -= ks.n
		m.dropped = max(m.dropped, ks.top)
		mk := metaKey(key)
		if _, _, err := tx.Set(mk, b.encodeMeta(mk, m), nil); err != nil {
			return 0, err
		}
	}
	// The log is walked in id order and everything older was swept or
	// trimmed before, so every id up to the last victim is gone.
	floor := max(b.floor, victims[len(victims)-1].id)
	if _, _, err := tx.Set(keyFloor, encodeUvarint(keyFloor, floor), nil); err != nil {
		return 0, err
	}
	// The newest event may be among the victims: keep the last id.
	if _, _, err := tx.Set(keyLast, encodeLast(b.next, b.lastTime), nil); err != nil {
		return 0, err
	}
	b.floor = floor
	return len(victims), nil
}

// Shrink rewrites the file without deleted and overwritten records, then
// fsyncs it. buntdb does this by itself once the file has doubled since the
// last rewrite (and is at least autoShrinkMinSize); call it to shrink now. It
// does nothing for memory stores.
func (b *Bunt) Shrink() error {
	if b.closed.Load() {
		return ErrClosed
	}
	if b.path == "" {
		return nil
	}
	if err := b.db.Shrink(); err != nil && !errors.Is(err, buntdb.ErrShrinkInProcess) {
		return b.wrap(err)
	}
	b.writes.Add(1)
	return b.syncFile(false)
}

// Close implements Store: it stops the sweeper, marks the file clean, fsyncs
// it (whatever the policy) and closes it.
func (b *Bunt) Close() error {
	if !b.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	b.stop()
	b.wg.Wait()
	if b.durable {
		// Wait for Appends between commit and fsync.
		b.rmu.Lock()
		defer b.rmu.Unlock()
	}
	var errs []error
	if b.path != "" {
		// A store that failed to fsync is not clean: its next open repairs.
		if b.failed.Load() == nil {
			err := b.db.Update(func(tx *buntdb.Tx) error {
				_, _, err := tx.Set(keyClean, "", nil)
				return err
			})
			if err != nil {
				errs = append(errs, b.wrap(err))
			} else {
				b.writes.Add(1)
			}
		}
		if err := b.syncFile(false); err != nil {
			errs = append(errs, err)
		}
		b.fmu.Lock()
		if err := b.syncf.Close(); err != nil {
			errs = append(errs, fmt.Errorf("store: close %s: %w", b.path, err))
		}
		b.syncf = nil
		b.fmu.Unlock()
	}
	if err := b.db.Close(); err != nil {
		errs = append(errs, b.wrap(err))
	}
	if b.lock != nil {
		// Last: the file is free once buntdb has let go of it.
		if err := b.lock.Close(); err != nil {
			errs = append(errs, fmt.Errorf("store: unlock %s: %w", b.path, err))
		}
	}
	return errors.Join(errs...)
}
