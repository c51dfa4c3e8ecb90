"""Who may call: the operations API's bearer key, the webhook's delivery signatures, the dev bypass.

* API routes take ``Authorization: Bearer $HOPFLOW_API_KEY`` (scheme case-insensitive, compared in
  constant time); a server without a key answers 503 ``api-disabled``.
* Webhook routes take a QStash JWT or an Ed25519 ``Hopflow-Signature`` over the raw body and the
  *public* URL (``HOPFLOW_PUBLIC_URL`` + the path below the app's root + the query), never the URL
  as seen behind a proxy (:mod:`engine.signing` checks them).
* ``HOPFLOW_DEV_INSECURE=1`` lets a direct loopback client skip both — only when the request carries
  no proxy header, since behind a local reverse proxy every client would look like loopback.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from engine.web.problems import Problem

if TYPE_CHECKING:  # pragma: no cover - typing only
    from starlette.requests import Request

    from engine.config import Config

log = logging.getLogger("hopflow.asgi")

DEV_WARNING = (
    "HOPFLOW_DEV_INSECURE=1: UNSIGNED WEBHOOK CALLS AND API CALLS WITHOUT A KEY ARE ACCEPTED FROM "
    "LOOPBACK CLIENTS. Never set this on a server anyone else can reach."
)
PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


def route_path(request: Request) -> str:
    """The path below the app's root: what ``HOPFLOW_PUBLIC_URL`` is the root of."""
    path: str = request.scope.get("path", "/")
    root = (request.scope.get("root_path", "") or "").rstrip("/")
    if root and (path == root or path.startswith(root + "/")):  # "/api" is no root of "/apix/…"
        path = path[len(root) :] or "/"
    return path


def is_loopback_client(request: Request) -> bool:
    """A direct loopback client: no proxy headers (a local reverse proxy would make everyone loopback)."""
    from engine.config import is_loopback_host

    client = request.client
    if client is None or not is_loopback_host(client.host):
        return False
    return not any(h in request.headers for h in PROXY_HEADERS)


def dev_bypass(config: Config, request: Request) -> bool:
    return config.dev_insecure and is_loopback_client(request)


def authorize(config: Config, request: Request, scope: str = "operate") -> None:
    """``Authorization: Bearer $HOPFLOW_API_KEY`` (constant-time), or the dev bypass. ``scope``
    (``read`` or ``operate``) is what the route needs; the one key holds both (scoped keys: http-guard)."""
    if dev_bypass(config, request):
        return
    challenge = {"WWW-Authenticate": 'Bearer realm="hopflow"'}
    key = config.api_key
    if not key:
        raise Problem("api-disabled", "this server has no HOPFLOW_API_KEY configured, so the API is disabled")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(
            "unauthorized",
            "missing bearer token (Authorization: Bearer <HOPFLOW_API_KEY>)",
            headers=challenge,
        )
    if not hmac.compare_digest(token.strip().encode(), key.encode()):
        raise Problem("unauthorized", "invalid API key", headers=challenge)


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
        """The scheme that vouched for the raw ``body`` (``qstash``/``ed25519``/``dev``), else a 401."""
        from engine.signing import SignatureError, public_url, verify_delivery

        if dev_bypass(self.config, request):
            return "dev"
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
