"""The Celery peer of ``bench/results.py``: a chain of N tasks, each returning the same 10 KB output.

Broker and result backend are one Redis server, given as ``CELERY_REDIS_URL`` (the bench passes the
Unix socket of the embedded Redis that hopflow's rows use, database 1, so hopflow's database 0 can
be emptied between repetitions without touching Celery's queues). The worker is a separate process:

    CELERY_REDIS_URL=redis+socket:///path/redis.sock?virtual_host=1 \\
        python -m celery --workdir bench/peers -A celery_chain worker -P solo -c 1 \\
        --without-gossip --without-mingle --without-heartbeat -l warning

``-P solo`` runs tasks in the worker's main process (no prefork hop: the cheapest way a chain can
run, so the comparison does not flatter hopflow). Each task takes the previous task's output (the
10 KB blob travels through the broker and the backend at every step, as a hopflow ``action``'s
output is checkpointed at every node) and returns a fresh one.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, chain

BLOB = "x" * 10_240

_url = os.environ.get("CELERY_REDIS_URL", "redis://127.0.0.1:6379/1")
_backend = os.environ.get("CELERY_REDIS_BACKEND", _url)
app = Celery("hopflow_bench", broker=_url, backend=_backend)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    result_expires=600,
    task_ignore_result=False,
)


@app.task(name="bench.blob")
def blob(previous: Any = None) -> dict[str, str]:
    """No-op-ish: look at the input, return a 10 KB output (what the hopflow ``action`` does)."""
    if previous is not None and not isinstance(previous, dict):
        raise TypeError("unexpected input")
    return {"blob": BLOB}


def run_chain(steps: int, timeout_s: float = 300.0) -> dict[str, str]:
    """Start a chain of ``steps`` tasks and wait for its last result (the client side of the bench)."""
    result = chain(blob.s(None), *(blob.s() for _ in range(steps - 1))).apply_async()
    value: dict[str, str] = result.get(timeout=timeout_s, propagate=True)
    return value
