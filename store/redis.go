package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisConfig configures the Redis store (store.redis.* in the config).
type RedisConfig struct {
	Addr     string // host:port; default "127.0.0.1:6379"
	Password string // AUTH password; "" for none
	DB       int    // database number (SELECT)
	// Prefix starts every key the store writes; default "sseloop:" when "".
	// Give sseloop a prefix no application clears: an app's cache clear
	// (CakePHP's Cache::clear() runs KEYS <its prefix>* and DEL) must not
	// match it.
	Prefix string
	// WatchPrefix starts the application keys whose changes poke
	// subscribers directly ("direct pokes", see [VersionReader]): key k is
	// watched as the Redis string <WatchPrefix>k, e.g. "cake_" for a CakePHP
	// Redis cache with its default prefix. sseloop only reads them (MGET),
	// never writes, expires or deletes them. "" turns direct pokes off.
	// Neither of Prefix and WatchPrefix may start with the other.
	WatchPrefix string
	// FeedLen bounds the change feed stream (MAXLEN ~). Default 100,000 when
	// 0. A node whose feed position falls further behind than this (e.g.
	// partitioned from Redis while others publish) skips the trimmed events.
	FeedLen int
	// SentinelMaster, when set, finds the primary through Redis Sentinel:
	// the master name the sentinels at SentinelAddrs (host:port each)
	// monitor. Addr is then unused. After a failover the client follows the
	// new primary.
	SentinelMaster string
	SentinelAddrs  []string
	// WaitReplicas, when above 0, makes every Append wait until that many
	// replicas acknowledged its write (Redis WAIT, at most WaitTimeout):
	// an acknowledged event then survives the loss of the primary. Fewer
	// acknowledgements fail the Append with ErrNotReplicated (the event may
	// still be delivered, as its write reached the primary).
	WaitReplicas int
	// WaitTimeout bounds the WAIT of WaitReplicas; default 1s when 0.
	WaitTimeout time.Duration
}

const (
	defaultRedisAddr    = "127.0.0.1:6379"
	defaultRedisPrefix  = "sseloop:"
	defaultRedisFeedLen = 100_000

	defaultWaitTimeout = time.Second

	// redisTag starts every internal key after the prefix. It is a Redis
	// Cluster hash tag: all internal keys hash to one slot, which scripts
	// that touch several of them require. Append refuses event keys that
	// start with it.
	redisTag = "{sseloop}"
)

