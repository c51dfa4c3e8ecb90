"""docs/editors.md and .pre-commit-hooks.yaml: every YAML example is real (the workflow validates,
the hooks exist, every `hopflow` command line parses with the real command's options)."""

from __future__ import annotations

import importlib
import json
import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from dsl.validate import validate_text
from engine.cli import COMMANDS
from engine.commands.schema import schema, schema_url

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "editors.md").read_text(encoding="utf-8")
HOOKS = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC, re.DOTALL)


def _yaml_blocks() -> list[Any]:
    return [yaml.safe_load(block) for block in _blocks("yaml")]


def _command(name: str) -> click.Command | None:
    target = COMMANDS.get(name)
    if target is None:
        return None
    module, attribute = target.split(":")
    try:
        return getattr(importlib.import_module(module), attribute)
    except ModuleNotFoundError:
        return None


def _parses(line: str) -> None:
    """``hopflow SUB ARGS…`` (up to a shell operator) parses with SUB's real options."""
    words = shlex.split(line)
    assert words[0] == "hopflow", line
    cut = next((i for i, w in enumerate(words) if w in (">", "|", "||", "&&", ";")), len(words))
    command = _command(words[1])
    if command is None:
        assert words[1] in ("test",), f"unknown command in docs/editors.md: {line}"
        pytest.skip(f"`hopflow {words[1]}` is not part of this checkout")  # built by the testing work
    command.make_context(f"hopflow {words[1]}", list(words[2:cut]), resilient_parsing=False)


def test_every_yaml_example_parses_and_the_workflow_validates() -> None:
    blocks = _yaml_blocks()
    assert len(blocks) >= 3
    workflows = [b for b in blocks if isinstance(b, dict) and "steps" in b and "name" in b]
    assert workflows
    for block in _blocks("yaml"):
        data = yaml.safe_load(block)
        if isinstance(data, dict) and "steps" in data and "name" in data:
            result = validate_text(block, "editors.md")
            assert result.diagnostics == (), result.diagnostics


def test_the_published_url_is_the_one_the_command_prints() -> None:
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert version is not None
    url = schema_url(version.group(1))
    assert url in DOC
    assert "v<VERSION>" in DOC and url.replace(f"v{version.group(1)}", "v<VERSION>") in DOC
    settings = json.loads(_blocks("json")[0])
    assert settings["yaml.schemas"] == {url: "workflows/*.yaml"}


def test_hopflow_schema_prints_the_shipped_schema_and_its_path() -> None:
    runner = CliRunner()
    printed = runner.invoke(schema, [])
    assert printed.exit_code == 0
    assert json.loads(printed.stdout) == json.loads((ROOT / "schemas" / "workflow.schema.json").read_text())
    path = runner.invoke(schema, ["--path"])
    assert Path(path.stdout.strip()) == (ROOT / "schemas" / "workflow.schema.json").resolve()
    both = runner.invoke(schema, ["--path", "--url"])
    assert both.exit_code == 2 and "not both" in both.output


def test_the_pre_commit_hooks_run_real_commands() -> None:
    assert [h["id"] for h in HOOKS] == ["hopflow-validate", "hopflow-test"]
    for hook in HOOKS:
        assert hook["language"] == "python" and hook["entry"].startswith("hopflow ")
        assert re.search(hook["files"], "workflows/x.yaml") and not re.search(hook["files"], "x.py")
    assert HOOKS[0]["entry"] == "hopflow validate" and _command("validate") is not None
    assert HOOKS[1]["entry"] == "hopflow test" and HOOKS[1]["pass_filenames"] is False


def test_the_pre_commit_example_uses_the_shipped_hook_ids() -> None:
    (config,) = [b for b in _yaml_blocks() if isinstance(b, dict) and "repos" in b]
    used = {hook["id"] for repo in config["repos"] for hook in repo["hooks"]}
    assert used == {h["id"] for h in HOOKS}


def _actions_workflow() -> dict[Any, Any]:
    (workflow,) = [b for b in _yaml_blocks() if isinstance(b, dict) and "jobs" in b]
    return workflow


def test_the_actions_workflow_annotates_and_uploads_sarif() -> None:
    workflow = _actions_workflow()
    steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
    runs = [s["run"] for s in steps if "run" in s]
    assert any("--format github" in r for r in runs)
    (sarif,) = [r for r in runs if "--format sarif" in r]
    written = re.search(r">\s*(\S+)", sarif)
    assert written is not None
    (upload,) = [s for s in steps if str(s.get("uses", "")).startswith("github/codeql-action/upload-sarif")]
    assert upload["with"]["sarif_file"] == written.group(1)
    assert upload.get("if") == "always()"
    # the upload needs this permission (YAML 1.1 reads the `on:` key as True: look it up either way)
    assert workflow["permissions"]["security-events"] == "write"
    assert "push" in workflow.get("on", workflow.get(True, []))


@pytest.mark.parametrize(
    "line",
    [
        line
        for block in _blocks("yaml") + _blocks("sh")
        for line in re.findall(r"(?:run: |^)(hopflow [^\n#]*)", block, re.M)
    ],
)
def test_every_hopflow_command_line_in_the_doc_parses(line: str) -> None:
    _parses(line.strip())
