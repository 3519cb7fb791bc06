-- Every registered node's connections, summed (the cluster's total).
--
-- KEYS[1] the node set; ARGV[1] the prefix of a node's hash of counts
local total = 0
for _, node in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  for _, n in ipairs(redis.call('HVALS', ARGV[1] .. node)) do
    total = total + tonumber(n)
  end
end
return total
