"""The ``http`` step: one request with httpx, judged by ``expect``, with errors the workflow can name.

* One process-wide ``httpx.Client`` (created on first use, thread-safe) pools connections across
  steps and executions; httpx is imported only then, so webhooks that never call HTTP don't pay for it.
* ``Idempotency-Key: <ctx.idempotency_key>`` goes on every request (the same across retries of the
  step), unless the step sets its own ``Idempotency-Key`` header explicitly.
* ``traceparent`` (W3C trace context) goes on every request when traces are on, naming this step's
  span (docs/operations.md, "Traces"), unless the step sets its own.
* Success is a status in ``expect``, or any 2xx when ``expect`` is absent. Redirects are followed
  unless ``expect`` lists a 3xx status (then the author wants to see the redirect itself).
* Errors: ``http.<status>`` (exact status; ``http.4xx``/``http.5xx`` patterns match classes), with
  ``retry_after_ms`` from ``Retry-After`` (seconds or an HTTP date) on 429 and 503; ``timeout`` (any
  phase, or the whole body read, over the attempt's time); ``http.connect`` (connection refused,
  DNS, TLS, connection reset — the network failed, so retrying may help); ``http.request`` (the request
  itself is malformed: bad URL or header — retrying cannot help); ``http.too_large`` (response body
  over :data:`MAX_BODY_BYTES`).
* Error messages name the method, the URL without credentials or query string, and a short body
  excerpt; request headers (``Authorization``…) never appear in them.

``offload: true`` is QStash's business (it makes the call and posts the response back); when this
executor runs such a step (local dispatcher, no QStash), it simply makes the call inline.
"""

from __future__ import annotations

import email.utils
import json
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from engine import lazyimport
from engine.egress import EgressPolicy, EgressRefused, guarded_transport
from engine.model import StepContext, StepError, StepFailure

if TYPE_CHECKING:  # pragma: no cover - typing only
    import httpx

MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_EXCERPT_CHARS = 200
USER_AGENT = "hopflow/0.1"
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})

MAX_REDIRECTS = 20
MAX_POLICIES = 64  # distinct egress policies with a pool of their own (workflows with `egress`)

_clients: dict[EgressPolicy, httpx.Client] = {}
_client_lock = threading.Lock()
_default_policy: EgressPolicy | None = None


def default_policy() -> EgressPolicy:
    """The environment's policy (loopback refused), read once: what a step gets when its runtime
    names none."""
    global _default_policy
    if _default_policy is None:
        _default_policy = EgressPolicy.from_env()
    return _default_policy


def client(policy: EgressPolicy | None = None) -> httpx.Client:
    """The pool for ``policy`` (default: :func:`default_policy`). Each policy has its own pool, so a
    connection opened under one workflow's allow list is never reused under another's; every
    connection is checked by :class:`engine.egress.GuardedBackend`."""
    policy = policy if policy is not None else default_policy()
    found = _clients.get(policy)
    if found is not None:
        return found
    with _client_lock:
        found = _clients.get(policy)
        if found is None:
            httpx = lazyimport.httpx()

            if len(_clients) >= MAX_POLICIES:  # dropped, not closed: a step may still be using it
                _clients.pop(next(iter(_clients)))
            limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
            found = httpx.Client(
                headers={"User-Agent": USER_AGENT},
                transport=guarded_transport(policy, limits=limits),
                timeout=httpx.Timeout(30.0),
                trust_env=False,
            )
            _clients[policy] = found
    return found


def close_client() -> None:
    """Close the pools (tests, orderly shutdown). The next call creates new ones."""
    global _default_policy
    with _client_lock:
        for each in _clients.values():
            each.close()
        _clients.clear()
        _default_policy = None


def _fail(name: str, message: str, retry_after_ms: int | None = None) -> StepFailure:
    return StepFailure(StepError(name, message, retry_after_ms=retry_after_ms))


def safe_url(url: Any) -> str:
    """The URL as it may appear in errors and logs: no userinfo, no query string, no fragment."""
    try:
        parts = urlsplit(str(url))
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    except ValueError:
        return "<invalid url>"


