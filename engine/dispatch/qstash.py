"""Publishing through QStash's REST API over kept-alive HTTP connections (no QStash SDK at runtime).

One outgoing message → ``POST /v2/publish/<destination>``; several → ``POST /v2/batch`` (fan-out).
Bodies are ``Message.to_json()``: ids only, never state, so they stay far below QStash's size limit.
Every publish carries the message's deterministic ``Upstash-Deduplication-Id``, so re-publishing an
outbox after a crash is harmless. QStash's own 429/5xx and connection failures are retried a bounded
number of times with jittered exponential backoff, within a deadline that fits a webhook's budget;
then DispatchError (the outbox stays, ``hopflow recover`` re-drives it). The transport is
:mod:`engine.dispatch.keepalive` (the standard library's ``http.client``), or httpx when a proxy is
configured or a client is handed in.

Delays beyond the plan's maximum (``max_delay_s``) are chained: the message is published with the
maximum delay (and an informational, unsigned ``Hopflow-Not-Before`` header that nothing trusts).
The wake-up time lives in the checkpoint: a delivery that arrives before it, whatever headers it
carries, is re-published for the rest of the wait by the interpreter. See docs/qstash.md.
"""

from __future__ import annotations

import base64
import json
import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine import lazyimport
from engine.dispatch import DispatchError, PartialDispatch, keepalive
from engine.dispatch.flow_control import FlowControl, Resolver
from engine.model import Message, MessageError, Outgoing

if TYPE_CHECKING:  # pragma: no cover - typing only
    import httpx

    from engine.model import OffloadRequest

DEFAULT_QSTASH_URL = "https://qstash.upstash.io"
DEFAULT_MAX_DELAY_S = 7 * 86400  # QStash free plan's maximum delay; paid plans allow more
# callbacks inherit the source message's retries unless told otherwise (QStash's openapi.yaml), and
# offloaded calls are published with Upstash-Retries: 0, so both callbacks state their own
DEFAULT_CALLBACK_RETRIES = 3
NOT_BEFORE_HEADER = "Hopflow-Not-Before"  # informational only: the checkpoint holds the wake-up time
FAILURE_CALLBACK_QUERY = "hopflow=failure"  # from_env's failure callback: <destination>?hopflow=failure
MAX_CALL_BODY_BYTES = 1_048_576
OFFLOAD_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")  # Upstash-Method's enum (openapi.yaml)


class DispatchRejected(DispatchError):
    """QStash refused the request itself (a 4xx other than 429): repeating it unchanged cannot help."""


def _proxied(url: str) -> bool:
    """Whether the proxy variables (``HTTPS_PROXY``, ``ALL_PROXY``…, minus ``NO_PROXY``) apply to ``url``."""
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


def _with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


@dataclass(frozen=True)
class QStashCallback:
    """A QStash callback or failure-callback body (``Upstash-Callback`` / ``Upstash-Failure-Callback``).

    For an offloaded call, ``body`` is the target's response and ``status`` its status; a failure
    callback also has ``dlq_id``. ``source_body`` is what was published (for hopflow's own messages,
    the Message JSON: :meth:`source_message`).
    """

    status: int
    headers: dict[str, list[str]]
    body: bytes
    retried: int
    max_retries: int
    source_message_id: str
    url: str
    method: str
    source_headers: dict[str, list[str]]
    source_body: bytes
    dlq_id: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def final(self) -> bool:
        """No further attempt of the source message will follow (QStash calls back after each one)."""
        return self.ok or self.dlq_id is not None or self.retried >= self.max_retries

    def source_message(self) -> Message:
        return Message.from_json(self.source_body)


def _header_lists(value: Any) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        return {}
    return {str(k): [str(x) for x in v] if isinstance(v, list) else [str(v)] for k, v in value.items()}


