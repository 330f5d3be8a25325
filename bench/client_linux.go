package bench

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Connection states of the epoll client.
const (
	stConnecting uint8 = iota // connect in progress
	stHead                    // request sent, reading the response head
	stStream                  // streaming events
	stClosed
	stWait // lost (WorkerSpec.Resume): waiting to reconnect with its Last-Event-ID
)

// lconn is one load-generator connection, owned by the worker's loop.
type lconn struct {
	fd       int
	key      int32
	idx      int32
	state    uint8
	churn    bool
	chunked  bool
	resuming bool  // a reconnect attempt: sends Last-Event-ID
	bad      error // set by a parser callback; the loop closes the conn
	// deadline (unix ns): attempt timeout, then (churn) close time, or
	// (stWait) when a failed reconnect may be tried again.
	deadline int64
	lastID   []byte // id of the last event received (Resume)
	head     []byte
	dec      chunkDecoder
	sse      Parser
	// seen has bit SEQ set for each bench payload sequence received: a
	// bit per event of the stream's key, so duplicates are found whatever
	// the server's ids look like.
	seen []uint64
	// seenShared is seen for the shared key (WorkerSpec.Shared).
	seenShared uint64
}

// maxSeq bounds the payload sequences a stream tracks (128 KiB of bits at
// most): a bad SEQ must not make the load generator allocate without bound.
const maxSeq = 1 << 20

// loadWorker holds connections on one epoll instance, on one goroutine: no
// goroutine per connection, so one process holds ~19,000 of them.
type loadWorker struct {
	spec   WorkerSpec
	addr   unix.SockaddrInet4
	srcs   []unix.SockaddrInet4 // source addresses, by stream index
	host   string
	epfd   int
	byFD   []*lconn
	buf    []byte
	events []unix.EpollEvent
	req    []byte

	r          WorkerReport
	keyBase    int // connPerKey[i] and recvPerKey[i] are key keyBase+i
	connPerKey []int
	recvPerKey []int64
	hist       Hist
	errs       map[string]int64

	pending       int // attempts in flight
	pendingStable int
	nextStable    int
	settledSent   bool

	active      bool
	activeStart int64
	churnStart  int64 // churn attempts started
	churnQ      []*lconn

	resumeGo bool     // Resume: the parent said go, waiting streams reconnect
	waitQ    []*lconn // Resume: lost streams, in the order they may reconnect

	cur     *lconn
	now     int64
	onChunk func([]byte)
	onEvent func(*Event)
}

func newLoadWorker(spec WorkerSpec) (*loadWorker, error) {
	if spec.Keys <= 0 {
		spec.Keys = 1
	}
	if spec.Inflight <= 0 {
		spec.Inflight = 256
	}
	if spec.ConnectTimeout <= 0 {
		spec.ConnectTimeout = 10 * time.Second
	}
	if spec.MaxLife <= 0 {
		spec.MaxLife = time.Hour
	}
	if spec.ChurnHold <= 0 {
		spec.ChurnHold = time.Second
	}
	ta, err := net.ResolveTCPAddr("tcp4", spec.Target)
	if err != nil {
		return nil, fmt.Errorf("bench: target: %w", err)
	}
	w := &loadWorker{
		spec:   spec,
		host:   spec.Target,
		buf:    make([]byte, 64<<10),
		events: make([]unix.EpollEvent, 512),
		errs:   make(map[string]int64),
	}
	span := spec.Keys
	if b := spec.First % spec.Keys; spec.Conns > 0 && b+spec.Conns <= spec.Keys {
		w.keyBase, span = b, spec.Conns // contiguous keys (per-user keys)
	}
	w.connPerKey, w.recvPerKey = make([]int, span), make([]int64, span)
	w.addr.Port = ta.Port
	copy(w.addr.Addr[:], ta.IP.To4())
	if spec.Source != "" {
		ip := net.ParseIP(spec.Source).To4()
		if ip == nil {
			return nil, fmt.Errorf("bench: source %q is not an IPv4 address", spec.Source)
		}
		w.srcs = make([]unix.SockaddrInet4, max(1, spec.Spread))
		for s := range w.srcs {
			copy(w.srcs[s].Addr[:], ip)
			if s > 0 {
				w.srcs[s].Addr[0], w.srcs[s].Addr[1] = 127, byte(s)
			}
		}
	}
	w.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("bench: epoll_create1: %w", err)
	}
	w.onChunk = w.feedSSE
	w.onEvent = w.event
	return w, nil
}