// Redis is the Store for several sseloop processes or machines, on one Redis
// server (or a primary with replicas and Sentinel in front).
//
// # Layout
//
// With p the prefix ("sseloop:") and T the hash tag "{sseloop}":
//
//	pT:meta      hash: id (last id, INCR'ed by Append), time (last event
//	             time, ms), floor (see Retention below).
//	pT:feed      stream, the change feed: one entry per event, entry id
//	             "<id>-0", fields k (key), t (time ms), n (name), d (data).
//	             Bounded by MAXLEN ~ RedisConfig.FeedLen; entries trimmed by
//	             MaxEvents are deleted too (XDEL), expired ones by the
//	             sweeper (XTRIM MINID). Read by every node with one
//	             XRANGE feed <after+1>-0 + COUNT n per tick.
//	pT:h:<key>   stream, the key's history for replay: entry id "<id>-0",
//	             fields t, n, d. Trimmed to MaxEvents by Append (exactly).
//	pT:d:<key>   string: the key's Dropped, the highest id removed from its
//	             history by MaxEvents or the sweeper.
//	pT:c:<n>:<key>:<version>  string with a TTL: a [Claimer] claim (n is
//	             len(key)).
//	pT:keys      sorted set: every key with a history, scored by the time of
//	             its oldest retained event, so the sweeper finds the keys
//	             with expired events without scanning.
//
// With w the watch prefix (RedisConfig.WatchPrefix, e.g. "cake_"):
//
//	w<key>       the application's own key (any type readable by GET),
//	             read by Versions, never written by sseloop.
//
// Append is one Lua script: it reads the last time (an event's time never
// decreases with its id, whichever node's clock stamped it), INCRs the id by
// the batch size, XADDs to the feed and the histories and trims.
//
// # Incarnations
//
// The meta hash also holds epoch (Head.Epoch). When it is gone (a new Redis,
// FLUSHALL, a restart without persistence, eviction), the next Append or
// OpenRedis starts a new incarnation: ids from max(now_ms*1000, the highest
// id this process saw + 1), so ids never go backwards even if another node's
// clock is behind. Nodes notice through Head (a new Epoch) or ErrCursorAhead
// from After. Use maxmemory-policy noeviction: an evicted meta, feed or
// history loses events like a wipe. Scripts run atomically, so the feed never holds id N+1 without N
// (unless N was trimmed), even with many nodes appending at once.
//
// # Retention
//
// MaxEvents is enforced in Append. TTL is enforced by Sweep (every node runs
// it every SweepInterval; concurrent sweeps are harmless): it trims the
// expired entries from the start of the feed, then takes the keys whose
// oldest event is expired from pT:keys and trims their histories; a
// history left empty is deleted with its pT:d:<key>, and the meta floor is
// raised to its
// Dropped. Retention reports the floor as Dropped for a key without
// pT:d:<key>, and a new key's Dropped starts at it, as in [Bunt]. No Redis
// EXPIRE: it would forget a key's Dropped. Readers filter by time with the
// injected clock, so expired events are never returned, swept or not. Data is
// held twice (feed and history), so the feed needs no lookups.
//
// # Redis Cluster
//
// The internal keys share the hash tag, so the scripts work in one slot (all
// sseloop data of a prefix then lives on one shard: the store scales reads
// and connections, not Redis's write throughput). The watched app keys
// w<key> cannot carry the tag (apps name them), so they live in other slots:
// this implementation uses a plain (or Sentinel) client, not a cluster
// client; cluster support would issue one MGET per slot in Versions.
//
// # Durability and errors
//
// Durability is Redis's: an Append is acknowledged once Redis has run the
// script (appendonly with appendfsync always makes that durable on the
// primary; see CheckDurability for Options.Sync), and, with WaitReplicas,
// once that many replicas have it. No command is retried (a retried Append could duplicate
// events): when Redis is unreachable, calls fail within the dial or read
// timeout (1 s / 2 s) and the caller retries.
type Redis struct {
	c        *redis.Client
	opts     Options
	ttl      int64
	feedLen  int
	prefix   string
	watch    string
	kMeta    string
	kFeed    string
	kKeys    string
	replicas int
	waitFor  time.Duration

	// seen is the highest id this process saw: a new incarnation starts
	// above it.
	seen atomic.Uint64

	closed atomic.Bool
	stop   chan struct{}
	done   chan struct{}
}

var (
	_ Store         = (*Redis)(nil)
	_ Sweeper       = (*Redis)(nil)
	_ VersionReader = (*Redis)(nil)
	_ Claimer       = (*Redis)(nil)
	_ HeadReader    = (*Redis)(nil)
)

