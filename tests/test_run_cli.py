"""``hopflow run`` and the local operations as a user runs them: subprocesses, the embedded Redis in a
fresh folder per test, exit codes, the exact ``--json`` record, readable usage errors, progress."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

HANG_GUARD_S = 90  # only stops a broken run from hanging the suite; nothing is timed

ACTIONS = """
import os
from pathlib import Path

import engine


class TemporaryError(Exception):
    pass


@engine.action("t.echo")
def echo(ctx, **kwargs):
    return {"args": kwargs, "attempt": ctx.attempt}


@engine.action("t.boom")
def boom(ctx):
    raise RuntimeError("kaput")


@engine.action("t.flaky")
def flaky(ctx):
    if ctx.attempt == 1:
        raise TemporaryError("try again")
    return "fine"


@engine.action("t.undo")
def undo(ctx):
    if Path("undo.blocked").exists():
        raise RuntimeError("the undo service is down")
    return "undone"


@engine.action("t.crash_once")
def crash_once(ctx):
    marker = Path("crashed.once")
    if not marker.exists():
        marker.write_text("x")
        os._exit(9)  # the process dies in the middle of a delivery
    return "survived"
"""

WORKFLOWS = {
    "nap.yaml": """
        name: nap
        steps:
          - id: nap
            wait: {for: 2h}
          - id: after
            action: t.echo
            with: {woke: true}
    """,
    "fails.yaml": """
        name: fails
        steps:
          - id: boom
            action: t.boom
    """,
    "saga.yaml": """
        name: saga
        steps:
          - id: one
            action: t.echo
            with: {n: 1}
            compensate: {action: t.undo}
          - id: two
            action: t.echo
            with: {n: 2}
            compensate: {action: t.echo, with: {undo: 2}}
          - id: three
            action: t.boom
    """,
    "flaky.yaml": """
        name: flaky
        steps:
          - id: call
            action: t.flaky
            retry: {max_attempts: 3, interval: 5m, on: [action.TemporaryError]}
    """,
    "typed.yaml": """
        name: typed
        input:
          type: object
          required: [n, name]
          properties:
            n: {type: integer, maximum: 10}
            name: {type: string}
        steps:
          - id: echo
            action: t.echo
            with: {n: "{{ input.n }}", name: "{{ input.name }}"}
    """,
    "waiter.yaml": """
        name: waiter
        input:
          type: object
          properties: {k: {type: string}}
        steps:
          - id: reserve
            action: t.echo
            compensate: {action: t.echo, with: {undo: true}}
          - id: hold
            wait: {event: go, key: "{{ input.k }}"}
          - id: done
            succeed: {output: "{{ steps.hold.output }}"}
    """,
    "crashy.yaml": """
        name: crashy
        steps:
          - id: first
            action: t.echo
          - id: risky
            action: t.crash_once
            timeout: 1s  # the crashed holder's branch lock lasts this + 10 s (2 s: short_leases.py)
    """,
}

CHILDREN = {
    "child.yaml": """
        name: child-wf
        input: {type: object, properties: {x: {type: integer}}}
        steps:
          - id: inner
            action: t.echo
            with: {x: "{{ input.x }}"}
    """,
}

OTHER = {
    "slow-step.yaml": """
        name: slow-step
        steps:
          - id: s
            action: t.echo
            timeout: 20s
    """,
}

PARENT = """
    name: parent-wf
    steps:
      - id: call_child
        workflow: {name: child-wf, input: {x: 7}}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "acts.py").write_text(ACTIONS)
    wf = tmp_path / "wf"
    wf.mkdir()
    for name, text in WORKFLOWS.items():
        (wf / name).write_text(textwrap.dedent(text).lstrip())
    lib = tmp_path / "lib"
    lib.mkdir()
    for name, text in CHILDREN.items():
        (lib / name).write_text(textwrap.dedent(text).lstrip())
    other = tmp_path / "other"
    other.mkdir()
    for name, text in OTHER.items():
        (other / name).write_text(textwrap.dedent(text).lstrip())
    (other / "parent.yaml").write_text(textwrap.dedent(PARENT).lstrip())
    return tmp_path


