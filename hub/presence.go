package hub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/sseloop/sseloop/store"
)

// Presence: who holds a stream of a key, on this node and, with a store
// that implements [store.Presence] (Redis), on every node.
//
// What it costs, and where:
//
//   - The truth is kept where the streams are: a loop's keySet already
//     counts its streams (keySet.n). A stream opened with a
//     [Subscription.User] adds its user to its keys' keyPresence (user →
//     streams, in the side table Loop.pres) and to the side table
//     Loop.users (stream → user),
//     which Leave reads. Streams without a user (auth off, public keys) add
//     nothing: no field in Stream, no map entry, one string compare.
//   - A query ([Hub.Presence]) asks every loop for its counts of the keys
//     (one Execute per loop) and, with a shared store, the other nodes'
//     published counts (one store call). Nothing is kept for it.
//   - Only keys that are "tracked" (live presence events on, see
//     [PresenceConfig.Live], or a shared store that needs this node's
//     counts) record their changes: a join or leave of such a key marks it
//     dirty on its loop (one map write). Every Interval the presence
//     goroutine (runPresence) collects the dirty keys of the loops that
//     have any, publishes the changed node counts to the shared store,
//     reads which keys other nodes changed (the store's change feed, which
//     also names the keys of nodes that died), and sends each live key with
//     streams here whose cluster-wide presence changed one coalesced
//     "presence" event. Each step costs O(changed keys), not O(keys). With
//     neither a shared store nor presence.keys the goroutine does not run
//     and joins record nothing.

// PresenceConfig configures presence. The zero value serves queries and
// sends no events.
type PresenceConfig struct {
	// Off turns presence off: streams record no user, no node counts are
	// published to a shared store, and no presence goroutine runs.
	Off bool
	// Live reports whether the subscribers of key get live "presence"
	// events (the engine's presence.keys patterns). nil = never. Called
	// once per key when the key gets its first stream on a loop.
	Live func(key string) bool
	// Interval is the least time between two presence events of one key,
	// and how often changed counts are published to a shared store.
	// Default 1s.
	Interval time.Duration
	// MaxUserIDs caps the joined and left lists of a presence event (the
	// counts stay exact). Default 100.
	MaxUserIDs int
	// NodeTTL is how long this node's counts stay in a shared store after
	// its last heartbeat (one per Interval): a node that dies without a
	// goodbye drops out of every count within NodeTTL. Default 15s; it must
	// exceed Interval.
	NodeTTL time.Duration
}

// presence is the hub's presence state that never changes after New.
type presence struct {
	cfg    PresenceConfig
	shared store.Presence // nil: this node's counts are the whole truth
	node   string         // this node's id in the shared store
	on     bool           // runPresence runs: some key may be tracked
}

func (p *presence) init(cfg PresenceConfig, st store.Store) {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.MaxUserIDs <= 0 {
		cfg.MaxUserIDs = 100
	}
	if cfg.NodeTTL <= 0 {
		cfg.NodeTTL = 15 * time.Second
	}
	p.cfg = cfg
	var b [8]byte
	_, _ = rand.Read(b[:])
	p.node = hex.EncodeToString(b[:])
	if cfg.Off {
		p.cfg.Live = nil
		return // p.shared nil, p.on false: nothing is recorded
	}
	p.shared, _ = st.(store.Presence)
	p.on = p.shared != nil || cfg.Live != nil
}

// NodeID returns this node's id in a shared store (presence, the Mercure
// subscriptions registry), random per Hub.
func (h *Hub) NodeID() string { return h.pres.node }

// keyPresence is a key's presence on one loop. It is kept in Loop.pres,
// apart from keySet, only for the keys that need it: those with a stream
// that has a user, and every key while presence.keys is set. Most keys with users have one (per-user keys): it is kept
// inline, the others in a map; a user is in one place or the other.
type keyPresence struct {
	user  string           // a user with streams of the key ("" = none)
	nUser int32            // user's streams
	live  bool             // the key's streams get presence events
	track bool             // joins and leaves mark the key dirty
	users map[string]int32 // streams of the other users
	state []byte           // the key's current presence event, for new streams
}

// joinPresence records a stream of ks with user ("" = none). A key gets a
// keyPresence only for a user or while presence.keys is set; with a
// shared store alone (Redis, no users, no live keys) a join only marks the
// key changed, so nothing stays per connection.
func (l *Loop) joinPresence(ks *keySet, user string) {
	p := &l.h.pres
	kp := l.pres[ks]
	if kp == nil && (user != "" || p.cfg.Live != nil) {
		kp = &keyPresence{}
		kp.live = p.cfg.Live != nil && p.cfg.Live(ks.key)
		kp.track = kp.live || p.shared != nil
		if l.pres == nil {
			l.pres = make(map[*keySet]*keyPresence)
		}
		l.pres[ks] = kp
	}
	if kp != nil && user != "" {
		kp.joinUser(user)
	}
	if p.shared != nil || kp != nil && kp.track {
		l.markPresence(ks.key)
	}
}

