-- Shared prelude, prepended to every script by engine/state/store.py (scripts cannot include each other).
-- ARGV[1]: the execution's key prefix "hf:{<id>}:"; ARGV[2]: the call's arguments as JSON.
-- Every key a script touches starts with that prefix, so one hash tag = one cluster slot. The caller
-- declares in KEYS every key it can compute (Store.declared_keys; KEYS[1..3] = header, branch, lock);
-- scripts build the same strings from the prefix. Only keys found in stored data stay undeclared: the
-- branches a wake finds parked and the next item a foreach window starts (docs/engine-design.md).
local BASE = ARGV[1]
local A = cjson.decode(ARGV[2])
local OUT = {}

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
