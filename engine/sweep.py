"""The periodic recover sweep: a long-running server re-drives stuck outboxes by itself.

Guarantee 2 (docs/reliability.md): `hopflow recover` (and a periodic sweep) re-drives executions
whose outbox is older than a bound. A serverless deployment has no process to run it in; there a
scheduled ``hopflow recover`` (cron, or a QStash schedule) plays the same part.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger("hopflow.sweep")

DEFAULT_INTERVAL_S = 30.0
DEFAULT_OLDER_THAN_S = 60.0


class RecoverSweep:
    """Calls ``runtime.recover(older_than_s)`` every ``interval_s`` in a daemon thread.

    Several servers sweeping the same Redis is safe: re-publishing uses the deterministic dedup ids,
    and a message that arrives twice is acknowledged as stale by its ``seq``.
    """

    def __init__(
        self,
        runtime: Any,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        older_than_s: float = DEFAULT_OLDER_THAN_S,
    ) -> None:
        if interval_s <= 0 or older_than_s < 0:
            raise ValueError("the sweep needs interval_s > 0 and older_than_s >= 0")
        self.runtime = runtime
        self.interval_s = interval_s
        self.older_than_s = older_than_s
        self.sweeps = 0
        self.redriven = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep_once(self) -> int:
        """One pass; never raises (a sweep that dies would silently stop recovering)."""
        try:
            count = int(self.runtime.recover(older_than_s=self.older_than_s))
        except Exception as exc:  # Redis down, a dispatcher failure: try again next interval
            log.warning("recover sweep failed, will retry in %.0f s: %s", self.interval_s, exc)
            return 0
        finally:
            self.sweeps += 1
        if count:
            log.warning("recover sweep re-drove %d execution(s) whose outbox was stuck", count)
        self.redriven += count
        return count

    def start(self) -> RecoverSweep:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="hopflow-recover-sweep", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sweep_once()
