-- Tollgate: void a request whose Take reply was lost. Scripts run one at a
-- time, so either the Take already ran (its charge is refunded) or it has
-- not (the id is marked void and the Take, if it ever arrives, refuses).
-- KEYS: request key, balance key. ARGV: ttl ms. Returns the credits refunded.
local v = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], 'void', 'PX', ARGV[1])
if v and v ~= 'void' then
  local charged = tonumber(v)
  if charged and charged > 0 then
    redis.call('INCRBY', KEYS[2], charged)
    return charged
  end
end
return 0
