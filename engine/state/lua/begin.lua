-- Start one node: check the message is current, take the branch lock, load what the node reads.
-- KEYS: header, branch, lock.  A: eid, seq, node, branch, token, lock_ms, hfields, outputs, vars, ancestors,
--   vmerge (declared merge vars the node reads: assembled from hf:{E}:vm)
--   now, skew (seconds a delivery may come before its wake-up time and still run)
local function outbox() return redis.call('HGETALL', BASE .. 'out') end

if redis.call('EXISTS', KEYS[1]) == 0 then return result({kind = 'missing'}) end
local br = hmap(redis.call('HGETALL', KEYS[2]))
local seq = tonumber(br.seq or '-1')
local node = br.node or ''
local base_node = A.node
local hash = string.find(A.node, '#', 1, true)
if hash then base_node = string.sub(A.node, 1, hash - 1) end

if seq ~= A.seq or node ~= base_node then
  -- a message from a checkpoint that is being written right now: ask for a redelivery
  if A.seq > seq and redis.call('EXISTS', KEYS[3]) == 1 then return result({kind = 'busy'}) end
  -- offloaded calls recorded but not yet handed over (a crash after a checkpoint): hand them again
  return result({kind = 'stale', outbox = outbox(), calls = redis.call('HGETALL', BASE .. 'oc')})
end

local hdr = redis.call('HMGET', KEYS[1], unpack(A.hfields))
local status = hdr[1]
-- a partial unwind's compensation gave up (compensation_failed, `undo` names it): the rest of the
-- execution goes on meanwhile; only that fan-out waits for `resume` (docs/semantics.md)
local going = status == 'running' or status == 'compensating'
  or (status == 'compensation_failed' and redis.call('HEXISTS', KEYS[1], 'undo') == 1)
if not going then
  return result({kind = 'finished', status = status, outbox = outbox()})
end
-- a delayed message delivered before its recorded wake-up time: re-defer it, change nothing
if br.wake then
  local ws, wn, wt = string.match(br.wake, '^(%d+)|(.*)|([%d%.]+)$')
  if ws and tonumber(ws) == A.seq and wn == A.node and tonumber(wt) > A.now + (A.skew or 1) then
    return result({kind = 'early', wake = tonumber(wt)})
  end
end
if not redis.call('SET', KEYS[3], A.token, 'NX', 'PX', A.lock_ms) then return result({kind = 'busy'}) end

local r = {kind = 'ok', header = hdr, branch = br, comps = redis.call('LLEN', BASE .. 'c')}
if #A.outputs > 0 then r.outputs = redis.call('HMGET', BASE .. 'o', unpack(A.outputs)) end
if A.vars == '*' then
  r.vars = redis.call('HGETALL', BASE .. 'v')
elseif #A.vars > 0 then
  r.vars = redis.call('HMGET', BASE .. 'v', unpack(A.vars))
end
if A.vmerge and #A.vmerge > 0 then
  -- merge vars live in hf:{E}:vm as "<name>\n<json key>" → json value: assemble each as an object
  local groups = {}
  local all = redis.call('HGETALL', BASE .. 'vm')
  for i = 1, #all, 2 do
    local cut = string.find(all[i], '\n', 1, true)
    local name = string.sub(all[i], 1, cut - 1)
    groups[name] = groups[name] or {}
    table.insert(groups[name], string.sub(all[i], cut + 1) .. ':' .. all[i + 1])
  end
  local merged = {}
  for _, name in ipairs(A.vmerge) do
    local g = groups[name] or {}
    table.sort(g)
    merged[#merged + 1] = name
    merged[#merged + 1] = '{' .. table.concat(g, ',') .. '}'
  end
  r.vmerged = merged
end
local aborts = {}
for i, p in ipairs(A.ancestors) do aborts[i] = redis.call('HGET', bkey(p), 'abort') end
r.aborts = aborts
if br.phase == 'join' then
  r.results = redis.call('HGETALL', BASE .. 'r:' .. A.branch .. ':' .. node)
  if br.fx and not br.fud and A.node == node then
    -- it ended early: the stack entries pushed since it started (the newest last), for its losers'
    local fc = tonumber(br.fc or '0')
    local tail, stop, k = {}, false, 0
    local ck = BASE .. 'c'
    while not stop do
      local chunk = redis.call('LRANGE', ck, -(k + 100), -(k + 1))
      if #chunk == 0 then break end
      for i = #chunk, 1, -1 do
        local n = tonumber(string.match(chunk[i], '"n":(%d+)}$') or '0')
        if n <= fc then stop = true; break end
        table.insert(tail, 1, chunk[i])
      end
      if #chunk < 100 then break end
      k = k + 100
    end
    r.tail = tail
  end
elseif br.phase == 'compensate' then
  r.top = redis.call('LINDEX', BASE .. 'c', -1)
elseif br.phase == 'undo' then
  local uk = BASE .. 'u:' .. A.branch .. ':' .. node
  r.top = redis.call('LINDEX', uk, -1)
  r.left = redis.call('LLEN', uk)
end
return result(r)