// OpenRedis connects to Redis and checks it answers.
func OpenRedis(cfg RedisConfig, opts Options) (*Redis, error) {
	o, err := opts.normalize()
	if err != nil {
		return nil, err
	}
	if cfg.FeedLen < 0 {
		return nil, fmt.Errorf("%w: redis FeedLen %d is negative", ErrBadOptions, cfg.FeedLen)
	}
	if cfg.Addr == "" {
		cfg.Addr = defaultRedisAddr
	}
	if cfg.Prefix == "" {
		cfg.Prefix = defaultRedisPrefix
	}
	if cfg.FeedLen == 0 {
		cfg.FeedLen = defaultRedisFeedLen
	}
	if cfg.WatchPrefix != "" && (strings.HasPrefix(cfg.Prefix, cfg.WatchPrefix) || strings.HasPrefix(cfg.WatchPrefix, cfg.Prefix)) {
		return nil, fmt.Errorf("%w: redis prefix %q and watch prefix %q overlap: an app clearing its keys would delete sseloop's", ErrBadOptions, cfg.Prefix, cfg.WatchPrefix)
	}
	if cfg.WaitReplicas < 0 || cfg.WaitTimeout < 0 {
		return nil, fmt.Errorf("%w: redis wait replicas %d, timeout %v", ErrBadOptions, cfg.WaitReplicas, cfg.WaitTimeout)
	}
	if cfg.WaitTimeout == 0 {
		cfg.WaitTimeout = defaultWaitTimeout
	}
	if cfg.SentinelMaster != "" && len(cfg.SentinelAddrs) == 0 {
		return nil, fmt.Errorf("%w: redis sentinel master %q without sentinel addresses", ErrBadOptions, cfg.SentinelMaster)
	}
	const (
		dialTimeout = time.Second
		dialRetries = 1 // fail fast: the caller retries
		ioTimeout   = 2 * time.Second
	)
	var c *redis.Client
	where := cfg.Addr
	if cfg.SentinelMaster != "" {
		where = "sentinel " + cfg.SentinelMaster
		c = redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName:            cfg.SentinelMaster,
			SentinelAddrs:         cfg.SentinelAddrs,
			Password:              cfg.Password,
			DB:                    cfg.DB,
			DialTimeout:           dialTimeout,
			DialerRetries:         dialRetries,
			ReadTimeout:           max(ioTimeout, cfg.WaitTimeout+time.Second),
			WriteTimeout:          ioTimeout,
			ContextTimeoutEnabled: true,
			MaxRetries:            -1,
			DisableIdentity:       true,
		})
	} else {
		c = redis.NewClient(&redis.Options{
			Addr:                  cfg.Addr,
			Password:              cfg.Password,
			DB:                    cfg.DB,
			DialTimeout:           dialTimeout,
			DialerRetries:         dialRetries,
			ReadTimeout:           max(ioTimeout, cfg.WaitTimeout+time.Second),
			WriteTimeout:          ioTimeout,
			ContextTimeoutEnabled: true,
			MaxRetries:            -1,
			DisableIdentity:       true,
		})
	}
	r := &Redis{
		c:        c,
		opts:     o,
		ttl:      o.ttlMillis(),
		feedLen:  cfg.FeedLen,
		prefix:   cfg.Prefix,
		watch:    cfg.WatchPrefix,
		kMeta:    cfg.Prefix + redisTag + ":meta",
		kFeed:    cfg.Prefix + redisTag + ":feed",
		kKeys:    cfg.Prefix + redisTag + ":keys",
		replicas: cfg.WaitReplicas,
		waitFor:  cfg.WaitTimeout,
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("store: redis %s: %w", where, err)
	}
	// Start an incarnation now, so LastID is the id before the first one.
	if _, err := initScript.Run(ctx, c, []string{r.kMeta, r.kFeed}, r.opts.Now().UnixMilli(), 0, 0, 0, 1).Int64Slice(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("store: redis %s: %w", where, err)
	}
	if o.SweepInterval > 0 && r.ttl >= 0 {
		go r.sweeper()
	} else {
		close(r.done)
	}
	return r, nil
}

func (r *Redis) historyKey(key string) string { return r.prefix + redisTag + ":h:" + key }
func (r *Redis) droppedKey(key string) string { return r.prefix + redisTag + ":d:" + key }

// saw records an id this process read or was handed.
func (r *Redis) saw(id uint64) { atomicMax(&r.seen, id) }

// cutoff returns the time at or before which events are expired.
func (r *Redis) cutoff() int64 {
	if r.ttl < 0 {
		return math.MinInt64
	}
	return r.opts.Now().UnixMilli() - r.ttl
}

// begin is called first by every method.
func (r *Redis) begin(ctx context.Context) error {
	if r.closed.Load() {
		return ErrClosed
	}
	return ctx.Err()
}

// wrap turns a client error into the store's.
func (r *Redis) wrap(err error) error {
	switch {
	case err == nil:
		return nil
	case r.closed.Load() || errors.Is(err, redis.ErrClosed):
		return ErrClosed
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	}
	return fmt.Errorf("store: redis: %w", err)
}

