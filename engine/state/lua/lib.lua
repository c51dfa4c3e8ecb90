-- Shared prelude, prepended to every script by engine/state/store.py (scripts cannot include each other).
-- ARGV[1]: the execution's key prefix "hf:{<id>}:"; ARGV[2]: the call's arguments as JSON.
-- Every key a script touches starts with that prefix, so one hash tag = one cluster slot. The caller
-- declares in KEYS every key it can compute (Store.declared_keys; KEYS[1..3] = header, branch, lock);
-- scripts build the same strings from the prefix. Only keys found in stored data stay undeclared: the
-- branches a wake finds parked and the next item a foreach window starts (docs/engine-design.md).
local BASE = ARGV[1]
local A = cjson.decode(ARGV[2])
local OUT = {}
local NOW_OWN = {}  -- {node, seq} of each immediate message this call emits to its own branch

local function bkey(path) return BASE .. 'b:' .. path end

local function hmap(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

local function dedup(eid, branch, seq, node)
  local b = '-'
  if branch ~= '' then b = (string.gsub(branch, '/', '.')) end
  return eid .. ':' .. b .. ':' .. seq .. ':' .. node
end

local function jstr(s) return cjson.encode(s) end

-- Record one outgoing message in the outbox (field = deduplication id) and in this call's result.
local function emit(eid, node, seq, branch, delay_ms, not_before)
  local m = '{"execution_id":' .. jstr(eid) .. ',"node":' .. jstr(node) .. ',"seq":' .. seq
  if branch ~= '' then m = m .. ',"branch":' .. jstr(branch) end
  m = m .. '}'
  local nb = 'null'
  if not_before then nb = string.format('%.3f', not_before) end
  local body = '{"message":' .. m .. ',"delay_ms":' .. math.floor(delay_ms or 0) .. ',"not_before":' .. nb
    .. ',"at":' .. string.format('%.3f', A.now) .. ',"wall":' .. string.format('%.3f', A.wall or A.now) .. '}'
  local id = dedup(eid, branch, seq, node)
  redis.call('HSET', BASE .. 'out', id, body)
  OUT[#OUT + 1] = {id, body}
  if eid == A.eid and branch == A.branch and math.floor(delay_ms or 0) == 0 and not not_before then
    NOW_OWN[#NOW_OWN + 1] = {node, tonumber(seq)}  -- the caller's branch's own immediate next node(s)
  end
end

local function history(fields)
  redis.call('XADD', BASE .. 'x', 'MAXLEN', '~', A.hmax or 10000, '*', unpack(fields))
end

-- Wake every parked branch under `prefix` (nil: all): bump its seq so the pending delayed message
-- goes stale, and send it an immediate message; it then sees the stop/abort flag at its boundary.
local function wake(eid, prefix, except)
  local parked = redis.call('HGETALL', BASE .. 'p')
  for i = 1, #parked, 2 do
    local br = parked[i]
    if br ~= except and (prefix == nil or string.sub(br, 1, #prefix) == prefix) then
      local k = bkey(br)
      local s = redis.call('HINCRBY', k, 'seq', 1)
      local node = redis.call('HGET', k, 'node')
      local oc = redis.call('HGET', k, 'oc')  -- an offloaded call not yet handed over: never make it
      if oc then
        redis.call('HDEL', BASE .. 'oc', oc)
        redis.call('HDEL', k, 'oc')
      end
      redis.call('HDEL', BASE .. 'p', br)
      emit(eid, node, s, br, 0, nil)
    end
  end
end

local function result(t)
  if #OUT > 0 then t.out = OUT end
  return cjson.encode(t)
end

-- begin.lua's work (check the message is current, take the branch lock, load what the node reads),
-- shared with checkpoint.lua, which does it for the branch's next node in a chain (A.next):
-- B: begin's arguments; KH, KB, KL: header, branch and lock keys. Returns the answer's table.
local function begin_node(B, KH, KB, KL)
  local function outbox() return redis.call('HGETALL', BASE .. 'out') end

  if redis.call('EXISTS', KH) == 0 then return {kind = 'missing'} end
  local br = hmap(redis.call('HGETALL', KB))
  local seq = tonumber(br.seq or '-1')
  local node = br.node or ''
  local base_node = B.node
  local hash = string.find(B.node, '#', 1, true)
  if hash then base_node = string.sub(B.node, 1, hash - 1) end

  if seq ~= B.seq or node ~= base_node then
    -- a message from a checkpoint that is being written right now: ask for a redelivery
    if B.seq > seq and redis.call('EXISTS', KL) == 1 then return {kind = 'busy'} end
    -- offloaded calls recorded but not yet handed over (a crash after a checkpoint): hand them again
    return {kind = 'stale', outbox = outbox(), calls = redis.call('HGETALL', BASE .. 'oc')}
  end

  local hdr = redis.call('HMGET', KH, unpack(B.hfields))
  local status = hdr[1]
  -- a partial unwind's compensation gave up (compensation_failed, `undo` names it): the rest of the
  -- execution goes on meanwhile; only that fan-out waits for `resume` (docs/semantics.md)
  local going = status == 'running' or status == 'compensating'
    or (status == 'compensation_failed' and redis.call('HEXISTS', KH, 'undo') == 1)
  if not going then
    return {kind = 'finished', status = status, outbox = outbox()}
  end
  -- a delayed message delivered before its recorded wake-up time: re-defer it, change nothing
  if br.wake then
    local ws, wn, wt = string.match(br.wake, '^(%d+)|(.*)|([%d%.]+)$')
    if ws and tonumber(ws) == B.seq and wn == B.node and tonumber(wt) > B.now + (B.skew or 1) then
      return {kind = 'early', wake = tonumber(wt)}
    end
  end
  if not redis.call('SET', KL, B.token, 'NX', 'PX', B.lock_ms) then return {kind = 'busy'} end

  local r = {kind = 'ok', header = hdr, branch = br, comps = redis.call('LLEN', BASE .. 'c')}
  if #B.outputs > 0 then r.outputs = redis.call('HMGET', BASE .. 'o', unpack(B.outputs)) end
  if B.vars == '*' then
    r.vars = redis.call('HGETALL', BASE .. 'v')
  elseif #B.vars > 0 then
    r.vars = redis.call('HMGET', BASE .. 'v', unpack(B.vars))
  end
  if B.vmerge and #B.vmerge > 0 then
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
    for _, name in ipairs(B.vmerge) do
      local g = groups[name] or {}
      table.sort(g)
      merged[#merged + 1] = name
      merged[#merged + 1] = '{' .. table.concat(g, ',') .. '}'
    end
    r.vmerged = merged
  end
  local aborts = {}
  for i, p in ipairs(B.ancestors) do aborts[i] = redis.call('HGET', bkey(p), 'abort') end
  r.aborts = aborts
  if br.phase == 'join' then
    r.results = redis.call('HGETALL', BASE .. 'r:' .. B.branch .. ':' .. node)
    if br.fx and not br.fud and B.node == node then
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
    local uk = BASE .. 'u:' .. B.branch .. ':' .. node
    r.top = redis.call('LINDEX', uk, -1)
    r.left = redis.call('LLEN', uk)
  end
  return r
end
