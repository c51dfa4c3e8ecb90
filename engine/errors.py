"""Runtime exceptions: what callers of :class:`engine.runtime.Runtime` may have to answer for.

Step failures that a workflow can catch are not exceptions of this module (see
:class:`engine.model.StepFailure`); these are problems of the *call*: an unknown name, bad input, a
store that cannot be reached.
"""

from __future__ import annotations

from typing import Any


class RuntimeProblem(Exception):
    """Base class; ``message`` is one readable line, safe to show to users."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownWorkflow(RuntimeProblem):
    """No workflow of that name in the catalog (HTTP 404)."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        hint = f" (known: {', '.join(known[:20])})" if known else ""
        super().__init__(f"unknown workflow {name!r}{hint}")
        self.name = name


class UnknownExecution(RuntimeProblem):
    """No execution with that id (HTTP 404; for a delivery: never retried, it can never succeed)."""

    def __init__(self, execution_id: str) -> None:
        super().__init__(f"unknown execution {execution_id!r}")
        self.execution_id = execution_id


class GraphMissing(RuntimeProblem):
    """The execution pins a graph hash that is not stored (someone flushed part of Redis)."""

    def __init__(self, graph_hash: str) -> None:
        super().__init__(f"graph {graph_hash[:12]}… of this execution is not stored")
        self.graph_hash = graph_hash


class InputInvalid(RuntimeProblem):
    """The start payload does not match the workflow's ``input`` schema; nothing was written.

    ``errors`` is a list of ``{"path": "/a/0", "message": "..."}`` (JSON Pointer paths).
    """

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        first = errors[0]["message"] if errors else "invalid input"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"input is invalid: {first}{more}")
        self.errors = errors


class InvalidExecutionId(RuntimeProblem):
    """An explicit execution id that cannot be used as a key (empty, too long, braces, whitespace)."""


class StoreUnavailable(RuntimeProblem):
    """Redis cannot be reached or answered with an error; the caller should retry later (HTTP 5xx)."""


class NotResumable(RuntimeProblem):
    """``resume`` on an execution that is not ``compensation_failed``."""
