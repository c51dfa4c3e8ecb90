-- compensation_failed → compensating: retry the compensation that exhausted its retries.
-- KEYS: header.  A: eid, now, hist, hmax
if redis.call('EXISTS', KEYS[1]) == 0 then return result({kind = 'missing'}) end
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'compensation_failed' then return result({kind = 'ignored', status = status}) end
local undo = redis.call('HGET', KEYS[1], 'undo')
if undo then
  -- a partial unwind gave up (checkpoint.lua `undo.fail`): send its fan-out the message it waits for;
  -- it retries that compensation from attempt 1, and the execution is running again
  redis.call('HDEL', KEYS[1], 'undo')
  redis.call('HSET', KEYS[1], 'status', 'running', 'updated_at', A.now)
  history(A.hist)
  for _, u in ipairs(cjson.decode(undo)) do emit(A.eid, u.node, u.seq, u.branch, 0, nil) end
  return result({kind = 'resumed', status = 'running'})
end
local k = bkey('')
local s = redis.call('HINCRBY', k, 'seq', 1)
redis.call('HSET', k, 'node', '$compensate', 'phase', 'compensate', 'attempt', 1)
redis.call('HDEL', k, 'park')
redis.call('HSET', KEYS[1], 'status', 'compensating', 'updated_at', A.now)
history(A.hist)
emit(A.eid, '$compensate', s, '', 0, nil)
return result({kind = 'resumed', status = 'compensating'})