// Append implements Store. It returns ErrBadKey for a key that starts with
// "{sseloop}" (reserved for the store's own Redis keys).
func (r *Redis) Append(ctx context.Context, evs []Event) error {
	if err := r.begin(ctx); err != nil {
		return err
	}
	if len(evs) == 0 {
		return nil
	}
	index := make(map[string]int, min(len(evs), 16))
	var names []string
	for _, e := range evs {
		if strings.HasPrefix(e.Key, redisTag) {
			return fmt.Errorf("%w %q: %s is reserved", ErrBadKey, e.Key, redisTag)
		}
		if _, ok := index[e.Key]; !ok {
			names = append(names, e.Key)
			index[e.Key] = len(names)
		}
	}
	keys := make([]string, 0, 3+2*len(names))
	keys = append(keys, r.kMeta, r.kFeed, r.kKeys)
	args := make([]any, 0, 5+len(names)+3*len(evs))
	args = append(args, r.opts.Now().UnixMilli(), r.opts.MaxEvents, r.feedLen, len(names), r.seen.Load()+1)
	for _, k := range names {
		keys = append(keys, r.historyKey(k), r.droppedKey(k))
		args = append(args, k)
	}
	for _, e := range evs {
		args = append(args, index[e.Key], nameSlot(&e), e.Data) // name and Mercure fields: ext.go
	}
	res, err := r.runAppend(ctx, keys, args)
	if err != nil {
		return err
	}
	if len(res) == 3 && res[0] == 0 {
		return fmt.Errorf("%w: redis %s", ErrIDSpace, r.kMeta)
	}
	if len(res) != 3 || res[0] <= 0 {
		return fmt.Errorf("store: redis: append script returned %v", res)
	}
	for i := range evs {
		evs[i].ID = uint64(res[0]) + uint64(i)
		evs[i].Time = res[1]
	}
	r.saw(evs[len(evs)-1].ID)
	if err := r.indexPubIDs(ctx, evs); err != nil {
		return err
	}
	if r.replicas > 0 && res[2] < int64(r.replicas) {
		return fmt.Errorf("%w: %d of %d replicas acknowledged within %v", ErrNotReplicated, res[2], r.replicas, r.waitFor)
	}
	return nil
}

// runAppend runs the append script and, with WaitReplicas, WAIT on the same
// connection (a pipeline), so WAIT covers the script's writes. It returns
// {first id, time, replicas that acknowledged}.
func (r *Redis) runAppend(ctx context.Context, keys []string, args []any) ([]int64, error) {
	if r.replicas == 0 {
		res, err := appendScript.Run(ctx, r.c, keys, args...).Int64Slice()
		if err != nil {
			return nil, r.wrap(err)
		}
		return append(res, 0), nil
	}
	for _, eval := range []bool{false, true} {
		var run *redis.Cmd
		var wait *redis.Cmd
		_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			if eval {
				run = appendScript.Eval(ctx, p, keys, args...)
			} else {
				run = appendScript.EvalSha(ctx, p, keys, args...)
			}
			wait = p.Do(ctx, "WAIT", r.replicas, r.waitFor.Milliseconds())
			return nil
		})
		if !eval && redis.HasErrorPrefix(run.Err(), "NOSCRIPT") {
			continue // the script did not run: load it with EVAL
		}
		res, rerr := run.Int64Slice()
		if rerr != nil {
			return nil, r.wrap(rerr)
		}
		n, werr := wait.Int64()
		if err != nil && werr != nil {
			// The events are in the primary but their replication is
			// unknown: not acknowledged.
			return nil, fmt.Errorf("%w: WAIT: %w", ErrNotReplicated, r.wrap(werr))
		}
		return append(res, n), nil
	}
	return nil, fmt.Errorf("store: redis: append script not loaded")
}

// After implements Store with one XRANGE on the feed (more only when a page
// holds expired events that the feed still has).
func (r *Redis) After(ctx context.Context, afterID uint64, limit int) ([]Event, error) {
	if err := r.begin(ctx); err != nil {
		return nil, err
	}
	if limit <= 0 || afterID == math.MaxUint64 {
		return nil, nil
	}
	cutoff := r.cutoff()
	var evs []Event
	for first := true; ; first = false {
		want := limit - len(evs)
		var page []Event
		var err error
		if first {
			page, err = r.xrangeLast(ctx, afterID, want)
		} else {
			page, err = r.xrange(ctx, r.kFeed, afterID, want)
		}
		if err != nil {
			return nil, err
		}
		expired := false
		for _, e := range page {
			if e.Time > cutoff {
				evs = append(evs, e)
			} else {
				expired = true
			}
		}
		// Expired events (not trimmed yet) took room in a full page: read
		// on past them. Times never decrease with ids, so that happens only
		// at the start of the feed.
		if !expired || len(page) < want || len(evs) == limit {
			return evs, nil
		}
		afterID = page[len(page)-1].ID
	}
}

