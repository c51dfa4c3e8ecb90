"""Structure written as a template: an action name, a duration, a retry number, a concurrency.

The graph keeps such a value unrendered (its hash and the static checks see the template); the step
renders it when it runs, with its own scope, and checks the shape here. A rendered value of the wrong
type fails the step with the catchable ``template`` error naming the field, so the author sees which
value was wrong and ``on: [any]`` does not retry it (it would fail the same way again).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from dsl.durations import DurationError, parse_ms
from dsl.graph import Retry
from dsl.templates import is_template
from engine.model import StepError, StepFailure

_ACTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")

Render = Callable[[Any], Any]


def _fail(step: str | None, what: str, value: Any, expected: str) -> StepFailure:
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    return StepFailure(StepError("template", f"{what} rendered {shown}: {expected}", step))


def duration_ms(value: Any, render: Render, what: str, step: str | None) -> int | None:
    """Milliseconds of a compiled duration (an int) or of a template giving a duration text
    (``'90s'``) or a number of seconds."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if not is_template(value):  # pragma: no cover - the compiler keeps only ints and templates
        raise _fail(step, what, value, "not a duration")
    rendered = render(value)
    if isinstance(rendered, int | float) and not isinstance(rendered, bool) and rendered >= 0:
        return round(rendered * 1000)
    if isinstance(rendered, str):
        text = rendered.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return round(float(text) * 1000)
        try:
            return parse_ms(text)
        except DurationError:
            pass
    raise _fail(step, what, rendered, "give a duration such as '30s' or '1h30m', or a number of seconds")


def whole(value: Any, render: Render, what: str, step: str | None, *, minimum: int = 1) -> int:
    """A whole number ≥ ``minimum`` (an int, or a template giving one, also as digits in text)."""
    rendered = render(value) if is_template(value) else value
    if isinstance(rendered, str) and re.fullmatch(r"\s*\d+\s*", rendered):
        rendered = int(rendered)
    if isinstance(rendered, float) and rendered.is_integer():
        rendered = int(rendered)
    if isinstance(rendered, int) and not isinstance(rendered, bool) and rendered >= minimum:
        return rendered
    raise _fail(step, what, rendered, f"give a whole number of at least {minimum}")


def number(value: Any, render: Render, what: str, step: str | None, *, minimum: float) -> float:
    rendered = render(value) if is_template(value) else value
    if isinstance(rendered, str):
        try:
            rendered = float(rendered)
        except ValueError:
            pass
    if isinstance(rendered, int | float) and not isinstance(rendered, bool) and rendered >= minimum:
        return float(rendered)
    raise _fail(step, what, rendered, f"give a number of at least {minimum:g}")


def action_name(value: Any, render: Render, step: str | None) -> str:
    """The action to call: the name as written, or what its template gives (a dotted name)."""
    if not is_template(value):
        return str(value)
    rendered = render(value)
    if isinstance(rendered, str) and _ACTION_NAME.fullmatch(rendered.strip()):
        return rendered.strip()
    raise _fail(step, "action", rendered, "give an action name such as 'orders.reserve'")


def retry_policy(policy: Retry, render: Render, step: str | None) -> Retry:
    """``policy`` with its templated numbers rendered (unchanged when it has none)."""
    if not policy.dynamic:
        return policy
    values: dict[str, Any] = {}
    for key, source in policy.dynamic:
        what = f"retry.{key}"
        if key == "max_attempts":
            values["max_attempts"] = whole(source, render, what, step)
        elif key == "backoff":
            values["backoff"] = number(source, render, what, step, minimum=1)
        elif key in ("interval", "max_interval"):
            values[f"{key}_ms"] = duration_ms(source, render, what, step)
    return replace(policy, dynamic=(), **values)
