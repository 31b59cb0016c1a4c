-- Tollgate: void a charged request whose Take reply was lost, or whose
-- answer could not be delivered: whatever its Take took is given back
-- (credits, and the quotas it counted; rate limits stay counted), once.
-- Nothing was written per request for this: the Take's ledger entry is
-- the record. Either the outcome is known ("k": the Take ran, and ARGV
-- says what it took), or it is not ("u"): then the void waits until the
-- Take can no longer run (Redis's clock past the Take's deadline, "hi";
-- take.lua refuses later) and looks for the Take's entry in the ledger
-- stream among the entries whose scripts began between "lo" (no earlier
-- than the Take was sent) and "hi".
-- A voided request leaves a marker (only voided requests do), so a void
-- repeated after a lost reply gives back nothing more.
-- KEYS: the void marker, the balance key, the ledger stream of the
--       balance's slot.
-- ARGV: op ("k" / "u"), account, request id, reason, stream MAXLEN (0:
--       unbounded), marker ttl ms, then for "k": credits, quota mark
--       (take.lua's); for "u": lo µs, hi µs (Redis time).
-- Returns {code, value}: {0, 0} nothing was taken; {1, credits} given back;
-- {2, ms} too early, retry in ms; {3, 0} the window was trimmed from the
-- stream (shipped): ask the durable ledger; {4, 0} voided already.
local op = ARGV[1]
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {4, 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local credits, mark = 0, ''
if op == 'k' then
  credits, mark = tonumber(ARGV[7]), ARGV[8]
else
  local lo, hi = tonumber(ARGV[7]), tonumber(ARGV[8])
  if now <= hi then
    return {2, math.floor((hi - now) / 1000) + 1}
  end
  -- An entry's id is Redis's clock when it was added, its "t" the clock
  -- when its script began: the two differ by how long the script ran,
  -- which a stopped or starved Redis can make seconds (an entry of a Take
  -- that began inside the window can have an id past it). Scripts run one
  -- at a time, so "t" never decreases along the stream: read the window by
  -- id, then on past it, a few entries at a time, until an entry whose
  -- script began after the window.
  local from = string.format('%d', math.floor(lo / 1000))
  local to = string.format('%d', math.floor(hi / 1000) + 1)
  local found, past = false, false
  local function scan(start, stop, count)
    local batch = redis.call('XRANGE', KEYS[3], start, stop, 'COUNT', count)
    while #batch > 0 do
      for _, e in ipairs(batch) do
        local f = {}
        for i = 1, #e[2], 2 do f[e[2][i]] = e[2][i + 1] end
        if f.r == ARGV[3] and f.a == ARGV[2] and f.k == 'charge' then
          credits, mark, found = -tonumber(f.n), f.q or '', true
          return
        end
        if f.t and tonumber(f.t) > hi then
          past = true
          return
        end
      end
      if #batch < count then return end
      local ms, seq = string.match(batch[#batch][1], '^(%d+)-(%d+)$')
      batch = redis.call('XRANGE', KEYS[3], ms .. '-' .. string.format('%d', tonumber(seq) + 1), stop, 'COUNT', count)
    end
  end
  scan(from, to, 256)
  if not found and not past then
    scan(string.format('%d', tonumber(to) + 1), '+', 8)
  end
  if not found then
    -- Not in the stream. Was the window still all there? It was if an
    -- entry older than it is, if nothing was ever trimmed, or if nothing
    -- was written since it began.
    local first = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)[1]
    if first and tonumber(string.match(first[1], '^(%d+)')) < tonumber(from) then
      return {0, 0}
    end
    if redis.call('EXISTS', KEYS[3]) == 0 then
      return {0, 0}
    end
    local info = redis.call('XINFO', 'STREAM', KEYS[3])
    local f = {}
    for i = 1, #info, 2 do f[info[i]] = info[i + 1] end
    -- nothing ever trimmed, or nothing written since the window began
    if tonumber(f['entries-added']) == tonumber(f['length']) or
        tonumber(string.match(f['last-generated-id'], '^(%d+)')) < tonumber(from) then
      return {0, 0}
    end
    return {3, 0}
  end
end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[6])
if credits <= 0 and mark == '' then
  return {0, 0}
end
giveback(mark)
local balance = redis.call('INCRBY', KEYS[2], credits)
record(KEYS[3], ARGV[5], {'k', 'refund', 'a', ARGV[2], 'n', string.format('%d', credits), 'b', string.format('%d', balance),
  'r', ARGV[3], 'why', ARGV[4], 't', string.format('%d', now)})
return {1, credits}