def hopflow(
    *args: str, cwd: Path, stdin: str | None = None, cli: Sequence[str] = ("-m", "engine.cli")
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *cli, *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        env={k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "HOPFLOW_TIME_BUDGET")},
    )


def run(
    project: Path, name: str, *args: str, stdin: str | None = None, cli: Sequence[str] = ("-m", "engine.cli")
) -> subprocess.CompletedProcess[str]:
    return hopflow("run", f"wf/{name}.yaml", "--actions", "acts.py", *args, cwd=project, stdin=stdin, cli=cli)


def record_of(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout  # stdout is exactly the record
    return json.loads(lines[0])


# ------------------------------------------------------------------------------------------ --json


def test_json_record_has_exactly_the_documented_shape(project: Path) -> None:
    proc = run(project, "typed", "--input", '{"n": 3, "name": "ada"}', "--json")
    assert proc.returncode == 0, proc.stderr
    record = record_of(proc)
    assert list(record) == ["execution_id", "workflow", "graph", "status", "output", "error", "trace"]
    assert record["workflow"] == "typed" and record["status"] == "succeeded"
    assert len(record["graph"]) == 64 and record["error"] is None
    assert record["output"] == {"args": {"n": 3, "name": "ada"}, "attempt": 1}
    assert record["trace"] == [{"step": "echo", "phase": "run", "status": "ok", "attempt": 1}]
    assert "echo" in proc.stderr  # progress went to stderr


def test_input_from_a_file_and_from_stdin(project: Path) -> None:
    (project / "in.json").write_text('{"n": 1, "name": "file"}')
    from_file = record_of(run(project, "typed", "--input", "@in.json", "--json"))
    from_stdin = record_of(run(project, "typed", "--input", "@-", "--json", stdin='{"n": 2, "name": "pipe"}'))
    assert from_file["output"]["args"]["name"] == "file"
    assert from_stdin["output"]["args"]["name"] == "pipe"


def test_failure_exits_1_with_the_error(project: Path) -> None:
    proc = run(project, "fails", "--json")
    assert proc.returncode == 1
    record = record_of(proc)
    assert record["status"] == "failed"
    assert record["error"] == {"name": "action.RuntimeError", "message": "kaput", "step": "boom"}


def test_compensations_run_newest_first(project: Path) -> None:
    record = record_of(run(project, "saga", "--json"))
    assert record["status"] == "compensated"
    assert [(t["step"], t["phase"], t["status"]) for t in record["trace"]] == [
        ("one", "run", "ok"),
        ("two", "run", "ok"),
        ("three", "run", "error"),
        ("two", "compensate", "ok"),
        ("one", "compensate", "ok"),
    ]


# ----------------------------------------------------------------------------------- usage errors


def test_bad_json_input_is_one_line_and_exit_2(project: Path) -> None:
    proc = run(project, "typed", "--input", "{nope")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("hopflow run: --input is not valid JSON")


def test_unreadable_input_file(project: Path) -> None:
    proc = run(project, "typed", "--input", "@missing.json")
    assert proc.returncode == 2
    assert "missing.json" in proc.stderr and "Traceback" not in proc.stderr


def test_invalid_input_gives_one_line_per_schema_error(project: Path) -> None:
    proc = run(project, "typed", "--input", '{"n": 99}')
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert sorted(lines) == [
        "hopflow run: input/n: 99 is greater than the maximum of 10",
        "hopflow run: input: 'name' is a required property",
    ]
    assert not (project / ".hopflow" / "appendonly.aof").exists() or "typed" not in proc.stdout


def test_invalid_workflow_prints_its_diagnostics(project: Path) -> None:
    (project / "broken.yaml").write_text("name: broken\nsteps:\n  - id: a\n    action: t.echo\n    nxt: b\n")
    proc = hopflow("run", "broken.yaml", cwd=project)
    assert proc.returncode == 2
    assert "broken.yaml:5:5: error: unknown key 'nxt'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_time_budget_applies_to_validation(project: Path) -> None:
    def slow(*args: str) -> subprocess.CompletedProcess[str]:
        return hopflow("run", "other/slow-step.yaml", "--actions", "acts.py", *args, cwd=project)

    too_long = slow()
    assert too_long.returncode == 2 and "budget" in too_long.stderr
    fits = slow("--time-budget", "30")
    assert fits.returncode == 0, fits.stderr
    bad = slow("--time-budget", "soon")
    assert bad.returncode == 2 and "soon" in bad.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "nothere.yaml"], "no such file"),
        (["run", "wf"], "is a folder"),
        (["run", "wf/typed.test.yaml"], "is a test file; run its cases with `hopflow test"),
        (["run", "wf/typed.yaml", "--actions", "nope_module_xyz"], "not found"),
        (["run", "wf/typed.yaml", "--actions", "missing.py"], "not found"),
        (["run", "wf/typed.yaml", "--workflows", "nowhere"], "not a folder"),
    ],
)
def test_usage_errors_exit_2_with_one_line(project: Path, args: list[str], needle: str) -> None:
    proc = hopflow(*args, cwd=project)
    assert proc.returncode == 2
    assert needle in proc.stderr and "Traceback" not in proc.stderr


