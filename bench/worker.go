package bench

import (
	"bytes"
	"net/url"
	"strconv"
	"time"
)

// WorkerSpec tells one load-generator worker which connections to hold.
// Stable connection i (global index First+i) subscribes to key
// (First+i) % Keys: with ProtoSseloop alternately with /events?key=K and
// /events/{K}, with ProtoMercure with /.well-known/mercure?topic=K.
type WorkerSpec struct {
	Target string `json:"target"` // host:port of the server (IPv4)
	Proto  string `json:"proto"`  // ProtoSseloop ("" too) or ProtoMercure
	Source string `json:"source"` // IPv4 to bind before connect; "" = the kernel's choice
	// Spread is how many source addresses share the connections: Source
	// a.b.c.d and, for s = 1..Spread-1, 127.s.c.d (all loopback). The
	// kernel picks an ephemeral port per connection by searching the
	// range for a free 4-tuple; as one address's ports fill up, each
	// connect(2) takes longer (measured: the tail of a 100,000-stream
	// run crawled at ~1,000/s with 18,000 streams per address).
	Spread    int    `json:"spread,omitempty"`
	KeyPrefix string `json:"key_prefix"` // key k is KeyPrefix + k
	Keys      int    `json:"keys"`
	// Shared, when set, is a key every stable stream subscribes to as
	// well (hold scenario); its events carry the payload "sSEQ NS".
	Shared   string `json:"shared,omitempty"`
	First    int    `json:"first"`
	Conns    int    `json:"conns"`    // stable connections
	Inflight int    `json:"inflight"` // connection attempts in flight at once
	// ConnectTimeout bounds one attempt, from connect to a complete
	// response head.
	ConnectTimeout time.Duration `json:"connect_timeout"`
	// ChurnRate is how many short-lived connections per second are opened
	// once the parent says "go"; each is closed ChurnHold after its head.
	ChurnRate float64       `json:"churn_rate"`
	ChurnHold time.Duration `json:"churn_hold"`
	// Resume (storm): a stable stream the server ends waits for the "go"
	// command, then reconnects with the Last-Event-ID of the last event it
	// received, retrying every 100 ms until it is admitted. Duplicates are
	// counted across reconnects.
	Resume bool `json:"resume,omitempty"`
	// MaxLife stops the worker by itself, whatever the parent does.
	MaxLife time.Duration `json:"max_life"`
}

// Commands a worker reads, one per line.
const (
	cmdGo   = "go"   // start the active phase (churn)
	cmdStop = "stop" // close everything, send the final report, exit
)

// WorkerReport is what a worker reports: progress every reportEvery, then
// one final report. Counts are totals since the worker started.
type WorkerReport struct {
	Final      bool  `json:"final,omitempty"`
	Settled    bool  `json:"settled,omitempty"` // every stable attempt finished
	Connected  int   `json:"connected"`         // stable streams established
	Failed     int   `json:"failed"`            // stable attempts that failed
	Dropped    int64 `json:"dropped"`           // established stable streams that ended
	Received   int64 `json:"received"`          // bench events on stable streams, first copy
	Duplicates int64 `json:"duplicates"`        // events whose payload sequence the stream already had
	NoID       int64 `json:"no_id"`             // events without an id field
	BadData    int64 `json:"bad_data"`          // events whose data is not a bench payload
	Comments   int64 `json:"comments"`          // comment lines (heartbeats)
	LastRecvNs int64 `json:"last_recv_ns"`      // wall time of the last delivery
	Gaps       int64 `json:"gaps"`              // "gap" events: loss the server announced

	// Resume (storm).
	Disconnects     int64 `json:"disconnects,omitempty"`      // stable streams the server ended
	Waiting         int   `json:"waiting,omitempty"`          // of those, not admitted again yet
	Reconnects      int64 `json:"reconnects,omitempty"`       // reconnect attempts
	ReconnectErrors int64 `json:"reconnect_errors,omitempty"` // failed attempts (retried)
	Readmitted      int64 `json:"readmitted,omitempty"`       // successful reconnects
	LastReadmitNs   int64 `json:"last_readmit_ns,omitempty"`  // wall time of the last one

	ChurnOpened     int64 `json:"churn_opened"`
	ChurnOK         int64 `json:"churn_ok"`
	ChurnClosed     int64 `json:"churn_closed"` // closed by us after ChurnHold
	ChurnErrors     int64 `json:"churn_errors"`
	ChurnDeliveries int64 `json:"churn_deliveries"`

	RecvShared int64 `json:"recv_shared,omitempty"` // of Received, events of the shared key

	// Sent with the first settled report and the final one: connections
	// per key, from key KeyBase on (a worker reports only the keys it
	// uses when they are contiguous, so a million per-user keys do not
	// travel as a million counters per worker).
	KeyBase    int   `json:"key_base,omitempty"`
	ConnPerKey []int `json:"conn_per_key,omitempty"`
	// Final report only.
	RecvPerKey []int64           `json:"recv_per_key,omitempty"`
	Errors     map[string]int64  `json:"errors,omitempty"`
	Hist       *Hist             `json:"hist,omitempty"`
	Err        string            `json:"err,omitempty"` // the worker itself failed
	Extra      map[string]string `json:"extra,omitempty"`
}

