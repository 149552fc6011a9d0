"""The Lua scripts of the Redis store (broker.redisstore) and its backplane (broker.redisfeed).

Each script runs atomically in Redis (one EVALSHA, one round trip; with `appendfsync always` Redis
writes and fsyncs the append-only file before it replies). Keys (prefix `zc:`, one logical database
of the store's URL):

- zc:epoch (string, uuid4 hex), zc:seq (event counter), zc:mailid (mail id counter, leased)
- zc:users (hash name -> UserRecord JSON), zc:seen (hash name -> JSON [when, hidden, last_seq])
- zc:log (stream, entry id <seq>-0, field b = Event JSON whose seq is the entry's)
- zc:mbox:<user> (sorted set of mail ids), zc:mail:<user> (hash id -> PrivateMessage JSON),
  zc:mcount (hash user -> messages waiting)
- zc:sends:<sender> (hash cid -> first reply JSON), zc:sendts (sorted set `<sender>\\n<cid>` by ts)
- zc:feed (stream, fields k kind, o origin broker id, b notice JSON; MAXLEN ~ FEED_MAXLEN)
- zc:online (hash user -> OnlineNotice JSON), zc:broker:<id> (liveness, expires), zc:brokers (set)
- zc:applied:<id> (the number of broker <id>'s newest commit applied; expires a day after it)

Numbers that become keys, members or stream ids (mail ids, seqs) travel as decimal strings or are
formatted with %d: Lua's own number-to-string conversion may write an exponent. A script that finds
zc:epoch changed answers the error `EPOCH ...` and writes nothing.
"""

from __future__ import annotations

FEED_MAXLEN = 100_000
"""Entries zc:feed keeps (about: XADD MAXLEN ~). A broker that falls further behind loses notices."""

PRUNE_SENDS = 1000
"""Send ids one commit forgets at most (the rest by the next commits)."""

_EPOCH = """
if redis.call('GET', 'zc:epoch') ~= ARGV[1] then
  return redis.error_reply('EPOCH the store holds another epoch than this broker loaded (its data was lost or replaced)')
end
"""

_FEED = f"""
local fed = 0
local function feed(kind, origin, body)  -- (XADD ... MAXLEN ~ costs 40 % more than one XTRIM per script)
  redis.call('XADD', 'zc:feed', '*', 'k', kind, 'o', origin, 'b', body)
  fed = fed + 1
end
local function trim_feed()
  if fed > 0 then redis.call('XTRIM', 'zc:feed', 'MAXLEN', '~', {FEED_MAXLEN}) end
end
"""

APPLIED_TTL = 86_400
"""Seconds zc:applied:<broker id> lives after the broker's last commit (a day)."""

