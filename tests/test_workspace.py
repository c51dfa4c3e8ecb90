"""Folder-level rules: unique workflow names, and child workflows that exist beside their caller."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from dsl.validate import cross_file, validate_paths

PARENT = """\
name: parent
steps:
  - id: child
    workflow: {name: CHILD, input: {}}
    compensate:
      workflow: {name: undo, input: {}}
  - id: fan
    parallel:
      branches:
        - steps:
            - id: nested
              workflow: {name: CHILD, input: {}}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def leaf(name: str) -> str:
    return f"name: {name}\nsteps:\n  - id: a\n    set: {{x: 1}}\n"


def found(paths: list[Path]) -> list[tuple[str, str, int, int]]:
    extra = cross_file(validate_paths(paths))
    return sorted(
        (d.rule, Path(d.position.file).name, d.position.line, d.position.column)
        for r in extra
        for d in r.diagnostics
    )


def test_a_child_that_exists_beside_the_caller_is_fine(tmp_path: Path) -> None:
    write(tmp_path, "parent.yaml", PARENT.replace("CHILD", "child"))
    write(tmp_path, "child.yaml", leaf("child"))
    write(tmp_path, "undo.yaml", leaf("undo"))
    assert found([tmp_path]) == []
    # validating only the caller still sees its siblings
    assert found([tmp_path / "parent.yaml"]) == []


def test_unknown_children_are_reported_at_their_name_with_a_suggestion(tmp_path: Path) -> None:
    write(tmp_path, "parent.yaml", PARENT.replace("CHILD", "chilt"))
    write(tmp_path, "child.yaml", leaf("child"))
    extra = cross_file(validate_paths([tmp_path / "parent.yaml"]))
    diagnostics = [d for r in extra for d in r.diagnostics]
    assert [(d.rule, d.position.line, d.position.column) for d in diagnostics] == [
        ("unknown-workflow", 4, 22),
        ("unknown-workflow", 6, 24),
        ("unknown-workflow", 12, 32),  # nested in a parallel branch
    ]
    assert "did you mean 'child'?" in diagnostics[0].message
    assert all(d.severity == "error" for d in diagnostics)


def test_a_child_in_another_folder_does_not_count(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write(tmp_path / "a", "parent.yaml", PARENT.replace("CHILD", "child").replace("undo", "child"))
    write(tmp_path / "b", "child.yaml", leaf("child"))
    assert found([tmp_path]) == [
        ("unknown-workflow", "parent.yaml", 4, 22),
        ("unknown-workflow", "parent.yaml", 6, 24),
        ("unknown-workflow", "parent.yaml", 12, 32),
    ]


def test_duplicate_names_in_one_folder(tmp_path: Path) -> None:
    write(tmp_path, "one.yaml", leaf("same"))
    write(tmp_path, "two.yaml", leaf("same"))
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "three.yaml", leaf("same"))  # another folder: allowed
    assert found([tmp_path]) == [("duplicate-workflow-name", "two.yaml", 1, 7)]


def test_broken_files_do_not_crash_the_folder_checks(tmp_path: Path) -> None:
    write(tmp_path, "parent.yaml", PARENT.replace("CHILD", "child"))
    write(tmp_path, "child.yaml", "name: child\nsteps: [\n")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00")
    write(tmp_path, "list.yaml", "- just\n- a list\n")
    assert ("unknown-workflow", "parent.yaml", 4, 22) in found([tmp_path])


def test_cli_reports_folder_problems_and_exits_1(tmp_path: Path) -> None:
    write(tmp_path, "parent.yaml", PARENT.replace("CHILD", "nope").replace("undo", "nope"))
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "validate", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert f"{tmp_path / 'parent.yaml'}:4:22: error: no workflow named 'nope'" in proc.stdout
    assert "[unknown-workflow]" in proc.stdout
    assert "3 errors, 0 warnings in 1 file" in proc.stderr