// reportEvery is the progress report period.
const reportEvery = 50 * time.Millisecond

func keyName(prefix string, k int) string { return prefix + strconv.Itoa(k) }

// Protocols the load generator speaks.
const (
	// ProtoSseloop is sseloop's native API, which the baseline serves too:
	// GET /events?key=K or /events/{K}, POST /trigger/{K} with the data as
	// body, answered {"id":"…"}.
	ProtoSseloop = "sseloop"
	// ProtoMercure is the Mercure protocol: GET
	// /.well-known/mercure?topic=K, and a form POST (topic, data) to the
	// same path with an HS256 publisher JWT, answered with the id
	// (urn:uuid:…).
	ProtoMercure = "mercure"
)

// subscribePath returns stream i's request target. For sseloop it
// alternates the two subscribe forms so both are exercised.
func subscribePath(proto, key, shared string, i int) string {
	if proto == ProtoMercure {
		p := "/.well-known/mercure?topic=" + url.QueryEscape(key)
		if shared != "" {
			p += "&topic=" + url.QueryEscape(shared)
		}
		return p
	}
	if shared != "" {
		return "/events?key=" + url.QueryEscape(key) + "&key=" + url.QueryEscape(shared)
	}
	if i%2 == 0 {
		return "/events?key=" + url.QueryEscape(key)
	}
	return "/events/" + url.PathEscape(key)
}

// Bench event payload: "SEQ NS", where SEQ numbers the events of one key
// from 0 (publish number / keys) and NS is the send time in unix
// nanoseconds. Loss and duplicates are counted on SEQ, not on the event
// id: Mercure's ids are urn:uuid strings with no order. An event of the
// shared key (hold scenario) has sharedMark before SEQ.
const sharedMark = 's'

// maxSharedSeq bounds the events of the shared key a stream tracks (one
// 64-bit word per stream).
const maxSharedSeq = 64

// appendPayloadMark appends a bench payload, with sharedMark first when
// shared.
func appendPayloadMark(dst []byte, shared bool, seq uint64, ns int64) []byte {
	if shared {
		dst = append(dst, sharedMark)
	}
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, ' ')
	return strconv.AppendInt(dst, ns, 10)
}

// parsePayload parses what appendPayloadMark wrote (after any mark),
// without allocating.
func parsePayload(b []byte) (seq, ns uint64, ok bool) {
	i := bytes.IndexByte(b, ' ')
	if i < 0 {
		return 0, 0, false
	}
	seq, ok1 := parseDec(b[:i])
	ns, ok2 := parseDec(b[i+1:])
	return seq, ns, ok1 && ok2
}

// parseDec parses a non-negative decimal without allocating.
func parseDec(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}
