package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Presence in Redis (see docs/REDIS.md, "Presence"). With p the prefix and
// T the hash tag:
//
//	pT:presence:nodes     sorted set: every node that published presence,
//	                      scored by its deadline (Redis TIME in ms plus the
//	                      node's ttl), renewed by each PublishPresence.
//	pT:presence:n:<node>  hash: the node's counts, field c:<key> = its
//	                      streams of key, u:<key> = a JSON array of their
//	                      users (absent when none). Only changed keys are
//	                      written. Its own PEXPIRE (twice the ttl) removes
//	                      it if nobody else does.
//
// Readers use Redis's clock (TIME inside the scripts), so nodes with skewed
// clocks agree on who is alive. A node past its deadline is ignored by
// every reader at once, and removed (ZREM + DEL) by the first read that
// sees it dead.

var _ Presence = (*Redis)(nil)

func (r *Redis) presenceNodesKey() string { return r.prefix + redisTag + ":presence:nodes" }
func (r *Redis) presenceNodePrefix() string {
	return r.prefix + redisTag + ":presence:n:"
}

// publishPresenceScript: KEYS[1] the nodes set, KEYS[2] the node's hash;
// ARGV[1] node, ARGV[2] ttl ms, then key, connections, users JSON ("" =
// none) per key. Returns 1 when the node was not in the set.
var publishPresenceScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
for i = 3, #ARGV, 3 do
  local k, c, u = ARGV[i], ARGV[i+1], ARGV[i+2]
  if c == '0' then
    redis.call('HDEL', KEYS[2], 'c:' .. k, 'u:' .. k)
  else
    redis.call('HSET', KEYS[2], 'c:' .. k, c)
    if u == '' then
      redis.call('HDEL', KEYS[2], 'u:' .. k)
    else
      redis.call('HSET', KEYS[2], 'u:' .. k, u)
    end
  end
end
redis.call('PEXPIRE', KEYS[2], 2 * ttl)
return redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
`)

// presenceOfScript: KEYS[1] the nodes set; ARGV[1] the asking node, ARGV[2]
// the node hash prefix, ARGV[3..] the fields to read. Removes the dead
// nodes, then returns HMGET of the fields from every other live node.
var presenceOfScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
for _, n in ipairs(dead) do
  redis.call('ZREM', KEYS[1], n)
  redis.call('DEL', ARGV[2] .. n)
end
local out = {}
for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
  if n ~= ARGV[1] then
    out[#out + 1] = redis.call('HMGET', ARGV[2] .. n, unpack(ARGV, 3))
  end
end
return out
`)

// presenceChunk bounds the keys of one script call (Lua's unpack has a
// stack limit of about 8,000 values; two fields per key).
const presenceChunk = 1000

// PublishPresence implements Presence.
func (r *Redis) PublishPresence(ctx context.Context, node string, ttl time.Duration, counts []PresenceCount) (bool, error) {
	if err := r.begin(ctx); err != nil {
		return false, err
	}
	ttlMS := max(ttl.Milliseconds(), 1)
	keys := []string{r.presenceNodesKey(), r.presenceNodePrefix() + node}
	fresh := false
	for first := true; first || len(counts) > 0; first = false {
		chunk := counts[:min(len(counts), presenceChunk)]
		counts = counts[len(chunk):]
		args := make([]any, 0, 2+3*len(chunk))
		args = append(args, node, ttlMS)
		for _, c := range chunk {
			users := ""
			if c.Connections > 0 && len(c.Users) > 0 {
				b, err := json.Marshal(c.Users)
				if err != nil {
					return false, err
				}
				users = string(b)
			}
			args = append(args, c.Key, max(c.Connections, 0), users)
		}
		added, err := publishPresenceScript.Run(ctx, r.c, keys, args...).Int()
		if err != nil {
			return false, r.wrap(err)
		}
		fresh = fresh || added == 1
	}
	return fresh, nil
}

// PresenceOf implements Presence.
func (r *Redis) PresenceOf(ctx context.Context, node string, keys []string) ([]PresenceCount, error) {
	if err := r.begin(ctx); err != nil {
		return nil, err
	}
	out := make([]PresenceCount, len(keys))
	for i, k := range keys {
		out[i].Key = k
	}
	for base := 0; base < len(keys); base += presenceChunk {
		chunk := keys[base:min(len(keys), base+presenceChunk)]
		args := make([]any, 0, 2+2*len(chunk))
		args = append(args, node, r.presenceNodePrefix())
		for _, k := range chunk {
			args = append(args, "c:"+k, "u:"+k)
		}
		res, err := presenceOfScript.Run(ctx, r.c, []string{r.presenceNodesKey()}, args...).Slice()
		if err != nil {
			return nil, r.wrap(err)
		}
		users := make([]map[string]struct{}, len(chunk))
		for _, nodeVals := range res {
			vals, ok := nodeVals.([]any)
			if !ok || len(vals) != 2*len(chunk) {
				return nil, fmt.Errorf("store: redis: presence: unexpected reply %T", nodeVals)
			}
			for i := range chunk {
				if s, ok := vals[2*i].(string); ok {
					n, err := strconv.Atoi(s)
					if err != nil {
						return nil, fmt.Errorf("store: redis: presence count of %q: %w", chunk[i], err)
					}
					out[base+i].Connections += n
				}
				s, ok := vals[2*i+1].(string)
				if !ok {
					continue
				}
				var us []string
				if err := json.Unmarshal([]byte(s), &us); err != nil {
					return nil, fmt.Errorf("store: redis: presence users of %q: %w", chunk[i], err)
				}
				if users[i] == nil {
					users[i] = map[string]struct{}{}
				}
				for _, u := range us {
					users[i][u] = struct{}{}
				}
			}
		}
		for i, us := range users {
			if len(us) == 0 {
				continue
			}
			list := make([]string, 0, len(us))
			for u := range us {
				list = append(list, u)
			}
			slices.Sort(list)
			out[base+i].Users = list
		}
	}
	return out, nil
}

// LeavePresence implements Presence.
func (r *Redis) LeavePresence(ctx context.Context, node string) error {
	if err := r.begin(ctx); err != nil {
		return err
	}
	_, err := r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRem(ctx, r.presenceNodesKey(), node)
		p.Del(ctx, r.presenceNodePrefix()+node)
		return nil
	})
	return r.wrap(err)
}