def test_an_actions_module_that_fails_to_import_is_a_usage_error(project: Path) -> None:
    (project / "bad_acts.py").write_text("import engine\nraise ValueError('missing API key')\n")
    proc = hopflow("run", "wf/fails.yaml", "--actions", "bad_acts.py", cwd=project)
    assert proc.returncode == 2
    assert "ValueError: missing API key (bad_acts.py:2)" in proc.stderr


# -------------------------------------------------------------------------------------- behaviour


def test_fast_forward_makes_a_two_hour_wait_instant(project: Path) -> None:
    proc = run(project, "nap", "--fast-forward", "--json")
    assert proc.returncode == 0, proc.stderr
    record = record_of(proc)
    assert [t["step"] for t in record["trace"]] == ["nap", "after"]
    assert record["output"]["args"] == {"woke": True}
    waiting = next(line.split() for line in proc.stderr.splitlines() if line.startswith("nap "))
    assert waiting[:3] == ["nap", "waiting", "until"]  # progress shows when the wait ends


def test_retries_show_in_progress_and_trace(project: Path) -> None:
    proc = run(project, "flaky", "--fast-forward", "--progress", "plain")
    assert proc.returncode == 0, proc.stderr
    lines = [line.split() for line in proc.stdout.splitlines()]
    assert ["call", "run", "#1", "error"] == lines[1][:4]
    assert lines[2][:2] == ["call", "retry"]
    assert ["call", "run", "#2", "ok"] == lines[3][:4]
    finished = [line for line in lines if line[:2] == ["flaky", "finished"]]
    assert finished == [["flaky", "finished", "succeeded"]]


def test_child_workflows_are_found_in_the_workflows_folder(project: Path) -> None:
    missing = hopflow("run", "other/parent.yaml", "--actions", "acts.py", "--json", cwd=project)
    assert missing.returncode == 1
    assert record_of(missing)["error"]["name"] == "workflow.unknown"
    found = hopflow(
        "run", "other/parent.yaml", "--actions", "acts.py", "--workflows", "lib", "--json", cwd=project
    )
    assert found.returncode == 0, found.stderr
    assert record_of(found)["output"] == {"args": {"x": 7}, "attempt": 1}


def test_a_broken_neighbour_does_not_stop_a_run(project: Path) -> None:
    (project / "wf" / "zz-broken.yaml").write_text("name: [\n")
    proc = run(project, "fails")
    assert proc.returncode == 1  # it ran (and failed as designed)
    assert "skipping" in proc.stderr and "zz-broken.yaml" in proc.stderr


def test_compensation_failed_then_resume(project: Path) -> None:
    (project / "undo.blocked").write_text("")
    first = run(project, "saga", "--json")
    assert first.returncode == 1
    parked = record_of(first)
    assert parked["status"] == "compensation_failed"
    (project / "undo.blocked").unlink()  # the undo service is back
    again = hopflow("resume", parked["execution_id"], "--actions", "acts.py", "--json", cwd=project)
    assert again.returncode == 0, again.stderr
    final = record_of(again)
    assert final["status"] == "compensated"
    comps = [(t["step"], t["status"]) for t in final["trace"] if t["phase"] == "compensate"]
    assert comps == [("two", "ok"), ("one", "error"), ("one", "ok")]


