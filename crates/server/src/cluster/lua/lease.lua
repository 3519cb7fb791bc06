-- Takes or renews a lease: one node at a time does a cluster-wide chore.
--
-- KEYS[1] the lease; ARGV[1] this node; ARGV[2] how long it holds, in ms
-- Returns 1 when this node holds the lease now, 0 when another one does.
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
