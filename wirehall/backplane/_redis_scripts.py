"""The Lua scripts of the Redis backplane; each runs atomically inside Redis.

Keys are built inside the scripts from the prefix, so they suit a Redis reached at one
address, not Redis Cluster.
"""

from __future__ import annotations

from typing import Final

__all__ = ["HEARTBEAT", "LEAVE", "PRESENCE", "RESYNC"]

# Deletes the members of node `n` from every room listed in its node-rooms set
# and returns the rooms that lost a member. Shared by the scripts below.
_DROP_NODE: Final = """
local function drop_node(prefix, n)
  local rooms_key = prefix .. ':node-rooms:' .. n
  local head = n .. '.'
  local len = #head
  local changed = {}
  for _, room in ipairs(redis.call('SMEMBERS', rooms_key)) do
    local key = prefix .. ':presence:' .. room
    local removed = 0
    for _, field in ipairs(redis.call('HKEYS', key)) do
      if string.sub(field, 1, len) == head then
        removed = removed + redis.call('HDEL', key, field)
      end
    end
    if removed > 0 then changed[#changed + 1] = room end
  end
  redis.call('DEL', rooms_key)
  return changed
end
"""

# ARGV: prefix, node, ttl_ms. Renews this node's liveness, then claims every registered node
# whose liveness key is gone (SREM inside this atomic script, so exactly one caller gets to
# purge it) and deletes its members. Returns {existed, dead_nodes, changed_rooms}.
HEARTBEAT: Final = (
    _DROP_NODE
    + """
local prefix, node, ttl = ARGV[1], ARGV[2], ARGV[3]
local nodes_key = prefix .. ':nodes'
local live_key = prefix .. ':node:' .. node
local existed = redis.call('EXISTS', live_key)
redis.call('SET', live_key, '1', 'PX', ttl)
redis.call('SADD', nodes_key, node)
local dead, rooms, seen = {}, {}, {}
for _, n in ipairs(redis.call('SMEMBERS', nodes_key)) do
  if redis.call('EXISTS', prefix .. ':node:' .. n) == 0 then
    redis.call('SREM', nodes_key, n)
    dead[#dead + 1] = n
    for _, room in ipairs(drop_node(prefix, n)) do
      if not seen[room] then
        seen[room] = true
        rooms[#rooms + 1] = room
      end
    end
  end
end
return {existed, dead, rooms}
"""
)

# ARGV: prefix, node, ttl_ms, then (room, member, identity) triples: the complete presence
# of this node. Replaces whatever Redis holds for this node with exactly that, renews its
# liveness, and returns the rooms whose content for this node changed.
RESYNC: Final = """
local prefix, node, ttl = ARGV[1], ARGV[2], ARGV[3]
local rooms_key = prefix .. ':node-rooms:' .. node
local head = node .. '.'
local len = #head
local old, new = {}, {}
for _, room in ipairs(redis.call('SMEMBERS', rooms_key)) do
  local key = prefix .. ':presence:' .. room
  local flat = redis.call('HGETALL', key)
  local members = {}
  for i = 1, #flat, 2 do
    if string.sub(flat[i], 1, len) == head then
      members[flat[i]] = flat[i + 1]
      redis.call('HDEL', key, flat[i])
    end
  end
  old[room] = members
end
redis.call('DEL', rooms_key)
for i = 4, #ARGV, 3 do
  local room, member, identity = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  redis.call('HSET', prefix .. ':presence:' .. room, member, identity)
  redis.call('SADD', rooms_key, room)
  local members = new[room]
  if not members then
    members = {}
    new[room] = members
  end
  members[member] = identity
end
redis.call('SET', prefix .. ':node:' .. node, '1', 'PX', ttl)
redis.call('SADD', prefix .. ':nodes', node)
local changed = {}
for room, members in pairs(old) do
  local now = new[room] or {}
  local same = true
  for member, identity in pairs(members) do
    if now[member] ~= identity then same = false break end
  end
  if same then
    for member, identity in pairs(now) do
      if members[member] ~= identity then same = false break end
    end
  end
  if not same then changed[#changed + 1] = room end
end
for room, _ in pairs(new) do
  if not old[room] then changed[#changed + 1] = room end
end
return changed
"""

# ARGV: prefix, node. Removes this node entirely (used by close()).
LEAVE: Final = (
    _DROP_NODE
    + """
local prefix, node = ARGV[1], ARGV[2]
local rooms = drop_node(prefix, node)
redis.call('DEL', prefix .. ':node:' .. node)
redis.call('SREM', prefix .. ':nodes', node)
return rooms
"""
)

# ARGV: prefix, room. The room's members whose node is alive, as one msgpack array
# (member, identity, member, identity, ...).
PRESENCE: Final = """
local prefix, room = ARGV[1], ARGV[2]
local flat = redis.call('HGETALL', prefix .. ':presence:' .. room)
local alive, out = {}, {}
for i = 1, #flat, 2 do
  local member = flat[i]
  local dot = string.find(member, '.', 1, true)
  if dot then
    local n = string.sub(member, 1, dot - 1)
    local live = alive[n]
    if live == nil then
      live = redis.call('EXISTS', prefix .. ':node:' .. n) == 1
      alive[n] = live
    end
    if live then
      out[#out + 1] = member
      out[#out + 1] = flat[i + 1]
    end
  end
end
return cmsgpack.pack(out)
"""
