"""``hopflow`` with short crash-recovery periods, for tests that kill a process mid-step and wait for
its work to come back: ``python tests/short_leases.py run …`` is ``python -m engine.cli run …``.

A crashed process leaves two things that run out on the wall clock: its deliveries' leases
(``engine.embedded.LEASE_S``, 10 s) and the branch lock of the step it was running (the step's
timeout + ``engine.interpreter.LOCK_MARGIN_MS``, 10 s). A test proving that they do run out (and the
work is redelivered and finishes) proves the same with 2 s each, and waits ~16 s less. Live processes
renew their leases every third of the period, so 2 s still leaves a stalled process 1.3 s of slack.
The values are module constants (no environment knob yet), set before the CLI reads them.
"""

from __future__ import annotations

import sys

import engine.embedded
import engine.interpreter

LEASE_S = 2.0
LOCK_MARGIN_MS = 2_000

if __name__ == "__main__":
    # setting a module attribute never fails: a renamed constant must not silently undo the speed-up
    assert hasattr(engine.embedded, "LEASE_S") and hasattr(engine.interpreter, "LOCK_MARGIN_MS")
    engine.embedded.LEASE_S = LEASE_S
    engine.interpreter.LOCK_MARGIN_MS = LOCK_MARGIN_MS
    from engine.cli import main

    sys.exit(main())
