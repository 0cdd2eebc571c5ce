-- KEYS: [1] crmsync:scheduler:lease  the id of the scheduler instance allowed to enqueue
-- ARGV: [1] this instance's id  [2] lease time to live in milliseconds
-- Extends the lease only if this instance still holds it; returns 1 if so, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
