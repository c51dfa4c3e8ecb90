-- Create an execution (idempotent per id) with its first message and its deadline message.
-- KEYS: header.  A: eid, now, header (field → value), entry, timeout_ms, hist, hmax,
--   vars (declared vars' initial values: field → json), vm (merge vars' initial entries, flat)
-- a `queued` header is a placeholder (engine/flow/slots.py): the start it waited for replaces it
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('HGET', KEYS[1], 'status') ~= 'queued' then
  local pending = redis.call('HGETALL', BASE .. 'out')
  return result({kind = 'exists', status = redis.call('HGET', KEYS[1], 'status'), outbox = pending,
                 parent = redis.call('HGET', KEYS[1], 'parent')})
end
local fields = {}
for k, v in pairs(A.header) do fields[#fields + 1] = k; fields[#fields + 1] = v end
redis.call('HSET', KEYS[1], unpack(fields))
if A.vars then
  local vs = {}
  for k, v in pairs(A.vars) do vs[#vs + 1] = k; vs[#vs + 1] = v end
  if #vs > 0 then redis.call('HSET', BASE .. 'v', unpack(vs)) end
end
if A.vm and #A.vm > 0 then redis.call('HSET', BASE .. 'vm', unpack(A.vm)) end
redis.call('HSET', bkey(''), 'seq', 1, 'node', A.entry, 'phase', 'run', 'attempt', 1)
redis.call('SADD', BASE .. 'bs', '')
emit(A.eid, A.entry, 1, '', 0, nil)
if A.timeout_ms then emit(A.eid, '$timeout', 0, '', A.timeout_ms, nil) end
history(A.hist)
return result({kind = 'created'})