// xrangeLast is xrange of the feed pipelined with a read of the last id
// (one round trip): when nothing is newer than afterID and the last id is
// below it, the cursor is from a store state that is gone.
func (r *Redis) xrangeLast(ctx context.Context, afterID uint64, limit int) ([]Event, error) {
	var xr *redis.Cmd
	var last *redis.StringCmd
	_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		xr = p.Do(ctx, "XRANGE", r.kFeed, strconv.FormatUint(afterID+1, 10)+"-0", "+", "COUNT", limit)
		last = p.HGet(ctx, r.kMeta, "id")
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, r.wrap(err)
	}
	v, err := xr.Slice()
	if err != nil {
		return nil, r.wrap(err)
	}
	if len(v) == 0 {
		id, _ := strconv.ParseUint(last.Val(), 10, 64) // "" (wiped): 0
		if id < afterID {
			return nil, fmt.Errorf("%w: after %d, last id %d", ErrCursorAhead, afterID, id)
		}
		return nil, nil
	}
	return r.parseEntries(r.kFeed, v)
}

// xrange reads up to limit entries with ids above afterID from a feed or
// history stream. History entries have no k field: their Key is "".
func (r *Redis) xrange(ctx context.Context, stream string, afterID uint64, limit int) ([]Event, error) {
	start := strconv.FormatUint(afterID+1, 10) + "-0"
	v, err := r.c.Do(ctx, "XRANGE", stream, start, "+", "COUNT", limit).Slice()
	if err != nil {
		return nil, r.wrap(err)
	}
	return r.parseEntries(stream, v)
}

func (r *Redis) parseEntries(stream string, v []any) ([]Event, error) {
	if len(v) == 0 {
		return nil, nil
	}
	evs := make([]Event, 0, len(v))
	for _, item := range v {
		e, err := parseEntry(item)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, stream, err)
		}
		evs = append(evs, e)
	}
	r.saw(evs[len(evs)-1].ID)
	return evs, nil
}

// parseEntry decodes one stream entry: [id, [field, value, ...]].
func parseEntry(item any) (Event, error) {
	var e Event
	entry, ok := item.([]any)
	if !ok || len(entry) != 2 {
		return e, fmt.Errorf("entry %v", item)
	}
	sid, _ := entry[0].(string)
	id, ok := strings.CutSuffix(sid, "-0")
	if !ok {
		return e, fmt.Errorf("entry id %q", sid)
	}
	var err error
	if e.ID, err = strconv.ParseUint(id, 10, 64); err != nil {
		return e, fmt.Errorf("entry id %q", sid)
	}
	fields, _ := entry[1].([]any)
	var data string
	for i := 0; i+1 < len(fields); i += 2 {
		f, _ := fields[i].(string)
		val, _ := fields[i+1].(string)
		switch f {
		case "k":
			e.Key = val
		case "n":
			if !setNameSlot(&e, val) {
				return e, fmt.Errorf("entry %s: bad Mercure fields", sid)
			}
		case "d":
			data = val
		case "t":
			if e.Time, err = strconv.ParseInt(val, 10, 64); err != nil {
				return e, fmt.Errorf("entry %s: time %q", sid, val)
			}
		}
	}
	if data != "" {
		e.Data = []byte(data)
		e.Data = e.Data[:len(e.Data):len(e.Data)]
	}
	return e, nil
}

