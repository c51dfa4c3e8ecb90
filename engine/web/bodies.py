"""Request bodies: read within a size and a time bound, parse as strict JSON; JSON responses.

Every route that takes a body goes through :func:`read_body` and then :func:`parse_json` (the webhook
routes through :func:`loads`), so the limits are the same everywhere and a refusal happens before
anything touches Redis:

* size — more than ``limit`` bytes is 413, counted while the body streams in (a declared
  ``Content-Length`` over the bound is refused before reading a byte); a body longer or shorter
  than its own ``Content-Length`` is 400;
* time — the whole body must arrive within ``timeout_s`` (``Config.body_timeout_s``, 30 s by
  default; 408 otherwise), so a client trickling bytes cannot hold a request open forever: uvicorn
  has no body read timeout of its own;
* JSON — UTF-8 only; no duplicate object keys (two parsers could disagree on which one wins); no
  ``NaN``/``Infinity`` and no float a double cannot hold (``1e400``), no integer past Python's
  4300-digit guard; at most :data:`MAX_DEPTH` nested
  arrays/objects (deeper input would crash the parser, the schema validator or the templates with
  a RecursionError); no unpaired surrogate escapes (``"\\ud800"`` cannot be encoded for Redis).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from engine.web.problems import Problem

if TYPE_CHECKING:  # pragma: no cover - typing only
    from starlette.requests import Request
    from starlette.responses import Response

MAX_DEPTH = 64  # nested arrays/objects in a JSON body
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_MAX_LENGTH_DIGITS = 18  # a Content-Length with more digits is over any bound (and int() of it is slow)


class JSONRefused(ValueError):
    """A body that is not strict JSON within the limits; ``reason`` says why, for people."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def read_body(request: Request, limit: int, *, timeout_s: float) -> bytes:
    """The raw body, refused (413) once it grows past ``limit`` bytes while streaming, not after,
    and (408) when it has not arrived within ``timeout_s`` seconds."""
    import anyio
    from starlette.requests import ClientDisconnect

    declared = _declared_length(request.headers.get("content-length"), limit)
    chunks: list[bytes] = []
    size = 0
    try:
        with anyio.fail_after(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise Problem("payload-too-large", f"the body is larger than {limit} bytes")
                if declared is not None and size > declared:
                    raise Problem("bad-request", "the body is longer than its Content-Length")
                chunks.append(chunk)
    except TimeoutError:
        raise Problem(
            "request-timeout",
            f"the body did not arrive within {timeout_s:g} s",
            headers={"Connection": "close"},
        ) from None
    except ClientDisconnect:
        raise Problem("bad-request", "the client disconnected before sending the whole body") from None
    if declared is not None and size != declared:
        raise Problem("bad-request", "the body is shorter than its Content-Length")
    return b"".join(chunks)


def _declared_length(value: str | None, limit: int) -> int | None:
    if value is None:
        return None
    text = value.strip()
    if not text or not text.isascii() or not text.isdigit():
        raise Problem("bad-request", "Content-Length is not a number")
    if len(text) > _MAX_LENGTH_DIGITS or int(text) > limit:
        raise Problem("payload-too-large", f"the body is larger than {limit} bytes")
    return int(text)


def loads(body: bytes) -> Any:
    """Strict JSON (see the module docstring); raises :class:`JSONRefused` with a readable reason."""
    if not body.strip():
        raise JSONRefused("the body is empty; a JSON object is expected")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONRefused(f"the body is not UTF-8 (invalid byte at offset {exc.start})") from None
    try:
        data = json.loads(
            text, object_pairs_hook=_unique_keys, parse_constant=_no_constant, parse_float=_float
        )
    except RecursionError:
        raise JSONRefused(f"the JSON is nested deeper than {MAX_DEPTH} levels") from None
    except JSONRefused:
        raise
    except ValueError as exc:
        if "int_max_str_digits" in str(exc):  # Python's own guard against quadratic int parsing
            raise JSONRefused("the JSON has an integer with too many digits") from None
        raise JSONRefused(f"the body is not valid JSON: {exc}") from None
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH:  # else it cannot be too deep
        _check_depth(data)
    if _SURROGATE_ESCAPE.search(text):  # decoded UTF-8 has none: only an escape can make one
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise JSONRefused("the JSON has an unpaired surrogate escape (\\ud800-\\udfff)") from None
    return data


def parse_json(body: bytes) -> Any:
    """:func:`loads` for the API: a refusal is a 400 ``malformed-json`` problem."""
    try:
        return loads(body)
    except JSONRefused as exc:
        raise Problem("malformed-json", exc.reason) from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JSONRefused(f"the JSON has a duplicate key {key[:50]!r}")
            seen.add(key)
    return data


def _no_constant(name: str) -> Any:
    raise JSONRefused(f"{name} is not JSON (numbers must be finite)")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONRefused(f"the number {text[:30]} is too large")
    return value


def _check_depth(value: Any) -> None:
    """Nesting depth without recursion (the check must not fail the way it guards against)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        if depth > MAX_DEPTH:
            raise JSONRefused(f"the JSON is nested deeper than {MAX_DEPTH} levels")
        for item in node.values() if type(node) is dict else node:
            kind = type(item)
            if kind is dict or kind is list:
                push((item, depth + 1))


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    from starlette.responses import Response

    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(body, status_code=status, headers=dict(headers or {}), media_type="application/json")
