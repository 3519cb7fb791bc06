-- Counts one more connection of a user on this node, unless the user's total
-- across every node has reached the cap. One script, so that two nodes
-- attaching at once cannot both see room for the last place.
--
-- KEYS[1] the node set, KEYS[2] this node's count hash, KEYS[3] the user's total
-- ARGV[1] this node, ARGV[2] the user, ARGV[3] the cap
-- Returns {status, total before}: status 1 counted, 0 refused, -1 this node is
-- not registered (it was reaped, or Redis restarted empty): recount first.
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return {-1, 0}
end
local total = tonumber(redis.call('GET', KEYS[3]) or '0')
if total >= tonumber(ARGV[3]) then
  return {0, total}
end
redis.call('INCR', KEYS[3])
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
return {1, total}
