"""The repository is the language's reference: the schema, docs/language.md and docs/rules.md are
checked against each other (and against the validator), never against anything outside the repo."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from dsl.checks.names import ALWAYS, ATTRIBUTES, GLOBALS
from dsl.graph import KINDS
from dsl.schema import load_schema
from dsl.validate import rules, validate_text

ROOT = Path(__file__).resolve().parent.parent
LANGUAGE = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
RULES_DOC = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
SCHEMA = load_schema()
DEFS = SCHEMA["$defs"]


def _section(doc: str, heading: str) -> str:
    """The text under a heading (up to the next heading of any level)."""
    match = re.search(rf"^#+ {re.escape(heading)}.*?$(.*?)(?=^#+ |\Z)", doc, re.MULTILINE | re.DOTALL)
    assert match is not None, f"no section {heading!r}"
    return match.group(1)


def _table_keys(section: str) -> set[str]:
    """The keys in the first column of the tables of a section (`| `key` | …`)."""
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, re.MULTILINE))


def _backticked(doc: str) -> str:
    """The inline code of a document (code blocks left out, so their fences do not pair up)."""
    prose = re.sub(r"```.*?```", " ", doc, flags=re.DOTALL)
    return " ".join(re.findall(r"`([^`\n]+)`", prose))


@pytest.mark.parametrize(
    ("heading", "keys"),
    [
        ("Top level", set(SCHEMA["properties"])),
        ("`http`", set(DEFS["http"]["properties"])),
        ("`foreach`", set(DEFS["foreach"]["properties"])),
        ("`retry`", set(DEFS["retry"]["properties"])),
        ("Common keys", set(DEFS["step"]["properties"]) - {"id", "with", *KINDS}),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_key_tables_match_the_schema_exactly(heading: str, keys: set[str]) -> None:
    documented = _table_keys(_section(LANGUAGE, heading))
    assert documented == keys, (
        f"in language.md, section {heading}: undocumented {sorted(keys - documented)}, "
        f"documented but not in the schema {sorted(documented - keys)}"
    )


def _schema_keys() -> set[str]:
    found: set[str] = set(SCHEMA["properties"])
    for definition in DEFS.values():
        found.update(definition.get("properties", {}))
    return found


def test_every_key_the_schema_accepts_is_documented_in_language_md() -> None:
    text = _backticked(LANGUAGE)
    missing = sorted(k for k in _schema_keys() if not re.search(rf"(?<![\w.-]){re.escape(k)}\b", text))
    assert not missing, f"schema keys not documented in docs/language.md: {missing}"


def test_every_step_kind_has_its_own_section() -> None:
    headings = re.findall(r"^### `([a-z]+)`", LANGUAGE, re.MULTILINE)
    assert set(KINDS) <= set(headings) | {"fail"}  # `succeed` and `fail` share one section
    assert "### `succeed` and `fail`" in LANGUAGE


def test_rule_names_in_language_md_exist_in_the_validator() -> None:
    known = set(rules())
    mentioned = set(re.findall(r"`([a-z]+(?:-[a-z]+)+)`", LANGUAGE))
    # only the words that look like a rule name and are written as one in rules.md headings
    headings = set(re.findall(r"^### `([a-z0-9-]+)`", RULES_DOC, re.MULTILINE))
    assert headings == known  # (also in test_rules_document; repeated here as the premise)
    rule_like = {m for m in mentioned if m in headings or m.endswith(("-key", "-step", "-rule"))}
    assert rule_like <= known, sorted(rule_like - known)


def test_every_template_name_is_documented_in_the_scopes_table() -> None:
    table = _section(LANGUAGE, "Template scopes")
    for name in (*ALWAYS, *GLOBALS, "result", "error", "index"):
        assert f"`{name}`" in table, name
    for root, attributes in ATTRIBUTES.items():
        for attribute in attributes:
            assert f"`{root}.{attribute}`" in table, (root, attribute)


def _workflow_examples(doc: str) -> list[str]:
    blocks = re.findall(r"```yaml\n(.*?)```", doc, re.DOTALL)
    return [b for b in blocks if re.search(r"^name:", b, re.M) and re.search(r"^steps:", b, re.M)]


def test_complete_workflow_examples_in_language_md_are_valid() -> None:
    examples = _workflow_examples(LANGUAGE)
    assert examples
    for example in examples:
        result = validate_text(example, "language.md")
        assert result.errors == [] and result.warnings == [], (example, result.diagnostics)


def test_the_examples_table_lists_exactly_the_shipped_workflows() -> None:
    table = _section(LANGUAGE, "Example workflows")
    listed = set(re.findall(r"^\| `([a-z0-9-]+\.yaml)` \|", table, re.MULTILINE))
    shipped = {p.name for p in (ROOT / "workflows").glob("*.yaml") if not p.name.endswith(".test.yaml")}
    assert listed == shipped


def test_nothing_in_the_repository_points_outside_it() -> None:
    try:
        tracked = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (an unpacked sdist): nothing to list")
    outside = "/work/" + "shared"  # spelled in two parts so this file does not match itself
    # a contract document named in capitals (like README.md) must be a file of the repository
    ours = {Path(name).name for name in tracked}
    offenders = []
    for name in tracked:
        path = ROOT / name
        if path.suffix not in (".py", ".md", ".yaml", ".yml", ".json", ".toml", ".txt") or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if outside in text:
            offenders.append((name, outside))
        for document in set(re.findall(r"\b([A-Z][A-Z_]+\.md)\b", text)) - ours:
            offenders.append((name, document))
    assert offenders == []


def test_the_language_server_explains_the_documented_template_names() -> None:
    from engine.lsp.analysis import SCOPES

    table = _section(LANGUAGE, "Template scopes")
    for name in SCOPES:  # "item" stands for the foreach's `as` name, default `item`
        assert f"`{name}`" in table or (name == "item" and "default `item`" in table), name
    for name in (*ALWAYS, *GLOBALS, "result", "error", "index"):
        assert name in SCOPES, name
