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
}

// SyncPolicy says when a file store makes its writes durable with fsync.
type SyncPolicy int

const (
	// SyncEverySecond fsyncs about once a second in the background, outside
	// the database lock: a crash can lose the last second of events. Default.
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
	// history was forgotten, or after an unclean shutdown), never lower.
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
	// called every 10-100 ms). limit <= 0 returns nothing.
	After(ctx context.Context, afterID uint64, limit int) ([]Event, error)
	// Replay returns up to limit retained events of the given keys with ID > afterID, ascending by
	// ID (merged across keys, no duplicates if a key is listed twice).
	Replay(ctx context.Context, keys []string, afterID uint64, limit int) ([]Event, error)
	// Retention returns one entry per key, in order.
	Retention(ctx context.Context, keys []string) ([]Retention, error)
	// LastID returns the highest id assigned so far (0 when empty).
	LastID(ctx context.Context) (uint64, error)
	// Ping reports whether the store is usable (for /readyz).
	Ping(ctx context.Context) error
	// Close flushes and closes; other methods then return ErrClosed.
	Close() error
}

// Sweeper is implemented by stores that remove expired events in the
// background and let tests (or operators) do it now.
type Sweeper interface {
	// Sweep removes the events older than the TTL now and returns how many.
	Sweep(ctx context.Context) (removed int, err error)
}

// VersionReader is implemented by stores whose version markers other programs
// may write (the Redis store: the string <prefix><key>, e.g. written by a PHP
// app's cache). The engine polls it for the keys that have subscribers and
// pokes a key whose marker changed to a value it did not see in the feed.
type VersionReader interface {
	// Versions returns the version marker of each key, in order: the
	// decimal id of the key's newest event when sseloop wrote it last, any
	// other value when another program did, "" when there is none.
	Versions(ctx context.Context, keys []string) ([]string, error)
}

// Claimer is implemented by stores shared by several nodes, so that one change
// seen by all of them (a direct poke: a new version marker value) is handled
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
