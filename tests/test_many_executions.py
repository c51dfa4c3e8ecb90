"""Many executions in flight at once, on the real local dispatcher (worker threads) and a real Redis.

Every test elsewhere drives one execution at a time; here ~150 run together through
``engine.embedded.embedded_runtime`` (as ``hopflow run`` wires it), each with a parallel fan-out, a
foreach with concurrency, a retry that fails once per idempotency key, and — for every 5th — a late
failure that must be compensated newest first. Afterwards every execution's result is exactly what
its input dictates, every side effect happened once per idempotency key, and nothing is left behind
(branch locks, outboxes, ``hf:active``, the queue).

``test_workflow_output_reads_vars_set_before_the_last_step`` guards a bug found while writing this
file: the workflow ``output:`` could not read ``vars`` set before the last node.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import engine
from engine.state.store import text

ROOT = Path(__file__).resolve().parent.parent
EXECUTIONS = 150
HANG_GUARD_S = 120.0  # only stops a broken run from hanging; nothing asserts on time
FINAL = {"succeeded", "failed", "compensated", "compensation_failed", "cancelled", "dead"}

WORKFLOW = """
name: many
input:
  type: object
  required: [n, items, fail]
  properties:
    n: {type: integer}
    items: {type: array, items: {type: integer}}
    fail: {type: boolean}
output:
  n: "{{ input.n }}"
  reservation: "{{ steps.reserve.output }}"
  charge: "{{ steps.charge.output }}"
  tag: "{{ steps.tag.output }}"
  noted: "{{ steps.note.output.noted }}"
  squares: "{{ steps.each.output }}"
  finish: "{{ steps.finish.output }}"
steps:
  - id: reserve
    action: many_test.do
    with: {what: reserve, n: "{{ input.n }}"}
    compensate:
      action: many_test.undo
      with: {what: reserve, ref: "{{ steps.reserve.output }}"}
  - id: fan
    parallel:
      branches:
        - steps:
            - id: charge
              action: many_test.flaky
              with: {what: charge, n: "{{ input.n }}"}
              retry: {max_attempts: 3, interval: 100ms, jitter: none, on: [action.Flaky]}
              compensate:
                action: many_test.undo
                with: {what: charge, ref: "{{ steps.charge.output.charge_id }}"}
        - steps:
            - id: note
              set: {noted: "{{ input.n * 2 }}"}
            - id: tag
              action: many_test.do
              with: {what: tag, n: "{{ input.n }}"}
              compensate:
                action: many_test.undo
                with: {what: tag, ref: "{{ steps.tag.output }}"}
  - id: each
    foreach:
      items: "{{ input.items }}"
      as: x
      concurrency: 2
      steps:
        - id: square
          action: many_test.square
          with: {x: "{{ x }}", n: "{{ input.n }}"}
          compensate:
            action: many_test.undo
            with: {what: square, ref: "{{ steps.square.output }}"}
  - id: finish
    action: many_test.finish
    with: {n: "{{ input.n }}", fail: "{{ input.fail }}"}
"""


class Effects:
    """What the actions did: successful effects per (action, idempotency key), attempts, and the
    order of compensations per execution (compensations run one at a time, so it is meaningful)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done: collections.Counter[tuple[str, str]] = collections.Counter()
        self.attempts: collections.Counter[str] = collections.Counter()
        self.undone: dict[str, list[str]] = collections.defaultdict(list)

    def reset(self) -> None:
        with self.lock:
            self.done.clear()
            self.attempts.clear()
            self.undone.clear()


EFFECTS = Effects()


class Flaky(Exception):
    pass


class LateFailure(Exception):
    pass


@engine.action("many_test.do")
def _do(ctx: Any, what: str, n: int) -> str:
    with EFFECTS.lock:
        EFFECTS.done[(what, ctx.idempotency_key)] += 1
    return f"{what}-{n}"


@engine.action("many_test.flaky")
def _flaky(ctx: Any, what: str, n: int) -> dict[str, str]:
    """Fails the first attempt of every idempotency key, deterministically."""
    with EFFECTS.lock:
        EFFECTS.attempts[ctx.idempotency_key] += 1
        if EFFECTS.attempts[ctx.idempotency_key] == 1:
            raise Flaky(f"first try of {ctx.idempotency_key}")
        EFFECTS.done[(what, ctx.idempotency_key)] += 1
    return {"charge_id": f"{what}-{n}"}


@engine.action("many_test.square")
def _square(ctx: Any, x: int, n: int) -> str:
    with EFFECTS.lock:
        EFFECTS.done[("square", ctx.idempotency_key)] += 1
    return f"sq-{n}-{x * x}"


@engine.action("many_test.finish")
def _finish(ctx: Any, n: int, fail: bool) -> str:
    if fail:
        raise LateFailure(f"late failure of {n}")
    with EFFECTS.lock:
        EFFECTS.done[("finish", ctx.idempotency_key)] += 1
    return f"done-{n}"


@engine.action("many_test.undo")
def _undo(ctx: Any, what: str, ref: Any) -> None:
    with EFFECTS.lock:
        EFFECTS.done[(f"undo {what}", ctx.idempotency_key)] += 1
        EFFECTS.undone[ctx.execution_id].append(f"{what}:{ref}")


def input_of(n: int) -> dict[str, Any]:
    return {"n": n, "items": list(range(1, n % 4 + 2)), "fail": n % 5 == 0}


def expected_output(n: int) -> dict[str, Any]:
    items = input_of(n)["items"]
    return {
        "n": n,
        "reservation": f"reserve-{n}",
        "charge": {"charge_id": f"charge-{n}"},
        "tag": f"tag-{n}",
        "noted": n * 2,
        "squares": [f"sq-{n}-{x * x}" for x in items],
        "finish": f"done-{n}",
    }


