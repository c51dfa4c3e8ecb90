"""The runtime's vocabulary: messages, outgoing deliveries, offloaded calls, statuses, errors.

Dispatchers, the store, the interpreter and the webhook all speak in these terms; none of them needs
to know who else is listening.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    RUNNING = "running"
    COMPENSATING = "compensating"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"  # parked for an operator; `hopflow resume` continues it
    CANCELLED = "cancelled"
    DEAD = "dead"  # the dispatcher gave up delivering a message (QStash failure callback)


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.COMPENSATED, Status.CANCELLED, Status.DEAD})
PARKED = frozenset({Status.COMPENSATION_FAILED})


class MessageError(ValueError):
    """A delivery body that is not a hopflow message (never retried: it can never succeed)."""


@dataclass(frozen=True)
class Message:
    """What one delivery asks for: run ``node`` of ``execution_id``'s ``branch`` at checkpoint ``seq``.

    Messages carry ids only, never state, so they stay small (QStash bodies) and a stale one is
    harmless: its ``seq`` no longer matches the branch's and it is acknowledged without effect.
    ``branch`` is "" for the top level, ``"<parallel id>/<i>"`` or ``"<foreach id>/<i>"`` below it,
    joined with "/" when nested (``"order/0/items/3"``).
    """

    execution_id: str
    node: str
    seq: int
    branch: str = ""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"execution_id": self.execution_id, "node": self.node, "seq": self.seq}
        if self.branch:
            d["branch"] = self.branch
        return d

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @property
    def dedup_id(self) -> str:
        """Deterministic id, so re-publishing after a crash is deduplicated by the dispatcher."""
        branch = self.branch.replace("/", ".") if self.branch else "-"
        return f"{self.execution_id}:{branch}:{self.seq}:{self.node}"

    @classmethod
    def from_dict(cls, data: Any) -> Message:
        if not isinstance(data, dict):
            raise MessageError("message must be a JSON object")
        eid, node, seq, branch = (data.get(k) for k in ("execution_id", "node", "seq", "branch"))
        if not isinstance(eid, str) or not eid or len(eid) > 200:
            raise MessageError("message.execution_id must be a non-empty string")
        if not isinstance(node, str) or not node or len(node) > 200:
            raise MessageError("message.node must be a non-empty string")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise MessageError("message.seq must be a non-negative integer")
        if branch is None:
            branch = ""
        if not isinstance(branch, str) or len(branch) > 1000:
            raise MessageError("message.branch must be a string")
        return cls(eid, node, seq, branch)

    @classmethod
    def from_json(cls, body: bytes | str) -> Message:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MessageError(f"message is not JSON: {exc}") from None
        return cls.from_dict(data)


@dataclass(frozen=True)
class Outgoing:
    """A message to publish, and when. ``not_before`` (unix seconds) wins over ``delay_ms``.

    ``dedup_suffix`` makes a re-publish of the same message (a delivery deferred because it came
    too early or found its branch busy) distinct from the delivery in flight, which a dispatcher
    would otherwise swallow as a duplicate."""

    message: Message
    delay_ms: int = 0
    not_before: float | None = None
    dedup_suffix: str = ""

    @property
    def dedup_id(self) -> str:
        return self.message.dedup_id + self.dedup_suffix

    def to_dict(self) -> dict[str, Any]:
        return {"message": self.message.to_dict(), "delay_ms": self.delay_ms, "not_before": self.not_before}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outgoing:
        return cls(Message.from_dict(data["message"]), int(data.get("delay_ms") or 0), data.get("not_before"))


@dataclass(frozen=True)
class OffloadRequest:
    """One offloaded http call, fully rendered, and where its answer goes.

    ``message`` names the waiting step (execution, node, the parked ``seq``, branch): the answer is
    delivered to ``Runtime.complete_offloaded(message, result)``, which ignores it unless the branch
    is still parked at that ``seq``. ``dedup_id`` is deterministic (``<message dedup id>:call<attempt>``)
    so handing the same call over twice (a crash, a redelivery) makes one call.
    """

    message: Message
    attempt: int
    method: str
    url: str  # absolute, query included
    headers: dict[str, str]
    body: bytes | None
    timeout_s: float
    egress: tuple[str, ...] = ()  # the workflow's `egress.allow` rules: whoever makes the call checks them

    @property
    def dedup_id(self) -> str:
        return f"{self.message.dedup_id}:call{self.attempt}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "message": self.message.to_dict(),
            "attempt": self.attempt,
            "method": self.method,
            "url": self.url,
            "headers": dict(self.headers),
            "body": None if self.body is None else base64.b64encode(self.body).decode("ascii"),
            "timeout_s": self.timeout_s,
            **({"egress": list(self.egress)} if self.egress else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OffloadRequest:
        body = data.get("body")
        return cls(
            message=Message.from_dict(data["message"]),
            attempt=int(data.get("attempt") or 1),
            method=str(data["method"]),
            url=str(data["url"]),
            headers={str(k): str(v) for k, v in (data.get("headers") or {}).items()},
            body=None if body is None else base64.b64decode(body),
            timeout_s=float(data["timeout_s"]),
            egress=tuple(str(r) for r in data.get("egress") or ()),
        )


@dataclass(frozen=True)
class StepError:
    """A failure as the workflow sees it (`error` in a catch target, the record's `error`)."""

    name: str
    message: str
    step: str | None = None
    attempt: int | None = None
    retry_after_ms: int | None = field(default=None, compare=False)  # from a 429/503 Retry-After
    cause: dict[str, Any] | None = field(default=None, compare=False)  # the error a catch renamed

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "message": self.message, "step": self.step, "attempt": self.attempt}
        if self.cause is not None:
            out["cause"] = self.cause
        return out


def error_matches(pattern: str, name: str) -> bool:
    """Whether an error name matches a `catch`/`retry.on` entry: `any`, the `http.4xx` classes, the
    name itself, or a name below it (`template` matches `template.limit`)."""
    if pattern == "any" or pattern == name or name.startswith(pattern + "."):
        return True
    if pattern in ("http.4xx", "http.5xx") and name.startswith("http.") and name[5:].isdigit():
        return name[5] == pattern[5]
    return False


class StepFailure(Exception):
    """Raised by step executors: the step failed with a named, catchable error."""

    def __init__(self, error: StepError) -> None:
        super().__init__(f"{error.name}: {error.message}")
        self.error = error


@dataclass(frozen=True)
class StepContext:
    """What an action (and the http executor) gets as ``ctx``: enough to be idempotent downstream."""

    execution_id: str
    step: str  # the step id
    attempt: int  # 1-based
    idempotency_key: str  # "<execution_id>:<step path>", the same across retries of this step
    deadline: float  # unix seconds by which this attempt must have finished
    branch: str = ""
    workflow: str = ""
    traceparent: str = ""  # W3C trace context of this attempt's span when traces are on ("" otherwise)


class NotCurrent(Exception):
    """A delivery that is not for the node's current state (an answer to a call the step no longer
    waits for, a fan-out's timeout after its join): the interpreter acknowledges it as stale."""
