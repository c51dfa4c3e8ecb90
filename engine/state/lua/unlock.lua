-- Release a branch lock if (and only if) the caller still holds it (a node crashed in-process).
-- KEYS: header, branch, lock.  A: token
if redis.call('GET', KEYS[3]) == A.token then redis.call('DEL', KEYS[3]) end
return result({kind = 'ok'})
