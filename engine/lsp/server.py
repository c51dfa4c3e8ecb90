"""The pygls wiring: documents in, diagnostics/hovers/completions/definitions out (over stdio).

Diagnostics are exactly ``hopflow validate``'s, published on open, on every change and on save; the
folder-level rules (a child workflow that does not exist, two files with one name) read the other
workflow files of the document's folder from disk (open documents from the editor's buffer).
"""

from __future__ import annotations

import os
from pathlib import Path

from lsprotocol import types as t
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from dsl.diagnostics import Diagnostic
from dsl.workspace import Links
from engine.lsp.analysis import Analysis, Span
from engine.lsp.positions import UTF16, from_client, to_client

_SEVERITY = {
    "error": t.DiagnosticSeverity.Error,
    "warning": t.DiagnosticSeverity.Warning,
    "info": t.DiagnosticSeverity.Information,
}


class HopflowServer(LanguageServer):
    def __init__(self) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            own = version("hopflow")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            own = "0"
        super().__init__("hopflow", own, text_document_sync_kind=t.TextDocumentSyncKind.Incremental)
        self.analyses: dict[str, Analysis] = {}
        self._disk: dict[Path, tuple[tuple[int, int], Links | None]] = {}  # sibling → (stat, links)

    # -- helpers

    @property
    def encoding(self) -> str:
        encoding = self.workspace.position_encoding
        return str(encoding) if encoding else UTF16

    def analysis(self, uri: str) -> Analysis:
        document = self.workspace.get_text_document(uri)
        text = document.source
        current = self.analyses.get(uri)
        if current is None or current.text != text:
            current = self.analyses[uri] = Analysis(text, _file_of(uri))
        return current

    def to_range(self, a: Analysis, span: Span) -> t.Range:
        line = a.lines[span.line] if span.line < len(a.lines) else ""
        return t.Range(
            start=t.Position(line=span.line, character=to_client(line, span.start, self.encoding)),
            end=t.Position(line=span.line, character=to_client(line, span.end, self.encoding)),
        )

    def cursor(self, a: Analysis, position: t.Position) -> tuple[int, int]:
        line = a.lines[position.line] if position.line < len(a.lines) else ""
        return position.line, from_client(line, position.character, self.encoding)

    def publish(self, uri: str) -> None:
        a = self.analysis(uri)
        found = a.diagnostics() + self._folder_diagnostics(uri, a)
        self.text_document_publish_diagnostics(
            t.PublishDiagnosticsParams(uri=uri, diagnostics=[self._diagnostic(a, d) for d in found])
        )

    def _diagnostic(self, a: Analysis, d: Diagnostic) -> t.Diagnostic:
        return t.Diagnostic(
            range=self.to_range(a, a.diagnostic_span(d)),
            message=d.message,
            severity=_SEVERITY.get(d.severity, t.DiagnosticSeverity.Error),
            code=d.rule,
            source="hopflow",
        )

    def _folder_diagnostics(self, uri: str, a: Analysis) -> list[Diagnostic]:
        """The folder-level rules, over the workflow files next to this one (open ones from their
        buffers). This file comes last, so a name it shares with a sibling is reported here."""
        from dsl.validate import SUFFIXES, Result, cross_file

        path = to_fs_path(uri)
        if not path or not os.path.isfile(path):
            return []
        here = Path(path).resolve()
        buffers = {Path(p).resolve(): u for u in self.analyses if (p := to_fs_path(u))}
        results: list[Result] = []
        for sibling in sorted(here.parent.iterdir()):
            if sibling.suffix not in SUFFIXES or sibling.name.startswith(".") or sibling.resolve() == here:
                continue
            other = buffers.get(sibling.resolve())
            if other is not None:
                results.append(self.analyses[other].result)
            elif (links := self._links(sibling)) is not None:
                results.append(Result(str(sibling), None, (), links=links))
        results.append(a.result)
        return [d for r in cross_file(results) if r.file == a.file for d in r.diagnostics]

    def _links(self, path: Path) -> Links | None:
        """What a file on disk contributes to its folder (its name, its child calls), cached."""
        from dsl.source import LoadError, load
        from dsl.workspace import links_of

        try:
            stat = path.stat()
            key = (stat.st_mtime_ns, stat.st_size)
            cached = self._disk.get(path)
            if cached is None or cached[0] != key:
                try:
                    links = links_of(load(path))
                except (LoadError, ValueError):  # unreadable: it gets its own diagnostics when opened
                    links = None
                cached = self._disk[path] = (key, links)
        except OSError:
            return None
        return cached[1]


def _file_of(uri: str) -> str:
    return to_fs_path(uri) or uri


def build() -> HopflowServer:
    server = HopflowServer()

    @server.feature(t.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: HopflowServer, params: t.DidOpenTextDocumentParams) -> None:
        ls.publish(params.text_document.uri)

    @server.feature(t.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: HopflowServer, params: t.DidChangeTextDocumentParams) -> None:
        ls.publish(params.text_document.uri)

    @server.feature(t.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: HopflowServer, params: t.DidSaveTextDocumentParams) -> None:
        ls.publish(params.text_document.uri)

    @server.feature(t.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: HopflowServer, params: t.DidCloseTextDocumentParams) -> None:
        ls.analyses.pop(params.text_document.uri, None)
        ls.text_document_publish_diagnostics(
            t.PublishDiagnosticsParams(uri=params.text_document.uri, diagnostics=[])
        )

    @server.feature(t.TEXT_DOCUMENT_HOVER)
    def hover(ls: HopflowServer, params: t.HoverParams) -> t.Hover | None:
        a = ls.analysis(params.text_document.uri)
        found = a.hover(*ls.cursor(a, params.position))
        if found is None:
            return None
        text, span = found
        return t.Hover(
            contents=t.MarkupContent(kind=t.MarkupKind.Markdown, value=text), range=ls.to_range(a, span)
        )

    @server.feature(t.TEXT_DOCUMENT_COMPLETION, t.CompletionOptions(trigger_characters=[".", " "]))
    def completion(ls: HopflowServer, params: t.CompletionParams) -> t.CompletionList:
        a = ls.analysis(params.text_document.uri)
        items = [
            t.CompletionItem(
                label=label,
                detail=detail,
                kind=t.CompletionItemKind.Reference if what == "step" else t.CompletionItemKind.Variable,
            )
            for label, detail, what in a.completions(*ls.cursor(a, params.position))
        ]
        return t.CompletionList(is_incomplete=False, items=items)

    @server.feature(t.TEXT_DOCUMENT_DEFINITION)
    def definition(ls: HopflowServer, params: t.DefinitionParams) -> t.Location | None:
        a = ls.analysis(params.text_document.uri)
        step = a.definition(*ls.cursor(a, params.position))
        if step is None:
            return None
        return t.Location(uri=params.text_document.uri, range=ls.to_range(a, step.span))

    @server.feature(t.TEXT_DOCUMENT_REFERENCES)
    def references(ls: HopflowServer, params: t.ReferenceParams) -> list[t.Location]:
        a = ls.analysis(params.text_document.uri)
        found = a.step_reference_at(*ls.cursor(a, params.position))
        if found is None:
            return []
        spans = a.references(found[0])
        step = a.steps.get(found[0])
        if params.context.include_declaration and step is not None:
            spans.insert(0, step.span)
        return [t.Location(uri=params.text_document.uri, range=ls.to_range(a, s)) for s in spans]

    return server


def main() -> None:
    build().start_io()
