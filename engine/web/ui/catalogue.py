"""The workflow catalogue: ``GET /v1/workflows`` and ``GET /v1/workflows/{name}`` (scope ``read``).

Each workflow the server knows, with its compiled graph's hash, its Mermaid picture and its
validation state. The state comes from validating the workflow files again (every rule, warnings
included), so a server whose folder holds an invalid file — which refuses to start executions —
shows which file and why. Results are cached per file (path, size, modification time).

Contract: docs/http-api.md ("Workflow catalogue").
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsl.diagnostics import Diagnostic
from engine.web.auth import authorize
from engine.web.bodies import json_response
from engine.web.problems import Problem

if TYPE_CHECKING:  # pragma: no cover - typing only
    from starlette.requests import Request
    from starlette.responses import Response

    from dsl.graph import Graph
    from dsl.validate import Result
    from engine.web.core import HopflowApp

MAX_FILES = 500  # workflow files validated for one listing
MAX_DIAGNOSTICS = 50  # per workflow
MAX_EXAMPLE_BYTES = 64 * 1024  # an example input file read for the start form
_CACHE_SIZE = 1000
_cache: OrderedDict[tuple[str, int, int], Result] = OrderedDict()
_cache_lock = threading.Lock()


async def list_workflows(hop: HopflowApp, request: Request) -> Response:
    """``GET /v1/workflows`` → ``{"workflows": [{name, graph, steps, valid, diagnostics, file}]}``."""
    authorize(hop.config, request, scope="read")
    runtime = await hop.runtime_async()
    entries = await hop.call(catalogue, runtime.catalog)
    return json_response({"workflows": [_public(e) for e in entries]})


async def get_workflow(hop: HopflowApp, request: Request) -> Response:
    """``GET /v1/workflows/{name}`` → the summary plus ``mermaid`` and ``nodes``."""
    from dsl.render import drawn_id, to_mermaid

    authorize(hop.config, request, scope="read")
    name: str = request.path_params["name"]
    runtime = await hop.runtime_async()
    entries = await hop.call(catalogue, runtime.catalog)
    found = next((e for e in entries if e["name"] == name), None)
    if found is None:
        shown = name if len(name) <= 100 else name[:100] + "…"
        raise Problem("unknown-workflow", f"unknown workflow {shown!r}")
    graph: Graph | None = found["_graph"]
    doc = _public(found)
    doc["mermaid"] = to_mermaid(graph) if graph is not None else None
    doc["example_input"] = await hop.call(example_input, found["_path"])
    lines: dict[str, int] = found["_lines"]
    doc["nodes"] = (
        [
            {
                "id": node.id,
                "kind": node.kind,
                "line": lines.get(node.id),
                "drawn": drawn_id(node.id),
                "undo": drawn_id(node.id, "undo") if node.compensate is not None else None,
            }
            for node in graph.nodes.values()
        ]
        if graph is not None
        else []
    )
    return json_response(doc)


def catalogue(catalog: Any) -> list[dict[str, Any]]:
    """Every workflow: the catalog's graphs, and the state of each workflow file (cached).

    A catalog built from a folder that holds an invalid file cannot load at all; the folder's files
    are then listed one by one, the invalid ones with their diagnostics.
    """
    from engine.catalog import CatalogError

    graphs: dict[str, Graph] = {}
    try:
        for name in catalog.names():
            graphs[name] = catalog.get(name)
    except CatalogError:
        graphs = {}
    files = _files(catalog, graphs)[:MAX_FILES]
    results = [(path, _validated(path)) for path in files]
    directory = getattr(catalog, "directory", None)
    across = _across(results, directory)
    entries: list[dict[str, Any]] = []
    for path, result in results:
        graph = result.graph
        name = graph.name if graph is not None else _name_in(result) or path.stem
        diagnostics = sorted([*result.diagnostics, *across.get(result.file, [])], key=Diagnostic.sort_key)
        entries.append(
            {
                "name": name,
                "file": _shown(path, directory),
                "_graph": graphs.get(name, graph) if result.ok else None,
                "valid": not any(d.is_error for d in diagnostics),
                "diagnostics": [_diagnostic(d, directory) for d in diagnostics[:MAX_DIAGNOSTICS]],
                "_lines": _step_lines(result),
                "_path": path,
            }
        )
    named = {e["name"] for e in entries}
    for name, graph in graphs.items():
        if name not in named:
            entries.append(
                {
                    "name": name,
                    "file": None,
                    "_graph": graph,
                    "valid": True,
                    "diagnostics": [],
                    "_lines": {},
                    "_path": None,
                }
            )
    return sorted(entries, key=lambda e: (e["name"], e["file"] or ""))


def _across(results: list[tuple[Path, Result]], directory: Any) -> dict[str, list[Diagnostic]]:
    """The folder-wide checks ``hopflow validate DIR`` runs (unique names, child workflows that
    exist), by file."""
    from dsl.workspace import check

    found: dict[str, list[Diagnostic]] = {}
    if results:
        for d in check([(result.file, result.links) for _, result in results]):
            found.setdefault(d.position.file, []).append(d)
    return found


def _private(text: str, directory: Any) -> str:
    """A message without the server's folder: files relative to it, the folder by its role."""
    if not isinstance(directory, str | Path):
        return text
    absolute = str(Path(directory).resolve())
    text = text.replace(absolute + os.sep, "").replace(absolute, "the workflows folder")
    given = str(Path(directory))
    if given not in (".", os.sep):  # "workflows/a.yaml" → "a.yaml"; the word alone is left alone
        text = text.replace(" " + given + os.sep, " ")
    return text


