-- Change a tenant's quota config and append each change to its audit trail: the read of what stands and the
-- write of the change are one atomic step, so no take, and no other change, falls between them.
-- KEYS: [1] crmsync:{T}:config      tenant config hash
--       [2] crmsync:{T}:audit       audit list, newest first
--       [3] crmsync:{T}:w:<END>     the daily counter of the window open before the change, as the caller
--                                   believes (END: the window's end, epoch s)
--       [4] crmsync:{T}:w:rolling   the rolling window's hash
--       [5] crmsync:{T}:w:<END2>    the daily counter of the window open after the change (often KEYS[3])
-- ARGV: [1] actor       who made the change
--       [2] now         epoch seconds, or "" for the Redis server's TIME
--       [3] max_audit   entries the audit list keeps
--       [4] grace       seconds a counter outlives the moment its credits come back
--       [5..] field, value pairs to set: limit, reset_at, window, reserve (each validated by the caller)
-- Returns: {changed, refused}: the number of fields whose value changed, and 0 or the reason code (lib) of
--   the field that makes the new config invalid, when nothing is written: the reserve when it is not below
--   the limit, or a stored field holding garbage that this change leaves in place. Or {-1, END, END2} (0 for a
--   counter not needed) when KEYS[3] or KEYS[5] is not the counter needed: nothing is written, and the caller
--   sends the call again declaring those. Every key touched is declared (Redis Cluster requires it).
-- Used credits follow every change: a new reset time never opens a window shorter than 24 hours, and a mode
-- switch carries the credits used in the open window into the new mode, so no change grants extra.

-- include: lib/window.lua

local now = clock(ARGV[2])
local grace = tonumber(ARGV[4])
local old = read_config(KEYS[1], now)

local new = {}
for i = 1, #FIELDS do new[i] = old.raw[i] end
for i = 5, #ARGV, 2 do
  for j = 1, #FIELDS do if FIELDS[j] == ARGV[i] then new[j] = ARGV[i + 1] end end
end
-- A garbage reset_from says nothing about the window: it is dropped rather than kept invalid.
if old.reason == BAD_RESET_FROM then new[3] = false end

-- The merged config must read as valid: a reserve below the limit, and no stored garbage left in place.
local merged = parse_config(new, now)
if merged.state ~= 0 then return {0, merged.reason} end

local was_rolling, rolling, offset = old.rolling, merged.rolling, merged.offset

local old_end = nil
if old.shaped and not was_rolling then old_end = daily_end(old, now) end

-- (A tenant that never had a limit has granted nothing: its first reset time applies at once.)
if not rolling and old.shaped and old.state ~= 1 and not was_rolling and offset ~= old.offset then
  -- The open window keeps its end, and the next one lasts at least 24 hours. A window that is itself the
  -- first under a reset time may take the new time instead, if that still gives it 24 hours and `now`.
  local from = old.from
  if not (from and now < first_end(from, old.offset) and now < first_end(from, offset)) then from = old_end end
  new[3] = tostring(from)
end

-- The daily counters this change may read (the open window's) and write (the window the change opens) must be
-- the ones declared: if not, nothing is written and the caller is told which to declare.
local new_end = nil
if not rolling then new_end = daily_end(parse_config(new, now), now) end
if (old_end and counter_key(KEYS[4], old_end) ~= KEYS[3]) or (new_end and counter_key(KEYS[4], new_end) ~= KEYS[5]) then
  return {-1, old_end or 0, new_end or 0}
end

-- What the open window holds now, in the old mode (garbage counts as the whole limit: fail closed).
local carried = 0
if old.shaped then
  if was_rolling then
    carried = rolling_used(KEYS[4], now) or merged.limit
  else
    carried = daily_used(KEYS[3]) or merged.limit
  end
end

-- Write the fields and their audit entries.
local changed = 0
for i, field in ipairs(FIELDS) do
  local before, after = old.raw[i], new[i]
  if before ~= after then
    if after then redis.call('HSET', KEYS[1], field, after) else redis.call('HDEL', KEYS[1], field) end
    if field ~= 'reset_from' then
      redis.call('LPUSH', KEYS[2], cjson.encode({
        at = now, actor = ARGV[1], field = field, old = before or cjson.null, new = after,
      }))
      changed = changed + 1
    end
  end
end
if changed > 0 then redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1) end

-- Move the credits used so far to where the new config counts them.
if carried > 0 then
  local hour = math.floor(now / STEP)
  if rolling and not was_rolling then
    redis.call('DEL', KEYS[3], KEYS[4])
    redis.call('HSET', KEYS[4], hour, carried)
    redis.call('EXPIRE', KEYS[4], (hour + SPAN) * STEP - now + grace)
  elseif not rolling then
    if was_rolling or new_end ~= old_end then
      local counter = KEYS[5]
      if was_rolling then redis.call('DEL', KEYS[4]) else redis.call('DEL', KEYS[3]) end
      redis.call('INCRBY', counter, carried)
      redis.call('EXPIRE', counter, new_end - now + grace)
    end
  end
end
return {changed, 0}
