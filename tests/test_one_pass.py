"""Every problem in one pass: schema errors do not keep the flow rules from running on the rest of a
file, and what they had to skip is said (``checks-skipped`` infos), never guessed."""

from __future__ import annotations

import json
import textwrap

from click.testing import CliRunner

from dsl.validate import validate_text
from engine.commands.validate import validate


def run(text: str) -> list[tuple[str, str, int]]:
    result = validate_text(textwrap.dedent(text).lstrip("\n"), "t.yaml")
    return [(d.rule, d.severity, d.position.line) for d in result.diagnostics]


THREE_TYPOS_AND_A_LATE_READ = """
    name: rounds
    steps:
      - id: first
        action: demo.one
        with:
          x: "{{ steps.later.output }}"
        retry:
          max_atempts: 3
      - id: middle
        http:
          url: 42
      - id: later
        action: demo.two
        timeout: forever
      - id: maybe
        action: demo.three
        catch: [{errors: [any], goto: last}]
      - id: last
        action: demo.four
        with:
          y: "{{ steps.maybe.output }}"
          z: "{{ steps.nope.output }}"
        next: done
      - id: orphan
        action: demo.five
      - id: done
        succeed: {}
"""


def test_schema_errors_and_flow_problems_in_one_run() -> None:
    assert run(THREE_TYPOS_AND_A_LATE_READ) == [
        ("reference-never-before", "error", 6),
        ("unknown-key", "error", 8),
        ("schema", "error", 11),
        ("schema", "error", 14),
        ("reference-not-completed", "error", 21),
        ("reference-unknown-step", "error", 22),
        ("unreachable-step", "warning", 24),
    ]


def test_a_malformed_next_skips_its_list_and_says_so() -> None:
    text = """
        name: t
        steps:
          - id: a
            action: x.y
            with: {v: "{{ steps.b.output }}"}
            next: 42
          - id: b
            action: x.y
          - id: c
            action: x.y
    """
    # steps.b before b is not reported (a's real `next` may well be b: no guess), nor is anything
    # unreachable; the info says which rules skipped which list, at the step that is why
    assert run(text) == [("checks-skipped", "info", 3), ("schema", "error", 6)]
    message = validate_text(textwrap.dedent(text).lstrip("\n")).infos[0].message
    assert "'a'" in message and "`next`" in message and "top-level steps" in message
    assert "reference-never-before" in message and "unreachable-step" in message


def test_an_unreadable_branch_skips_only_that_branch() -> None:
    text = """
        name: t
        steps:
          - id: a
            action: x.y
            with: {v: "{{ steps.z.output }}"}
          - id: p
            parallel:
              branches:
                - steps:
                    - id: b1
                      action: x.y
                      with: {v: "{{ steps.b2.output }}"}
                    - id: b2
                      action: x.y
                      catch: oops
                - steps:
                    - id: c1
                      action: x.y
                      with: {v: "{{ steps.c2.output }}"}
                    - id: c2
                      action: x.y
          - id: z
            action: x.y
    """
    assert run(text) == [
        ("reference-never-before", "error", 5),  # top level: exact
        ("checks-skipped", "info", 13),  # branch 0: skipped (b1 reading b2 is not guessed at)
        ("schema", "error", 15),
        ("reference-never-before", "error", 19),  # branch 1: exact
    ]


def test_a_step_without_a_valid_id_is_left_out_without_false_positives() -> None:
    text = """
        name: t
        steps:
          - id: Bad Id
            action: x.y
            next: c
          - id: b
            action: x.y
          - id: c
            action: x.y
            with: {v: "{{ steps.b.output }}"}
    """
    found = run(text)
    assert ("schema", "error", 3) in found and ("checks-skipped", "info", 3) in found
    assert not [r for r in found if r[0] in ("reference-not-completed", "unreachable-step")]


def test_unreadable_structure_says_the_flow_rules_did_not_run() -> None:
    found = validate_text("name: t\nsteps: {a: 1}\n", "t.yaml")
    (info,) = found.infos
    assert info.rule == "checks-skipped" and "did not run" in info.message
    assert "'steps' is not a list" in info.message


def test_a_valid_file_has_no_infos() -> None:
    assert run("name: t\nsteps:\n  - id: a\n    action: x.y\n") == []


def test_infos_in_each_output_format_and_never_failing_strict(tmp_path) -> None:
    infos = tmp_path / "infos.yaml"
    infos.write_text("name: t\nsteps:\n  - id: a\n    action: x.y\n    next: 42\n")
    runner = CliRunner()  # click 8.2+: result.output is both streams, result.stdout only stdout
    out = runner.invoke(validate, [str(infos), "--format", "github"])
    assert "::notice file=" in out.output and "title=checks-skipped" in out.output
    sarif = json.loads(runner.invoke(validate, [str(infos), "--format", "sarif"]).stdout)
    levels = {r["ruleId"]: r["level"] for r in sarif["runs"][0]["results"]}
    assert levels["checks-skipped"] == "note" and levels["schema"] == "error"
    text = runner.invoke(validate, [str(infos)])
    assert "info:" in text.output and "see the info lines" in text.output
    # an info never fails --strict by itself: a file whose only findings were infos exits 0
    clean = tmp_path / "clean.yaml"
    clean.write_text("name: t\nsteps:\n  - id: a\n    action: x.y\n")
    assert runner.invoke(validate, [str(clean), "--strict"]).exit_code == 0