def test_a_crashed_run_continues_with_the_same_id(project: Path) -> None:
    short = (str(ROOT / "tests" / "short_leases.py"),)  # the lease and lock margin last 2 s, not 10 s
    crashed = run(project, "crashy", "--id", "crash-1", "--json", cli=short)
    assert crashed.returncode == 9 and crashed.stdout == ""  # killed mid-delivery, lease held
    again = run(project, "crashy", "--id", "crash-1", "--json", cli=short)  # the lease runs out; redelivered
    assert again.returncode == 0, again.stderr
    record = record_of(again)
    assert record["execution_id"] == "crash-1"
    assert [(t["step"], t["status"]) for t in record["trace"]] == [("first", "ok"), ("risky", "ok")]


# ------------------------------------------------------------------------------ local operations


def test_start_notify_resume_status_history(project: Path) -> None:
    started = hopflow(
        "start", "waiter", "--workflows", "wf", "--input", '{"k": "a1"}', "--id", "w-1", cwd=project
    )
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == "w-1"
    status = hopflow("status", "w-1", "--json", cwd=project)
    assert json.loads(status.stdout)["status"] == "running"
    notified = hopflow("notify", "go", "--key", "a1", "--data", '{"ok": 1}', cwd=project)
    assert notified.returncode == 0
    assert "kept for 7 days" in notified.stdout  # nobody waits yet: kept for the first wait
    resumed = hopflow("resume", "w-1", "--actions", "acts.py", "--workflows", "wf", "--json", cwd=project)
    assert resumed.returncode == 0, resumed.stderr
    assert record_of(resumed)["output"] == {"ok": 1}
    human = hopflow("status", "w-1", cwd=project)
    assert "succeeded" in human.stdout and "hold" in human.stdout
    history = hopflow("history", "w-1", cwd=project)
    assert history.returncode == 0 and "finished" in history.stdout


def test_start_rejects_bad_input_and_unknown_workflows(project: Path) -> None:
    bad = hopflow("start", "typed", "--workflows", "wf", "--input", '{"n": "x"}', cwd=project)
    assert bad.returncode == 2 and "input/n" in bad.stderr
    unknown = hopflow("start", "nope", "--workflows", "wf", cwd=project)
    assert unknown.returncode == 2 and "unknown workflow 'nope'" in unknown.stderr


def test_cancel_and_wait(project: Path) -> None:
    hopflow("start", "wf/waiter.yaml", "--input", '{"k": "b"}', "--id", "w-2", cwd=project)
    proc = hopflow(
        "cancel", "w-2", "--wait", "--actions", "acts.py", "--workflows", "wf", "--json", cwd=project
    )
    assert proc.returncode == 0, proc.stderr
    assert record_of(proc)["status"] == "cancelled"
    again = hopflow("cancel", "w-2", cwd=project)  # like the HTTP API's 409: nothing to cancel
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert again.stderr.strip().endswith(
        "execution 'w-2' is cancelled: only a running or queued execution can be cancelled"
    ), again.stderr


def test_unknown_executions_and_bad_ids(project: Path) -> None:
    for command in ("status", "history", "cancel"):
        proc = hopflow(command, "no-such-exec", cwd=project)
        assert proc.returncode == 1 and "unknown execution 'no-such-exec'" in proc.stderr
    bad = hopflow("status", "bad id!", cwd=project)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    data = hopflow("notify", "go", "--key", "k", "--data", "{x", cwd=project)
    assert data.returncode == 2 and "--data is not valid JSON" in data.stderr


def test_recover_on_an_empty_store(project: Path) -> None:
    proc = hopflow("recover", cwd=project)
    assert proc.returncode == 0
    assert proc.stdout.strip() == "re-drove 0 execution(s)"


# ------------------------------------------------------------------- the run loop's "is it over?"


def _linear(name: str, steps: int) -> str:
    body = "\n".join(f"  - id: s{i}\n    set: {{v: {i}}}" for i in range(steps))
    return f"name: {name}\nsteps:\n{body}\n"


