"""A local QStash-compatible server, for development and for tests that need real deliveries.

It speaks the subset of QStash's REST API hopflow (and the official SDK's common calls) use, and it
delivers the way QStash does: signed JWTs, ``Upstash-Retried``, delays and not-before, retries with
QStash's backoff, ``Retry-After``, dead-letter queue, callbacks and failure callbacks, deduplication.
State lives in memory (it is a dev server); the delivery loop is an asyncio task over a due-time
heap, each attempt its own task, so one slow endpoint never holds up the rest.

Fault knobs make at-least-once delivery visible on purpose: ``duplicate`` sends every delivery twice
at once, ``reorder_window_s`` adds a random extra delay to each new message, ``drop_response_rate``
delivers and then pretends the response was lost (so the message is retried although it arrived).

``run()`` serves it with uvicorn (``hopflow qstash-dev``, ``python -m engine.devtools.qstash_dev``);
``start_dev_server()`` runs it in a background thread on a random loopback port for tests.
Details and the exact formats: docs/qstash.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import math
import random
import re
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.devtools.qstash_dev.schedules import DevSchedules
from engine.dispatch import flow_control
from engine.signing import sign_qstash

DEFAULT_TOKEN = "eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0="
DEFAULT_CURRENT_SIGNING_KEY = "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r"
DEFAULT_NEXT_SIGNING_KEY = "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_MAX_RETRIES = 3
MAX_RETRY_DELAY_S = 86400.0  # QStash caps every retry delay (and Retry-After) at one day
MAX_RETRIES_ACCEPTED = 100
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})  # Upstash-Method's enum (openapi.yaml)
RETRY_AFTER_HEADERS = (
    "retry-after",
    "x-ratelimit-reset",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
)

log = logging.getLogger("hopflow.qstash_dev")


def default_backoff(retried: int) -> float:
    """QStash's documented backoff in seconds before retry number ``retried`` (1, 2, ...)."""
    return min(MAX_RETRY_DELAY_S, math.exp(2.5 * retried))


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``"10s"``, ``"2m"``, ``"1h30m"``, ``"1d"``, ``"500ms"`` or bare seconds → seconds (ValueError)."""
    text = text.strip()
    if re.fullmatch(r"\d+", text):
        return float(text)
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"invalid duration {text!r}")
    return total


def parse_retry_after(value: str, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After``-style value (seconds, Go duration or HTTP date).

    Values beyond a day, or unparsable ones, give None: QStash then falls back to its backoff.
    """
    value = value.strip()
    current = time.time() if now is None else now
    try:
        seconds = parse_duration(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - current
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if seconds > MAX_RETRY_DELAY_S:
        return None
    return max(0.0, seconds)


class _BadRequest(Exception):
    pass


@dataclass
class _Reply:
    """What an endpoint answered to one delivery attempt."""

    status: int
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


@dataclass
class _Message:
    id: str
    url: str
    method: str
    body: bytes
    content_type: str | None
    forward: dict[str, str]
    max_retries: int
    not_before: float
    created_at: float
    caller_ip: str
    callback: str | None = None
    failure_callback: str | None = None
    callback_forward: dict[str, str] = field(default_factory=dict)
    failure_callback_forward: dict[str, str] = field(default_factory=dict)
    callback_retries: int | None = None
    failure_callback_retries: int | None = None
    callback_method: str = "POST"
    failure_callback_method: str = "POST"
    timeout_s: float | None = None
    dedup_id: str | None = None
    kind: str = "message"  # or "callback" / "failure-callback": QStash-made messages, never called back
    retried: int = 0
    due: float = 0.0
    in_flight: bool = False
    cancelled: bool = False
    last: _Reply | None = None
    flow: flow_control.FlowControl | None = None  # Upstash-Flow-Control-Key/-Value

    def source_header(self) -> dict[str, list[str]]:
        headers = {k: [v] for k, v in self.forward.items()}
        if self.content_type:
            headers["content-type"] = [self.content_type]
        return headers

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "messageId": self.id,
            "url": self.url,
            "method": self.method,
            "header": self.source_header(),
            "maxRetries": self.max_retries,
            "retried": self.retried,
            "notBefore": int(self.not_before * 1000),
            "createdAt": int(self.created_at * 1000),
            "callerIP": self.caller_ip,
        }
        d.update(_body_fields(self.body, "body", "bodyBase64"))
        if self.callback:
            d["callback"] = self.callback
            d["callbackHeader"] = {k: [v] for k, v in self.callback_forward.items()}
        if self.failure_callback:
            d["failureCallback"] = self.failure_callback
            d["failureCallbackHeader"] = {k: [v] for k, v in self.failure_callback_forward.items()}
        if self.dedup_id:
            d["deduplicationId"] = self.dedup_id
        if self.flow is not None:
            d["flowControlKey"] = self.flow.key
        return d


