-- Start one node: check the message is current, take the branch lock, load what the node reads.
-- KEYS: header, branch, lock.  A: eid, seq, node, branch, token, lock_ms, hfields, outputs, vars, ancestors,
--   vmerge (declared merge vars the node reads: assembled from hf:{E}:vm)
--   now, skew (seconds a delivery may come before its wake-up time and still run)
return result(begin_node(A, KEYS[1], KEYS[2], KEYS[3]))
