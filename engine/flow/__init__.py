"""Flow control across executions (docs/language.md#flow-control): the runtime's side.

* :mod:`engine.flow.keys` renders a workflow's and its steps' ``flow_control`` keys when an
  execution starts, records them on the execution's header (``fc``), and answers the dispatchers'
  question "which key and limits does this message carry?" (:class:`~engine.flow.keys.FlowResolver`).
  The dispatchers enforce or forward those limits (engine/dispatch/flow_control.py).
* :mod:`engine.flow.slots` keeps ``max_running``: at most N running executions per key, the others
  ``queued`` in start order, a slot freed by every terminal state (cancel included) and by
  ``recover`` for a holder that died.

The runtime calls in through a handful of one-line hooks (start, finished, cancel, recover); nothing
here imports the runtime.
"""
