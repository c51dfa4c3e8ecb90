"""Issue 12's language additions, end to end on the real interpreter and Redis: compensations that
read the error, reducers for shared vars, and fan-out timeouts."""

from __future__ import annotations

from typing import Any

from engine.model import StepError, StepFailure


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, ctx: Any, name: str, **extra: Any) -> Any:
        self.calls.append((name, extra))
        if name.startswith("fail"):
            raise StepFailure(StepError("card.declined", f"{name} said no"))
        return {"name": name, **extra}


def test_a_compensation_reads_the_error_that_started_the_unwinding(harness: Any) -> None:
    rec = Recorder()
    h = harness(
        """
        name: comp-error
        steps:
          - id: reserve
            action: rec
            with: {name: reserve}
            compensate:
              action: rec
              with:
                name: release
                why: "{{ error.name }}: {{ error.message }}"
                failed_step: "{{ error.step }}"
          - id: charge
            action: rec
            with: {name: fail-charge}
        """,
        actions={"rec": rec},
    )
    record = h.run("comp-error")
    assert record["status"] == "compensated"
    release = [extra for name, extra in rec.calls if name == "release"]
    assert release == [{"why": "card.declined: fail-charge said no", "failed_step": "charge"}]


# ------------------------------------------------------------------------------------- reducers

import threading  # noqa: E402

ACCUMULATE = """
    name: accumulate
    vars:
      total: {reduce: sum, initial: 0}
      seen: {reduce: append}
      low: {reduce: min}
      high: {reduce: max}
      by_item: {reduce: merge}
      flat: {reduce: extend, initial: [0]}
    steps:
      - id: each
        foreach:
          items: "{{ range(1, 51) | list }}"
          concurrency: 10
          steps:
            - id: add
              set:
                total: "{{ item }}"
                seen: "{{ item }}"
                low: "{{ item }}"
                high: "{{ item }}"
                by_item: "{{ {item | string: item * 2} }}"
                flat: ["{{ item }}", "{{ -item }}"]
    output:
      total: "{{ vars.total }}"
      seen: "{{ vars.seen }}"
      low: "{{ vars.low }}"
      high: "{{ vars.high }}"
      by_item: "{{ vars.by_item }}"
      flat: "{{ vars.flat }}"
"""

RACY = """
    name: racy
    steps:
      - id: init
        set: {total: 0, seen: []}
      - id: each
        foreach:
          items: "{{ range(1, 51) | list }}"
          concurrency: 10
          steps:
            - id: add
              set:
                total: "{{ vars.total + item }}"
                seen: "{{ vars.seen + [item] }}"
    output: {total: "{{ vars.total }}", seen: "{{ vars.seen }}"}
"""


