"""Workflows by name → compiled graphs.

Files are validated with the full ``dsl`` pipeline (schema, compile, every check) when the catalog is
built, so a server never starts with a workflow that ``hopflow validate`` would reject. Given a
:class:`~dsl.cache.GraphCache`, a file whose exact bytes were already compiled by this hopflow is read
from the cache instead (no YAML, no JSON Schema: a cold start's first ``start`` call stays cheap).
Running executions do not read the catalog: they pin the graph hash they started with (in Redis).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsl.graph import Graph
from engine.errors import UnknownWorkflow

if TYPE_CHECKING:  # pragma: no cover - typing only
    from dsl.cache import GraphCache
    from dsl.diagnostics import Diagnostic


class CatalogError(Exception):
    """Some workflow files are invalid (``diagnostics``) or two files share a name."""

    def __init__(self, message: str, diagnostics: list[Diagnostic] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.diagnostics = diagnostics or []


class Catalog:
    def __init__(self, graphs: Mapping[str, Graph] | None = None) -> None:
        self._graphs: dict[str, Graph] = {}
        self._sources: dict[str, str] = {}
        for graph in (graphs or {}).values():
            self.add(graph)

    @classmethod
    def from_directory(
        cls, path: str | Path, *, time_budget_ms: int = 7500, cache: GraphCache | None = None
    ) -> Catalog:
        """Every ``*.yaml``/``*.yml`` below ``path`` (hidden folders skipped)."""
        from dsl.files import workflow_files

        folder = Path(path)
        if not folder.is_dir():
            raise CatalogError(f"{path}: not a folder")
        return cls.from_files(workflow_files(folder), time_budget_ms=time_budget_ms, cache=cache)

    @classmethod
    def from_files(
        cls, paths: Iterable[str | Path], *, time_budget_ms: int = 7500, cache: GraphCache | None = None
    ) -> Catalog:
        catalog = cls()
        problems: list[Diagnostic] = []
        for path in paths:
            graph, errors = compile_file(path, time_budget_ms=time_budget_ms, cache=cache)
            if graph is None:
                problems.extend(errors)
                continue
            catalog.add(graph, source=str(path))
        if problems:
            first = problems[0]
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            where = f"{first.position.file}:{first.position.line}:{first.position.column}"
            raise CatalogError(f"{where}: {first.message}{more}", problems)
        return catalog

    @classmethod
    def from_texts(cls, texts: Iterable[str], *, time_budget_ms: int = 7500) -> Catalog:
        """Workflows given as YAML text (tests, embedding)."""
        from dsl.validate import validate_text

        catalog = cls()
        for i, text in enumerate(texts):
            result = validate_text(text, f"<workflow {i}>", time_budget_ms=time_budget_ms)
            if not result.ok or result.graph is None:
                first = result.errors[0]
                raise CatalogError(
                    f"line {first.position.line}: {first.message} [{first.rule}]", result.errors
                )
            catalog.add(result.graph)
        return catalog

    def add(self, graph: Graph, *, source: str | None = None) -> None:
        if not graph.hash:
            graph = graph.with_hash()
        existing = self._sources.get(graph.name)
        if graph.name in self._graphs and existing != source:
            raise CatalogError(f"two workflows are named {graph.name!r}: {existing} and {source}")
        self._graphs[graph.name] = graph
        self._sources[graph.name] = source or ""

    def replace(self, graph: Graph) -> None:
        """Swap in a new version of a workflow (a deploy); running executions keep their pinned graph."""
        self._graphs[graph.name] = graph if graph.hash else graph.with_hash()

    def get(self, name: str) -> Graph:
        try:
            return self._graphs[name]
        except KeyError:
            raise UnknownWorkflow(name, self.names()) from None

    def names(self) -> list[str]:
        return sorted(self._graphs)

    def triggered_by(self, event: str) -> list[tuple[Graph, Mapping[str, Any]]]:
        """The workflows a `triggers` entry of which names ``event``, with that entry (one workflow
        may list the same event twice, e.g. with two keys: both entries are returned, in order)."""
        return [
            (graph, trigger)
            for name in sorted(self._graphs)
            for graph in (self._graphs[name],)
            for trigger in graph.triggers
            if trigger.get("event") == event
        ]

    def source(self, name: str) -> str | None:
        """The file a workflow was compiled from (None when it was given as text)."""
        return self._sources.get(name) or None

    def __contains__(self, name: object) -> bool:
        return name in self._graphs


def compile_file(
    path: str | Path, *, time_budget_ms: int = 7500, cache: GraphCache | None = None
) -> tuple[Graph | None, list[Diagnostic]]:
    """One workflow file → its graph (hashed), or None and its errors.

    With ``cache``: the file's bytes are read once, looked up by content hash, and only compiled (then
    cached) on a miss — the very bytes that were hashed, so a file changing in between cannot be
    cached under the other version's key.
    """
    if cache is not None:
        from dsl.files import read_regular

        try:
            data = read_regular(Path(path))
        except OSError:
            data = None  # validate_path reports it as a diagnostic
        if data is not None:
            key = cache.key(data, time_budget_ms)
            graph = cache.get(key)
            if graph is not None:
                return graph, []
            from dsl.validate import validate_bytes

            result = validate_bytes(data, str(path), time_budget_ms=time_budget_ms)
            if not result.ok or result.graph is None:
                return None, list(result.errors)
            graph = result.graph if result.graph.hash else result.graph.with_hash()
            cache.put(key, graph)
            return graph, []
    from dsl.validate import validate_path

    result = validate_path(path, time_budget_ms=time_budget_ms)
    if not result.ok or result.graph is None:
        return None, list(result.errors)
    return result.graph, []
