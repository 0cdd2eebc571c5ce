-- KEYS: [1] crmsync:scheduler:lease
-- ARGV: [1] this instance's id
-- Drops the lease only if this instance holds it (never another's); returns 1 if dropped, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
