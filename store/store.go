// Package store keeps sseloop's events: one log of every event in id order (the
// change feed read by the engine's ticker) plus a bounded history per
// subscription key (for replay after Last-Event-ID).
//
// A [Store] is safe for concurrent use, and its methods block: a write may wait
// for an fsync, and the buntdb implementation takes one lock for the whole
// database. Never call a Store from an event-loop goroutine; call it from the
// ticker or a worker goroutine and hand the result back to the loop.
//
// Ids are global: one id space across all keys, strictly increasing, never
// reused, so a Last-Event-ID is exact for a stream that watches several keys.
// History is bounded per key by [Options.MaxEvents] and [Options.TTL];
// [Retention] tells a resuming client whether it missed events that are no
// longer retained.
//
// # Incarnations
//
// A store's state can vanish: an in-memory store is new at every start, a
// buntdb file can be deleted or replaced, a Redis can be flushed, restarted
// without persistence, rolled back by a failover or have its keys evicted.
// Each such start of the state is an incarnation. Ids never go backwards
// across them: a new incarnation's first id is max(last+1, unix_ms*1000),
// where last is the highest id the store (for Redis: this process) knows of
// and unix_ms comes from [Options.Now]. Ids stay ahead of every earlier
// incarnation's as long as those handed out fewer than 1,000 ids per
// millisecond on average, and below [MaxID] (2^53-1, so JavaScript holds them
// exactly) until the year 2255. Within an incarnation ids are strictly
// increasing, and contiguous within one open of a store: Append hands out
// LastID+1, LastID+2, ... (MaxEvents and TTL remove events, never ids). A
// buntdb file reopened keeps its incarnation, but its ids also restart at
// max(last+1, unix_ms*1000), so a file restored from an older copy cannot
// hand out again ids clients hold; LastID starts at the id before, so a
// reader following the feed from LastID sees no hole.
//
// What the engine needs to notice a lost state:
//   - [HeadReader.Head] returns the incarnation's Epoch (its first id) with
//     LastID. Epoch changes only when the state was lost. A node that
//     outlives its store's state (Redis) reads it every poll or so; on a new
//     Epoch it announces a gap to its streams and reads the feed on from
//     Epoch-1.
//   - After with an afterID above LastID returns an error wrapping
//     [ErrCursorAhead]: the caller's cursor is from a state that is gone (a
//     wiped Redis before its next Append, a rollback).
//   - A client's Last-Event-ID X with 0 < X < Epoch is from an earlier
//     incarnation, whose events after X may be lost: Retention does not
//     report that (it knows only the current incarnation), so the engine
//     announces the gap. An X above LastID is unknown: the same.
//
// After an unclean shutdown of a buntdb file, Retention reports a gap only
// for what may really be lost: nothing under SyncAlways (every acknowledged
// event was fsynced) or after a crash of the process alone (kill -9; known
// on Linux by the kernel's boot id: the kernel kept every write); everything
// before the restart after a crash of the machine (or one it cannot rule
// out) under the other policies.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Event is one published event.
//
// Events returned by a Store belong to the caller. The Key, Name and Data of
// the events returned by one call may share one backing allocation: do not
// write past len(Data) (the slices are capacity-limited, so append copies).
type Event struct {
	ID   uint64 // global id, assigned by Append; strictly increasing across all keys
	Key  string // the subscription key (1..256 bytes, no control characters; validated by the engine)
	Name string // SSE event name; "" means the default "message"
	Data []byte // event data; empty means a "poke" (the engine renders it as JSON); nil when read back empty
	Time int64  // unix milliseconds, assigned by Append; never decreases with the id

	// The Mercure fields; zero for native events. Key is the canonical topic.
	Topics  []string // alternate topics: subscribers of these get the event too
	Private bool     // only for subscribers authorized for one of its topics
	Retry   int64    // SSE retry field in milliseconds; 0 = none
	PubID   string   // the publisher's id of the event (SSE id: of Mercure streams); "" = none; indexed, see IDResolver
}

