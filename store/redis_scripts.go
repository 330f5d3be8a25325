package store

import "github.com/redis/go-redis/v9"

// The Lua scripts of the Redis store. Each runs atomically on the server, so
// no other client (no other sseloop node) sees a half-done write. Every key a
// script touches is passed in KEYS (Redis Cluster needs that); numbers go
// through string.format('%d') because Lua's tostring would print large ids
// in exponent notation. Event times are compared as numbers: unix milliseconds
// are far below 2^53, so Lua's doubles hold them exactly.

// appendScript appends one batch.
//
//	KEYS[1] meta, KEYS[2] feed, KEYS[3] key set, then for the j-th distinct
//	        key of the batch (j from 1): KEYS[2+2j] history, KEYS[3+2j]
//	        dropped
//	ARGV[1] now (ms), ARGV[2] MaxEvents, ARGV[3] feed length, ARGV[4] number
//	        of distinct keys n, ARGV[5] the lowest id a new incarnation may
//	        start at (the highest id this node knows of, plus 1),
//	        ARGV[6..5+n] the keys, then per event: the index j of its key,
//	        its name, its data
//
// It returns {first id, time}: the batch got ids first, first+1, ... in
// order; {0, 0} if the ids would pass 2^53-1.
var appendScript = redis.NewScript(`
local meta, feed, keyset = KEYS[1], KEYS[2], KEYS[3]
local now = tonumber(ARGV[1])
local maxev = tonumber(ARGV[2])
local nkeys = tonumber(ARGV[4])
local base = 5 + nkeys
local nev = (#ARGV - base) / 3

local t = redis.call('HGET', meta, 'time')
if t and tonumber(t) > now then now = tonumber(t) end
local nowS = string.format('%d', now)
` + incarnationLua + `
local first = tonumber(redis.call('HGET', meta, 'id')) + 1
if first + nev - 1 > 9007199254740991 then return {0, 0} end
redis.call('HINCRBY', meta, 'id', nev)
redis.call('HSET', meta, 'time', nowS)

for i = 0, nev - 1 do
  local j = tonumber(ARGV[base + 1 + 3 * i])
  local name, data = ARGV[base + 2 + 3 * i], ARGV[base + 3 + 3 * i]
  local id = string.format('%d', first + i)
  local sid = id .. '-0'
  redis.call('XADD', feed, sid, 'k', ARGV[5 + j], 't', nowS, 'n', name, 'd', data)
  redis.call('XADD', KEYS[2 + 2 * j], sid, 't', nowS, 'n', name, 'd', data)
end
redis.call('XTRIM', feed, 'MAXLEN', '~', ARGV[3])

local floor = nil
for j = 1, nkeys do
  local h, d = KEYS[2 + 2 * j], KEYS[3 + 2 * j]
  local dropped = redis.call('GET', d)
  if not dropped then
    -- A new key starts where the sweeper left off (see Retention).
    if not floor then floor = redis.call('HGET', meta, 'floor') or '0' end
    dropped = floor
    redis.call('SET', d, dropped)
  end
  local len = redis.call('XLEN', h)
  if len > maxev then
    local old = redis.call('XRANGE', h, '-', '+', 'COUNT', len - maxev)
    local ids = {}
    for _, e in ipairs(old) do
      ids[#ids + 1] = e[1]
      if #ids == 500 then
        redis.call('XDEL', feed, unpack(ids))
        ids = {}
      end
    end
    if #ids > 0 then redis.call('XDEL', feed, unpack(ids)) end
    redis.call('XTRIM', h, 'MAXLEN', maxev)
    local last = string.sub(old[#old][1], 1, -3)
    if tonumber(last) > tonumber(dropped) then redis.call('SET', d, last) end
  end
  local o = redis.call('XRANGE', h, '-', '+', 'COUNT', 1)
  redis.call('ZADD', keyset, o[1][2][2], ARGV[5 + j])
end
return {first, now}
`)

// incarnationLua starts a new incarnation when the meta hash is gone (a new
// or wiped Redis) or went back below an id this node saw (a failover that
// lost writes, a restart that lost the end of the append-only file): ids
// from max(ARGV[5], now*1000), that id as the epoch. A meta hash from before
// epochs existed gets epoch 1 (its ids began at 1). It needs the
// locals meta, feed and now, and the lowest start in ARGV[5].
const incarnationLua = `
local cur = redis.call('HGET', meta, 'id')
if not cur or tonumber(ARGV[5]) > tonumber(cur) + 1 then
  local start = math.max(tonumber(ARGV[5]), now * 1000)
  -- A feed that survived its meta (eviction) only takes ids above its last
  -- one, even a deleted one.
  if redis.call('EXISTS', feed) == 1 then
    local info = redis.call('XINFO', 'STREAM', feed)
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then
        local last = tonumber(string.match(info[i + 1], '^(%d+)'))
        if last and last + 1 > start then start = last + 1 end
      end
    end
  end
  redis.call('HSET', meta, 'id', string.format('%d', start - 1), 'epoch', string.format('%d', start),
    'time', string.format('%d', now))
elseif redis.call('HEXISTS', meta, 'epoch') == 0 then
  redis.call('HSET', meta, 'epoch', '1')
end
`