def parse_retry_after(value: str | None, now: float | None = None) -> int | None:
    """``Retry-After`` → milliseconds from now (seconds, or an HTTP date); None if absent or garbage."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:  # pragma: no cover - older Pythons returned None
            return None
        if when.tzinfo is None:  # HTTP dates are GMT by definition
            import datetime as _dt

            when = when.replace(tzinfo=_dt.UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return None
    return max(0, int(seconds * 1000))


def _headers(config: Mapping[str, Any], ctx: StepContext) -> dict[str, str]:
    out: dict[str, str] = {}
    raw = config.get("headers") or {}
    if not isinstance(raw, Mapping):
        raise _fail("http.request", "http.headers must be a mapping of header name to value")
    for key, value in raw.items():
        if value is None:
            continue
        out[str(key)] = _scalar(value)
    if not any(k.lower() == "idempotency-key" for k in out):
        out["Idempotency-Key"] = ctx.idempotency_key
    if ctx.traceparent and not any(k.lower() == "traceparent" for k in out):
        out["traceparent"] = ctx.traceparent  # the called service joins the execution's trace
    return out


def _query(config: Mapping[str, Any]) -> dict[str, Any] | None:
    raw = config.get("query")
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise _fail("http.request", "http.query must be a mapping of parameter name to value")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None:
            continue
        if isinstance(value, list | tuple):
            out[str(key)] = [_scalar(v) for v in value if v is not None]
        else:
            out[str(key)] = _scalar(value)
    return out


def _scalar(value: Any) -> str:
    """Header and query values are text; rendered templates may give numbers, booleans or JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(_thaw(value), separators=(",", ":"))
    return str(value)


def _content(config: Mapping[str, Any]) -> tuple[bytes | None, str | None]:
    """The request body and its default content type: ``json`` (any value) or ``body`` (raw text)."""
    if config.get("json") is not None:
        return json.dumps(_thaw(config["json"]), ensure_ascii=False, separators=(",", ":")).encode(), (
            "application/json"
        )
    body = config.get("body")
    if body is None:
        return None, None
    if isinstance(body, bytes):
        return body, "application/octet-stream"
    if isinstance(body, str):
        return body.encode(), "text/plain; charset=utf-8"
    return json.dumps(_thaw(body), ensure_ascii=False, separators=(",", ":")).encode(), "application/json"


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(v) for v in value]
    return value


def _expect(config: Mapping[str, Any]) -> tuple[int, ...] | None:
    raw = config.get("expect")
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        return (raw,)
    try:
        return tuple(int(s) for s in raw)
    except (TypeError, ValueError):
        raise _fail("http.request", "http.expect must be a list of status codes") from None


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_EXCERPT_CHARS else text[: MAX_EXCERPT_CHARS - 1] + "…"


def _parse_json(text: str, content_type: str) -> Any:
    stripped = text.lstrip()
    if not stripped:
        return None
    if "json" not in content_type.lower() and stripped[:1] not in ("{", "["):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def egress_failure(shown: str, exc: EgressRefused) -> StepFailure:
    """The catchable ``http.egress`` error: names the host and why, never the URL's secrets."""
    return _fail("http.egress", f"{shown}: refused by the egress policy: {exc.reason}")


