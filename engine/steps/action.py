"""The ``action`` step: call a Python callable with the step context and the rendered ``with``.

Every call runs in a daemon worker thread of a per-process pool (:class:`_Workers`: an idle worker
is reused, a new one is started when none is idle, so a runaway action never delays the next call),
and the caller stops waiting at the attempt's deadline. That makes the timeout real for sync
functions and for coroutines that block, at a price a reader must know: **Python cannot kill a
thread**, so a timed-out sync action keeps running in the background until it returns on its own
(its result is discarded; its worker is not reused until then). Coroutines are cancelled at the
deadline (``asyncio.wait_for`` inside the worker's own event loop). A reused worker may carry an
earlier action's ``threading.local`` values. Actions should therefore be idempotent
(``ctx.idempotency_key``) and honour ``ctx.deadline`` when they can.

Errors, as the workflow sees them:

* an exception ``E`` raised by the action → ``action.<type(E).__name__>`` with ``str(E)``;
* a :class:`~engine.model.StepFailure` raised by the action passes through unchanged (an action may
  choose its error name, e.g. ``payments.declined``, or ask for a retry with ``timeout``);
* a deadline overrun → ``timeout``;
* a return value that is not JSON (after datetimes → ISO strings, tuples → lists) → ``action.TypeError``;
* an unknown name → ``action.NotFound``; a module that fails to import → ``action.ImportError``.
"""

from __future__ import annotations

import _thread
import asyncio
import contextvars
import inspect
import json
import queue
import threading
from collections.abc import Callable
from typing import Any

from engine.actions import REGISTRY, ActionLoadError, ActionNotFound, ActionRegistry
from engine.model import StepContext, StepError, StepFailure

MAX_MESSAGE_CHARS = 2000


def _fail(name: str, message: str) -> StepFailure:
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    return StepFailure(StepError(name, message))


class _Deadline(Exception):
    """The coroutine was cancelled at the deadline (distinct from a TimeoutError the action raises)."""


class _Outcome:
    __slots__ = ("error", "value")

    def __init__(self) -> None:
        self.value: Any = None
        self.error: BaseException | None = None


class _Workers:
    """Daemon worker threads reused across calls (starting a thread per call cost ~0.4 ms a node).

    Not a ``ThreadPoolExecutor``: its threads are joined at interpreter exit, so one runaway action
    would keep the process alive, and a bounded pool would make the next call wait for it. Here a
    worker busy past its caller's deadline is simply not idle; a call finding no idle worker starts a
    new one. Workers idle for ``idle_s`` end, so a burst leaves no threads behind.
    """

    def __init__(self, idle_s: float = 30.0) -> None:
        self.idle_s = idle_s
        self._idle: list[queue.SimpleQueue[Any]] = []
        self._lock = threading.Lock()

    def submit(self, name: str, job: Callable[[], None]) -> Any:
        """Run ``job`` on a worker named ``name``; the returned lock is released when it has returned
        (``acquire(timeout=…)`` waits for it: a bare lock, cheaper than an Event's condition)."""
        done = _thread.allocate_lock()
        done.acquire()
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(target=self._work, args=(inbox,), name=name, daemon=True).start()
        inbox.put((name, job, done))
        return done

    def _work(self, inbox: queue.SimpleQueue[Any]) -> None:
        me = threading.current_thread()
        while True:
            try:
                name, job, done = inbox.get(timeout=self.idle_s)
            except queue.Empty:
                with self._lock:
                    if inbox in self._idle:  # else a caller just took this worker: its job is coming
                        self._idle.remove(inbox)
                        return
                continue
            me.name = name
            try:
                job()
            finally:
                with self._lock:  # idle before the caller wakes: its next call reuses this worker
                    self._idle.append(inbox)
                done.release()


WORKERS = _Workers()


def _call(fn: Any, ctx: StepContext, kwargs: dict[str, Any], timeout_s: float, out: _Outcome) -> None:
    try:
        result = fn(ctx, **kwargs)
        if inspect.isawaitable(result):

            async def bounded() -> Any:
                task = asyncio.ensure_future(result)
                done, _ = await asyncio.wait({task}, timeout=timeout_s)
                if not done:  # cancel it, so the coroutine's own cleanup runs
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    raise _Deadline
                return task.result()

            result = asyncio.run(bounded())
        out.value = result
    except BaseException as exc:  # SystemExit in an action must not take the worker down silently
        out.error = exc


def execute(
    name: str,
    kwargs: dict[str, Any],
    ctx: StepContext,
    *,
    timeout_s: float,
    registry: ActionRegistry | None = None,
) -> Any:
    """Run action ``name``; return its JSON-ready result or raise :class:`StepFailure`."""
    try:
        fn = (registry or REGISTRY).resolve(name)
    except ActionNotFound as exc:
        raise _fail("action.NotFound", str(exc)) from None
    except ActionLoadError as exc:
        raise _fail("action.ImportError", str(exc)) from None

    if timeout_s <= 0:
        raise _fail("timeout", f"action {name!r}: no time left before the deadline")
    out = _Outcome()
    context = contextvars.copy_context()
    args = (fn, ctx, dict(kwargs), timeout_s, out)
    done = WORKERS.submit(f"hopflow-action-{ctx.step}", lambda: context.run(_call, *args))
    if not done.acquire(timeout=timeout_s):
        raise _fail("timeout", f"action {name!r} did not finish within {timeout_s:g}s")

    error = out.error
    if error is not None:
        if isinstance(error, StepFailure):
            raise error
        if isinstance(error, _Deadline):
            raise _fail("timeout", f"action {name!r} did not finish within {timeout_s:g}s") from None
        if isinstance(error, TypeError) and _is_signature_error(fn, ctx, kwargs):
            raise _fail("action.TypeError", f"action {name!r} called with bad arguments: {error}") from None
        raise _fail(f"action.{type(error).__name__}", str(error)) from None
    return _json_ready(name, out.value)


def _is_signature_error(fn: Any, ctx: StepContext, kwargs: dict[str, Any]) -> bool:
    try:
        inspect.signature(fn).bind(ctx, **kwargs)
    except TypeError:
        return True
    except ValueError:  # pragma: no cover - builtins without a signature
        return False
    return False


_ENCODED = threading.local()  # (value, its compact JSON): the last result validated on this thread


def encoded(value: Any) -> str | None:
    """The compact JSON text of ``value`` if it is the result this thread's last action returned
    (its validation encoded it already: the checkpoint stores that text instead of encoding a large
    output twice). Taken once."""
    last = getattr(_ENCODED, "last", None)
    if last is None or last[0] is not value:
        return None
    _ENCODED.last = None
    text: str = last[1]
    return text


def _json_ready(name: str, value: Any) -> Any:
    from dsl.templates import to_json

    try:
        ready = to_json(value)
        # the engine's own encoding (interpreter.dumps), so the text can be stored as it is
        text = json.dumps(ready, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise _fail("action.TypeError", f"action {name!r} returned a value that is not JSON: {exc}") from None
    _ENCODED.last = (ready, text)
    return ready