// leavePresence records that a stream of ks with user left; ks.n is
// already the count without it.
func (l *Loop) leavePresence(ks *keySet, user string) {
	kp := l.pres[ks]
	if kp != nil && user != "" {
		kp.leaveUser(user)
	}
	if l.h.pres.shared != nil || kp != nil && kp.track {
		l.markPresence(ks.key)
	}
	if kp != nil && (ks.n == 0 || !kp.track && kp.nUser == 0 && len(kp.users) == 0) {
		delete(l.pres, ks)
	}
}

// joinUser records user's stream.
func (kp *keyPresence) joinUser(user string) {
	switch {
	case kp.nUser > 0 && kp.user == user:
		kp.nUser++
	case kp.users[user] > 0:
		kp.users[user]++
	case kp.nUser == 0:
		kp.user, kp.nUser = user, 1
	default:
		if kp.users == nil {
			kp.users = make(map[string]int32)
		}
		kp.users[user] = 1
	}
}

// leaveUser removes one of user's streams.
func (kp *keyPresence) leaveUser(user string) {
	if kp.nUser > 0 && kp.user == user {
		if kp.nUser--; kp.nUser == 0 {
			kp.user = ""
		}
		return
	}
	if kp.users[user]--; kp.users[user] <= 0 {
		delete(kp.users, user)
	}
}

// appendUsers appends the distinct users to dst (none for a nil kp).
func (kp *keyPresence) appendUsers(dst []string) []string {
	if kp == nil {
		return dst
	}
	if kp.nUser > 0 {
		dst = append(dst, kp.user)
	}
	for u := range kp.users {
		dst = append(dst, u)
	}
	return dst
}

// markPresence notes that key's presence changed on this loop.
func (l *Loop) markPresence(key string) {
	if l.presDirty == nil {
		l.presDirty = make(map[string]struct{})
	}
	l.presDirty[key] = struct{}{}
	if !l.presFlag.Load() {
		l.presFlag.Store(true)
	}
}

// presSnap is one loop's presence of one key, as collected.
type presSnap struct {
	key   string
	conns int
	users []string // distinct users; nil when no stream has one
	fresh bool     // live streams here have had no presence state yet
}

// collectPresence returns the presence of the keys that changed on l since
// the last call. Loop goroutine.
func (l *Loop) collectPresence() []presSnap {
	out := make([]presSnap, 0, len(l.presDirty))
	for key := range l.presDirty {
		p := presSnap{key: key}
		if ks := l.sets[key]; ks != nil {
			kp := l.pres[ks]
			p.conns = ks.n
			p.users = kp.appendUsers(nil)
			p.fresh = kp != nil && kp.live && kp.state == nil
		}
		out = append(out, p)
	}
	clear(l.presDirty)
	return out
}

// presItem is a presence update for one key on one loop: delta goes to the
// streams that have the previous state, state to those that have none.
type presItem struct {
	key          string
	delta, state []byte
}

// updatePresence writes presence events to the live streams of each key
// and keeps the key's current state for streams that open later. Loop
// goroutine.
func (l *Loop) updatePresence(items []presItem) {
	for _, it := range items {
		ks := l.sets[it.key]
		kp := l.pres[ks]
		if ks == nil || kp == nil {
			continue
		}
		frame := it.delta
		if kp.state == nil {
			// Every stream here opened after the key's keySet was made
			// and got no state yet: the whole state, not a delta.
			frame = it.state
		}
		kp.state = it.state
		if frame == nil {
			continue
		}
		for u := ks.head; u != nil; {
			next := u.next
			if s := u.s; s.replay == nil {
				l.Write(s, frame)
			}
			u = next
		}
	}
	l.flushCounters()
}

// sendPresenceState writes the current presence of s's live keys to s: at
// Open when it does not replay, or when its replay hands over to live
// delivery. A key whose state is not known yet gets it with the next
// presence round (the stream's join made the key dirty).
func (l *Loop) sendPresenceState(s *Stream) {
	if len(l.pres) == 0 {
		return
	}
	for i := range s.subs {
		if kp := l.pres[s.subs[i].ks]; kp != nil && kp.state != nil {
			l.write(s, kp.state)
		}
	}
}

