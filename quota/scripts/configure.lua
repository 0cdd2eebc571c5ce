-- Change a tenant's quota config and append each change to its audit trail, atomically.
-- KEYS: [1] crmsync:{T}:config  tenant config hash
--       [2] crmsync:{T}:audit   audit list, newest first
-- ARGV: [1] actor       who made the change
--       [2] now         epoch seconds, or "" for the Redis server's TIME
--       [3] max_audit   entries the audit list keeps
--       [4] reset_from  epoch seconds from which a changed reset time applies ("" = leave as is)
--       [5..] field, value pairs to set (validated by the caller)
-- Returns: the number of fields whose value changed

local now
if ARGV[2] == '' then now = tonumber(redis.call('TIME')[1]) else now = tonumber(ARGV[2]) end

local changed = 0
for i = 5, #ARGV, 2 do
  local field, new = ARGV[i], ARGV[i + 1]
  local old = redis.call('HGET', KEYS[1], field)
  if old ~= new then
    redis.call('HSET', KEYS[1], field, new)
    redis.call('LPUSH', KEYS[2], cjson.encode({
      at = now, actor = ARGV[1], field = field, old = old or cjson.null, new = new,
    }))
    changed = changed + 1
  end
end
if changed > 0 then
  if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'reset_from', ARGV[4]) end
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
end
return changed