def drain_concurrently(h: Any) -> None:
    """Deliver every due message at once, each in its own thread, all of them holding after their
    step ran (the begin snapshot taken, nothing written yet) until the whole batch got there: the
    interleaving that loses updates of a plain var."""
    state: dict[str, Any] = {"barrier": None}

    def fault(point: str, message: Any) -> None:
        barrier = state["barrier"]
        if point == "after_step" and barrier is not None:
            try:
                barrier.wait(timeout=5)
            except threading.BrokenBarrierError:
                pass

    h.runtime.faults = fault
    queue = h.dispatcher
    while queue.queue:
        batch = []
        due = queue.queue[0][0]
        while queue.queue and queue.queue[0][0] <= due:
            o = queue.pop()
            batch.append(o)
        state["barrier"] = threading.Barrier(len(batch))
        results: list[Any] = [None] * len(batch)

        def work(i: int, o: Any, out: list[Any]) -> None:
            out[i] = h.runtime.advance(o.message)

        threads = [threading.Thread(target=work, args=(i, o, results)) for i, o in enumerate(batch)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        for o, r in zip(batch, results, strict=True):
            if r is None or r.kind == "busy":
                queue.publish([o])


def test_reducers_keep_every_contribution_of_concurrent_foreach_items(harness: Any) -> None:
    h = harness(ACCUMULATE)
    eid = h.start("accumulate")
    drain_concurrently(h)
    record = h.runtime.record(eid)
    assert record["status"] == "succeeded", record.get("error")
    out = record["output"]
    assert out["total"] == sum(range(1, 51)) == 1275
    assert sorted(out["seen"]) == list(range(1, 51))
    assert (out["low"], out["high"]) == (1, 50)
    assert out["by_item"] == {str(i): i * 2 for i in range(1, 51)}
    assert out["flat"][0] == 0 and sorted(out["flat"][1:]) == sorted([*range(1, 51), *range(-50, 0)])
    assert h.store.all_vars(eid)["by_item"]["7"] == 14


def test_the_same_interleaving_loses_updates_of_a_plain_var(harness: Any) -> None:
    """The control: without a reducer, the batch's writers overwrite each other (why reducers exist)."""
    h = harness(RACY)
    eid = h.start("racy")
    drain_concurrently(h)
    out = h.runtime.record(eid)["output"]
    assert out["total"] < 1275
    assert len(out["seen"]) < 50


def test_a_set_encodes_each_contribution_once(harness: Any, monkeypatch: Any) -> None:
    """`set` checks a reduced contribution by encoding it; the checkpoint takes that encoding (it
    used to be encoded a second time by the interpreter)."""
    from engine.state import reducers

    calls: list[str] = []
    encode = reducers.encode

    def counting(name: str, op: str, value: Any) -> dict[str, Any]:
        calls.append(name)
        return encode(name, op, value)

    monkeypatch.setattr(reducers, "encode", counting)
    h = harness(
        """
        name: once
        vars:
          total: {reduce: sum}
          seen: {reduce: append}
        steps:
          - {id: add, set: {total: 2, seen: x, plain: 1}}
          - {id: out, succeed: {output: "{{ vars.total }} {{ vars.seen }} {{ vars.plain }}"}}
        """
    )
    record = h.run("once")
    assert record["status"] == "succeeded" and record["output"] == "2 ['x'] 1"
    assert sorted(calls) == ["seen", "total"]


def test_a_contribution_of_the_wrong_type_fails_the_step_with_template(harness: Any) -> None:
    h = harness(
        """
        name: wrong
        vars:
          total: {reduce: sum}
        steps:
          - id: add
            set: {total: "not a number"}
            catch:
              - {errors: [template], goto: caught}
          - id: never
            succeed: {}
          - id: caught
            set: {why: "{{ error.message }}"}
        output: "{{ vars.why }}"
        """
    )
    record = h.run("wrong")
    assert record["status"] == "succeeded"
    assert record["output"] == "vars.total (sum) takes a finite number, got str"


# ----------------------------------------------- reducers under any interleaving (state machine)

import heapq  # noqa: E402
from collections import Counter  # noqa: E402

from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import (  # noqa: E402
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from engine.model import Outgoing  # noqa: E402

OPS = ("append", "extend", "sum", "min", "max", "merge")


def contribution(op: str, item: int) -> Any:
    return {"extend": [item, -item], "merge": {str(item % 7): item}}.get(op, item)


def reducer_workflow(ops: list[str], items: list[int], concurrency: int) -> str:
    decls = "\n".join(f"  v{i}: {{reduce: {op}}}" for i, op in enumerate(ops))
    values = {
        "append": "{{ item }}",
        "extend": "{{ [item, -item] }}",
        "sum": "{{ item }}",
        "min": "{{ item }}",
        "max": "{{ item }}",
        "merge": "{{ {(item % 7) | string: item} }}",
    }
    sets = "\n".join(f'                v{i}: "{values[op]}"' for i, op in enumerate(ops))
    return f"""
name: reducers
vars:
{decls}
steps:
  - id: each
    foreach:
      items: {items}
      concurrency: {concurrency}
      steps:
        - id: add
          set:
{sets}
"""


class ReducerMachine(RuleBasedStateMachine):
    """Hypothesis chooses which due message starts next and which held one writes its checkpoint:
    every begin/checkpoint interleaving of concurrent foreach items. Reduced vars must end equal to
    the reference model (engine.state.reducers.apply folded over every contribution, whatever the order)."""

    store: Any = None

    def __init__(self) -> None:
        super().__init__()
        self.held: dict[int, tuple[threading.Thread, threading.Event]] = {}
        self.reached: dict[int, threading.Event] = {}
        self.idents: dict[int, threading.Event] = {}
        self.counter = 0

    def _fault(self, point: str, message: Any) -> None:
        if point == "after_step":
            gate = self.idents.get(threading.get_ident())
            if gate is not None:
                self.reached[threading.get_ident()].set()
                gate.wait(timeout=30)

    @initialize(
        ops=st.lists(st.sampled_from(OPS), min_size=1, max_size=4),
        items=st.lists(st.integers(-20, 20), min_size=1, max_size=8),
        concurrency=st.integers(1, 5),
    )
    def start(self, ops: list[str], items: list[int], concurrency: int) -> None:
        from conftest import QueueDispatcher

        from engine.actions import ActionRegistry
        from engine.catalog import Catalog
        from engine.clock import VirtualClock
        from engine.runtime import Runtime

        self.store.client.flushdb()
        self.ops, self.items = ops, items
        clock = VirtualClock()
        self.bus = QueueDispatcher(clock)
        catalog = Catalog.from_texts([reducer_workflow(ops, items, concurrency)])
        self.runtime = Runtime(
            self.store, self.bus, catalog, actions=ActionRegistry(), clock=clock, faults=self._fault
        )
        self.eid = self.runtime.start("reducers", {})

    def _spawn(self, message: Any) -> None:
        gate = threading.Event()
        reached = threading.Event()
        box: dict[str, Any] = {}

        def work() -> None:
            self.idents[threading.get_ident()] = gate
            self.reached[threading.get_ident()] = reached
            try:
                box["result"] = self.runtime.advance(message)
            finally:
                reached.set()

        thread = threading.Thread(target=work)
        thread.start()
        reached.wait(timeout=30)
        if thread.is_alive():
            self.held[self.counter] = (thread, gate)
            self.counter += 1
        else:
            thread.join()
            if box.get("result") is None or box["result"].kind == "busy":  # redeliver, as a bus does
                entry = (self.bus.clock.now(), next(self.bus.counter), Outgoing(message))
                heapq.heappush(self.bus.queue, entry)

    @precondition(lambda self: bool(self.bus.queue))
    @rule(data=st.data())
    def deliver(self, data: Any) -> None:
        pending = sorted(self.bus.queue)
        pick = data.draw(st.integers(0, len(pending) - 1))
        entry = pending[pick]
        self.bus.queue.remove(entry)
        heapq.heapify(self.bus.queue)
        self._spawn(entry[2].message)

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data())
    def checkpoint(self, data: Any) -> None:
        key = data.draw(st.sampled_from(sorted(self.held)))
        thread, gate = self.held.pop(key)
        gate.set()
        thread.join(timeout=30)

    @rule()
    def settle(self) -> None:
        """Nothing pending and nothing held: the execution is over (the teardown checks it)."""

    @invariant()
    def no_thread_lost(self) -> None:
        for thread, _ in self.held.values():
            assert thread.is_alive()

    def teardown(self) -> None:
        if not hasattr(self, "bus"):
            return
        for thread, gate in self.held.values():
            gate.set()
            thread.join(timeout=30)
        self.runtime.faults = None
        self.bus.drain(self.runtime)
        record = self.runtime.record(self.eid)
        assert record["status"] == "succeeded", record.get("error")
        got = self.store.all_vars(self.eid)
        from engine.state import reducers

        for i, op in enumerate(self.ops):
            want: Any = {"append": [], "extend": [], "sum": 0, "merge": {}}.get(op)
            for item in self.items:
                want = reducers.apply(op, want, contribution(op, item))
            value = got.get(f"v{i}")
            if op in ("append", "extend"):
                assert Counter(map(str, value)) == Counter(map(str, want)), (op, value, want)
            elif op == "merge":
                assert set(value) == set(want), (op, value, want)  # which item wins a key: any writer
            else:
                assert value == want, (op, value, want)


def test_reducers_never_lose_a_contribution_under_any_interleaving(store: Any) -> None:
    ReducerMachine.store = store
    run_state_machine_as_test(
        ReducerMachine,
        settings=settings(
            max_examples=30,
            stateful_step_count=40,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


# ----------------------------------------------------------------------------- fan-out timeouts

PARALLEL_TIMEOUT = """
    name: deadline
    steps:
      - id: book
        action: rec
        with: {name: book}
        compensate: {action: rec, with: {name: unbook}}
      - id: race
        timeout: 2s
        parallel:
          branches:
            - steps:
                - id: quick
                  action: rec
                  with: {name: quick}
                  compensate: {action: rec, with: {name: "undo quick: {{ error.name }}"}}
            - steps:
                - id: slow
                  wait: {for: 8s}
                - id: after_slow
                  action: rec
                  with: {name: after_slow}
"""


def test_a_parallel_timeout_stops_the_slow_branch_fails_with_timeout_and_compensates(harness: Any) -> None:
    rec = Recorder()
    h = harness(PARALLEL_TIMEOUT, actions={"rec": rec})
    start = h.clock.now()
    eid = h.start("deadline")
    h.drain()
    record = h.runtime.record(eid)
    assert record["status"] == "compensated"
    assert record["error"]["name"] == "timeout" and record["error"]["step"] == "race"
    names = [name for name, _ in rec.calls]
    assert "after_slow" not in names
    assert names[-2:] == ["undo quick: timeout", "unbook"]
    finished = float(h.store.header(eid)["finished_at"])
    assert 2 <= finished - start < 3  # ended at the timeout, not after the 8 s wait


def test_a_parallel_timeout_is_catchable_on_the_fan_out_step(harness: Any) -> None:
    rec = Recorder()
    h = harness(
        PARALLEL_TIMEOUT.replace(
            "        timeout: 2s\n", "        timeout: 2s\n        catch: [{errors: [timeout], goto: late}]\n"
        )
        + """
      - id: done
        succeed: {output: on time}
      - id: late
        succeed: {output: "late: {{ error.name }} at {{ error.step }}"}
""",
        actions={"rec": rec},
    )
    record = h.run("deadline")
    assert record["status"] == "succeeded"
    assert record["output"] == "late: timeout at race"


def test_a_fan_out_that_finishes_in_time_is_not_timed_out(harness: Any) -> None:
    rec = Recorder()
    h = harness(PARALLEL_TIMEOUT.replace("wait: {for: 8s}", "wait: {for: 1s}"), actions={"rec": rec})
    record = h.run("deadline")
    assert record["status"] == "succeeded"
    assert [n for n, _ in rec.calls] == ["book", "quick", "after_slow"]


def test_a_foreach_timeout_stops_queued_items(harness: Any) -> None:
    rec = Recorder()
    h = harness(
        """
        name: slow-items
        steps:
          - id: each
            timeout: 5s
            foreach:
              items: [1, 2, 3, 4, 5, 6]
              concurrency: 2
              steps:
                - id: pause
                  wait: {for: 2s}
                - id: work
                  action: rec
                  with: {name: "item {{ item }}"}
        """,
        actions={"rec": rec},
    )
    record = h.run("slow-items")
    assert record["status"] == "failed" and record["error"]["name"] == "timeout"
    assert len(rec.calls) == 4  # two rounds of two items in 5 s; items 5 and 6 never start


def test_hopflow_run_ends_a_parallel_at_its_timeout_in_real_time(tmp_path: Any) -> None:
    """The issue's case on the embedded default (local dispatcher, real clock): a 2 s timeout over an
    8 s branch ends `timeout` and compensates; the record's own times show it did not wait 8 s."""
    import datetime as dt
    import json
    import os
    import subprocess
    import sys

    (tmp_path / "deadline.yaml").write_text(
        "name: deadline\nsteps:\n"
        "  - {id: book, action: demo_rec, compensate: {action: demo_rec}}\n"
        "  - id: race\n    timeout: 2s\n    parallel:\n      branches:\n"
        "        - steps: [{id: quick, action: demo_rec}]\n"
        "        - steps: [{id: slow, wait: {for: 8s}}]\n"
    )
    (tmp_path / "acts.py").write_text(
        "import engine\n\n\n@engine.action('demo_rec')\ndef rec(ctx, **kw):\n    return {'ok': True}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", "deadline.yaml", "--actions", "acts.py", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["status"] == "compensated", done.stderr
    assert record["error"]["name"] == "timeout"
    history = subprocess.run(
        [sys.executable, "-m", "engine.cli", "history", record["execution_id"], "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    times = [dt.datetime.fromisoformat(h["time"].replace("Z", "+00:00")) for h in json.loads(history.stdout)]
    assert (max(times) - min(times)).total_seconds() < 8


# ------------------------------------------------------------------------------ errors and retries


class Flaky:
    """Fails with the errors given, in order, then succeeds; counts the attempts."""

    def __init__(self, *errors: str) -> None:
        self.errors = list(errors)
        self.attempts = 0

    def __call__(self, ctx: Any, **_: Any) -> Any:
        self.attempts += 1
        if self.errors:
            raise StepFailure(StepError(self.errors.pop(0), "no"))
        return {"ok": True}


def test_retry_not_on_leaves_named_errors_to_catch(harness: Any) -> None:
    flaky = Flaky("http.404", "http.503")
    h = harness(
        """
        name: not-on
        steps:
          - id: call
            action: flaky
            retry: {max_attempts: 5, interval: 1s, on: [any], not_on: [http.4xx]}
            catch: [{errors: [http.404], goto: missing}]
          - id: fine
            succeed: {output: fine}
          - id: missing
            succeed: {output: missing}
        """,
        actions={"flaky": flaky},
    )
    assert h.run("not-on")["output"] == "missing"
    assert flaky.attempts == 1


def test_several_retry_policies_each_error_gets_the_first_that_names_it(harness: Any) -> None:
    flaky = Flaky("http.429", "http.429", "http.503", "http.503")
    h = harness(
        """
        name: policies
        steps:
          - id: call
            action: flaky
            retry:
              - {on: [http.429], max_attempts: 10, interval: 1m, jitter: none}
              - {on: [any], max_attempts: 4, interval: 1s, jitter: none}
        """,
        actions={"flaky": flaky},
    )
    start = h.clock.now()
    eid = h.start("policies")
    h.drain()
    record = h.runtime.record(eid)
    assert record["status"] == "failed" and record["error"]["name"] == "http.503"
    assert flaky.attempts == 4  # the second 503 came at attempt 4: the `any` policy allows 4 in all
    retries = [e for e in h.runtime.history(eid) if e.get("event") == "retry"]
    assert [int(e["delay_ms"]) for e in retries] == [60_000, 120_000, 4_000]
    assert h.clock.now() - start >= 184


def test_any_does_not_retry_a_template_error_that_would_fail_again(harness: Any) -> None:
    h = harness(
        """
        name: tmpl
        steps:
          - id: call
            action: flaky
            with: {v: "{{ input.missing.deeper }}"}
            retry: {on: [any], max_attempts: 5}
        """,
        actions={"flaky": Flaky()},
    )
    eid = h.start("tmpl")
    h.drain()
    record = h.runtime.record(eid)
    assert record["status"] == "failed" and record["error"]["name"].startswith("template")
    assert not [e for e in h.runtime.history(eid) if e.get("event") == "retry"]


def test_a_catch_raise_renames_the_error_the_saga_fails_with_and_keeps_the_cause(harness: Any) -> None:
    rec = Recorder()
    h = harness(
        """
        name: order
        steps:
          - id: reserve
            action: rec
            with: {name: reserve}
            compensate: {action: rec, with: {name: "release after {{ error.name }}"}}
          - id: charge
            action: rec
            with: {name: fail-charge}
            catch:
              - errors: [card.declined]
                raise: {name: order.failed, message: "could not charge: {{ error.message }}"}
        """,
        actions={"rec": rec},
    )
    record = h.run("order")
    assert record["status"] == "compensated"
    assert record["error"] == {
        "name": "order.failed",
        "message": "could not charge: fail-charge said no",
        "step": "charge",
        "cause": {"name": "card.declined", "message": "fail-charge said no", "step": "charge"},
    }
    assert rec.calls[-1] == ("release after order.failed", {})


def test_a_failed_compensation_shows_its_own_error_in_the_record(harness: Any) -> None:
    rec = Recorder()
    h = harness(
        """
        name: undo-fails
        steps:
          - id: reserve
            action: rec
            with: {name: reserve}
            compensate: {action: rec, with: {name: fail-release}}
          - id: boom
            fail: {error: order.broken}
        """,
        actions={"rec": rec},
    )
    record = h.run("undo-fails")
    assert record["status"] == "compensation_failed"
    assert record["error"]["name"] == "order.broken"
    assert record["compensation_error"]["name"] == "card.declined"
    assert record["compensation_error"]["step"] == "reserve"


# ------------------------------------------------------------------------ compensations with data


def test_a_compensation_list_runs_in_order_and_reads_the_input_and_output(harness: Any) -> None:
    rec = Recorder()
    h = harness(
        """
        name: transfer
        input: {type: object}
        steps:
          - id: withdraw
            action: rec
            with: {name: withdraw, account: "{{ input.from }}", cents: "{{ input.cents }}"}
            compensate:
              - action: rec
                with:
                  name: "deposit back {{ steps.withdraw.input.cents }} to {{ steps.withdraw.input.account }}"
              - action: rec
                with: {name: "notify {{ steps.withdraw.output.account }} after {{ error.name }}"}
          - id: deposit
            action: rec
            with: {name: fail-deposit}
        """,
        actions={"rec": rec},
    )
    record = h.run("transfer", {"from": "acc-1", "cents": 500})
    assert record["status"] == "compensated"
    names = [n for n, _ in rec.calls]
    assert names[-2:] == ["deposit back 500 to acc-1", "notify acc-1 after card.declined"]
    assert [t["step"] for t in record["trace"] if t["phase"] == "compensate"] == ["withdraw", "withdraw"]


def test_compensate_on_failure_undoes_a_step_that_failed_after_partial_effects(harness: Any) -> None:
    rec = Recorder()
    h = harness(
        """
        name: payment
        steps:
          - id: book
            action: rec
            with: {name: book}
            compensate: {action: rec, with: {name: unbook}}
          - id: pay
            action: rec
            with: {name: fail-pay, amount: 30}
            compensate_on_failure: true
            compensate:
              action: rec
              with: {name: "refund {{ steps.pay.input.amount }} ({{ error.name }})"}
        """,
        actions={"rec": rec},
    )
    record = h.run("payment")
    assert record["status"] == "compensated"
    assert [n for n, _ in rec.calls][-2:] == ["refund 30 (card.declined)", "unbook"]


# -------------------------------------------------------------------------------------- built-ins


def test_builtins_fromjson_merge_and_regex_filters(harness: Any) -> None:
    h = harness(
        r"""
        name: builtins
        input: {type: object}
        steps:
          - id: parse
            set:
              body: "{{ input.raw | fromjson }}"
              merged: "{{ {'a': 1, 'b': 2} | merge({'b': 3}, {'c': 4}) }}"
              is_order: "{{ input.ref | regex_match('ORD-[0-9]+$') }}"
              number: "{{ input.ref | regex_search('[0-9]+') }}"
              masked: "{{ input.card | regex_replace('[0-9](?=[0-9]{4})', '*') }}"
              swapped: '{{ "last, first" | regex_replace("(\\w+), (\\w+)", "\\2 \\1") }}'
        output:
          body: "{{ vars.body }}"
          merged: "{{ vars.merged }}"
          is_order: "{{ vars.is_order }}"
          number: "{{ vars.number }}"
          masked: "{{ vars.masked }}"
          swapped: "{{ vars.swapped }}"
        """
    )
    record = h.run("builtins", {"raw": '{"x": [1, 2]}', "ref": "ORD-1234", "card": "4111111111111111"})
    assert record["status"] == "succeeded", record.get("error")
    assert record["output"] == {
        "body": {"x": [1, 2]},
        "merged": {"a": 1, "b": 3, "c": 4},
        "is_order": True,
        "number": "1234",
        "masked": "************1111",
        "swapped": "first last",
    }


def test_a_catastrophic_regex_on_client_input_is_a_template_limit_not_a_stuck_worker(harness: Any) -> None:
    h = harness(
        """
        name: redos
        input: {type: object}
        steps:
          - id: check
            set: {ok: "{{ input.s | regex_match('(a|aa)+$') }}"}
            catch: [{errors: [template.limit], goto: refused}]
          - id: fine
            succeed: {output: fine}
          - id: refused
            succeed: {output: "{{ error.name }}"}
        """,
        time_budget_s=1.0,
    )
    record = h.run("redos", {"s": "a" * 40 + "!"})
    assert record["output"] == "template.limit"


def test_uuid_is_stable_for_a_step_across_redeliveries_and_now_is_the_execution_clock(harness: Any) -> None:
    h = harness(
        """
        name: ids
        steps:
          - id: make
            action: rec
            with: {name: make, a: "{{ uuid() }}", b: "{{ uuid() }}", at: "{{ now() }}"}
        """,
        actions={"rec": Recorder()},
    )
    eid = h.start("ids")
    first = h.dispatcher.pop()
    assert first is not None
    h.runtime.advance(first.message)
    made = h.store.outputs(eid, ["make"])[0]
    assert made["a"] != made["b"]
    import datetime as dt

    at = dt.datetime.fromisoformat(made["at"].replace("Z", "+00:00")).timestamp()
    assert abs(at - h.clock.now()) < 1
    # the same step in another execution gets other ids; in this one, a re-run renders the same
    from engine.context import build_scope

    again = build_scope(
        h.runtime.catalog.get("ids"),
        execution_id=eid,
        started_at=0,
        input={},
        steps={},
        vars={},
        uuid_seed="make",
    )["uuid"]
    assert [again(), again()] == [made["a"], made["b"]]


def test_an_emit_step_resumes_a_waiting_execution_exactly_once(harness: Any) -> None:
    h = harness(
        """
        name: waiter
        input: {type: object}
        steps:
          - id: w
            wait: {event: order.approved, key: "{{ input.order }}", timeout: 1h}
        output: "{{ steps.w.output }}"
        """,
        """
        name: approver
        input: {type: object}
        steps:
          - id: tell
            emit: {event: order.approved, key: "{{ input.order }}", data: {by: "{{ input.who }}"}}
        """,
    )
    waiter = h.start("waiter", {"order": "o-1"})
    h.drain(until=lambda: h.runtime.record(waiter)["current"][0]["phase"] == "park")
    approver = h.start("approver", {"order": "o-1", "who": "ann"})
    first = h.dispatcher.pop()
    while first is not None and first.message.execution_id != approver:
        h.runtime.advance(first.message)
        first = h.dispatcher.pop()
    assert first is not None
    # the emit step is delivered twice (a crash after the event was stored, before the checkpoint)
    crash = {"on": True}

    def fault(point: str, message: Any) -> None:
        if point == "after_step" and crash["on"] and message.execution_id == approver:
            crash["on"] = False
            raise RuntimeError("crash after the event was sent")

    h.runtime.faults = fault
    try:
        h.runtime.advance(first.message)
    except RuntimeError:
        pass
    lock = h.store.client.get(f"hf:{{{approver}}}:l:")  # the crashed worker's lock, expired early
    h.store.unlock(approver, "", lock.decode() if isinstance(lock, bytes) else lock or "")
    h.runtime.faults = None
    heapq.heappush(h.dispatcher.queue, (h.clock.now(), 10**9, first))  # the redelivery
    h.drain()
    assert h.runtime.record(approver)["output"] == {
        "event": "order.approved",
        "key": "o-1",
        "resumed": 0,
        "started": [],  # no workflow has a trigger for it
    }
    assert h.runtime.record(waiter)["output"] == {"by": "ann"}
    # the event was kept only once: a second wait for the same key times out instead of taking a copy
    again = h.start("waiter", {"order": "o-1"})
    h.drain()
    assert h.runtime.record(again)["status"] == "failed"


def test_ignore_acknowledges_a_warning_on_its_own_step_only() -> None:
    from dsl.validate import validate_text

    text = """name: poller
steps:
  - id: tick
    ignore: [endless-loop]
    action: x.y
    next: pause
  - id: pause
    wait: {for: 1h}
    next: tick
"""
    assert [d.rule for d in validate_text(text, "p.yaml").diagnostics] == []
    unacknowledged = text.replace("    ignore: [endless-loop]\n", "")
    assert [d.rule for d in validate_text(unacknowledged, "p.yaml").diagnostics] == ["endless-loop"]
    on_pause = "    ignore: [endless-loop]\n    wait: {for: 1h}\n"
    elsewhere = unacknowledged.replace("    wait: {for: 1h}\n", on_pause)
    assert [d.rule for d in validate_text(elsewhere, "p.yaml").diagnostics] == ["endless-loop"]
