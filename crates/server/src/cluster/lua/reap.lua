-- Reaps every node whose last beat is older than the deadline, except the
-- caller: removes it from the node set (the claim: scripts run one at a time,
-- so only one caller ever removes a given node), takes its counts off every
-- user it had, and lists the users left with no connection anywhere.
--
-- KEYS[1] the node set
-- ARGV[1] the calling node, ARGV[2] the deadline in ms,
-- ARGV[3] the prefix of node count hashes, ARGV[4] the prefix of user totals
-- Returns {{node, {users now offline everywhere}}, ...}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('(%d', now - tonumber(ARGV[2])))
local gone = {}
for _, node in ipairs(stale) do
  if node ~= ARGV[1] then
    redis.call('ZREM', KEYS[1], node)
    local hash = ARGV[3] .. node
    local flat = redis.call('HGETALL', hash)
    local offline = {}
    for i = 1, #flat, 2 do
      local key = ARGV[4] .. flat[i]
      local left = redis.call('DECRBY', key, tonumber(flat[i + 1]))
      if left <= 0 then
        redis.call('DEL', key)
        table.insert(offline, flat[i])
      end
    end
    redis.call('DEL', hash)
    table.insert(gone, {node, offline})
  end
end
return gone
