-- Take, refund or read a tenant's API credits in one atomic step.
-- KEYS: [1] crmsync:{T}:config  tenant config hash: limit, reset_at (HH:MM UTC), reset_from (admin-written, read here)
--       [2] crmsync:{T}:w:      prefix of the window counters; the script appends the window's end in epoch
--                               seconds, so every counter shares the tenant's hash slot
-- ARGV: [1] delta       credits to take (> 0), to refund (< 0), or 0 to only read
--       [2] now         epoch seconds, or "" for the Redis server's TIME (callers' clocks never decide windows)
--       [3] window_end  refunds only: end of the window the credits were taken in ("" = the current one)
--       [4] grace       seconds a counter outlives its window
-- Returns: {outcome, remaining, limit, window_end, used, state}
--   outcome: takes 1 granted / 0 refused (a refused take writes nothing); refunds: credits returned
--   state:   0 config ok, 1 no limit set, 2 config invalid (both grant nothing)

local DAY = 86400
local cfg = redis.call('HMGET', KEYS[1], 'limit', 'reset_at', 'reset_from')

local function whole(raw, lo, hi)
  -- HMGET gives false for a missing field; anything but plain digits in range is invalid
  if not raw or not string.match(raw, '^%d+$') then return nil end
  local n = tonumber(raw)
  if n < lo or n > hi then return nil end
  return n
end

local state = 0
local limit = whole(cfg[1], 100000, 1e15)
if not cfg[1] then state = 1 elseif not limit then state = 2 end

local minute = 0
if cfg[2] then
  local hh, mm = string.match(cfg[2], '^(%d%d):(%d%d)$')
  hh, mm = tonumber(hh), tonumber(mm)
  if hh and hh < 24 and mm < 60 then minute = hh * 60 + mm else state = 2 end
end
local reset_from = nil
if cfg[3] then
  reset_from = whole(cfg[3], 0, 1e12)
  if not reset_from then state = 2 end
end

local now
if ARGV[2] == '' then now = tonumber(redis.call('TIME')[1]) else now = tonumber(ARGV[2]) end

-- A new reset time of day applies once the window that was open when it changed has ended.
local window_end
if reset_from and now < reset_from then
  window_end = reset_from
else
  local offset = minute * 60
  window_end = math.floor((now - offset) / DAY) * DAY + offset + DAY
end

local counter = KEYS[2] .. string.format('%d', window_end)
local used = tonumber(redis.call('GET', counter) or '0') or 0
if state ~= 0 then limit = 0 end
local delta = tonumber(ARGV[1])
local outcome = 0

if delta > 0 then
  if state == 0 and used + delta <= limit then
    used = redis.call('INCRBY', counter, delta)
    if used == delta then
      redis.call('EXPIRE', counter, window_end - now + tonumber(ARGV[4]))
    end
    outcome = 1
  end
elseif delta < 0 then
  -- Credits go back only into the window they came from, and never below zero used.
  if ARGV[3] == '' or tonumber(ARGV[3]) == window_end then
    outcome = math.min(-delta, used)
    if outcome > 0 then used = redis.call('DECRBY', counter, outcome) end
  end
end

return {outcome, math.max(0, limit - used), limit, window_end, used, state}
