-- Take, refund or read a tenant's API credits in one atomic step, in the tenant's window mode.
-- KEYS: [1] crmsync:{T}:config      tenant config hash: limit, reset_at, reset_from, reserve, window
--       [2] crmsync:{T}:w:<END>     the daily counter the caller believes open (END: its window's end, epoch s)
--       [3] crmsync:{T}:w:rolling   the rolling window's hash of credits per hour
-- ARGV: [1] delta       credits to take (> 0), to refund (< 0), or 0 to only read (a read writes nothing)
--       [2] now         epoch seconds, or "" for the Redis server's TIME (callers' clocks never decide windows)
--       [3] window      refunds only: the `window` the take returned ("" = the current one)
--       [4] grace       seconds a counter outlives the moment its credits come back
--       [5] essential   "1": the take may use the reserve; anything else: it stops where the reserve begins
--       [6] mode        refunds only: the window mode of the take ("daily", "rolling"; "" = any): credits go back
--                       only in that mode (a daily window that ended is no rolling hour)
-- Returns: {outcome, remaining, limit, window, used, state, resets_at, reserve, mode, reason}, or {-1, END}
--   when the tenant is in daily mode and KEYS[2] is not the counter of its open window (ending at END): then
--   nothing is written and the caller sends the call again declaring crmsync:{T}:w:<END>. Every key touched
--   is declared (Redis Cluster requires it).
--   outcome:   takes 1 granted / 0 refused (a refused take writes nothing); refunds: credits returned
--   remaining: credits left including the reserve; window: where the take went (daily: the window's end;
--              rolling: the start of the hour); resets_at: when the next credits come back (epoch s)
--   state:     0 ok, 1 no limit set, 2 invalid (both grant nothing); reason: which value is invalid (lib)
--   mode:      0 daily, 1 rolling
-- This runs before every Salesforce request: the hot path is two or three Redis calls and plain comparisons.

-- include: lib/window.lua

local now = clock(ARGV[2])
local cfg = read_config(KEYS[1], now)
local delta = tonumber(ARGV[1])
local cap = cfg.limit
if ARGV[5] ~= '1' then cap = cfg.limit - cfg.reserve end
local outcome, used, window, resets_at = 0, 0, 0, 0
-- A refund of a take made in the other window mode returns nothing: its window has ended with the switch.
local same_mode = ARGV[6] == nil or ARGV[6] == '' or (ARGV[6] == 'rolling') == cfg.rolling

if cfg.rolling then
  local hour = math.floor(now / STEP)
  local oldest, stale
  used, oldest, stale = rolling_used(KEYS[3], now)
  if not used then cfg.state, cfg.reason, cfg.limit, cap, used = 2, BAD_COUNTER, 0, 0, 0 end
  window = hour * STEP
  if cfg.state == 0 and delta > 0 and used + delta <= cap then
    if #stale > 0 then redis.call('HDEL', KEYS[3], unpack(stale)) end
    if redis.call('HINCRBY', KEYS[3], hour, delta) == delta then
      redis.call('EXPIRE', KEYS[3], (hour + SPAN) * STEP - now + tonumber(ARGV[4]))
    end
    used, outcome = used + delta, 1
    oldest = oldest or hour
  elseif cfg.state == 0 and delta < 0 and same_mode then
    -- Credits go back only into the hour they were taken in, while it still counts, never below zero.
    local from_hour = hour
    if ARGV[3] ~= '' then from_hour = math.floor(tonumber(ARGV[3]) / STEP) end
    if from_hour > hour - SPAN and from_hour <= hour then
      outcome = math.min(-delta, whole(redis.call('HGET', KEYS[3], from_hour)) or 0)
      if outcome > 0 then redis.call('HINCRBY', KEYS[3], from_hour, -outcome); used = used - outcome end
    end
  end
  if oldest then resets_at = (oldest + SPAN) * STEP else resets_at = now end
else
  window = daily_end(cfg, now)
  resets_at = window
  local counter = counter_key(KEYS[3], window)
  if counter ~= KEYS[2] then return {-1, window} end
  if cfg.state == 0 and delta > 0 then
    -- Optimistic: one call on the hot path; a take that overdraws is undone inside this same atomic script.
    used = checked(redis.pcall('INCRBY', counter, delta))
    if not used then
      cfg.state, cfg.reason, cfg.limit, used = 2, BAD_COUNTER, 0, 0
    elseif used < delta or used > cap then
      if used == delta then redis.call('DEL', counter) else redis.call('DECRBY', counter, delta) end
      used = used - delta
      -- Below zero means a hand-written counter: it proves nothing about what was spent.
      if used < 0 then cfg.state, cfg.reason, cfg.limit, used = 2, BAD_COUNTER, 0, 0 end
    else
      if used == delta then redis.call('EXPIRE', counter, window - now + tonumber(ARGV[4])) end
      outcome = 1
    end
  else
    used = daily_used(counter)
    if not used then cfg.state, cfg.reason, cfg.limit, used = 2, BAD_COUNTER, 0, 0 end
    if cfg.state == 0 and delta < 0 and same_mode and (ARGV[3] == '' or tonumber(ARGV[3]) == window) then
      outcome = math.min(-delta, used)
      if outcome > 0 then used = redis.call('DECRBY', counter, outcome) end
    end
  end
end

if cfg.state ~= 0 then cfg.reserve = 0 end
local remaining = cfg.limit - used
if remaining < 0 then remaining = 0 end
local mode = 0
if cfg.rolling then mode = 1 end
return {outcome, remaining, cfg.limit, window, used, cfg.state, resets_at, cfg.reserve, mode, cfg.reason}
