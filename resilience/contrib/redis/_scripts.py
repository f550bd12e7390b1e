"""The Lua scripts: one decision each, atomic, on Redis's clock."""

from __future__ import annotations

__all__ = ["BREAKER_CONTROL", "BREAKER_SYNC", "GCRA", "PAUSE_MAX_US", "PUSH_BACK"]

# The longest push back shared on Redis, in us (an hour): a stored arrival
# time further ahead than a limit's tolerance plus this (or plus a call's
# longest wait) is garbage to GCRA, not a pause.
PAUSE_MAX_US = 3_600_000_000

# One GCRA decision (see resilience._core.gcra), in whole microseconds so
# Lua's doubles stay exact (2^53 us is 285 years), on Redis's clock (TIME):
# every process shares it, none trusts its own.
#
# KEYS[1]: the limit's theoretical arrival time (a plain integer string,
#          expiring once the limit has fully recovered).
# ARGV:    emission interval, tolerance, cost, max_wait (all us but cost).
# Returns  {status, micros, corrupt, ahead}: status 0 admitted, 1 reserved
#          (wait micros), 2 refused (retry after micros); corrupt is 1 when
#          the stored value was not a sane arrival time and was overwritten;
#          ahead is how far the arrival time is past now afterwards (us):
#          the limit's state, which the asking process keeps a copy of.
GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local max_wait = tonumber(ARGV[4])
local corrupt = 0
local stored = redis.pcall('GET', KEYS[1])
local tat = nil
if type(stored) == 'string' then
  tat = tonumber(stored)
  -- NaN, infinities, negatives, and anything further ahead than a limit can
  -- ever be (its tolerance plus the longest wait or push back) are treated
  -- as absent.
  if tat == nil or tat ~= tat or tat < 0
     or tat > now + tolerance + math.max(max_wait, PAUSE_MAX_US) + interval then
    tat = nil
    corrupt = 1
  end
elseif type(stored) == 'table' then
  corrupt = 1  -- another type under our key (WRONGTYPE): overwritten
end
if tat == nil or tat < now then
  tat = now
end
local new = tat + cost * interval
local wait = new - now - tolerance
if wait <= 0 or wait <= max_wait then
  redis.call('SET', KEYS[1], string.format('%.0f', new),
             'PX', math.floor((new - now) / 1000) + 1)
  if wait <= 0 then
    return {0, 0, corrupt, new - now}
  end
  return {1, math.ceil(wait), corrupt, new - now}
end
return {2, math.ceil(wait), corrupt, tat - now}
""".replace("PAUSE_MAX_US", str(PAUSE_MAX_US))

# A limit pushed back (the other side sent Retry-After): nothing admitted
# before now + pause, anywhere; later slots at the usual rate, as
# RateTable.push_back does here. Never earlier than the limit already was.
#
# KEYS[1]: the limit's theoretical arrival time (as for GCRA).
# ARGV:    the pause, emission interval, tolerance (all us; the pause at
#          most PAUSE_MAX_US).
# Returns  1 when the arrival time moved, 0 when it was further already.
PUSH_BACK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local target = now + tonumber(ARGV[1]) + tonumber(ARGV[3]) - tonumber(ARGV[2])
local stored = redis.pcall('GET', KEYS[1])
if type(stored) == 'string' then
  local tat = tonumber(stored)
  -- Already further (a pause, or waits reserved): never moved back. What
  -- is not a number is overwritten; a number too far ahead GCRA resets.
  if tat ~= nil and tat == tat and tat >= target then
    return 0
  end
end
redis.call('SET', KEYS[1], string.format('%.0f', target),
           'PX', math.floor((target - now) / 1000) + 1)
return 1
"""