def parse_callback(body: bytes | str) -> QStashCallback:
    """Decode a (failure) callback body; malformed input raises MessageError (never worth a retry)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise MessageError("callback body is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("status"), int):
        raise MessageError("callback body lacks a status")
    try:
        response = base64.b64decode(data.get("body") or "", validate=True)
        source = base64.b64decode(data.get("sourceBody") or "", validate=True)
    except ValueError:
        raise MessageError("callback body is not valid base64") from None

    def number(key: str) -> int:
        value = data.get(key, 0)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    dlq_id = data.get("dlqId")
    return QStashCallback(
        status=data["status"],
        headers=_header_lists(data.get("header")),
        body=response,
        retried=number("retried"),
        max_retries=number("maxRetries"),
        # QStash's docs spell it "sourceMessasgeId" in places; accept both
        source_message_id=str(data.get("sourceMessageId") or data.get("sourceMessasgeId") or ""),
        url=str(data.get("url") or ""),
        method=str(data.get("method") or ""),
        source_headers=_header_lists(data.get("sourceHeader")),
        source_body=source,
        dlq_id=str(dlq_id) if dlq_id else None,
    )


def _batch_answers(response: keepalive.Response, count: int) -> list[str | None]:
    """Per entry of a ``/v2/batch`` answer: None if accepted, else QStash's reason. An answer that
    cannot be read counts every entry as refused (re-publishing is harmless: deduplication ids)."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, list) or len(data) != count:
        return ["QStash's batch answer could not be read"] * count
    answers: list[str | None] = []
    for item in data:
        if isinstance(item, dict) and item.get("messageId") and not item.get("error"):
            answers.append(None)
        elif isinstance(item, dict) and item.get("error"):
            answers.append(str(item["error"])[:200])
        else:
            answers.append("no message id")
    return answers


