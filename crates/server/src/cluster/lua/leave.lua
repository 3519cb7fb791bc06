-- A clean leave: dates this node's last beat back to the epoch, so that the
-- next reap of any other node takes it at once, through the same exactly-once
-- path as a node that died, and wakes the others up to reap now.
--
-- KEYS[1] the node set; ARGV[1] this node, ARGV[2] the wake-up channel
redis.call('ZADD', KEYS[1], 'XX', 0, ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[1])
return 1
