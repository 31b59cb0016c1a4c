-- Tollgate: credit an account once per idempotency key.
-- KEYS: balance key, idempotency key. ARGV: amount, max balance, ttl ms.
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
return {balance, 1, 0, 0}
