-- Tollgate: void a request whose Take reply was lost, or whose answer could
-- not be delivered. Scripts run one at a time, so either the Take already
-- ran (its charge is refunded, and the refund recorded in the ledger) or it
-- has not (the id is marked void and the Take, if it ever arrives, refuses).
-- KEYS: request key, balance key, ledger stream of the balance's slot.
-- ARGV: ttl ms, account, request id, reason, stream MAXLEN (0: unbounded).
-- Returns the credits refunded, or -1 when the Take reserved its credits
-- (marked "r<credits>"): the caller then releases the reservation with
-- settle.lua (idempotent), since only the reservation says whether it is
-- still pending.
local v = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], 'void', 'PX', ARGV[1])
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
