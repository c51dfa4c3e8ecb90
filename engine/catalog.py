"""Workflows by name → compiled graphs.

Files are validated with the full ``dsl`` pipeline (schema, compile, every check) when the catalog is
built, so a server never starts with a workflow that ``hopflow validate`` would reject. Running
executions do not read the catalog: they pin the graph hash they started with (stored in Redis).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsl.graph import Graph
from engine.errors import UnknownWorkflow

if TYPE_CHECKING:  # pragma: no cover - typing only
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
    def from_directory(cls, path: str | Path, *, time_budget_ms: int = 7500) -> Catalog:
        """Every ``*.yaml``/``*.yml`` below ``path`` (hidden folders skipped)."""
        from dsl.validate import workflow_files

        folder = Path(path)
        if not folder.is_dir():
            raise CatalogError(f"{path}: not a folder")
        return cls.from_files(workflow_files(folder), time_budget_ms=time_budget_ms)

    @classmethod
    def from_files(cls, paths: Iterable[str | Path], *, time_budget_ms: int = 7500) -> Catalog:
        from dsl.validate import validate_path

        catalog = cls()
        problems: list[Diagnostic] = []
        for path in paths:
            result = validate_path(path, time_budget_ms=time_budget_ms)
            if not result.ok or result.graph is None:
                problems.extend(result.errors)
                continue
            catalog.add(result.graph, source=str(path))
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
