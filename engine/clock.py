"""Time as the runtime sees it: the wall clock, or a virtual one that ``run --fast-forward`` jumps."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Unix seconds."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class VirtualClock:
    """Starts at the wall clock and only moves when told to (or with the wall clock, when ``running``).

    Waits become instant: the dispatcher jumps the clock to the next due message when nothing else
    is runnable, so a 2-hour ``wait.for`` costs nothing, while durations between steps stay real.
    """

    def __init__(self, start: float | None = None) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()
        if start is not None:
            self._offset = start - time.time()

    def now(self) -> float:
        with self._lock:
            return time.time() + self._offset

    def advance_to(self, when: float) -> None:
        with self._lock:
            current = time.time() + self._offset
            if when > current:
                self._offset += when - current
