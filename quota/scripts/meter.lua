-- Take, refund or read a tenant's API credits in one atomic step.
-- KEYS: [1] crmsync:{T}:config  tenant config hash: limit, reset_at (HH:MM UTC), reset_from (admin-written)
--       [2] crmsync:{T}:w:      prefix of the window counters; the script appends the window's end in epoch
--                               seconds, so every counter shares the tenant's hash slot
-- ARGV: [1] delta       credits to take (> 0), to refund (< 0), or 0 to only read
--       [2] now         epoch seconds, or "" for the Redis server's TIME (callers' clocks never decide windows)
--       [3] window_end  refunds only: end of the window the credits were taken in ("" = the current one)
--       [4] grace       seconds a counter outlives its window
-- Returns: {outcome, remaining, limit, window_end, used, state}
--   outcome: takes 1 granted / 0 refused (a refused take writes nothing); refunds: credits returned
--   state:   0 config ok, 1 no limit set, 2 config invalid (both grant nothing)
-- This runs before every Salesforce request: it is kept to plain comparisons and as few calls as possible.

local cfg = redis.call('HMGET', KEYS[1], 'limit', 'reset_at', 'reset_from')
local raw_limit, raw_reset, raw_from = cfg[1], cfg[2], cfg[3]

local state, limit = 0, 0
if not raw_limit then
  state = 1
elseif string.find(raw_limit, '^%d+$') then
  limit = tonumber(raw_limit)
  if limit < 100000 or limit > 1e15 then state = 2 end
else
  state = 2
end

local offset = 0
if raw_reset then
  local hh, mm = string.match(raw_reset, '^(%d%d):(%d%d)$')
  hh, mm = tonumber(hh), tonumber(mm)
  if hh and hh < 24 and mm < 60 then offset = hh * 3600 + mm * 60 else state = 2 end
end

local now = ARGV[2]
if now == '' then now = redis.call('TIME')[1] end
now = tonumber(now)

-- A new reset time of day applies once the window that was open when it changed has ended.
local window_end
local from = raw_from and string.find(raw_from, '^%d+$') and tonumber(raw_from)
if raw_from and not from then state = 2 end
if from and now < from then
  window_end = from
else
  window_end = now - (now - offset) % 86400 + 86400
end

local counter = KEYS[2] .. window_end
if state ~= 0 then limit = 0 end
local delta = tonumber(ARGV[1])
local outcome, used = 0, 0

if delta > 0 and state == 0 then
  -- Optimistic: one call on the hot path; a take that overdraws is undone inside this same atomic script.
  used = redis.call('INCRBY', counter, delta)
  if used > limit then
    if used == delta then redis.call('DEL', counter) else redis.call('DECRBY', counter, delta) end
    used = used - delta
  else
    if used == delta then redis.call('EXPIRE', counter, window_end - now + tonumber(ARGV[4])) end
    outcome = 1
  end
else
  used = tonumber(redis.call('GET', counter) or 0)
  -- Credits go back only into the window they came from, and never below zero used.
  if delta < 0 and (ARGV[3] == '' or tonumber(ARGV[3]) == window_end) then
    outcome = math.min(-delta, used)
    if outcome > 0 then used = redis.call('DECRBY', counter, outcome) end
  end
end

local remaining = limit - used
if remaining < 0 then remaining = 0 end
return {outcome, remaining, limit, window_end, used, state}
