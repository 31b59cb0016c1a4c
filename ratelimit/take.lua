-- Tollgate: apply all limits and the charge of one request, all or nothing.
-- Time is the server's (TIME), in microseconds, so replicas agree.
--
-- KEYS: one per limit (rate: its TAT key; quota: the quota hash of its tag),
--       then, when there is a charge, the balance key, the ledger stream
--       of the balance's slot (a charge is recorded there: void.lua finds
--       it there when the Take's reply was lost), the account's
--       reservations hash and the reservation expiry index of the
--       balance's slot (a sorted set: member account:id, score the expiry
--       in µs). Nothing is written per request besides the ledger entry.
-- ARGV: n, has_charge, credits, overdraft, overage_only,
--       then 8 per limit: kind, cost, limit, a, b, c, d, e
--         kind "r"/"R" (rate / shadow rate): a = emission interval µs,
--               b = tolerance µs, c = window µs, d = capacity (burst)
--         kind "q"/"o"/"Q" (quota / quota with overage / shadow quota):
--               a..d = starts of the previous, current, next and following
--               period by the caller's clock, e = hash field prefix
--       then the deadline: the latest server time (µs) at which the request
--       may be applied (its caller has given up after that), and for the
--       ledger: account, consumer, policy revision, request id, and the
--       stream's MAXLEN (0: unbounded, entries are shipped then trimmed),
--       then the reservation id ("": charged now, not reserved), the
--       settle timeout (µs) and the reservation's index member
-- A charge's ledger entry (and a reservation) records the quotas the
-- request counted, in field "q" ("<key length>:<key><field length>:<field>
-- <cost>;" per quota), so that a void or a release gives them back.
-- Returns {-4} for a request past its deadline, {-5}
-- for a reservation id in use, else: {allowed, denied (0-based, -1 none, -2 charge), now, balance,
--           charged, retry_after, then per limit: remaining, reset, window, flags}
--           flags: 1 exceeded, 2 overage; a shadow limit that is exceeded
--           gets flag 1 but neither refuses nor counts
local n = tonumber(ARGV[1])
local has_charge = ARGV[2] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if now > tonumber(ARGV[6 + 8 * n]) then
  return {-4}
end
local reservation = ''
if has_charge then reservation = ARGV[6 + 8 * n + 6] end
-- a pending (or recently settled) reservation id is never reused: one
-- access log entry settles one reservation
if reservation ~= '' and redis.call('HEXISTS', KEYS[n + 3], reservation) == 1 then
  return {-5}
end
local out = {}
local allowed = 1
local denied = -1
local retry = 0
local overage = false
local writes = {}
local before = {} -- per limit with room: {remaining, reset} before this request

for i = 1, n do
  local b = 5 + (i - 1) * 8
  local kind = ARGV[b + 1]
  local cost = tonumber(ARGV[b + 2])
  local limit = tonumber(ARGV[b + 3])
  local remaining, reset, window, flags = 0, 0, 0, 0
  local shadow = kind == 'R' or kind == 'Q'
  if kind == 'r' or kind == 'R' then
    local interval = tonumber(ARGV[b + 4])
    local tolerance = tonumber(ARGV[b + 5])
    window = tonumber(ARGV[b + 6])
    local capacity = tonumber(ARGV[b + 7])
    local tat = tonumber(redis.call('GET', KEYS[i]) or now)
    if tat < now then tat = now end
    local new_tat = tat + cost * interval
    local diff = new_tat - now
    if cost > capacity then
      -- never fits: refused, with no retry time
      flags = 1
      remaining = math.max(math.floor((tolerance - (tat - now)) / interval), 0)
      reset = tat - now
    elseif diff > tolerance then
      flags = 1
      remaining = math.max(math.floor((tolerance - (tat - now)) / interval), 0)
      reset = tat - now
      if not shadow then retry = math.max(retry, diff - tolerance) end
    else
      remaining = math.floor((tolerance - diff) / interval)
      reset = diff
      before[i] = {math.floor((tolerance - (tat - now)) / interval), tat - now}
      writes[#writes + 1] = {'r', KEYS[i], new_tat, math.ceil(diff / 1000) + 1}
    end
  else
    local p0, p1, p2, p3 = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6]), tonumber(ARGV[b + 7])
    local start, stop, prev = p1, p2, p0
    if now < p1 then
      start, stop, prev = p0, p1, nil
    elseif now >= p2 then
      start, stop, prev = p2, p3, p1
    end
    local field = ARGV[b + 8] .. ':' .. string.format('%d', start) .. ':' .. string.format('%d', stop)
    local used = tonumber(redis.call('HGET', KEYS[i], field) or 0)
    window = stop - start
    reset = stop - now
    if cost > limit - used then
      if kind == 'o' and has_charge then
        flags = 2
        overage = true
      else
        flags = 1
        remaining = math.max(limit - used, 0)
        if not shadow then retry = math.max(retry, reset) end
      end
    else
      remaining = limit - used - cost
      before[i] = {limit - used, reset}
      local old = nil
      if prev then
        old = ARGV[b + 8] .. ':' .. string.format('%d', prev) .. ':' .. string.format('%d', start)
      end
      writes[#writes + 1] = {'q', KEYS[i], field, cost, math.ceil((stop - now) / 1000) + 86400000, old, i}
    end
  end
  if flags == 1 and allowed == 1 and not shadow then
    allowed = 0
    denied = i - 1
  end
  out[#out + 1] = remaining
  out[#out + 1] = reset
  out[#out + 1] = window
  out[#out + 1] = flags
end

local balance, charged = 0, 0
if has_charge then
  local credits = tonumber(ARGV[3])
  local overdraft = tonumber(ARGV[4])
  balance = tonumber(redis.call('GET', KEYS[n + 1]) or 0)
  if allowed == 1 and (ARGV[5] ~= '1' or overage) then
    if balance - credits < -overdraft then
      allowed = 0
      denied = -2
    else
      charged = credits
    end
  end
end

if allowed == 1 then
  for _, w in ipairs(writes) do
    if w[1] == 'r' then
      redis.call('SET', w[2], string.format('%d', w[3]), 'PX', w[4])
    else
      redis.call('HINCRBY', w[2], w[3], w[4])
      if w[6] then redis.call('HDEL', w[2], w[6]) end
      -- keep the hash until its longest period has ended (PTTL -1: none yet)
      local ttl = redis.call('PTTL', w[2])
      if ttl < w[5] then redis.call('PEXPIRE', w[2], w[5]) end
      -- drop fields of periods that have ended (quotas used on and off)
      if redis.call('HLEN', w[2]) > 32 then
        local fields = redis.call('HKEYS', w[2])
        for _, f in ipairs(fields) do
          local stop = tonumber(string.match(f, ':(%d+)$'))
          if stop and stop <= now then redis.call('HDEL', w[2], f) end
        end
      end
    end
  end
  if charged > 0 then
    balance = redis.call('DECRBY', KEYS[n + 1], charged)
    -- the quotas counted, for a void or a release to give back
    local mark = {}
    for _, w in ipairs(writes) do
      if w[1] == 'q' and w[4] > 0 then
        mark[#mark + 1] = string.format('%d:', #w[2]) .. w[2] .. string.format('%d:', #w[3]) .. w[3] .. string.format('%d;', w[4])
      end
    end
    mark = table.concat(mark)
    local l = 6 + 8 * n
    local kind, rid = 'charge', ARGV[l + 4]
    if reservation ~= '' then
      kind, rid = 'reserve', reservation
      local expiry = string.format('%d', now + tonumber(ARGV[l + 7]))
      redis.call('HSET', KEYS[n + 3], reservation, string.format('%d', charged) .. ':' .. expiry .. '|' .. mark)
      redis.call('ZADD', KEYS[n + 4], expiry, ARGV[l + 8])
    end
    local entry = {'k', kind, 'a', ARGV[l + 1], 'c', ARGV[l + 2], 'n', string.format('%d', -charged),
      'b', string.format('%d', balance), 'r', rid, 'p', ARGV[l + 3], 't', string.format('%d', now)}
    if mark ~= '' and reservation == '' then
      entry[#entry + 1] = 'q'
      entry[#entry + 1] = mark
    end
    record(KEYS[n + 2], ARGV[l + 5], entry)
  end
else
  charged = 0
  -- refused: nothing was consumed, so report the limits as they are
  for i, b in pairs(before) do
    out[(i - 1) * 4 + 1] = b[1]
    out[(i - 1) * 4 + 2] = b[2]
  end
end

-- Built in a loop, never with unpack(out): unpack pushes every value on
-- Lua's C stack, which holds 8,000 ("too many results to unpack" past
-- about 2,000 limits).
local reply = {allowed, denied, now, balance, charged, retry}
for i = 1, #out do
  reply[6 + i] = out[i]
end
return reply
