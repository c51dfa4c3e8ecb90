"""Issue 12 item 7: templates where authors expect them — action names, `wait.for`, a wait's event
`timeout`, `foreach.concurrency`, `retry` numbers — rendered by the step with its scope; a literal
keeps its static checks; a rendered value of the wrong shape fails the step with `template`. And the
`default` escape for a step that may not have run, end to end."""

from __future__ import annotations

import textwrap
from typing import Any

from dsl.compiler import compile_document
from dsl.source import loads
from dsl.validate import validate_text
from engine.model import StepError, StepFailure
from engine.preflight import problems


def diagnostics(text: str) -> list[tuple[str, str]]:
    """Errors and warnings (an info line saying which rules skipped a malformed part is not a problem)."""
    found = validate_text(textwrap.dedent(text).strip() + "\n").diagnostics
    return [(d.rule, d.message) for d in found if d.severity != "info"]


class Flaky:
    def __init__(self, *errors: str) -> None:
        self.errors = list(errors)
        self.attempts = 0

    def __call__(self, ctx: Any, **_: Any) -> Any:
        self.attempts += 1
        if self.errors:
            raise StepFailure(StepError(self.errors.pop(0), "no"))
        return {"ok": True}


# --------------------------------------------------------------------------------- action names


def test_an_action_name_template_picks_the_action_at_run_time(harness: Any) -> None:
    calls: list[str] = []
    h = harness(
        """
        name: pick
        input: {type: object}
        steps:
          - id: go
            action: "pay.{{ input.provider }}"
            with: {amount: 5}
        """,
        actions={
            "pay.stripe": lambda ctx, amount: calls.append(f"stripe {amount}") or "s",
            "pay.adyen": lambda ctx, amount: calls.append(f"adyen {amount}") or "a",
        },
    )
    assert h.run("pick", {"provider": "adyen"})["output"] == "a"
    assert h.run("pick", {"provider": "stripe"})["output"] == "s"
    assert calls == ["adyen 5", "stripe 5"]


def test_a_rendered_action_name_that_is_no_name_fails_with_template_and_unknown_with_not_found(
    harness: Any,
) -> None:
    h = harness(
        """
        name: pick
        input: {type: object}
        steps:
          - id: go
            action: "{{ input.fn }}"
        """,
        actions={"known": lambda ctx: 1},
    )
    record = h.run("pick", {"fn": ["not", "a", "name"]})
    assert record["status"] == "failed"
    assert record["error"]["name"] == "template"
    assert "action rendered ['not', 'a', 'name']" in record["error"]["message"]
    assert h.run("pick", {"fn": "nobody.home"})["error"]["name"] == "action.NotFound"
    assert h.run("pick", {"fn": "known"})["output"] == 1


def test_a_compensation_action_name_may_be_a_template(harness: Any) -> None:
    undone: list[str] = []
    h = harness(
        """
        name: undo
        input: {type: object}
        steps:
          - id: book
            action: ok
            compensate: {action: "undo.{{ input.kind }}"}
          - id: boom
            fail: {error: nope}
        """,
        actions={"ok": lambda ctx: 1, "undo.hotel": lambda ctx: undone.append("hotel")},
    )
    assert h.run("undo", {"kind": "hotel"})["status"] == "compensated"
    assert undone == ["hotel"]


def test_the_preflight_skips_a_templated_action_name_and_still_checks_a_literal_one() -> None:
    from engine.actions import ActionRegistry

    text = """
        name: pf
        steps:
          - id: a
            action: "{{ input.fn }}"
          - id: b
            action: missing.thing
        """
    graph = compile_document(loads(textwrap.dedent(text).strip() + "\n"), strict=True)
    lines = problems([graph], ActionRegistry(), {})
    assert len(lines) == 1 and "pf/b" in lines[0] and "missing.thing" in lines[0]


# ------------------------------------------------------------------------------------- durations


def test_wait_for_a_template_duration_or_number_of_seconds(harness: Any) -> None:
    h = harness(
        """
        name: nap
        input: {type: object}
        steps:
          - id: w
            wait: {for: "{{ input.delay }}"}
        """
    )
    for delay, seconds in (("90s", 90), (30, 30), ("1h", 3600)):
        start = h.clock.now()
        assert h.run("nap", {"delay": delay})["status"] == "succeeded"
        assert h.clock.now() - start >= seconds
        assert h.clock.now() - start < seconds + 5


def test_a_wait_for_template_of_the_wrong_shape_fails_with_a_catchable_template_error(harness: Any) -> None:
    h = harness(
        """
        name: nap
        input: {type: object}
        steps:
          - id: w
            wait: {for: "{{ input.delay }}"}
            catch: [{errors: [template], goto: bad}]
          - id: fine
            succeed: {output: slept}
          - id: bad
            succeed: {output: "{{ error.message }}"}
        """
    )
    message = h.run("nap", {"delay": "soon"})["output"]
    assert message.startswith("wait.for rendered 'soon': give a duration such as '30s'")
    assert h.run("nap", {"delay": -3})["output"].startswith("wait.for rendered -3")
    assert h.run("nap", {"delay": "2s"})["output"] == "slept"