// presKey is the presence goroutine's view of one key with streams here.
type presKey struct {
	loops     map[*Loop]presSnap // this node's streams of the key, per loop
	live      bool
	sent      bool // a state was sent: sentConns and sentUsers hold it
	sentConns int
	sentUsers map[string]struct{}
}

// local returns this node's connections of the key and adds its users to
// users.
func (pk *presKey) local(users map[string]struct{}) int {
	n := 0
	for _, s := range pk.loops {
		n += s.conns
		for _, u := range s.users {
			users[u] = struct{}{}
		}
	}
	return n
}

// runPresence is the presence goroutine: every Interval it collects the
// keys whose presence changed on some loop, publishes this node's changed
// counts to the shared store (with a heartbeat, also when nothing changed),
// reads the keys other nodes changed, and sends the live keys whose
// presence changed anywhere one event each. The first round with a shared
// store, and one after the change feed lost entries, looks at every live
// key. It says goodbye to the shared store when ctx ends.
func (h *Hub) runPresence(ctx context.Context) {
	p := &h.pres
	if !p.on {
		return
	}
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	agg := map[string]*presKey{}
	unpublished := map[string]struct{}{}
	published := false
	// Keys that may have a new presence, and loops that need a key's state,
	// kept until a round sends them; cursor is the shared change feed's.
	pendingEv := map[string]struct{}{}
	pendingFresh := map[*Loop][]string{}
	needAll := false
	cursor := ""
	for {
		select {
		case <-ctx.Done():
			if p.shared != nil && published {
				bye, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				if err := p.shared.LeavePresence(bye, p.node); err != nil {
					h.log.Warn("presence: goodbye failed; other nodes drop this one after presence.node_ttl", "err", err)
				}
				cancel()
			}
			return
		case <-t.C:
		}
		changed := map[string]struct{}{}
		fresh, ok := h.collectPresence(ctx, agg, changed)
		if !ok {
			return
		}
		for k := range changed {
			unpublished[k] = struct{}{}
		}
		if p.shared != nil {
			republish, err := h.publishPresence(ctx, agg, unpublished)
			if err != nil {
				h.m.storeErr.Inc()
				h.log.Debug("presence: publish failed; retrying next interval", "err", err)
			} else {
				if republish && published {
					// The store lost this node's counts (Redis restarted,
					// or this node was taken for dead): send them all.
					for k := range agg {
						unpublished[k] = struct{}{}
					}
				}
				published = true
			}
		}
		for k := range changed {
			pendingEv[k] = struct{}{}
		}
		for l, keys := range fresh {
			pendingFresh[l] = append(pendingFresh[l], keys...)
		}
		all := needAll
		if p.shared != nil {
			// Which keys the other nodes changed (or left by dying): the
			// live keys among them are compared with their counts below.
			keys, next, lost, err := p.shared.PresenceChanges(ctx, cursor)
			if err != nil {
				h.m.storeErr.Inc()
				h.log.Debug("presence: reading the change feed failed; retrying next interval", "err", err)
				continue
			}
			if cursor == "" || lost {
				all = true
			}
			cursor = next
			for _, k := range keys {
				pendingEv[k] = struct{}{}
			}
		}
		if h.sendPresence(ctx, agg, pendingEv, all, pendingFresh) {
			clear(pendingEv)
			clear(pendingFresh)
			needAll = false
		} else {
			needAll = all
		}
		for k, pk := range agg {
			if len(pk.loops) == 0 {
				pk.sent = false // no stream here has its state any more
				if _, pending := unpublished[k]; !pending {
					delete(agg, k)
				}
			}
		}
	}
}

// collectPresence merges the loops' changed keys into agg and adds them to
// changed. It returns, per loop, the live keys whose streams there have
// no state yet. ok is false when ctx ended.
func (h *Hub) collectPresence(ctx context.Context, agg map[string]*presKey, changed map[string]struct{}) (fresh map[*Loop][]string, ok bool) {
	type result struct {
		l     *Loop
		snaps []presSnap
	}
	loops := *h.loops.Load()
	ch := make(chan result, len(loops))
	n := 0
	for _, l := range loops {
		if !l.presFlag.Swap(false) {
			continue
		}
		n++
		l.exec.Execute(func() { ch <- result{l, l.collectPresence()} })
	}
	for range n {
		var r result
		select {
		case <-ctx.Done():
			return nil, false
		case r = <-ch:
		}
		for _, s := range r.snaps {
			pk := agg[s.key]
			if pk == nil {
				pk = &presKey{loops: map[*Loop]presSnap{}, live: h.pres.cfg.Live != nil && h.pres.cfg.Live(s.key)}
				agg[s.key] = pk
			}
			if s.conns == 0 {
				delete(pk.loops, r.l)
			} else {
				pk.loops[r.l] = s
			}
			changed[s.key] = struct{}{}
			if s.fresh {
				if fresh == nil {
					fresh = map[*Loop][]string{}
				}
				fresh[r.l] = append(fresh[r.l], s.key)
			}
		}
	}
	return fresh, true
}

