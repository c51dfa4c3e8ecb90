"""docs/testing.md: every example file is validated and its cases run, and the failure report it
shows is what ``hopflow test`` prints for its broken example."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from dsl.validate import validate_path
from engine.cli import cli

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "testing.md"
BLOCK = re.compile(r"<!-- file: ([^,>]+?)(, fails)? -->\n```yaml\n(.*?)```", re.DOTALL)


def examples() -> list[tuple[str, bool, str]]:
    return [(m.group(1).strip(), bool(m.group(2)), m.group(3)) for m in BLOCK.finditer(DOC.read_text())]


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, _, text in examples():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_document_has_examples() -> None:
    names = [n for n, _, _ in examples()]
    assert "payment-hold.yaml" in names and "payment-hold.test.yaml" in names
    assert any(fails for _, fails, _ in examples())


def test_every_example_file_validates(folder: Path) -> None:
    for name, _, _ in examples():
        result = validate_path(folder / name)
        assert result.diagnostics == (), (name, result.diagnostics)


def test_the_examples_pass_at_full_coverage(folder: Path) -> None:
    passing = [n for n, fails, _ in examples() if n.endswith(".test.yaml") and not fails]
    out = CliRunner().invoke(cli, ["test", *passing, "--min-coverage", "100"])
    assert out.exit_code == 0, out.output
    shown = re.search(r"```text\n(payment-hold\.test\.yaml .*?)```", DOC.read_text(), re.DOTALL)
    assert shown is not None
    table = [line for line in shown.group(1).splitlines() if line.startswith(("payment-hold ", "TOTAL"))]
    for line in table:
        assert line in out.output


def test_the_failure_report_in_the_document_is_what_is_printed(folder: Path) -> None:
    failing = [n for n, fails, _ in examples() if fails]
    out = CliRunner().invoke(cli, ["test", *failing, "--no-coverage"])
    assert out.exit_code == 1
    shown = re.search(r"```text\n(broken/.*?)```", DOC.read_text(), re.DOTALL)
    assert shown is not None
    expected = [line for line in shown.group(1).splitlines() if not line.startswith(("=", "_"))]
    got = [line for line in out.output.splitlines() if not line.startswith(("=", "_"))]
    assert got == expected