# A circuit breaker's shared state (see _breakers.py), in two scripts that
# share this prelude and ending. Times are whole microseconds of Redis's
# clock (TIME).
#
# KEYS[1]: the state, a hash of plain integers: st (0 closed, 1 open,
#          2 half-open, 3 forced open, 4 disabled), bt (Redis's time when the
#          state was created), ep (the epoch: starts at bt, +1 at every
#          transition),
#          at (when it opened), of (the open duration), ho (when it went
#          half-open), is / dn / fl / sl (the half-open round's trials handed
#          out, done, failed, slow), tc (the round's last grant or report).
# KEYS[2]: the closed window of the epoch in field e: fields c<b>, f<b>,
#          s<b> count the calls, failures and slow calls of bucket b
#          (floor(time / width)); buckets older than the window are deleted.
# ARGV[1..4]: open duration and its maximum (us), half_open_calls, the
#          state's expiry (ms, renewed by every script).
# Returns {state, epoch, open time left (us), open duration (us), trials
#          granted, corrupt (1: the state, 2: the window; treated as absent
#          and overwritten), bt (a new one: Redis lost the state), calls,
#          failures, slow calls (the window's, when closed)}.
_BREAKER_HEAD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local base = tonumber(ARGV[1])
local max_for = tonumber(ARGV[2])
local trials = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local corrupt = 0
local fresh = 0
local BIG = 2^53

local function int(v, lo, hi)
  if v == nil then return nil end
  local x = tonumber(v)
  if x == nil or x ~= x or x < lo or x > hi or x ~= math.floor(x) then
    return nil
  end
  return x
end

local function fmt(x)
  return string.format('%.0f', x)
end

local s = nil
local raw = redis.pcall('HGETALL', KEYS[1])
if type(raw) == 'table' and raw.err == nil then
  if #raw > 0 then
    local h = {}
    for i = 1, #raw, 2 do
      h[raw[i]] = raw[i + 1]
    end
    local soon = now + 1000000
    s = {
      st = int(h.st, 0, 4), bt = int(h.bt, 0, soon), ep = int(h.ep, 0, BIG),
      at = int(h.at, 0, soon),
      of = int(h.of, 0, max_for), ho = int(h.ho, 0, soon), is = int(h.is, 0, trials),
      dn = int(h.dn, 0, BIG), fl = int(h.fl, 0, BIG), sl = int(h.sl, 0, BIG),
      tc = int(h.tc, 0, soon),
    }
    for _, name in ipairs({'st', 'bt', 'ep', 'at', 'of', 'ho', 'is', 'dn', 'fl', 'sl', 'tc'}) do
      if s[name] == nil then
        s = nil
        break
      end
    end
    if s == nil or s.fl > s.dn or s.sl > s.dn then
      s = nil
      corrupt = 1
    end
  end
else
  corrupt = 1  -- another type under our key (WRONGTYPE)
  redis.call('DEL', KEYS[1])
end
if s == nil then
  s = {st = 0, bt = now, ep = now, at = 0, of = base, ho = 0, is = 0, dn = 0, fl = 0, sl = 0,
       tc = 0}
  fresh = 1
end
local changed = fresh

local function move(state)
  s.st = state
  s.ep = s.ep + 1
  s.is, s.dn, s.fl, s.sl = 0, 0, 0, 0
  changed = 1
end

local function open(at, grow)
  if grow then
    s.of = math.min(s.of * 2, max_for)
  end
  s.at = at
  move(1)
end

local function close()
  s.of = base
  move(0)
end

local function finish(grant, c, f, sl)
  if changed == 1 then
    redis.call('HSET', KEYS[1], 'st', s.st, 'bt', fmt(s.bt), 'ep', fmt(s.ep), 'at', fmt(s.at),
               'of', fmt(s.of), 'ho', fmt(s.ho), 'is', s.is, 'dn', s.dn,
               'fl', s.fl, 'sl', s.sl, 'tc', fmt(s.tc))
  end
  redis.call('PEXPIRE', KEYS[1], ttl)
  local left = 0
  if s.st == 1 then
    left = math.max(0, s.at + s.of - now)
  end
  return {s.st, s.ep, left, s.of, grant, corrupt, s.bt, c, f, sl}
end
"""

# Every sync_interval, from each process: add its counts to the window and
# trip on the window's totals; report its half-open trials (their outcomes,
# the permits it gives back) and ask for more; read the state.
#
# ARGV[5..]: the epoch this process last saw (-1: none yet); its calls,
#   failures and slow calls since its last report; its trials done, failed
#   and slow; trial permits given back; trials wanted; 1 when its own clock
#   has measured the open period out (from the time left it was told);
#   minimum_calls, failure_rate, slow_call_rate; bucket width (us) and
#   buckets per window; half_open_max_wait (us, -1: none); the lease of a
#   round's trials (us: permits not reported for that long are lost with
#   their process and handed out again).
BREAKER_SYNC = (
    _BREAKER_HEAD
    + """
