"""Cron arithmetic for `schedules` (pure: the checks and the engine's scheduler share it).

croniter is imported lazily: only files with schedules, and servers that fire them, pay for it."""

from __future__ import annotations

import datetime as dt
from typing import Any


class ScheduleError(ValueError):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field  # "cron" | "timezone"


def zone_of(name: str) -> dt.tzinfo:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"unknown time zone {name!r} (an IANA name such as Europe/Lisbon)", "timezone"
        ) from None


def check_schedule(cron: str, timezone: str = "UTC") -> None:
    from croniter import croniter

    if len(cron.split()) != 5 or not croniter.is_valid(cron):
        raise ScheduleError(
            f"{cron!r} is not a five-field cron expression (minute hour day-of-month month day-of-week)",
            "cron",
        )
    zone_of(timezone)


def _iter(cron: str, timezone: str, start: float) -> Any:
    from croniter import croniter

    return croniter(cron, dt.datetime.fromtimestamp(start, zone_of(timezone)))


def next_fires(cron: str, timezone: str, after: float, count: int = 1) -> list[float]:
    """The next ``count`` fire times strictly after ``after`` (epoch seconds)."""
    it = _iter(cron, timezone, after)
    return [float(it.get_next(float)) for _ in range(count)]


def previous_fire(cron: str, timezone: str, at: float) -> float:
    """The most recent fire time at or before ``at``."""
    it = _iter(cron, timezone, at + 0.001)
    return float(it.get_prev(float))