def rate_limit_wait(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds until QStash's 429 says to try again: ``Retry-After`` (seconds), else the reset time of
    the burst (``Burst-RateLimit-Reset``) or daily (``RateLimit-Reset``) limit, unix seconds (or
    milliseconds). None when none is given."""
    lowered = {k.lower(): v for k, v in headers.items()}
    retry_after = lowered.get("retry-after", "").strip()
    if retry_after.isdigit():
        return float(retry_after)
    resets = []
    for name in ("burst-ratelimit-reset", "ratelimit-reset"):
        raw = lowered.get(name, "").strip()
        try:
            value = float(raw)
        except ValueError:
            continue
        if not math.isfinite(value):
            continue
        if value > 1e11:  # milliseconds
            value /= 1000
        resets.append(max(0.0, value - now))
    if lowered.get("ratelimit-remaining", "").strip() == "0" and "ratelimit-reset" in lowered:
        return max(resets) if resets else None  # the daily limit is spent: wait for its reset
    return min(resets) if resets else None


class QStashDispatcher:
    """The production :class:`~engine.dispatch.Dispatcher`: hands messages to QStash.

    ``destination_url`` is the webhook as the world reaches it (``HOPFLOW_PUBLIC_URL`` + ``/v1/step``);
    ``failure_callback_url`` receives messages QStash gave up on (the execution becomes ``dead``);
    ``retries`` is ``Upstash-Retries`` (None: the plan's default).
    """

    def __init__(
        self,
        token: str,
        base_url: str = DEFAULT_QSTASH_URL,
        destination_url: str = "",
        failure_callback_url: str | None = None,
        retries: int | None = None,
        max_delay_s: float = DEFAULT_MAX_DELAY_S,
        *,
        timeout_s: float = 5.0,
        max_attempts: int = 4,
        backoff_s: float = 0.1,
        max_backoff_s: float = 2.0,
        deadline_s: float = 8.0,
        batch_size: int = 100,
        callback_retries: int = DEFAULT_CALLBACK_RETRIES,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not token:
            raise ValueError("a QStash token is required")
        if not destination_url.startswith(("http://", "https://")):
            raise ValueError("destination_url must be an absolute http(s) URL")
        if max_delay_s < 1 or max_attempts < 1 or batch_size < 1:
            raise ValueError("max_delay_s, max_attempts and batch_size must be positive")
        self._token = token
        self.base_url = base_url.rstrip("/")
        self.destination_url = destination_url
        self.failure_callback_url = failure_callback_url
        self.retries = retries
        self.max_delay_s = max_delay_s
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.deadline_s = deadline_s
        self.batch_size = batch_size
        self.callback_retries = callback_retries
        self.flow: Resolver | None = None  # which messages carry a flow-control key (a Runtime binds it)
        self._client = client
        self._own_client = client is None
        self._client_lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep

    def __repr__(self) -> str:  # never show the token
        return f"QStashDispatcher(base_url={self.base_url!r}, destination_url={self.destination_url!r})"

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        destination_url: str | None = None,
        failure_callback_url: str | None = None,
        **options: Any,
    ) -> QStashDispatcher:
        """Configured from ``QSTASH_TOKEN``, ``QSTASH_URL`` and ``HOPFLOW_PUBLIC_URL``.

        Defaults: destination ``$HOPFLOW_PUBLIC_URL/v1/step``, failure callback
        ``<destination>?hopflow=failure``. Missing settings raise ValueError naming the variable.
        """
        env = os.environ if env is None else env
        token = env.get("QSTASH_TOKEN")
        if not token:
            raise ValueError("QSTASH_TOKEN is not set")
        if destination_url is None:
            public = env.get("HOPFLOW_PUBLIC_URL")
            if not public:
                raise ValueError("HOPFLOW_PUBLIC_URL is not set (QStash needs the webhook's public URL)")
            destination_url = public.rstrip("/") + "/v1/step"
        if failure_callback_url is None:
            failure_callback_url = _with_query(destination_url, FAILURE_CALLBACK_QUERY)
        return cls(
            token,
            env.get("QSTASH_URL") or DEFAULT_QSTASH_URL,
            destination_url,
            failure_callback_url=failure_callback_url,
            **options,
        )

    # ---------------------------------------------------------------------------------- publishing

    def publish(self, outgoing: Sequence[Outgoing]) -> None:
        """Hand every message to QStash, or raise DispatchError. Idempotent per dedup id."""
        self._publish(outgoing)

    def _publish(self, outgoing: Sequence[Outgoing], now: float | None = None) -> None:
        if not outgoing:
            return
        current = self._clock() if now is None else now
        entries = [self._entry(o, current) for o in outgoing]
        if len(entries) == 1:
            headers, body = entries[0]
            self._request(f"/v2/publish/{self.destination_url}", body, headers)
            return
        accepted: list[str] = []
        refused: list[str] = []
        for start in range(0, len(entries), self.batch_size):
            chunk = entries[start : start + self.batch_size]
            batch = [
                {"destination": self.destination_url, "headers": h, "body": b.decode()} for h, b in chunk
            ]
            try:
                response = self._request(
                    "/v2/batch",
                    json.dumps(batch, separators=(",", ":")).encode(),
                    {"Content-Type": "application/json"},
                )
            except DispatchError as exc:
                if not accepted:
                    raise
                raise PartialDispatch(str(exc), accepted) from None
            # one answer per entry, in order: {"messageId"} or {"error"} (QStash sends the rest)
            answers = _batch_answers(response, len(chunk))
            for o, answer in zip(outgoing[start : start + self.batch_size], answers, strict=True):
                if answer is None:
                    accepted.append(o.dedup_id)
                else:
                    refused.append(f"{o.dedup_id}: {answer}")
        if refused:
            raise PartialDispatch(
                f"QStash refused {len(refused)} of {len(entries)} batch entries: {'; '.join(refused[:3])}",
                accepted,
            )

    def _entry(self, o: Outgoing, now: float) -> tuple[dict[str, str], bytes]:
        dedup = o.dedup_id
        headers = {"Content-Type": "application/json"}
        if self.retries is not None:
            headers["Upstash-Retries"] = str(self.retries)
        if self.failure_callback_url:
            headers["Upstash-Failure-Callback"] = self.failure_callback_url
            headers["Upstash-Failure-Callback-Retries"] = str(self.callback_retries)
        target: float | None = None
        if o.not_before is not None:
            target = float(o.not_before)
        elif o.delay_ms > 0:
            target = now + o.delay_ms / 1000
        if target is not None and target - now > self.max_delay_s:
            # chained: wait the maximum now, the receiver re-publishes for the rest
            hops = math.ceil((target - now) / self.max_delay_s)
            headers["Upstash-Delay"] = f"{int(self.max_delay_s)}s"
            headers[f"Upstash-Forward-{NOT_BEFORE_HEADER}"] = str(math.ceil(target))
            dedup += f":hop{hops}@{math.ceil(target)}"
        elif o.not_before is not None:
            if o.not_before > now:
                headers["Upstash-Not-Before"] = str(math.ceil(o.not_before))
        elif o.delay_ms > 0:
            headers["Upstash-Delay"] = f"{math.ceil(o.delay_ms / 1000)}s"
        headers["Upstash-Deduplication-Id"] = dedup
        if self.flow is not None and (flow := self.flow(o.message)) is not None:
            headers.update(flow.headers())  # QStash holds the delivery back within the key's limits
        return headers, o.message.to_json()

    def publish_call(
        self,
        url: str,
        method: str,
        headers: Mapping[str, str],
        body: bytes | None,
        callback_url: str,
        failure_callback_url: str | None = None,
        dedup_id: str | None = None,
        timeout: float | None = None,
        *,
        retries: int = 0,
        callback_headers: Mapping[str, str] | None = None,
        callback_retries: int | None = None,
        flow: FlowControl | None = None,
    ) -> str:
        """Have QStash make an HTTP call and post the response to ``callback_url``; return its message id.

        For ``offload: true`` http steps. ``retries`` defaults to 0 so each callback is final and the
        step's own retry policy stays the interpreter's. ``callback_headers`` reach both callbacks
        (e.g. to name the execution and step). ``timeout`` (seconds) bounds QStash's call.
        ``callback_retries`` (default: the dispatcher's) is sent for both callbacks: they would
        otherwise inherit the call's 0 retries, and one 503 from a busy webhook would lose the answer.
        """
        if not url.startswith(("http://", "https://")):
            raise DispatchRejected("offloaded call needs an absolute http(s) URL")
        payload = body or b""
        if len(payload) > MAX_CALL_BODY_BYTES:
            raise DispatchRejected(f"offloaded call body exceeds {MAX_CALL_BODY_BYTES} bytes")
        verb = method.upper()
        if verb not in OFFLOAD_METHODS:
            allowed = ", ".join(OFFLOAD_METHODS)
            raise DispatchRejected(f"QStash cannot make a {verb} call (Upstash-Method: {allowed})")
        cb_retries = str(self.callback_retries if callback_retries is None else callback_retries)
        out: dict[str, str] = {
            "Upstash-Method": verb,
            "Upstash-Callback": callback_url,
            "Upstash-Retries": str(retries),
            "Upstash-Callback-Retries": cb_retries,
        }
        for name, value in headers.items():
            if name.lower() == "content-type":
                out["Content-Type"] = value  # QStash passes the publish's Content-Type through
            else:
                out[f"Upstash-Forward-{name}"] = value
        for name, value in (callback_headers or {}).items():
            out[f"Upstash-Callback-Forward-{name}"] = value
            if failure_callback_url:
                out[f"Upstash-Failure-Callback-Forward-{name}"] = value
        if failure_callback_url:
            out["Upstash-Failure-Callback"] = failure_callback_url
            out["Upstash-Failure-Callback-Retries"] = cb_retries
        if dedup_id:
            out["Upstash-Deduplication-Id"] = dedup_id
        if timeout is not None:
            out["Upstash-Timeout"] = f"{max(1, math.ceil(timeout))}s"
        if flow is not None:  # the step's flow control limits QStash's calls to the target
            out.update(flow.headers())
        response = self._request(f"/v2/publish/{url}", payload, out)
        try:
            return str(response.json()["messageId"])
        except (ValueError, KeyError, TypeError):
            raise DispatchError("QStash answered the publish without a message id") from None

    def callback_url(self, message: Message, *, failure: bool = False) -> str:
        """Where QStash reports an offloaded call for the step parked at ``message``:
        ``<destination>/callback?execution_id=…&node=…&seq=…[&branch=…][&failure=1]`` (the query is the
        signed JWT's ``sub``, so the receiver can trust it)."""
        from engine.dispatch import callback_url

        return callback_url(self.destination_url, message, failure=failure)

    def call(self, request: OffloadRequest) -> None:
        """The :class:`~engine.dispatch.Offloader` capability: :meth:`publish_call` with the request's
        dedup id and timeout, both callbacks naming the waiting step, and no QStash retries (the step's
        own ``retry`` decides). A request QStash refuses raises :class:`~engine.dispatch.CallRejected`."""
        from engine.dispatch import CallRejected

        try:
            self.publish_call(
                request.url,
                request.method,
                request.headers,
                request.body,
                self.callback_url(request.message),
                failure_callback_url=self.callback_url(request.message, failure=True),
                dedup_id=request.dedup_id,
                timeout=request.timeout_s,
                flow=self.flow(request.message) if self.flow is not None else None,
            )
        except DispatchRejected as exc:
            raise CallRejected(str(exc)) from None

    # --------------------------------------------------------------------------------------- HTTP

    def _http(self) -> keepalive.Pool | httpx.Client:
        """The transport: kept-alive ``http.client`` connections (:mod:`engine.dispatch.keepalive`),
        or httpx when a client was handed in or a proxy applies to QStash's URL (httpx honours the
        proxy variables; the standard library's connections would silently go direct)."""
        with self._client_lock:
            if self._client is None:
                if _proxied(self.base_url):
                    httpx = lazyimport.httpx()
                    self._client = httpx.Client(timeout=self.timeout_s, follow_redirects=False)
                else:
                    self._client = keepalive.Pool(self.base_url, self.timeout_s)
            return self._client

    def _post(self, path: str, body: bytes, headers: Mapping[str, str]) -> keepalive.Response:
        """One POST through the transport; keepalive.Timeout / keepalive.TransportError if unanswered."""
        transport = self._http()
        if isinstance(transport, keepalive.Pool):
            return transport.post(path, body, headers)
        httpx = lazyimport.httpx()
        try:
            answer = transport.post(self.base_url + path, content=body, headers=dict(headers))
        except httpx.TimeoutException:
            raise keepalive.Timeout("no answer within the timeout") from None
        except httpx.TransportError as exc:
            raise keepalive.TransportError(type(exc).__name__) from None
        return keepalive.Response(answer.status_code, answer.headers, answer.content)

    def _request(self, path: str, body: bytes, headers: Mapping[str, str]) -> keepalive.Response:
        started = time.monotonic()
        problem = "no attempt made"
        for attempt in range(self.max_attempts):
            wait = min(self.max_backoff_s, self.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)
            try:
                response = self._post(path, body, {**headers, "Authorization": f"Bearer {self._token}"})
            except keepalive.Timeout:
                problem = "QStash did not answer in time"
            except keepalive.TransportError as exc:
                problem = f"cannot reach QStash at {self.base_url} ({exc})"
            else:
                if response.is_success:
                    return response
                detail = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code != 429 and response.status_code < 500:
                    raise DispatchRejected(f"QStash rejected the publish: {detail}")
                problem = f"QStash is unavailable: {detail}"
                limited = rate_limit_wait(response.headers, time.time())
                if limited is not None:
                    if limited > self.deadline_s - (time.monotonic() - started):
                        # not within this call's budget: the outbox stays, a redelivery or
                        # recover publishes it after the reset
                        raise DispatchError(
                            f"QStash asks to wait {limited:.0f} s (rate limit or Retry-After): {detail}"
                        )
                    wait = max(wait, limited)
            last = attempt == self.max_attempts - 1
            if last or time.monotonic() - started + wait > self.deadline_s:
                raise DispatchError(f"publishing to QStash failed after {attempt + 1} attempt(s): {problem}")
            self._sleep(wait)
        raise DispatchError(problem)  # pragma: no cover - the loop always returns or raises

    def close(self) -> None:
        with self._client_lock:
            if self._own_client and self._client is not None:
                self._client.close()
                self._client = None

    def __enter__(self) -> QStashDispatcher:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