def execute(
    config: Mapping[str, Any], ctx: StepContext, *, timeout_s: float, egress: EgressPolicy | None = None
) -> dict[str, Any]:
    """Make the request; return ``{status, headers, json, text}`` or raise :class:`StepFailure`.

    Redirects are followed here, hop by hop (each hop's host is checked by the egress policy
    before its connection, and the connection itself is checked after DNS resolution)."""
    httpx = lazyimport.httpx()

    method = str(config.get("method") or "GET").upper()
    url = config.get("url")
    shown = f"{method} {safe_url(url)}"
    if method not in METHODS:
        raise _fail("http.request", f"unsupported HTTP method {method!r}")
    if not isinstance(url, str) or not url:
        raise _fail("http.request", "http.url must be a non-empty string")
    if timeout_s <= 0:
        raise _fail("timeout", f"{shown}: no time left before the deadline")
    expect = _expect(config)
    headers = _headers(config, ctx)
    content, content_type = _content(config)
    if content_type and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = content_type
    follow = expect is None or not any(300 <= s < 400 for s in expect)

    started = time.monotonic()
    deadline = started + timeout_s
    pool = client(egress)
    try:
        request = pool.build_request(
            method, url, headers=headers, params=_query(config), content=content, timeout=timeout_s
        )
    except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError, TypeError) as exc:
        raise _fail("http.request", f"{shown}: invalid request: {exc}") from None

    try:
        response = _send(pool, request, follow, egress or default_policy())
        try:
            body = _read_body(response, deadline, shown)
        finally:
            response.close()
    except StepFailure:
        raise
    except EgressRefused as exc:
        raise egress_failure(shown, exc) from None
    except httpx.TimeoutException:
        raise _fail("timeout", f"{shown}: no response within {timeout_s:g}s") from None
    except (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.LocalProtocolError) as exc:
        raise _fail("http.request", f"{shown}: invalid request: {type(exc).__name__}") from None
    except httpx.TooManyRedirects:
        raise _fail("http.request", f"{shown}: too many redirects") from None
    except httpx.TransportError as exc:
        raise _fail("http.connect", f"{shown}: {_transport_reason(exc)}") from None

    status = response.status_code
    content_type_in = response.headers.get("content-type", "")
    text = body.decode(response.encoding or "utf-8", errors="replace") if body else ""
    result = {
        "status": status,
        "headers": _response_headers(response.headers),
        "json": _parse_json(text, content_type_in),
        "text": text,
    }
    ok = (200 <= status < 300) if expect is None else status in expect
    if not ok:
        retry_after = None
        if status in (429, 503):
            retry_after = parse_retry_after(response.headers.get("retry-after"))
        reason = response.reason_phrase or ""
        detail = f": {_excerpt(text)}" if text.strip() else ""
        raise _fail(f"http.{status}", f"{shown} → {status} {reason}{detail}".rstrip(), retry_after)
    return result


def _send(pool: httpx.Client, request: httpx.Request, follow: bool, policy: EgressPolicy) -> httpx.Response:
    """Send, following redirects by hand: every hop's host is judged before it is connected to."""
    httpx = lazyimport.httpx()

    for _hop in range(MAX_REDIRECTS + 1):
        if request.url.host:
            policy.check_name(request.url.host)
        response = pool.send(request, stream=True, follow_redirects=False)
        if not follow or response.next_request is None:
            return response
        response.close()
        request = response.next_request
    raise httpx.TooManyRedirects("too many redirects", request=request)


def _read_body(response: httpx.Response, deadline: float, shown: str) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _fail("http.too_large", f"{shown}: response body of {declared} bytes is over {MAX_BODY_BYTES}")
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _fail("http.too_large", f"{shown}: response body is over {MAX_BODY_BYTES} bytes")
        if time.monotonic() > deadline:  # a server dripping bytes cannot hold the step forever
            raise _fail("timeout", f"{shown}: response body not received before the deadline")
        chunks.append(chunk)
    return b"".join(chunks)


def _response_headers(headers: httpx.Headers) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in headers.multi_items():
        key = key.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _transport_reason(exc: Exception) -> str:
    """A short cause without the request (httpx messages can quote URLs with credentials)."""
    httpx = lazyimport.httpx()

    kind = {
        httpx.ConnectError: "connection failed",
        httpx.ReadError: "connection lost while reading the response",
        httpx.WriteError: "connection lost while sending the request",
        httpx.RemoteProtocolError: "the server broke the HTTP protocol or closed the connection",
        httpx.ProxyError: "proxy error",
    }
    for cls, text in kind.items():
        if isinstance(exc, cls):
            detail = str(exc).split("\n", 1)[0]
            if "://" in detail or "@" in detail:
                detail = ""
            return f"{text} ({detail})" if detail else text
    return type(exc).__name__
