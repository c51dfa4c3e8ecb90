"""Signature verification: QStash JWTs (checked against the official SDK's Receiver) and Ed25519."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import warnings

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qstash import Receiver
from qstash.errors import SignatureError as SdkSignatureError

from engine.signing import (
    ED25519_MAX_AGE_S,
    KeyFormatError,
    SignatureError,
    b64url_encode,
    body_hash_b64url,
    generate_ed25519_keypair,
    key_id,
    parse_verify_keys,
    public_key_of,
    public_url,
    qstash_keys_from_env,
    sign_ed25519,
    sign_qstash,
    verify_delivery,
    verify_ed25519,
    verify_qstash,
)

CURRENT = "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r"
NEXT = "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs"
OTHER = "sig_someOtherKeyNobodyConfigured"
URL = "https://hopflow.example.com/v1/step"
BODY = b'{"execution_id":"e1","node":"a","seq":3}'


def sdk_accepts(token: str, body: bytes, url: str, tolerance: int = 0) -> bool:
    try:
        Receiver(CURRENT, NEXT).verify(
            signature=token, body=body.decode(), url=url, clock_tolerance=tolerance
        )
    except SdkSignatureError:
        return False
    return True


def ours_accepts(token: str, body: bytes, url: str, tolerance: float = 0) -> bool:
    try:
        verify_qstash(token, body, url, [CURRENT, NEXT], tolerance_s=tolerance)
    except SignatureError:
        return False
    return True


def pyjwt_token(key: str = CURRENT, body: bytes = BODY, url: str = URL, *, algorithm: str = "HS256",
                exp_in: int = 300, nbf_in: int = 0, body_claim: str | None = None, **extra: object) -> str:
    """A token made the way QStash makes them, but by an independent JWT library."""
    now = int(time.time())
    padded_hash = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode()
    claims = {"iss": "Upstash", "sub": url, "exp": now + exp_in, "nbf": now + nbf_in, "iat": now,
              "jti": "jwt_x", "body": body_claim or padded_hash}
    claims.update(extra)
    with warnings.catch_warnings():  # HS512 with a short key: irrelevant, it must be rejected anyway
        warnings.simplefilter("ignore")
        return jwt.encode(claims, key, algorithm=algorithm)


def forge(header: dict, claims: dict, signature: bytes = b"") -> str:
    enc = lambda d: b64url_encode(json.dumps(d).encode())  # noqa: E731
    return f"{enc(header)}.{enc(claims)}.{b64url_encode(signature)}"


# ----------------------------------------------------------------------------------------------- QStash


def test_our_tokens_satisfy_the_sdk_receiver_and_ours() -> None:
    for key in (CURRENT, NEXT):
        token = sign_qstash(BODY, URL, key)
        assert sdk_accepts(token, BODY, URL)
        claims = verify_qstash(token, BODY, URL, [CURRENT, NEXT])
        assert claims["iss"] == "Upstash" and claims["sub"] == URL
        assert claims["exp"] - claims["nbf"] == 300 and claims["jti"].startswith("jwt_")


def test_token_signed_with_next_key_is_accepted_and_unconfigured_key_is_not() -> None:
    assert ours_accepts(pyjwt_token(NEXT), BODY, URL)
    with pytest.raises(SignatureError, match="invalid signature"):
        verify_qstash(pyjwt_token(NEXT), BODY, URL, [CURRENT])


# built when the test runs, not at import: the time claims are relative to "now", and a
# collected-then-delayed run (xdist, a slow machine) must not turn "not yet valid" into valid
CASES = {
    "valid": lambda: (pyjwt_token(), BODY, URL, True),
    "valid, unpadded body hash": lambda: (pyjwt_token(body_claim=body_hash_b64url(BODY)), BODY, URL, True),
    "tampered body": lambda: (pyjwt_token(), BODY.replace(b"3", b"4"), URL, False),
    "empty body": lambda: (pyjwt_token(), b"", URL, False),
    "wrong url": lambda: (pyjwt_token(), BODY, URL + "x", False),
    "other host": lambda: (pyjwt_token(), BODY, "https://evil.example.com/v1/step", False),
    "expired": lambda: (pyjwt_token(exp_in=-60, nbf_in=-360), BODY, URL, False),
    "not yet valid": lambda: (pyjwt_token(nbf_in=60, exp_in=360), BODY, URL, False),
    "wrong key": lambda: (pyjwt_token(OTHER), BODY, URL, False),
    "wrong issuer": lambda: (pyjwt_token(iss="Mallory"), BODY, URL, False),
    "HS512": lambda: (pyjwt_token(algorithm="HS512"), BODY, URL, False),
    "alg none, no signature": lambda: (
        forge({"alg": "none", "typ": "JWT"}, jwt.decode(pyjwt_token(), CURRENT, algorithms=["HS256"],
                                                         options={"verify_sub": False})),
        BODY, URL, False),
    "garbage": lambda: ("not.a.jwt", BODY, URL, False),
    "two parts": lambda: ("abc.def", BODY, URL, False),
    "empty": lambda: ("", BODY, URL, False),
}


@pytest.mark.parametrize("name", list(CASES))
def test_verdicts_match_the_official_receiver(name: str) -> None:
    token, body, url, expected = CASES[name]()
    assert sdk_accepts(token, body, url) is expected
    assert ours_accepts(token, body, url) is expected


def test_alg_none_is_rejected_even_with_a_valid_looking_mac() -> None:
    good = pyjwt_token()
    _header, claims, sig = good.split(".")
    none_header = b64url_encode(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    for token in (f"{none_header}.{claims}.{sig}", f"{none_header}.{claims}.", jwt.encode(
            jwt.decode(good, CURRENT, algorithms=["HS256"], options={"verify_sub": False}), None,
            algorithm="none")):
        with pytest.raises(SignatureError, match="algorithm"):
            verify_qstash(token, BODY, URL, [CURRENT, NEXT])


def test_other_algorithms_and_headers_are_rejected() -> None:
    claims = jwt.decode(pyjwt_token(), CURRENT, algorithms=["HS256"], options={"verify_sub": False})
    for header in ({"alg": "RS256"}, {"alg": "HS384"}, {"alg": "hs256"}, {"typ": "JWT"}, {"alg": None}):
        with pytest.raises(SignatureError):
            verify_qstash(forge(header, claims, b"x" * 32), BODY, URL, [CURRENT])
    # a correct MAC does not save a token whose header demands unknown critical extensions
    header_b64 = b64url_encode(json.dumps({"alg": "HS256", "crit": ["exp"]}).encode())
    claims_b64 = pyjwt_token().split(".")[1]
    import hmac as _hmac

    mac = _hmac.new(CURRENT.encode(), f"{header_b64}.{claims_b64}".encode(), hashlib.sha256).digest()
    with pytest.raises(SignatureError, match="header"):
        verify_qstash(f"{header_b64}.{claims_b64}.{b64url_encode(mac)}", BODY, URL, [CURRENT])


def test_the_parsed_header_cache_holds_only_headers_of_correctly_signed_tokens() -> None:
    import engine.signing as signing

    claims = jwt.decode(pyjwt_token(), CURRENT, algorithms=["HS256"], options={"verify_sub": False})
    for _ in range(2):  # a refused header is refused again: it was never cached as acceptable
        with pytest.raises(SignatureError, match="algorithm"):
            verify_qstash(forge({"alg": "none", "typ": "JWT"}, claims, b"x" * 32), BODY, URL, [CURRENT])
    for i in range(3 * signing._HEADERS_MAX):  # acceptable but distinct headers (a "kid" each)
        with pytest.raises(SignatureError, match="invalid signature"):
            verify_qstash(forge({"alg": "HS256", "kid": str(i)}, claims, b"x" * 32), BODY, URL, [CURRENT])
    assert not any("kid" in h for h in signing._HEADERS.values())  # forged: none was cached
    assert len(signing._HEADERS) <= signing._HEADERS_MAX
    assert ours_accepts(pyjwt_token(), BODY, URL) and ours_accepts(pyjwt_token(), BODY, URL)


def test_missing_claims_are_rejected_even_when_signed() -> None:
    now = int(time.time())
    full = {"iss": "Upstash", "sub": URL, "exp": now + 300, "nbf": now, "body": body_hash_b64url(BODY)}
    for missing in ("iss", "sub", "exp", "nbf", "body"):
        claims = {k: v for k, v in full.items() if k != missing}
        token = jwt.encode(claims, CURRENT, algorithm="HS256")
        with pytest.raises(SignatureError):
            verify_qstash(token, BODY, URL, [CURRENT])
    token = jwt.encode({**full, "exp": True}, CURRENT, algorithm="HS256")
    with pytest.raises(SignatureError, match="exp"):
        verify_qstash(token, BODY, URL, [CURRENT])


@pytest.mark.parametrize("tolerance", [0, 3, 10])
def test_clock_tolerance_widens_both_exp_and_nbf(tolerance: int) -> None:
    signed_at = 1_700_000_000
    token = sign_qstash(BODY, URL, CURRENT, now=signed_at)  # valid for [signed_at, signed_at + 300]
    skew = 5
    late, early = signed_at + 300 + skew, signed_at - skew
    for now in (late, early):
        if tolerance >= skew:
            assert verify_qstash(token, BODY, URL, [CURRENT], now=now, tolerance_s=tolerance)
        else:
            with pytest.raises(SignatureError, match="expired" if now == late else "not valid yet"):
                verify_qstash(token, BODY, URL, [CURRENT], now=now, tolerance_s=tolerance)
    # the boundaries themselves: exactly at exp + tolerance and nbf - tolerance still pass
    verify_qstash(token, BODY, URL, [CURRENT], now=signed_at + 300 + tolerance, tolerance_s=tolerance)
    verify_qstash(token, BODY, URL, [CURRENT], now=signed_at - tolerance, tolerance_s=tolerance)


def test_tolerance_applies_in_real_time_too() -> None:
    # The SDK's Receiver accepts clock_tolerance but hands it to PyJWT where it is ignored (qstash 3.4),
    # so here only the tolerance-free verdicts are compared with it.
    expired_a_bit = pyjwt_token(exp_in=-5, nbf_in=-305)
    assert not sdk_accepts(expired_a_bit, BODY, URL, tolerance=0)
    assert not ours_accepts(expired_a_bit, BODY, URL, tolerance=0)
    assert ours_accepts(expired_a_bit, BODY, URL, tolerance=60)
    early_a_bit = pyjwt_token(nbf_in=5, exp_in=305)
    assert not sdk_accepts(early_a_bit, BODY, URL, tolerance=0)
    assert not ours_accepts(early_a_bit, BODY, URL, tolerance=0)
    assert ours_accepts(early_a_bit, BODY, URL, tolerance=60)


def test_no_keys_or_no_token_is_a_clear_rejection() -> None:
    with pytest.raises(SignatureError, match="no QStash signing keys"):
        verify_qstash(pyjwt_token(), BODY, URL, [None, ""])
    with pytest.raises(SignatureError, match="missing"):
        verify_qstash(None, BODY, URL, [CURRENT])


def test_errors_never_echo_keys_or_tokens() -> None:
    token = pyjwt_token(OTHER)
    with pytest.raises(SignatureError) as info:
        verify_qstash(token, BODY, URL, [CURRENT, NEXT])
    text = str(info.value)
    assert CURRENT not in text and NEXT not in text and token not in text


def test_keys_from_env_and_public_url() -> None:
    env = {"QSTASH_CURRENT_SIGNING_KEY": CURRENT, "QSTASH_NEXT_SIGNING_KEY": ""}
    assert qstash_keys_from_env(env) == [CURRENT]
    assert public_url("https://h.example/", "/v1/step") == "https://h.example/v1/step"
    assert public_url("https://h.example", "v1/step", "kind=failure") == "https://h.example/v1/step?kind=failure"


@settings(max_examples=40, deadline=None)
@given(body=st.binary(max_size=300), path=st.from_regex(r"/[a-z0-9/_-]{0,30}", fullmatch=True),
       flip=st.integers(min_value=0, max_value=10_000))
def test_qstash_roundtrip_and_any_single_byte_change_is_rejected(body: bytes, path: str, flip: int) -> None:
    url = "https://w.example" + path
    token = sign_qstash(body, url, NEXT)
    verify_qstash(token, body, url, [CURRENT, NEXT])
    if body:
        i = flip % len(body)
        tampered = body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1 :]
        with pytest.raises(SignatureError):
            verify_qstash(token, tampered, url, [CURRENT, NEXT])
    # flipping one character of the token itself never yields an accepted token
    j = flip % len(token)
    replacement = "A" if token[j] != "A" else "B"
    mutated = token[:j] + replacement + token[j + 1 :]
    try:
        verify_qstash(mutated, body, url, [CURRENT, NEXT])
    except SignatureError:
        pass
    else:  # base64 slack bits can make a different text decode to the same bytes: then it is the same token
        assert base64.urlsafe_b64decode(mutated.split(".")[2] + "==") == base64.urlsafe_b64decode(
            token.split(".")[2] + "==")


# ---------------------------------------------------------------------------------------------- Ed25519


@pytest.fixture(scope="module")
def pairs() -> tuple:
    return generate_ed25519_keypair(), generate_ed25519_keypair()


def test_keypair_format_and_key_id(pairs: tuple) -> None:
    pair = pairs[0]
    assert pair.private_key.startswith("hopflow_sk_") and pair.public_key.startswith("hopflow_pk_")
    assert public_key_of(pair.private_key) == pair.public_key
    raw = base64.urlsafe_b64decode(pair.public_key.removeprefix("hopflow_pk_") + "=")
    assert len(raw) == 32
    expected = base64.urlsafe_b64encode(hashlib.sha256(raw).digest()).decode()[:8]
    assert key_id(pair.public_key) == expected
    assert pairs[0] != pairs[1]


def test_ed25519_roundtrip_and_header_shape(pairs: tuple) -> None:
    pair = pairs[0]
    header = sign_ed25519(BODY, URL, pair.private_key, now=1_700_000_000)
    t, kid, sig = header.split(",")
    assert t == "t=1700000000" and kid == f"kid={key_id(pair.public_key)}" and sig.startswith("sig=")
    assert "=" not in sig.removeprefix("sig=")
    assert verify_ed25519(header, BODY, URL, pair.public_key, now=1_700_000_010) == key_id(pair.public_key)
    # the signed text is exactly t.url.sha256hex(body), checked with PyNaCl directly
    from nacl.signing import VerifyKey

    raw_pub = base64.urlsafe_b64decode(pair.public_key.removeprefix("hopflow_pk_") + "=")
    raw_sig = base64.urlsafe_b64decode(sig.removeprefix("sig=") + "==")
    VerifyKey(raw_pub).verify(f"1700000000.{URL}.{hashlib.sha256(BODY).hexdigest()}".encode(), raw_sig)


def test_ed25519_rejections(pairs: tuple) -> None:
    good, other = pairs
    now = 1_700_000_000
    header = sign_ed25519(BODY, URL, good.private_key, now=now)
    keys = good.public_key

    def rejects(reason: str, h: str | None, body: bytes = BODY, url: str = URL, at: float = now,
                verify_keys: object = keys) -> None:
        with pytest.raises(SignatureError, match=reason):
            verify_ed25519(h, body, url, verify_keys, now=at)  # type: ignore[arg-type]

    rejects("invalid signature", header, body=BODY + b" ")
    rejects("invalid signature", header, url=URL + "/other")
    rejects("unknown key id", sign_ed25519(BODY, URL, other.private_key, now=now))
    # a forged header naming the trusted kid but signed by another key
    forged_sig = sign_ed25519(BODY, URL, other.private_key, now=now).split(",")[2]
    rejects("invalid signature", f"t={now},kid={key_id(good.public_key)},{forged_sig}")
    # moving the timestamp breaks the signature
    rejects("invalid signature", header.replace(f"t={now}", f"t={now + 1}"))
    rejects("stale", header, at=now + ED25519_MAX_AGE_S + 1)
    rejects("stale", header, at=now - ED25519_MAX_AGE_S - 1)
    rejects("missing", None)
    for bad in ("garbage", "t=1,kid=x", f"{header},t=1", "t=abc,kid=x,sig=y", "t=1,kid=x,sig=!!",
                header.replace("kid=", "key="), "t=1,kid=x,sig=" + "A" * 20):
        rejects("malformed", bad)
    rejects("no Ed25519 verify keys", header, verify_keys="")


def test_ed25519_rotation_accepts_both_configured_keys(pairs: tuple) -> None:
    old, new = pairs
    verify_keys = f"{old.public_key}, {new.public_key}"
    for pair in (old, new):
        header = sign_ed25519(BODY, URL, pair.private_key)
        assert verify_ed25519(header, BODY, URL, verify_keys) == key_id(pair.public_key)
    parsed = parse_verify_keys([old.public_key, new.public_key])
    assert set(parsed) == {key_id(old.public_key), key_id(new.public_key)}
    assert verify_ed25519(sign_ed25519(BODY, URL, new.private_key), BODY, URL, parsed)


def test_key_format_errors_are_configuration_errors(pairs: tuple) -> None:
    pair = pairs[0]
    with pytest.raises(KeyFormatError, match="private"):
        parse_verify_keys(pair.private_key)  # a private key where public keys belong
    with pytest.raises(KeyFormatError, match="public"):
        sign_ed25519(BODY, URL, pair.public_key)
    for bad in ("hopflow_pk_short", "ssh-ed25519 AAAA", "hopflow_pk_" + "A" * 44):
        with pytest.raises(KeyFormatError):
            key_id(bad)


@settings(max_examples=30, deadline=None)
@given(body=st.binary(max_size=200), path=st.from_regex(r"/[a-z0-9/?=&_-]{0,30}", fullmatch=True))
def test_ed25519_roundtrip_property(pairs: tuple, body: bytes, path: str) -> None:
    pair = pairs[1]
    url = "http://127.0.0.1:8000" + path
    header = sign_ed25519(body, url, pair.private_key)
    assert verify_ed25519(header, body, url, [pair.public_key]) == key_id(pair.public_key)
    with pytest.raises(SignatureError):
        verify_ed25519(header, body + b"!", url, [pair.public_key])


# ------------------------------------------------------------------------------------------ either one


def test_verify_delivery_picks_the_scheme_from_the_header(pairs: tuple) -> None:
    pair = pairs[0]
    q = verify_delivery({"upstash-signature": sign_qstash(BODY, URL, CURRENT)}, BODY, URL,
                        qstash_keys=[CURRENT, NEXT], ed25519_keys=pair.public_key)
    assert q.scheme == "qstash" and q.claims and q.claims["sub"] == URL
    e = verify_delivery({"Hopflow-Signature": sign_ed25519(BODY, URL, pair.private_key)}, BODY, URL,
                        qstash_keys=[CURRENT], ed25519_keys=pair.public_key)
    assert e.scheme == "ed25519" and e.key_id == key_id(pair.public_key)
    with pytest.raises(SignatureError, match="not signed"):
        verify_delivery({}, BODY, URL, qstash_keys=[CURRENT], ed25519_keys=pair.public_key)
    # an Ed25519-signed request is not accepted when only QStash keys are configured
    with pytest.raises(SignatureError, match="no Ed25519"):
        verify_delivery({"Hopflow-Signature": sign_ed25519(BODY, URL, pair.private_key)}, BODY, URL,
                        qstash_keys=[CURRENT])