COMMIT = _EPOCH + _FEED + f"""
-- ARGV: epoch, origin broker id, commit number (1, 2, 3 ... per broker id),
--       msgpack [users, sends, mail, events, acks, seen, notices, prune]
--   users   {{name, UserRecord JSON, UserNotice JSON}}
--   sends   {{sender, cid, ts, reply JSON}}                 (their index i is 1-based)
--   mail    {{to, id (decimal string), PrivateMessage JSON, send index or 0}}
--   events  {{Event JSON with seq 0 (or any), send index or 0}}
--   acks    {{name, {{id (decimal string), ...}}}}
--   seen    {{name, JSON [when, hidden, last_seq], SeenNotice JSON}}
--   notices {{kind 'online' or 'offline', user, broker, notice JSON}}
--   prune   {{}} or {{events to keep, forget send ids with ts below}}
-- Returns 1 when send ids older than the prune's time are left (more than {PRUNE_SENDS}), else 0;
-- -1 when this commit number was applied already (a retry whose first reply was lost): nothing written.
local origin = ARGV[2]
local applied_key = 'zc:applied:' .. origin
if tonumber(redis.call('GET', applied_key) or '0') >= tonumber(ARGV[3]) then return -1 end
local b = cmsgpack.unpack(ARGV[4])
local function bulk(cmd, key, args)  -- cmd key args... in calls of at most 1000 args (pairs stay whole)
  local n = 0
  for first = 1, #args, 1000 do
    n = n + redis.call(cmd, key, unpack(args, first, math.min(first + 999, #args)))
  end
  return n
end
local function push(groups, key, x, y)  -- append x, y to the list groups[key]
  local g = groups[key]
  if not g then g = {{}}; groups[key] = g end
  g[#g + 1] = x; g[#g + 1] = y
end
for _, u in ipairs(b[1]) do
  if redis.call('HSETNX', 'zc:users', u[1], u[2]) == 1 then feed('user', origin, u[3]) end
end
local dup, times = {{}}, {{}}
for i, s in ipairs(b[2]) do
  if redis.call('HSETNX', 'zc:sends:' .. s[1], s[2], s[4]) == 0 then
    dup[i] = true
    local stored = redis.call('HGET', 'zc:sends:' .. s[1], s[2])
    feed('dup', origin, cjson.encode({{sender = s[1], cid = s[2], reply = stored}}))
  else
    times[#times + 1] = s[3]; times[#times + 1] = s[1] .. '\\n' .. s[2]
  end
end
bulk('ZADD', 'zc:sendts', times)
local rows, ids, counts = {{}}, {{}}, {{}}
for _, x in ipairs(b[3]) do
  if not dup[x[4]] then
    push(rows, x[1], x[2], x[3]); push(ids, x[1], x[2], x[2])
    counts[x[1]] = (counts[x[1]] or 0) + 1
    feed('mail', origin, '{{"msg":' .. x[3] .. '}}')
  end
end
for to, n in pairs(counts) do  -- (any order: scripts replicate their effects)
  bulk('HSET', 'zc:mail:' .. to, rows[to])
  bulk('ZADD', 'zc:mbox:' .. to, ids[to])
  redis.call('HINCRBY', 'zc:mcount', to, n)
end
for _, e in ipairs(b[4]) do
  if not dup[e[2]] then
    local seq = string.format('%d', redis.call('INCR', 'zc:seq'))
    local body = string.gsub(e[1], '^{{"seq":%d+,', '{{"seq":' .. seq .. ',', 1)
    redis.call('XADD', 'zc:log', seq .. '-0', 'b', body)
    local s = b[2][e[2]]
    if s then
      local reply = string.gsub(s[4], '"seq":0([,}}])', '"seq":' .. seq .. '%1', 1)
      redis.call('HSET', 'zc:sends:' .. s[1], s[2], reply)
    end
  end
end
for _, a in ipairs(b[5]) do  -- the mailbox's sorted set and hash hold the same ids
  local removed = bulk('ZREM', 'zc:mbox:' .. a[1], a[2])
  if removed > 0 then
    bulk('HDEL', 'zc:mail:' .. a[1], a[2])
    if redis.call('HINCRBY', 'zc:mcount', a[1], -removed) <= 0 then redis.call('HDEL', 'zc:mcount', a[1]) end
    feed('ack', origin, cjson.encode({{user = a[1], removed = removed}}))
  end
end
for _, x in ipairs(b[6]) do
  if redis.call('HEXISTS', 'zc:users', x[1]) == 1 then
    redis.call('HSET', 'zc:seen', x[1], x[2])
    feed('seen', origin, x[3])
  end
end
for _, n in ipairs(b[7]) do
  feed(n[1], origin, n[4])
  if n[1] == 'online' then
    redis.call('HSET', 'zc:online', n[2], n[4])
  else
    local cur = redis.call('HGET', 'zc:online', n[2])
    if cur and cjson.decode(cur).broker == n[3] then redis.call('HDEL', 'zc:online', n[2]) end
  end
end
trim_feed()
redis.call('SET', applied_key, ARGV[3], 'EX', {APPLIED_TTL})
local p = b[8]
if p[1] then
  local minid = tonumber(redis.call('GET', 'zc:seq') or '0') - p[1] + 1
  if minid > 1 then redis.call('XTRIM', 'zc:log', 'MINID', string.format('%d', minid)) end
  local old = redis.call('ZRANGEBYSCORE', 'zc:sendts', '-inf', '(' .. string.format('%.17g', p[2]),
                         'LIMIT', 0, {PRUNE_SENDS})
  for _, member in ipairs(old) do
    local nl = string.find(member, '\\n', 1, true)
    redis.call('HDEL', 'zc:sends:' .. string.sub(member, 1, nl - 1), string.sub(member, nl + 1))
    redis.call('ZREM', 'zc:sendts', member)
  end
  if #old == {PRUNE_SENDS} then return 1 end
end
return 0
"""

