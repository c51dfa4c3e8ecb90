"""What one template render may cost: size bounds checked *before* an allocation, and a budget of
operations and wall time checked as it runs.

A workflow's templates read data a client sent, so a template is untrusted code: `'x'|center(10**9)`
or three nested loops must end as the catchable step error ``template.limit``, never as a
``MemoryError`` or a worker stuck for minutes. The sandbox (:mod:`dsl.sandbox`) calls into this
module for every operation that can grow a value or run long; this module has no Jinja2 import so the
checker and the engine can name the limits without paying for Jinja's import.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

MAX_OUTPUT_CHARS = 1_000_000  # a rendered string beyond this is an error
MAX_VALUE_CHARS = 4_000_000  # any value a template operation builds (its rendered size) stays below this
MAX_SEQUENCE = 100_000  # `"x" * n`, `[0] * n`, `range(n)`, `batch(n)` … are capped like this
MAX_INT_BITS = 16_384  # integer results (`**`, `*`) stay below ~4,900 decimal digits
MAX_OPS = 200_000  # loop iterations, calls, filters and operators one render may run
DEFAULT_SECONDS = 5.0  # wall time of one render when the caller gives none
MAX_JSON_INDENT = 16


class TemplateError(Exception):
    """A template failed to parse or render; ``offset`` points into the template source when known."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


class TemplateLimit(TemplateError):
    """A template exceeded a size, operation or time bound (the step error ``template.limit``)."""


@dataclass
class Budget:
    """The operations and the monotonic deadline left to the render in progress."""

    ops_left: int
    deadline: float
    seconds: float
    output_left: int = 4 * MAX_VALUE_CHARS  # characters `{{ … }}` may emit, captured blocks included

    def tick(self, n: int = 1) -> None:
        self.ops_left -= n
        if self.ops_left < 0:
            raise TemplateLimit(
                f"template limit: more than {MAX_OPS} operations (loop iterations, calls, filters)"
            )
        if time.monotonic() > self.deadline:
            raise TemplateLimit(f"template limit: rendering took longer than {self.seconds:g}s")

    def emit(self, chars: int) -> None:
        self.output_left -= chars
        if self.output_left < 0:
            raise TemplateLimit(
                f"template limit: the template emitted more than {4 * MAX_VALUE_CHARS} characters"
            )


_ACTIVE: ContextVar[Budget | None] = ContextVar("hopflow_template_budget", default=None)


@contextmanager
def budget(seconds: float | None = None, ops: int = MAX_OPS) -> Iterator[Budget]:
    """Make a budget active for the renders inside; a render nested in another shares the outer one."""
    outer = _ACTIVE.get()
    if outer is not None:
        yield outer
        return
    secs = DEFAULT_SECONDS if seconds is None else max(0.001, seconds)
    active = Budget(ops, time.monotonic() + secs, secs)
    token = _ACTIVE.set(active)
    try:
        yield active
    finally:
        _ACTIVE.reset(token)


def tick(n: int = 1) -> None:
    active = _ACTIVE.get()
    if active is not None:
        active.tick(n)


def seconds_left() -> float:
    """Wall time left to the render in progress (the default bound outside one)."""
    active = _ACTIVE.get()
    if active is None:
        return DEFAULT_SECONDS
    return max(0.001, active.deadline - time.monotonic())


def emit(chars: int) -> None:
    active = _ACTIVE.get()
    if active is not None:
        active.emit(chars)


# ------------------------------------------------------------------------------------------- sizes


def weight(value: Any, limit: int = MAX_VALUE_CHARS) -> int:
    """About how many characters ``value`` takes when rendered; stops counting past ``limit`` so
    weighing ``[big] * 1000`` costs no more than weighing ``big`` once."""
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item) + 2
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        elif isinstance(item, Mapping):
            total += 2 + 4 * len(item)
            for k, v in item.items():
                stack.append(k)
                stack.append(v)
                if len(stack) > limit:
                    break
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + 2 * len(item)
            if total <= limit:
                stack.extend(item)
        else:
            total += 24
    return total


def need(chars: int, what: str) -> None:
    """Refuse an operation whose result would be larger than ``MAX_VALUE_CHARS`` characters."""
    if chars > MAX_VALUE_CHARS:
        raise TemplateLimit(f"template limit: {what} would be {chars} characters (at most {MAX_VALUE_CHARS})")


def need_items(count: int, what: str) -> None:
    if count > MAX_SEQUENCE:
        raise TemplateLimit(f"template limit: {what} would have {count} items (at most {MAX_SEQUENCE})")


def need_bits(bits: float, what: str) -> None:
    if bits > MAX_INT_BITS:
        raise TemplateLimit(
            f"template limit: {what} would be a {int(bits)}-bit integer (at most {MAX_INT_BITS})"
        )


def checked(value: Any, what: str) -> Any:
    """A value an operation built, refused if it is too large to keep (the allocation was bounded
    before it happened; this keeps it from being the input of a next, larger one)."""
    if isinstance(value, str):
        if len(value) > MAX_VALUE_CHARS:
            need(len(value), what)
    elif isinstance(value, bool):
        pass
    elif isinstance(value, int):
        need_bits(value.bit_length(), what)
    elif isinstance(value, list | tuple | Mapping):
        need(weight(value), what)
    return value
