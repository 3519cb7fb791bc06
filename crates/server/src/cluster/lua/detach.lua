-- Counts one connection of a user less on this node.
--
-- KEYS[1] the node set, KEYS[2] this node's count hash, KEYS[3] the user's total
-- ARGV[1] this node, ARGV[2] the user
-- Returns the user's total left across every node, or -1 when Redis does not
-- hold this node's count of the user (the node was reaped, or Redis restarted
-- empty): recount first.
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return -1
end
local mine = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
if mine <= 0 then
  return -1
end
if mine == 1 then
  redis.call('HDEL', KEYS[2], ARGV[2])
else
  redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
end
local left = redis.call('DECR', KEYS[3])
if left <= 0 then
  redis.call('DEL', KEYS[3])
  return 0
end
return left
