"""A local dispatcher's callbacks into a runtime in the same process: ``deliver`` runs the node,
``complete`` hands an offloaded call's answer back.

They live apart from :mod:`engine.embedded` (which wires a whole embedded runtime) so the dependency
stays one-way: ``runtime`` and ``embedded`` use this module, and it only knows the runtime's type.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.dispatch.local import Redeliver
from engine.errors import GraphMissing, UnknownExecution

if TYPE_CHECKING:  # pragma: no cover - typing only
    from engine.model import Message
    from engine.runtime import Runtime

log = logging.getLogger("hopflow.embedded")


def in_process_completion(runtime: Runtime) -> Callable[[Message, Any], None]:
    """``complete`` for the local dispatcher: the answer to an offloaded call goes to
    ``runtime.complete_offloaded`` in this process (the same Redis, so any worker may complete it).

    A branch that stays busy is tried again shortly without counting an attempt; an execution or
    graph that no longer exists can never be completed, so that answer is dropped with a log line.
    """

    def complete(message: Message, result: Any) -> None:
        try:
            outcome = runtime.complete_offloaded(message, result)
        except (UnknownExecution, GraphMissing) as exc:
            log.error("dropping the answer to offloaded call %s: %s", message.dedup_id, exc.message)
            return
        if outcome.kind == "busy":
            raise Redeliver(0.2)

    return complete


def in_process_delivery(
    runtime: Runtime, observer: Callable[[str, Message, Any], None] | None = None
) -> Callable[[Message], None]:
    """``deliver`` for the local dispatcher: ``runtime.advance`` in this process.

    A busy branch (another delivery holds its lock) is retried shortly without counting an attempt;
    an execution or graph that no longer exists can never succeed, so that delivery is dropped with
    a log line (the webhook answers those with 489 for the same reason). ``observer`` sees
    ``("start", message, None)`` and ``("end", message, advance-or-exception)`` (live progress),
    for each node a chain runs in place too (``end`` then carries None).

    The fast path: when the runtime's dispatcher offers ``may_run_in_place`` (the local dispatcher),
    the execution's next immediate node runs in this same delivery while it allows
    (:meth:`engine.runtime.Runtime.running_in_place`).
    """
    may_run = getattr(runtime.dispatcher, "may_run_in_place", None)

    def deliver(message: Message) -> None:
        current = message

        def in_place(nxt: Message) -> bool:
            nonlocal current
            if may_run is None or not may_run(nxt):
                return False
            if observer is not None:
                observer("end", current, None)
                observer("start", nxt, None)
            current = nxt
            return True

        if observer is not None:
            observer("start", message, None)
        outcome: Any = None
        try:
            with runtime.running_in_place(in_place):
                outcome = runtime.advance(message)
        except (UnknownExecution, GraphMissing) as exc:
            outcome = exc
            log.error("dropping delivery %s: %s", message.dedup_id, exc.message)
            return
        except Exception as exc:
            outcome = exc
            raise
        finally:
            if observer is not None:
                observer("end", current, outcome)
        if getattr(outcome, "kind", None) == "busy":
            raise Redeliver(0.2)

    return deliver