def example_input(path: Path | None) -> Any:
    """The start payload kept next to a workflow file (``NAME.input.json``, as in ``workflows/``)."""
    if path is None:
        return None
    sample = path.with_name(path.name.rsplit(".", 1)[0] + ".input.json")
    try:
        if not sample.is_file() or sample.stat().st_size > MAX_EXAMPLE_BYTES:
            return None
        return json.loads(sample.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    graph = entry["_graph"]
    return {
        "name": entry["name"],
        "graph": graph.hash if graph is not None else None,
        "steps": len(graph.nodes) if graph is not None else None,
        "description": graph.description if graph is not None else None,
        "valid": entry["valid"],
        "diagnostics": entry["diagnostics"],
        "file": entry["file"],
    }


def _files(catalog: Any, graphs: dict[str, Graph]) -> list[Path]:
    """The workflow files behind ``catalog``: its folder's, else the files its graphs came from."""
    from dsl.validate import workflow_files

    directory = getattr(catalog, "directory", None)
    if isinstance(directory, str | Path) and Path(directory).is_dir():
        return workflow_files(directory)
    source = getattr(catalog, "source", None)
    if not callable(source):
        return []
    found = []
    for name in graphs:
        path = source(name)
        if path and Path(path).is_file():
            found.append(Path(path))
    return found


def _shown(path: Path, directory: Any) -> str:
    """The file's path relative to the workflows folder (the server's own layout stays private)."""
    if isinstance(directory, str | Path):
        try:
            return path.resolve().relative_to(Path(directory).resolve()).as_posix()
        except ValueError:
            pass
    return path.name


def _validated(path: Path) -> Result:
    from dsl.validate import validate_path

    try:
        st = os.stat(path)
        key = (str(path), st.st_size, st.st_mtime_ns)  # as given: a Result names its file so
    except OSError:
        return validate_path(path)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    result = validate_path(path)
    with _cache_lock:
        _cache[key] = result
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return result


def _name_in(result: Result) -> str | None:
    """The ``name:`` an invalid file gives itself, if it says one."""
    value = getattr(result.doc, "value", None) if result.doc is not None else None
    name = value.get("name") if isinstance(value, dict) else None
    return name if isinstance(name, str) and name else None


def _step_lines(result: Result) -> dict[str, int]:
    """Step id → the line of its ``id:`` in the file."""
    doc = result.doc
    if doc is None:
        return {}
    lines: dict[str, int] = {}
    for path, pos in doc.values.items():
        if path and path[-1] == "id" and "steps" in path:
            value: Any = doc.value
            try:
                for part in path:
                    value = value[part]
            except (KeyError, IndexError, TypeError):
                continue
            if isinstance(value, str):
                lines.setdefault(value, pos.line)
    return lines


def _diagnostic(d: Diagnostic, directory: Any) -> dict[str, Any]:
    return {
        "severity": d.severity,
        "rule": d.rule,
        "message": _private(d.message, directory),
        "line": d.position.line,
        "column": d.position.column,
    }
