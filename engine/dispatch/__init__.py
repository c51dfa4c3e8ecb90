"""Dispatchers hand outgoing messages to whatever delivers them later: QStash, or the local Redis queue.

The interpreter sees only :class:`Dispatcher`; it never knows which one is behind it. A dispatcher
may also offer :class:`Offloader` (``call``): make an ``offload: true`` http request on the
interpreter's behalf and report the response later through ``Runtime.complete_offloaded``. QStash
does it with ``Upstash-Callback``; the local dispatcher makes the request itself from its queue.
See docs/offload.md.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlencode

from engine.model import Message, OffloadRequest, Outgoing

CALLBACK_PATH_SUFFIX = "/callback"  # <destination>/callback: where offloaded calls report back


class DispatchError(Exception):
    """Publishing failed for now (network, 5xx, 429); the caller leaves the outbox for a retry."""


class PartialDispatch(DispatchError):
    """Some messages were handed over and some were not (QStash's ``/v2/batch`` answers per entry).
    ``accepted`` holds the dedup ids that were; the caller may clear those and keep the rest."""

    def __init__(self, message: str, accepted: Sequence[str]) -> None:
        super().__init__(message)
        self.accepted = tuple(accepted)


class CallRejected(DispatchError):
    """The dispatcher refused an offloaded call itself (it can never be made as it stands): the step
    fails with ``http.request`` instead of the handoff being retried."""


class Dispatcher(Protocol):
    def publish(self, outgoing: Sequence[Outgoing]) -> None:
        """Hand every message over durably, or raise DispatchError. Must be idempotent per dedup id."""
        ...


@dataclass(frozen=True)
class CallResult:
    """The answer to an offloaded call, shaped like a QStash callback (``status``, ``headers``, ``body``).

    ``status`` 0 means no response at all; ``error`` then names why (``timeout``, ``http.connect``,
    ``http.too_large``, ``http.request``) and ``detail`` says it in words. ``Runtime.complete_offloaded``
    accepts this or a :class:`engine.dispatch.qstash.QStashCallback` alike.
    """

    status: int
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""
    error: str | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "status": self.status,
            "header": self.headers,
            "body": base64.b64encode(self.body).decode("ascii"),
        }
        if self.error:
            d["error"] = self.error
            d["detail"] = self.detail
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CallResult:
        headers = data.get("header") or {}
        return cls(
            status=int(data.get("status") or 0),
            headers={
                str(k): [str(x) for x in (v if isinstance(v, list) else [v])] for k, v in headers.items()
            },
            body=base64.b64decode(data.get("body") or ""),
            error=data.get("error") or None,
            detail=str(data.get("detail") or ""),
        )


@runtime_checkable
class Offloader(Protocol):
    """The optional capability of a dispatcher to make offloaded calls.

    ``call`` must record the request durably (or hand it to a service that does) and return; it is
    idempotent per ``request.dedup_id``. It raises :class:`DispatchError` when it cannot take the call
    for now (the interpreter keeps it and hands it over again), :class:`CallRejected` when the call can
    never be made. The answer reaches ``Runtime.complete_offloaded`` later, at least once.
    """

    def call(self, request: OffloadRequest) -> None: ...


def callback_query(message: Message, *, failure: bool = False) -> str:
    """The query string that names a waiting step in a callback URL (``/v1/step/callback?...``)."""
    pairs = [("execution_id", message.execution_id), ("node", message.node), ("seq", str(message.seq))]
    if message.branch:
        pairs.append(("branch", message.branch))
    if failure:
        pairs.append(("failure", "1"))
    return urlencode(pairs)


def callback_url(destination_url: str, message: Message, *, failure: bool = False) -> str:
    """``<destination without query>/callback?execution_id=…&node=…&seq=…[&branch=…][&failure=1]``."""
    base = destination_url.split("?", 1)[0].rstrip("/") + CALLBACK_PATH_SUFFIX
    return f"{base}?{callback_query(message, failure=failure)}"
