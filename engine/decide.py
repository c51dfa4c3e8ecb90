"""Pure decisions: what a node's run produced (outcomes), and what comes after it (decisions).

Step modules return an *outcome*; :func:`after_error` and :func:`after_success` turn it into a
*decision* that the interpreter writes in the checkpoint. Nothing here touches Redis or the clock,
so every branch of the control flow is testable on its own.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dsl.graph import Node
from engine import retry as retries
from engine.model import StepError, error_matches

# --------------------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class Done:
    """The step succeeded with its raw ``result`` (before the ``output`` template)."""

    result: Any = None
    vars: dict[str, Any] | None = None
    # contributions to declared reduced vars, already encoded for the checkpoint (engine/state/reducers.py)
    reduced: dict[str, dict[str, Any]] | None = None


@dataclass(frozen=True)
class Skipped:
    """``if`` was false: completed, output null."""


@dataclass(frozen=True)
class Jump:
    """A switch picked ``target``."""

    target: str


@dataclass(frozen=True)
class Ended:
    """A ``succeed`` step: the execution (or, nested, its branch) ends here."""

    output: Any = None
    has_output: bool = False


@dataclass(frozen=True)
class Failed:
    error: StepError


@dataclass(frozen=True)
class Park:
    """The branch waits without holding a process. ``info`` says for what (stored on the branch);
    ``message`` False means no self-message is scheduled (an event without timeout, a child run)."""

    info: dict[str, Any]
    delay_ms: int = 0
    not_before: float | None = None
    message: bool = True
    suffix: str = ""


@dataclass(frozen=True)
class FanOut:
    """Start nested branches (parallel) or items (foreach)."""

    kind: str  # "parallel" | "foreach"
    total: int
    start: int
    entries: list[str] = field(default_factory=list)  # parallel: entry node of each branch
    entry: str | None = None  # foreach: entry node of the body
    as_name: str | None = None
    items: list[str] = field(default_factory=list)  # foreach: each item as JSON
    wait_for: int = 0  # parallel: successes that end it (0: all branches)
    timeouts_ms: list[int] = field(default_factory=list)  # parallel: per-branch timeout (0: none)
    item_timeout_ms: int = 0  # foreach: each item's timeout (0: none)


Outcome = Done | Skipped | Jump | Ended | Failed | Park | FanOut

# -------------------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Goto:
    node: str | None  # None: the end of the scope
    error: StepError | None = None  # set when reached through `catch`


@dataclass(frozen=True)
class RetryLater:
    attempt: int  # the next attempt
    delay_ms: int


@dataclass(frozen=True)
class Raise:
    error: StepError
    rename: Any = None  # a catch's `raise` ({name, message}): the interpreter renders the new error


Decision = Goto | RetryLater | Raise


def after_success(node: Node, outcome: Done | Skipped | Jump) -> Goto:
    if isinstance(outcome, Jump):
        return Goto(outcome.target)
    return Goto(node.next)


def after_error(
    node: Node, error: StepError, attempt: int, *, rand: Callable[[], float] = random.random
) -> Decision:
    """Retry first (while attempts and the `on` list allow), then `catch`, else the scope fails.
    With a list of policies, the first one about this error decides (its attempts, its delays)."""
    policy = retries.choose(node.retries, error) if node.retries else node.retry
    if (
        policy is not None
        and node.kind not in retries.NO_RETRY_KINDS
        and retries.retryable(policy, error, attempt)
    ):
        return RetryLater(attempt + 1, retries.delay_ms(policy, attempt, error, rand=rand))
    for clause in node.catch:
        if any(error_matches(pattern, error.name) for pattern in clause.errors):
            if clause.goto is None:
                return Raise(error, rename=clause.raises)
            return Goto(clause.goto, error)
    return Raise(error)
