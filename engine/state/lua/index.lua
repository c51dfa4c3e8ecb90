-- The listing index (engine/state/index.py): sorted sets scored by start time (real time), member = execution
-- id, all under the one hash tag of BASE ("hf:{idx}:"), so every call touches one cluster slot.
-- KEYS: BASE .. 'e' (eid → the index's view: {w, g, s, p, t}).  A.op: put | drop | page | counts | due
--   put:    eid, w, g, p (parent id or absent), s (status), t (start score), now, force (skip the rank
--           check: a resume goes back from compensation_failed, a repair writes what the record says)
--   drop:   ids (entries whose execution is gone)
--   page:   keys (zset suffixes to merge), max, min (ZRANGEBYSCORE bounds, strings), after (cursor id:
--           skip members with score == cursor score and id >= after), cscore (the cursor's score), n
--   counts: (nothing) → statuses and per-workflow statuses
--   due:    before, n → ids finished before `before` (the sweep checks they still exist)
local E = KEYS[1]
local RANK = {queued = -1, running = 0, compensating = 1, compensation_failed = 2}  -- queued: engine/flow/slots.py
local STATUSES = {'queued', 'running', 'compensating', 'compensation_failed', 'succeeded', 'failed', 'compensated',
                  'cancelled', 'dead'}
local function rank(s) return RANK[s] or 3 end

local function unlink(eid, v)
  redis.call('ZREM', BASE .. 'all', eid)
  redis.call('ZREM', BASE .. 's:' .. v.s, eid)
  redis.call('ZREM', BASE .. 'w:' .. v.w, eid)
  redis.call('ZREM', BASE .. 'ws:' .. v.w .. ':' .. v.s, eid)
  redis.call('ZREM', BASE .. 'g:' .. v.g, eid)
  if v.p then redis.call('ZREM', BASE .. 'p:' .. v.p, eid) end
  redis.call('ZREM', BASE .. 'done', eid)
  redis.call('HDEL', E, eid)
end

if A.op == 'put' then
  local raw = redis.call('HGET', E, A.eid)
  if raw then
    local v = cjson.decode(raw)
    if v.s == A.s then return cjson.encode({kind = 'same'}) end
    if not A.force and rank(A.s) < rank(v.s) then return cjson.encode({kind = 'kept', s = v.s}) end
    redis.call('ZREM', BASE .. 's:' .. v.s, A.eid)
    redis.call('ZREM', BASE .. 'ws:' .. v.w .. ':' .. v.s, A.eid)
    redis.call('ZADD', BASE .. 's:' .. A.s, v.t, A.eid)
    redis.call('ZADD', BASE .. 'ws:' .. v.w .. ':' .. A.s, v.t, A.eid)
    if rank(A.s) == 3 then
      redis.call('ZADD', BASE .. 'done', A.now, A.eid)
    else
      redis.call('ZREM', BASE .. 'done', A.eid)
    end
    v.s = A.s
    redis.call('HSET', E, A.eid, cjson.encode(v))
    return cjson.encode({kind = 'moved'})
  end
  if not A.w then return cjson.encode({kind = 'missing'}) end  -- a transition of an unindexed one
  local v = {w = A.w, g = A.g, s = A.s, t = A.t, p = A.p}
  redis.call('HSET', E, A.eid, cjson.encode(v))
  redis.call('ZADD', BASE .. 'all', A.t, A.eid)
  redis.call('ZADD', BASE .. 's:' .. A.s, A.t, A.eid)
  redis.call('ZADD', BASE .. 'w:' .. A.w, A.t, A.eid)
  redis.call('ZADD', BASE .. 'ws:' .. A.w .. ':' .. A.s, A.t, A.eid)
  redis.call('ZADD', BASE .. 'g:' .. A.g, A.t, A.eid)
  if A.p then redis.call('ZADD', BASE .. 'p:' .. A.p, A.t, A.eid) end
  redis.call('SADD', BASE .. 'wf', A.w)
  if rank(A.s) == 3 then redis.call('ZADD', BASE .. 'done', A.now, A.eid) end
  return cjson.encode({kind = 'added'})
end

if A.op == 'drop' then
  local n = 0
  for _, eid in ipairs(A.ids) do
    local raw = redis.call('HGET', E, eid)
    if raw then
      unlink(eid, cjson.decode(raw))
      n = n + 1
    else
      redis.call('ZREM', BASE .. 'all', eid)
      redis.call('ZREM', BASE .. 'done', eid)
    end
  end
  return cjson.encode({kind = 'dropped', n = n})
end

if A.op == 'page' then
  -- the n newest (score, id) below the cursor in each source; merged newest first, cut to n
  local found = {}
  local cscore = tonumber(A.cscore or '0')
  for _, suffix in ipairs(A.keys) do
    local key = BASE .. suffix
    local got, offset, batch = 0, 0, A.n + 16
    while got < A.n do
      local rows = redis.call('ZREVRANGEBYSCORE', key, A.max, A.min, 'WITHSCORES', 'LIMIT', offset, batch)
      if #rows == 0 then break end
      for i = 1, #rows, 2 do
        local id, score = rows[i], tonumber(rows[i + 1])
        if not (A.after and score == cscore and id >= A.after) then
          found[#found + 1] = {id, score}
          got = got + 1
        end
      end
      if #rows < batch * 2 then break end
      offset = offset + batch
    end
  end
  table.sort(found, function(a, b)
    if a[2] ~= b[2] then return a[2] > b[2] end
    return a[1] > b[1]
  end)
  local out, seen = {}, {}
  for _, item in ipairs(found) do
    if #out >= A.n then break end
    if not seen[item[1]] then
      seen[item[1]] = true
      out[#out + 1] = {item[1], string.format('%.17g', item[2]), redis.call('HGET', E, item[1]) or ''}
    end
  end
  return cjson.encode({kind = 'page', items = out})
end

if A.op == 'counts' then
  local status = {}
  for _, s in ipairs(STATUSES) do
    local c = redis.call('ZCARD', BASE .. 's:' .. s)
    if c > 0 then status[s] = c end
  end
  local workflow = {}
  for _, w in ipairs(redis.call('SMEMBERS', BASE .. 'wf')) do
    local per, any = {}, false
    for _, s in ipairs(STATUSES) do
      local c = redis.call('ZCARD', BASE .. 'ws:' .. w .. ':' .. s)
      if c > 0 then per[s] = c; any = true end
    end
    if any then workflow[w] = per else redis.call('SREM', BASE .. 'wf', w) end
  end
  return cjson.encode({kind = 'counts', status = status, workflow = workflow})
end

if A.op == 'due' then
  local ids = redis.call('ZRANGEBYSCORE', BASE .. 'done', '-inf', A.before, 'LIMIT', 0, A.n)
  return cjson.encode({kind = 'due', ids = ids})
end

return cjson.encode({kind = 'unknown-op'})