local seen = tonumber(ARGV[5])
local calls, failures, slow = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local done, failed, slowed = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local returned, want, over = tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
local minimum, f_rate, s_rate = tonumber(ARGV[15]), tonumber(ARGV[16]), tonumber(ARGV[17])
local width, count = tonumber(ARGV[18]), tonumber(ARGV[19])
local max_wait, lease = tonumber(ARGV[20]), tonumber(ARGV[21])
local ours = seen == s.ep or seen < 0 or fresh == 1

if s.st == 2 and max_wait >= 0 and now >= s.ho + max_wait then
  open(s.ho + max_wait, true)
end

local C, F, S = 0, 0, 0
if s.st == 0 then
  local bucket = math.floor(now / width)
  local oldest = bucket - count + 1
  local w = redis.pcall('HGETALL', KEYS[2])
  local stale = {}
  local reset = false
  if type(w) ~= 'table' or w.err ~= nil then
    reset = true
    corrupt = corrupt + 2
  elseif #w > 0 then
    local e = nil
    local bad = false
    for i = 1, #w, 2 do
      local k, v = w[i], w[i + 1]
      if k == 'e' then
        e = int(v, 0, BIG)
        bad = bad or e == nil
      else
        local kind = string.sub(k, 1, 1)
        local b = int(string.sub(k, 2), 0, BIG)
        local n = int(v, 0, BIG)
        if b == nil or n == nil or b > bucket + 1
           or (kind ~= 'c' and kind ~= 'f' and kind ~= 's') then
          bad = true
        elseif b < oldest then
          stale[#stale + 1] = k
        elseif kind == 'c' then
          C = C + n
        elseif kind == 'f' then
          F = F + n
        else
          S = S + n
        end
      end
    end
    if bad or e == nil or F > C or S > C then
      reset = true
      corrupt = corrupt + 2
    elseif e ~= s.ep then
      reset = true  -- another period's window: this one starts empty
    end
  end
  if reset then
    redis.call('DEL', KEYS[2])
    C, F, S = 0, 0, 0
  elseif #stale > 0 then
    redis.call('HDEL', KEYS[2], unpack(stale))
  end
  if ours and calls > 0 then
    local b = fmt(bucket)
    redis.call('HINCRBY', KEYS[2], 'c' .. b, calls)
    if failures > 0 then
      redis.call('HINCRBY', KEYS[2], 'f' .. b, failures)
    end
    if slow > 0 then
      redis.call('HINCRBY', KEYS[2], 's' .. b, slow)
    end
    redis.call('HSET', KEYS[2], 'e', fmt(s.ep))
    redis.call('PEXPIRE', KEYS[2], math.ceil((count + 1) * width / 1000))
    C, F, S = C + calls, F + failures, S + slow
  end
  if C >= minimum and ((F > 0 and F / C >= f_rate) or (S > 0 and S / C >= s_rate)) then
    open(now, false)
  end
elseif s.st == 2 and ours then
  if returned > 0 then
    s.is = math.max(0, s.is - returned)
    changed = 1
  end
  if done > 0 then
    s.dn, s.fl, s.sl, s.tc = s.dn + done, s.fl + failed, s.sl + slowed, now
    changed = 1
    if s.dn >= trials then
      if s.fl / s.dn >= f_rate or s.sl / s.dn >= s_rate then
        open(now, true)
      else
        close()
      end
    end
  end
end

if s.st == 1 and want > 0 and (now >= s.at + s.of or (over == 1 and seen == s.ep)) then
  s.ho, s.tc = now, now
  move(2)
end
local grant = 0
if s.st == 2 and want > 0 then
  if s.is > s.dn and now >= s.tc + lease then
    s.is = s.dn
  end
  grant = math.max(0, math.min(want, trials - s.is))
  if grant > 0 then
    s.is, s.tc = s.is + grant, now
    changed = 1
  end
end
return finish(grant, C, F, S)
"""
)

# A manual control, from any process: ARGV[5] is open, close, force_open,
# disable or reset (as the breaker's methods of those names).
BREAKER_CONTROL = (
    _BREAKER_HEAD
    + """
local op = ARGV[5]
if op == 'open' then
  open(now, false)
elseif op == 'close' then
  if s.st ~= 0 then
    close()
  end
elseif op == 'reset' then
  close()
elseif op == 'force_open' then
  move(3)
elseif op == 'disable' then
  move(4)
end
return finish(0, 0, 0, 0)
"""
)