def test_the_run_loop_reads_the_status_only_after_something_of_its_execution_ended(
    redis_db: Any,
) -> None:
    """``drive`` asks Redis "is it over?" with one ``HGET status`` after each delivery of its
    execution ends, not on every pass of the delivery loop (nor with a read of the whole header)."""
    import io

    from engine.catalog import Catalog
    from engine.commands.run import drive
    from engine.embedded import embedded_runtime
    from engine.model import Message, Outgoing

    runtime, dispatcher = embedded_runtime(Catalog.from_texts([_linear("watched", 20)]), redis=redis_db)
    dispatcher.fast_path = False  # one delivery per node: what is counted here is reads per delivery
    reads: dict[str, list[str]] = {"status": [], "header": []}
    store = runtime.store
    status, header = store.status, store.header

    def counted_status(execution_id: str) -> str | None:
        reads["status"].append(execution_id)
        return status(execution_id)

    def counted_header(execution_id: str) -> dict[str, str]:
        reads["header"].append(execution_id)
        return header(execution_id)

    store.status = counted_status  # type: ignore[method-assign]
    store.header = counted_header  # type: ignore[method-assign]
    eid = runtime.start("watched", {})
    # deliveries of another execution end too (they are dropped: it does not exist): no reads for them
    dispatcher.publish([Outgoing(Message(f"someone-else-{i}", "x", 1)) for i in range(5)])
    stream = io.StringIO()
    # no timed re-check during the run (a slow machine would add reads): only deliveries count
    record = drive(
        "run", runtime, dispatcher, eid, progress_stream=stream, live=False, quiet=True, watch_interval_s=3600
    )
    assert record["status"] == "succeeded" and len(record["trace"]) == 20
    assert reads["header"] == [eid]  # the final record only
    assert set(reads["status"]) == {eid}
    assert len(reads["status"]) <= 20 + 1  # at most one per delivery of its own execution
    assert dispatcher.stats.delivered == 20 + 5 > len(reads["status"])  # none for the others'
    assert stream.getvalue() == ""


def test_final_watch_checks_on_a_touch_or_after_its_interval() -> None:
    """The watch reads the status when its execution was touched, when it never checked, and
    after its interval (another process may have advanced it); a final status sticks."""
    from engine.commands.run import FinalWatch

    class Store:
        def __init__(self) -> None:
            self.value = "running"
            self.reads = 0

        def status(self, execution_id: str) -> str:
            self.reads += 1
            return self.value

    class Runtime:
        store = Store()

    rt = Runtime()
    watch = FinalWatch(rt, "e1", interval_s=3600)  # type: ignore[arg-type]
    assert watch() is False and rt.store.reads == 1  # the first pass always checks
    assert watch() is False and rt.store.reads == 1  # nothing happened: no read
    watch.touch("another-execution")
    assert watch() is False and rt.store.reads == 1
    rt.store.value = "succeeded"
    watch.touch("e1")
    assert watch() is True and rt.store.reads == 2
    assert watch() is True and rt.store.reads == 2
    slow = FinalWatch(rt, "e2", interval_s=0.0)  # type: ignore[arg-type]
    assert slow() is True and slow() is True


# ------------------------------------------------------------------------- --max-nodes-per-call

CHAIN = "name: chain\nsteps:\n" + "".join(f"  - id: s{i}\n    set: {{v: {i}}}\n" for i in range(10))


def _published(project: Path, execution_id: str) -> int:
    """Messages the run's local queue accepted for the execution (its 10-minute dedup markers),
    read from the embedded Redis the run left behind in ``project/.hopflow``."""
    import redis

    from engine.embedded import embedded_socket, stop_embedded

    folder = project / ".hopflow"
    client = redis.Redis(unix_socket_path=embedded_socket(folder))
    try:
        return sum(1 for _ in client.scan_iter(match=f"hf:{{q}}:d:{execution_id}:*"))
    finally:
        client.close()
        stop_embedded(folder)


def _run_chain(project: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    (project / "wf" / "chain.yaml").write_text(CHAIN)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "HOPFLOW_"))}
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", "wf/chain.yaml", "--json", "--progress", "none", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        env={**base, **(env or {})},
    )


