-- KEYS: [1] crmsync:{T}:pause  [2] the parked set the job joins: crmsync:{T}:parked or crmsync:{T}:parked:essential
-- ARGV: [1] the job's stored form  [2] its enqueue sequence (its score)  [3] reason  [4] since (epoch seconds)
--       [5] detail  [6] scope: "normal" (only normal jobs must wait: the rest is the reserve) or "all"
-- Parks the job and pauses the tenant, in one step. A tenant already paused keeps its pause (the first reason),
-- except that a pause of normal jobs only becomes a pause of all jobs, with this reason, when scope is "all":
-- essential jobs must then wait too, and for that reason. A pause without a scope is one of all jobs.
-- Returns 1 if this call paused the tenant, 2 if it widened the pause to all jobs, else 0.
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'reason', ARGV[3], 'since', ARGV[4], 'detail', ARGV[5], 'scope', ARGV[6])
  return 1
end
if ARGV[6] == 'all' and redis.call('HGET', KEYS[1], 'scope') == 'normal' then
  redis.call('HSET', KEYS[1], 'reason', ARGV[3], 'detail', ARGV[5], 'scope', 'all')
  return 2
end
return 0
