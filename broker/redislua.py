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
- zc:feed (stream, the notices every broker reads: user, seen, online, offline) and zc:feed:<id>
  (stream, broker <id>'s own: mail for its sessions, dup for its commits); fields k kind, o origin
  broker id, n the entry's number in its stream (1, 2, 3 ...: a reader that finds a number
  skipped knows entries were trimmed before it read them), b notice JSON; MAXLEN ~ FEED_MAXLEN
- zc:online (hash user -> OnlineNotice JSON), zc:broker:<id> (liveness, expires), zc:brokers (set)
- zc:applied:<id> (the number of broker <id>'s newest commit applied; expires a day after it)

Numbers that become keys, members or stream ids (mail ids, seqs) travel as decimal strings or are
formatted with %d: Lua's own number-to-string conversion may write an exponent. A script that finds
zc:epoch changed answers the error `EPOCH ...` and writes nothing.
"""

from __future__ import annotations

FEED_MAXLEN = 100_000
"""Entries each feed stream (zc:feed, zc:feed:<id>) keeps (about: XTRIM MAXLEN ~). A broker that
falls further behind loses notices (its backplane reports FeedLost)."""

PRUNE_SENDS = 1000
"""Send ids one commit forgets at most (the rest by the next commits)."""

_EPOCH = """
if redis.call('GET', 'zc:epoch') ~= ARGV[1] then
  return redis.error_reply('EPOCH the store holds another epoch than this broker loaded (its data was lost or replaced)')
end
"""

_MAXLEN_LINE = f"local FEED_MAXLEN = {FEED_MAXLEN}\n"

_LAST = """
local function last_entry(stream)  -- the id of the newest entry of `stream` and its number n ('0-0', 0: none)
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
  if not last then return '0-0', 0 end
  local f = last[2]
  for i = 1, #f, 2 do
    if f[i] == 'n' then return last[1], tonumber(f[i + 1]) end
  end
  return last[1], -1  -- (an entry without a number: written before entries had one)
end
"""

_FEED = _LAST + _MAXLEN_LINE + """
local fed = {}  -- stream -> the number of its newest entry, for each stream this script added to
local function feed(stream, kind, origin, body)  -- (XADD ... MAXLEN ~ costs 40 % more than one XTRIM per script)
  local n = fed[stream]
  if not n then
    local _, last = last_entry(stream)
    n = math.max(last, 0)
  end
  n = n + 1
  redis.call('XADD', stream, '*', 'k', kind, 'o', origin, 'n', string.format('%d', n), 'b', body)
  fed[stream] = n
end
local function trim_feed()
  for stream in pairs(fed) do redis.call('XTRIM', stream, 'MAXLEN', '~', FEED_MAXLEN) end
end
"""


def with_feed_maxlen(script: str, maxlen: int) -> str:
    """`script` (one of this module's) trimming the feed streams to about `maxlen` entries instead
    of FEED_MAXLEN (tests make a reader fall behind a short one)."""
    return script.replace(_MAXLEN_LINE, f"local FEED_MAXLEN = {int(maxlen)}\n", 1)


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
-- Mail notices go to zc:feed:<b> of the broker b that zc:online names for the recipient, if b is
-- another live broker (in zc:brokers; a closed or reaped broker's stream is not made again), else
-- none: the recipient is online nowhere else and its next login reads the mailbox (a login commits
-- its online notice before it reads). dup notices go to zc:feed:<origin>; the rest to zc:feed.
-- Returns {{more, dup...}}: more 1 when send ids older than the prune's time are left (more than
-- {PRUNE_SENDS}), else 0, or -1 when this commit number was applied already (a retry whose first
-- reply was lost): nothing written; then the 1-based indexes (in b[2]) of the sends found stored
-- already (by another broker: none of their mail or events was written).
local origin = ARGV[2]
local applied_key = 'zc:applied:' .. origin
if tonumber(redis.call('GET', applied_key) or '0') >= tonumber(ARGV[3]) then return {{-1}} end
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
  if redis.call('HSETNX', 'zc:users', u[1], u[2]) == 1 then feed('zc:feed', 'user', origin, u[3]) end
end
local dup, times, result = {{}}, {{}}, {{0}}
for i, s in ipairs(b[2]) do
  if redis.call('HSETNX', 'zc:sends:' .. s[1], s[2], s[4]) == 0 then
    dup[i] = true
    result[#result + 1] = i
    local stored = redis.call('HGET', 'zc:sends:' .. s[1], s[2])
    feed('zc:feed:' .. origin, 'dup', origin, cjson.encode({{sender = s[1], cid = s[2], reply = stored}}))
  else
    times[#times + 1] = s[3]; times[#times + 1] = s[1] .. '\\n' .. s[2]
  end
end
bulk('ZADD', 'zc:sendts', times)
local where, live = {{}}, {{}}  -- recipient -> its broker's feed stream or false; broker id -> in zc:brokers
local function mail_stream(to)
  local stream = where[to]
  if stream == nil then
    stream = false
    local cur = redis.call('HGET', 'zc:online', to)  -- OnlineNotice JSON: {{"user":..,"broker":"<id>",..}}
    local broker = cur and string.match(cur, '"broker":"([^"]*)"')
    if broker and broker ~= origin then  -- (this broker pushes to its own sessions itself)
      if live[broker] == nil then live[broker] = redis.call('SISMEMBER', 'zc:brokers', broker) == 1 end
      if live[broker] then stream = 'zc:feed:' .. broker end
    end
    where[to] = stream
  end
  return stream
end
local rows, ids, counts = {{}}, {{}}, {{}}
for _, x in ipairs(b[3]) do
  if not dup[x[4]] then
    push(rows, x[1], x[2], x[3]); push(ids, x[1], x[2], x[2])
    counts[x[1]] = (counts[x[1]] or 0) + 1
    local stream = mail_stream(x[1])
    if stream then feed(stream, 'mail', origin, '{{"msg":' .. x[3] .. '}}') end
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
  end
end
for _, x in ipairs(b[6]) do
  if redis.call('HEXISTS', 'zc:users', x[1]) == 1 then
    redis.call('HSET', 'zc:seen', x[1], x[2])
    feed('zc:feed', 'seen', origin, x[3])
  end
end
for _, n in ipairs(b[7]) do
  feed('zc:feed', n[1], origin, n[4])
  if n[1] == 'online' then  -- the later login stays, by (since, broker) as in broker.remote
    local cur = redis.call('HGET', 'zc:online', n[2])
    local older = false
    if cur then
      local c, new = cjson.decode(cur), cjson.decode(n[4])
      older = c.broker ~= new.broker and (c.since > new.since or (c.since == new.since and c.broker > new.broker))
    end
    if not older then redis.call('HSET', 'zc:online', n[2], n[4]) end
    redis.call('SADD', 'zc:brokers', origin)  -- (its backplane does too; a login may come first)
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
  if #old == {PRUNE_SENDS} then result[1] = 1 end
end
return result
"""

_STATE = """
local function state()  -- {users (flat hash), seen (flat hash), seq, mcount (flat hash), online (flat hash)}
  return {redis.call('HGETALL', 'zc:users'), redis.call('HGETALL', 'zc:seen'), redis.call('GET', 'zc:seq') or '0',
          redis.call('HGETALL', 'zc:mcount'), redis.call('HGETALL', 'zc:online')}
end
"""

LOAD = _LAST + _STATE + """
-- ARGV: epoch to set if there is none, mail ids to lease, sends since (seconds), send ids at most,
--       the loading broker's id
-- Returns {epoch, state() (see there), lease high end, sends {member, ts, reply, ...} newest first,
--          {zc:feed's newest entry id, its number, zc:feed:<id>'s newest entry id, its number}}
redis.call('SET', 'zc:epoch', ARGV[1], 'NX')
local out = {redis.call('GET', 'zc:epoch'), state(), redis.call('INCRBY', 'zc:mailid', ARGV[2])}
local ids = redis.call('ZREVRANGEBYSCORE', 'zc:sendts', '+inf', ARGV[3], 'WITHSCORES', 'LIMIT', 0, ARGV[4])
local sends = {}
for i = 1, #ids, 2 do
  local nl = string.find(ids[i], '\\n', 1, true)
  local reply = redis.call('HGET', 'zc:sends:' .. string.sub(ids[i], 1, nl - 1), string.sub(ids[i], nl + 1))
  if reply then
    sends[#sends + 1] = ids[i]; sends[#sends + 1] = ids[i + 1]; sends[#sends + 1] = reply
  end
end
out[4] = sends
local feed_id, feed_n = last_entry('zc:feed')
local own_id, own_n = last_entry('zc:feed:' .. ARGV[5])
out[5] = {feed_id, feed_n, own_id, own_n}
return out
"""

REFRESH = _EPOCH + _STATE + """
-- ARGV: epoch. Returns state() (see there): what load() reads of the others' state, without a lease.
return state()
"""

CLAIM_USER = _EPOCH + _FEED + """
-- ARGV: epoch, origin broker id, name, UserRecord JSON, UserNotice JSON. Returns 1 (stored) or 0 (taken).
-- A retry of a claim whose reply was lost finds its own record (the same hash and salt): 1 again.
if redis.call('HSETNX', 'zc:users', ARGV[3], ARGV[4]) == 0 then
  if redis.call('HGET', 'zc:users', ARGV[3]) == ARGV[4] then return 1 end
  return 0
end
feed('zc:feed', 'user', ARGV[2], ARGV[5])
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
-- so that every live broker (the reaper too) reads them; its own stream zc:feed:<dead> is deleted.
-- Returns the sessions ended, or -1.
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
    feed('zc:feed', 'seen', dead, '{"user":' .. cjson.encode(user) .. ',"when":' .. now .. ',"hidden":' .. hidden
         .. ',"last_seq":' .. seq .. '}')
    feed('zc:feed', 'offline', dead, ARGV[i + 4])
    n = n + 1
  end
end
redis.call('SREM', 'zc:brokers', dead)
redis.call('DEL', 'zc:feed:' .. dead)
trim_feed()
return n
"""
