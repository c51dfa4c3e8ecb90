"""Who may call: the operations API's scoped bearer keys and the webhook's delivery signatures.

* API routes take ``Authorization: Bearer <key>`` (scheme case-insensitive). The token is compared
  in constant time against *every* configured key (``HOPFLOW_API_KEY``, scope ``operate``, and
  ``HOPFLOW_API_KEYS``, ``read:KEY,operate:KEY``), so several keys can be valid at once (rotation)
  and the time taken does not tell which one, or how much of one, matched. A route names the scope
  it needs (``read``: status, history, lists, views; ``operate``: start, cancel, notify, resume —
  ``operate`` implies ``read``); a valid key without it is 403 ``forbidden``. A server without any
  key answers 503 ``api-disabled``.
* Webhook routes take a QStash JWT or an Ed25519 ``Hopflow-Signature`` over the raw body and the
  *public* URL (``HOPFLOW_PUBLIC_URL`` + the path below the app's root + the query), never the URL
  as seen behind a proxy (:mod:`engine.signing` checks them).

There is no key-less or unsigned mode, not even for loopback clients: a server's own ``http`` steps
are loopback clients too (``hopflow serve`` without a key makes a random dev key instead).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from engine.web.problems import Problem

if TYPE_CHECKING:  # pragma: no cover - typing only
    from starlette.requests import Request

    from engine.config import ApiKey, Config

log = logging.getLogger("hopflow.asgi")

SCOPES = ("read", "operate")


def route_path(request: Request) -> str:
    """The path below the app's root: what ``HOPFLOW_PUBLIC_URL`` is the root of."""
    path: str = request.scope.get("path", "/")
    root = (request.scope.get("root_path", "") or "").rstrip("/")
    if root and (path == root or path.startswith(root + "/")):  # "/api" is no root of "/apix/…"
        path = path[len(root) :] or "/"
    return path


def matching_key(keys: tuple[ApiKey, ...], token: str) -> ApiKey | None:
    """The key equal to ``token``, compared in constant time against every key (no early exit)."""
    given = token.encode()
    found: ApiKey | None = None
    for key in keys:
        if hmac.compare_digest(given, key.secret.encode()) and found is None:
            found = key
    return found


def authorize(config: Config, request: Request, scope: str = "operate") -> ApiKey:
    """``Authorization: Bearer <key>`` with a key that has ``scope``; the key, else a problem
    (503 no key configured, 401 missing/unknown key, 403 key without the scope)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    challenge = {"WWW-Authenticate": 'Bearer realm="hopflow"'}
    keys = config.keys
    if not keys:
        raise Problem(
            "api-disabled", "this server has no API key configured (HOPFLOW_API_KEY), so the API is disabled"
        )
    kind, _, token = request.headers.get("authorization", "").partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        raise Problem(
            "unauthorized", "missing bearer token (Authorization: Bearer <API key>)", headers=challenge
        )
    key = matching_key(keys, token.strip())
    if key is None:
        raise Problem("unauthorized", "invalid API key", headers=challenge)
    if not key.allows(scope):
        raise Problem(
            "forbidden",
            f"this API key has scope {key.scope}; this request needs scope {scope}",
            headers={
                "WWW-Authenticate": f'Bearer realm="hopflow", error="insufficient_scope", scope="{scope}"'
            },
        )
    return key


class DeliveryVerifier:
    """Checks webhook deliveries against the configured keys (Ed25519 keys parsed once)."""

    def __init__(self, config: Config, now: Callable[[], float]) -> None:
        self.config = config
        self.now = now
        self._ed25519: Mapping[str, bytes] | None = None

    def ed25519_keys(self) -> Mapping[str, bytes]:
        if self._ed25519 is None:
            from engine.signing import parse_verify_keys

            self._ed25519 = parse_verify_keys(list(self.config.verify_keys))
        return self._ed25519

    def verify(self, request: Request, body: bytes) -> str:
        """The scheme that vouched for the raw ``body`` (``qstash``/``ed25519``), else a 401."""
        from engine.signing import SignatureError, public_url, verify_delivery

        if not self.config.public_url:
            log.error("cannot verify deliveries: HOPFLOW_PUBLIC_URL is not set")
            raise Problem(
                "misconfigured", "deliveries cannot be verified: the server's public URL is not configured"
            )
        url = public_url(self.config.public_url, route_path(request), request.url.query)
        try:
            verified = verify_delivery(
                request.headers,
                body,
                url,
                qstash_keys=self.config.qstash_keys,
                ed25519_keys=self.ed25519_keys(),
                now=self.now(),
            )
        except SignatureError as exc:
            raise Problem(
                "invalid-signature", exc.reason, headers={"WWW-Authenticate": 'Signature realm="hopflow"'}
            ) from None
        return verified.scheme
