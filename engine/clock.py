"""Time as the runtime sees it: the wall clock, or a virtual one that ``run --fast-forward`` jumps.

Two readings, for two different questions:

* ``now()`` — *workflow time*: when a wait ends, a step's deadline, history timestamps. A virtual
  clock jumps it over waits.
* ``wall()`` — *real time*, for everything that guards against a process dying: the local queue's
  leases and "how long ago was this outbox recorded" (``recover``). It never follows a jump: a
  fast-forwarded process that dies must leave leases that expire ``lease_s`` from now, in real time,
  for whichever process comes next (with whatever clock it has).
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Unix seconds (workflow time)."""
        ...


def wall_of(clock: object) -> float:
    """``clock.wall()`` when the clock has one, else the real time."""
    wall = getattr(clock, "wall", None)
    return float(wall()) if callable(wall) else time.time()


class SystemClock:
    def now(self) -> float:
        return time.time()

    def wall(self) -> float:
        return time.time()


class VirtualClock:
    """Starts at the wall clock and only moves when told to (or with the wall clock, when ``running``).

    Waits become instant: the dispatcher :meth:`jump_to`\\ s the next due message when nothing else is
    runnable, so a 2-hour ``wait.for`` costs nothing, while durations between steps stay real.
    A jump moves workflow time only; :meth:`advance_to` simulates real time passing (tests: "61 s
    later", "the lease ran out") and moves both readings.
    """

    def __init__(self, start: float | None = None) -> None:
        self._offset = 0.0  # workflow time - real time
        self._wall_offset = 0.0  # simulated real time - real time (only advance_to moves it)
        self._lock = threading.Lock()
        if start is not None:
            self._offset = start - time.time()

    def now(self) -> float:
        with self._lock:
            return time.time() + self._offset

    def wall(self) -> float:
        with self._lock:
            return time.time() + self._wall_offset

    def jump_to(self, when: float) -> None:
        """Fast-forward workflow time to ``when`` (never back); real time is untouched."""
        with self._lock:
            current = time.time() + self._offset
            if when > current:
                self._offset += when - current

    def advance_to(self, when: float) -> None:
        """Simulate that time passed until workflow time ``when``: both readings move by the same."""
        with self._lock:
            current = time.time() + self._offset
            if when > current:
                self._offset += when - current
                self._wall_offset += when - current
