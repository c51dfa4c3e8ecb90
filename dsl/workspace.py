"""Checks across the files of one folder: workflow names are unique, and child workflows exist.

A folder is what ``hopflow serve --workflows DIR`` loads and where ``hopflow run FILE`` looks for child
workflows, so that is the scope here too: a ``workflow: {name}`` step must name a workflow defined in a
file of the caller's own folder. Files that were not given to the validator but sit in that folder
are read (their ``name`` only) so that validating one file still knows its siblings.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsl.diagnostics import Diagnostic, Position
from dsl.templates import is_template

if TYPE_CHECKING:
    from dsl.checks import StepRef

RULES: dict[str, str] = {
    "duplicate-workflow-name": "two workflow files in one folder declare the same `name`",
    "unknown-workflow": "a `workflow` step or compensation names a workflow no file in its folder defines",
}


@dataclass(frozen=True)
class Links:
    """What one file contributes to its folder: its name, and the child workflows it calls."""

    name: str | None
    name_position: Position | None
    calls: tuple[tuple[str, Position], ...]


def links_of(doc: Any, steps: Iterable[StepRef] | None = None) -> Links:
    """Read a loaded document defensively (it may be schema-invalid). ``steps``: the checks' walk
    of the document (:attr:`dsl.checks.CheckContext.steps`), when the caller already has it."""
    root = doc.value if isinstance(doc.value, Mapping) else {}
    name = root.get("name") if isinstance(root.get("name"), str) else None
    if steps is None:
        from dsl.checks import CheckContext

        steps = CheckContext(doc).steps
    calls: list[tuple[str, Position]] = []
    for step in steps:
        comp = step.body.get("compensate")
        comps = list(enumerate(comp)) if isinstance(comp, list) else [(None, comp)]
        places = [((*step.path, "workflow"), step.body.get("workflow"))]
        for i, body in comps:
            where = (*step.path, "compensate") if i is None else (*step.path, "compensate", i)
            places.append(((*where, "workflow"), _get(body, "workflow")))
        for where, body in places:
            child = _get(body, "name")
            if isinstance(child, str) and not is_template(child):
                calls.append((child, doc.at((*where, "name"))))
    return Links(name, doc.at(("name",)) if name else None, tuple(calls))


def _get(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, Mapping) else None


def check(files: Sequence[tuple[str, Links | None]]) -> list[Diagnostic]:
    """Diagnostics for the validated ``(file, links)`` pairs, each placed in the file it concerns."""
    found: list[Diagnostic] = []
    by_folder: dict[Path, list[tuple[str, Links]]] = {}
    for file, links in files:
        if links is not None:
            by_folder.setdefault(Path(file).resolve().parent, []).append((file, links))

    for folder, members in by_folder.items():
        given = {Path(f).resolve() for f, _ in members}
        names: dict[str, str] = {}  # name → the file that defines it first
        for file, links in members:
            if links.name is None:
                continue
            first = names.setdefault(links.name, file)
            if first != file and links.name_position is not None:
                found.append(
                    Diagnostic(
                        "duplicate-workflow-name",
                        "error",
                        f"workflow name {links.name!r} is already defined in {first}: names must be "
                        "unique within a folder (executions and child workflows are started by name)",
                        links.name_position,
                    )
                )
        known = set(names) | set(_sibling_names(folder, given))
        for _file, links in members:
            for child, position in links.calls:
                if child in known:
                    continue
                hint = difflib.get_close_matches(child, sorted(known), n=1)
                suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
                found.append(
                    Diagnostic(
                        "unknown-workflow",
                        "error",
                        f"no workflow named {child!r} in {_display(folder)} (child workflows are looked "
                        f"up among the files of the caller's folder){suggestion}",
                        position,
                    )
                )
    return found


def _display(folder: Path) -> str:
    try:
        return str(folder.relative_to(Path.cwd())) or "."
    except ValueError:
        return str(folder)


def _sibling_names(folder: Path, skip: Iterable[Path]) -> list[str]:
    """The `name` of every other workflow file in ``folder`` (unreadable files are ignored here: they
    get their own diagnostics when validated)."""
    import yaml

    try:
        loader: Any = yaml.CSafeLoader
    except AttributeError:  # pragma: no cover - PyYAML without libyaml
        loader = yaml.SafeLoader
    skip = set(skip)
    names: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.suffix not in (".yaml", ".yml") or path.resolve() in skip or not path.is_file():
            continue
        try:
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if isinstance(data, Mapping) and isinstance(data.get("name"), str):
            names.append(data["name"])
    return names
