package store

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

var _ IDResolver = (*Redis)(nil)

// pubKey is the Redis key of the PubID index entry of pubID: a string
// holding the event's id, expiring with the TTL. It is written after the
// Append script, before Append returns (so before the publisher hears the
// id); a subscriber that got the event from the feed and resumes with its
// PubID within that window is answered "unknown id" (a gap).
func (r *Redis) pubKey(pubID string) string { return r.prefix + redisTag + ":p:" + pubID }

// indexPubIDs writes the PubID index entries of evs (ids assigned).
func (r *Redis) indexPubIDs(ctx context.Context, evs []Event) error {
	var pipe redis.Pipeliner
	var ttl time.Duration // 0: no expiry (TTL forever; MaxEvents still bounds resolution)
	if r.ttl >= 0 {
		ttl = time.Duration(r.ttl) * time.Millisecond
	}
	for i := range evs {
		if evs[i].PubID == "" {
			continue
		}
		if pipe == nil {
			pipe = r.c.Pipeline()
		}
		pipe.Set(ctx, r.pubKey(evs[i].PubID), strconv.FormatUint(evs[i].ID, 10), ttl)
	}
	if pipe == nil {
		return nil
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return r.wrap(err)
	}
	return nil
}

// ResolveID implements IDResolver: the index entry, checked against the
// feed (the event may have been trimmed by MaxEvents since).
func (r *Redis) ResolveID(ctx context.Context, pubID string) (uint64, bool, error) {
	if err := r.begin(ctx); err != nil {
		return 0, false, err
	}
	if pubID == "" {
		return 0, false, nil
	}
	v, err := r.c.Get(ctx, r.pubKey(pubID)).Result()
	if errors.Is(err, redis.Nil) {
		return 0, false, nil
	} else if err != nil {
		return 0, false, r.wrap(err)
	}
	id, err := strconv.ParseUint(v, 10, 64)
	if err != nil || id == 0 {
		return 0, false, nil // not ours: ignore
	}
	evs, err := r.xrange(ctx, r.kFeed, id-1, 1)
	if err != nil {
		return 0, false, err
	}
	if len(evs) == 0 || evs[0].ID != id || evs[0].Time <= r.cutoff() {
		return 0, false, nil
	}
	return id, true, nil
}
