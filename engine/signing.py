"""Who may call the webhook: QStash JWTs (HS256) and hopflow's own Ed25519 delivery signatures.

Both schemes bind a signature to the exact URL that was called and to the raw body bytes, and both
expire, so a captured request cannot be replayed elsewhere or much later. Every secret comparison
is constant-time. PyNaCl is imported lazily: a QStash-only worker never pays for it at cold start.

Formats (documented in docs/qstash.md):

* QStash: ``Upstash-Signature: <JWT>``; header ``{"alg": "HS256", "typ": "JWT"}``; claims ``iss`` =
  ``"Upstash"``, ``sub`` = destination URL, ``exp``, ``nbf``, ``iat``, ``jti``, ``body`` =
  base64url(SHA-256(raw body)) (padding optional). The HMAC key is the signing key's UTF-8 text.
* Ed25519: ``Hopflow-Signature: t=<unix seconds>,kid=<key id>,sig=<base64url, no padding>`` where
  ``sig`` signs the UTF-8 bytes of ``f"{t}.{url}.{sha256(body).hexdigest()}"``. Private keys are
  ``hopflow_sk_<base64url(32-byte seed)>``, public keys ``hopflow_pk_<base64url(32-byte key)>``, and a
  key id is the first 8 characters of base64url(SHA-256(raw public key)).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # pragma: no cover - typing only
    from nacl.signing import VerifyKey

QSTASH_SIGNATURE_HEADER = "Upstash-Signature"
HOPFLOW_SIGNATURE_HEADER = "Hopflow-Signature"
QSTASH_ISSUER = "Upstash"
DEFAULT_CLOCK_TOLERANCE_S = 10.0
QSTASH_TOKEN_TTL_S = 300
ED25519_MAX_AGE_S = 300.0
PRIVATE_KEY_PREFIX = "hopflow_sk_"
PUBLIC_KEY_PREFIX = "hopflow_pk_"
KEY_ID_LENGTH = 8

_MAX_TOKEN_CHARS = 8192
_MAX_HEADER_CHARS = 1024


class SignatureError(Exception):
    """A request's signature is missing, malformed, forged, stale or for another URL/body.

    ``reason`` is safe to log and to return to the caller: it never contains a key or a token.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeyFormatError(ValueError):
    """A configured key is not in the expected format (a configuration problem, not a forged request)."""


# --------------------------------------------------------------------------------------------- utils


def b64url_encode(data: bytes, *, pad: bool = False) -> str:
    text = base64.urlsafe_b64encode(data).decode("ascii")
    return text if pad else text.rstrip("=")


_B64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")
# acceptable JWT headers of correctly signed tokens, decoded, by their base64url text: QStash signs
# every token with the same header, so it is parsed once per process (bounded all the same)
_HEADERS: dict[str, Any] = {}
_HEADERS_MAX = 16


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding; anything else raises ValueError."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    stripped = text.rstrip("=")
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


def body_hash_b64url(body: bytes) -> str:
    """base64url(SHA-256(body)) without padding: the ``body`` claim of a QStash JWT."""
    return b64url_encode(hashlib.sha256(body).digest())


def public_url(base: str, path: str, query: str = "") -> str:
    """The URL a sender signed: ``HOPFLOW_PUBLIC_URL`` + request path (+ query), never the proxy's view."""
    url = base.rstrip("/") + "/" + path.lstrip("/")
    return f"{url}?{query}" if query else url


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# -------------------------------------------------------------------------------------------- QStash