// run drives the loop until a stop command, a closed command channel (the
// parent is gone: return at once) or MaxLife. report gets progress reports
// and, after stop, the final one.
func (w *loadWorker) run(cmds <-chan string, report func(*WorkerReport)) error {
	defer unix.Close(w.epfd)
	start := time.Now()
	end := start.Add(w.spec.MaxLife)
	lastReport := start
	for time.Now().Before(end) {
		w.now = time.Now().UnixNano()
		w.startStable()
		if w.active {
			w.churn()
		}
		if w.resumeGo {
			w.reconnect()
		}
		n, err := unix.EpollWait(w.epfd, w.events, 10)
		if err != nil && !errors.Is(err, unix.EINTR) {
			w.closeAll()
			return fmt.Errorf("bench: epoll_wait: %w", err)
		}
		for i := 0; i < n; i++ {
			w.handle(&w.events[i])
		}
		if time.Since(lastReport) >= reportEvery {
			lastReport = time.Now()
			w.now = lastReport.UnixNano()
			w.sweep()
			report(w.progress())
		}
		select {
		case cmd, ok := <-cmds:
			if !ok {
				w.closeAll()
				return nil
			}
			switch cmd {
			case cmdGo:
				if w.spec.Resume {
					w.resumeGo = true
				} else {
					w.active, w.activeStart = true, time.Now().UnixNano()
				}
			case cmdStop:
				w.closeAll()
				report(w.final())
				return nil
			}
		default:
		}
	}
	w.closeAll()
	w.errs["worker max life reached"]++
	report(w.final())
	return nil
}

func (w *loadWorker) progress() *WorkerReport {
	r := w.r
	r.Settled = w.nextStable == w.spec.Conns && w.pendingStable == 0
	if r.Settled && !w.settledSent {
		w.settledSent = true
		r.KeyBase, r.ConnPerKey = w.keyBase, append([]int(nil), w.connPerKey...)
	}
	return &r
}

func (w *loadWorker) final() *WorkerReport {
	r := w.progress()
	r.Final = true
	r.KeyBase, r.ConnPerKey = w.keyBase, append([]int(nil), w.connPerKey...)
	r.RecvPerKey = append([]int64(nil), w.recvPerKey...)
	r.Errors = w.errs
	h := w.hist
	r.Hist = &h
	return r
}

func (w *loadWorker) startStable() {
	for w.nextStable < w.spec.Conns && w.pending < w.spec.Inflight {
		i := w.spec.First + w.nextStable
		w.nextStable++
		w.pendingStable++
		w.dial(i, i%w.spec.Keys, false)
	}
}

func (w *loadWorker) churn() {
	target := int64(float64(w.now-w.activeStart) / 1e9 * w.spec.ChurnRate)
	for k := 0; w.churnStart < target && w.pending < w.spec.Inflight && k < 64; k++ {
		i := int(w.churnStart)
		w.churnStart++
		w.r.ChurnOpened++
		w.dial(i, i%w.spec.Keys, true)
	}
	for len(w.churnQ) > 0 {
		c := w.churnQ[0]
		if c.state == stStream && c.deadline > w.now {
			break
		}
		w.churnQ[0] = nil
		w.churnQ = w.churnQ[1:]
		if c.state == stStream {
			w.r.ChurnClosed++
			w.close(c, false)
		}
	}
}

// reconnect dials waiting streams again (Resume), all at once up to
// Inflight; a failed attempt waits retryAfter before its next one.
func (w *loadWorker) reconnect() {
	for len(w.waitQ) > 0 && w.pending < w.spec.Inflight {
		c := w.waitQ[0]
		if c.deadline > w.now {
			break
		}
		w.waitQ[0] = nil
		w.waitQ = w.waitQ[1:]
		*c = lconn{fd: -1, key: c.key, idx: c.idx, resuming: true, seen: c.seen, lastID: c.lastID}
		w.r.Reconnects++
		w.open(c)
	}
}

// retryAfter is how long a failed reconnect attempt waits (Resume).
const retryAfter = 100 * time.Millisecond

func (w *loadWorker) dial(idx, key int, churn bool) {
	w.open(&lconn{fd: -1, key: int32(key), idx: int32(idx), churn: churn})
}

