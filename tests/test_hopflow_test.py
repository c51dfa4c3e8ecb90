"""``hopflow test``: test files, mocks, virtual time, expectations with diffs, coverage, reports.

Everything runs for real: the interpreter, a private embedded Redis, the CLI (click's runner in
process). Times are checked on the virtual clock only (never the wall clock).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dsl.validate import validate_path
from engine.cli import cli

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

WAITS = """
name: waits
input: {type: object, properties: {id: {type: string}}}
steps:
  - id: first
    action: shop.first
    with: {id: "{{ input.id }}"}
  - id: nap
    wait: {for: 2d}
  - id: approval
    wait: {event: approved, key: "{{ input.id }}", timeout: 3d}
    catch:
      - errors: [timeout]
        goto: expired
  - id: ship
    action: shop.ship
    with: {id: "{{ input.id }}", by: "{{ steps.approval.output.by }}"}
    retry: {max_attempts: 3, interval: 10s}
  - id: done
    succeed: {output: {shipped: "{{ steps.ship.output.ok }}"}}
  - id: expired
    fail: {error: Expired, message: "no approval for {{ input.id }}"}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def hopflow(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def waits(tmp_path: Path) -> Path:
    write(tmp_path, "waits.yaml", WAITS)
    return tmp_path


def run_session(paths: list[Path], **kwargs: Any) -> Any:
    from engine.testing.runner import run

    return run([str(p) for p in paths], **kwargs)


# ------------------------------------------------------------------------------ the examples


@pytest.mark.slow
def test_the_examples_pass_at_full_path_coverage() -> None:
    out = hopflow("test", str(ROOT / "workflows"), "--min-coverage", "100")
    assert out.exit_code == 0, out.output
    assert "TOTAL" in out.output and "100.0%" in out.output
    assert " failed" not in out.output


# ------------------------------------------------------------------------------- virtual time


def test_a_two_day_wait_and_an_event_are_delivered_at_their_virtual_times(waits: Path) -> None:
    from dsl.testfile import load_test_file
    from engine.state.store import Store
    from engine.testing.harness import run_case
    from engine.testing.server import TestRedis
    from engine.testing.spec import cases_of, parse_instant

    write(
        waits,
        "waits.test.yaml",
        """
        now: "2030-01-01T00:00:00Z"
        cases:
          - name: approved on day three
            input: {id: a}
            mocks:
              first: {result: {}}
              ship: {result: {ok: true}}
            events:
              - {name: approved, key: a, data: {by: ann}, at: "2030-01-04T00:00:00Z"}
        """,
    )
    (case,) = cases_of(load_test_file(waits / "waits.test.yaml"))
    server = TestRedis.start()
    try:
        client = server.client(0)
        client.flushdb()
        observed = run_case(case, Store(client), "t-1")
    finally:
        server.close()
    start = parse_instant("2030-01-01T00:00:00Z")
    times = {h["step"]: h["time"] for h in observed.history if h.get("phase") == "run"}
    assert observed.record["status"] == "succeeded"
    assert times["first"] == "2030-01-01T00:00:00Z"
    assert times["nap"] == "2030-01-03T00:00:00Z"  # start + 2d, no wall-clock wait
    assert times["approval"] == "2030-01-04T00:00:00Z"  # the event's time, not the 3d timeout
    assert parse_instant(times["ship"]) == start + 3 * 86400


def test_an_event_due_with_the_timeout_wins_and_a_later_one_is_too_late(waits: Path) -> None:
    write(
        waits,
        "waits.test.yaml",
        """
        cases:
          - name: at the timeout's instant
            input: {id: a}
            mocks: {first: {result: {}}, ship: {result: {ok: true}}}
            events: [{name: approved, key: a, data: {by: ann}, at: 5d}]
            expect:
              status: succeeded
              path: [first, nap, approval, ship, done]
              calls: {ship: {with: {id: a, by: ann}}}
          - name: one second late
            input: {id: a}
            mocks: {first: {result: {}}}
            events: [{name: approved, key: a, data: {by: ann}, at: 5d1s}]
            expect:
              status: failed
              error: {name: Expired, message: no approval for a}
              path: [first, nap, approval, expired]
          - name: after a step
            input: {id: a}
            mocks: {first: {result: {}}, ship: {result: {ok: true}}}
            events: [{name: approved, key: a, data: {by: bob}, after: nap}]
            expect:
              status: succeeded
              calls: {ship: {with: {by: bob}}}
        """,
    )
    session = run_session([waits])
    assert [r.outcome for r in session.results] == ["passed"] * 3, [r.mismatches for r in session.results]


def test_cases_are_isolated_an_undelivered_event_does_not_leak(waits: Path) -> None:
    write(
        waits,
        "waits.test.yaml",
        """
        cases:
          - name: sends an event it never waits for
            input: {id: a}
            mocks: {first: {error: action.Broken}}
            events: [{name: approved, key: a, data: {by: ann}}]
            expect: {status: failed}
          - name: waits for the same event in vain
            input: {id: a}
            mocks: {first: {result: {}}}
            expect: {status: failed, error: Expired}
        """,
    )
    session = run_session([waits])
    assert [r.outcome for r in session.results] == ["passed", "passed"], [
        r.mismatches for r in session.results
    ]


def test_a_case_waiting_for_an_event_nobody_sends_ends_running(tmp_path: Path) -> None:
    write(
        tmp_path,
        "forever.yaml",
        """
        name: forever
        steps:
          - id: park
            wait: {event: never, key: k}
        """,
    )
    write(tmp_path, "forever.test.yaml", "cases:\n  - name: parks\n    expect: {status: running}\n")
    session = run_session([tmp_path])
    assert session.results[0].passed and session.results[0].status == "running"


# ------------------------------------------------------------------------------------------ mocks


def test_mock_sequences_per_item_answers_and_retry_exhaustion(tmp_path: Path) -> None:
    write(
        tmp_path,
        "items.yaml",
        """
        name: items
        input: {type: object, properties: {skus: {type: array}}}
        env: [API]
        steps:
          - id: each
            foreach:
              items: "{{ input.skus }}"
              as: sku
              steps:
                - id: reserve
                  http: {method: POST, url: "{{ env.API }}/r", json: {sku: "{{ sku }}"}, expect: [201]}
                  retry: {max_attempts: 2, interval: 1s}
                  output: "{{ result.json.id }}"
          - id: total
            action: shop.total
            with: {ids: "{{ steps.each.output }}"}
            retry: {max_attempts: 3, interval: 1m, on: [action.Busy]}
        """,
    )
    write(
        tmp_path,
        "items.test.yaml",
        """
        env: {API: "https://api.test"}
        cases:
          - name: the second item needs a retry
            input: {skus: [a, b]}
            mocks:
              reserve:
                per_item:
                  - {status: 201, body: {id: r-a}}
                  - sequence: [{status: 500}, {status: 201, body: {id: r-b}}]
              total:
                sequence: [{error: action.Busy}, {result: 2}]
            expect:
              status: succeeded
              output: 2
              calls:
                reserve:
                  - {request: {json: {sku: a}}}
                  - {request: {json: {sku: b}}}
                  - {request: {json: {sku: b}, headers: {Content-Type: application/json}}}
                total: {count: 2, with: {ids: [r-a, r-b]}}
          - name: a sequence that runs out fails the case
            input: {skus: [a]}
            mocks:
              reserve: {status: 201, body: {id: r-a}}
              total: {sequence: [{error: action.Busy}]}
        """,
    )
    session = run_session([tmp_path])
    first, second = session.results
    assert first.passed, first.mismatches
    assert second.outcome == "failed"
    assert "was called 2 times but its sequence has 1 answers" in second.mismatches[0].message


def test_an_unmocked_call_fails_the_case_unless_real_calls_are_allowed(tmp_path: Path) -> None:
    write(
        tmp_path,
        "real.yaml",
        """
        name: real
        steps:
          - id: greet
            action: greetings.hello
            with: {name: Ada}
        """,
    )
    write(
        tmp_path,
        "greetings.py",
        """
        import engine

        @engine.action("greetings.hello")
        def hello(ctx, name):
            return {"text": f"hello {name}"}
        """,
    )
    write(
        tmp_path,
        "real.test.yaml",
        """
        actions: greetings.py
        cases:
          - name: not mocked
            expect: {status: succeeded}
          - name: real action
            allow_real: true
            expect:
              status: succeeded
              output: {text: hello Ada}
              calls: {greet: {count: 1, with: {name: Ada}}}
        """,
    )
    session = run_session([tmp_path])
    unmocked, real = session.results
    assert unmocked.outcome == "failed"
    assert unmocked.mismatches[0].message == (
        "step 'greet' (action) was called but has no mock: add mocks: {greet: ...}, "
        "or allow_real: true to the case"
    )
    assert real.passed, real.mismatches


def test_the_environment_is_hermetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(
        tmp_path,
        "env.yaml",
        """
        name: env
        env: [TARGET]
        steps:
          - id: call
            http: {url: "{{ env.TARGET }}/x"}
        """,
    )
    write(
        tmp_path,
        "env.test.yaml",
        """
        cases:
          - name: given
            env: {TARGET: "https://given.test"}
            mocks: {call: {status: 200}}
            expect: {status: succeeded, calls: {call: {request: {url: "https://given.test/x"}}}}
          - name: not given
            mocks: {call: {status: 200}}
            expect: {status: failed, error: template}
        """,
    )
    monkeypatch.setenv("TARGET", "https://from-the-shell.test")
    session = run_session([tmp_path])
    assert [r.outcome for r in session.results] == ["passed", "passed"], [
        r.mismatches for r in session.results
    ]
    assert os.environ["TARGET"] == "https://from-the-shell.test"  # restored


def test_input_that_does_not_match_the_schema_is_a_case_error(waits: Path) -> None:
    write(waits, "waits.test.yaml", "cases:\n  - name: bad\n    input: {id: 7}\n")
    out = hopflow("test", str(waits), "--no-coverage")
    assert out.exit_code == 1
    assert (
        "error: the input does not match the workflow's input schema: /id: 7 is not of type 'string'"
        in out.output
    )
    assert "1 error" in out.output


# ----------------------------------------------------------------------------------- the report


def test_a_wrong_expectation_prints_an_actionable_diff(waits: Path) -> None:
    write(
        waits,
        "waits.test.yaml",
        """
        cases:
          - name: wrong
            input: {id: a}
            mocks: {first: {result: {}}, ship: {result: {ok: true}}}
            events: [{name: approved, key: a, data: {by: ann}, at: 1d}]
            expect:
              status: failed
              output: {shipped: false}
              path: [first, approval, ship, expired, done]
              vars: {x: 1}
              calls:
                ship: 2
        """,
    )
    out = hopflow("test", str(waits), "--no-coverage")
    assert out.exit_code == 1
    file = str(waits / "waits.test.yaml")
    text = out.output
    assert f"{file}:7: status: expected failed, got succeeded" in text
    assert f"{file}:8: output differs\n" in text
    assert '    -  "shipped": false\n    +  "shipped": true\n' in text
    assert (
        f"{file}:9: path differs (- expected, did not run; + ran, not expected)\n"
        "      first\n    + nap\n      approval\n      ship\n    - expired\n      done\n"
    ) in text
    assert f"{file}:10: vars differ" in text
    assert f"{file}:12: calls.ship: expected 2 calls, got 1\n" in text
    assert '      call 1: {"attempt": 1, "with": {"by": "ann", "id": "a"}}' in text
    assert "1 failed, 0 passed" in text


def test_select_with_k_and_a_junit_report(waits: Path) -> None:
    write(
        waits,
        "waits.test.yaml",
        """
        cases:
          - name: refund passes
            input: {id: a}
            mocks: {first: {error: action.Broken}}
            expect: {status: failed}
          - name: refund fails
            input: {id: a}
            mocks: {first: {error: action.Broken}}
            expect: {status: succeeded}
          - name: other
            input: {id: a}
            mocks: {first: {error: action.Broken}}
        """,
    )
    runner = CliRunner()
    out = runner.invoke(cli, ["test", str(waits), "-k", "refund and not other", "--format", "junit"])
    assert out.exit_code == 1
    root = ET.fromstring(out.stdout)
    assert root.get("tests") == "2" and root.get("failures") == "1"
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert set(cases) == {"refund passes", "refund fails"}
    failure = cases["refund fails"].find("failure")
    assert failure is not None and "status: expected succeeded, got failed" in (failure.text or "")
    assert "1 deselected" in out.stderr
    assert hopflow("test", str(waits), "-k", "(refund").exit_code == 2
    assert hopflow("test", str(waits), "-k", "nothing-matches").exit_code == 0


def test_parallel_workers_give_the_same_results(waits: Path) -> None:
    write(
        waits,
        "waits.test.yaml",
        """
        cases:
          - {name: one, input: {id: a}, mocks: {first: {error: action.Broken}}, expect: {status: failed}}
          - {name: two, input: {id: b}, mocks: {first: {result: {}}}, expect: {status: failed}}
          - {name: three, input: {id: c}, mocks: {first: {result: {}}}, expect: {status: succeeded}}
        """,
    )
    serial = run_session([waits])
    parallel = run_session([waits], jobs=2)
    assert [(r.name, r.outcome) for r in serial.results] == [(r.name, r.outcome) for r in parallel.results]
    assert [r.outcome for r in parallel.results] == ["passed", "passed", "failed"]


# ------------------------------------------------------------------------------------- coverage


def test_coverage_table_annotated_listing_and_min_coverage(waits: Path) -> None:
    write(
        waits,
        "waits.test.yaml",
        """
        cases:
          - name: happy
            input: {id: a}
            mocks: {first: {result: {}}, ship: {result: {ok: true}}}
            events: [{name: approved, key: a, data: {by: ann}, at: 1d}]
        """,
    )
    out = hopflow("test", str(waits), "--annotate", "--min-coverage", "80")
    assert out.exit_code == 1
    assert "path coverage 55.6% is below --min-coverage 80%" in out.output
    row = next(line for line in out.output.splitlines() if line.startswith("waits "))
    assert row.split() == ["waits", "5/6", "-", "-", "0/1", "0/1", "0/1", "-", "55.6%"]
    never = [line.strip() for line in out.output.splitlines() if line.strip().startswith("never:")]
    wf = waits / "waits.yaml"
    assert never == [
        f"never: {wf}:10: approval timed out waiting",
        f"never: {wf}:12: catch of approval: timeout → expired",
        f"never: {wf}:17: retries of ship exhausted",
        f"never: {wf}:20: step expired",
    ]
    listing = out.output[out.output.index(f"{wf}  (55.6% of 9 paths)") :].splitlines()
    assert listing[9:13] == [
        " 9 >   - id: approval",
        '10 !     wait: {event: approved, key: "{{ input.id }}", timeout: 3d}'
        "   # never: approval timed out waiting",
        "11       catch:",
        "12 !       - errors: [timeout]   # never: catch of approval: timeout → expired",
    ]
    assert listing[20] == "20 !   - id: expired   # never: step expired"
    assert hopflow("test", str(waits), "--min-coverage", "50").exit_code == 0


# ----------------------------------------------------------------------------------- validation


def test_validate_checks_test_files_with_positions(waits: Path) -> None:
    path = write(
        waits,
        "waits.test.yaml",
        """
        cases:
          - name: one
            mocks:
              frist: {result: 1}
              nap: {result: 1}
              first: {status: 200}
              ship: {per_item: [{result: 1}]}
            events: [{name: e, at: 1d, after: nap}]
            expect:
              path: [first, shipp]
              compensated: [first]
              staus: failed
          - name: one
        """,
    )
    found = [(d.rule, d.position.line, d.position.column, d.message) for d in validate_path(path).diagnostics]
    assert found == [
        ("test-reference", 4, 7, "workflow 'waits' has no step 'frist'; did you mean 'first'?"),
        (
            "test-mock",
            5,
            7,
            "step 'nap' is a wait step: only http and action steps (and compensations) make calls "
            "that can be mocked",
        ),
        (
            "test-mock",
            6,
            15,
            "step 'first' is an action: mock it with 'result' (its return value) or 'error', "
            "not an http status",
        ),
        (
            "test-mock",
            7,
            14,
            "step 'ship' is not inside a foreach, so it has no items: use 'sequence' (one answer per call)",
        ),
        ("test-case", 8, 32, "an event arrives either at a time ('at') or after a step ('after'), not both"),
        ("test-reference", 10, 21, "workflow 'waits' has no step 'shipp'; did you mean 'ship'?"),
        ("test-reference", 11, 21, "step 'first' has no compensation, so it can never be compensated"),
        ("unknown-key", 12, 7, "unknown key 'staus' in the expectations of case 1; did you mean 'status'?"),
        (
            "test-case",
            13,
            11,
            "case name 'one' is already used by case 1: names select cases (-k) and name them in reports, "
            "so they must be unique",
        ),
    ]
    out = hopflow("validate", str(waits))
    assert out.exit_code == 1 and "9 errors" in out.output
    tested = hopflow("test", str(waits))
    assert tested.exit_code == 1 and "1 test file with errors" in tested.output


def test_a_test_file_without_its_workflow_and_usage_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "lonely.test.yaml", "cases:\n  - name: x\n")
    (d,) = validate_path(path).diagnostics
    assert (d.rule, d.position.line) == ("test-workflow", 1)
    assert "no workflow file" in d.message and "lonely.yaml" in d.message
    assert hopflow("test", str(tmp_path / "missing")).exit_code == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    out = hopflow("test", str(empty))
    assert out.exit_code == 2 and "no test files" in out.output


