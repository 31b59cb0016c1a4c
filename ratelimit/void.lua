-- Tollgate: void a request whose Take reply was lost, or whose answer could
-- not be delivered. Scripts run one at a time, so either the Take already
-- ran (its charge is refunded, and the refund recorded in the ledger) or it
-- has not (the id is marked void and the Take, if it ever arrives, refuses).
-- The quotas the Take counted are given back too (when their period's
-- counter is still there); rate limits stay counted.
-- A reservation the access log captured already (the request went
-- upstream) keeps its quotas.
-- KEYS: request key, balance key, ledger stream of the balance's slot, the
--       account's reservations hash, then the key of each limit of the
--       request, in order (none when they are not in the balance's slot:
--       the Take never ran).
-- ARGV: ttl ms, account, request id, reason, stream MAXLEN (0: unbounded),
--       reservation id ("": none).
-- Returns the credits refunded, or -1 when the Take reserved its credits
-- (marked "r<credits>"): the caller then releases the reservation with
-- settle.lua (idempotent), since only the reservation says whether it is
-- still pending.
local v = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], 'void', 'PX', ARGV[1])
if v and v ~= 'void' then
  local quotas
  v, quotas = string.match(v, '^([^|]*)(.*)$')
  if string.sub(v, 1, 1) == 'r' and redis.call('HGET', KEYS[4], ARGV[6]) == 'captured' then
    return 0
  end
  local pos = 1
  while pos <= #quotas do
    local i, cost, len, from = string.match(quotas, '^|(%d+):(%d+):(%d+):()', pos)
    if not i then break end
    local field = string.sub(quotas, from, from + tonumber(len) - 1)
    pos = from + tonumber(len)
    local key = KEYS[4 + tonumber(i)]
    if key and redis.call('HEXISTS', key, field) == 1 then
      if redis.call('HINCRBY', key, field, -tonumber(cost)) <= 0 then
        redis.call('HDEL', key, field)
      end
    end
  end
end
if v and string.sub(v, 1, 1) == 'r' then
  return -1
end
if v and v ~= 'void' then
  local charged = tonumber(v)
  if charged and charged > 0 then
    local balance = redis.call('INCRBY', KEYS[2], charged)
    local t = redis.call('TIME')
    local entry = {'k', 'refund', 'a', ARGV[2], 'n', string.format('%d', charged), 'b', string.format('%d', balance),
      'r', ARGV[3], 'why', ARGV[4], 't', string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))}
    if ARGV[5] ~= '0' then
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', unpack(entry))
    else
      redis.call('XADD', KEYS[3], '*', unpack(entry))
    end
    return charged
  end
end
return 0