// SyncPolicy says when a file store makes its writes durable with fsync.
type SyncPolicy int

const (
	// SyncEverySecond fsyncs about once a second in the background, outside
	// the database lock: a crash of the machine can lose the last second of
	// events (a killed process loses nothing: the kernel has its writes).
	// Default.
	SyncEverySecond SyncPolicy = iota
	// SyncAlways fsyncs before Append returns and before any reader can see the
	// new events. Slowest, loses nothing that was acknowledged.
	SyncAlways
	// SyncNever leaves flushing to the operating system (and Close).
	SyncNever
)

// ParseSync parses a sync policy name: "always", "everysecond" or "never"
// (case-insensitive).
func ParseSync(s string) (SyncPolicy, error) {
	switch strings.ToLower(s) {
	case "always":
		return SyncAlways, nil
	case "everysecond":
		return SyncEverySecond, nil
	case "never":
		return SyncNever, nil
	}
	return 0, fmt.Errorf("%w %q (want always, everysecond or never)", ErrBadSyncPolicy, s)
}

// String returns the name ParseSync accepts.
func (p SyncPolicy) String() string {
	switch p {
	case SyncAlways:
		return "always"
	case SyncEverySecond:
		return "everysecond"
	case SyncNever:
		return "never"
	}
	return fmt.Sprintf("SyncPolicy(%d)", int(p))
}

// Options configure retention and durability. The zero value is usable.
type Options struct {
	// MaxEvents is the number of events retained per key; the oldest are
	// dropped first. Default 1000 when 0; negative is an error.
	MaxEvents int
	// TTL is how long an event is retained. Default 24h when 0; negative means
	// forever (still bounded by MaxEvents). Resolution is one millisecond.
	TTL time.Duration
	// Sync is the fsync policy of file stores; memory stores ignore it.
	Sync SyncPolicy
	// Now is the clock that stamps events and decides expiry (tests inject a
	// fake one). nil means time.Now.
	Now func() time.Time
	// SweepInterval is how often a background goroutine removes expired
	// events. Default 1s when 0; negative disables it (tests call Sweep).
	// Expired events are never returned, swept or not.
	SweepInterval time.Duration
	// Repair makes OpenBunt drop the records of a file that fail their
	// checksum or contradict the rest of the file, instead of refusing to
	// open it. It first copies the file to <path>.damaged-<unix seconds>, and
	// records the loss so that a client resuming from before a lost event is
	// told with a gap. A file without damage is opened as usual. The Redis
	// store ignores it (its integrity is Redis's own).
	Repair bool
	// Logger receives the store's rare reports: a file with records written
	// before checksums, damaged records dropped or skipped. nil means
	// slog.Default().
	Logger *slog.Logger
}

const (
	defaultMaxEvents     = 1000
	defaultTTL           = 24 * time.Hour
	defaultSweepInterval = time.Second
)

