"""Every example in workflows/ runs to its end with ``hopflow run`` (a real subprocess, the embedded
Redis in a fresh folder, the simulated services of workflows/demo.py on 127.0.0.1), and failures
injected by input or by DEMO_FAIL end in the right status with compensations newest first."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dsl.testfile import examples

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"
DEMO = WORKFLOWS / "demo.py"
HANG_GUARD_S = 90  # only stops a broken run from hanging the suite; nothing is timed

EXAMPLES = sorted(p.stem for p in examples(WORKFLOWS))  # not the *.test.yaml files
# without an event, approval escalates, times out (fast-forwarded) and withdraws the claim
EXPECTED = {name: "succeeded" for name in EXAMPLES} | {"approval": "compensated"}

# which steps carry a compensation (to check "newest first" against the run order)
COMPENSABLE = {
    "dinner-reservation": {"book", "deposit"},
    "order-fulfilment": {"reserve_line", "charge", "pack", "invoice", "ship"},
    "onboarding": {"create_account", "crm", "trial"},
    "approval": {"submit"},
}


def hopflow(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = HANG_GUARD_S
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.endswith("_API") and k != "DEMO_FAIL"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_example(
    name: str, cwd: Path, *extra: str, payload: Any = None, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    source = f"@{WORKFLOWS / f'{name}.input.json'}" if payload is None else json.dumps(payload)
    proc = hopflow(
        "run",
        str(WORKFLOWS / f"{name}.yaml"),
        "--input",
        source,
        "--actions",
        str(DEMO),
        "--json",
        *extra,
        cwd=cwd,
        env=env,
    )
    assert proc.stdout.strip(), proc.stderr
    return proc, json.loads(proc.stdout)


def example_input(name: str) -> dict[str, Any]:
    return json.loads((WORKFLOWS / f"{name}.input.json").read_text())


def compensations(record: dict[str, Any]) -> list[str]:
    return [t["step"] for t in record["trace"] if t["phase"] == "compensate"]


def assert_newest_first(record: dict[str, Any], compensable: set[str]) -> None:
    """The compensations are exactly the compensable steps that succeeded, in reverse run order."""
    done = [t["step"] for t in record["trace"] if t["phase"] == "run" and t["status"] == "ok"]
    expected = [s for s in reversed(done) if s in compensable]
    assert compensations(record) == expected
    assert all(t["status"] == "ok" for t in record["trace"] if t["phase"] == "compensate")


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_to_its_end(name: str, tmp_path: Path) -> None:
    proc, record = run_example(name, tmp_path, "--fast-forward")
    assert record["status"] == EXPECTED[name], proc.stderr
    assert proc.returncode == (0 if EXPECTED[name] == "succeeded" else 1)
    assert record["workflow"] == name
    if record["status"] == "succeeded":
        assert record["error"] is None
        assert compensations(record) == []
    else:
        assert_newest_first(record, COMPENSABLE[name])


def test_dinner_reservation_succeeds_with_the_booking(tmp_path: Path) -> None:
    proc, record = run_example("dinner-reservation", tmp_path, "--fast-forward")
    assert proc.returncode == 0
    assert record["output"]["booking"].startswith("bk_")
    steps = [t["step"] for t in record["trace"]]
    assert steps == ["find_table", "pick", "book", "deposit", "before_dinner", "remind", "done"]


def test_deposit_failure_compensates_the_booking(tmp_path: Path) -> None:
    proc, record = run_example("dinner-reservation", tmp_path, "--fast-forward", env={"DEMO_FAIL": "deposit"})
    assert proc.returncode == 1
    assert record["status"] == "compensated"
    assert record["error"] == {
        "name": "action.DemoFailure",
        "message": "injected failure in step 'deposit' (DEMO_FAIL)",
        "step": "deposit",
    }
    assert compensations(record) == ["book"]


def test_declined_card_by_input_compensates(tmp_path: Path) -> None:
    payload = example_input("dinner-reservation") | {"user_id": "u-broke-7"}
    _, record = run_example("dinner-reservation", tmp_path, "--fast-forward", payload=payload)
    assert record["status"] == "compensated"
    assert record["error"]["name"] == "action.PaymentDeclined"
    assert compensations(record) == ["book"]


def test_no_table_fails_without_compensation(tmp_path: Path) -> None:
    payload = example_input("dinner-reservation") | {"party_size": 12}
    proc, record = run_example("dinner-reservation", tmp_path, "--fast-forward", payload=payload)
    assert proc.returncode == 1
    assert record["status"] == "failed"
    assert record["error"]["name"] == "NoTable"
    assert compensations(record) == []


def test_late_failure_in_order_fulfilment_undoes_everything_newest_first(tmp_path: Path) -> None:
    _, record = run_example("order-fulfilment", tmp_path, env={"DEMO_FAIL": "ship"})
    assert record["status"] == "compensated"
    assert record["error"]["step"] == "ship"
    comps = compensations(record)
    assert comps[-3:] == ["reserve_line"] * 3  # the first thing done is the last undone
    assert set(comps[:3]) == {"invoice", "pack"} | {"charge"} and comps[2] == "charge"
    assert_newest_first(record, COMPENSABLE["order-fulfilment"])


def test_declined_payment_is_caught_and_releases_the_stock(tmp_path: Path) -> None:
    payload = example_input("order-fulfilment") | {"payment_token": "tok_declined"}
    _, record = run_example("order-fulfilment", tmp_path, payload=payload)
    assert record["status"] == "compensated"
    assert record["error"]["name"] == "payment.declined"
    assert compensations(record) == ["reserve_line"] * 3


def test_flaky_payment_is_retried(tmp_path: Path) -> None:
    payload = example_input("order-fulfilment") | {"payment_token": "tok_flaky"}
    proc, record = run_example("order-fulfilment", tmp_path, "--fast-forward", payload=payload)
    assert record["status"] == "succeeded", proc.stderr
    charges = [(t["status"], t["attempt"]) for t in record["trace"] if t["step"] == "charge"]
    assert charges == [("error", 1), ("ok", 2)]


def test_failed_child_workflow_compensates_the_parent_with_a_workflow_compensation(tmp_path: Path) -> None:
    _, record = run_example("onboarding", tmp_path, "--fast-forward", env={"DEMO_FAIL": "send"})
    assert record["status"] == "compensated"
    assert record["error"]["step"] == "welcome"
    assert compensations(record) == ["trial", "crm", "create_account"]


def test_reminder_stops_without_compensating(tmp_path: Path) -> None:
    proc, record = run_example("reminder", tmp_path, "--fast-forward", env={"DEMO_FAIL": "send_sms"})
    assert proc.returncode == 1
    assert record["status"] == "failed"
    assert record["error"]["name"] == "http.422"
    assert compensations(record) == []


def test_small_expense_is_approved_by_policy(tmp_path: Path) -> None:
    payload = example_input("approval") | {"amount_cents": 4000}
    proc, record = run_example("approval", tmp_path, payload=payload)
    assert proc.returncode == 0, proc.stderr
    assert record["output"]["approved_by"] == "policy"
    assert record["output"]["payout_id"].startswith("po_")


def test_approval_waits_for_an_event_sent_from_another_process(tmp_path: Path) -> None:
    execution_id = "expense-run-1"
    expense_id = "exp_" + hashlib.sha1(execution_id.encode()).hexdigest()[:10]  # as demo.py derives it
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API")}
    runner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "run",
            str(WORKFLOWS / "approval.yaml"),
            "--input",
            f"@{WORKFLOWS / 'approval.input.json'}",
            "--actions",
            str(DEMO),
            "--id",
            execution_id,
            "--json",
            "--progress",
            "plain",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert runner.stderr is not None
        seen = []
        for line in runner.stderr:  # progress: wait until the run is parked on the event
            seen.append(line)
            if line.startswith("wait_manager") and "waiting" in line:
                break
        else:
            pytest.fail("the run never waited for the event:\n" + "".join(seen))
        data = json.dumps({"approved": True, "by": "grace", "comment": "ok"})
        sent = hopflow("notify", "expense.decided", "--key", expense_id, "--data", data, cwd=tmp_path)
        assert sent.returncode == 0, sent.stderr
        assert "resumed 1 execution" in sent.stdout
        out, err = runner.communicate(timeout=HANG_GUARD_S)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    record = json.loads(out)
    assert runner.returncode == 0, err
    assert record["execution_id"] == execution_id
    assert record["output"]["approved_by"] == "grace"


def test_status_and_history_of_a_finished_run(tmp_path: Path) -> None:
    _, record = run_example("send-welcome", tmp_path)
    eid = record["execution_id"]
    status = hopflow("status", eid, "--json", cwd=tmp_path)
    assert status.returncode == 0
    assert json.loads(status.stdout)["status"] == "succeeded"
    history = hopflow("history", eid, "--json", cwd=tmp_path)
    entries = json.loads(history.stdout)
    assert [e["step"] for e in entries if e.get("phase") == "run"] == ["render", "send"]
    assert entries[-1]["event"] == "finished"


def test_demo_module_points_env_at_its_server_only_when_unset(tmp_path: Path) -> None:
    code = (
        "import os, sys; sys.path.insert(0, sys.argv[1]); import demo; "
        "print(os.environ['CRM_API']); print(os.environ['SMS_API'])"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API")} | {"SMS_API": "http://sms.example"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(WORKFLOWS)], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0].startswith("http://127.0.0.1:") and out[0].endswith("/crm")
    assert out[1] == "http://sms.example"


def test_a_run_in_a_fresh_folder_leaves_no_server_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(
        "REDIS_URL", raising=False
    )  # this is about the embedded server, whatever REDIS_URL says
    run_example("close-account", tmp_path)
    settings = json.loads((tmp_path / ".hopflow" / "redis.db.settings").read_text())
    deadline = time.monotonic() + 10
    while os.path.exists(settings["pidfile"]) and time.monotonic() < deadline:
        time.sleep(0.05)  # the server removes its pid file as it exits
    assert not os.path.exists(settings["pidfile"])
    assert (tmp_path / ".hopflow" / "appendonly.aof").exists()
