"""``schedules``: each cron expression must parse and each time zone must exist, else the schedule
would never fire (and the server would only find out when it computes the next fire time)."""

from __future__ import annotations

from collections.abc import Iterator

from dsl.checks import CheckContext, rule
from dsl.diagnostics import Diagnostic
from dsl.schedule_times import ScheduleError, check_schedule


@rule("bad-schedule", "a schedule's `cron` expression does not parse or its `timezone` does not exist")
def check_schedules(ctx: CheckContext) -> Iterator[Diagnostic]:
    schedules = ctx.root.get("schedules")
    if not isinstance(schedules, list):
        return
    for i, entry in enumerate(schedules):
        if not isinstance(entry, dict) or not isinstance(entry.get("cron"), str):
            continue  # the schema reports it
        zone = entry.get("timezone", "UTC")
        if not isinstance(zone, str):
            continue
        try:
            check_schedule(entry["cron"], zone)
        except ScheduleError as exc:
            yield ctx.diag("bad-schedule", "error", exc.message, ("schedules", i, exc.field))
