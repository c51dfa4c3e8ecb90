-- Events for one (name, key): pending events, waiting executions, and claims.
-- A claim is keyed by the waiter's token (execution, branch, seq of the wait), so a wait that crashed
-- after claiming and before checkpointing gets the same event again when its message is redelivered.
-- KEYS: pending list.  A: op, token, now, ttl_s, info, event, id (notify: the event's id, deduplicated)
local P, W, WI, C, IDS = BASE .. 'p', BASE .. 'w', BASE .. 'wi', BASE .. 'c', BASE .. 'ids'
local function touch()
  for _, k in ipairs({P, W, WI, C, IDS}) do redis.call('EXPIRE', k, A.ttl_s) end
end

if A.op == 'claim' then
  local c = redis.call('HGET', C, A.token)
  if c then return result({kind = 'event', event = c}) end
  while true do
    local e = redis.call('LPOP', P)
    if not e then break end
    local bar = string.find(e, '|', 1, true)
    local at = tonumber(string.sub(e, 1, bar - 1))
    if A.now - at <= A.ttl_s then
      local ev = string.sub(e, bar + 1)
      redis.call('HSET', C, A.token, ev)
      touch()
      return result({kind = 'event', event = ev})
    end
  end
  redis.call('ZADD', W, A.now, A.token)
  redis.call('HSET', WI, A.token, A.info)
  touch()
  return result({kind = 'waiting'})
elseif A.op == 'check' then
  local c = redis.call('HGET', C, A.token)
  if c then return result({kind = 'event', event = c}) end
  redis.call('ZREM', W, A.token)
  redis.call('HDEL', WI, A.token)
  return result({kind = 'none'})
elseif A.op == 'notify' then
  -- an event id seen before (a retried notify, a redelivered emit step): not a second event
  if A.id and redis.call('HSETNX', IDS, A.id, string.format('%.3f', A.now)) == 0 then
    return result({kind = 'duplicate'})
  end
  local ws = redis.call('ZRANGE', W, 0, -1)
  if #ws == 0 then
    redis.call('RPUSH', P, string.format('%.3f', A.now) .. '|' .. A.event)
    touch()
    return result({kind = 'pending'})
  end
  local infos = {}
  for _, t in ipairs(ws) do
    redis.call('HSET', C, t, A.event)
    infos[#infos + 1] = redis.call('HGET', WI, t) or 'null'
    redis.call('HDEL', WI, t)
    redis.call('ZREM', W, t)
  end
  touch()
  return result({kind = 'delivered', infos = infos})
elseif A.op == 'release' then
  redis.call('ZREM', W, A.token)
  redis.call('HDEL', WI, A.token)
  local c = redis.call('HGET', C, A.token)
  if c then
    redis.call('HDEL', C, A.token)
    redis.call('LPUSH', P, string.format('%.3f', A.now) .. '|' .. c)
    touch()
  end
  return result({kind = 'released'})
elseif A.op == 'done' then
  redis.call('HDEL', C, A.token)
  return result({kind = 'done'})
elseif A.op == 'claimed' then
  return result({kind = 'claimed', event = redis.call('HGET', C, A.token)})
end
return result({kind = 'unknown-op'})
