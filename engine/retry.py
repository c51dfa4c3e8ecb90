"""Retry policy arithmetic: whether an error is retried, and after how long.

Exponential backoff with a cap and optional full jitter (a uniformly random delay between 0 and the
capped exponential value, so a crowd of failing executions does not retry in lock-step). A server's
``Retry-After`` (429/503) is a lower bound on the delay.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from dsl.graph import Retry
from engine.model import StepError, error_matches

NO_RETRY_KINDS = frozenset({"parallel", "foreach"})  # their branches retry their own steps
# errors that fail the same way on every attempt: `on: [any]` leaves them alone (name them to retry)
NOT_BY_ANY = ("template",)


def covers(policy: Retry, error: StepError) -> bool:
    """Whether ``policy`` is about ``error``: its ``on`` names it and its ``not_on`` does not."""
    if any(error_matches(pattern, error.name) for pattern in policy.not_on):
        return False
    for pattern in policy.on:
        if pattern == "any" and any(error_matches(n, error.name) for n in NOT_BY_ANY):
            continue
        if error_matches(pattern, error.name):
            return True
    return False


def choose(policies: Sequence[Retry], error: StepError) -> Retry | None:
    """The first of a step's policies that is about ``error`` (a `retry` list), or None."""
    return next((p for p in policies if covers(p, error)), None)


def retryable(policy: Retry, error: StepError, attempt: int) -> bool:
    """``attempt`` (1-based) has just failed with ``error``: is there another one?"""
    if attempt >= policy.max_attempts:
        return False
    return covers(policy, error)


def ceiling_ms(policy: Retry, attempt: int) -> int:
    """The capped exponential delay after failed attempt ``attempt`` (before jitter)."""
    exponent = max(attempt - 1, 0)
    try:
        value = policy.interval_ms * (policy.backoff**exponent)
    except OverflowError:
        value = float(policy.max_interval_ms)
    return int(min(value, policy.max_interval_ms))


def delay_ms(
    policy: Retry, attempt: int, error: StepError, *, rand: Callable[[], float] = random.random
) -> int:
    """How long to wait before attempt ``attempt + 1``."""
    ceiling = ceiling_ms(policy, attempt)
    delay = int(rand() * ceiling) if policy.jitter == "full" else ceiling
    if error.retry_after_ms:
        delay = max(delay, int(error.retry_after_ms))
    return max(delay, 0)
