"""``hopflow schedules list``: each workflow's `schedules` and their next fire times."""

from __future__ import annotations

import datetime as dt
import json
import time

import click

from engine.commands.run import CONTEXT, build_catalog, default_workflows_dir, usage_exit


@click.group("schedules", context_settings=CONTEXT)
def schedules() -> None:
    """The workflows' cron schedules (fired by `hopflow serve`)."""


@schedules.command("list", context_settings=CONTEXT)
@click.option("--workflows", metavar="DIR", help="Folder of workflows (default: ./workflows).")
@click.option(
    "--count", type=click.IntRange(1, 50), default=3, show_default=True, help="Fire times per schedule."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(workflows: str | None, count: int, as_json: bool) -> None:
    """Each schedule (workflow, cron, time zone, overlap) with its next COUNT fire times."""
    from dsl.schedule_times import ScheduleError, next_fires
    from engine.schedules import fire_id

    folder = workflows or default_workflows_dir()
    if folder is None:
        usage_exit("schedules list", "no workflows here: give --workflows DIR")
    catalog, _ = build_catalog("schedules list", None, folder, 7500)
    now = time.time()
    rows = []
    for name in catalog.names():
        for index, schedule in enumerate(catalog.get(name).schedules):
            zone = schedule.get("timezone", "UTC")
            try:
                fires = next_fires(schedule["cron"], zone, now, count)
            except ScheduleError as exc:  # validated already; a missing tz database on this host
                usage_exit("schedules list", f"{name}: {exc.message}")
            rows.append(
                {
                    "workflow": name,
                    "schedule": index,
                    "cron": schedule["cron"],
                    "timezone": zone,
                    "overlap": schedule.get("overlap", "skip"),
                    "next": [_iso(t, zone) for t in fires],
                    "next_ids": [fire_id(name, index, t) for t in fires],
                }
            )
    if as_json:
        click.echo(json.dumps({"schedules": rows}))
        return
    if not rows:
        click.echo(f"no workflow in {folder} has schedules")
        return
    for row in rows:
        where = f"{row['timezone']}, overlap {row['overlap']}"
        click.echo(f"{row['workflow']}#{row['schedule']}  {row['cron']}  ({where})")
        for when in row["next"]:
            click.echo(f"  {when}")


def _iso(at: float, zone: str) -> str:
    from dsl.schedule_times import zone_of

    return dt.datetime.fromtimestamp(at, zone_of(zone)).isoformat()