// normalize applies the defaults.
func (o Options) normalize() (Options, error) {
	if o.MaxEvents < 0 {
		return o, fmt.Errorf("%w: MaxEvents %d is negative", ErrBadOptions, o.MaxEvents)
	}
	switch o.Sync {
	case SyncAlways, SyncEverySecond, SyncNever:
	default:
		return o, fmt.Errorf("%w: unknown %v", ErrBadOptions, o.Sync)
	}
	if o.MaxEvents == 0 {
		o.MaxEvents = defaultMaxEvents
	}
	if o.TTL == 0 {
		o.TTL = defaultTTL
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.SweepInterval == 0 {
		o.SweepInterval = defaultSweepInterval
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}

// ttlMillis returns the TTL in milliseconds, -1 for forever. A positive TTL
// under a millisecond counts as one millisecond, not as zero.
func (o Options) ttlMillis() int64 {
	if o.TTL < 0 {
		return -1
	}
	return max(1, o.TTL.Milliseconds())
}

// Retention describes what is retained for one key, for gap detection on replay.
type Retention struct {
	Oldest  uint64 // id of the oldest retained event of the key; 0 if none retained
	Dropped uint64 // highest id of an event of this key that was removed by MaxEvents or TTL; 0 if none
	// A client resuming after id X has missed events of this key iff X < Dropped.
	// Dropped may be higher than the truth (a false gap, e.g. for a key whose
	// history was forgotten, after a new incarnation, or after an unclean
	// shutdown that may have lost acknowledged events), never lower. An
	// unclean shutdown that lost nothing acknowledged (buntdb with SyncAlways,
	// or a buntdb file on Linux whose process died while the machine stayed
	// up)
	// raises nothing.
}

// Store is the event log plus per-key history. All methods are safe for
// concurrent use and may block: never call them from an event-loop goroutine.
type Store interface {
	// Append assigns ids (strictly increasing, in slice order) and Time to evs in place and
	// persists them atomically (all or nothing), trimming each key to MaxEvents.
	// On error the ids and times in evs mean nothing.
	Append(ctx context.Context, evs []Event) error
	// After is the change feed: up to limit events with ID > afterID, ascending by ID, across all
	// keys. Its cost grows with the number of events returned, never with the number of keys
	// or the history size; when nothing is new it takes no lock and allocates nothing (it is
	// called every 10-100 ms). limit <= 0 returns nothing. An afterID above LastID
	// returns an error wrapping ErrCursorAhead (the store was wiped or replaced
	// since the caller read afterID; see Incarnations in the package doc).
	After(ctx context.Context, afterID uint64, limit int) ([]Event, error)
	// Replay returns up to limit retained events of the given keys with ID > afterID, ascending by
	// ID (merged across keys, no duplicates if a key is listed twice).
	Replay(ctx context.Context, keys []string, afterID uint64, limit int) ([]Event, error)
	// Retention returns one entry per key, in order.
	Retention(ctx context.Context, keys []string) ([]Retention, error)
	// LastID returns the highest id assigned so far; before the first
	// Append of an open, the id before the next one (see Incarnations): the
	// next id is LastID+1 within an open. 0 only for a Redis wiped while open,
	// until its next Append.
	LastID(ctx context.Context) (uint64, error)
	// Ping reports whether the store is usable (for /readyz).
	Ping(ctx context.Context) error
	// Close flushes and closes; other methods then return ErrClosed.
	Close() error
}

// MaxID bounds every id (2^53-1): JavaScript numbers hold ids exactly.
// Append fails rather than hand out a larger one.
const MaxID = 1<<53 - 1

// Head is where a store's id counter stands.
type Head struct {
	// Epoch identifies the current incarnation (see the package doc): the
	// first id it hands out. It changes only when the id counter restarted;
	// ids of the incarnation are >= Epoch, ids of earlier ones < Epoch. 0 means
	// no incarnation yet (a wiped Redis before the next Append).
	Epoch uint64
	// LastID is as Store.LastID. An engine following the feed from LastID
	// sees no hole when a new incarnation starts: a store's LastID is the id
	// before its next one from the moment it opens (0 only for a Redis wiped
	// while open, until the next Append).
	LastID uint64
}

// HeadReader is implemented by every store of this package. An engine that
// outlives its store's state (a node on a shared Redis) reads Head every poll
// or so: a new Epoch means the state it read before is gone; it announces a
// gap to its streams and reads the feed on from Epoch-1 (or from its cursor if
// higher). Epoch and LastID are read together, atomically.
type HeadReader interface {
	Head(ctx context.Context) (Head, error)
}

// idBase returns the first id of an incarnation that starts at now and knows
// ids up to last: max(last+1, unix_ms*1000).
func idBase(now time.Time, last uint64) uint64 {
	ms := now.UnixMilli()
	if ms < 0 {
		ms = 0
	}
	return max(last+1, uint64(ms)*1000)
}

// Sweeper is implemented by stores that remove expired events in the
// background and let tests (or operators) do it now.
type Sweeper interface {
	// Sweep removes the events older than the TTL now and returns how many.
	Sweep(ctx context.Context) (removed int, err error)
}

// VersionReader is implemented by stores that can watch keys other programs
// write (the Redis store: the string <watch prefix><key>, e.g. an entry of a
// PHP app's cache). The engine polls it for the keys that have subscribers
// and pokes a key whose value changed. The store never writes those keys.
type VersionReader interface {
	// Versions returns the value of each key's watched key, in order, ""
	// when there is none (or nothing is watched).
	Versions(ctx context.Context, keys []string) ([]string, error)
}

// Claimer is implemented by stores shared by several nodes, so that one change
// seen by all of them (a direct poke: a new value of a watched key) is handled
// by one: the node that wins the claim fetches the data source and appends
// the event, the others leave it to the feed.
type Claimer interface {
	// Claim returns true to exactly one caller, across all nodes, per key and
	// version, for ttl (after which the claim is forgotten).
	Claim(ctx context.Context, key, version string, ttl time.Duration) (bool, error)
}

var (
	// ErrClosed is returned by every method of a closed Store.
	ErrClosed = errors.New("store: closed")
	// ErrCorrupt means a store file is damaged somewhere other than a cut-off
	// last record: broken framing, a record whose checksum fails, or records
	// that contradict each other. The error names the file, the offset of the
	// bad record and, when it can be read, the event id. [Options.Repair]
	// drops damaged records and cuts out damaged framing.
	ErrCorrupt = errors.New("store: corrupt data")
	// ErrSync means an fsync failed. The store then refuses writes (the kernel
	// may already have dropped the unsynced data, so a retry could "succeed"
	// without it) and Ping reports the error; restart to recover.
	ErrSync = errors.New("store: sync failed")
	// ErrLocked means another Store (in this process or another) has the
	// file open: buntdb files cannot be shared.
	ErrLocked = errors.New("store: file in use")
	// ErrCursorAhead is returned (wrapped) by After for an afterID above the
	// store's LastID: the store lost the events up to afterID (a new
	// incarnation, see the package doc). Read Head and restart the cursor.
	ErrCursorAhead = errors.New("store: cursor ahead of the last id (store wiped or replaced)")
	// ErrNotReplicated is returned by the Redis store's Append when fewer
	// replicas than RedisConfig.WaitReplicas acknowledged the write in time
	// (or WAIT failed): the events are on the primary (and may be
	// delivered) but could be lost in a failover, so they are not
	// acknowledged.
	ErrNotReplicated = errors.New("store: write not acknowledged by enough replicas")
	// ErrIDSpace is returned by Append when the ids would pass MaxID.
	ErrIDSpace = errors.New("store: ids would pass 2^53-1")
	// ErrUnknownDriver is returned by Open for a driver it does not know.
	ErrUnknownDriver = errors.New("store: unknown driver")
	// ErrBadSyncPolicy is returned by ParseSync for an unknown name.
	ErrBadSyncPolicy = errors.New("store: unknown sync policy")
	// ErrBadOptions is returned by Open for invalid Options.
	ErrBadOptions = errors.New("store: invalid options")
	// ErrBadKey is returned by Append for a key the store cannot hold (the
	// Redis store reserves keys starting with "{sseloop}").
	ErrBadKey = errors.New("store: invalid key")
)

// Config selects and configures a Store implementation.
type Config struct {
	Driver string      // "buntdb" (default when "") or "redis"
	Path   string      // buntdb: ":memory:" (default when "") or a file path
	Redis  RedisConfig // redis: the server and key prefix
	Options
}

// Open opens the Store cfg describes.
func Open(cfg Config) (Store, error) {
	switch cfg.Driver {
	case "", "buntdb":
		b, err := OpenBunt(cfg.Path, cfg.Options)
		if err != nil {
			return nil, err
		}
		return b, nil
	case "redis":
		r, err := OpenRedis(cfg.Redis, cfg.Options)
		if err != nil {
			return nil, err
		}
		return r, nil
	}
	return nil, fmt.Errorf("%w %q (want buntdb or redis)", ErrUnknownDriver, cfg.Driver)
}
