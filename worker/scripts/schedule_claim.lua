-- KEYS: [1] crmsync:schedule:due  "TENANT/OBJECT" scored by when its next pull is due
-- ARGV: triples, one per entry: [3i-2] member  [3i-1] the score it had when read  [3i] its new score, or ""
--       to remove the entry
-- Compare-and-set, entry by entry: moves (or removes) an entry only if its score is still the one read, so of
-- several schedulers that read the same due entry exactly one claims it. The scheduler claims a batch in one
-- call (due time -> a hold a lease TTL ahead), then moves each queued entry on (hold -> next due time) or hands
-- it back (hold -> the due time read), both with this script. Returns one 1 (moved or removed) or 0 per entry.
local due = KEYS[1]
local result = {}
for i = 1, #ARGV, 3 do
  local member = ARGV[i]
  local score = redis.call('ZSCORE', due, member)
  if not score or tonumber(score) ~= tonumber(ARGV[i + 1]) then
    result[#result + 1] = 0
  else
    if ARGV[i + 2] == '' then
      redis.call('ZREM', due, member)
    else
      redis.call('ZADD', due, ARGV[i + 2], member)
    end
    result[#result + 1] = 1
  end
end
return result
