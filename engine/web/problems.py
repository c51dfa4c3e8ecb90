"""JSON problem documents (RFC 9457): the one shape every HTTP error of the API takes.

A client can always rely on ``type``, ``title``, ``status`` and ``detail``; a 422 adds ``errors``
(``[{"path": "/a/0", "message": "..."}]``, JSON Pointer paths). ``detail`` is written for people and
never contains a secret: callers pass exception *reasons* (which the signing and config modules
keep free of keys and tokens), never raw headers or environment values.

Importing this module costs nothing beyond the standard library; the Starlette response is built
only when one is asked for.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    from starlette.responses import Response

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://hopflow.dev/problems/"
NON_RETRYABLE_HEADER = "Upstash-NonRetryable-Error"
NON_RETRYABLE_STATUS = 489  # QStash: to the DLQ at once, no retry

# problem type slug → (status, title). The slug is the stable, documented identifier of a problem;
# the first slug listed for a status is the generic one (for_status).
TYPES: dict[str, tuple[int, str]] = {
    "bad-request": (400, "Bad request"),
    "malformed-json": (400, "Malformed JSON"),
    "unauthorized": (401, "Unauthorized"),
    "invalid-signature": (401, "Invalid signature"),
    "forbidden": (403, "Forbidden"),
    "cross-origin": (403, "Cross-origin request refused"),
    "not-found": (404, "Not found"),
    "unknown-workflow": (404, "Unknown workflow"),
    "unknown-execution": (404, "Unknown execution"),
    "method-not-allowed": (405, "Method not allowed"),
    "request-timeout": (408, "Request timeout"),
    "conflict": (409, "Conflict"),
    "payload-too-large": (413, "Payload too large"),
    "unsupported-media-type": (415, "Unsupported media type"),
    "misdirected-request": (421, "Misdirected request"),
    "invalid-input": (422, "Invalid input"),
    "invalid-request": (422, "Invalid request"),
    "non-retryable": (NON_RETRYABLE_STATUS, "Message can never succeed"),
    "internal": (500, "Internal error"),
    "not-implemented": (501, "Not implemented"),
    "misconfigured": (500, "Server misconfigured"),
    "unavailable": (503, "Service unavailable"),
    "api-disabled": (503, "API disabled"),
}


class Problem(Exception):
    """An HTTP error as a problem document; raise it anywhere in a handler, the app renders it.

    ``kind`` is a slug of :data:`TYPES` (it fixes the default status and title); ``errors`` is the
    list of validation errors for 422s; ``headers`` are extra response headers (``Allow``,
    ``WWW-Authenticate``, ``Upstash-NonRetryable-Error``…).
    """

    def __init__(
        self,
        kind: str,
        detail: str,
        *,
        status: int | None = None,
        title: str | None = None,
        errors: Sequence[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        default_status, default_title = TYPES.get(kind, (500, "Error"))
        self.kind = kind
        self.status = status or default_status
        self.title = title or default_title
        self.detail = detail
        self.errors = [dict(e) for e in errors] if errors is not None else None
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})
        super().__init__(f"{self.status} {self.title}: {detail}")

    def document(self, instance: str | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": TYPE_BASE + self.kind,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            doc["instance"] = instance
        if self.errors is not None:
            doc["errors"] = self.errors
        for key, value in self.extra.items():
            doc.setdefault(key, value)
        return doc

    def response(self, instance: str | None = None) -> Response:
        from starlette.responses import Response

        body = json.dumps(self.document(instance), separators=(",", ":"), ensure_ascii=False).encode()
        return Response(body, status_code=self.status, headers=self.headers, media_type=MEDIA_TYPE)


def non_retryable(detail: str, *, kind: str = "non-retryable", title: str | None = None) -> Problem:
    """A 489 that tells QStash not to retry: the message can never succeed (malformed, unknown…)."""
    return Problem(
        kind, detail, status=NON_RETRYABLE_STATUS, title=title, headers={NON_RETRYABLE_HEADER: "true"}
    )


def for_status(status: int, detail: str | None = None, headers: Mapping[str, str] | None = None) -> Problem:
    """A problem for a bare HTTP status (Starlette's 404/405 for unknown routes and methods)."""
    by_status = {s: k for k, (s, _t) in reversed(list(TYPES.items()))}
    kind = by_status.get(status, "internal" if status >= 500 else "bad-request")
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    title = TYPES[kind][1] if TYPES.get(kind, (0,))[0] == status else phrase
    return Problem(kind, detail or phrase, status=status, title=title, headers=headers)


def validation_errors(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Normalise ``[{"path", "message"}]`` lists (paths as JSON Pointers, messages as text)."""
    out: list[dict[str, str]] = []
    for error in errors:
        path = error.get("path", "")
        if isinstance(path, list | tuple):
            path = "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)
        out.append({"path": str(path), "message": str(error.get("message", ""))})
    return out
