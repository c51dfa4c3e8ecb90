"""A ``hopflow`` process's life and death, with real subprocesses: SIGTERM is Ctrl-C (graceful drain,
the "continue it with …" hint, the embedded Redis stopped when the last user leaves), and a process
that dies mid-step under ``--fast-forward`` leaves leases on the wall clock, so the next ``resume``
takes its work back within the lease period (10 s for the embedded default), not hours later.

Nothing here is timed: the subprocess timeouts only stop a broken command from hanging the suite.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HANG_GUARD_S = 90

WORKFLOW = """\
name: nap-then-work
steps:
  - id: nap
    wait: {for: 2h}
  - id: work
    action: slow.work
output:
  done: "{{ steps.work.output.done }}"
"""

# The first call marks that it started (so the test knows the process is mid-step) and then takes a
# while; a later call (the redelivery after the crash) returns at once.
ACTIONS = """\
import os, time
from pathlib import Path
from engine import action

@action("slow.work")
def work(ctx):
    marker = Path(os.environ["MARKER"])
    if not marker.exists():
        marker.write_text("started")
        time.sleep(float(os.environ.get("SLOW_S", "3")))
        return {"done": "first"}
    return {"done": "again"}
"""


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("HOPFLOW_")}
    env.update(MARKER=str(tmp_path / "marker"), PYTHONPATH=str(ROOT), **extra)
    return env


def _hopflow(*args: str, short_leases: bool = False) -> list[str]:
    """The command line; ``short_leases``: leases and lock margins of 2 s (tests/short_leases.py)."""
    cli = [str(ROOT / "tests" / "short_leases.py")] if short_leases else ["-m", "engine.cli"]
    return [sys.executable, *cli, *args]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "nap.yaml").write_text(WORKFLOW)
    (tmp_path / "slow.py").write_text(ACTIONS)
    return tmp_path


def _start_run(project: Path, short_leases: bool = False, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _hopflow(
            "run",
            "nap.yaml",
            "--actions",
            "slow.py",
            "--fast-forward",
            "--id",
            "e1",
            "--progress",
            "plain",
            # the crashed step's branch lock lasts its time (the budget: no own timeout) + the margin
            *(["--time-budget", "2"] if short_leases else []),
            short_leases=short_leases,
        ),
        cwd=project,
        env=_env(project, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended before its step started: {proc.returncode}\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the step never started")
        time.sleep(0.05)


def _redis_servers_under(folder: Path) -> list[int]:
    """pids of redis-server processes whose command line or cwd points into ``folder``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if "redis-server" in cmd and (str(folder) in cmd or cwd.startswith(str(folder))):
            found.append(int(entry.name))
    return found


def _resume(project: Path, short_leases: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _hopflow(
            "resume",
            "e1",
            "--actions",
            "slow.py",
            "--workflows",
            ".",
            "--json",
            "--progress",
            "none",
            short_leases=short_leases,
        ),
        cwd=project,
        env=_env(project),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )


def test_a_fast_forward_run_killed_mid_step_is_resumed_within_the_lease_period(project: Path) -> None:
    """SIGKILL (no cleanup at all) after the virtual clock jumped 2 hours: the delivery's lease was
    stamped on the wall clock, so `resume` takes it back once the lease period has passed (10 s;
    2 s here, like the branch lock's margin, via tests/short_leases.py, and a 2 s time budget bounds
    the lock's step time), instead of hanging until the
    virtual deadline (2 hours from now in real time)."""
    proc = _start_run(project, short_leases=True, SLOW_S="600")
    _wait_for(project / "marker", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(HANG_GUARD_S)
    done = _resume(project, short_leases=True)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["status"] == "succeeded"
    assert record["output"] == {"done": "again"}  # the redelivery ran the step


def test_sigterm_stops_run_like_ctrl_c_with_the_hint_and_the_step_checkpointed(project: Path) -> None:
    proc = _start_run(project, SLOW_S="2")
    _wait_for(project / "marker", proc)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted; execution e1 is" in err
    assert "continue it with: hopflow run nap.yaml --id e1" in err
    assert "--fast-forward" in err
    assert not _redis_servers_under(project / ".hopflow")  # the last user left: the server stopped
    done = _resume(project)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    # the step in flight when SIGTERM came finished and was checkpointed (drained), not run again
    assert record["status"] == "succeeded" and record["output"] == {"done": "first"}


def test_a_second_sigterm_stops_at_once_and_the_next_resume_takes_the_step_over(project: Path) -> None:
    """The first SIGTERM drains; a second one does not wait for a step that would take 10 minutes
    (a Python thread cannot be stopped): the process leaves at once with the hint, and stops its
    embedded Redis. (The step's branch lock stays until the step's timeout + 10 s, like after a
    crash, so a resume would wait that long: not waited for here.)"""
    proc = subprocess.Popen(
        _hopflow(
            "run",
            "nap.yaml",
            "--actions",
            "slow.py",
            "--id",
            "e1",
            "--progress",
            "plain",
            "--fast-forward",
            "--time-budget",
            "900",
        ),
        cwd=project,
        env=_env(project, SLOW_S="600"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(project / "marker", proc)
    proc.send_signal(signal.SIGTERM)
    time.sleep(1)  # let the first one reach the drain (a second one earlier is handled the same)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=HANG_GUARD_S)  # without the fix: waits for the 600 s step
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "continue it with: hopflow run nap.yaml --id e1" in err
    assert not _redis_servers_under(project / ".hopflow")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sigterm_stops_serve_and_its_embedded_redis(project: Path) -> None:
    port = _free_port()
    (project / "workflows").mkdir()
    (project / "workflows" / "nap.yaml").write_text(WORKFLOW)
    proc = subprocess.Popen(
        _hopflow("serve", "--workflows", "workflows", "--actions", "slow.py", "--port", str(port)),
        cwd=project,
        env=_env(project),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + HANG_GUARD_S
    while True:  # until it answers
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"serve did not start: {proc.communicate()[1]}")
            time.sleep(0.1)
    assert _redis_servers_under(project / ".hopflow")
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "hopflow serve: stopped" in err
    assert "Traceback" not in err
    assert not _redis_servers_under(project / ".hopflow"), "serve left its embedded redis-server running"