// Replay implements Store: one pipelined XRANGE per key, merged.
func (r *Redis) Replay(ctx context.Context, keys []string, afterID uint64, limit int) ([]Event, error) {
	if err := r.begin(ctx); err != nil {
		return nil, err
	}
	if limit <= 0 || len(keys) == 0 || afterID == math.MaxUint64 {
		return nil, nil
	}
	keys = slices.Clone(keys)
	slices.Sort(keys)
	keys = slices.Compact(keys)
	cutoff := r.cutoff()
	from := make([]uint64, len(keys)) // where each key's next read starts
	for i := range from {
		from[i] = afterID
	}
	got := make([]int, len(keys))     // each key's unexpired events so far
	pending := make([]int, len(keys)) // the keys still to read
	for i := range pending {
		pending[i] = i
	}
	var evs []Event
	for len(pending) > 0 {
		cmds := make([]*redis.Cmd, len(pending))
		_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for j, i := range pending {
				start := strconv.FormatUint(from[i]+1, 10) + "-0"
				cmds[j] = p.Do(ctx, "XRANGE", r.historyKey(keys[i]), start, "+", "COUNT", limit)
			}
			return nil
		})
		if err != nil {
			return nil, r.wrap(err)
		}
		next := pending[:0]
		for j, i := range pending {
			v, err := cmds[j].Slice()
			if err != nil {
				return nil, r.wrap(err)
			}
			for _, item := range v {
				e, err := parseEntry(item)
				if err != nil {
					return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, r.historyKey(keys[i]), err)
				}
				from[i] = e.ID
				if e.Time <= cutoff {
					continue // expired, not swept yet
				}
				e.Key = keys[i]
				evs = append(evs, e)
				got[i]++
			}
			// Expired events took room in a full page: read on past them.
			if len(v) == limit && got[i] < limit {
				next = append(next, i)
			}
		}
		pending = next
	}
	slices.SortFunc(evs, func(a, b Event) int { return cmp.Compare(a.ID, b.ID) })
	if len(evs) > limit {
		evs = evs[:limit:limit]
	}
	return evs, nil
}

// Retention implements Store with one script.
func (r *Redis) Retention(ctx context.Context, keys []string) ([]Retention, error) {
	if err := r.begin(ctx); err != nil {
		return nil, err
	}
	out := make([]Retention, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	rkeys := make([]string, 0, 1+2*len(keys))
	rkeys = append(rkeys, r.kMeta)
	for _, k := range keys {
		rkeys = append(rkeys, r.historyKey(k), r.droppedKey(k))
	}
	res, err := retentionScript.Run(ctx, r.c, rkeys, r.cutoff()).StringSlice()
	if err != nil {
		return nil, r.wrap(err)
	}
	if len(res) != 2*len(keys) {
		return nil, fmt.Errorf("store: redis: retention script returned %d values for %d keys", len(res), len(keys))
	}
	for i := range out {
		d, err1 := strconv.ParseUint(res[2*i], 10, 64)
		o, err2 := strconv.ParseUint(strings.TrimSuffix(res[2*i+1], "-0"), 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%w: retention of %q: %q, %q", ErrCorrupt, keys[i], res[2*i], res[2*i+1])
		}
		out[i] = Retention{Oldest: o, Dropped: d}
	}
	return out, nil
}

// LastID implements Store.
func (r *Redis) LastID(ctx context.Context) (uint64, error) {
	if err := r.begin(ctx); err != nil {
		return 0, err
	}
	s, err := r.c.HGet(ctx, r.kMeta, "id").Result()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, r.wrap(err)
	}
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s id %q", ErrCorrupt, r.kMeta, s)
	}
	r.saw(id)
	return id, nil
}

// Head implements HeadReader with one HMGET. After a wipe it returns the zero
// Head until the next Append starts a new incarnation.
func (r *Redis) Head(ctx context.Context) (Head, error) {
	if err := r.begin(ctx); err != nil {
		return Head{}, err
	}
	v, err := r.c.HMGet(ctx, r.kMeta, "epoch", "id").Result()
	if err != nil {
		return Head{}, r.wrap(err)
	}
	var h Head
	for i, p := range []*uint64{&h.Epoch, &h.LastID} {
		s, ok := v[i].(string)
		if !ok {
			continue
		}
		if *p, err = strconv.ParseUint(s, 10, 64); err != nil {
			return Head{}, fmt.Errorf("%w: %s %q", ErrCorrupt, r.kMeta, s)
		}
	}
	if h.LastID > 0 && h.Epoch == 0 {
		h.Epoch = 1 // written before epochs existed: ids began at 1
	}
	r.saw(h.LastID)
	return h, nil
}

