-- KEYS: [1] crmsync:{T}:pause
-- ARGV: [1] the reason the caller read
-- Narrows the tenant's pause to normal jobs (essential jobs may go on with the reserve), only if it is still
-- paused for the reason read: a pause widened for another reason meanwhile is left alone. Returns 1 if so, else 0.
if redis.call('HGET', KEYS[1], 'reason') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'scope', 'normal')
return 1