// initScript starts an incarnation if there is none (see incarnationLua), so
// that LastID is the id before the next one from the start.
//
//	KEYS[1] meta, KEYS[2] feed
//	ARGV[1] now (ms), ARGV[2]-ARGV[4] unused, ARGV[5] the lowest start id
//
// It returns {epoch, last id}.
var initScript = redis.NewScript(`
local meta, feed = KEYS[1], KEYS[2]
local now = tonumber(ARGV[1])
` + incarnationLua + `
return {tonumber(redis.call('HGET', meta, 'epoch')), tonumber(redis.call('HGET', meta, 'id'))}
`)

// sweepScript removes the expired events of some keys.
//
//	KEYS[1] meta, KEYS[2] key set, then for the j-th key (j from 1):
//	        KEYS[1+2j] history, KEYS[2+2j] dropped
//	ARGV[1] cutoff (ms; events at or before it are expired), then the keys
//
// It returns the number of events removed.
var sweepScript = redis.NewScript(`
local meta, keyset = KEYS[1], KEYS[2]
local cutoff = tonumber(ARGV[1])
local floor0 = tonumber(redis.call('HGET', meta, 'floor') or '0')
local floor = floor0
local removed = 0
for j = 1, #ARGV - 1 do
  local key = ARGV[j + 1]
  local h, d = KEYS[1 + 2 * j], KEYS[2 + 2 * j]
  local dropped = tonumber(redis.call('GET', d) or '0')
  local start, last = '-', nil
  while true do
    local es = redis.call('XRANGE', h, start, '+', 'COUNT', 100)
    local done = #es < 100
    for _, e in ipairs(es) do
      if tonumber(e[2][2]) > cutoff then
        done = true
        break
      end
      last = e[1]
    end
    if done then break end
    start = '(' .. last
  end
  if last then
    local lastID = tonumber(string.sub(last, 1, -3))
    removed = removed + redis.call('XTRIM', h, 'MINID', string.format('%d-0', lastID + 1))
    if lastID > dropped then dropped = lastID end
  end
  local o = redis.call('XRANGE', h, '-', '+', 'COUNT', 1)
  if #o == 0 then
    if dropped > floor then floor = dropped end
    redis.call('DEL', h, d)
    redis.call('ZREM', keyset, key)
  else
    redis.call('SET', d, string.format('%d', dropped))
    redis.call('ZADD', keyset, o[1][2][2], key)
  end
end
if floor > floor0 then redis.call('HSET', meta, 'floor', string.format('%d', floor)) end
return removed
`)

// feedSweepScript trims the expired entries from the start of the feed.
//
//	KEYS[1] feed
//	ARGV[1] cutoff (ms; events at or before it are expired), ARGV[2] the
//	        most entries to remove
//
// It returns the number of entries removed.
var feedSweepScript = redis.NewScript(`
local cutoff, most = tonumber(ARGV[1]), tonumber(ARGV[2])
local start, last, seen = '-', nil, 0
while seen < most do
  local es = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', math.min(100, most - seen))
  local done = #es == 0
  for _, e in ipairs(es) do
    if tonumber(e[2][4]) > cutoff then
      done = true
      break
    end
    last = e[1]
    seen = seen + 1
  end
  if done then break end
  start = '(' .. last
end
if not last then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-0', tonumber(string.sub(last, 1, -3)) + 1))
`)

// retentionScript reports the retention of some keys.
//
//	KEYS[1] meta, then for the j-th key (j from 1): KEYS[2j] history,
//	        KEYS[2j+1] dropped
//	ARGV[1] cutoff (ms; events at or before it are expired)
//
// It returns {dropped, oldest entry id or "0", ...}, one pair per key. An
// expired event the sweeper has not removed yet counts as dropped.
var retentionScript = redis.NewScript(`
local cutoff = tonumber(ARGV[1])
local floor = redis.call('HGET', KEYS[1], 'floor') or '0'
local out = {}
for j = 1, (#KEYS - 1) / 2 do
  local h, d = KEYS[2 * j], KEYS[2 * j + 1]
  local dropped = redis.call('GET', d) or floor
  local oldest = '0'
  local start, count = '-', 1
  while true do
    local es = redis.call('XRANGE', h, start, '+', 'COUNT', count)
    local found = false
    for _, e in ipairs(es) do
      if tonumber(e[2][2]) > cutoff then
        oldest = e[1]
        found = true
        break
      end
      local id = string.sub(e[1], 1, -3)
      if tonumber(id) > tonumber(dropped) then dropped = id end
      start = '(' .. e[1]
    end
    if found or #es < count then break end
    count = 100
  end
  out[#out + 1] = dropped
  out[#out + 1] = oldest
end
return out
`)
