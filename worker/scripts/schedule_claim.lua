-- KEYS: [1] crmsync:schedule:due  "TENANT/OBJECT" scored by when its next pull is due
-- ARGV: [1] member  [2] the score it had when read  [3] its new score, or "" to remove the entry
-- Compare-and-set: moves (or removes) the entry only if its score is still the one read, so of several
-- schedulers that read the same due entry exactly one claims it. Returns 1 if moved or removed, else 0.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then
  return 0
end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
return 1
