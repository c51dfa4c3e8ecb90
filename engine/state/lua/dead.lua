-- The dispatcher gave up on a message: the execution becomes `dead` (unless it moved on already).
-- KEYS: header.  A: eid, now, seq, branch, error, hist, hmax, parent (resume message spec or nil)
if redis.call('EXISTS', KEYS[1]) == 0 then return result({kind = 'missing'}) end
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'running' and status ~= 'compensating' then return result({kind = 'ignored', status = status}) end
local seq = tonumber(redis.call('HGET', bkey(A.branch), 'seq') or '-1')
if A.seq < seq then return result({kind = 'stale'}) end
redis.call('HSET', KEYS[1], 'status', 'dead', 'error', A.error, 'updated_at', A.now)
history(A.hist)
-- the message given up on is never delivered again, so no checkpoint will consume its outbox entry
-- (immediate messages keep theirs after publishing until then): drop it here
local gone = dedup(A.eid, A.branch, A.seq, '')
for _, id in ipairs(redis.call('HKEYS', BASE .. 'out')) do
  if string.sub(id, 1, #gone) == gone then redis.call('HDEL', BASE .. 'out', id) end
end
if A.parent then emit(A.parent.eid, A.parent.node, A.parent.seq, A.parent.branch, 0, nil) end
return result({kind = 'dead'})