// open starts connecting c.
func (w *loadWorker) open(c *lconn) {
	w.pending++
	c.deadline = w.now + int64(w.spec.ConnectTimeout)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		w.fail(c, "socket: "+err.Error())
		return
	}
	c.fd = fd
	if len(w.srcs) > 0 {
		// Let connect pick the port per 4-tuple: a plain bind would
		// reserve it for every destination.
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		if err := unix.Bind(fd, &w.srcs[int(c.idx)%len(w.srcs)]); err != nil {
			w.fail(c, "bind: "+err.Error())
			return
		}
	}
	err = unix.Connect(fd, &w.addr)
	if err != nil && !errors.Is(err, unix.EINPROGRESS) {
		w.fail(c, "connect: "+err.Error())
		return
	}
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLOUT, Fd: int32(fd)}); err != nil {
		w.fail(c, "epoll_ctl: "+err.Error())
		return
	}
	for fd >= len(w.byFD) {
		w.byFD = append(w.byFD, make([]*lconn, len(w.byFD)+1024)...)
	}
	w.byFD[fd] = c
}

func (w *loadWorker) handle(ev *unix.EpollEvent) {
	fd := int(ev.Fd)
	if fd >= len(w.byFD) || w.byFD[fd] == nil {
		return
	}
	c := w.byFD[fd]
	if c.state == stConnecting {
		if errno, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || errno != 0 {
			w.fail(c, "connect: "+unix.Errno(errno).Error())
			return
		}
		w.req = append(w.req[:0], "GET "...)
		w.req = append(w.req, subscribePath(w.spec.Proto, keyName(w.spec.KeyPrefix, int(c.key)), w.spec.Shared, int(c.idx))...)
		w.req = append(w.req, " HTTP/1.1\r\nHost: "...)
		w.req = append(w.req, w.host...)
		w.req = append(w.req, "\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n"...)
		if c.resuming && len(c.lastID) > 0 {
			w.req = append(w.req, "Last-Event-ID: "...)
			w.req = append(w.req, c.lastID...)
			w.req = append(w.req, "\r\n"...)
		}
		w.req = append(w.req, "\r\n"...)
		n, err := unix.Write(fd, w.req)
		if err != nil || n != len(w.req) {
			w.fail(c, "write request")
			return
		}
		if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_MOD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)}); err != nil {
			w.fail(c, "epoll_ctl: "+err.Error())
			return
		}
		c.state = stHead
		return
	}
	// Level-triggered: a few reads per turn keep one busy conn from
	// starving the others; the rest is read on the next turn.
	for range 4 {
		n, err := unix.Read(fd, w.buf)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			w.lost(c, "read: "+err.Error())
			return
		case n == 0:
			w.lost(c, "closed by server")
			return
		}
		w.now = time.Now().UnixNano()
		w.consume(c, w.buf[:n])
		if c.state == stClosed || n < len(w.buf) {
			return
		}
	}
}

func (w *loadWorker) consume(c *lconn, b []byte) {
	if c.state == stHead {
		c.head = append(c.head, b...)
		h, n, err := parseRespHead(c.head)
		if err != nil {
			w.fail(c, err.Error())
			return
		}
		if n == 0 {
			return
		}
		if h.status != 200 {
			w.fail(c, "status "+strconv.Itoa(h.status))
			return
		}
		c.state, c.chunked = stStream, h.chunked
		w.established(c)
		b = c.head[n:]
		defer func() { c.head = nil }()
	}
	if len(b) == 0 {
		return
	}
	w.cur = c
	if c.chunked {
		done, err := c.dec.feed(b, w.onChunk)
		switch {
		case err != nil:
			c.bad = err
		case done:
			c.bad = errStreamEnded
		}
	} else {
		w.onChunk(b)
	}
	if c.bad != nil {
		w.lost(c, c.bad.Error())
	}
}

// errStreamEnded means a chunked stream sent its last chunk.
var errStreamEnded = errors.New("stream ended by server")

func (w *loadWorker) feedSSE(p []byte) {
	c := w.cur
	if err := c.sse.Feed(p, w.onEvent); err != nil && c.bad == nil {
		c.bad = err
	}
}