def test_an_event_wait_timeout_template_is_rendered_when_the_wait_starts(harness: Any) -> None:
    h = harness(
        """
        name: ev
        input: {type: object}
        vars: {}
        steps:
          - id: w
            wait: {event: approved, key: "{{ input.k }}", timeout: "{{ input.patience }}"}
        """
    )
    start = h.clock.now()
    record = h.run("ev", {"k": "a", "patience": "2h"})
    assert record["status"] == "failed" and record["error"]["name"] == "timeout"
    assert "within 2h" in record["error"]["message"]
    assert 7200 <= h.clock.now() - start < 7300


# ----------------------------------------------------------------------------------- concurrency


def test_foreach_concurrency_may_be_a_template(harness: Any) -> None:
    h = harness(
        """
        name: fan
        input: {type: object}
        steps:
          - id: each
            foreach:
              items: "{{ range(6) | list }}"
              concurrency: "{{ input.n }}"
              steps:
                - {id: twice, set: {x: 1}, output: "{{ item * 2 }}"}
        """
    )
    eid = h.start("fan", {"n": 2})
    h.drain()
    record = h.runtime.record(eid)
    assert record["output"] == [0, 2, 4, 6, 8, 10]
    bad = h.run("fan", {"n": 0})
    assert bad["error"]["name"] == "template"
    assert "foreach.concurrency rendered 0: give a whole number of at least 1" in bad["error"]["message"]


# ----------------------------------------------------------------------------------------- retry


def test_retry_numbers_may_be_templates_rendered_with_the_steps_scope(harness: Any) -> None:
    flaky = Flaky("http.503", "http.503", "http.503")
    h = harness(
        """
        name: patient
        input: {type: object}
        steps:
          - id: call
            action: flaky
            retry:
              on: [any]
              max_attempts: "{{ input.tries }}"
              interval: "{{ input.wait }}"
              backoff: "{{ input.factor }}"
              max_interval: "{{ 25 }}"
              jitter: none
        """,
        actions={"flaky": flaky},
    )
    eid = h.start("patient", {"tries": 4, "wait": "10s", "factor": 2})
    h.drain()
    assert h.runtime.record(eid)["status"] == "succeeded"
    assert flaky.attempts == 4
    delays = [int(e["delay_ms"]) for e in h.runtime.history(eid) if e.get("event") == "retry"]
    assert delays == [10_000, 20_000, 25_000]  # capped by max_interval: 25 seconds


def test_a_bad_retry_number_fails_the_step_with_template_and_is_not_retried(harness: Any) -> None:
    flaky = Flaky("http.503", "http.503")
    h = harness(
        """
        name: patient
        input: {type: object}
        steps:
          - id: call
            action: flaky
            retry: {on: [any], max_attempts: "{{ input.tries }}"}
        """,
        actions={"flaky": flaky},
    )
    eid = h.start("patient", {"tries": "many"})
    h.drain()
    record = h.runtime.record(eid)
    assert record["status"] == "failed" and record["error"]["name"] == "template"
    assert record["error"]["message"] == (
        "retry.max_attempts rendered 'many': give a whole number of at least 1 (after http.503: no)"
    )
    assert flaky.attempts == 1


def test_a_compensation_retry_number_may_be_a_template(harness: Any) -> None:
    undo = Flaky("http.503")
    h = harness(
        """
        name: undo
        input: {type: object}
        steps:
          - id: book
            action: ok
            compensate: {action: undo, retry: {on: [any], max_attempts: "{{ input.tries }}", interval: 1s}}
          - id: boom
            fail: {error: nope}
        """,
        actions={"ok": lambda ctx: 1, "undo": undo},
    )
    assert h.run("undo", {"tries": 2})["status"] == "compensated"
    assert undo.attempts == 2


# -------------------------------------------------------------------------------- static checks


