-- Registers this node (a beat) and makes its counts in Redis exactly the ones
-- it holds itself: after it was reaped during a pause, after Redis restarted
-- empty, after a command whose outcome is unknown, and once at start (which
-- clears what an earlier process with the same node id left behind).
--
-- KEYS[1] the node set, KEYS[2] this node's count hash
-- ARGV[1] this node, ARGV[2] the prefix of user total keys,
-- ARGV[3], ARGV[4], ... pairs of user and count
-- Returns {users now online anywhere, users now offline everywhere}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])

local want = {}
for i = 3, #ARGV, 2 do
  want[ARGV[i]] = tonumber(ARGV[i + 1])
end
local have = {}
local flat = redis.call('HGETALL', KEYS[2])
for i = 1, #flat, 2 do
  have[flat[i]] = tonumber(flat[i + 1])
end

local online, offline = {}, {}
local function shift(user, delta)
  local key = ARGV[2] .. user
  local before = tonumber(redis.call('GET', key) or '0')
  local after = before + delta
  if after <= 0 then
    redis.call('DEL', key)
  else
    redis.call('SET', key, after)
  end
  if before <= 0 and after > 0 then
    table.insert(online, user)
  elseif before > 0 and after <= 0 then
    table.insert(offline, user)
  end
end
for user, n in pairs(want) do
  local delta = n - (have[user] or 0)
  if delta ~= 0 then
    shift(user, delta)
  end
end
for user, n in pairs(have) do
  if want[user] == nil then
    shift(user, -n)
  end
end

redis.call('DEL', KEYS[2])
for user, n in pairs(want) do
  redis.call('HSET', KEYS[2], user, n)
end
return {online, offline}
