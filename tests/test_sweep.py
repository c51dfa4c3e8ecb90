"""The periodic recover sweep re-drives a stuck outbox without anyone running `hopflow recover`."""

from __future__ import annotations

import textwrap
import threading
import time
from typing import Any

import pytest

from engine.sweep import RecoverSweep


class Flaky:
    """A runtime stand-in whose recover fails once, to prove the sweep survives it."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.failed = False
        self.done = threading.Event()

    def recover(self, older_than_s: float = 60) -> int:
        self.calls.append(older_than_s)
        if not self.failed:
            self.failed = True
            raise ConnectionError("redis is restarting")
        if len(self.calls) >= 3:
            self.done.set()
        return 1


def test_the_sweep_keeps_going_after_a_failed_pass() -> None:
    runtime = Flaky()
    sweep = RecoverSweep(runtime, interval_s=0.01, older_than_s=5).start()
    try:
        assert runtime.done.wait(10), "the sweep stopped after a failing pass"
    finally:
        sweep.stop()
    assert runtime.calls[:3] == [5, 5, 5]
    assert sweep.redriven >= 2 and sweep.sweeps >= 3


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        RecoverSweep(Flaky(), interval_s=0)
    with pytest.raises(ValueError):
        RecoverSweep(Flaky(), older_than_s=-1)


class Died(Exception):
    """The worker process dies here (nothing after this point runs)."""


def test_a_real_stuck_outbox_is_redriven_by_the_sweep(harness: Any) -> None:
    h = harness(
        textwrap.dedent(
            """
            name: stuck
            steps:
              - id: a
                set: {x: 1}
              - id: b
                set: {y: 2}
            """
        )
    )

    def die(point: str, message: Any) -> None:
        if point == "after_checkpoint" and message.node == "a":
            raise Died  # checkpointed `a`, never published the message for `b`

    h.runtime.faults = die
    eid = h.start("stuck")
    with pytest.raises(Died):
        h.drain()
    h.runtime.faults = None
    assert h.dispatcher.queue == [] and h.runtime.record(eid)["status"] == "running"

    sweep = RecoverSweep(h.runtime, interval_s=0.01, older_than_s=0)
    sweep.start()
    try:
        deadline = time.monotonic() + 10
        while not h.dispatcher.queue and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        sweep.stop()
    assert sweep.redriven >= 1
    h.drain()
    assert h.runtime.record(eid)["status"] == "succeeded"
