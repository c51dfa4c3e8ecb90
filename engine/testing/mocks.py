"""Answers for the calls a case's workflow makes, by step id, and a record of every call made.

A call is identified the way the interpreter names it: the workflow and step of its
:class:`~engine.model.StepContext` (``CHILD/STEP`` for a child workflow's step), a compensation by its
idempotency key's ``:compensate`` suffix, a foreach item by its index in the branch path. The answer
goes through the engine's own code: an action mock is a registered callable (so ``action.execute``
judges its result), an http mock becomes a response judged like an offloaded call's answer
(``expect``, ``http.<status>``, ``Retry-After``).

A problem that makes the case meaningless (a call nobody mocked, a sequence that ran out) fails the
call with error ``test.unmocked``/``test.exhausted`` *and* is recorded, so the report names it first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from dsl.graph import Graph
from dsl.testfile import foreach_owner
from engine.actions import ActionRegistry
from engine.dispatch import CallResult
from engine.model import Message, OffloadRequest, StepContext, StepError, StepFailure


@dataclass
class Call:
    """One call a step (or its compensation) made: what it was given, and on which attempt/item."""

    key: str  # "step" or "child/step"
    compensate: bool
    attempt: int
    item: int | None
    with_: dict[str, Any] | None = None  # an action's rendered arguments
    request: dict[str, Any] | None = None  # an http call: method, url, headers, json | body

    def shown(self) -> dict[str, Any]:
        out: dict[str, Any] = {"attempt": self.attempt}
        if self.item is not None:
            out["item"] = self.item
        if self.with_ is not None:
            out["with"] = self.with_
        if self.request is not None:
            out["request"] = self.request
        return out


@dataclass
class MockBook:
    """The mocks of one case, their per-call counters, and every call made."""

    workflow: str
    graphs: dict[str, Graph]
    mocks: dict[str, dict[str, Any]]
    allow_real: bool = False
    real: ActionRegistry | None = None  # the real actions (allow_real)
    calls: list[Call] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    counters: dict[tuple[Any, ...], int] = field(default_factory=dict)

    # ---------------------------------------------------------------------------------- identity

    def key(self, workflow: str, step: str) -> str:
        return step if workflow == self.workflow else f"{workflow}/{step}"

    def item_of(self, workflow: str, step: str, branch: str) -> int | None:
        graph = self.graphs.get(workflow)
        if graph is None or step not in graph.nodes:
            return None
        owner = foreach_owner(graph, step)
        if owner is None:
            return None
        parts = branch.split("/") if branch else []
        found = None
        for i in range(0, len(parts) - 1, 2):
            if parts[i] == owner and parts[i + 1].isdigit():
                found = int(parts[i + 1])
        return found

    # ----------------------------------------------------------------------------------- answers

    def answer(self, key: str, compensate: bool, item: int | None, kind: str) -> dict[str, Any] | None:
        """The answer for this call (None: not mocked); raises StepFailure for a broken case."""
        mock = self.mocks.get(key)
        if mock is not None and compensate:
            mock = mock.get("compensate")
        elif mock is not None:
            mock = {k: v for k, v in mock.items() if k != "compensate"} or None
        what = f"the compensation of {key!r}" if compensate else f"step {key!r}"
        if mock is None:
            if self.allow_real:
                return None
            hint = f"mocks: {{{key}: {{compensate: ...}}}}" if compensate else f"mocks: {{{key}: ...}}"
            self._broken(
                "test.unmocked",
                f"{what} ({kind}) was called but has no mock: add {hint}, or allow_real: true to the case",
            )
        answer: dict[str, Any] = mock
        trail: tuple[Any, ...] = (key, compensate)
        while True:
            if "per_item" in answer:
                items = answer["per_item"]
                if item is None or item >= len(items):
                    self._broken(
                        "test.exhausted",
                        f"{what} has {len(items)} per_item answers but was called for item "
                        f"{'?' if item is None else item + 1}",
                    )
                trail += ("item", item)
                answer = items[item]
            elif "sequence" in answer:
                sequence = answer["sequence"]
                trail += ("seq", len(sequence))
                n = self.counters.get(trail, 0)
                self.counters[trail] = n + 1
                if n >= len(sequence):
                    self._broken(
                        "test.exhausted",
                        f"{what} was called {n + 1} times but its sequence has {len(sequence)} answers: "
                        "add answers for the extra calls",
                    )
                answer = sequence[n]
            else:
                return answer

    def _broken(self, name: str, message: str) -> None:
        if message not in self.problems:
            self.problems.append(message)
        raise StepFailure(StepError(name, message))

    # ------------------------------------------------------------------------------------ actions

    def registry(self) -> ActionRegistry:
        return _MockRegistry(self)

    def action(self, name: str, ctx: StepContext, kwargs: dict[str, Any]) -> Any:
        compensate = ctx.idempotency_key.endswith(":compensate")
        key = self.key(ctx.workflow, ctx.step)
        item = self.item_of(ctx.workflow, ctx.step, ctx.branch)
        self.calls.append(Call(key, compensate, ctx.attempt, item, with_=_plain(kwargs)))
        answer = self.answer(key, compensate, item, "action")
        if answer is None:
            real = (self.real or ActionRegistry()).resolve(name)
            return real(ctx, **kwargs)
        if "error" in answer:
            raise StepFailure(
                StepError(answer["error"], answer.get("message") or f"mocked {answer['error']}")
            )
        return answer.get("result")

    # --------------------------------------------------------------------------------------- http

    def http(self, request: OffloadRequest, ctx: StepContext) -> CallResult | None:
        """The answer to an http call as a response (None: make it for real)."""
        compensate = ctx.idempotency_key.endswith(":compensate")
        key = self.key(ctx.workflow, ctx.step)
        item = self.item_of(ctx.workflow, ctx.step, ctx.branch)
        self.calls.append(Call(key, compensate, ctx.attempt, item, request=request_shown(request)))
        answer = self.answer(key, compensate, item, "http")
        if answer is None:
            return None
        return response(answer)


def response(answer: dict[str, Any]) -> CallResult:
    if "error" in answer:
        return CallResult(
            0, error=answer["error"], detail=answer.get("message") or f"mocked {answer['error']}"
        )
    body = answer.get("body")
    headers = {str(k).lower(): [str(v)] for k, v in (answer.get("headers") or {}).items()}
    if body is None:
        raw = b""
    elif isinstance(body, str):
        raw = body.encode()
        headers.setdefault("content-type", ["text/plain; charset=utf-8"])
    else:
        raw = json.dumps(body, ensure_ascii=False).encode()
        headers.setdefault("content-type", ["application/json"])
    return CallResult(int(answer.get("status") or 200), headers, raw)


def judge(step: str, request: OffloadRequest, expect: Any, result: CallResult) -> dict[str, Any]:
    """A mocked response judged exactly like an offloaded call's answer: the step's result, or
    StepFailure(``http.<status>`` with ``Retry-After``, or the mocked error)."""
    from engine.decide import Done
    from engine.steps import http
    from engine.steps.offload import Completion
    from engine.steps.offload import judge as judge_answer

    info: dict[str, Any] = {"call": f"{request.method} {http.safe_url(request.url)}"}
    if expect is not None:
        info["expect"] = list(expect)
    outcome = judge_answer(SimpleNamespace(id=step), info, Completion(result))  # type: ignore[arg-type]
    if isinstance(outcome, Done):
        value: dict[str, Any] = outcome.result
        return value
    error: StepError = outcome.error  # type: ignore[attr-defined]
    raise StepFailure(StepError(error.name, error.message, retry_after_ms=error.retry_after_ms))


def request_shown(request: OffloadRequest) -> dict[str, Any]:
    """An http call as an expectation reads it: method, url (query included), headers, json | body."""
    out: dict[str, Any] = {"method": request.method, "url": request.url, "headers": dict(request.headers)}
    if request.body is not None:
        text = request.body.decode("utf-8", errors="replace")
        content_type = next((v for k, v in request.headers.items() if k.lower() == "content-type"), "")
        if "json" in content_type:
            try:
                out["json"] = json.loads(text)
            except ValueError:
                out["body"] = text
        else:
            out["body"] = text
    return out


def context_of(request: OffloadRequest, workflow: str) -> StepContext:
    """The StepContext an offloaded call was built with (what :class:`MockBook` keys calls by)."""
    message: Message = request.message
    return StepContext(
        execution_id=message.execution_id,
        step=message.node.split("#", 1)[0],
        attempt=request.attempt,
        idempotency_key=request.headers.get("Idempotency-Key", ""),
        deadline=0.0,
        branch=message.branch,
        workflow=workflow,
    )


def _plain(value: Any) -> Any:
    from dsl.graph import thaw

    return thaw(value)


class _MockRegistry(ActionRegistry):
    """Every action name resolves to the case's mocks (which fall back to the real action when the
    case allows it)."""

    def __init__(self, book: MockBook) -> None:
        super().__init__()
        self.book = book

    def resolve(self, name: str) -> Any:
        book = self.book

        def mocked(ctx: StepContext, **kwargs: Any) -> Any:
            return book.action(name, ctx, kwargs)

        mocked.__name__ = f"mock:{name}"
        return mocked
