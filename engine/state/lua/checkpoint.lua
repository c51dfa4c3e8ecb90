-- Write one node's outcome atomically, fenced: only while the caller still holds the branch lock and
-- the branch's seq is the one it started from. Also counts joins and starts queued foreach items.
-- KEYS: header, branch, lock.
-- A: eid, branch, seq, token, now, hmax, ancestors, outputs (or oraw: their fields, values in ARGV[3…]),
--    vars, comp_push, comp_pop, hset, hdel,
--    bset, bdel, history, consumed, msgs, park, self_node, fanout, finish_branch, output_from_last,
--    call ({id, body}: an offloaded call to record in hf:{E}:oc),
--    fanout_timeout ({abort, scope}: a parallel/foreach's timeout passed while it waits for its join),
--    reduce ([{n, op, v | kv}]: contributions to declared vars, combined here with what is stored, so
--    concurrent branches never lose one; see engine/state/reducers.py),
--    undo ({node, start | pop | fail | done}: a fan-out's partial unwind, engine/sagas.py; the losers'
--    entries live in hf:{E}:u:<branch>:<node> while it runs),
--    next (begin's arguments for the node the caller chains: begun here, answered as `next`)
-- Races (docs/semantics.md "Races and early exits"), on the joining branch's hash: fw (wait_for: how
-- many successes end a parallel), fok/fno (successes/failures so far), ferr (the first failure),
-- fu (a foreach's `until` held: start no more items), ft/ftl (item/branch timeouts, ms); on a child:
-- t0 (the seq it started with: which run of it a `$branch-timeout` message is about), tmo (its timeout).
-- Partial unwinds (docs/semantics.md "Losers are undone at once"): every stack entry carries n (the
-- header's counter cn at its push); a fan-out records fc (cn when it started), fx (it ended early: a
-- race decided, its own or a child's timeout), and per child in its results hash "s:<i>" = h (halted),
-- f (failed or timed out), l (succeeded after the end was decided); fud: its losers are undone;
-- while undoing: uleft (entries left), utop (the next one), ufail (a compensation gave up: attempts)
-- seq first: "someone else advanced" (the caller's work is superseded) differs from "my lock
-- expired but nobody advanced" (the caller must not acknowledge: the message has to come back)
local seq = tonumber(redis.call('HGET', KEYS[2], 'seq') or '-1')
if seq ~= A.seq then return result({ok = false, why = 'seq'}) end
if redis.call('GET', KEYS[3]) ~= A.token then return result({ok = false, why = 'lock'}) end
local newseq = seq + 1
local eid = A.eid

-- has someone asked this branch to stop (cancel/timeout, or a failed sibling in an enclosing scope)?
local stopped = redis.call('HEXISTS', KEYS[1], 'stop') == 1
if not stopped then
  for _, p in ipairs(A.ancestors) do
    if redis.call('HEXISTS', bkey(p), 'abort') == 1 then stopped = true end
  end
end
if redis.call('HEXISTS', KEYS[2], 'tmo') == 1 then stopped = true end  -- its own branch timeout passed

-- one HSET per hash, whatever the number of fields
local function hset_all(key, map, extra)
  local args = {}
  if map then
    for f, v in pairs(map) do args[#args + 1] = f; args[#args + 1] = v end
  end
  if extra then
    for i = 1, #extra do args[#args + 1] = extra[i] end
  end
  if #args > 0 then redis.call('HSET', key, unpack(args)) end
end

hset_all(BASE .. 'o', A.outputs)
if A.oraw then  -- outputs passed raw (Store.run): field A.oraw[i] = ARGV[2 + i]
  local args = {}
  for i, f in ipairs(A.oraw) do args[#args + 1] = f; args[#args + 1] = ARGV[2 + i] end
  redis.call('HSET', BASE .. 'o', unpack(args))
end
hset_all(BASE .. 'v', A.vars)
if A.reduce then
  local vk = BASE .. 'v'
  for _, r in ipairs(A.reduce) do
    if r.op == 'append' or r.op == 'extend' then
      if r.v ~= '' then  -- extend with an empty list adds nothing
        local cur = redis.call('HGET', vk, r.n)
        if not cur or string.sub(cur, 1, 1) ~= '[' or string.match(cur, '^%[%s*%]$') then
          cur = '[' .. r.v .. ']'
        else
          cur = string.sub(cur, 1, -2) .. ',' .. r.v .. ']'
        end
        redis.call('HSET', vk, r.n, cur)
      end
    elseif r.op == 'sum' then
      local total = (tonumber(redis.call('HGET', vk, r.n) or '0') or 0) + tonumber(r.v)
      if total == total and total ~= math.huge and total ~= -math.huge then
        redis.call('HSET', vk, r.n, string.format('%.17g', total))
      end
    elseif r.op == 'min' or r.op == 'max' then
      local cur = tonumber(redis.call('HGET', vk, r.n) or 'null')
      local v = tonumber(r.v)
      if cur == nil or (r.op == 'min' and v < cur) or (r.op == 'max' and v > cur) then
        redis.call('HSET', vk, r.n, r.v)
      end
    elseif r.op == 'merge' and #r.kv > 0 then
      local args = {}
      for i = 1, #r.kv, 2 do
        args[#args + 1] = r.n .. '\n' .. r.kv[i]
        args[#args + 1] = r.kv[i + 1]
      end
      redis.call('HSET', BASE .. 'vm', unpack(args))
    end
  end
end
if A.comp_pop then redis.call('RPOP', BASE .. 'c') end
if A.comp_push then
  local n = redis.call('HINCRBY', KEYS[1], 'cn', 1)  -- which run pushed it: a fan-out knows its own (fc)
  redis.call('RPUSH', BASE .. 'c', string.sub(A.comp_push, 1, -2) .. ',"n":' .. n .. '}')
end
local U = A.undo
if U then
  local uk = BASE .. 'u:' .. A.branch .. ':' .. U.node
  if U.start then  -- move the losers' entries off the saga's stack, in their order, onto the fan-out's
    for _, e in ipairs(U.start) do
      if redis.call('LREM', BASE .. 'c', -1, e) == 1 then redis.call('RPUSH', uk, e) end
    end
  end
  if U.pop then redis.call('RPOP', uk) end
  if U.done then redis.call('DEL', uk) end
  local top = redis.call('LINDEX', uk, -1)  -- what it undoes next (status and the dashboard say so)
  if top then redis.call('HSET', KEYS[2], 'utop', top) else redis.call('HDEL', KEYS[2], 'utop') end
  if U.fail then  -- a compensation gave up: `resume` sends this message again (resume.lua)
    local waiting = {}
    local raw = redis.call('HGET', KEYS[1], 'undo')
    if raw then waiting = cjson.decode(raw) end
    waiting[#waiting + 1] = {branch = A.branch, node = U.node, seq = newseq}
    redis.call('HSET', KEYS[1], 'undo', cjson.encode(waiting))
  end
end
hset_all(KEYS[1], A.hset)
if A.hdel and #A.hdel > 0 then redis.call('HDEL', KEYS[1], unpack(A.hdel)) end
if A.output_from_last then
  local last = redis.call('HGET', KEYS[2], 'last')
  local value = 'null'
  if last then value = redis.call('HGET', BASE .. 'o', last) or 'null' end
  redis.call('HSET', KEYS[1], 'output', value)
end
if A.bdel and #A.bdel > 0 then redis.call('HDEL', KEYS[2], unpack(A.bdel)) end
hset_all(KEYS[2], A.bset, {'seq', newseq})
-- a fan-out's timeout: stop what has not finished; if everything has (the join message, sent with the
-- old seq, is now stale), join at once
local T = A.fanout_timeout
if T then
  local fin = tonumber(redis.call('HGET', KEYS[2], 'fin') or '0')
  local started = tonumber(redis.call('HGET', KEYS[2], 'next') or '0')
  local total = tonumber(redis.call('HGET', KEYS[2], 'total') or '0')
  local aborted = redis.call('HEXISTS', KEYS[2], 'abort') == 1
  if fin >= started and (aborted or started >= total) then
    emit(eid, A.self_node, newseq, A.branch, 0, nil)
  elseif not aborted then
    redis.call('HSET', KEYS[2], 'abort', T.abort, 'fx', 1)
    wake(eid, T.scope, A.branch)
  end
end
if A.history then
  for _, h in ipairs(A.history) do history(h) end
end
if A.consumed then redis.call('HDEL', BASE .. 'out', A.consumed) end

-- offloaded calls: any checkpoint of the branch ends its pending call record (answered, timed out,
-- halted); a new call is recorded (unless stopping) until the interpreter has handed it over
local pending = redis.call('HGET', KEYS[2], 'oc')
if pending then
  redis.call('HDEL', BASE .. 'oc', pending)
  redis.call('HDEL', KEYS[2], 'oc')
end
local called = false
if A.call and not stopped then
  redis.call('HSET', BASE .. 'oc', A.call.id, A.call.body)
  redis.call('HSET', KEYS[2], 'oc', A.call.id)
  called = true
end

-- this branch's own next message(s); a stop flag turns delays into "now" (except a compensation's
-- retry backoff: unwinding is what a stop asks for, so it keeps its pace). A delayed one's wake-up
-- time is kept on the branch ("<seq>|<node>|<unix seconds>"): begin.lua re-defers a delivery of that
-- message that comes earlier, whatever the dispatcher's headers said (a relayed long delay, a replay)
redis.call('HDEL', KEYS[2], 'wake')
local own = false
local hurry = stopped
if hurry then
  local phase = redis.call('HGET', KEYS[2], 'phase')
  if phase == 'compensate' or phase == 'undo' then hurry = false end
end
if A.msgs then
  for _, m in ipairs(A.msgs) do
    local s = m.seq
    if s < 0 then s = newseq end
    local delay, nb = m.delay_ms, m.not_before
    if m.branch == A.branch and m.eid == nil then
      own = true
      if hurry then delay, nb = 0, nil end
      local at = nb
      if not at and delay and delay > 0 then at = A.now + delay / 1000 end
      if at then redis.call('HSET', KEYS[2], 'wake', s .. '|' .. m.node .. '|' .. string.format('%.3f', at)) end
    end
    emit(m.eid or eid, m.node, s, m.branch, delay, nb)
  end
end
if A.park and not stopped then
  redis.call('HSET', BASE .. 'p', A.branch, newseq)
else
  redis.call('HDEL', BASE .. 'p', A.branch)
  if A.park and not own then emit(eid, A.self_node, newseq, A.branch, 0, nil) end
end

-- start child branch `i` of the fan-out owned by node `pnode` of branch `parent` (hash `pk`)
local function start_child(parent, pk, pnode, i, entry)
  local child = pnode .. '/' .. i
  if parent ~= '' then child = parent .. '/' .. child end
  local ck = bkey(child)
  local cseq = redis.call('HINCRBY', ck, 'seq', 1)
  redis.call('DEL', BASE .. 'l:' .. child)
  local keep = {'node', 'phase', 'attempt', 'pb', 'idx', 'ploc', 'item', 'as', 'error', 'last', 'park',
                'abort', 'total', 'next', 'fin', 'fk', 'fe', 'fas', 'cloc', 'oc', 'wake',
                'fw', 'fok', 'fno', 'ferr', 'fu', 'ft', 'ftl', 't0', 'tdue', 'tmo',
                'fc', 'fx', 'fud', 'uleft', 'ufail', 'utop'}
  redis.call('HDEL', ck, unpack(keep))
  redis.call('HSET', ck, 'node', entry, 'phase', 'run', 'attempt', 1, 'pb', parent, 'idx', i,
             'ploc', redis.call('HGET', pk, 'cloc') or '{}')
  if redis.call('HGET', pk, 'fk') == 'foreach' then
    redis.call('HSET', ck, 'item', redis.call('LINDEX', BASE .. 'i:' .. parent .. ':' .. pnode, i) or 'null',
               'as', redis.call('HGET', pk, 'fas'))
  end
  redis.call('SADD', BASE .. 'bs', child)
  emit(eid, entry, cseq, child, 0, nil)
  -- an item/branch timeout: a delayed message about this run of the child (t0), whatever its node
  local limit = tonumber(redis.call('HGET', pk, 'ft') or '0')
  local per = redis.call('HGET', pk, 'ftl')
  if per then limit = tonumber(cjson.decode(per)[i + 1] or 0) end
  if limit > 0 then
    -- tdue: when it may fire (an early or replayed delivery of the message is deferred to it)
    redis.call('HSET', ck, 't0', cseq, 'tdue', string.format('%.3f', A.now + limit / 1000))
    emit(eid, '$branch-timeout', cseq, child, limit, nil)
  end
end

local F = A.fanout
if F and not stopped then
  local rk = BASE .. 'r:' .. A.branch .. ':' .. F.node
  local ik = BASE .. 'i:' .. A.branch .. ':' .. F.node
  redis.call('DEL', rk, ik)
  redis.call('HDEL', KEYS[2], 'abort', 'fw', 'fok', 'fno', 'ferr', 'fu', 'ft', 'ftl', 'fx', 'fud', 'uleft',
             'ufail', 'utop')
  redis.call('HSET', KEYS[2], 'total', F.total, 'next', F.start, 'fin', 0, 'fk', F.kind, 'cloc', F.cloc,
             'fc', redis.call('HGET', KEYS[1], 'cn') or 0)
  if F.wait_for then redis.call('HSET', KEYS[2], 'fw', F.wait_for) end
  if F.item_timeout then redis.call('HSET', KEYS[2], 'ft', F.item_timeout) end
  if F.timeouts then redis.call('HSET', KEYS[2], 'ftl', cjson.encode(F.timeouts)) end
  if F.kind == 'foreach' then
    redis.call('HSET', KEYS[2], 'fe', F.entry, 'fas', F.as)
    for j = 1, #F.items, 500 do
      redis.call('RPUSH', ik, unpack(F.items, j, math.min(j + 499, #F.items)))
    end
  end
  for i = 0, F.start - 1 do
    local entry = F.entry
    if F.kind == 'parallel' then entry = F.entries[i + 1] end
    start_child(A.branch, KEYS[2], F.node, i, entry)
  end
elseif F then
  -- stopping: do not start children; come straight back to the join, which sees the flag
  redis.call('HSET', KEYS[2], 'total', F.total, 'next', 0, 'fin', 0, 'fk', F.kind)
  redis.call('HDEL', KEYS[2], 'fx', 'fud')
  emit(eid, F.node, newseq, A.branch, 0, nil)
end

-- the end of a nested scope: hand the branch's output to its parent; the last arrival joins
local E = A.finish_branch
if E then
  local parent = redis.call('HGET', KEYS[2], 'pb')
  local idx = tonumber(redis.call('HGET', KEYS[2], 'idx'))
  local pk = bkey(parent)
  local pnode = redis.call('HGET', pk, 'node')
  local value = E.result
  local open = redis.call('HEXISTS', pk, 'abort') == 0
  -- how it ended, for a partial unwind: halted, failed (or timed out), or a success that came after
  -- the fan-out's end was decided (a race's extra winner: not one of the N)
  local how = nil
  if E.halted then how = 'h' elseif E.abort then how = 'f' elseif not open then how = 'l' end
  if how then
    value = 'null'  -- a failed, stopped or late branch has no output (a race's result shows null for it)
  elseif not value then
    local last = redis.call('HGET', KEYS[2], 'last')
    value = 'null'
    if last then value = redis.call('HGET', BASE .. 'o', last) or 'null' end
  end
  local rk = BASE .. 'r:' .. parent .. ':' .. pnode
  redis.call('HSET', rk, idx, value)
  if how then redis.call('HSET', rk, 's:' .. idx, how) end
  local total = tonumber(redis.call('HGET', pk, 'total'))
  local fw = tonumber(redis.call('HGET', pk, 'fw') or '0')
  local scope = pnode .. '/'
  if parent ~= '' then scope = parent .. '/' .. scope end
  if E.abort and fw > 0 then
    -- a race: a failure ends it only once too few branches are left to reach wait_for
    local fno = redis.call('HINCRBY', pk, 'fno', 1)
    if redis.call('HEXISTS', pk, 'ferr') == 0 then redis.call('HSET', pk, 'ferr', E.abort) end
    if open and total - fno < fw then
      redis.call('HSET', pk, 'abort', redis.call('HGET', pk, 'ferr'), 'fx', 1)
      wake(eid, scope, A.branch)
    end
  elseif E.abort and open then
    redis.call('HSET', pk, 'abort', E.abort)
    -- its own timeout ended it: hopflow cancelled it, so the fan-out ended early (a failure did not)
    if redis.call('HEXISTS', KEYS[2], 'tmo') == 1 then redis.call('HSET', pk, 'fx', 1) end
    wake(eid, scope, A.branch)
  elseif not how then
    if fw > 0 and redis.call('HINCRBY', pk, 'fok', 1) >= fw then
      redis.call('HSET', pk, 'abort', '{"won":true}', 'fx', 1)  -- enough winners: stop the others, no error
      wake(eid, scope, A.branch)
    end
    if E['until'] then redis.call('HSET', pk, 'fu', 1) end
  end
  local fin = redis.call('HINCRBY', pk, 'fin', 1)
  local started = tonumber(redis.call('HGET', pk, 'next'))
  local halted = redis.call('HEXISTS', pk, 'abort') == 1 or redis.call('HEXISTS', KEYS[1], 'stop') == 1
    or redis.call('HEXISTS', pk, 'fu') == 1
  if not halted and started < total and redis.call('HGET', pk, 'fk') == 'foreach' then
    start_child(parent, pk, pnode, started, redis.call('HGET', pk, 'fe'))
    started = redis.call('HINCRBY', pk, 'next', 1)
  end
  if fin >= started and (halted or started >= total) then
    emit(eid, pnode, redis.call('HGET', pk, 'seq'), parent, 0, nil)
  end
end

redis.call('DEL', KEYS[3])
-- a chain (A.next: begin's arguments for the branch's next node, which the caller runs at once): when
-- this checkpoint emitted exactly that one immediate message to the branch, begin it here — exactly
-- what a begin.lua right after this script would do, without the round trip (docs/engine-design.md)
local N = A.next
if N and #NOW_OWN == 1 and NOW_OWN[1][1] == N.node and NOW_OWN[1][2] == N.seq then
  return result({ok = true, seq = newseq, called = called, next = begin_node(N, KEYS[1], KEYS[2], KEYS[3])})
end
return result({ok = true, seq = newseq, called = called})
