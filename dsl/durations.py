"""Duration strings (``250ms``, ``30s``, ``1h30m``, ``7d``) ↔ milliseconds."""

from __future__ import annotations

import re

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
PATTERN = r"^(\d+(\.\d+)?(ms|s|m|h|d))+$"  # also used by the JSON Schema
_WHOLE = re.compile(PATTERN)
_ORDER = ["d", "h", "m", "s", "ms"]


class DurationError(ValueError):
    pass


def parse_ms(text: str) -> int:
    """Milliseconds in ``text``; units must go from larger to smaller, each at most once."""
    if not isinstance(text, str) or not _WHOLE.match(text.strip()):
        raise DurationError(
            f"{text!r} is not a duration (use a number and a unit: ms, s, m, h, d, e.g. '30s' or '1h30m')"
        )
    total = 0.0
    last = -1
    for number, unit in _PART.findall(text.strip()):
        rank = _ORDER.index(unit)
        if rank <= last:
            raise DurationError(f"{text!r}: units must go from largest to smallest, each once (e.g. '1h30m')")
        last = rank
        total += float(number) * _UNITS_MS[unit]
    return round(total)


def format_ms(ms: int) -> str:
    """The shortest exact spelling of ``ms`` (for messages and graph pictures)."""
    if ms == 0:
        return "0s"
    out = []
    for unit in _ORDER:
        size = _UNITS_MS[unit]
        if ms >= size:
            count, ms = divmod(ms, size)
            out.append(f"{count}{unit}")
    return "".join(out)
