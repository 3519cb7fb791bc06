-- Refreshes this node's heartbeat, scored with Redis's clock so that the
-- nodes' own clocks never have to agree.
--
-- KEYS[1] the node set; ARGV[1] this node
-- Returns 1, or 0 when the node is not registered (it was reaped, or Redis
-- restarted empty): the caller then recounts, which registers it again.
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
return 1