LOAD = """
-- ARGV: epoch to set if there is none, mail ids to lease, sends since (seconds), send ids at most
-- Returns {epoch, users (flat hash), seen (flat hash), seq, lease high end, mcount (flat hash),
--          sends {member, ts, reply, ...} newest first, online (flat hash), feed's last entry id}
redis.call('SET', 'zc:epoch', ARGV[1], 'NX')
local out = {redis.call('GET', 'zc:epoch'), redis.call('HGETALL', 'zc:users'), redis.call('HGETALL', 'zc:seen'),
             redis.call('GET', 'zc:seq') or '0', redis.call('INCRBY', 'zc:mailid', ARGV[2]),
             redis.call('HGETALL', 'zc:mcount')}
local ids = redis.call('ZREVRANGEBYSCORE', 'zc:sendts', '+inf', ARGV[3], 'WITHSCORES', 'LIMIT', 0, ARGV[4])
local sends = {}
for i = 1, #ids, 2 do
  local nl = string.find(ids[i], '\\n', 1, true)
  local reply = redis.call('HGET', 'zc:sends:' .. string.sub(ids[i], 1, nl - 1), string.sub(ids[i], nl + 1))
  if reply then
    sends[#sends + 1] = ids[i]; sends[#sends + 1] = ids[i + 1]; sends[#sends + 1] = reply
  end
end
out[7] = sends
out[8] = redis.call('HGETALL', 'zc:online')
local last = redis.call('XREVRANGE', 'zc:feed', '+', '-', 'COUNT', 1)
out[9] = last[1] and last[1][1] or '0-0'
return out
"""

CLAIM_USER = _EPOCH + _FEED + """
-- ARGV: epoch, origin broker id, name, UserRecord JSON, UserNotice JSON. Returns 1 (stored) or 0 (taken).
-- A retry of a claim whose reply was lost finds its own record (the same hash and salt): 1 again.
if redis.call('HSETNX', 'zc:users', ARGV[3], ARGV[4]) == 0 then
  if redis.call('HGET', 'zc:users', ARGV[3]) == ARGV[4] then return 1 end
  return 0
end
feed('user', ARGV[2], ARGV[5])
trim_feed()
return 1
"""

MAIL_AFTER = """
-- ARGV: recipient, after id, limit. Returns the PrivateMessage JSON of the ids found, oldest first.
local ids = redis.call('ZRANGEBYSCORE', 'zc:mbox:' .. ARGV[1], '(' .. ARGV[2], '+inf', 'LIMIT', 0, ARGV[3])
local out = {}
for first = 1, #ids, 1000 do
  local rows = redis.call('HMGET', 'zc:mail:' .. ARGV[1], unpack(ids, first, math.min(first + 999, #ids)))
  for _, row in ipairs(rows) do out[#out + 1] = row end
end
return out
"""

TICK = _EPOCH + """
-- ARGV: epoch, this broker's id, liveness in ms. Keeps this broker alive; returns the ids in
-- zc:brokers whose liveness key is gone (dead brokers, to reap).
redis.call('SET', 'zc:broker:' .. ARGV[2], '1', 'PX', ARGV[3])
redis.call('SADD', 'zc:brokers', ARGV[2])
local dead = {}
for _, id in ipairs(redis.call('SMEMBERS', 'zc:brokers')) do
  if id ~= ARGV[2] and redis.call('EXISTS', 'zc:broker:' .. id) == 0 then dead[#dead + 1] = id end
end
return dead
"""

REAP = _EPOCH + _FEED + """
-- ARGV: epoch, dead broker id, now (seconds, as text), then per session seen on it: user, its
-- zc:online JSON as read, '1' if hidden else '0', presence `lost` Event JSON (seq 0), OfflineNotice JSON.
-- Only once per dead broker (it leaves zc:brokers here), only if it is still without liveness, and
-- only sessions whose zc:online entry is unchanged. Notices go out with the dead broker as origin,
-- so that every live broker (the reaper too) reads them. Returns the sessions ended, or -1.
local dead, now = ARGV[2], ARGV[3]
if redis.call('SISMEMBER', 'zc:brokers', dead) == 0 or redis.call('EXISTS', 'zc:broker:' .. dead) == 1 then
  return -1
end
local n = 0
for i = 4, #ARGV, 5 do
  local user = ARGV[i]
  if redis.call('HGET', 'zc:online', user) == ARGV[i + 1] then
    redis.call('HDEL', 'zc:online', user)
    local seq = redis.call('GET', 'zc:seq') or '0'
    local hidden = ARGV[i + 2] == '1' and 'true' or 'false'
    if hidden == 'false' then
      local s = string.format('%d', redis.call('INCR', 'zc:seq'))
      redis.call('XADD', 'zc:log', s .. '-0', 'b', (string.gsub(ARGV[i + 3], '^{"seq":%d+,', '{"seq":' .. s .. ',', 1)))
    end
    redis.call('HSET', 'zc:seen', user, '[' .. now .. ',' .. hidden .. ',' .. seq .. ']')
    feed('seen', dead, '{"user":' .. cjson.encode(user) .. ',"when":' .. now .. ',"hidden":' .. hidden
         .. ',"last_seq":' .. seq .. '}')
    feed('offline', dead, ARGV[i + 4])
    n = n + 1
  end
end
redis.call('SREM', 'zc:brokers', dead)
trim_feed()
return n
"""
