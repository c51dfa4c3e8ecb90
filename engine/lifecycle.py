"""SIGTERM is Ctrl-C: every ``hopflow`` command stops the same way whichever one it gets.

A process manager (systemd, Docker, a CI runner, ``kill``) stops a process with SIGTERM, whose
default action ends Python at once: no ``finally``, no ``atexit`` — so ``serve`` left its embedded
``redis-server`` running and ``run`` vanished without the "continue it with …" line. The ``hopflow``
entry point installs :func:`install`, after which SIGTERM raises :class:`Terminated` (a
``KeyboardInterrupt``) in the main thread: the same graceful path as Ctrl-C (in-flight deliveries
finish, the hint is printed, the embedded Redis is stopped when the last user leaves), ending with
exit status 143 (128 + SIGTERM) instead of 130.

uvicorn (``serve``) catches both signals itself while it runs, shuts down gracefully, then re-raises
the signal once its own handlers are gone — which lands here (and uvicorn swallows the exception,
so ``serve`` reads :data:`received` afterwards to exit 143).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: stop like Ctrl-C, exit 143."""


received: int | None = None  # the last SIGTERM seen (uvicorn swallows the exception: see ``serve``)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global received
    received = signum
    raise Terminated(signum)


def install() -> bool:
    """Route SIGTERM to :class:`Terminated`; only from the main thread (else a no-op, False)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    signal.signal(signal.SIGTERM, _on_sigterm)
    return True


def exit_code(exc: BaseException) -> int:
    """The shell's convention for a process stopped by a signal: 128 + its number."""
    return 128 + signal.SIGTERM if isinstance(exc, Terminated) else 128 + signal.SIGINT
