-- Tollgate: functions the scripts share (prepended to each script).
-- giveback gives back the quotas a request counted, as take.lua recorded
-- them ("<key length>:<key><field length>:<field><cost>;" per quota): each
-- counter is decremented while its period's field is still there (a
-- period that has ended is not reopened). Every key is in the slot of the
-- request's balance (take.lua ran with all of them in one slot).
local function giveback(mark)
  local pos = 1
  while pos <= #mark do
    local klen, kfrom = string.match(mark, '^(%d+):()', pos)
    if not klen then return end
    local key = string.sub(mark, kfrom, kfrom + tonumber(klen) - 1)
    local flen, ffrom = string.match(mark, '^(%d+):()', kfrom + tonumber(klen))
    if not flen then return end
    local field = string.sub(mark, ffrom, ffrom + tonumber(flen) - 1)
    local cost, nxt = string.match(mark, '^(%d+);()', ffrom + tonumber(flen))
    if not cost then return end
    pos = nxt
    if redis.call('HEXISTS', key, field) == 1 and redis.call('HINCRBY', key, field, -tonumber(cost)) <= 0 then
      redis.call('HDEL', key, field)
    end
  end
end

-- record appends a balance change to the ledger stream (MAXLEN ~ maxlen
-- unless maxlen is '0'). entry is one of the scripts' fixed lists (at
-- most 18 values): the only lists unpacked, since redis.call takes no
-- table; a list of the request's size is never unpacked.
local function record(stream, maxlen, entry)
  if maxlen ~= '0' then
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(entry))
  else
    redis.call('XADD', stream, '*', unpack(entry))
  end
end