// Versions implements VersionReader with one MGET of <WatchPrefix><key>.
// Without a watch prefix it returns "" for every key and asks Redis nothing.
func (r *Redis) Versions(ctx context.Context, keys []string) ([]string, error) {
	if err := r.begin(ctx); err != nil {
		return nil, err
	}
	out := make([]string, len(keys))
	if len(keys) == 0 || r.watch == "" {
		return out, nil
	}
	mkeys := make([]string, len(keys))
	for i, k := range keys {
		mkeys[i] = r.watch + k
	}
	vals, err := r.c.MGet(ctx, mkeys...).Result()
	if err != nil {
		return nil, r.wrap(err)
	}
	for i, v := range vals {
		if s, ok := v.(string); ok {
			out[i] = s
		}
	}
	return out, nil
}

// Claim implements Claimer with SET pT:c:<len(key)>:<key>:<version> 1 NX PX
// ttl (the length keeps key "a:b", version "c" apart from key "a", version
// "b:c"). A ttl under a millisecond counts as one.
func (r *Redis) Claim(ctx context.Context, key, version string, ttl time.Duration) (bool, error) {
	if err := r.begin(ctx); err != nil {
		return false, err
	}
	k := r.prefix + redisTag + ":c:" + strconv.Itoa(len(key)) + ":" + key + ":" + version
	ok, err := r.c.SetNX(ctx, k, "1", max(ttl, time.Millisecond)).Result()
	if err != nil {
		return false, r.wrap(err)
	}
	return ok, nil
}

// redisSweepBatch is how many keys one sweep script handles.
const redisSweepBatch = 100

// Sweep implements Sweeper: it trims the expired events from the start of the
// feed, 1,000 per script, and from the history of every key whose oldest event
// is expired, 100 keys per script. It returns how many events it removed from
// the histories.
func (r *Redis) Sweep(ctx context.Context) (int, error) {
	if err := r.begin(ctx); err != nil {
		return 0, err
	}
	if r.ttl < 0 {
		return 0, nil
	}
	cutoff := r.cutoff()
	for {
		n, err := feedSweepScript.Run(ctx, r.c, []string{r.kFeed}, cutoff, redisSweepBatch*10).Int()
		if err != nil {
			return 0, r.wrap(err)
		}
		if n < redisSweepBatch*10 {
			break
		}
	}
	removed := 0
	for {
		names, err := r.c.ZRangeArgs(ctx, redis.ZRangeArgs{
			Key: r.kKeys, Start: "-inf", Stop: strconv.FormatInt(cutoff, 10),
			ByScore: true, Count: redisSweepBatch,
		}).Result()
		if err != nil {
			return removed, r.wrap(err)
		}
		if len(names) == 0 {
			return removed, nil
		}
		keys := make([]string, 0, 2+2*len(names))
		keys = append(keys, r.kMeta, r.kKeys)
		args := make([]any, 0, 1+len(names))
		args = append(args, cutoff)
		for _, k := range names {
			keys = append(keys, r.historyKey(k), r.droppedKey(k))
			args = append(args, k)
		}
		n, err := sweepScript.Run(ctx, r.c, keys, args...).Int()
		if err != nil {
			return removed, r.wrap(err)
		}
		removed += n
		if len(names) < redisSweepBatch {
			return removed, nil
		}
	}
}

func (r *Redis) sweeper() {
	defer close(r.done)
	t := time.NewTicker(r.opts.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, _ = r.Sweep(ctx) // errors: Redis is down; the next tick retries
			cancel()
		}
	}
}

// Ping implements Store.
func (r *Redis) Ping(ctx context.Context) error {
	if err := r.begin(ctx); err != nil {
		return err
	}
	return r.wrap(r.c.Ping(ctx).Err())
}

// Close implements Store. It stops the sweeper and closes the connections;
// the data stays in Redis.
func (r *Redis) Close() error {
	if !r.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	close(r.stop)
	<-r.done
	return r.c.Close()
}