def test_the_new_template_places_validate_and_literals_keep_their_checks() -> None:
    ok = """
        name: t
        input: {type: object}
        steps:
          - id: a
            action: "{{ input.fn }}"
            retry: {max_attempts: "{{ input.n }}", interval: "{{ input.i }}", backoff: "{{ 1.5 }}"}
          - id: w
            wait: {for: "{{ input.delay }}"}
          - id: e
            wait: {event: go, key: k, timeout: "{{ input.t }}"}
          - id: f
            foreach:
              items: [1, 2]
              concurrency: "{{ input.n }}"
              steps:
                - {id: b, wait: {for: 1s}}
        """
    assert [d for d in diagnostics(ok) if d[0] != "vars-race"] == []
    bad_literal = """
        name: t
        steps:
          - id: w
            wait: {for: 1m1h}
        """
    assert [rule for rule, _ in diagnostics(bad_literal)] == ["bad-duration"]
    not_a_duration = """
        name: t
        steps:
          - id: w
            wait: {for: soon}
        """
    assert [rule for rule, _ in diagnostics(not_a_duration)] == ["schema"]
    bad_concurrency = """
        name: t
        steps:
          - id: f
            foreach:
              items: [1]
              concurrency: 0
              steps:
                - {id: b, wait: {for: 1s}}
        """
    assert [rule for rule, _ in diagnostics(bad_concurrency)] == ["schema"]


def test_a_template_in_a_retry_number_reads_a_step_so_that_step_is_loaded(harness: Any) -> None:
    flaky = Flaky("http.503", "http.503")
    h = harness(
        """
        name: reads
        steps:
          - id: plan
            set: {x: 1}
            output: {tries: 3}
          - id: call
            action: flaky
            retry: {on: [any], max_attempts: "{{ steps.plan.output.tries }}", interval: 1s}
        """,
        actions={"flaky": flaky},
    )
    assert h.run("reads")["status"] == "succeeded"
    assert flaky.attempts == 3


# ----------------------------------------------------------------- default for a step that did not run


def test_default_renders_for_a_step_that_did_not_run(harness: Any) -> None:
    h = harness(
        """
        name: maybe
        input: {type: object}
        steps:
          - id: gate
            switch:
              - {if: "{{ input.skip }}", goto: after}
              - default: lookup
          - id: lookup
            set: {x: 1}
            output: {price: 7}
          - id: after
            set: {y: 1}
            output:
              price: "{{ steps.lookup.output.price | default(0) }}"
              ran: "{{ steps.lookup is defined }}"
        """
    )
    skipped = h.run("maybe", {"skip": True})
    assert skipped["status"] == "succeeded", skipped
    assert skipped["output"] == {"price": 0, "ran": False}
    ran = h.run("maybe", {"skip": False})
    assert ran["output"] == {"price": 7, "ran": True}


MAYBE = """
    name: maybe
    input: {type: object}
    steps:
      - id: gate
        switch:
          - {if: "{{ input.skip }}", goto: after}
          - default: lookup
      - id: lookup
        set: {x: 1}
        output: {price: 7}
      - id: after
        set: {y: 1}
        output: %s
    """


def test_the_checker_accepts_the_escapes_for_a_step_that_may_not_have_run() -> None:
    for escaped in (
        '"{{ steps.lookup.output | default({}) }}"',
        '"{{ steps.lookup.output.price | d(0) }}"',
        '"{{ steps.lookup is defined }}"',
        '"{{ steps.lookup.output.price if steps.lookup is defined else 0 }}"',
        '"{% if steps.lookup is defined %}{{ steps.lookup.output.price }}{% endif %}"',
        '"{{ steps.lookup.output | default({}) | tojson }}"',
    ):
        assert diagnostics(MAYBE % escaped) == [], escaped
    for unguarded in (
        '"{{ steps.lookup.output.price }}"',
        '"{{ steps.lookup.output | length | default(0) }}"',  # length runs first, on nothing
        '"{{ steps.lookup.output.price if steps.gate is defined else 0 }}"',
        '"{% if steps.lookup is defined %}1{% else %}{{ steps.lookup.output }}{% endif %}"',
    ):
        assert [rule for rule, _ in diagnostics(MAYBE % unguarded)] == ["reference-not-completed"], unguarded


def test_a_step_if_that_tests_is_defined_lets_the_step_read_that_step(harness: Any) -> None:
    text = """
        name: maybe
        input: {type: object}
        steps:
          - id: gate
            switch:
              - {if: "{{ input.skip }}", goto: after}
              - default: lookup
          - id: lookup
            set: {x: 1}
            output: {price: 7}
          - id: after
            if: "{{ steps.lookup is defined }}"
            set: {y: 1}
            output: "{{ steps.lookup.output.price * 2 }}"
        output: "{{ steps.after.output }}"
        """
    assert diagnostics(text) == []
    h = harness(text)
    assert h.run("maybe", {"skip": False})["output"] == 14
    assert h.run("maybe", {"skip": True})["output"] is None  # `after` was skipped: output null


# ------------------------------------------------------------------------- a wait on several events

EITHER = """
    name: either
    input: {type: object}
    steps:
      - id: w
        wait: {event: [order.approved, order.rejected], key: "{{ input.order }}", timeout: 1h}
    output: "{{ steps.w.output }}"
    """


def parked(h: Any, eid: str) -> bool:
    current = h.runtime.record(eid)["current"]
    return bool(current) and current[0]["phase"] == "park"


