"""Preflight: `run`, `start --wait` and `serve` check every declared env variable and every action
before their first side effect, report all that is missing in one block, and start nothing; with
`--json`, user code printing to stdout cannot corrupt the JSON document. Real subprocesses, the
embedded Redis in a fresh folder per test (its absence afterwards proves nothing started)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HANG_GUARD_S = 90  # only stops a broken command from hanging the suite; nothing is timed

NEEDY = """\
name: needy
env: [PF_FIRST_MISSING, PF_SECOND_MISSING, PF_PRESENT]
steps:
  - id: a
    action: nowhere.to_be_found
    compensate:  # a list: the second body is checked too
      - action: t.ok
      - action: also.missing_undo
  - id: b
    action: t.ok
  - id: c
    workflow: {name: helper}
"""

HELPER = """\
name: helper
env: [PF_CHILD_MISSING]
steps:
  - id: h
    action: t.not_registered
"""

UNRELATED = """\
name: unrelated
env: [PF_NOT_NEEDED_BY_NEEDY]
steps:
  - id: u
    action: t.ok
"""

NOISY = """\
name: noisy
steps:
  - id: speak
    action: t.noisy
output:
  said: "{{ steps.speak.output }}"
"""

ACTIONS = """\
import os, sys
import engine

print("noise while importing the actions module")

@engine.action("t.ok")
def ok(ctx):
    return "ok"

@engine.action("t.noisy")
def noisy(ctx):
    print("noise from a step")
    sys.stdout.write("more noise\\n")
    os.system("echo noise from a subprocess")
    return "hello"
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    wf = tmp_path / "wf"
    wf.mkdir()
    (wf / "needy.yaml").write_text(NEEDY)
    (wf / "helper.yaml").write_text(HELPER)
    (wf / "unrelated.yaml").write_text(UNRELATED)
    (tmp_path / "acts.py").write_text(ACTIONS)
    return tmp_path


def hopflow(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith(("HOPFLOW_", "PF_"))}
    env.update(PYTHONPATH=str(ROOT), PF_PRESENT="yes")
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )


def _assert_every_problem_once(err: str, command: str) -> None:
    assert f"hopflow {command}: cannot start, 6 problem(s):" in err, err
    for needle in (
        "PF_FIRST_MISSING",
        "PF_SECOND_MISSING",
        "PF_CHILD_MISSING",  # the child workflow's needs count too
        "nowhere.to_be_found",
        "also.missing_undo",  # compensations too
        "t.not_registered",
    ):
        assert err.count(needle) == 1, (needle, err)
    assert "PF_PRESENT" not in err
    assert "Traceback" not in err


def test_run_reports_every_missing_env_variable_and_action_at_once_and_starts_nothing(project: Path) -> None:
    done = hopflow(project, "run", "wf/needy.yaml", "--actions", "acts.py")
    assert done.returncode == 2
    _assert_every_problem_once(done.stderr, "run")
    assert "PF_NOT_NEEDED_BY_NEEDY" not in done.stderr  # a neighbour the run never calls
    assert not (project / ".hopflow").exists()  # no embedded Redis, no execution


def test_start_wait_checks_like_run(project: Path) -> None:
    done = hopflow(project, "start", "needy", "--workflows", "wf", "--actions", "acts.py", "--wait")
    assert done.returncode == 2
    _assert_every_problem_once(done.stderr, "start")
    assert not (project / ".hopflow").exists()


def test_serve_checks_every_workflow_it_serves_before_listening(project: Path) -> None:
    done = hopflow(project, "serve", "--workflows", "wf", "--actions", "acts.py", "--port", "0")
    assert done.returncode == 1
    assert "hopflow serve: cannot start, 7 problem(s):" in done.stderr, done.stderr
    assert "PF_NOT_NEEDED_BY_NEEDY" in done.stderr  # serve serves them all
    assert "Traceback" not in done.stderr
    assert not (project / ".hopflow").exists()


def test_json_stdout_is_only_the_record_whatever_user_code_prints(project: Path) -> None:
    (project / "wf" / "noisy.yaml").write_text(NOISY)
    done = hopflow(project, "run", "wf/noisy.yaml", "--actions", "acts.py", "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)  # exactly one JSON document
    assert record["status"] == "succeeded" and record["output"] == {"said": "hello"}
    for noise in ("noise while importing", "noise from a step", "more noise", "noise from a subprocess"):
        assert noise in done.stderr  # not lost: moved to stderr
