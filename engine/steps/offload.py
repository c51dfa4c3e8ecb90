"""``http`` steps with ``offload: true``: the dispatcher makes the call, its answer completes the step.

The step's run renders the request exactly like an inline ``http`` step (same headers, the same
``Idempotency-Key``, query and body rules), records it in the checkpoint next to the parked branch,
and the interpreter hands it to the dispatcher's ``call`` once the checkpoint is written (a crash in
between re-hands it: the record stays until the handoff succeeded). The branch waits without holding
a process; a delayed ``#timeout`` message fails the step with ``timeout`` if no answer came in time.

The answer (a QStash callback, or the local dispatcher's :class:`~engine.dispatch.CallResult`) is
judged like an inline response: a status in ``expect`` (default any 2xx) succeeds with
``{status, headers, json, text}``; anything else is ``http.<status>``; no response at all is
``http.connect`` (or the local caller's own reason: ``timeout``, ``http.too_large``).

:func:`perform` is the local dispatcher's side: it makes the request with httpx and describes what
happened as a :class:`~engine.dispatch.CallResult`, never raising for the target's failures.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dsl.durations import format_ms
from dsl.graph import Node
from engine import lazyimport
from engine.decide import Done, Failed, Outcome, Park
from engine.dispatch import CallResult
from engine.egress import EgressPolicy, EgressRefused
from engine.model import Message, NotCurrent, OffloadRequest, StepContext, StepError, StepFailure
from engine.steps import http

GRACE_MS = 5_000  # the timeout message waits this much longer: a callback for a call that took the
# whole timeout is still on its way (QStash counts its own timeout and delays in whole seconds)
MAX_CALL_BODY_BYTES = 1_048_576  # what QStash accepts as a message body


@dataclass(frozen=True)
class Completion:
    """What ``Runtime.complete_offloaded`` was given: the answer, and whether it was a failure callback."""

    callback: Any  # CallResult | QStashCallback: status, headers (name → list), body (bytes)
    failure: bool = False


def build(
    config: Mapping[str, Any],
    ctx: StepContext,
    *,
    timeout_s: float,
    message: Message,
    egress: EgressPolicy | None = None,
    workflow_allow: tuple[str, ...] = (),
) -> OffloadRequest:
    """The rendered ``http`` config as a request someone else can make; StepFailure(http.request) if
    it cannot be made (the same rules as an inline call, plus an absolute http(s) URL and QStash's
    1 MiB body limit), StepFailure(http.egress) when the egress policy refuses its host.

    The host is checked here, at publish time, because QStash makes the call where no connection
    guard of ours runs: the name itself (literal addresses, deny patterns, metadata names) and,
    when it resolves here, every address it resolves to. The local dispatcher checks again when
    it connects."""
    httpx = lazyimport.httpx()

    method = str(config.get("method") or "GET").upper()
    url = config.get("url")
    if method not in http.METHODS:
        raise StepFailure(StepError("http.request", f"unsupported HTTP method {method!r}"))
    if not isinstance(url, str) or not url:
        raise StepFailure(StepError("http.request", "http.url must be a non-empty string"))
    shown = f"{method} {http.safe_url(url)}"
    headers = http._headers(config, ctx)
    content, content_type = http._content(config)
    if content_type and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = content_type
    if content is not None and len(content) > MAX_CALL_BODY_BYTES:
        raise StepFailure(
            StepError(
                "http.request",
                f"{shown}: an offloaded request body is limited to {MAX_CALL_BODY_BYTES} bytes",
            )
        )
    try:
        full = httpx.URL(url)
        query = http._query(config)
        if query:
            full = full.copy_merge_params(query)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise StepFailure(StepError("http.request", f"{shown}: invalid request: {exc}")) from None
    if full.scheme not in ("http", "https") or not full.host:
        raise StepFailure(
            StepError("http.request", f"{shown}: an offloaded call needs an absolute http(s) URL")
        )
    policy = (egress or http.default_policy()).for_workflow(workflow_allow)
    try:
        policy.check_name(full.host)
        try:
            policy.resolve(full.host, full.port or (443 if full.scheme == "https" else 80))
        except OSError:
            pass  # not resolvable from here: QStash resolves it on its side
    except EgressRefused as exc:
        raise http.egress_failure(shown, exc) from None
    return OffloadRequest(
        message=message,
        attempt=ctx.attempt,
        method=method,
        url=str(full),
        headers=headers,
        body=content,
        timeout_s=timeout_s,
        egress=tuple(workflow_allow),
    )


def run(node: Node, rc: Any) -> Outcome:
    """Render, record the call for the handoff, park until its answer (or the timeout)."""
    config = rc.render(node.config)
    timeout_s = rc.timeout_s(node.timeout_ms)
    ctx = rc.step_context(node.id, timeout_s)
    where = Message(rc.eid, node.id, rc.msg.seq + 1, rc.branch)  # the seq the branch parks at
    request = build(
        config,
        ctx,
        timeout_s=timeout_s,
        message=where,
        egress=rc.rt.egress,
        workflow_allow=rc.graph.egress_allow,
    )
    expect = http._expect(config)
    rc.offload(request)
    info: dict[str, Any] = {
        "wait": "offload",
        "call": f"{request.method} {http.safe_url(request.url)}",
        "id": request.dedup_id,
        "at": rc.now,
    }
    if expect is not None:
        info["expect"] = list(expect)
    return Park(info, delay_ms=int(timeout_s * 1000) + GRACE_MS, suffix="#timeout")


def resume(node: Node, rc: Any, info: dict[str, Any]) -> Outcome:
    """A delivery for the parked step: its answer, or its timeout message; anything else is stale."""
    completion: Completion | None = rc.completion
    if completion is None:
        if rc.msg.node.endswith("#timeout"):
            timeout_ms = node.timeout_ms or int(rc.rt.time_budget_s * 1000)
            return Failed(
                StepError("timeout", f"{info.get('call')}: no answer within {format_ms(timeout_ms)}", node.id)
            )
        raise NotCurrent()
    return judge(node, info, completion)


def judge(node: Node, info: Mapping[str, Any], completion: Completion) -> Outcome:
    """The answer as an inline response: ``Done({status, headers, json, text})`` or ``Failed``."""
    cb = completion.callback
    shown = str(info.get("call") or node.id)
    status = int(getattr(cb, "status", 0) or 0)
    if status == 0:
        name = getattr(cb, "error", None) or "http.connect"
        detail = getattr(cb, "detail", "") or "the target could not be reached (no response)"
        return Failed(StepError(name, f"{shown}: {detail}", node.id))
    raw_headers = getattr(cb, "headers", None) or {}
    headers: dict[str, str] = {}
    for key, values in raw_headers.items():
        values = values if isinstance(values, list) else [values]
        key = str(key).lower()
        joined = ", ".join(str(v) for v in values)
        headers[key] = f"{headers[key]}, {joined}" if key in headers else joined
    body = getattr(cb, "body", b"") or b""
    cut = truncated(status, headers, body)
    if cut is not None:
        # QStash cuts a response beyond the plan's message size: never judge half a response
        return Failed(
            StepError(
                "http.truncated",
                f"{shown}: the response was cut to {len(body)} of its {cut} bytes on its way back "
                "(QStash's message size limit); make the call inline or have the target answer less",
                node.id,
            )
        )
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else str(body)
    result = {
        "status": status,
        "headers": headers,
        "json": http._parse_json(text, headers.get("content-type", "")),
        "text": text,
    }
    expect = info.get("expect")
    ok = (200 <= status < 300) if expect is None else status in expect
    if ok:
        return Done(result)
    retry_after = http.parse_retry_after(headers.get("retry-after")) if status in (429, 503) else None
    detail = f": {http._excerpt(text)}" if text.strip() else ""
    return Failed(
        StepError(f"http.{status}", f"{shown} → {status}{detail}", node.id, retry_after_ms=retry_after)
    )


def truncated(status: int, headers: Mapping[str, str], body: bytes | str) -> int | None:
    """The length the target declared when fewer bytes arrived (a cut response), else None. Only a
    plain ``Content-Length`` is comparable (an encoded body's length differs once decoded)."""
    declared = headers.get("content-length", "").strip()
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if status in (204, 304) or not declared.isdigit() or encoding not in ("", "identity"):
        return None
    size = len(body) if isinstance(body, bytes) else len(body.encode())
    return int(declared) if size < int(declared) else None


# ------------------------------------------------------------------------- the local caller's side


def perform(request: OffloadRequest, policy: EgressPolicy | None = None) -> CallResult:
    """Make the call (httpx, the request's timeout, no redirects followed — like QStash) and describe
    the outcome; the target's failures are results, never exceptions. The connection is checked by
    ``policy`` (default: the environment's) plus the workflow's rules the request carries."""
    httpx = lazyimport.httpx()

    shown = f"{request.method} {http.safe_url(request.url)}"
    pool = http.client((policy or http.default_policy()).for_workflow(request.egress))
    deadline = time.monotonic() + request.timeout_s
    try:
        built = pool.build_request(
            request.method,
            request.url,
            headers=request.headers,
            content=request.body,
            timeout=request.timeout_s,
        )
        response = pool.send(built, stream=True, follow_redirects=False)
        try:
            body = http._read_body(response, deadline, shown)
        finally:
            response.close()
    except StepFailure as failure:  # http.too_large, timeout while reading
        return CallResult(0, error=failure.error.name, detail=failure.error.message)
    except EgressRefused as exc:
        return CallResult(0, error="http.egress", detail=f"refused by the egress policy: {exc.reason}")
    except httpx.TimeoutException:
        return CallResult(0, error="timeout", detail=f"no response within {request.timeout_s:g}s")
    except (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.LocalProtocolError) as exc:
        return CallResult(0, error="http.request", detail=f"invalid request: {type(exc).__name__}")
    except httpx.TransportError as exc:
        return CallResult(0, error="http.connect", detail=http._transport_reason(exc))
    headers: dict[str, list[str]] = {}
    for key, value in response.headers.multi_items():
        headers.setdefault(key.lower(), []).append(value)
    return CallResult(response.status_code, headers, body)
