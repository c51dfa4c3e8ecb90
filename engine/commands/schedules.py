"""``hopflow schedules list`` and ``hopflow schedules sync``: the workflows' cron schedules, where they
live (fired locally by ``serve``, or kept by QStash), and making QStash hold exactly them."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from typing import TYPE_CHECKING, Any

import click

from engine.commands.run import CONTEXT, default_workflows_dir, fail_exit, usage_exit

if TYPE_CHECKING:  # pragma: no cover - typing only
    from engine.catalog import Catalog
    from engine.config import Config
    from engine.schedule_sync import Change


@click.group("schedules", context_settings=CONTEXT)
def schedules() -> None:
    """The workflows' cron schedules: fired by `hopflow serve` locally, kept by QStash otherwise."""


def _config(command: str) -> Config:
    from engine.config import Config, ConfigError

    try:
        return Config.from_env()
    except ConfigError as exc:
        usage_exit(command, str(exc))


def _folder(command: str, given: str | None, config: Config) -> str:
    """--workflows, else $HOPFLOW_WORKFLOWS (what the server serves), else ./workflows or ./."""
    folder = given or (
        config.workflows_dir if os.environ.get("HOPFLOW_WORKFLOWS") else default_workflows_dir()
    )
    if folder is None:
        usage_exit(command, "no workflows here: give --workflows DIR")
    return folder


def _catalog(command: str, folder: str) -> Catalog:
    """Every workflow of ``folder``, all valid: a sync that skipped a broken file would delete its
    schedules from QStash, so one invalid file stops the command (as it stops the server)."""
    from engine.catalog import Catalog, CatalogError

    try:
        return Catalog.from_directory(folder)
    except CatalogError as exc:
        usage_exit(command, exc.message)


def _qstash_plan(config: Config, catalog: Catalog) -> list[Change]:
    from engine.dispatch.qstash_schedules import QStashSchedules
    from engine.schedule_sync import declared, plan
    from engine.web.paths import STEP_PATH

    assert config.qstash_token and config.public_url
    with QStashSchedules(config.qstash_token, config.qstash_url) as client:
        existing = client.list()
    wanted = declared(catalog, config.namespace, config.public_url + STEP_PATH)
    return plan(wanted, existing, config.namespace)