// publishPresence sends this node's counts of the unpublished keys to the
// shared store, with the heartbeat, and clears them on success.
func (h *Hub) publishPresence(ctx context.Context, agg map[string]*presKey, unpublished map[string]struct{}) (republish bool, err error) {
	counts := make([]store.PresenceCount, 0, len(unpublished))
	for k := range unpublished {
		c := store.PresenceCount{Key: k}
		if pk := agg[k]; pk != nil {
			users := map[string]struct{}{}
			c.Connections = pk.local(users)
			c.Users = sortedUsers(users)
		}
		counts = append(counts, c)
	}
	ctx, cancel := context.WithTimeout(ctx, h.pres.cfg.Interval+time.Second)
	defer cancel()
	republish, err = h.pres.shared.PublishPresence(ctx, h.pres.node, h.pres.cfg.NodeTTL, counts)
	if err != nil {
		return false, err
	}
	clear(unpublished)
	return republish, nil
}

// sendPresence sends every live key with streams here whose cluster-wide
// presence changed since its last event one event, and the current state
// to the loops in fresh. It looks at the keys in candidates (changed here,
// or by another node), or with all at every key with streams here, and at
// those in fresh. It reports false when the other nodes' counts could not
// be read: then nothing was sent.
func (h *Hub) sendPresence(ctx context.Context, agg map[string]*presKey, candidates map[string]struct{}, all bool, fresh map[*Loop][]string) bool {
	var live []string
	seen := map[string]bool{}
	consider := func(k string) {
		if seen[k] {
			return
		}
		seen[k] = true
		if pk := agg[k]; pk != nil && pk.live && len(pk.loops) > 0 {
			live = append(live, k)
		}
	}
	if all {
		for k := range agg {
			consider(k)
		}
	} else {
		for k := range candidates {
			consider(k)
		}
	}
	wantState := map[string]bool{}
	for _, keys := range fresh {
		for _, k := range keys {
			consider(k)
			wantState[k] = true
		}
	}
	if len(live) == 0 {
		return true
	}
	var remote map[string]store.PresenceCount
	if h.pres.shared != nil {
		rctx, cancel := context.WithTimeout(ctx, h.pres.cfg.Interval+time.Second)
		counts, err := h.remotePresence(rctx, live)
		cancel()
		if err != nil {
			// Without the other nodes' counts an event would be wrong:
			// skip this round.
			h.m.storeErr.Inc()
			h.log.Debug("presence: reading other nodes failed", "err", err)
			return false
		}
		remote = counts
	}
	items := map[*Loop][]presItem{}
	states := map[string][]byte{}
	sent := map[string]bool{} // to every loop with streams of the key
	for _, k := range live {
		pk := agg[k]
		users := map[string]struct{}{}
		conns := pk.local(users)
		if r, ok := remote[k]; ok {
			conns += r.Connections
			for _, u := range r.Users {
				users[u] = struct{}{}
			}
		}
		if pk.sent && conns == pk.sentConns && maps.Equal(users, pk.sentUsers) {
			if wantState[k] {
				states[k] = h.appendPresenceEvent(nil, k, conns, users, nil)
			}
			continue
		}
		state := h.appendPresenceEvent(nil, k, conns, users, nil)
		states[k] = state
		var delta []byte
		if pk.sent {
			delta = h.appendPresenceEvent(nil, k, conns, users, pk.sentUsers)
		}
		pk.sent, pk.sentConns, pk.sentUsers = true, conns, users
		sent[k] = true
		h.m.presenceEvents.Inc()
		for l := range pk.loops {
			items[l] = append(items[l], presItem{key: k, delta: delta, state: state})
		}
	}
	for l, keys := range fresh {
		for _, k := range keys {
			if st, ok := states[k]; ok && !sent[k] {
				items[l] = append(items[l], presItem{key: k, state: st})
			}
		}
	}
	for l, its := range items {
		l.exec.Execute(func() { l.updatePresence(its) })
	}
	return true
}

// remotePresence returns the other nodes' counts of keys, by key.
func (h *Hub) remotePresence(ctx context.Context, keys []string) (map[string]store.PresenceCount, error) {
	counts, err := h.pres.shared.PresenceOf(ctx, h.pres.node, keys)
	if err != nil {
		return nil, err
	}
	out := make(map[string]store.PresenceCount, len(counts))
	for _, c := range counts {
		out[c.Key] = c
	}
	return out, nil
}

