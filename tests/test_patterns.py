"""The peers' canonical workflows, written as hopflow examples (workflows/patterns/), run on the real
interpreter and Redis with a virtual clock: every path each pattern is about — the happy one, the
failures its compensations undo, the event that arrives in time and the one that does not."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from conftest import Harness, QueueDispatcher

from engine.clock import VirtualClock

PATTERNS = Path(__file__).resolve().parent.parent / "workflows" / "patterns"


@pytest.fixture(scope="module")
def services() -> Any:
    spec = importlib.util.spec_from_file_location("pattern_services", PATTERNS / "services.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def patterns(store: Any, services: Any) -> Harness:
    from engine.actions import REGISTRY
    from engine.catalog import Catalog
    from engine.runtime import Runtime

    clock = VirtualClock()
    bus = QueueDispatcher(clock)
    runtime = Runtime(store, bus, Catalog.from_directory(PATTERNS), actions=REGISTRY, clock=clock)
    return Harness(runtime, bus, clock, store, REGISTRY)


def settle(h: Harness) -> None:
    """Deliver what is due now (not what is due later: the clock stays where it is)."""
    bus = h.dispatcher
    while bus.queue and bus.queue[0][0] <= h.clock.now():
        outgoing = bus.pop()
        assert outgoing is not None
        h.runtime.advance(outgoing.message)


def compensated_steps(h: Harness, eid: str) -> list[str]:
    return [t["step"] for t in h.runtime.record(eid)["trace"] if t["phase"] == "compensate"]


TRIP = {"trip": "lisbon", "card": "tok_visa", "cents": 1000}


def test_every_pattern_validates_without_a_diagnostic() -> None:
    from dsl.validate import validate_path

    for path in sorted(PATTERNS.glob("*.yaml")):
        assert validate_path(path).diagnostics == (), path.name


def test_travel_saga_books_everything(patterns: Harness) -> None:
    record = patterns.run("travel-saga", TRIP)
    assert record["status"] == "succeeded"
    assert set(record["output"]) == {"trip", "hotel", "flight", "car", "charge"}


def test_travel_saga_without_a_car_unwinds_newest_first_as_booking_failed(patterns: Harness) -> None:
    eid = patterns.start("travel-saga", {**TRIP, "car_sold_out": True})
    patterns.drain()
    record = patterns.runtime.record(eid)
    assert record["status"] == "compensated"
    assert record["error"]["name"] == "booking.failed"
    assert record["error"]["cause"]["name"] == "action.SoldOut"
    assert compensated_steps(patterns, eid) == ["flight", "hotel"]


def test_travel_saga_refunds_a_charge_declined_after_its_hold(patterns: Harness) -> None:
    eid = patterns.start("travel-saga", {**TRIP, "card": "tok_declined"})
    patterns.drain()
    record = patterns.runtime.record(eid)
    assert record["status"] == "compensated"
    assert record["error"]["name"] == "booking.failed"
    assert compensated_steps(patterns, eid) == ["pay", "car", "flight", "hotel"]


def test_money_transfer_moves_the_money(patterns: Harness) -> None:
    record = patterns.run("money-transfer", {"from": "acc-a", "to": "acc-b", "cents": 5, "reference": "r1"})
    assert record["status"] == "succeeded"


def test_money_transfer_to_a_frozen_account_puts_the_money_back_and_tells_the_owner(
    patterns: Harness,
) -> None:
    eid = patterns.start(
        "money-transfer", {"from": "acc-a", "to": "acc-frozen", "cents": 5, "reference": "r2"}
    )
    patterns.drain()
    record = patterns.runtime.record(eid)
    assert record["status"] == "compensated"
    assert record["error"]["name"] == "transfer.failed"
    assert compensated_steps(patterns, eid) == ["withdraw", "withdraw"]  # deposit back, then the e-mail


def test_money_transfer_from_an_empty_account_is_not_retried(patterns: Harness) -> None:
    eid = patterns.start(
        "money-transfer", {"from": "acc-empty", "to": "acc-b", "cents": 5, "reference": "r3"}
    )
    patterns.drain()
    record = patterns.runtime.record(eid)
    assert record["status"] == "failed" and record["error"]["name"] == "action.InsufficientFunds"
    assert not [e for e in patterns.runtime.history(eid) if e.get("event") == "retry"]


def test_purchase_order_confirmed_in_time_by_another_workflow(patterns: Harness) -> None:
    eid = patterns.start("purchase-order", {"customer": "acme", "items": [{"sku": "x"}]})
    settle(patterns)
    order = patterns.store.outputs(eid, ["create"])[0]["order"]
    patterns.start("confirm-order", {"order": order, "by": "alice"})
    patterns.drain()
    record = patterns.runtime.record(eid)
    assert record["status"] == "succeeded"
    assert record["output"] == {"order": order, "confirmed_by": "alice"}


def test_purchase_order_not_confirmed_by_the_deadline_is_cancelled(patterns: Harness) -> None:
    start = patterns.clock.now()
    eid = patterns.start("purchase-order", {"customer": "acme", "items": []})
    patterns.drain()
    record = patterns.runtime.record(eid)
    assert record["status"] == "compensated" and record["error"]["name"] == "order.expired"
    assert compensated_steps(patterns, eid) == ["create"]
    assert patterns.clock.now() - start >= 86_400


def test_room_readings_accumulate_until_a_quiet_window_ends(patterns: Harness) -> None:
    eid = patterns.start("room-readings", {"room": "lab"})
    for celsius in (20.5, 22.0, 19.5):
        settle(patterns)
        patterns.clock.advance_to(patterns.clock.now() + 60)
        assert patterns.runtime.notify("room.reading", "lab", {"celsius": celsius}) == 1
    patterns.drain()
    record = patterns.runtime.record(eid)
    assert record["status"] == "succeeded"
    assert record["output"] == {"room": "lab", "count": 3, "average": 20.67, "low": 19.5, "high": 22.0}


def test_onboarding_sends_tips_when_the_user_activates(patterns: Harness) -> None:
    eid = patterns.start("onboarding-nudge", {"user": "u1", "email": "u1@example.com"})
    settle(patterns)
    patterns.runtime.notify("user.activated", "u1", {})
    patterns.drain()
    record = patterns.runtime.record(eid)
    assert record["output"] == {"user": "u1", "activated": True}
    assert [t["step"] for t in record["trace"]][-2:] == ["tips", "done"]


def test_onboarding_reminds_a_user_who_never_activates(patterns: Harness) -> None:
    record = patterns.run("onboarding-nudge", {"user": "u2", "email": "u2@example.com"})
    assert record["output"] == {"user": "u2", "activated": False}
    assert "remind" in [t["step"] for t in record["trace"]]


def test_scatter_gather_keeps_every_quote_and_the_cheapest(patterns: Harness) -> None:
    vendors = ["acme", "bolts", "down-1", "fastenal", "nutco", "screwy", "down-2"]
    record = patterns.run("scatter-gather", {"sku": "m6", "qty": 10, "vendors": vendors})
    assert record["status"] == "succeeded"
    out = record["output"]
    assert set(out["quotes"]) == {"acme", "bolts", "fastenal", "nutco", "screwy"}
    assert sorted(out["unavailable"]) == ["down-1", "down-2"]
    assert out["best_cents"] == min(out["quotes"].values())
    assert out["quotes"][out["cheapest"]] == out["best_cents"]


def test_supplier_race_takes_the_first_confirmation_and_releases_the_other_hold_first(
    patterns: Harness,
) -> None:
    eid = patterns.start("supplier-race", {"part": "valve-12", "qty": 4})
    settle(patterns)
    hold = patterns.store.outputs(eid, ["hold_globex"])[0]["hold"]
    patterns.clock.advance_to(patterns.clock.now() + 600)
    assert patterns.runtime.notify(
        "supplier.confirmed", hold, {"supplier": "globex", "hold": hold, "price_cents": 5200}
    )
    patterns.drain()
    record = patterns.runtime.record(eid)
    assert record["status"] == "succeeded"
    assert record["output"]["supplier"] == "globex" and record["output"]["price_cents"] == 5200
    runs = [(t["step"], t["phase"]) for t in record["trace"] if t["step"] in ("hold_acme", "order")]
    assert runs == [("hold_acme", "run"), ("hold_acme", "compensate"), ("order", "run")]


def test_supplier_race_without_a_confirmation_releases_both_holds(patterns: Harness) -> None:
    start = patterns.clock.now()
    eid = patterns.start("supplier-race", {"part": "valve-12", "qty": 4})
    patterns.drain()
    record = patterns.runtime.record(eid)
    assert record["status"] == "failed" and record["error"]["name"] == "part.unavailable"
    assert compensated_steps(patterns, eid) == ["hold_globex", "hold_acme"]
    assert patterns.clock.now() - start < 3700


def test_the_patterns_test_files_pass_at_full_path_coverage(tmp_path: Any) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "test", str(PATTERNS), "--min-coverage", "100"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "100.0%" in done.stdout