def test_a_wait_on_several_names_takes_whichever_comes_and_says_which(harness: Any) -> None:
    h = harness(EITHER)
    eid = h.start("either", {"order": "o-1"})
    h.drain(until=lambda: parked(h, eid))
    assert h.runtime.notify("order.rejected", "o-1", {"why": "stock"}) == 1
    h.drain()
    assert h.runtime.record(eid)["output"] == {"event": "order.rejected", "data": {"why": "stock"}}
    # the other slot let go of the waiter: a later `approved` is kept for the next wait, not lost
    assert h.runtime.notify("order.approved", "o-1", {"by": "ann"}) == 0
    again = h.start("either", {"order": "o-1"})
    h.drain()
    assert h.runtime.record(again)["output"] == {"event": "order.approved", "data": {"by": "ann"}}


def test_an_event_that_came_first_is_taken_at_once_from_any_listed_slot(harness: Any) -> None:
    h = harness(EITHER)
    assert h.runtime.notify("order.approved", "o-2", {"by": "bob"}) == 0
    assert h.run("either", {"order": "o-2"})["output"] == {"event": "order.approved", "data": {"by": "bob"}}


def test_two_events_for_one_multi_wait_keep_the_loser_for_the_next_wait(harness: Any) -> None:
    h = harness(EITHER)
    eid = h.start("either", {"order": "o-3"})
    h.drain(until=lambda: parked(h, eid))
    # both arrive before the waiter's message is delivered: both slots hold a claim for it; the
    # one that arrived first wins (not the first listed)
    assert h.runtime.notify("order.rejected", "o-3", {"n": 1}) == 1
    h.clock.jump_to(h.clock.now() + 1)
    assert h.runtime.notify("order.approved", "o-3", {"n": 2}) == 1
    h.drain(until=lambda: h.runtime.record(eid)["status"] != "running")
    assert h.runtime.record(eid)["output"] == {"event": "order.rejected", "data": {"n": 1}}
    h.drain()
    again = h.start("either", {"order": "o-3"})
    h.drain()
    assert h.runtime.record(again)["output"] == {"event": "order.approved", "data": {"n": 2}}


def test_a_multi_wait_times_out_naming_every_event_and_a_cancel_releases_every_slot(harness: Any) -> None:
    h = harness(EITHER)
    record = h.run("either", {"order": "o-4"})
    assert record["error"]["name"] == "timeout"
    assert record["error"]["message"] == (
        "no event 'order.approved' or 'order.rejected' with key 'o-4' within 1h"
    )
    eid = h.start("either", {"order": "o-5"})
    h.drain(until=lambda: parked(h, eid))
    h.runtime.cancel(eid)
    h.drain()
    assert h.runtime.notify("order.rejected", "o-5", {}) == 0  # nobody waits there any more
    assert h.runtime.notify("order.approved", "o-5", {}) == 0


def test_a_crash_after_a_multi_wait_claimed_redoes_the_same_claim(harness: Any) -> None:
    import heapq

    h = harness(EITHER)
    assert h.runtime.notify("order.rejected", "o-6", {"n": 1}) == 0  # kept: the wait claims it
    eid = h.start("either", {"order": "o-6"})
    first = h.dispatcher.pop()
    assert first is not None
    crash = {"on": True}

    def fault(point: str, message: Any) -> None:
        if point == "after_step" and crash["on"]:
            crash["on"] = False
            raise RuntimeError("crash after the claim, before the checkpoint")

    h.runtime.faults = fault
    try:
        h.runtime.advance(first.message)
    except RuntimeError:
        pass
    lock = h.store.client.get(f"hf:{{{eid}}}:l:")
    h.store.unlock(eid, "", lock.decode() if isinstance(lock, bytes) else lock or "")
    h.runtime.faults = None
    heapq.heappush(h.dispatcher.queue, (h.clock.now(), 10**9, first))  # the redelivery
    h.drain()
    assert h.runtime.record(eid)["output"] == {"event": "order.rejected", "data": {"n": 1}}
    # nothing left registered or claimed in either slot: the next events are kept for a next wait
    assert h.runtime.notify("order.approved", "o-6", {}) == 0
    assert h.runtime.notify("order.rejected", "o-6", {}) == 0


def test_the_graph_picture_shows_templated_durations_and_several_event_names() -> None:
    from dsl.render import detail

    text = """
        name: pic
        input: {type: object}
        steps:
          - id: nap
            wait: {for: "{{ input.delay }}"}
          - id: either
            wait: {event: [ok, ko], key: k, timeout: "{{ input.t }}"}
        """
    graph = compile_document(loads(textwrap.dedent(text).strip() + "\n"), strict=True)
    assert detail(graph.nodes["nap"]) == "wait {{ input.delay }}"
    assert detail(graph.nodes["either"]) == "wait for event ok or ko (≤ {{ input.t }})"