def test_workflow_loaders_skip_test_files(waits: Path) -> None:
    from engine.catalog import Catalog

    write(waits, "waits.test.yaml", "cases:\n  - name: x\n")
    assert Catalog.from_directory(waits).names() == ["waits"]


# -------------------------------------------------------------------------------- hopflow init


def test_init_scaffolds_a_workflow_that_validates_and_passes_its_tests(tmp_path: Path) -> None:
    target = tmp_path / "flows"
    out = hopflow("init", "refund-order", "--dir", str(target))
    assert out.exit_code == 0, out.output
    names = sorted(p.name for p in target.iterdir())
    assert names == [
        "refund-order.input.json",
        "refund-order.test.yaml",
        "refund-order.yaml",
        "refund_order_actions.py",
    ]
    assert hopflow("validate", str(target)).exit_code == 0
    tested = hopflow("test", str(target), "--min-coverage", "100")
    assert tested.exit_code == 0, tested.output
    assert "3 passed" in tested.output
    again = hopflow("init", "refund-order", "--dir", str(target))
    assert again.exit_code == 2 and "already exist" in again.output
    assert hopflow("init", "Refund", "--dir", str(target)).exit_code == 2


def test_the_scaffold_runs_with_its_actions_module(tmp_path: Path) -> None:
    """The actions module is real: `hopflow test` with allow_real runs its actions."""
    hopflow("init", "scaffold", "--dir", str(tmp_path))
    write(
        tmp_path,
        "real.test.yaml",
        """
        workflow: scaffold.yaml
        actions: scaffold_actions.py
        env: {SCAFFOLD_API: "https://notify.test"}
        cases:
          - name: real actions, mocked http
            allow_real: true
            input: {customer_id: c-1, amount_cents: 5}
            mocks: {notify: {status: 202}}
            expect:
              status: succeeded
              output: {reservation_id: "res-case-0:reserve"}
        """,
    )
    session = run_session([tmp_path / "real.test.yaml"])
    assert session.results[0].passed, session.results[0].mismatches