@dataclass
class _DlqEntry:
    dlq_id: str
    message: _Message
    reply: _Reply | None

    def to_json(self) -> dict[str, Any]:
        d = self.message.to_json()
        d["dlqId"] = self.dlq_id
        d["responseStatus"] = self.reply.status if self.reply else 0
        d["responseHeader"] = self.reply.headers if self.reply else {}
        if self.reply:
            d.update(_body_fields(self.reply.body, "responseBody", "responseBodyBase64"))
        return d


def _body_fields(body: bytes, text_key: str, b64_key: str) -> dict[str, str]:
    try:
        return {text_key: body.decode("utf-8")}
    except UnicodeDecodeError:
        return {b64_key: base64.b64encode(body).decode("ascii")}


def _multi(request: Request, name: str) -> list[str]:
    """A multi-valued query parameter: repeated (``a=1&a=2``) or comma-separated (``a=1,2``)."""
    return [v for raw in request.query_params.getlist(name) for v in raw.split(",") if v]


def _http_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _BadRequest(f"invalid {what}: must be an absolute http(s) URL")
    return value


def _int_header(headers: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    raw = headers.get(name)
    if raw is None or raw == "":
        return None
    if not re.fullmatch(r"\d+", raw.strip()) or not low <= int(raw) <= high:
        raise _BadRequest(f"invalid {name} header: {raw!r}")
    return int(raw)


def _method(headers: Mapping[str, str], name: str) -> str:
    method = (headers.get(name) or "POST").upper()
    if method not in METHODS:
        raise _BadRequest(f"invalid {name} header: {method!r}")
    return method


class QStashDevServer:
    """The dev server's state, delivery loop and Starlette ``app``.

    ``backoff(retried)`` gives seconds before retry ``retried`` (default: QStash's, times
    ``backoff_scale``). ``max_delay_s`` mimics the plan's delay limit (None: unlimited).
    """

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        current_signing_key: str = DEFAULT_CURRENT_SIGNING_KEY,
        next_signing_key: str = DEFAULT_NEXT_SIGNING_KEY,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff: Callable[[int], float] | None = None,
        backoff_scale: float = 1.0,
        max_delay_s: float | None = None,
        dedup_window_s: float = 600.0,
        delivery_timeout_s: float = 60.0,
        signature_ttl_s: int = 300,
        max_body_bytes: int = 1_048_576,
        duplicate: bool = False,
        reorder_window_s: float = 0.0,
        drop_response_rate: float = 0.0,
        seed: int | None = None,
    ) -> None:
        if not token:
            raise ValueError("the dev server needs a token")
        if not 0.0 <= drop_response_rate <= 1.0:
            raise ValueError("drop_response_rate must be within [0, 1]")
        self.token = token
        self.current_signing_key = current_signing_key
        self.next_signing_key = next_signing_key
        self.max_retries = max_retries
        self._backoff = backoff or (lambda n: default_backoff(n) * backoff_scale)
        self.max_delay_s = max_delay_s
        self.dedup_window_s = dedup_window_s
        self.delivery_timeout_s = delivery_timeout_s
        self.signature_ttl_s = signature_ttl_s
        self.max_body_bytes = max_body_bytes
        self.duplicate = duplicate
        self.reorder_window_s = reorder_window_s
        self.drop_response_rate = drop_response_rate
        self._rng = random.Random(seed)

        self._messages: dict[str, _Message] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._dedup: dict[str, tuple[str, float]] = {}
        self._dlq: dict[str, _DlqEntry] = {}
        self._events: list[dict[str, Any]] = []
        self._counter = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self.flow_gate = flow_control.MemoryGate()  # the same limits as the local dispatcher's

        self.app = Starlette(
            routes=[
                Route("/v2/publish/{destination:path}", self._publish, methods=["POST"]),
                Route("/v2/batch", self._batch, methods=["POST"]),
                Route("/v2/messages/{message_id}", self._get_message, methods=["GET"]),
                Route("/v2/messages/{message_id}", self._cancel_message, methods=["DELETE"]),
                Route("/v2/messages", self._cancel_messages, methods=["DELETE"]),
                Route("/v2/dlq", self._list_dlq, methods=["GET"]),
                Route("/v2/dlq", self._delete_dlq_many, methods=["DELETE"]),
                Route("/v2/dlq/retry/{dlq_id}", self._retry_dlq, methods=["POST"]),
                Route("/v2/dlq/{dlq_id}", self._get_dlq, methods=["GET"]),
                Route("/v2/dlq/{dlq_id}", self._delete_dlq, methods=["DELETE"]),
                Route("/v2/keys", self._keys, methods=["GET"]),
            ],
            lifespan=self._lifespan,
        )
        # /v2/schedules… and the clock that fires them (engine/devtools/qstash_dev/schedules.py)
        self.schedules = DevSchedules(
            parse=self._parse, accept=self._accept, authorized=self._authorized, bad_request=_BadRequest
        )
        self.app.router.routes.extend(self.schedules.routes())

    # ------------------------------------------------------------------------------ introspection

    def pending(self) -> int:
        """Messages not yet delivered nor dead-lettered (scheduled, in flight or awaiting a retry)."""
        return len(self._messages)

    def events(self) -> list[dict[str, Any]]:
        """A copy of the event log: accepted, deduplicated, attempt, delivered, dlq, cancelled."""
        return list(self._events)

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Block (from another thread) until nothing is pending; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.pending():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _event(self, kind: str, msg: _Message, **extra: Any) -> None:
        self._events.append(
            {
                "event": kind,
                "message_id": msg.id,
                "url": msg.url,
                "kind": msg.kind,
                "retried": msg.retried,
                "time": time.time(),
                **extra,
            }
        )

    # ---------------------------------------------------------------------------------- lifecycle

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        self._runner = asyncio.create_task(self._run(), name="qstash-dev-delivery-loop")
        self.schedules.start()

    async def stop(self) -> None:
        await self.schedules.stop()
        tasks = [t for t in (self._runner, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
        self._runner = self._client = None

    # ------------------------------------------------------------------------------ delivery loop

    def _schedule(self, msg: _Message, due: float) -> None:
        msg.due = due
        heapq.heappush(self._heap, (due, next(self._counter), msg.id))
        if self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            try:
                now = time.time()
                while self._heap and self._heap[0][0] <= now:
                    due, _, message_id = heapq.heappop(self._heap)
                    msg = self._messages.get(message_id)
                    if msg is None or msg.due != due or msg.in_flight:
                        continue  # cancelled, rescheduled since, or already being delivered
                    if msg.flow is not None and not self._flow_admit(msg, now):
                        continue  # held back by its flow-control key
                    msg.in_flight = True
                    task = asyncio.create_task(self._attempt(msg))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                timeout = max(0.0, self._heap[0][0] - time.time()) if self._heap else None
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.CancelledError:
                raise
            except Exception:  # keep delivering whatever happens to one iteration
                log.exception("qstash-dev delivery loop error")
                await asyncio.sleep(0.1)

    def _delivery_headers(self, msg: _Message) -> dict[str, str]:
        reserved = {
            "content-type",
            "user-agent",
            "upstash-message-id",
            "upstash-retried",
            "upstash-signature",
            "upstash-caller-ip",
            "host",
            "content-length",
        }
        headers = {k: v for k, v in msg.forward.items() if k.lower() not in reserved}
        if msg.content_type:
            headers["Content-Type"] = msg.content_type
        headers.update(
            {
                "User-Agent": "Upstash-QStash",
                "Upstash-Message-Id": msg.id,
                "Upstash-Retried": str(msg.retried),
                "Upstash-Caller-Ip": msg.caller_ip,
                "Upstash-Signature": sign_qstash(
                    msg.body, msg.url, self.current_signing_key, ttl_s=self.signature_ttl_s
                ),
            }
        )
        return headers

    async def _send(self, msg: _Message, headers: dict[str, str]) -> _Reply | None:
        assert self._client is not None
        try:
            response = await self._client.request(
                msg.method,
                msg.url,
                headers=headers,
                content=msg.body if msg.method not in ("GET", "HEAD") else None,
                timeout=msg.timeout_s or self.delivery_timeout_s,
            )
        except httpx.HTTPError as exc:
            log.info("delivery of %s to %s failed: %s", msg.id, msg.url, type(exc).__name__)
            return None
        grouped: dict[str, list[str]] = {}
        for name, value in response.headers.multi_items():
            grouped.setdefault(name.lower(), []).append(value)
        return _Reply(response.status_code, grouped, response.content[: self.max_body_bytes])

    async def _attempt(self, msg: _Message) -> None:
        try:
            headers = self._delivery_headers(msg)
            copies = 2 if self.duplicate else 1
            replies = await asyncio.gather(*(self._send(msg, headers) for _ in range(copies)))
            reply = replies[0]
            dropped = (
                reply is not None
                and self.drop_response_rate > 0
                and (self._rng.random() < self.drop_response_rate)
            )
            self._event(
                "attempt", msg, status=reply.status if reply else None, dropped=dropped, copies=copies
            )
            if msg.cancelled:
                return
            retry_after: float | None = None
            if reply is not None and not dropped:
                msg.last = reply
                if msg.callback:  # QStash calls back after every attempt that got a response
                    self._accept(self._callback_message(msg, reply, "callback"))
                if 200 <= reply.status < 300:
                    self._finish(msg, "delivered", status=reply.status)
                    return
                nonretryable = (reply.header("upstash-nonretryable-error") or "").lower() == "true"
                if reply.status == 489 and nonretryable:
                    self._dead_letter(msg)
                    return
                for name in RETRY_AFTER_HEADERS:
                    value = reply.header(name)
                    if value is not None and (retry_after := parse_retry_after(value)) is not None:
                        break
            self._retry_or_dead_letter(msg, retry_after)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("qstash-dev: delivery attempt of %s crashed; treating it as failed", msg.id)
            if msg.id in self._messages and not msg.cancelled:
                self._retry_or_dead_letter(msg, None)
        finally:
            msg.in_flight = False
            if msg.flow is not None:
                for waiting in self.flow_gate.release(msg.flow, msg.id):
                    if (held := self._messages.get(waiting)) is not None:
                        self._schedule(held, time.time())

    def _flow_admit(self, msg: _Message, now: float) -> bool:
        """Flow control (engine/dispatch/flow_control.py): deliver now, or later — when the rate
        window frees, or when a delivery of the key ends (the release reschedules it)."""
        assert msg.flow is not None
        verdict = self.flow_gate.admit(msg.flow, msg.id, now)
        if verdict.ok:
            return True
        self._event("flow-waiting", msg, until=verdict.retry_at)
        if verdict.retry_at is not None:
            self._schedule(msg, verdict.retry_at)
        return False

    def _retry_or_dead_letter(self, msg: _Message, retry_after: float | None) -> None:
        if msg.retried >= msg.max_retries:
            self._dead_letter(msg)
            return
        msg.retried += 1
        delay = retry_after if retry_after is not None else min(MAX_RETRY_DELAY_S, self._backoff(msg.retried))
        self._schedule(msg, time.time() + max(0.0, delay))

    def _finish(self, msg: _Message, event: str, **extra: Any) -> None:
        self._messages.pop(msg.id, None)
        self._event(event, msg, **extra)

    def _dead_letter(self, msg: _Message) -> None:
        dlq_id = f"{int(time.time() * 1000)}-{next(self._counter)}"
        self._dlq[dlq_id] = _DlqEntry(dlq_id, msg, msg.last)
        if msg.failure_callback:  # accepted before msg leaves, so pending() never dips to 0 between
            self._accept(self._callback_message(msg, msg.last, "failure-callback", dlq_id=dlq_id))
        self._finish(msg, "dlq", dlq_id=dlq_id, status=msg.last.status if msg.last else None)

    def _callback_message(
        self, msg: _Message, reply: _Reply | None, kind: str, dlq_id: str | None = None
    ) -> _Message:
        payload: dict[str, Any] = {
            "status": reply.status if reply else 0,
            "header": reply.headers if reply else {},
            "body": base64.b64encode(reply.body if reply else b"").decode("ascii"),
            "retried": msg.retried,
            "maxRetries": msg.max_retries,
            "sourceMessageId": msg.id,
            "topicName": "",
            "endpointName": "",
            "url": msg.url,
            "method": msg.method,
            "sourceHeader": msg.source_header(),
            "sourceBody": base64.b64encode(msg.body).decode("ascii"),
            "notBefore": str(int(msg.not_before * 1000)),
            "createdAt": str(int(msg.created_at * 1000)),
            "scheduleId": "",
            "callerIP": msg.caller_ip,
        }
        if dlq_id is not None:
            payload["dlqId"] = dlq_id
        is_failure = kind == "failure-callback"
        retries = msg.failure_callback_retries if is_failure else msg.callback_retries
        now = time.time()
        return _Message(
            id=_new_id("msg"),
            url=(msg.failure_callback if is_failure else msg.callback) or "",
            method=msg.failure_callback_method if is_failure else msg.callback_method,
            body=json.dumps(payload, separators=(",", ":")).encode(),
            content_type="application/json",
            forward=dict(msg.failure_callback_forward if is_failure else msg.callback_forward),
            # like QStash: a callback's retries default to the source message's (openapi.yaml)
            max_retries=msg.max_retries if retries is None else retries,
            not_before=now,
            created_at=now,
            caller_ip=msg.caller_ip,
            kind=kind,
        )

    # ------------------------------------------------------------------------------- publishing

    def _parse(self, destination: str, headers: Mapping[str, str], body: bytes, caller_ip: str) -> _Message:
        """A message from a publish request's destination and (lower-cased) headers."""
        if len(body) > self.max_body_bytes:
            raise _BadRequest("message body too large")
        url = _http_url(destination, "destination")
        now = time.time()
        forward: dict[str, str] = {}
        callback_forward: dict[str, str] = {}
        failure_forward: dict[str, str] = {}
        for name, value in headers.items():
            for prefix, target in (
                ("upstash-failure-callback-forward-", failure_forward),
                ("upstash-callback-forward-", callback_forward),
                ("upstash-forward-", forward),
            ):
                if name.startswith(prefix) and len(name) > len(prefix):
                    target[name[len(prefix) :]] = value
                    break

        not_before = now
        if (raw := headers.get("upstash-not-before")) not in (None, ""):
            if not re.fullmatch(r"\d{1,12}", raw.strip()):
                raise _BadRequest(f"invalid Upstash-Not-Before header: {raw!r}")
            not_before = float(int(raw))
        elif (raw := headers.get("upstash-delay")) not in (None, ""):
            try:
                not_before = now + parse_duration(raw)
            except ValueError:
                raise _BadRequest(f"invalid Upstash-Delay header: {raw!r}") from None
        if self.max_delay_s is not None and not_before - now > self.max_delay_s + 1:
            raise _BadRequest(f"delay exceeds the maximum of {self.max_delay_s:g}s")

        timeout_s = None
        if (raw := headers.get("upstash-timeout")) not in (None, ""):
            try:
                timeout_s = parse_duration(raw)
            except ValueError:
                raise _BadRequest(f"invalid Upstash-Timeout header: {raw!r}") from None

        callback = headers.get("upstash-callback") or None
        failure_callback = headers.get("upstash-failure-callback") or None
        retries = _int_header(headers, "upstash-retries", 0, MAX_RETRIES_ACCEPTED)
        try:
            flow = flow_control.from_headers(headers)
        except flow_control.FlowControlError as exc:
            raise _BadRequest(str(exc)) from None
        dedup_id = headers.get("upstash-deduplication-id") or None
        if dedup_id is None and (headers.get("upstash-content-based-deduplication") or "").lower() == "true":
            dedup_id = "content:" + hashlib.sha256(url.encode() + b"\0" + body).hexdigest()
        return _Message(
            id=_new_id("msg"),
            url=url,
            method=_method(headers, "upstash-method"),
            body=body,
            content_type=headers.get("content-type"),
            forward=forward,
            max_retries=self.max_retries if retries is None else retries,
            not_before=not_before,
            created_at=now,
            caller_ip=caller_ip,
            callback=_http_url(callback, "Upstash-Callback") if callback else None,
            failure_callback=(
                _http_url(failure_callback, "Upstash-Failure-Callback") if failure_callback else None
            ),
            callback_forward=callback_forward,
            failure_callback_forward=failure_forward,
            callback_retries=_int_header(headers, "upstash-callback-retries", 0, MAX_RETRIES_ACCEPTED),
            failure_callback_retries=_int_header(
                headers, "upstash-failure-callback-retries", 0, MAX_RETRIES_ACCEPTED
            ),
            callback_method=_method(headers, "upstash-callback-method"),
            failure_callback_method=_method(headers, "upstash-failure-callback-method"),
            timeout_s=timeout_s,
            dedup_id=dedup_id,
            flow=flow,
        )

    def _accept(self, msg: _Message) -> dict[str, Any]:
        now = time.time()
        if msg.dedup_id is not None:
            if len(self._dedup) > 10_000:
                self._dedup = {k: v for k, v in self._dedup.items() if v[1] > now}
            seen = self._dedup.get(msg.dedup_id)
            if seen is not None and seen[1] > now:
                self._event("deduplicated", msg, original=seen[0])
                return {"messageId": seen[0], "deduplicated": True}
            self._dedup[msg.dedup_id] = (msg.id, now + self.dedup_window_s)
        self._messages[msg.id] = msg
        due = msg.not_before
        if self.reorder_window_s > 0:
            due += self._rng.uniform(0.0, self.reorder_window_s)
        self._event("accepted", msg, not_before=msg.not_before)
        self._schedule(msg, due)
        return {"messageId": msg.id}

    # ----------------------------------------------------------------------------------- routes

    def _authorized(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        query = request.query_params
        # QStash's query name is qstash_token (openapi.yaml, bearerAuthQuery); qstashToken is kept
        supplied = (
            auth[7:]
            if auth[:7].lower() == "bearer "
            else query.get("qstash_token", query.get("qstashToken", ""))
        )
        return hmac.compare_digest(supplied.strip().encode(), self.token.encode())

    @staticmethod
    def _error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def _unauthorized(self) -> JSONResponse:
        return self._error(401, "Unauthorized: missing or wrong QStash token")

    @staticmethod
    def _destination(request: Request) -> str:
        raw_path = request.scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else request.url.path
        dest = path.split("/v2/publish/", 1)[1] if "/v2/publish/" in path else ""
        if not dest.startswith(("http://", "https://")):
            dest = unquote(dest)
        query = request.scope.get("query_string", b"").decode("latin-1")
        query = "&".join(
            p for p in query.split("&") if p and not p.startswith(("qstashToken=", "qstash_token="))
        )
        return f"{dest}?{query}" if query else dest

    async def _publish(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        body = await request.body()
        if len(body) > self.max_body_bytes:
            return self._error(413, "message body too large")
        caller_ip = request.client.host if request.client else ""
        try:
            msg = self._parse(self._destination(request), dict(request.headers), body, caller_ip)
        except _BadRequest as exc:
            return self._error(400, str(exc))
        accepted = self._accept(msg)
        # QStash: 200, or 202 Accepted for a duplicate (qstash/features/deduplication.mdx)
        return JSONResponse(accepted, status_code=202 if accepted.get("deduplicated") else 200)

    async def _batch(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        raw = await request.body()
        if len(raw) > self.max_body_bytes * 4:
            return self._error(413, "batch too large")
        try:
            items = json.loads(raw)
        except ValueError:
            return self._error(400, "batch body must be a JSON array")
        if not isinstance(items, list) or not items:
            return self._error(400, "batch body must be a non-empty JSON array")
        caller_ip = request.client.host if request.client else ""
        # like QStash (qstash/features/batch.mdx): one answer per entry, in order; a bad entry gets
        # {"error"} and the others are still sent
        answers: list[dict[str, Any]] = []
        for i, item in enumerate(items):
            try:
                if not isinstance(item, dict) or not isinstance(item.get("destination"), str):
                    raise _BadRequest("needs a string destination")
                if item.get("queue"):
                    raise _BadRequest("queues are not implemented by the dev server")
                headers = item.get("headers") or {}
                body = item.get("body") or ""
                if not isinstance(headers, dict) or not isinstance(body, str):
                    raise _BadRequest("headers must be an object and body a string")
                lowered = {str(k).lower(): str(v) for k, v in headers.items()}
                answers.append(
                    self._accept(self._parse(item["destination"], lowered, body.encode(), caller_ip))
                )
            except _BadRequest as exc:
                answers.append({"error": f"batch[{i}]: {exc}"})
        return JSONResponse(answers, status_code=200)

    async def _get_message(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        msg = self._messages.get(request.path_params["message_id"])
        if msg is None:
            return self._error(404, "message not found")
        return JSONResponse(msg.to_json())

    async def _cancel_message(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        msg = self._messages.get(request.path_params["message_id"])
        if msg is None:
            return self._error(404, "message not found")
        msg.cancelled = True
        self._finish(msg, "cancelled")
        return JSONResponse({"cancelled": 1})  # 200, like QStash (openapi.yaml)

    async def _cancel_messages(self, request: Request) -> Response:
        """``DELETE /v2/messages``: ``messageIds`` (repeated or comma-separated), else the ``url``
        filter, else every pending message; ``count`` bounds how many. → ``{"cancelled": n}``."""
        if not self._authorized(request):
            return self._unauthorized()
        ids = _multi(request, "messageIds")
        urls = _multi(request, "url")
        try:
            count = int(request.query_params.get("count") or 0)
        except ValueError:
            return self._error(400, "count must be an integer")
        if ids:
            chosen = [self._messages[i] for i in ids if i in self._messages]
        else:
            chosen = [m for m in self._messages.values() if not urls or m.url in urls]
        if count > 0:
            chosen = chosen[:count]
        for msg in chosen:
            msg.cancelled = True
            self._finish(msg, "cancelled")
        return JSONResponse({"cancelled": len(chosen)})

    def _dlq_entry(self, request: Request) -> _DlqEntry | None:
        return self._dlq.get(request.path_params["dlq_id"])

    async def _list_dlq(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        params = request.query_params
        entries = list(self._dlq.values())
        if params.get("messageId"):
            entries = [e for e in entries if e.message.id == params["messageId"]]
        if params.get("url"):
            entries = [e for e in entries if e.message.url == params["url"]]
        if params.get("responseStatus"):
            wanted = params["responseStatus"]
            entries = [e for e in entries if str(e.reply.status if e.reply else 0) == wanted]
        try:
            start = int(params.get("cursor") or 0)
            count = min(100, max(1, int(params.get("count") or 100)))
        except ValueError:
            return self._error(400, "cursor and count must be integers")
        page = entries[start : start + count]
        result: dict[str, Any] = {"messages": [e.to_json() for e in page]}
        if start + count < len(entries):
            result["cursor"] = str(start + count)
        return JSONResponse(result)

    async def _get_dlq(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        entry = self._dlq_entry(request)
        return JSONResponse(entry.to_json()) if entry else self._error(404, "DLQ message not found")

    async def _delete_dlq(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        if self._dlq.pop(request.path_params["dlq_id"], None) is None:
            return self._error(404, "DLQ message not found")
        return Response(status_code=200)

    async def _delete_dlq_many(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        ids: list[str] | None = _multi(request, "dlqIds") or None  # QStash: a query parameter
        if ids is None:
            raw = await request.body()
            if raw.strip():  # the older form: a JSON body {"dlqIds": [...]}
                try:
                    found = json.loads(raw).get("dlqIds")
                except (ValueError, AttributeError):
                    found = None
                if not isinstance(found, list):
                    return self._error(400, 'body must be {"dlqIds": [...]}')
                ids = [str(i) for i in found]
        if ids is None:
            return self._error(400, "name the DLQ entries to delete: ?dlqIds=…")
        deleted = sum(self._dlq.pop(i, None) is not None for i in ids)
        return JSONResponse({"deleted": deleted})

    async def _retry_dlq(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        entry = self._dlq.pop(request.path_params["dlq_id"], None)
        if entry is None:
            return self._error(404, "DLQ message not found")
        now = time.time()
        fresh = replace(
            entry.message,
            id=_new_id("msg"),
            retried=0,
            not_before=now,
            created_at=now,
            due=0.0,
            in_flight=False,
            cancelled=False,
            last=None,
            dedup_id=None,
        )
        return JSONResponse(self._accept(fresh))

    async def _keys(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        return JSONResponse({"current": self.current_signing_key, "next": self.next_signing_key})


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(18).replace('-', 'x').replace('_', 'y')}"


# --------------------------------------------------------------------------------- running it


@contextlib.contextmanager
def serve_in_thread(
    app: Any, *, host: str = DEFAULT_HOST, port: int = 0, startup_timeout_s: float = 10.0
) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a daemon thread; yield its base URL (random port by default)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"uvicorn-{sock.getsockname()[1]}"
    )
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the in-process server did not start")
            time.sleep(0.01)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@dataclass(frozen=True)
class RunningDevServer:
    """A dev server serving in a background thread."""

    url: str
    server: QStashDevServer

    @property
    def token(self) -> str:
        return self.server.token

    @property
    def current_signing_key(self) -> str:
        return self.server.current_signing_key

    @property
    def next_signing_key(self) -> str:
        return self.server.next_signing_key

    def env(self) -> dict[str, str]:
        """The environment a hopflow process needs to use this server."""
        return {
            "QSTASH_URL": self.url,
            "QSTASH_TOKEN": self.token,
            "QSTASH_CURRENT_SIGNING_KEY": self.current_signing_key,
            "QSTASH_NEXT_SIGNING_KEY": self.next_signing_key,
        }


@contextlib.contextmanager
def start_dev_server(
    server: QStashDevServer | None = None, *, host: str = DEFAULT_HOST, port: int = 0, **options: Any
) -> Iterator[RunningDevServer]:
    """Run a dev server in-process on ``host`` (loopback) and a random port; stop it on exit."""
    instance = server or QStashDevServer(**options)
    with serve_in_thread(instance.app, host=host, port=port) as url:
        yield RunningDevServer(url, instance)


def banner(server: QStashDevServer, url: str) -> str:
    return "\n".join(
        [
            f"QStash dev server listening on {url}",
            "Use these in your environment:",
            f"  QSTASH_URL={url}",
            f"  QSTASH_TOKEN={server.token}",
            f"  QSTASH_CURRENT_SIGNING_KEY={server.current_signing_key}",
            f"  QSTASH_NEXT_SIGNING_KEY={server.next_signing_key}",
        ]
    )


def run(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    quiet: bool = False,
    log_level: str = "info",
    **options: Any,
) -> None:
    """Serve a dev server in the foreground until interrupted (``hopflow qstash-dev``)."""
    import uvicorn

    server = QStashDevServer(**options)
    if not quiet:
        print(banner(server, f"http://{host}:{port}"), flush=True)
        knobs = [
            f"{k}={v}"
            for k, v in (
                ("duplicate", server.duplicate),
                ("reorder_window_s", server.reorder_window_s),
                ("drop_response_rate", server.drop_response_rate),
            )
            if v
        ]
        if knobs:
            print("Fault injection on: " + ", ".join(knobs), flush=True)
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO))
    uvicorn.run(server.app, host=host, port=port, log_level=log_level, lifespan="on")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qstash-dev", description="Local QStash-compatible server")
    p.add_argument("--host", default=DEFAULT_HOST)
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--token", default=DEFAULT_TOKEN)
    p.add_argument("--current-signing-key", default=DEFAULT_CURRENT_SIGNING_KEY)
    p.add_argument("--next-signing-key", default=DEFAULT_NEXT_SIGNING_KEY)
    p.add_argument("--max-retries", type=int, default=DEFAULT_MAX_RETRIES)
    p.add_argument("--backoff-scale", type=float, default=1.0, help="multiply QStash's retry backoff")
    p.add_argument("--max-delay", type=parse_duration, default=None, help="plan's maximum delay, e.g. 7d")
    p.add_argument("--dedup-window", type=parse_duration, default=600.0)
    p.add_argument("--duplicate", action="store_true", help="send every delivery twice")
    p.add_argument(
        "--reorder-window",
        type=parse_duration,
        default=0.0,
        help="random extra delay per message, e.g. 500ms",
    )
    p.add_argument(
        "--drop-responses",
        type=float,
        default=0.0,
        metavar="RATE",
        help="fraction of responses to pretend lost (delivered, then retried)",
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    run(
        args.host,
        args.port,
        quiet=args.quiet,
        token=args.token,
        current_signing_key=args.current_signing_key,
        next_signing_key=args.next_signing_key,
        max_retries=args.max_retries,
        backoff_scale=args.backoff_scale,
        max_delay_s=args.max_delay,
        dedup_window_s=args.dedup_window,
        duplicate=args.duplicate,
        reorder_window_s=args.reorder_window,
        drop_response_rate=args.drop_responses,
        seed=args.seed,
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