// appendPresenceEvent appends a presence event of key:
//
//	event: presence
//	data: {"key":"room:7","connections":5,"users":4,"joined":["42"],"left":[]}
//
// joined and left are the users of now that were not in before, and those
// of before that are not in now; with before nil (a stream's first
// presence event), joined lists every user. Each list holds at most
// MaxUserIDs ids, sorted; "truncated":true says one was cut. No id: a
// presence event describes now, it is not part of the key's history.
func (h *Hub) appendPresenceEvent(dst []byte, key string, conns int, now, before map[string]struct{}) []byte {
	var joined, left []string
	for u := range now {
		if _, ok := before[u]; !ok {
			joined = append(joined, u)
		}
	}
	for u := range before {
		if _, ok := now[u]; !ok {
			left = append(left, u)
		}
	}
	slices.Sort(joined)
	slices.Sort(left)
	limit := h.pres.cfg.MaxUserIDs
	truncated := len(joined) > limit || len(left) > limit
	dst = append(dst, "event: presence\ndata: {\"key\":"...)
	dst = appendJSONString(dst, key)
	dst = append(dst, `,"connections":`...)
	dst = strconv.AppendInt(dst, int64(conns), 10)
	dst = append(dst, `,"users":`...)
	dst = strconv.AppendInt(dst, int64(len(now)), 10)
	dst = append(dst, `,"joined":`...)
	dst = AppendJSONStrings(dst, joined[:min(len(joined), limit)])
	dst = append(dst, `,"left":`...)
	dst = AppendJSONStrings(dst, left[:min(len(left), limit)])
	if truncated {
		dst = append(dst, `,"truncated":true`...)
	}
	return append(dst, "}\n\n"...)
}

// AppendJSONString appends s as a JSON string literal (invalid UTF-8
// becomes U+FFFD, as with encoding/json).
func AppendJSONString(dst []byte, s string) []byte { return appendJSONString(dst, s) }

// AppendJSONStrings appends ss as a JSON array of strings.
func AppendJSONStrings(dst []byte, ss []string) []byte {
	dst = append(dst, '[')
	for i, s := range ss {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, s)
	}
	return append(dst, ']')
}

func sortedUsers(users map[string]struct{}) []string {
	if len(users) == 0 {
		return nil
	}
	out := make([]string, 0, len(users))
	for u := range users {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

// PresenceInfo is the presence of one key.
type PresenceInfo struct {
	Key         string
	Connections int      // streams of the key
	Users       []string // the distinct users of those streams, sorted
}

// queryTimeout bounds how long a query waits for the loops' answers.
const queryTimeout = 2 * time.Second

// Presence returns the presence of keys: this node's streams, counted by
// its loops now, plus, with a shared store, the counts other live nodes
// published (at most one Interval old). It waits for every loop, so call
// it from a store worker ([Hub.Go]), never from a loop.
func (h *Hub) Presence(ctx context.Context, keys []string) ([]PresenceInfo, error) {
	h.m.presenceQueries.Inc()
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	type part struct {
		conns []int
		users [][]string
	}
	loops := *h.loops.Load()
	ch := make(chan part, len(loops))
	for _, l := range loops {
		l.exec.Execute(func() {
			p := part{conns: make([]int, len(keys)), users: make([][]string, len(keys))}
			for i, k := range keys {
				if ks := l.sets[k]; ks != nil {
					p.conns[i] = ks.n
					p.users[i] = l.pres[ks].appendUsers(nil)
				}
			}
			ch <- p
		})
	}
	conns := make([]int, len(keys))
	users := make([]map[string]struct{}, len(keys))
	for i := range users {
		users[i] = map[string]struct{}{}
	}
	for range loops {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case p := <-ch:
			for i := range keys {
				conns[i] += p.conns[i]
				for _, u := range p.users[i] {
					users[i][u] = struct{}{}
				}
			}
		}
	}
	if h.pres.shared != nil {
		remote, err := h.remotePresence(ctx, keys)
		if err != nil {
			h.m.storeErr.Inc()
			return nil, err
		}
		for i, k := range keys {
			r := remote[k]
			conns[i] += r.Connections
			for _, u := range r.Users {
				users[i][u] = struct{}{}
			}
		}
	}
	out := make([]PresenceInfo, len(keys))
	for i, k := range keys {
		out[i] = PresenceInfo{Key: k, Connections: conns[i], Users: sortedUsers(users[i])}
	}
	return out, nil
}