func (w *loadWorker) event(ev *Event) {
	c := w.cur
	if string(ev.Type) == "gap" {
		// Announced loss: the server says it no longer has what this
		// stream missed.
		w.r.Gaps++
		return
	}
	if !ev.HasID {
		w.r.NoID++
		return
	}
	if w.spec.Resume {
		c.lastID = append(c.lastID[:0], ev.ID...)
	}
	if len(ev.Data) > 0 && ev.Data[0] == sharedMark {
		w.sharedEvent(c, ev)
		return
	}
	seq, ts, ok := parsePayload(ev.Data)
	if !ok || seq >= maxSeq {
		w.r.BadData++
		return
	}
	word, bit := int(seq/64), uint64(1)<<(seq%64)
	if word >= len(c.seen) {
		c.seen = append(c.seen, make([]uint64, word+1-len(c.seen))...)
	}
	if c.seen[word]&bit != 0 {
		w.r.Duplicates++
		return
	}
	c.seen[word] |= bit
	if c.churn {
		w.r.ChurnDeliveries++
		return
	}
	w.r.Received++
	w.recvPerKey[int(c.key)-w.keyBase]++
	w.r.LastRecvNs = w.now
	w.hist.Record((w.now - int64(ts)) / 1000)
}

// sharedEvent counts an event of the shared key.
func (w *loadWorker) sharedEvent(c *lconn, ev *Event) {
	seq, ts, ok := parsePayload(ev.Data[1:])
	if !ok || seq >= maxSharedSeq || w.spec.Shared == "" || c.churn {
		w.r.BadData++
		return
	}
	if c.seenShared&(1<<seq) != 0 {
		w.r.Duplicates++
		return
	}
	c.seenShared |= 1 << seq
	w.r.Received++
	w.r.RecvShared++
	w.r.LastRecvNs = w.now
	w.hist.Record((w.now - int64(ts)) / 1000)
}

func (w *loadWorker) established(c *lconn) {
	w.pending--
	if c.churn {
		w.r.ChurnOK++
		c.deadline = w.now + int64(w.spec.ChurnHold)
		w.churnQ = append(w.churnQ, c)
		return
	}
	if c.resuming {
		c.resuming = false
		w.r.Waiting--
		w.r.Readmitted++
		w.r.LastReadmitNs = w.now
		return
	}
	w.pendingStable--
	w.r.Connected++
	w.connPerKey[int(c.key)-w.keyBase]++
}

// fail ends an attempt that never got its stream.
func (w *loadWorker) fail(c *lconn, why string) {
	if c.state == stStream {
		w.lost(c, why)
		return
	}
	w.pending--
	if c.resuming {
		// The server is not back yet, or refused: try again soon.
		w.r.ReconnectErrors++
		w.errs["reconnect: "+why]++
		w.close(c, false)
		c.state, c.deadline = stWait, w.now+int64(retryAfter)
		w.waitQ = append(w.waitQ, c)
		return
	}
	if c.churn {
		w.r.ChurnErrors++
		w.errs["churn: "+why]++
	} else {
		w.pendingStable--
		w.r.Failed++
		w.errs[why]++
	}
	w.close(c, false)
}

// lost ends an established stream that we did not close ourselves.
func (w *loadWorker) lost(c *lconn, why string) {
	if c.state != stStream {
		w.fail(c, why)
		return
	}
	if w.spec.Resume && !c.churn {
		// Storm: the server went away; reconnect when told to.
		w.r.Disconnects++
		w.r.Waiting++
		w.close(c, false)
		c.state, c.deadline = stWait, 0
		w.waitQ = append(w.waitQ, c)
		return
	}
	if c.churn {
		w.r.ChurnErrors++
		w.errs["churn stream: "+why]++
	} else {
		w.r.Dropped++
		w.errs["stream: "+why]++
	}
	w.close(c, false)
}

// close closes c; abort resets the connection instead of a FIN, leaving
// no TIME_WAIT behind (used for mass teardown).
func (w *loadWorker) close(c *lconn, abort bool) {
	if c.fd >= 0 {
		c.sse.Comments, w.r.Comments = 0, w.r.Comments+c.sse.Comments
		if abort {
			_ = unix.SetsockoptLinger(c.fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		}
		_ = unix.Close(c.fd)
		if c.fd < len(w.byFD) {
			w.byFD[c.fd] = nil
		}
		c.fd = -1
	}
	c.state = stClosed
	c.head = nil
}

// sweep fails attempts that passed their deadline.
func (w *loadWorker) sweep() {
	for _, c := range w.byFD {
		if c != nil && c.state < stStream && c.deadline < w.now {
			w.fail(c, "connect timeout")
		}
	}
}

func (w *loadWorker) closeAll() {
	for _, c := range w.byFD {
		if c != nil {
			w.close(c, true)
		}
	}
}
