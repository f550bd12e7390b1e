"""The Lua scripts of RedisIdempotencyStore: one atomic step on one key
each, on Redis's clock."""

from __future__ import annotations

__all__ = [
    "IDEMPOTENCY_CLAIM",
    "IDEMPOTENCY_COMPLETE",
    "IDEMPOTENCY_RELEASE",
    "IDEMPOTENCY_RENEW",
]

# An idempotency key's entry (see _idempotency.py), in four scripts sharing
# this prelude. Times are whole microseconds of Redis's clock (TIME), so
# every process judges a lease by the same clock.
#
# KEYS[1]: the entry, a hash: st ('l' leased, 'c' completed), tk (the
#          token), and fp (the request's fingerprint) with dl (the lease's
#          deadline) while leased, or rec (the stored response) once
#          completed. It expires: a lease entry one lease after its deadline
#          (so a claim in between can say it took the key over), a record
#          with the record.
# KEYS[2]: the fencing counter, the last token given for the key. It outlives
#          the entry (a released key's next token must still be larger) and
#          expires too; a new token is also never below Redis's time in us,
#          so tokens keep growing after the counter has expired.
_IDEMPOTENCY_HEAD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local function fmt(x)
  return string.format('%.0f', x)
end

local function expire_all(ms)
  redis.call('PEXPIRE', KEYS[1], ms)
  -- The counter keeps whichever expiry is later: its own or the entry's.
  if redis.call('PTTL', KEYS[2]) < ms then
    redis.call('PEXPIRE', KEYS[2], ms)
  end
end
"""

# What renew, complete and release start with: nothing happens unless the
# key holds the live lease of token ARGV[1] (not released, completed, run
# out or taken over).
_FENCED_HEAD = (
    _IDEMPOTENCY_HEAD
    + """
local held = redis.pcall('HMGET', KEYS[1], 'st', 'tk', 'dl')
if type(held) ~= 'table' or held.err ~= nil or held[1] ~= 'l' or held[2] ~= ARGV[1]
   or tonumber(held[3]) == nil or now >= tonumber(held[3]) then
  return 0
end
"""
)

# ARGV: fingerprint, lease (us), a completed entry's token to treat as absent
#       ('' for none: the caller found its record corrupt).
# Returns {0, token, taken over (0/1), corrupt (0/1)}: a new lease;
#         {1, fingerprint, us left}: a live lease holds the key;
#         {2, record, ms left, token}: a stored response.
IDEMPOTENCY_CLAIM = (
    _IDEMPOTENCY_HEAD
    + """
local lease = tonumber(ARGV[2])
local taken, corrupt = 0, 0
local h = redis.pcall('HMGET', KEYS[1], 'st', 'tk', 'fp', 'dl', 'rec')
if type(h) ~= 'table' or h.err ~= nil then
  corrupt = 1  -- another type under our key (WRONGTYPE): overwritten
elseif h[1] == 'c' and type(h[2]) == 'string' and type(h[5]) == 'string' and h[2] ~= ARGV[3] then
  return {2, h[5], redis.call('PTTL', KEYS[1]), h[2]}
elseif h[1] == 'l' and type(h[3]) == 'string' and tonumber(h[4]) ~= nil then
  local dl = tonumber(h[4])
  if now < dl then
    return {1, h[3], dl - now}
  end
  taken = 1
elseif h[1] or h[2] or h[3] or h[4] or h[5] then
  corrupt = 1  -- not an entry of ours (or a record the caller could not read)
end
local token = now
local last = redis.pcall('GET', KEYS[2])
if type(last) == 'string' and tonumber(last) ~= nil and tonumber(last) >= token then
  token = tonumber(last) + 1
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'st', 'l', 'tk', fmt(token), 'fp', ARGV[1], 'dl', fmt(now + lease))
redis.call('SET', KEYS[2], fmt(token), 'KEEPTTL')
expire_all(math.ceil(2 * lease / 1000))
return {0, fmt(token), taken, corrupt}
"""
)

# ARGV: token, lease (us). Returns 1 if renewed, 0 if the lease is not live.
IDEMPOTENCY_RENEW = (
    _FENCED_HEAD
    + """
local lease = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'dl', fmt(now + lease))
expire_all(math.ceil(2 * lease / 1000))
return 1
"""
)

# ARGV: token, record, expiry (ms). Returns 1 if stored, 0 if the lease is
# not live (a late finisher never overwrites the new holder's result).
IDEMPOTENCY_COMPLETE = (
    _FENCED_HEAD
    + """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'st', 'c', 'tk', ARGV[1], 'rec', ARGV[2])
expire_all(tonumber(ARGV[3]))
return 1
"""
)

# ARGV: token. Returns 1 if the lease was deleted, 0 if it was not live.
# The counter stays, with its expiry.
IDEMPOTENCY_RELEASE = (
    _FENCED_HEAD
    + """
redis.call('DEL', KEYS[1])
return 1
"""
)
