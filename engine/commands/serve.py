"""``hopflow serve`` (the HTTP API with uvicorn) and ``hopflow qstash-dev`` (the local QStash server).

``serve`` refuses to start on anything ``hopflow doctor`` calls an error, on a workflow file
``hopflow validate`` rejects, or on a Redis it cannot reach — one readable line each, exit 1.
Without ``QSTASH_TOKEN`` it runs the local dispatcher's delivery loop in the background and says
so once, loudly: messages wait in Redis and are delivered in-process (or, with
``HOPFLOW_SIGNING_KEY`` and ``HOPFLOW_PUBLIC_URL`` set, over HTTP signed with Ed25519).
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

import click

from engine.commands.run import actions_option, max_nodes_option
from engine.config import Config, is_loopback_host

CONTEXT = {"help_option_names": ["-h", "--help"]}


def _fail(message: str, code: int = 1, lines: list[str] | None = None) -> NoReturn:
    click.echo(f"hopflow serve: {message}", err=True)
    for line in lines or []:
        click.echo(f"  {line}", err=True)
    sys.exit(code)


def with_dev_key(config: Config) -> Config:
    """No API key configured: a random one for this run, shown once on the terminal (never logged:
    the config's redaction replaces it by its fingerprint everywhere else)."""
    import dataclasses
    import secrets

    key = secrets.token_urlsafe(32)
    click.secho(
        "hopflow serve: no HOPFLOW_API_KEY is set; this run's dev key (shown once, valid until the "
        "server stops; scope operate):",
        fg="yellow",
        err=True,
    )
    click.echo(f"  export HOPFLOW_API_KEY={key}", err=True)
    return dataclasses.replace(config, api_key=key)


def _loud(lines: list[str]) -> None:
    width = max(len(line) for line in lines) + 4
    click.secho("!" * width, fg="yellow", bold=True, err=True)
    for line in lines:
        click.secho(f"! {line.ljust(width - 4)} !", fg="yellow", bold=True, err=True)
    click.secho("!" * width, fg="yellow", bold=True, err=True)


@click.command("serve", context_settings=CONTEXT)
@click.option(
    "--workflows", metavar="DIR", help="Folder of workflows (default: $HOPFLOW_WORKFLOWS or ./workflows)."
)
@actions_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="text, or json: one object per line with a trace_id (default: $HOPFLOW_LOG_FORMAT or text).",
)
@max_nodes_option("webhook call")
@click.option(
    "--recover-every",
    "recover_every",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="Re-drive executions whose outbox is older than --recover-older-than, this often (the "
    "periodic `hopflow recover`); 0 turns the sweep off.",
)
@click.option(
    "--recover-older-than",
    "recover_older_than",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="What the sweep calls stuck: an outbox recorded at least this long ago (a live worker "
    "publishes its own within its time budget).",
)
def serve(
    workflows: str | None,
    actions: tuple[str, ...],
    host: str,
    port: int,
    log_level: str,
    log_format: str | None,
    max_nodes_per_call: int | None,
    recover_every: float,
    recover_older_than: float,
) -> None:
    """Serve the HTTP API (webhook, executions, events) with uvicorn."""

    from engine.config import inspect_env, redact_url

    overrides: dict[str, Any] = {}
    if workflows is not None:
        overrides["workflows_dir"] = workflows
    if actions:
        overrides["actions"] = ",".join(actions)
    if max_nodes_per_call is not None:
        overrides["max_nodes_per_call"] = max_nodes_per_call
    if log_format is not None:
        overrides["log_format"] = log_format
    config, issues = inspect_env(os.environ, **overrides)
    errors = [i for i in issues if i.severity == "error"]
    if config is None or errors:
        _fail(
            "the configuration has errors (`hopflow doctor` explains them all):",
            1,
            [f"{i.variable}: {i.message}" + (f" — {i.fix}" if i.fix else "") for i in errors],
        )
    if not os.path.isdir(config.workflows_dir):
        _fail(f"--workflows {config.workflows_dir}: not a folder", 2)

    from engine.actions import REGISTRY, ActionLoadError, ActionNotFound, load_modules
    from engine.catalog import CatalogError
    from engine.embedded import EmbeddedError
    from engine.preflight import problems, reachable
    from engine.web.app import create_app
    from engine.web.wiring import LazyCatalog, build_runtime

    try:
        # Preflight, before the first side effect (the embedded Redis, a socket): the workflows
        # compile, the actions modules import, and every declared env variable and action exists.
        catalog = LazyCatalog(  # a warm graph cache is read; the preflight writes nothing anywhere
            config.workflows_dir,
            time_budget_ms=round(config.time_budget_s * 1000),
            cache=config.cache_dir,
            write_cache=False,
        )
        catalog.load()
        load_modules(config.actions)
        missing = problems(reachable(catalog, catalog.names()), REGISTRY, os.environ)
        if missing:
            _fail(f"cannot start, {len(missing)} problem(s):", 1, missing)
        runtime = build_runtime(config, catalog=catalog)
    except CatalogError as exc:
        lines = [
            f"{d.position.file}:{d.position.line}:{d.position.column}: {d.message} [{d.rule}]"
            for d in exc.diagnostics[:20]
        ] or [exc.message]
        _fail(
            f"invalid workflows in {config.workflows_dir} (hopflow validate {config.workflows_dir}):",
            1,
            lines,
        )
    except (ActionLoadError, ActionNotFound, EmbeddedError) as exc:
        _fail(str(exc))
    try:
        runtime.store.client.ping()
    except Exception as exc:
        where = redact_url(config.redis_url) if config.redis_url else "the embedded Redis"
        _fail(f"cannot reach Redis at {where} ({type(exc).__name__})")

    names = runtime.catalog.names()
    url = f"http://{host}:{port}"
    click.echo(
        f"hopflow serve: {len(names)} workflow(s) from {config.workflows_dir}: {', '.join(names)}", err=True
    )
    click.echo(
        f"hopflow serve: API on {url} (webhook POST /v1/step, description GET /openapi.json)", err=True
    )
    click.echo(f"hopflow serve: dashboard on {url}/ui (sign in with an API key)", err=True)
    if config.max_nodes_per_call > 1:
        click.echo(
            f"hopflow serve: up to {config.max_nodes_per_call} nodes per call "
            "(set/switch/succeed/fail chained after the first)",
            err=True,
        )
    if config.dispatcher_kind == "qstash":
        click.echo(
            f"hopflow serve: dispatcher QStash at {config.qstash_url}; deliveries to "
            f"{config.public_url}/v1/step",
            err=True,
        )
    else:
        if config.signing_key and config.public_url:
            how = f"over HTTP to {config.public_url}/v1/step, signed with Ed25519"
        else:
            how = "in-process, by this server"
        _loud(
            [
                "QSTASH_TOKEN is not set: the LOCAL DISPATCHER runs in this process.",
                "Messages (delays, retries, fan-out) wait in Redis and are delivered",
                f"{how}. Nothing is lost if it stops;",
                "it resumes when a server starts again. For QStash, set QSTASH_TOKEN",
                "and HOPFLOW_PUBLIC_URL (docs/deploy.md).",
            ]
        )
    if not config.keys:
        config = with_dev_key(config)
    if not is_loopback_host(host) and not config.public_url and not config.allowed_hosts:
        click.secho(
            f"hopflow serve: listening on {host}, but only loopback Host names are answered: set "
            "HOPFLOW_PUBLIC_URL or HOPFLOW_ALLOWED_HOSTS to the name clients use",
            fg="yellow",
            err=True,
        )
    for line in config.egress().describe():
        click.echo(f"hopflow serve: egress: {line}", err=True)
    for issue in issues:
        if issue.variable == "HOPFLOW_OTEL" and (config.traces or issue.severity == "warning"):
            click.echo(f"hopflow serve: traces: {issue.message}", err=True)  # OpenTelemetry

    import uvicorn

    from engine.observe.logs import NodeLog, configure

    log_config = configure(config.log_format, log_level)
    runtime.observers.add(NodeLog())  # one line per node (execution, step, kind, outcome, ms)
    app = create_app(runtime, config=config, run_local_dispatcher=config.dispatcher_kind == "local")
    sweep = None
    if recover_every > 0:
        from engine.sweep import RecoverSweep

        sweep = RecoverSweep(runtime, interval_s=recover_every, older_than_s=recover_older_than).start()
        click.echo(
            f"hopflow serve: recover sweep every {recover_every:g} s "
            f"(outboxes older than {recover_older_than:g} s)",
            err=True,
        )
    try:
        # uvicorn drains on SIGINT/SIGTERM itself (the lifespan stops the delivery loop), then
        # re-raises the signal: engine.lifecycle turns SIGTERM into an exception uvicorn swallows.
        uvicorn.run(app, host=host, port=port, log_level=log_level, lifespan="on", log_config=log_config)
    finally:
        if sweep is not None:
            sweep.stop()
    from engine import lifecycle

    if lifecycle.received is not None:  # atexit then stops the embedded Redis if we were its last user
        click.echo("hopflow serve: stopped", err=True)
        sys.exit(lifecycle.exit_code(lifecycle.Terminated()))