def forward_order(history: list[dict[str, Any]], n: int) -> list[str]:
    """The compensable steps in the order they were checkpointed (= pushed on the stack), named
    like the undo action records them."""
    items = input_of(n)["items"]
    out = []
    for h in history:
        if h.get("phase") != "run" or h.get("status") != "ok":
            continue
        step = h.get("step")
        if step == "reserve":
            out.append(f"reserve:reserve-{n}")
        elif step == "charge":
            out.append(f"charge:charge-{n}")
        elif step == "tag":
            out.append(f"tag:tag-{n}")
        elif step == "square":
            index = int(str(h["branch"]).rsplit("/", 1)[-1])  # the item's branch path
            out.append(f"square:sq-{n}-{items[index] ** 2}")
    return out


def scan(client: Any, pattern: str) -> list[str]:
    return [text(k) for k in client.scan_iter(match=pattern, count=1000)]


def test_many_executions_at_once_end_exactly_as_their_inputs_dictate(redis_db: Any) -> None:
    from engine.catalog import Catalog
    from engine.embedded import embedded_runtime

    EFFECTS.reset()
    runtime, dispatcher = embedded_runtime(Catalog.from_texts([WORKFLOW]), redis=redis_db, workers=8)
    finished: set[str] = set()
    guard = threading.Lock()
    advance = runtime.advance

    def watched(message: Any) -> Any:
        outcome = advance(message)
        if outcome.status in FINAL:
            with guard:
                finished.add(outcome.execution_id)
        return outcome

    runtime.advance = watched  # type: ignore[method-assign]  # in_process_delivery looks it up per call
    ids = {f"many-{n:03d}": n for n in range(1, EXECUTIONS + 1)}
    for eid, n in ids.items():  # all started before any is delivered: everything is in flight at once
        assert runtime.start("many", input_of(n), eid) == eid

    def all_final() -> bool:
        with guard:
            return len(finished) >= len(ids)

    assert dispatcher.run_until(all_final, timeout_s=HANG_GUARD_S), f"only {len(finished)} finished"
    assert dispatcher.run_until(dispatcher.idle, timeout_s=HANG_GUARD_S)  # stray duplicates, if any

    wrong: list[str] = []
    for eid, n in ids.items():
        record = runtime.record(eid)
        if n % 5 == 0:
            if record["status"] != "compensated" or record["output"] is not None:
                wrong.append(f"{eid}: {record['status']} {record['output']}")
                continue
            assert record["error"]["name"] == "action.LateFailure", record["error"]
            assert record["error"]["step"] == "finish"
            forward = forward_order(runtime.history(eid), n)
            assert len(forward) == 3 + len(input_of(n)["items"])
            assert EFFECTS.undone[eid] == list(reversed(forward)), eid  # newest first
        else:
            if record["status"] != "succeeded" or record["output"] != expected_output(n):
                wrong.append(f"{eid}: {record['status']} {record['output']} {record['error']}")
            if eid in EFFECTS.undone:
                wrong.append(f"{eid}: compensated {EFFECTS.undone[eid]}")
    assert not wrong, "\n".join(wrong)

    # Every effect exactly once per idempotency key; the right number of keys per execution.
    assert {k: c for k, c in EFFECTS.done.items() if c != 1} == {}
    per_execution: collections.Counter[str] = collections.Counter()
    for _what, key in EFFECTS.done:
        per_execution[key.split(":", 1)[0]] += 1
    for eid, n in ids.items():
        k = len(input_of(n)["items"])
        expected = 3 + k + (3 + k if n % 5 == 0 else 1)  # reserve, charge, tag, squares, finish | undos
        assert per_execution[eid] == expected, (eid, per_execution[eid], expected)
    charges = {key: c for key, c in EFFECTS.attempts.items()}
    assert len(charges) == EXECUTIONS and set(charges.values()) == {2}  # failed once, retried once

    # Nothing left behind.
    client = redis_db
    assert scan(client, "hf:{*}:l:*") == []  # branch locks
    assert [k for k in scan(client, "hf:{*}:out") if client.hlen(k)] == []  # outboxes
    assert [k for k in scan(client, "hf:{*}:oc") if client.hlen(k)] == []  # offloaded-call records
    assert client.zcard("hf:active") == 0
    assert dispatcher.pending() == 0
    assert dispatcher.stats.dead == 0 and dispatcher.dead_letters() == []


def test_many_bench_quick_smoke() -> None:
    """bench/many.py still runs: exit 0 and its table printed (no timing checked)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOPFLOW_", "QSTASH_", "REDIS_"))}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "many.py"), "--quick"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=180,  # a hang guard, not a performance check
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for needle in ("executions/s", "nodes/s", "p50 ms", "p95 ms", "cmd/node"):
        assert needle in proc.stdout, f"missing {needle!r} in:\n{proc.stdout}"


OUTPUT_READS_VARS = """
name: output_vars
output: {noted: "{{ vars.noted }}"}
steps:
  - id: note
    set: {noted: 1}
  - id: later
    set: {other: 2}
"""


def test_workflow_output_reads_vars_set_before_the_last_step(redis_db: Any) -> None:
    from engine.catalog import Catalog
    from engine.embedded import embedded_runtime

    runtime, dispatcher = embedded_runtime(Catalog.from_texts([OUTPUT_READS_VARS]), redis=redis_db)
    eid = runtime.start("output_vars", {})
    assert dispatcher.run_until(lambda: runtime.store.status(eid) in FINAL, timeout_s=HANG_GUARD_S)
    record = runtime.record(eid)
    assert (record["status"], record["output"], record["error"]) == ("succeeded", {"noted": 1}, None)
