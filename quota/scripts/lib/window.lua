-- Library included by meter.lua and configure.lua where they name it: reads a tenant's quota config and the
-- credits used in its open window, in either window mode. Nothing here writes.
-- KEYS: none of its own; its functions take the keys their callers declared.
-- ARGV: none of its own.
--
-- daily:   one counter per window, crmsync:{T}:w:<END>; every window lasts at least 24 hours (a changed reset
--          time starts with a window of 24 to 48 hours), so no 24 hours ever see more than two windows' credits.
-- rolling: one hash, crmsync:{T}:w:rolling, field = the hour (epoch // 3600) credits were taken in, value = how
--          many; credits taken in hour H come back at the start of hour H + 25, i.e. 24 to 25 hours later.

local DAY = 86400
local STEP = 3600
local SPAN = 25
local MAX_LIMIT = 1e15

-- Reasons a tenant is invalid (returned to Python, which words them).
local BAD_LIMIT, BAD_RESET_AT, BAD_RESET_FROM, BAD_RESERVE, BAD_WINDOW, BAD_COUNTER = 1, 2, 3, 4, 5, 6

-- A whole non-negative number written as ASCII digits: at most 16 of them, so that anything up to the largest
-- limit (10^15) is held exactly by a Lua double and anything longer is refused before it is read.
local function whole(raw)
  if type(raw) == 'string' and #raw <= 16 and string.find(raw, '^%d+$') then return tonumber(raw) end
  return nil
end

-- What a Redis call guarded by pcall answered: the reply itself, or nil when the key holds the wrong kind of
-- value (garbage: the caller makes the tenant invalid). Any other error (no permission, out of memory) is raised,
-- so the caller sees Redis fail rather than a tenant wrongly called invalid.
local function checked(reply)
  if type(reply) == 'table' and reply.err then
    if string.find(reply.err, 'WRONGTYPE', 1, true) or string.find(reply.err, 'not an integer', 1, true) then
      return nil
    end
    error(reply)
  end
  return reply
end

local function clock(arg)
  if arg == '' then return tonumber(redis.call('TIME')[1]) end
  return tonumber(arg)
end

-- The config fields, in the order parse_config takes them.
local FIELDS = {'limit', 'reset_at', 'reset_from', 'reserve', 'window'}

-- A config's raw values (in FIELDS order), checked field by field. state: 0 ok, 1 no limit set, 2 invalid
-- (reason says which field). shaped: the fields that place windows in time (reset_at, reset_from, window) are
-- valid, so the counters of the open window can be found even when the limit or the reserve is not.
local function parse_config(raw, now)
  local cfg = {state = 0, reason = 0, limit = 0, offset = 0, reserve = 0, rolling = false, from = nil,
               raw = raw, shaped = true}
  local function bad(reason, shape)
    if cfg.state == 0 then cfg.state, cfg.reason = 2, reason end
    if shape then cfg.shaped = false end
  end
  if not raw[1] then
    cfg.state = 1
  else
    cfg.limit = whole(raw[1])
    if not cfg.limit or cfg.limit < 100000 or cfg.limit > MAX_LIMIT then bad(BAD_LIMIT) end
  end
  if raw[2] then
    local hh, mm = string.match(raw[2], '^(%d%d):(%d%d)$')
    hh, mm = tonumber(hh), tonumber(mm)
    if hh and hh < 24 and mm < 60 then cfg.offset = hh * 3600 + mm * 60 else bad(BAD_RESET_AT, true) end
  end
  if raw[3] then
    cfg.from = whole(raw[3])
    -- A reset_from is written as the end of a window open at the time: never more than a day ahead.
    if not cfg.from or cfg.from > now + DAY then cfg.from = nil; bad(BAD_RESET_FROM, true) end
  end
  if raw[4] then
    cfg.reserve = whole(raw[4])
    if not cfg.reserve or (cfg.state == 0 and cfg.reserve >= cfg.limit) then cfg.reserve = 0; bad(BAD_RESERVE) end
  end
  if raw[5] == 'rolling' then cfg.rolling = true elseif raw[5] and raw[5] ~= 'daily' then bad(BAD_WINDOW, true) end
  if cfg.state ~= 0 then cfg.limit, cfg.reserve = 0, 0 end
  return cfg
end

local function read_config(key, now)
  return parse_config(redis.call('HMGET', key, unpack(FIELDS)), now)
end

-- The first moment at or after t that is `offset` seconds past a UTC midnight.
local function boundary_from(t, offset)
  return t + (offset - t) % DAY
end

-- End of the window a reset time started at `from` opens with: the first reset at least 24 hours after `from`.
local function first_end(from, offset)
  return boundary_from(from + DAY, offset)
end

-- End of the daily window open at `now`.
local function daily_end(cfg, now)
  local from = cfg.from
  if from then
    if now < from then return from end
    local ends = first_end(from, cfg.offset)
    if now < ends then return ends end
  end
  return now - (now - cfg.offset) % DAY + DAY
end

-- The daily counter of the window ending at `ends`, named from the tenant's rolling key (crmsync:{T}:w:rolling):
-- the caller must have declared it; the scripts compare it with the key declared and never touch another.
local function counter_key(rolling_key, ends)
  return string.sub(rolling_key, 1, #rolling_key - #'rolling') .. string.format('%d', ends)
end

-- Credits used in a daily window (nil if the counter holds anything but a whole non-negative number).
local function daily_used(counter)
  local raw = checked(redis.pcall('GET', counter))
  if raw == false then return 0 end
  return whole(raw)
end

-- Credits used in the rolling window at `now`, the hour of the oldest of them (nil when none), and the fields
-- of hours that have come back (to drop on the next write). used is nil if the hash holds garbage.
local function rolling_used(key, now)
  local all = checked(redis.pcall('HGETALL', key))
  if not all then return nil end
  local hour = math.floor(now / STEP)
  local used, oldest, stale = 0, nil, {}
  for i = 1, #all, 2 do
    local h, n = whole(all[i]), whole(all[i + 1])
    if not h or not n or h > hour + SPAN then return nil end
    if h <= hour - SPAN then
      stale[#stale + 1] = all[i]
    else
      used = used + n
      if n > 0 and (not oldest or h < oldest) then oldest = h end
    end
  end
  return used, oldest, stale
end
