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