def test_max_nodes_per_call_chains_cheap_nodes_from_the_option_or_the_environment(project: Path) -> None:
    plain = _run_chain(project, "--id", "plain-1")
    chained = _run_chain(project, "--id", "chained-1", "--max-nodes-per-call", "10")
    from_env = _run_chain(project, "--id", "env-1", env={"HOPFLOW_MAX_NODES_PER_CALL": "5"})
    for proc in (plain, chained, from_env):
        assert proc.returncode == 0, proc.stderr
        record = record_of(proc)
        assert record["status"] == "succeeded"
        assert [t["step"] for t in record["trace"]] == [f"s{i}" for i in range(10)]  # all checkpointed
    # `hopflow run`'s fast path runs the whole chain in the first delivery whatever the option says
    # (test_max_nodes_per_call_without_the_fast_path shows the option's own effect)
    for eid in ("plain-1", "chained-1", "env-1"):
        assert _published(project, eid) == 1


def test_max_nodes_per_call_without_the_fast_path(redis_db: Any) -> None:
    """With the local dispatcher's fast path off, a delivery runs up to ``max_nodes_per_call`` cheap
    nodes (the webhook's chaining); with it on, the whole chain runs in the first delivery."""
    from engine.catalog import Catalog
    from engine.embedded import embedded_runtime

    published = {}
    for label, chain, fast in (("one", 1, False), ("five", 5, False), ("fast", 1, True)):
        runtime, dispatcher = embedded_runtime(
            Catalog.from_texts([CHAIN]), redis=redis_db, max_nodes_per_call=chain
        )
        dispatcher.fast_path = fast
        eid = runtime.start("chain", {}, f"chain-{label}")
        store = runtime.store
        assert dispatcher.run_until(lambda eid=eid, s=store: s.status(eid) == "succeeded", timeout_s=30)
        assert [t["step"] for t in runtime.record(eid)["trace"]] == [f"s{i}" for i in range(10)]
        published[label] = dispatcher.stats.published
    assert published == {"one": 10, "five": 2, "fast": 1}


def test_max_nodes_per_call_usage_errors(project: Path) -> None:
    bad_env = _run_chain(project, env={"HOPFLOW_MAX_NODES_PER_CALL": "many"})
    assert bad_env.returncode == 2 and bad_env.stdout == ""
    assert bad_env.stderr.count("\n") == 1 and "HOPFLOW_MAX_NODES_PER_CALL" in bad_env.stderr
    zero = _run_chain(project, "--max-nodes-per-call", "0")
    assert zero.returncode == 2 and "--max-nodes-per-call" in zero.stderr
    served = hopflow("serve", "--max-nodes-per-call", "0", cwd=project)
    assert served.returncode == 2 and "--max-nodes-per-call" in served.stderr


def test_max_nodes_per_call_in_the_configuration_doctor_and_the_served_runtime(redis_db: Any) -> None:
    from engine.catalog import Catalog
    from engine.config import inspect_env
    from engine.web.wiring import build_runtime

    config, issues = inspect_env({"HOPFLOW_MAX_NODES_PER_CALL": "25"})
    assert config is not None and config.max_nodes_per_call == 25
    assert [i.severity for i in issues if i.variable == "HOPFLOW_MAX_NODES_PER_CALL"] == ["ok"]
    assert build_runtime(config, redis=redis_db, catalog=Catalog()).max_nodes_per_call == 25
    default, _ = inspect_env({})
    assert default is not None and default.max_nodes_per_call == 1
    assert build_runtime(default, redis=redis_db, catalog=Catalog()).max_nodes_per_call == 1
    for bad in ("0", "-3", "2.5", "ten", "10001", "²"):
        config, issues = inspect_env({"HOPFLOW_MAX_NODES_PER_CALL": bad})
        errors = [i for i in issues if i.severity == "error"]
        assert config is None and [i.variable for i in errors] == ["HOPFLOW_MAX_NODES_PER_CALL"], bad
        assert errors[0].fix
    doctor = subprocess.run(
        [sys.executable, "-m", "engine.cli", "doctor", "--offline"],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("HOPFLOW_")},
            "HOPFLOW_MAX_NODES_PER_CALL": "x",
        },
    )
    assert doctor.returncode == 1 and "HOPFLOW_MAX_NODES_PER_CALL" in doctor.stdout + doctor.stderr
