package store

import (
	"context"
	"time"
)

// Presence is implemented by stores shared by several nodes (Redis), so
// that presence counts cover every node: each node publishes its own counts
// of the keys whose presence changed, and reads the others'. A store used
// by one node (buntdb) does not implement it: that node's counts are the
// whole truth.
type Presence interface {
	// PublishPresence sets node's counts of the keys in counts (a zero
	// Connections removes the key) and renews node's heartbeat for ttl: a
	// node that stops publishing drops out of every count ttl after its
	// last call. fresh reports that the store held no live entry for node
	// (first call, or its counts were lost or expired): the caller then
	// publishes all its counts again.
	PublishPresence(ctx context.Context, node string, ttl time.Duration, counts []PresenceCount) (fresh bool, err error)
	// PresenceOf returns the counts of keys summed over the live nodes other
	// than node, one entry per key in order: Connections added up, Users the
	// union, sorted.
	PresenceOf(ctx context.Context, node string, keys []string) ([]PresenceCount, error)
	// PresenceChanges returns the keys whose presence some node changed
	// after cursor (a node's own changes included), and the cursor to pass
	// next time. cursor "" starts at the current end (no keys). lost reports
	// that changes after cursor were forgotten (the caller fell behind):
	// treat every key as changed. The keys of a node that dropped out
	// (deadline passed) count as changed.
	PresenceChanges(ctx context.Context, cursor string) (keys []string, next string, lost bool, err error)
	// LeavePresence removes node's counts and heartbeat (a clean shutdown).
	LeavePresence(ctx context.Context, node string) error
}

// PresenceCount is one key's presence on one node, or summed over nodes.
type PresenceCount struct {
	Key         string
	Connections int      // open streams of the key
	Users       []string // distinct users of those streams (token subjects), sorted
}

// Subscriptions is implemented by stores shared by several nodes (Redis),
// so that the Mercure subscriptions API lists the subscriptions of every
// node: each node puts its own records (one per subscriber) and renews a
// heartbeat; a node that stops renewing drops out, and its records are
// handed to exactly one other node, which announces their end. A store
// used by one node (buntdb) does not implement it.
type Subscriptions interface {
	// PutSubscriptions sets (Data not nil) or removes (Data nil) node's
	// records and renews node's heartbeat for ttl, also when recs is
	// empty. fresh reports that the store held no live entry for node
	// (first call, records lost, or node taken for dead): the caller then
	// puts all its records again. dead are the records of every node whose
	// heartbeat had expired (node's own included), removed by this call:
	// each dead node's records are returned to one call only.
	PutSubscriptions(ctx context.Context, node string, ttl time.Duration, recs []SubscriptionRecord) (fresh bool, dead []SubscriptionRecord, err error)
	// ListSubscriptions returns the records of every live node but node.
	ListSubscriptions(ctx context.Context, node string) ([]SubscriptionRecord, error)
	// LeaveSubscriptions removes node's records and heartbeat (a clean
	// shutdown).
	LeaveSubscriptions(ctx context.Context, node string) error
}

// SubscriptionRecord is one subscriber's entry in [Subscriptions]: ID is
// the subscriber, Data is opaque to the store.
type SubscriptionRecord struct {
	ID   string
	Data []byte
}
