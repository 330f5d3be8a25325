package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
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
//	pT:presence:feed      stream: which keys' presence changed, one entry
//	                      (field k: the keys, joined by "\n") per publish
//	                      that changed any and per dead node removed (its
//	                      keys), MAXLEN ~ 10,000. Nodes read it after their
//	                      cursor to learn which keys other nodes changed.
//
// Readers use Redis's clock (TIME inside the scripts), so nodes with skewed
// clocks agree on who is alive. A node past its deadline is ignored by
// every reader at once, and removed (ZREM + DEL) by the first read that
// sees it dead.

var _ Presence = (*Redis)(nil)

func (r *Redis) presenceNodesKey() string { return r.prefix + redisTag + ":presence:nodes" }
func (r *Redis) presenceFeedKey() string  { return r.prefix + redisTag + ":presence:feed" }
func (r *Redis) presenceNodePrefix() string {
	return r.prefix + redisTag + ":presence:n:"
}

// presenceReapLua removes the nodes whose deadline passed (KEYS[1] the
// nodes set, KEYS[2] the change feed, ARGV[1] the node hash prefix) and
// adds the keys they held to the change feed, so that every node learns
// which keys a dead node's streams left. It sets now.
const presenceReapLua = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)) do
  local keys = {}
  for _, f in ipairs(redis.call('HKEYS', ARGV[1] .. n)) do
    if string.sub(f, 1, 2) == 'c:' then keys[#keys + 1] = string.sub(f, 3) end
  end
  if #keys > 0 then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', 10000, '*', 'k', table.concat(keys, '\n'))
  end
  redis.call('ZREM', KEYS[1], n)
  redis.call('DEL', ARGV[1] .. n)
end
`

// publishPresenceScript: KEYS[1] the nodes set, KEYS[2] the node's hash,
// KEYS[3] the change feed;
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
if #ARGV > 2 then
  local keys = {}
  for i = 3, #ARGV, 3 do keys[#keys + 1] = ARGV[i] end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', 10000, '*', 'k', table.concat(keys, '\n'))
end
return redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
`)

// presenceOfScript: KEYS[1] the nodes set, KEYS[2] the change feed;
// ARGV[1] the node hash prefix, ARGV[2] the asking node, ARGV[3..] the
// fields to read. Removes the dead nodes, then returns HMGET of the fields
// from every other live node.
var presenceOfScript = redis.NewScript(presenceReapLua + `
local out = {}
for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
  if n ~= ARGV[2] then
    out[#out + 1] = redis.call('HMGET', ARGV[1] .. n, unpack(ARGV, 3))
  end
end
return out
`)

// presenceChangesScript: KEYS[1] the nodes set, KEYS[2] the change feed;
// ARGV[1] the node hash prefix, ARGV[2] the cursor ("" = the end), ARGV[3]
// the most entries to return. Removes the dead nodes, then returns
// {next cursor, lost (1 if entries after the cursor were trimmed), keys...}.
var presenceChangesScript = redis.NewScript(presenceReapLua + `
local function older(a, b)
  local am, as = string.match(a, '(%d+)-(%d+)')
  local bm, bs = string.match(b, '(%d+)-(%d+)')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
if ARGV[2] == '' then
  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  if #last == 0 then return {'0-0', 0} end
  return {last[1][1], 0}
end
local lost = 0
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #first > 0 and ARGV[2] ~= '0-0' and older(ARGV[2], first[1][1]) then
  -- the entry right after the cursor may be gone: entries are trimmed
  -- from the start, so the first one being newer than the cursor says
  -- at most that some were
  local info = redis.call('XINFO', 'STREAM', KEYS[2])
  for i = 1, #info, 2 do
    if info[i] == 'max-deleted-entry-id' and older(ARGV[2], info[i + 1]) then lost = 1 end
  end
end
local out = {ARGV[2], lost}
local entries = redis.call('XRANGE', KEYS[2], '(' .. ARGV[2], '+', 'COUNT', tonumber(ARGV[3]))
for _, e in ipairs(entries) do
  out[1] = e[1]
  out[#out + 1] = e[2][2]
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
	keys := []string{r.presenceNodesKey(), r.presenceNodePrefix() + node, r.presenceFeedKey()}
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
		args = append(args, r.presenceNodePrefix(), node)
		for _, k := range chunk {
			args = append(args, "c:"+k, "u:"+k)
		}
		res, err := presenceOfScript.Run(ctx, r.c, []string{r.presenceNodesKey(), r.presenceFeedKey()}, args...).Slice()
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

// presenceChangesPage bounds the change-feed entries of one call.
const presenceChangesPage = 1000

// PresenceChanges implements Presence.
func (r *Redis) PresenceChanges(ctx context.Context, cursor string) ([]string, string, bool, error) {
	if err := r.begin(ctx); err != nil {
		return nil, cursor, false, err
	}
	seen := map[string]struct{}{}
	var keys []string
	lost := false
	for {
		res, err := presenceChangesScript.Run(ctx, r.c, []string{r.presenceNodesKey(), r.presenceFeedKey()},
			r.presenceNodePrefix(), cursor, presenceChangesPage).Slice()
		if err != nil {
			return nil, cursor, false, r.wrap(err)
		}
		if len(res) < 2 {
			return nil, cursor, false, fmt.Errorf("store: redis: presence changes: short reply")
		}
		next, _ := res[0].(string)
		if n, _ := res[1].(int64); n == 1 {
			lost = true
		}
		for _, v := range res[2:] {
			s, _ := v.(string)
			for _, k := range strings.Split(s, "\n") {
				if _, dup := seen[k]; !dup && k != "" {
					seen[k] = struct{}{}
					keys = append(keys, k)
				}
			}
		}
		done := cursor == "" || len(res)-2 < presenceChangesPage
		cursor = next
		if done {
			return keys, cursor, lost, nil
		}
	}
}

// leavePresenceScript: KEYS[1] the nodes set, KEYS[2] the change feed,
// KEYS[3] the node's hash; ARGV[1] the node. Removes the node and adds the
// keys it held to the change feed.
var leavePresenceScript = redis.NewScript(`
local keys = {}
for _, f in ipairs(redis.call('HKEYS', KEYS[3])) do
  if string.sub(f, 1, 2) == 'c:' then keys[#keys + 1] = string.sub(f, 3) end
end
if #keys > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', 10000, '*', 'k', table.concat(keys, '\n'))
end
redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('DEL', KEYS[3])
`)

// LeavePresence implements Presence.
func (r *Redis) LeavePresence(ctx context.Context, node string) error {
	if err := r.begin(ctx); err != nil {
		return err
	}
	keys := []string{r.presenceNodesKey(), r.presenceFeedKey(), r.presenceNodePrefix() + node}
	return r.wrap(leavePresenceScript.Run(ctx, r.c, keys, node).Err())
}