def sign_qstash(
    body: bytes,
    url: str,
    key: str,
    *,
    now: float | None = None,
    ttl_s: int = QSTASH_TOKEN_TTL_S,
    jti: str | None = None,
) -> str:
    """A JWT exactly as QStash makes it (used by the dev server and by tests)."""
    if not key:
        raise KeyFormatError("an empty QStash signing key cannot sign")
    issued = int(now if now is not None else time.time())
    header = {"alg": "HS256", "typ": "JWT"}
    claims = {
        "iss": QSTASH_ISSUER,
        "sub": url,
        "exp": issued + ttl_s,
        "nbf": issued,
        "iat": issued,
        "jti": jti or f"jwt_{secrets.token_hex(12)}",
        "body": b64url_encode(hashlib.sha256(body).digest(), pad=True),
    }
    signing_input = (
        b64url_encode(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    )
    mac = hmac.new(key.encode(), signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + b64url_encode(mac)


def verify_qstash(
    token: str | None,
    body: bytes,
    url: str,
    keys: Iterable[str | None],
    *,
    now: float | None = None,
    tolerance_s: float = DEFAULT_CLOCK_TOLERANCE_S,
) -> dict[str, Any]:
    """Check an ``Upstash-Signature`` JWT against the raw body and the public URL; return its claims.

    ``keys`` are tried in order (current, then next, for rotation); empty entries are skipped. The
    signature is checked before any claim is trusted; ``exp`` and ``nbf`` are both widened by
    ``tolerance_s`` seconds. Raises SignatureError.
    """
    usable = [k for k in keys if k]
    if not usable:
        raise SignatureError("no QStash signing keys are configured")
    if not token:
        raise SignatureError(f"missing {QSTASH_SIGNATURE_HEADER} header")
    if not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS or not token.isascii():
        raise SignatureError("malformed token")
    parts = token.split(".")
    if len(parts) != 3:
        raise SignatureError("malformed token")
    header_b64, claims_b64, sig_b64 = parts
    try:
        header = _HEADERS.get(header_b64)
        if header is None:
            header = json.loads(b64url_decode(header_b64))
        mac = b64url_decode(sig_b64)
    except (ValueError, UnicodeDecodeError):
        raise SignatureError("malformed token") from None
    if not isinstance(header, dict):
        raise SignatureError("malformed token")
    if header.get("alg") != "HS256":
        raise SignatureError("unsupported token algorithm (only HS256 is accepted)")
    if "crit" in header or header.get("typ", "JWT") != "JWT":
        raise SignatureError("unsupported token header")

    signing_input = f"{header_b64}.{claims_b64}".encode("ascii")
    matched = False
    for key in usable:
        expected = hmac.digest(key.encode(), signing_input, "sha256")
        if hmac.compare_digest(expected, mac):
            matched = True
            break
    if not matched:
        raise SignatureError("invalid signature")
    if header_b64 not in _HEADERS and len(_HEADERS) < _HEADERS_MAX:
        _HEADERS[header_b64] = header  # signed with our key and acceptable (its fields are only read)

    try:
        claims = json.loads(b64url_decode(claims_b64))
    except (ValueError, UnicodeDecodeError):
        raise SignatureError("malformed token claims") from None
    if not isinstance(claims, dict):
        raise SignatureError("malformed token claims")
    if claims.get("iss") != QSTASH_ISSUER:
        raise SignatureError("wrong token issuer")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not hmac.compare_digest(sub.encode(), url.encode()):
        raise SignatureError("token was issued for another URL")
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if not _is_number(exp) or not _is_number(nbf):
        raise SignatureError("token lacks exp/nbf")
    current = time.time() if now is None else now
    if current > exp + tolerance_s:
        raise SignatureError("token has expired")
    if current < nbf - tolerance_s:
        raise SignatureError("token is not valid yet")
    claimed = claims.get("body")
    if not isinstance(claimed, str):
        raise SignatureError("token lacks a body hash")
    if not hmac.compare_digest(claimed.rstrip("=").encode(), body_hash_b64url(body).encode()):
        raise SignatureError("body does not match the signed hash")
    return claims


def qstash_keys_from_env(env: Mapping[str, str] | None = None) -> list[str]:
    """``[QSTASH_CURRENT_SIGNING_KEY, QSTASH_NEXT_SIGNING_KEY]``, leaving out unset ones."""
    env = os.environ if env is None else env
    return [v for v in (env.get("QSTASH_CURRENT_SIGNING_KEY"), env.get("QSTASH_NEXT_SIGNING_KEY")) if v]


# ------------------------------------------------------------------------------------------- Ed25519


class Ed25519KeyPair(NamedTuple):
    private_key: str  # HOPFLOW_SIGNING_KEY (the dispatcher only)
    public_key: str  # an entry of HOPFLOW_VERIFY_KEYS (every worker)


def _decode_key(text: str, prefix: str, other_prefix: str, what: str) -> bytes:
    text = text.strip()
    if text.startswith(other_prefix):
        wrong = "a private" if other_prefix == PRIVATE_KEY_PREFIX else "a public"
        raise KeyFormatError(f"expected {what} key but got {wrong} key")
    if not text.startswith(prefix):
        raise KeyFormatError(f"{what} key must start with {prefix!r}")
    try:
        raw = b64url_decode(text[len(prefix) :])
    except ValueError:
        raise KeyFormatError(f"{what} key is not base64url") from None
    if len(raw) != 32:
        raise KeyFormatError(f"{what} key must encode 32 bytes")
    return raw


def _raw_private(private_key: str) -> bytes:
    return _decode_key(private_key, PRIVATE_KEY_PREFIX, PUBLIC_KEY_PREFIX, "a private")


def _raw_public(public_key: str) -> bytes:
    return _decode_key(public_key, PUBLIC_KEY_PREFIX, PRIVATE_KEY_PREFIX, "a public")


def _key_id_raw(raw_public: bytes) -> str:
    return b64url_encode(hashlib.sha256(raw_public).digest())[:KEY_ID_LENGTH]


def generate_ed25519_keypair() -> Ed25519KeyPair:
    """A fresh key pair for ``hopflow keys generate``."""
    from nacl.signing import SigningKey

    signing = SigningKey.generate()
    return Ed25519KeyPair(
        PRIVATE_KEY_PREFIX + b64url_encode(bytes(signing)),
        PUBLIC_KEY_PREFIX + b64url_encode(bytes(signing.verify_key)),
    )


def public_key_of(private_key: str) -> str:
    from nacl.signing import SigningKey

    return PUBLIC_KEY_PREFIX + b64url_encode(bytes(SigningKey(_raw_private(private_key)).verify_key))


def key_id(public_key: str) -> str:
    """First 8 chars of base64url(SHA-256(raw 32-byte public key)): names a key, proves nothing."""
    return _key_id_raw(_raw_public(public_key))


def parse_verify_keys(value: str | Sequence[str] | None) -> dict[str, bytes]:
    """``HOPFLOW_VERIFY_KEYS`` (comma-separated, or a list) → {key id: raw public key}."""
    if value is None:
        return {}
    items = value.split(",") if isinstance(value, str) else list(value)
    keys: dict[str, bytes] = {}
    for item in items:
        if not item or not item.strip():
            continue
        raw = _raw_public(item)
        keys[_key_id_raw(raw)] = raw
    return keys


def _ed25519_payload(timestamp: int, url: str, body: bytes) -> bytes:
    return f"{timestamp}.{url}.{hashlib.sha256(body).hexdigest()}".encode()


def sign_ed25519(body: bytes, url: str, private_key: str, *, now: float | None = None) -> str:
    """The ``Hopflow-Signature`` header value for delivering ``body`` to ``url``."""
    from nacl.signing import SigningKey

    signing = SigningKey(_raw_private(private_key))
    timestamp = int(time.time() if now is None else now)
    signature = signing.sign(_ed25519_payload(timestamp, url, body)).signature
    kid = _key_id_raw(bytes(signing.verify_key))
    return f"t={timestamp},kid={kid},sig={b64url_encode(signature)}"


def _parse_hopflow_header(header: str) -> tuple[int, str, bytes]:
    if len(header) > _MAX_HEADER_CHARS:
        raise SignatureError("malformed signature header")
    fields: dict[str, str] = {}
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or name in fields or name not in ("t", "kid", "sig"):
            raise SignatureError("malformed signature header")
        fields[name] = value
    if set(fields) != {"t", "kid", "sig"} or not re.fullmatch(r"\d{1,12}", fields["t"]):
        raise SignatureError("malformed signature header")
    try:
        signature = b64url_decode(fields["sig"])
    except ValueError:
        raise SignatureError("malformed signature header") from None
    if len(signature) != 64:
        raise SignatureError("malformed signature header")
    return int(fields["t"]), fields["kid"], signature


def verify_ed25519(
    header: str | None,
    body: bytes,
    url: str,
    verify_keys: str | Sequence[str] | Mapping[str, bytes],
    *,
    now: float | None = None,
    max_age_s: float = ED25519_MAX_AGE_S,
) -> str:
    """Check a ``Hopflow-Signature`` header; return the key id that signed it. Raises SignatureError.

    ``verify_keys`` is ``HOPFLOW_VERIFY_KEYS`` as text or list, or the result of parse_verify_keys.
    Timestamps further than ``max_age_s`` from now, in either direction, are rejected.
    """
    keys = verify_keys if isinstance(verify_keys, Mapping) else parse_verify_keys(verify_keys)
    if not keys:
        raise SignatureError("no Ed25519 verify keys are configured")
    if not header:
        raise SignatureError(f"missing {HOPFLOW_SIGNATURE_HEADER} header")
    timestamp, kid, signature = _parse_hopflow_header(header)
    raw_public = None
    for candidate_id, candidate in keys.items():
        if hmac.compare_digest(candidate_id.encode(), kid.encode()):
            raw_public = candidate
    if raw_public is None:
        raise SignatureError("unknown key id")
    current = time.time() if now is None else now
    if abs(current - timestamp) > max_age_s:
        raise SignatureError("signature timestamp is stale")

    from nacl.exceptions import BadSignatureError

    try:
        _verify_key(raw_public).verify(_ed25519_payload(timestamp, url, body), signature)
    except BadSignatureError:
        raise SignatureError("invalid signature") from None
    return kid


def _verify_key(raw_public: bytes) -> VerifyKey:
    from nacl.signing import VerifyKey

    return VerifyKey(raw_public)


# ------------------------------------------------------------------------------------- either scheme


@dataclass(frozen=True)
class Verified:
    """Which scheme vouched for a request: ``"qstash"`` (with its claims) or ``"ed25519"`` (with its kid)."""

    scheme: str
    claims: Mapping[str, Any] | None = None
    key_id: str | None = None


def verify_delivery(
    headers: Mapping[str, str],
    body: bytes,
    url: str,
    *,
    qstash_keys: Sequence[str | None] = (),
    ed25519_keys: str | Sequence[str] | Mapping[str, bytes] | None = None,
    now: float | None = None,
    tolerance_s: float = DEFAULT_CLOCK_TOLERANCE_S,
) -> Verified:
    """Verify whichever signature header a webhook request carries (case-insensitive lookup).

    A request with an ``Upstash-Signature`` is judged only as QStash, one with ``Hopflow-Signature``
    only as Ed25519; a scheme with no keys configured rejects. Raises SignatureError.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    token = lowered.get(QSTASH_SIGNATURE_HEADER.lower())
    if token is not None:
        claims = verify_qstash(token, body, url, qstash_keys, now=now, tolerance_s=tolerance_s)
        return Verified("qstash", claims=claims)
    ed = lowered.get(HOPFLOW_SIGNATURE_HEADER.lower())
    if ed is not None:
        kid = verify_ed25519(ed, body, url, ed25519_keys or {}, now=now)
        return Verified("ed25519", key_id=kid)
    raise SignatureError("request is not signed")
