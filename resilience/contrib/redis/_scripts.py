"""The Lua scripts: one decision each, atomic, on Redis's clock."""

from __future__ import annotations

__all__ = ["GCRA"]

# One GCRA decision (see resilience._core.gcra), in whole microseconds so
# Lua's doubles stay exact (2^53 us is 285 years), on Redis's clock (TIME):
# every process shares it, none trusts its own.
#
# KEYS[1]: the limit's theoretical arrival time (a plain integer string,
#          expiring once the limit has fully recovered).
# ARGV:    emission interval, tolerance, cost, max_wait (all us but cost).
# Returns  {status, micros, corrupt}: status 0 admitted, 1 reserved (wait
#          micros), 2 refused (retry after micros); corrupt is 1 when the
#          stored value was not a sane arrival time and was overwritten.
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
  -- ever be (its tolerance plus the longest wait) are treated as absent.
  if tat == nil or tat ~= tat or tat < 0 or tat > now + tolerance + max_wait + interval then
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
    return {0, 0, corrupt}
  end
  return {1, math.ceil(wait), corrupt}
end
return {2, math.ceil(wait), corrupt}
"""
