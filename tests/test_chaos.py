"""bench/chaos.py in the suite: a short run of real processes (Redis killed and restarted on its AOF,
qstash-dev paused, serve workers SIGKILLed and crashing at fault points, a proxy losing, duplicating
and delaying deliveries) ends with every saga correct and nothing left behind; and the oracle itself
catches what it must (a test of the checker, so a silent oracle cannot pass the run)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _chaos() -> Any:
    spec = importlib.util.spec_from_file_location("chaos_bench", ROOT / "bench" / "chaos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["chaos_bench"] = module
    spec.loader.exec_module(module)
    return module


chaos = _chaos()


@pytest.mark.slow
def test_a_short_chaos_run_has_no_violation() -> None:
    options = chaos.Options(
        executions=30,
        concurrency=8,
        workers=3,
        sigkills=3,
        sigkill_every_s=2.0,
        crash_rate=0.04,
        redis_restarts=1,
        redis_every_s=6.0,
        qstash_pauses=1,
        qstash_every_s=4.0,
        qstash_backoff_scale=0.001,  # a delivery that failed 4 times waits 22 s, not 44 s
        seed=11,
        time_limit_s=240.0,  # a hang guard: the run takes ~40 s on an idle machine
    )
    result = chaos.Chaos(options).run()
    table = result.table(options)
    assert result.violations == [], table + "\n" + "\n".join(result.violations)
    assert result.finished and result.executions == 30
    # the chaos happened (otherwise "no violation" proves nothing)
    assert result.sigkills == 3 and result.redis_restarts == 1 and result.qstash_pauses == 1
    assert sum(result.crashes.values()) > 0, table
    assert result.statuses["compensated"] > 0 and result.statuses["succeeded"] > 0
    assert result.proxy.lost + result.proxy.answers_lost + result.proxy.duplicated > 0


def _effect(eid: str, op: str, key: str, n: int) -> dict[str, Any]:
    return {"exec": eid, "op": op, "id": f"{op}-{n}", "key": key}


def test_the_oracle_catches_a_double_effect_a_wrong_order_a_wrong_status_and_a_wrong_output() -> None:
    plan = {"ok": False, "undo": True}
    effects = {
        "ok:reserve": _effect("ok", "reserve", "ok:reserve", 1),
        "ok:charge": _effect("ok", "charge", "ok:charge", 2),
        "ok:charge-again": _effect("ok", "charge", "ok:charge-again", 3),  # a second key: double charge
        "ok:ship": _effect("ok", "ship", "ok:ship", 4),
        "undo:reserve": _effect("undo", "reserve", "undo:reserve", 5),
        "undo:charge": _effect("undo", "charge", "undo:charge", 6),
        "undo:release": _effect("undo", "release", "undo:release", 7),
        "undo:refund": _effect("undo", "refund", "undo:refund", 8),
    }
    log = {"ok": ["reserve", "charge", "charge", "ship"], "undo": ["reserve", "charge", "release", "refund"]}
    final = {
        "ok": {
            "status": "succeeded",
            "output": {"reserved": "reserve-1", "charged": "charge-2", "shipped": "x"},
        },
        "undo": {"status": "failed", "output": None},
    }
    found = chaos.verdict(plan, final, effects, log)
    text = "\n".join(found)
    assert "ok: an effect happened under two keys" in text
    assert "ok: output" in text
    assert "undo: status failed, expected compensated" in text
    assert "undo: effects ['reserve', 'charge', 'release', 'refund'], expected" in text  # refund first
    good = {
        "ok": {
            "status": "succeeded",
            "output": {"reserved": "reserve-1", "charged": "charge-2", "shipped": "ship-4"},
        }
    }
    clean = {k: v for k, v in effects.items() if k != "ok:charge-again"}
    assert chaos.verdict({"ok": False}, good, clean, {"ok": ["reserve", "charge", "ship"]}) == []