def _duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    from engine.devtools.qstash_dev.server import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("qstash-dev", context_settings=CONTEXT)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--token", default=None, help="API token (default: Upstash's dev-server token).")
@click.option("--current-signing-key", default=None)
@click.option("--next-signing-key", default=None)
@click.option(
    "--max-retries",
    default=3,
    show_default=True,
    type=click.IntRange(0, 100),
    help="Retries when a publish has no Upstash-Retries.",
)
@click.option(
    "--backoff-scale",
    default=1.0,
    show_default=True,
    type=float,
    help="Multiply QStash's retry backoff (0.01 turns 12 s into 0.12 s).",
)
@click.option("--max-delay", default=None, callback=_duration, help="The plan's maximum delay, e.g. 7d.")
@click.option("--dedup-window", default="10m", show_default=True, callback=_duration)
@click.option("--duplicate", is_flag=True, help="Fault: send every delivery twice.")
@click.option(
    "--reorder-window",
    default="0s",
    show_default=True,
    callback=_duration,
    help="Fault: a random extra delay per message, e.g. 500ms.",
)
@click.option(
    "--drop-responses",
    default=0.0,
    type=click.FloatRange(0, 1),
    metavar="RATE",
    help="Fault: fraction of responses to pretend lost (delivered, then retried).",
)
@click.option("--seed", default=None, type=int)
@click.option("--quiet", is_flag=True, help="Don't print the banner.")
def qstash_dev(
    host: str,
    port: int,
    token: str | None,
    current_signing_key: str | None,
    next_signing_key: str | None,
    max_retries: int,
    backoff_scale: float,
    max_delay: float | None,
    dedup_window: float,
    duplicate: bool,
    reorder_window: float,
    drop_responses: float,
    seed: int | None,
    quiet: bool,
) -> None:
    """Run the local QStash-compatible server (docs/qstash.md)."""
    from engine.devtools.qstash_dev import server as dev

    if host not in ("127.0.0.1", "localhost", "::1"):
        click.secho(
            f"hopflow qstash-dev: listening on {host}: the dev server has no real security; "
            "keep it on loopback",
            fg="yellow",
            err=True,
        )
    dev.run(
        host,
        port,
        quiet=quiet,
        token=token or dev.DEFAULT_TOKEN,
        current_signing_key=current_signing_key or dev.DEFAULT_CURRENT_SIGNING_KEY,
        next_signing_key=next_signing_key or dev.DEFAULT_NEXT_SIGNING_KEY,
        max_retries=max_retries,
        backoff_scale=backoff_scale,
        max_delay_s=max_delay,
        dedup_window_s=dedup_window,
        duplicate=duplicate,
        reorder_window_s=reorder_window,
        drop_response_rate=drop_responses,
        seed=seed,
    )
