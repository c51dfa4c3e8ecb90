-- Cancel or time out a running execution: set the stop flag, wake every parked branch.
-- KEYS: header.  A: eid, now, stop (error JSON), hist, hmax, except (a branch not to wake: the caller's)
if redis.call('EXISTS', KEYS[1]) == 0 then return result({kind = 'missing'}) end
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'running' then return result({kind = 'ignored', status = status}) end
if redis.call('HEXISTS', KEYS[1], 'stop') == 1 then return result({kind = 'already'}) end
redis.call('HSET', KEYS[1], 'stop', A.stop, 'updated_at', A.now)
history(A.hist)
wake(A.eid, nil, A.except)
return result({kind = 'stopped'})
