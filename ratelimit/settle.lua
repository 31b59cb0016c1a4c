-- Tollgate: settle one reservation, once: capture it (the held credits are
-- kept), release it (given back, with the quotas the request counted) or,
-- for the sweeper, expire it (released if its settle timeout has passed).
-- A settled reservation stays in the hash as a tombstone ("captured" /
-- "released") until the settle timeout passes again, so that a second
-- settle reports it and a repeated id is refused; the sweeper then forgets
-- it. The change is recorded in the ledger.
-- KEYS: the account's reservations hash, the reservation expiry index of
--       the balance's slot, the balance key, the ledger stream of that slot.
-- ARGV: reservation id, op ("c" capture, "r" release, "x" expire), account,
--       index member, reason, stream MAXLEN (0: unbounded), settle timeout µs,
--       not before (µs, Redis time; 0: none): a void's release waits until
--       the Take it undoes can no longer run.
-- Returns {code, credits}: 0 unknown, 1 captured, 2 released, 3 already
-- settled, 4 not due (expire only), 5 forgotten (expire only), 6 too early
-- (then {6, ms to wait}).
local op = ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if now <= tonumber(ARGV[8]) then
  return {6, math.floor((tonumber(ARGV[8]) - now) / 1000) + 1}
end
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then
  if op == 'x' then redis.call('ZREM', KEYS[2], ARGV[4]) end
  return {0, 0}
end
local credits, expiry, mark = string.match(v, '^(%d+):(%d+)|?(.*)$')
if not credits then
  -- a tombstone
  if op ~= 'x' then return {3, 0} end
  if tonumber(redis.call('ZSCORE', KEYS[2], ARGV[4]) or 0) > now then return {4, 0} end
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[4])
  return {5, 0}
end
credits = tonumber(credits)
if op == 'x' and tonumber(expiry) > now then return {4, 0} end
local kind, amount, balance, code = 'capture', 0, 0, 1
if op == 'c' then
  balance = tonumber(redis.call('GET', KEYS[3]) or 0)
else
  kind, amount, code = 'release', credits, 2
  balance = redis.call('INCRBY', KEYS[3], credits)
  giveback(mark)
end
redis.call('HSET', KEYS[1], ARGV[1], kind == 'capture' and 'captured' or 'released')
redis.call('ZADD', KEYS[2], string.format('%d', now + tonumber(ARGV[7])), ARGV[4])
record(KEYS[4], ARGV[6], {'k', kind, 'a', ARGV[3], 'n', string.format('%d', amount), 'b', string.format('%d', balance),
  'r', ARGV[1], 'why', ARGV[5], 't', string.format('%d', now)})
return {code, credits}
