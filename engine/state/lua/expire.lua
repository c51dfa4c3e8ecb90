-- A parallel branch's or a foreach item's own timeout passed (the `$branch-timeout` message sent when
-- it started). Only for the run of the branch that message is about (t0 = the seq it started with)
-- and only while it has not finished: flag it (tmo), so it fails with `timeout` at its next node
-- boundary; wake it if it waits; if it is itself joining a fan-out, stop that fan-out's children too.
-- KEYS: header, branch, lock.  A: eid, branch, seq (t0), now, skew, error (JSON), hist
if redis.call('EXISTS', KEYS[1]) == 0 then return result({kind = 'missing'}) end
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return result({kind = 'finished'}) end
local t0 = tonumber(redis.call('HGET', KEYS[2], 't0') or '-1')
local phase = redis.call('HGET', KEYS[2], 'phase')
if t0 ~= A.seq or phase == 'done' or redis.call('HEXISTS', KEYS[2], 'tmo') == 1 then
  return result({kind = 'stale'})
end
local due = tonumber(redis.call('HGET', KEYS[2], 'tdue') or '0')
if due - A.now > A.skew then return result({kind = 'early', due = due}) end  -- a replay: not yet
redis.call('HSET', KEYS[2], 'tmo', A.error)
history(A.hist)
if phase == 'join' and redis.call('HEXISTS', KEYS[2], 'abort') == 0 then
  redis.call('HSET', KEYS[2], 'abort', A.error)
  wake(A.eid, A.branch .. '/', nil)
end
if redis.call('HEXISTS', BASE .. 'p', A.branch) == 1 then
  -- parked: same as wake() for exactly this branch (a prefix would also match its siblings "x/1" → "x/10")
  local s = redis.call('HINCRBY', KEYS[2], 'seq', 1)
  local oc = redis.call('HGET', KEYS[2], 'oc')
  if oc then
    redis.call('HDEL', BASE .. 'oc', oc)
    redis.call('HDEL', KEYS[2], 'oc')
  end
  redis.call('HDEL', BASE .. 'p', A.branch)
  emit(A.eid, redis.call('HGET', KEYS[2], 'node'), s, A.branch, 0, nil)
end
return result({kind = 'expired'})
