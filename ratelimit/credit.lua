-- Tollgate: credit an account once per idempotency key, recording the
-- top-up in the ledger.
-- KEYS: balance key, idempotency key, ledger stream of the balance's slot.
-- ARGV: amount, max balance, ttl ms, account, idempotency key, kind, reason,
--       stream MAXLEN (0: unbounded).
-- Returns {balance, applied (1/0), conflict (1/0), overflow (1/0)}.
local amount = tonumber(ARGV[1])
local seen = redis.call('GET', KEYS[2])
local balance = tonumber(redis.call('GET', KEYS[1]) or 0)
if seen then
  if tonumber(seen) ~= amount then
    return {balance, 0, 1, 0}
  end
  return {balance, 0, 0, 0}
end
if balance > tonumber(ARGV[2]) - amount then
  return {balance, 0, 0, 1}
end
balance = redis.call('INCRBY', KEYS[1], amount)
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
local t = redis.call('TIME')
record(KEYS[3], ARGV[8], {'k', ARGV[6], 'a', ARGV[4], 'n', ARGV[1], 'b', string.format('%d', balance),
  'r', ARGV[5], 'why', ARGV[7], 't', string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))})
return {balance, 1, 0, 0}
