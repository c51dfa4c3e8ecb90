"""The compensation stack and its unwinding.

A step with ``compensate`` pushes an entry (step id, branch, foreach bindings) onto the execution's
stack in the same checkpoint that records its success — never before. Steps in parallel branches and
foreach items push onto the same stack, so its order is the global completion order and popping it
undoes everything newest first (and therefore newest first within each branch).

Unwinding starts only when the top-level branch fails: a failure inside a branch first stops its
siblings at their next node boundary and waits for them at the join, so a sibling that finishes a
step after the failure still pushes its compensation before unwinding starts (it is then undone
first, being the newest). One compensation runs per webhook call, on the top-level branch at the
pseudo-node ``$compensate``, with its own retry policy. The body is rendered only when it runs, with
the step's own output (``steps.ID.output``, the item's own for foreach items) in scope.

A fan-out that ends early (a race decided, its own or a child's timeout) does a *partial unwind*
first (:func:`start_undo`, :func:`undo`): its losers' entries leave the stack for the fan-out's own
list and are undone the same way, one per call, on the fan-out's branch (phase ``undo``), before the
fan-out's outcome applies. Each entry carries ``n`` (a counter the checkpoint stamps), so a fan-out
tells the entries of its own run from an earlier run's under the same branch paths.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from dsl.graph import Retry, compensations
from engine import dynamic
from engine.context import build_scope, input_field, output_field, render_value
from engine.model import Status, StepError, StepFailure
from engine.retry import delay_ms, retryable

if TYPE_CHECKING:
    from engine.interpreter import NodeRun

COMPENSATE = "$compensate"


def entry(step: str, branch: str, loc: dict[str, Any], seq: int) -> str:
    """The stack entry for a step that just succeeded (``seq``: the checkpoint it ran at, which
    names its span: a compensation's span links to it)."""
    data: dict[str, Any] = {"step": step, "branch": branch, "seq": seq}
    if loc:
        data["loc"] = loc
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def final_status(error_name: str | None, ran: int) -> Status:
    if error_name == "cancelled":
        return Status.CANCELLED
    return Status.COMPENSATED if ran > 0 else Status.FAILED


def unwind(run: NodeRun) -> None:
    """Run (or continue) the newest compensation; when none is left, end the execution."""
    header_error = json.loads(run.header["error"]) if run.header.get("error") else None
    ran = int(run.header.get("comp_ran") or 0)
    top = run.begin.get("top")
    if not top:
        status = final_status((header_error or {}).get("name"), ran)
        run.finish_execution(status, error=header_error)
        return
    if _compensate(run, json.loads(top), header_error, COMPENSATE, ""):
        run.ops["comp_pop"] = True
        run.ops["hset"]["comp_ran"] = ran + 1
        run.ops["bset"].update({"attempt": 1})
        run.ops["bdel"] += ["ci", "park"]
        run.ops["msgs"].append({"node": COMPENSATE, "branch": "", "seq": -1})


# ------------------------------------------------------------------------------- partial unwind


def start_undo(run: NodeRun, statuses: dict[str, str], tail: list[str]) -> bool:
    """A fan-out that ended early (a race decided, its own or a child's timeout) undoes its losers
    before its outcome applies: every child that had not succeeded when the end was decided
    (``statuses``: halted, failed or timed out, or a success that came too late). Their entries —
    found among ``tail``, the stack pushed since the fan-out started — move off the saga's stack
    onto the fan-out's own list in this checkpoint, and the joining branch undoes them one per
    call, newest first (:func:`undo`). False: nothing to undo, the join goes on as usual."""
    node = run.node
    assert node is not None
    inner = f"{run.branch}/{node.id}/" if run.branch else f"{node.id}/"
    picked: list[str] = []
    losers: set[int] = set()
    for raw in tail:
        branch = json.loads(raw).get("branch") or ""
        if not branch.startswith(inner):
            continue
        idx = branch[len(inner) :].split("/", 1)[0]
        if idx in statuses:
            picked.append(raw)
            losers.add(int(idx))
    if not picked:
        return False
    run.ops["undo"] = {"node": node.id, "start": picked}
    run.ops["bset"].update({"phase": "undo", "attempt": 1, "uleft": len(picked)})
    run.ops["bdel"] += ["park", "ci", "ufail"]
    run.ops["msgs"].append({"node": node.id, "branch": run.branch, "seq": -1})
    what = "items" if node.kind == "foreach" else "branches"
    run.history(
        event="undoing",
        step=node.id,
        message=f"{what} {', '.join(str(i) for i in sorted(losers))}",
        count=len(picked),
    )
    return True


def undo(run: NodeRun) -> None:
    """One compensation of a fan-out's partial unwind (newest first, one per call, on the joining
    branch); when none is left, the join comes back and the fan-out's outcome applies. A
    compensation that gives up makes the execution ``compensation_failed`` like in a full unwind;
    ``resume`` sends this branch its message again (``undo`` on the header, resume.lua)."""
    node = run.node
    assert node is not None
    top = run.begin.get("top")
    if not top:
        run.ops["undo"] = {"node": node.id, "done": True}
        run.ops["bset"].update({"phase": "join", "fud": 1, "attempt": 1})
        run.ops["bdel"] += ["park", "ci", "uleft", "ufail"]
        run.ops["msgs"].append({"node": node.id, "branch": run.branch, "seq": -1})
        run.history(event="undone", step=node.id)
        return
    if run.b.get("ufail"):  # resumed by an operator (the give-up reset its attempt to 1)
        run.ops["bdel"].append("ufail")
    if _compensate(run, json.loads(top), undo_error(run), node.id, run.branch):
        run.ops["undo"] = {"node": node.id, "pop": True}
        run.ops["bset"].update({"attempt": 1, "uleft": max(0, int(run.begin.get("left") or 1) - 1)})
        run.ops["bdel"] += ["ci", "park"]
        run.ops["msgs"].append({"node": node.id, "branch": run.branch, "seq": -1})


def undo_error(run: NodeRun) -> dict[str, Any]:
    """What a loser's compensation reads as ``error``: why its fan-out ended (the timeout, a lost
    race's first failure), or ``cancelled`` when a race was won by other branches."""
    node = run.node
    assert node is not None
    abort = json.loads(run.b["abort"]) if run.b.get("abort") else None
    if abort and not abort.get("won"):
        return abort
    return {
        "name": "cancelled",
        "message": f"the race in {node.id!r} was won by other branches",
        "step": node.id,
    }


# ------------------------------------------------------------------------------ one compensation


def _compensate(run: NodeRun, item: dict[str, Any], header_error: Any, target: str, branch: str) -> bool:
    """Run (or continue) the compensation of stack entry ``item``; ``target``/``branch``: the node
    and branch its next message goes to (retries, a ``compensate`` list's next body, a child that
    resumes it). True when it completed (the caller pops it); else the ops say what follows."""
    step = item["step"]
    partial = target != COMPENSATE
    where = (item.get("branch") or None) if partial else None  # history names the loser's branch
    if isinstance(item.get("seq"), int):
        run.undoes = (item.get("branch") or "", item["seq"])
    node = run.graph.nodes[step]
    bodies = compensations(node)
    part = min(int(run.b.get("ci") or 0), len(bodies) - 1)  # a `compensate` list: which body now
    comp = bodies[part]
    run.attempt = int(run.b.get("attempt") or 1)
    parked = json.loads(run.b["park"]) if run.b.get("park") else None
    try:
        if parked and parked.get("child"):
            result = _child_result(run, parked["child"])
            if result is _WAITING:
                _park(run, parked)
                return False
        else:
            result = _execute(run, step, comp, item, header_error, target)
            if isinstance(result, dict) and result.get("__park_child__"):
                _park(run, {"child": result["__park_child__"]})
                return False
    except StepFailure as failure:
        error = failure.error
        error = StepError(error.name, error.message, step, run.attempt, error.retry_after_ms)
        error = run.redact_error(error)
        run.node_history("compensate", "error", error, step=step, branch=where)
        policy, error = _policy(run, step, comp, item, header_error, error)
        if retryable(policy, error, run.attempt):
            wait = delay_ms(policy, run.attempt, error, rand=run.rt.random)
            run.ops["bset"].update({"attempt": run.attempt + 1})
            run.ops["bdel"].append("park")
            run.ops["msgs"].append({"node": target, "branch": branch, "seq": -1, "delay_ms": wait})
            run.history(
                event="retry",
                step=step,
                phase="compensate-retry",
                attempt=run.attempt + 1,
                delay_ms=wait,
                branch=where,
            )
            return False
        run.status = Status.COMPENSATION_FAILED
        run.ops["hset"].update(
            {"status": Status.COMPENSATION_FAILED.value, "comp_error": json.dumps(error.to_dict())}
        )
        run.ops["bdel"].append("park")
        if partial:  # `resume` sends the message again; the next run starts at attempt 1
            run.ops["undo"] = {"node": target, "fail": True}
            run.ops["bset"].update({"attempt": 1, "ufail": run.attempt})
        run.history(event="compensation_failed", step=step, error=error.name, branch=where)
        return False
    del result
    run.node_history("compensate", "ok", step=step, branch=where)
    if part + 1 < len(bodies):  # the next body of this step's list, same entry on the stack
        run.ops["bset"].update({"attempt": 1, "ci": part + 1})
        run.ops["bdel"].append("park")
        run.ops["msgs"].append({"node": target, "branch": branch, "seq": -1})
        return False
    return True


_WAITING = object()


def _policy(
    run: NodeRun, step: str, comp: Any, item: dict[str, Any], header_error: Any, error: StepError
) -> tuple[Retry, StepError]:
    """The compensation's retry policy, its templated numbers rendered with its own scope; a bad
    one fails the compensation with that `template` error instead (not retried)."""
    if not comp.retry.dynamic:
        return comp.retry, error
    try:
        scope = _scope(run, step, comp, item, header_error)
        return dynamic.retry_policy(comp.retry, lambda v: render_value(v, scope, step=step), step), error
    except StepFailure as failure:
        bad = failure.error
        message = f"{bad.message} (after {error.name}: {error.message})"
        return Retry(), run.redact_error(StepError(bad.name, message, step, run.attempt))


def _park(run: NodeRun, info: dict[str, Any]) -> None:
    run.ops["bset"]["park"] = json.dumps(info)


def _execute(
    run: NodeRun, step: str, comp: Any, item: dict[str, Any], error: dict | None, target: str
) -> Any:
    scope = _scope(run, step, comp, item, error)
    config = render_value(comp.config, scope, step=step)
    if step in run.graph.nodes and run.graph.nodes[step].secret:
        run.add_secrets(config)
    return _run(run, step, comp, item, config, target)


def _scope(run: NodeRun, step: str, comp: Any, item: dict[str, Any], error: dict | None) -> dict[str, Any]:
    """What a compensation's templates read: the step's input and output, vars, the error, …"""
    branch = item.get("branch") or ""
    fields = [(sid, output_field(run.graph, sid, branch)) for sid in comp.reads if sid in run.graph.nodes]
    own_input = input_field(output_field(run.graph, step, branch))
    values = run.rt.store.outputs(run.eid, [f for _, f in fields] + [own_input])
    steps = {sid: v for (sid, _), v in zip(fields, values, strict=False)}
    step_input = values[-1]
    vars_ = run.rt.store.all_vars(run.eid) if _reads_vars(run, step) else {}
    scope = build_scope(
        run.graph,
        execution_id=run.eid,
        started_at=float(run.header.get("started_at") or run.now),
        input=run.input,
        steps=steps,
        vars=vars_,
        loc=item.get("loc"),
        error=error,
        now=run.now,
        uuid_seed=f"{branch}/{step}:compensate" if branch else f"{step}:compensate",
    )
    own = scope["steps"].setdefault(step, {"output": None})
    own["input"] = step_input  # the step's rendered input, recorded when it ran (steps.ID.input)
    for sid, value in steps.items():  # a secret step's output may reach its compensation's request
        if sid in run.graph.nodes and run.graph.nodes[sid].secret:
            run.add_secrets(value)
    return scope


def _run(run: NodeRun, step: str, comp: Any, item: dict[str, Any], config: Any, target: str) -> Any:
    branch = item.get("branch") or ""
    timeout = run.timeout_s(comp.timeout_ms)
    path = f"{branch}/{step}" if branch else step
    ctx = replace(
        run.step_context(step, timeout), idempotency_key=f"{run.eid}:{path}:compensate", branch=branch
    )
    if comp.kind == "http":
        return run.rt.call_http(config, ctx, timeout_s=timeout, egress=run.egress())
    if comp.kind == "action":
        from engine.steps import action

        name = dynamic.action_name(comp.config["name"], lambda _: config["name"], step)
        return action.execute(name, config.get("with") or {}, ctx, timeout_s=timeout, registry=run.rt.actions)
    # workflow: a child execution that resumes the unwinding node ($compensate, or the fan-out) when it ends
    child = run.start_child(config["name"], config.get("input") or {}, f"{step}.compensate", target)
    result = _child_result(run, child)
    if result is _WAITING:
        return {"__park_child__": child}
    return result


def _child_result(run: NodeRun, child: str) -> Any:
    status, output, error = run.child_state(child)
    if status == "succeeded":
        return output
    if status in ("failed", "compensated", "cancelled", "dead"):
        error = error or {}
        raise StepFailure(StepError(error.get("name") or "workflow.failed", error.get("message") or status))
    return _WAITING


def _reads_vars(run: NodeRun, step: str) -> bool:
    return any(
        ref.path[:1] == ("compensate",) and any(n.split(".")[0] == "vars" for n in ref.names)
        for ref in run.graph.nodes[step].templates
    )
