package store

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// The Mercure subscriptions registry in Redis (see docs/REDIS.md). With p
// the prefix and T the hash tag:
//
//	pT:msubs:nodes     sorted set: every node with a registry entry, scored
//	                   by its deadline (Redis TIME in ms plus the node's
//	                   ttl), renewed by each PutSubscriptions.
//	pT:msubs:n:<node>  hash: the node's records, field = subscriber id,
//	                   value = the record's data. Its own PEXPIRE (twice the
//	                   ttl) removes it if nobody else does.
//
// A node past its deadline is left out of every list at once and removed,
// records and all, by the next PutSubscriptions of any node, which gets its
// records back as dead (one caller only: the script is atomic).

var _ Subscriptions = (*Redis)(nil)

func (r *Redis) msubsNodesKey() string   { return r.prefix + redisTag + ":msubs:nodes" }
func (r *Redis) msubsNodePrefix() string { return r.prefix + redisTag + ":msubs:n:" }

// putSubscriptionsScript: KEYS[1] the nodes set, KEYS[2] the node's hash;
// ARGV[1] node, ARGV[2] ttl ms, ARGV[3] the node hash prefix, ARGV[4] 1 to
// reap dead nodes, then id, data ("" = remove) per record. Returns {fresh,
// then id, data of every dead node's records}.
var putSubscriptionsScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {0}
if ARGV[4] == '1' then
  for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)) do
    local h = ARGV[3] .. n
    local all = redis.call('HGETALL', h)
    for i = 1, #all do out[#out + 1] = all[i] end
    redis.call('ZREM', KEYS[1], n)
    redis.call('DEL', h)
  end
end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  out[1] = 1
  redis.call('DEL', KEYS[2])
end
for i = 5, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[2], ARGV[i])
  else
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
end
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[2], 2 * ttl)
return out
`)

// listSubscriptionsScript: KEYS[1] the nodes set; ARGV[1] the node hash
// prefix, ARGV[2] the asking node. Returns id, data of every record of
// every other live node.
var listSubscriptionsScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
  if n ~= ARGV[2] then
    local all = redis.call('HGETALL', ARGV[1] .. n)
    for i = 1, #all do out[#out + 1] = all[i] end
  end
end
return out
`)

// subscriptionsChunk bounds the records of one script call.
const subscriptionsChunk = 1000

// PutSubscriptions implements Subscriptions.
func (r *Redis) PutSubscriptions(ctx context.Context, node string, ttl time.Duration, recs []SubscriptionRecord) (bool, []SubscriptionRecord, error) {
	if err := r.begin(ctx); err != nil {
		return false, nil, err
	}
	ttlMS := max(ttl.Milliseconds(), 1)
	keys := []string{r.msubsNodesKey(), r.msubsNodePrefix() + node}
	fresh := false
	var dead []SubscriptionRecord
	for first := true; first || len(recs) > 0; first = false {
		chunk := recs[:min(len(recs), subscriptionsChunk)]
		recs = recs[len(chunk):]
		reap := "0"
		if first {
			reap = "1"
		}
		args := make([]any, 0, 4+2*len(chunk))
		args = append(args, node, ttlMS, r.msubsNodePrefix(), reap)
		for _, rec := range chunk {
			if rec.Data != nil && len(rec.Data) == 0 {
				return false, nil, fmt.Errorf("store: redis: subscription record %q: empty data", rec.ID)
			}
			args = append(args, rec.ID, rec.Data)
		}
		res, err := putSubscriptionsScript.Run(ctx, r.c, keys, args...).Slice()
		if err != nil {
			return false, nil, r.wrap(err)
		}
		if len(res) == 0 || len(res)%2 != 1 {
			return false, nil, fmt.Errorf("store: redis: subscriptions: unexpected reply of %d values", len(res))
		}
		if n, _ := res[0].(int64); n == 1 {
			fresh = true
		}
		d, err := subscriptionRecords(res[1:])
		if err != nil {
			return false, nil, err
		}
		dead = append(dead, d...)
	}
	return fresh, dead, nil
}

// ListSubscriptions implements Subscriptions.
func (r *Redis) ListSubscriptions(ctx context.Context, node string) ([]SubscriptionRecord, error) {
	if err := r.begin(ctx); err != nil {
		return nil, err
	}
	res, err := listSubscriptionsScript.Run(ctx, r.c, []string{r.msubsNodesKey()}, r.msubsNodePrefix(), node).Slice()
	if err != nil {
		return nil, r.wrap(err)
	}
	return subscriptionRecords(res)
}

// LeaveSubscriptions implements Subscriptions.
func (r *Redis) LeaveSubscriptions(ctx context.Context, node string) error {
	if err := r.begin(ctx); err != nil {
		return err
	}
	_, err := r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRem(ctx, r.msubsNodesKey(), node)
		p.Del(ctx, r.msubsNodePrefix()+node)
		return nil
	})
	return r.wrap(err)
}

// subscriptionRecords turns id, data pairs into records.
func subscriptionRecords(vals []any) ([]SubscriptionRecord, error) {
	if len(vals)%2 != 0 {
		return nil, fmt.Errorf("store: redis: subscriptions: odd reply")
	}
	out := make([]SubscriptionRecord, 0, len(vals)/2)
	for i := 0; i < len(vals); i += 2 {
		id, ok1 := vals[i].(string)
		data, ok2 := vals[i+1].(string)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("store: redis: subscriptions: unexpected %T, %T", vals[i], vals[i+1])
		}
		out = append(out, SubscriptionRecord{ID: id, Data: []byte(data)})
	}
	return out, nil
}
