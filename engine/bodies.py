"""Request bodies: read within a size bound, parse as JSON; JSON responses.

Every route that takes a body goes through :func:`read_body` and then :func:`parse_json`, so the
limits are the same everywhere and a refusal happens before anything touches Redis: more than
``limit`` bytes is 413, counted while the body streams in (a declared ``Content-Length`` over the
bound is refused before reading a byte); a body that is not JSON is 400.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from engine.problems import Problem

if TYPE_CHECKING:  # pragma: no cover - typing only
    from starlette.requests import Request
    from starlette.responses import Response


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused (413) once it grows past ``limit`` bytes while streaming, not after."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise Problem("bad-request", "Content-Length is not a number")
        if int(declared) > limit:
            raise Problem("payload-too-large", f"the body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem("payload-too-large", f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    """The body as JSON; a refusal is a 400 ``malformed-json`` problem."""
    if not body.strip():
        raise Problem("malformed-json", "the request body is empty; a JSON object is expected")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem("malformed-json", f"the request body is not valid JSON: {exc}") from None


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    from starlette.responses import Response

    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(body, status_code=status, headers=dict(headers or {}), media_type="application/json")