# ----------------------------------------------------------------------------------- the plugin


@pytest.mark.slow
def test_pytest_collects_test_files_and_reports_failures_with_diffs(waits: Path) -> None:
    write(
        waits,
        "waits.test.yaml",
        """
        cases:
          - name: passes
            input: {id: a}
            mocks: {first: {error: action.Broken}}
            expect: {status: failed}
          - name: fails
            input: {id: a}
            mocks: {first: {error: action.Broken}}
            expect: {status: failed, path: [first, nap]}
        """,
    )
    proc = subprocess.run(
        [str(BIN / "pytest"), "-p", "no:xdist", "-p", "no:cacheprovider", "-q", str(waits)],
        cwd=waits,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 failed, 1 passed" in proc.stdout
    assert "path differs (- expected, did not run; + ran, not expected)" in proc.stdout
    assert "    - nap" in proc.stdout
    off = subprocess.run(
        [
            str(BIN / "pytest"),
            "-p",
            "no:hopflow",
            "-p",
            "no:xdist",
            "-p",
            "no:cacheprovider",
            "-q",
            str(waits),
        ],
        cwd=waits,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert off.returncode == 5  # nothing collected


def test_a_fan_out_timeout_is_a_path_of_its_own(tmp_path: Path) -> None:
    write(
        tmp_path,
        "race.yaml",
        """
        name: race
        steps:
          - id: race
            timeout: 2s
            catch: [{errors: [timeout], goto: late}]
            parallel:
              branches:
                - steps:
                    - {id: quick, action: shop.quick}
                - steps:
                    - {id: slow, wait: {for: 8s}}
          - id: done
            succeed: {output: on time}
          - id: late
            succeed: {output: "late: {{ error.name }}"}
        """,
    )
    write(
        tmp_path,
        "race.test.yaml",
        """
        cases:
          - name: the slow branch misses the deadline
            mocks: {quick: {result: 1}}
            expect: {status: succeeded, output: "late: timeout", path: [quick, race, late]}
        """,
    )
    session = run_session([tmp_path])
    assert session.results[0].passed, session.results[0].mismatches
    cov = session.coverage["race"]
    assert {(i.kind, i.step) for i in cov.missed()} == {("step", "done")}
    assert ("timeout", "race", "") in cov.hit and ("catch", "race", "timeout → late") in cov.hit


def test_a_compensate_list_is_answered_by_a_sequence(tmp_path: Path) -> None:
    write(
        tmp_path,
        "undo.yaml",
        """
        name: undo
        env: [API]
        steps:
          - id: book
            action: shop.book
            compensate:
              - action: shop.unbook
                with: {id: "{{ steps.book.output.id }}"}
              - http: {method: DELETE, url: "{{ env.API }}/holds/{{ steps.book.output.id }}"}
          - id: pay
            action: shop.pay
        """,
    )
    write(
        tmp_path,
        "undo.test.yaml",
        """
        env: {API: "https://api.test"}
        cases:
          - name: both bodies run in order
            mocks:
              book:
                result: {id: b-1}
                compensate:
                  sequence: [{result: {unbooked: true}}, {status: 204}]
              pay: {error: action.Declined}
            expect:
              status: compensated
              compensated: [book]
              calls:
                book:
                  compensate:
                    - {with: {id: b-1}}
                    - {request: {method: DELETE, url: "https://api.test/holds/b-1"}}
        """,
    )
    assert validate_path(tmp_path / "undo.test.yaml").diagnostics == ()
    session = run_session([tmp_path])
    assert session.results[0].passed, session.results[0].mismatches


def test_retry_lists_and_raising_catches_are_paths_too(tmp_path: Path) -> None:
    write(
        tmp_path,
        "policies.yaml",
        """
        name: policies
        env: [API]
        steps:
          - id: call
            http: {url: "{{ env.API }}/x"}
            retry:
              - {on: [http.429], max_attempts: 4, interval: 1s}
              - {on: [timeout], max_attempts: 2, interval: 1s}
            catch:
              - errors: [http.429]
                raise: {name: RateLimited}
        """,
    )
    write(
        tmp_path,
        "policies.test.yaml",
        """
        env: {API: "https://api.test"}
        cases:
          - name: rate limited four times, then renamed
            mocks: {call: {status: 429}}
            expect: {status: failed, error: RateLimited, calls: {call: 4}}
          - name: timed out twice
            mocks: {call: {error: timeout}}
            expect: {status: failed, error: timeout, calls: {call: 2}}
        """,
    )
    session = run_session([tmp_path])
    assert [r.outcome for r in session.results] == ["passed", "passed"], [
        r.mismatches for r in session.results
    ]
    cov = session.coverage["policies"]
    assert cov.missed() == []
    assert sorted(i.label() for i in cov.items if i.kind != "step") == [
        "catch of call: http.429 \u2192 raise RateLimited",
        "retries of call exhausted (policy 1 (http.429))",
        "retries of call exhausted (policy 2 (timeout))",
    ]
