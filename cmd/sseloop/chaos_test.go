package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sseloop/sseloop/internal/redistest"
	"github.com/sseloop/sseloop/store"
)

// The bounded chaos test's dimensions. Every loop below is bounded both in
// count and in time.
const (
	chaosNodes       = 3
	chaosPublishers  = 4
	chaosSubscribers = 30
	chaosKeys        = 4
	chaosFor         = 36 * time.Second // publishing under kills
	chaosMaxKills    = 12               // node kills at most
	chaosCatchUp     = 30 * time.Second // for subscribers to get the last events
	chaosMaxTriggers = 4000             // per publisher
	chaosMaxStreams  = 400              // connections per subscriber
	chaosMovers      = 6                // subscribers moved to a node restarted in a lull
)

// TestChaosNodesAndRedisKilledUnderLoad runs three nodes on one redis-server
// that fsyncs every write, while 4 publishers trigger through random nodes
// and 30 subscribers follow 1-2 keys each, reconnecting to a random node
// with their Last-Event-ID whenever their stream ends (and on their own
// every few seconds). Nodes are killed with SIGKILL and restarted every few
// seconds, every other time in a lull of the publishers during which a few
// subscribers resume on the new node before its first event (as browsers
// reconnecting to a restarted node do); redis-server is killed and
// restarted (reloading its append-only file) once, in the middle. Why:
// each guarantee has its own test, but what a user sees is all of them at
// once under load; a hole that needs a kill at the wrong moment of a
// replay's seam, of a feed read or of a trigger only shows up here. At the end every subscriber must have, for each of its
// keys, exactly the acknowledged events, in order, each once; events whose
// trigger answer was lost may be there too, but only if they are real (in
// the store). A hole may only follow a gap event, and with nothing trimmed
// and Redis fsyncing every write there must be neither.
func TestChaosNodesAndRedisKilledUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test: about a minute of kills under load")
	}
	srv := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	prefix := newRedisPrefix()
	args := append(redisArgs(srv, prefix), "--history.max_events", "1000000", "--history.ttl", "-1s")
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, 1))

	var keys []string
	for i := range chaosKeys {
		keys = append(keys, fmt.Sprintf("chaos%d", i))
	}
	nodes := &chaosCluster{}
	for i := range chaosNodes {
		nodes.procs[i] = startProcess(t, args...)
	}

	stop := make(chan struct{}) // publishers stop
	done := make(chan struct{}) // subscribers stop
	stopPubs := sync.OnceFunc(func() { close(stop) })
	stopSubs := sync.OnceFunc(func() { close(done) })
	var pubWG, subWG sync.WaitGroup
	defer func() { // also when a t.Fatal ends the test early
		stopPubs()
		stopSubs()
		pubWG.Wait()
		subWG.Wait()
	}()

	// Subscribers connect before the first trigger: each must then get
	// every acknowledged event of its keys.
	subs := make([]*chaosSub, chaosSubscribers)
	for i := range subs {
		s := &chaosSub{got: map[string][]uint64{}, data: map[uint64]string{}, gaps: map[string][]int{},
			rnd: rand.New(rand.NewPCG(seed, uint64(100+i))), opened: make(chan struct{}), kick: make(chan string, 1)}
		s.keys = []string{keys[i%chaosKeys]}
		if s.rnd.IntN(2) == 0 {
			s.keys = append(s.keys, keys[(i+1+s.rnd.IntN(chaosKeys-1))%chaosKeys])
		}
		subs[i] = s
		subWG.Add(1)
		go func() { defer subWG.Done(); s.run(nodes, done) }()
	}
	for i, s := range subs {
		select {
		case <-s.opened:
		case <-time.After(30 * time.Second):
			t.Fatalf("subscriber %d did not get a stream within 30s", i)
		}
	}

	pubs := make([]*chaosPub, chaosPublishers)
	for i := range pubs {
		p := &chaosPub{n: i, rnd: rand.New(rand.NewPCG(seed, uint64(i))), acked: map[uint64]chaosAck{}}
		pubs[i] = p
		pubWG.Add(1)
		go func() { defer pubWG.Done(); p.run(nodes, keys, stop) }()
	}

	// The chaos, on the test goroutine (startProcess may call t.Fatal).
	var nodeKills, redisKills, moved int
	begin := time.Now()
	for nodeKills < chaosMaxKills && time.Since(begin) < chaosFor {
		time.Sleep(time.Duration(1500+rnd.IntN(2000)) * time.Millisecond)
		if redisKills == 0 && time.Since(begin) > chaosFor/2 {
			srv.Kill(t)
			redisKills++
			time.Sleep(time.Duration(300+rnd.IntN(700)) * time.Millisecond)
			srv.Start(t) // same port and directory: reloads the AOF
			continue
		}
		i := rnd.IntN(chaosNodes)
		nodes.kill(i)
		nodeKills++
		lull := nodeKills%2 == 0
		nodes.paused.Store(lull)
		time.Sleep(time.Duration(100+rnd.IntN(900)) * time.Millisecond)
		p := startProcess(t, args...)
		nodes.set(i, p)
		if lull {
			moved += moveSubscribers(t, subs, rnd, p.addr)
			nodes.paused.Store(false)
		}
	}
	if redisKills == 0 { // too many node kills came first: never skip this
		srv.Kill(t)
		redisKills++
		srv.Start(t)
	}
	stopPubs()
	pubWG.Wait()
	chaosTime := time.Since(begin)

	// What the store holds now, read through the store package (not a
	// node), as the reference for unacknowledged events.
	st, err := store.OpenRedis(store.RedisConfig{Addr: srv.Addr(), Prefix: prefix},
		store.Options{MaxEvents: 1000000, TTL: -1, SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	stored := map[string]map[uint64]string{}
	storedMax := map[string]uint64{}
	for _, k := range keys {
		evs, err := st.Replay(context.Background(), []string{k}, 0, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		stored[k] = map[uint64]string{}
		for _, ev := range evs {
			stored[k][ev.ID] = string(ev.Data)
			storedMax[k] = max(storedMax[k], ev.ID)
		}
	}

	// Wait until every subscriber has the newest stored event of each of
	// its keys, or the deadline passes.
	catchUp := time.Now()
	deadline := catchUp.Add(chaosCatchUp)
	for !allCaughtUp(subs, storedMax) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("subscribers caught up %v after the store was read (or gave up)", time.Since(catchUp).Round(time.Millisecond))
	stopSubs()
	subWG.Wait()

	// Acknowledged events per key, in id order.
	acked := map[string][]uint64{}
	ackData := map[uint64]chaosAck{}
	var published, failed int
	for _, p := range pubs {
		published += p.attempts
		failed += p.failures
		for id, a := range p.acked {
			if _, dup := ackData[id]; dup {
				t.Errorf("id %d acknowledged twice", id)
			}
			ackData[id] = a
			acked[a.key] = append(acked[a.key], id)
		}
	}
	for _, k := range keys {
		slices.Sort(acked[k])
	}
	nAcked := len(ackData)

	// Durability: every acknowledged event is in the store, as published.
	for id, a := range ackData {
		if d, ok := stored[a.key][id]; !ok || d != a.data {
			t.Errorf("acknowledged event %d (%s) is not in the store after the kills (got %q)", id, a.data, d)
		}
	}
	var unacked int
	for _, k := range keys {
		for id := range stored[k] {
			if _, ok := ackData[id]; !ok {
				unacked++
			}
		}
	}

	var gaps, reconnects, voluntary, delivered, extra int
	var counts []string
	for i, s := range subs {
		for _, e := range s.errs {
			t.Errorf("subscriber %d: %s", i, e)
		}
		reconnects += s.streams - 1
		voluntary += s.voluntary
		n := 0
		for _, k := range s.keys {
			n += len(s.got[k])
			gaps += len(s.gaps[k])
			extra += s.check(t, i, k, acked[k], ackData, stored[k])
		}
		delivered += n
		counts = append(counts, strconv.Itoa(n))
	}
	t.Logf("%v of chaos: %d node kills (kill -9 and restart), %d redis-server kill -9 and restart", chaosTime.Round(time.Millisecond), nodeKills, redisKills)
	t.Logf("published %d triggers: %d acknowledged, %d failed (retried on another node); %d stored events were never acknowledged",
		published, nAcked, failed, unacked)
	t.Logf("subscribers: %d reconnects (%d on their own, %d of them moved to a node restarted in a lull), %d gap events, %d events delivered, %d of them unacknowledged", reconnects, voluntary, moved, gaps, delivered, extra)
	t.Logf("delivered per subscriber: %s", strings.Join(counts, " "))
	if nAcked < 100 || nodeKills == 0 {
		t.Errorf("too little load to mean anything: %d acknowledged triggers, %d node kills", nAcked, nodeKills)
	}
}

// moveSubscribers moves a few random subscribers to addr and waits until
// their streams there are open and have read their replays' first pages
// (which, for a subscriber that has every event, hands it over to live
// delivery). It returns how many it moved.
func moveSubscribers(t *testing.T, subs []*chaosSub, rnd *rand.Rand, addr string) int {
	t.Helper()
	opens := map[*chaosSub]int64{}
	for _, i := range rnd.Perm(len(subs))[:chaosMovers] {
		s := subs[i]
		select {
		case s.kick <- addr:
			opens[s] = s.opens.Load()
		default:
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for s, n := range opens {
		for s.opens.Load() <= n && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	for replayPages(addr) < len(opens) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if time.Now().After(deadline) {
		t.Logf("moved subscribers did not all resume on %s within 10s", addr)
	}
	return len(opens)
}

// replayPages returns sseloop_replay_pages_total of the node at addr, -1 if
// it cannot be read.
func replayPages(addr string) int {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "sseloop_replay_pages_total "); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				return -1
			}
			return n
		}
	}
	return -1
}

// allCaughtUp reports whether every subscriber has received the newest
// stored event of each of its keys.
func allCaughtUp(subs []*chaosSub, storedMax map[string]uint64) bool {
	for _, s := range subs {
		s.mu.Lock()
		for _, k := range s.keys {
			got := s.got[k]
			if storedMax[k] > 0 && (len(got) == 0 || got[len(got)-1] < storedMax[k]) {
				s.mu.Unlock()
				return false
			}
		}
		s.mu.Unlock()
	}
	return true
}

// chaosCluster is the nodes that are up; a slot is nil while its node is
// down.
type chaosCluster struct {
	paused atomic.Bool // publishers wait while set
	mu     sync.Mutex
	procs  [chaosNodes]*serverProcess
}

// pick returns the address of a random live node other than not if there is
// one, else any live node, else "".
func (c *chaosCluster) pick(rnd *rand.Rand, not string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var live []string
	for _, p := range c.procs {
		if p != nil && p.addr != not {
			live = append(live, p.addr)
		}
	}
	if len(live) == 0 {
		for _, p := range c.procs {
			if p != nil {
				live = append(live, p.addr)
			}
		}
	}
	if len(live) == 0 {
		return ""
	}
	return live[rnd.IntN(len(live))]
}

// kill takes node i out of the picks, then kills it with SIGKILL.
func (c *chaosCluster) kill(i int) {
	c.mu.Lock()
	p := c.procs[i]
	c.procs[i] = nil
	c.mu.Unlock()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	p.done <- <-p.done // for startProcess's Cleanup
}

func (c *chaosCluster) set(i int, p *serverProcess) {
	c.mu.Lock()
	c.procs[i] = p
	c.mu.Unlock()
}

type chaosAck struct{ key, data string }

// chaosPub triggers events through random nodes. Touched only by its
// goroutine until the test reads it after pubWG.Wait.
type chaosPub struct {
	n                  int
	rnd                *rand.Rand
	attempts, failures int
	acked              map[uint64]chaosAck
}

func (p *chaosPub) run(nodes *chaosCluster, keys []string, stop <-chan struct{}) {
	tr := &http.Transport{MaxIdleConnsPerHost: 2}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	for seq := 0; seq < chaosMaxTriggers; seq++ {
		key := keys[p.rnd.IntN(len(keys))]
		failedOn := ""
		for attempt := 0; attempt < 50; attempt++ {
			select {
			case <-stop:
				return
			default:
			}
			for i := 0; i < 1000 && nodes.paused.Load(); i++ {
				time.Sleep(10 * time.Millisecond)
			}
			addr := nodes.pick(p.rnd, failedOn)
			if addr == "" {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			// The data names the key (subscribers of two keys need it)
			// and the attempt: a failed one may still have been stored.
			data := fmt.Sprintf("%s p%d-%d-%d", key, p.n, seq, attempt)
			p.attempts++
			id, err := chaosTrigger(client, addr, key, data)
			if err == nil {
				p.acked[id] = chaosAck{key, data}
				break
			}
			p.failures++
			failedOn = addr
			time.Sleep(time.Duration(10+p.rnd.IntN(40)) * time.Millisecond)
		}
		time.Sleep(time.Duration(5+p.rnd.IntN(20)) * time.Millisecond)
	}
}

// chaosTrigger publishes data to key on addr and returns the acknowledged id.
func chaosTrigger(client *http.Client, addr, key, data string) (uint64, error) {
	resp, err := client.Post("http://"+addr+"/trigger/"+key, "text/plain", strings.NewReader(data))
	if err != nil {
		return 0, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != 200 {
		return 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	var ans struct{ ID string }
	if err := json.Unmarshal(b, &ans); err != nil {
		return 0, fmt.Errorf("answer %q: %v", b, err)
	}
	return strconv.ParseUint(ans.ID, 10, 64)
}

// chaosSub is one subscriber, reconnecting like a browser's EventSource.
type chaosSub struct {
	keys   []string
	rnd    *rand.Rand
	opened chan struct{} // closed when the first stream is open
	kick   chan string   // moves the subscriber to this node
	opens  atomic.Int64  // streams opened
	moveTo atomic.Pointer[string]

	mu   sync.Mutex
	last uint64              // the newest id received, on any key
	got  map[string][]uint64 // ids received per key, in order
	data map[uint64]string
	gaps map[string][]int // per key: len(got[key]) when a gap naming it came

	// Touched only by the subscriber's goroutine until subWG.Wait.
	streams, voluntary int
	errs               []string
}

func (s *chaosSub) run(nodes *chaosCluster, done <-chan struct{}) {
	for tries := 0; tries < 4*chaosMaxStreams && s.streams < chaosMaxStreams; tries++ {
		select {
		case <-done:
			return
		default:
		}
		var addr string
		if to := s.moveTo.Swap(nil); to != nil {
			addr = *to
		} else {
			select {
			case addr = <-s.kick:
			default:
				addr = nodes.pick(s.rnd, "")
			}
		}
		if addr == "" {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if s.stream(addr, done) {
			s.voluntary++
		} else {
			time.Sleep(time.Duration(10+s.rnd.IntN(90)) * time.Millisecond)
		}
	}
	s.errs = append(s.errs, "too many reconnects or failed connects")
}

// stream follows one connection to addr until it ends, done closes, or the
// subscriber leaves on its own after a few seconds (then it returns true).
func (s *chaosSub) stream(addr string, done <-chan struct{}) (voluntary bool) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	q := "GET /events?"
	for _, k := range s.keys {
		q += "key=" + k + "&"
	}
	if s.streams > 0 {
		// Like a browser resuming; "0" when nothing came yet: the page
		// subscribed before the first event (its lastEventId).
		q += "lastEventId=" + strconv.FormatUint(s.last, 10)
	}
	fmt.Fprintf(c, "%s HTTP/1.1\r\nHost: x\r\n\r\n", q)

	// Close the connection when the subscriber leaves on its own or stops.
	var leaving atomic.Bool
	ended := make(chan struct{})
	defer close(ended)
	stay := time.Duration(2000+s.rnd.IntN(3000)) * time.Millisecond
	go func() {
		t := time.NewTimer(stay)
		defer t.Stop()
		select {
		case <-t.C:
			leaving.Store(true)
		case to := <-s.kick:
			s.moveTo.Store(&to)
			leaving.Store(true)
		case <-done:
		case <-ended:
		}
		c.Close()
	}()

	r := bufio.NewReader(c)
	status, err := r.ReadString('\n')
	if err != nil {
		return leaving.Load()
	}
	if !strings.HasPrefix(status, "HTTP/1.1 200") {
		s.errs = append(s.errs, fmt.Sprintf("subscribe: %q", strings.TrimSpace(status)))
		return false
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return leaving.Load()
		}
		if line == "\r\n" {
			break
		}
	}
	s.streams++
	s.opens.Add(1)
	if s.streams == 1 {
		close(s.opened)
	}
	var id, name string
	var data []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return leaving.Load() // a partial event is not an event
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if id != "" || len(data) > 0 {
				s.event(id, name, strings.Join(data, "\n"))
			}
			id, name, data = "", "", nil
		case strings.HasPrefix(line, "id: "):
			id = line[4:]
		case strings.HasPrefix(line, "event: "):
			name = line[7:]
		case strings.HasPrefix(line, "data: "):
			data = append(data, line[6:])
		}
	}
}

// event records one event.
func (s *chaosSub) event(id, name, data string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if name == "gap" {
		var g struct{ Keys []string }
		if err := json.Unmarshal([]byte(data), &g); err != nil || id != "" {
			s.errs = append(s.errs, fmt.Sprintf("bad gap event id %q data %q", id, data))
			return
		}
		for _, k := range g.Keys {
			if !slices.Contains(s.keys, k) {
				s.errs = append(s.errs, fmt.Sprintf("gap names %q, not a key of the stream", k))
				continue
			}
			s.gaps[k] = append(s.gaps[k], len(s.got[k]))
		}
		return
	}
	n, err := strconv.ParseUint(id, 10, 64)
	key, _, _ := strings.Cut(data, " ")
	switch {
	case err != nil || name != "":
		s.errs = append(s.errs, fmt.Sprintf("unexpected event id %q name %q data %q", id, name, data))
	case !slices.Contains(s.keys, key):
		s.errs = append(s.errs, fmt.Sprintf("event %d of another key: %q", n, data))
	case n <= s.last:
		s.errs = append(s.errs, fmt.Sprintf("event %d (%q) after %d: duplicate or out of order", n, data, s.last))
	default:
		s.last = n
		s.got[key] = append(s.got[key], n)
		s.data[n] = data
	}
}

// check compares what subscriber i received of key with the acknowledged
// events and the store, and returns how many received events were not
// acknowledged.
func (s *chaosSub) check(t *testing.T, i int, key string, acked []uint64, ackData map[uint64]chaosAck, stored map[uint64]string) (extra int) {
	t.Helper()
	got := s.got[key]
	if len(got) == 0 {
		if len(acked) > 0 {
			t.Errorf("subscriber %d: none of the %d acknowledged events of %s", i, len(acked), key)
		}
		return 0
	}
	// Holes: acknowledged events not received. The subscriber was there
	// before the first trigger, so from the first one on.
	var silent, announced []uint64
	for _, id := range acked {
		at, found := slices.BinarySearch(got, id)
		if found {
			continue
		}
		if slices.Contains(s.gaps[key], at) {
			announced = append(announced, id)
		} else {
			silent = append(silent, id)
		}
	}
	if len(silent) > 0 {
		t.Errorf("subscriber %d (%v): %d acknowledged events of %s missing without a gap event, e.g. %v",
			i, s.keys, len(silent), key, silent[:min(5, len(silent))])
	}
	if len(announced) > 0 {
		t.Errorf("subscriber %d: %d acknowledged events of %s lost (a gap said so), e.g. %v; with Redis fsyncing every write nothing may be lost",
			i, len(announced), key, announced[:min(5, len(announced))])
	}
	holes := map[int]bool{}
	for _, id := range announced {
		at, _ := slices.BinarySearch(got, id)
		holes[at] = true
	}
	for _, at := range s.gaps[key] {
		if !holes[at] {
			t.Errorf("subscriber %d: a gap event for %s after %d of its events although none was missing", i, key, at)
		}
	}
	// Every received event is real, with its data.
	for _, id := range got {
		if a, ok := ackData[id]; ok {
			if a.key != key || a.data != s.data[id] {
				t.Errorf("subscriber %d: event %d = %q, acknowledged as %q on %s", i, id, s.data[id], a.data, a.key)
			}
			continue
		}
		extra++
		if d, ok := stored[id]; !ok || d != s.data[id] {
			t.Errorf("subscriber %d: event %d %q was neither acknowledged nor stored (store: %q)", i, id, s.data[id], d)
		}
	}
	return extra
}
