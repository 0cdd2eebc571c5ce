-- KEYS: [1] crmsync:{T}:active  object -> id of its pull that is queued, running or parked
--       [1+i] crmsync:{T}:job:<JOB_i>  the record of the i-th pull just sent (one tenant, so one slot)
-- ARGV: [1] now (epoch seconds)  [2] the job records' TTL in seconds
--       then four per job: object key (the active field), job id, object as queued, priority
-- Records pulls whose messages were just sent (the message goes first, so a scheduler that dies in between
-- leaves a pull without a record, never a record without a message that would block its object). A worker
-- may already have taken the job: its state (and counts) are then kept, only what the message fixed is written.
-- Each job becomes its object's active pull. Returns the number of jobs recorded.
local now, ttl = ARGV[1], tonumber(ARGV[2])
local n = 0
for i = 3, #ARGV, 4 do
  n = n + 1
  local job = KEYS[1 + n]
  redis.call('HSET', job, 'kind', 'pull', 'object', ARGV[i + 2], 'priority', ARGV[i + 3])
  if redis.call('HEXISTS', job, 'state') == 0 then
    redis.call('HSET', job, 'state', 'queued', 'credits', 0, 'records', 0, 'updated_at', now)
  end
  redis.call('EXPIRE', job, ttl)
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return n