@schedules.command("list", context_settings=CONTEXT)
@click.option(
    "--workflows", metavar="DIR", help="Folder of workflows (default: $HOPFLOW_WORKFLOWS or ./workflows)."
)
@click.option(
    "--count", type=click.IntRange(1, 50), default=3, show_default=True, help="Fire times per schedule."
)
@click.option("--offline", is_flag=True, help="Do not ask QStash whether its schedules match.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(workflows: str | None, count: int, offline: bool, as_json: bool) -> None:
    """Each schedule (workflow, cron, time zone, overlap), where it lives and its next COUNT fire times.

    With QSTASH_TOKEN set, schedules live in QStash: each is `synced`, `drifted` (QStash's differs:
    `hopflow schedules sync` fixes it) or `missing`, and QStash schedules of this deployment that no
    workflow declares any more are listed as `stray`. Without it, `hopflow serve` fires them (`local`).
    """
    from dsl.schedule_times import ScheduleError, next_fires
    from engine.dispatch import DispatchError
    from engine.schedules import fire_id

    config = _config("schedules list")
    folder = _folder("schedules list", workflows, config)
    catalog = _catalog("schedules list", folder)
    where = "qstash" if config.dispatcher_kind == "qstash" else "local"
    states: dict[tuple[str, int], Change] = {}
    strays: list[Change] = []
    problem = ""
    if where == "qstash" and offline:
        problem = "not asked (--offline)"
    elif where == "qstash" and not config.public_url:
        problem = "HOPFLOW_PUBLIC_URL is unset: the webhook the schedules should call is unknown"
    elif where == "qstash":
        try:
            for change in _qstash_plan(config, catalog):
                if change.action == "delete":
                    strays.append(change)
                else:
                    states[(change.workflow, change.index)] = change
        except DispatchError as exc:
            problem = config.redact(str(exc))
    now = time.time()
    rows = []
    for name in catalog.names():
        for index, schedule in enumerate(catalog.get(name).schedules):
            zone = schedule.get("timezone", "UTC")
            try:
                fires = next_fires(schedule["cron"], zone, now, count)
            except ScheduleError as exc:  # validated already; a missing tz database on this host
                usage_exit("schedules list", f"{name}: {exc.message}")
            row: dict[str, Any] = {
                "workflow": name,
                "schedule": index,
                "cron": schedule["cron"],
                "timezone": zone,
                "overlap": schedule.get("overlap", "skip"),
                "where": where,
                "next": [_iso(t, zone) for t in fires],
                "next_ids": [fire_id(name, index, t) for t in fires],
            }
            if where == "qstash":
                row.update(_qstash_state(states.get((name, index)), problem))
            rows.append(row)
    stray_rows = [{"where": "qstash", "state": "stray", **c.to_json()} for c in strays]
    if as_json:
        click.echo(json.dumps({"schedules": rows, "stray": stray_rows}))
        return
    if problem and where == "qstash":
        click.echo(f"hopflow schedules list: QStash not compared: {problem}", err=True)
    if not rows and not strays:
        click.echo(f"no workflow in {folder} has schedules")
        return
    for row in rows:
        place = "local (hopflow serve)" if where == "local" else f"QStash: {_state_text(row)}"
        click.echo(
            f"{row['workflow']}#{row['schedule']}  {row['cron']}  "
            f"({row['timezone']}, overlap {row['overlap']})  {place}"
        )
        for when in row["next"]:
            click.echo(f"  {when}")
    for stray in strays:
        click.echo(
            f"{stray.workflow}#{stray.index}  {stray.cron}  QStash: stray ({stray.schedule_id}, "
            "no workflow declares it; `hopflow schedules sync` deletes it)"
        )


def _qstash_state(change: Change | None, problem: str) -> dict[str, Any]:
    if change is None:
        return {"state": "unknown", "detail": problem}
    state = {"create": "missing", "update": "drifted", "unchanged": "synced"}[change.action]
    out: dict[str, Any] = {"state": state, "schedule_id": change.schedule_id, "paused": change.paused}
    if change.reasons and state == "drifted":
        out["detail"] = "; ".join(change.reasons)
    if change.next_fire_ms is not None:
        out["qstash_next"] = dt.datetime.fromtimestamp(change.next_fire_ms / 1000, dt.UTC).isoformat()
    return out


def _state_text(row: dict[str, Any]) -> str:
    text = str(row["state"])
    if row.get("detail"):
        text += f" ({row['detail']})"
    if row["state"] == "missing":
        text += " (`hopflow schedules sync` creates it)"
    if row.get("paused"):
        text += ", paused in QStash"
    return text


@schedules.command("sync", context_settings=CONTEXT)
@click.option(
    "--workflows", metavar="DIR", help="Folder of workflows (default: $HOPFLOW_WORKFLOWS or ./workflows)."
)
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def sync(workflows: str | None, dry_run: bool, as_json: bool) -> None:
    """Make QStash hold exactly the declared schedules of this deployment.

    Creates the missing ones, updates those whose cron, time zone or webhook changed, deletes this
    deployment's schedules no workflow declares any more (HOPFLOW_NAMESPACE tells deployments apart),
    and never touches any other schedule of the QStash account. Running it again changes nothing.
    Needs QSTASH_TOKEN and HOPFLOW_PUBLIC_URL (the webhook QStash calls).
    """
    from engine.dispatch import DispatchError
    from engine.dispatch.qstash_schedules import QStashSchedules
    from engine.schedule_sync import apply, declared, plan
    from engine.web.paths import STEP_PATH

    config = _config("schedules sync")
    if not config.qstash_token:
        usage_exit(
            "schedules sync",
            "QSTASH_TOKEN is not set: without QStash, `hopflow serve` fires the schedules itself",
        )
    if not config.public_url:
        usage_exit("schedules sync", "HOPFLOW_PUBLIC_URL is not set: QStash needs the webhook's public URL")
    catalog = _catalog("schedules sync", _folder("schedules sync", workflows, config))
    wanted = declared(catalog, config.namespace, config.public_url + STEP_PATH)
    try:
        with QStashSchedules(config.qstash_token, config.qstash_url) as client:
            changes = plan(wanted, client.list(), config.namespace)
            if not dry_run:
                apply(client, changes)
    except DispatchError as exc:
        fail_exit("schedules sync", config.redact(str(exc)))
    counts = {a: sum(c.action == a for c in changes) for a in ("create", "update", "delete", "unchanged")}
    if as_json:
        click.echo(
            json.dumps({"dry_run": dry_run, "changes": [c.to_json() for c in changes], "counts": counts})
        )
        return
    for change in changes:
        click.echo(change.describe())
    verb = "would be" if dry_run else ""
    summary = ", ".join(
        f"{counts[a]} {verb + ' ' if verb else ''}{done}"
        for a, done in (("create", "created"), ("update", "updated"), ("delete", "deleted"))
    )
    click.echo(
        f"{summary}, {counts['unchanged']} unchanged" + (" (dry run: nothing changed)" if dry_run else "")
    )


def _iso(at: float, zone: str) -> str:
    from dsl.schedule_times import zone_of

    return dt.datetime.fromtimestamp(at, zone_of(zone)).isoformat()
