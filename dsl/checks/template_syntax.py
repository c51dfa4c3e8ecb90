"""Templates that cannot run at all: syntax errors, unknown filters and tests.

Also home of the small helpers every template rule shares: which template strings are rendered, and
where a name or filter sits inside a template's source (so a diagnostic's column points at it).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator
from functools import lru_cache

from dsl.checks import CheckContext, TemplateSite, rule
from dsl.diagnostics import Diagnostic
from dsl.templates import Reference, environment

# strings that hold prose, not templates: never rendered, so braces in them are harmless
_PROSE_KEYS = frozenset({"description"})


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or an empty string."""
    pool = sorted(set(candidates))
    same = [c for c in pool if c.lower() == word.lower()]  # only the case differs: surely meant
    close = same or difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def rendered_sites(ctx: CheckContext) -> Iterator[TemplateSite]:
    """Template strings that the runtime renders (descriptions are prose and are skipped)."""
    for site in ctx.templates:
        if site.path == ("description",):
            continue
        if site.step is not None and len(site.path) == len(site.step.path) + 1:
            if site.path[-1] in _PROSE_KEYS:
                continue
        yield site


def _boundary_before(source: str, at: int) -> bool:
    return at == 0 or not (source[at - 1].isalnum() or source[at - 1] in "_.")


def root_offset(source: str, ref: Reference) -> int:
    """Offset of ``ref``'s root name in ``source``.

    The parser's offset is a best-effort textual match of the dotted name, which misses subscript
    spellings (``env['X']``); fall back to the first whole-word occurrence of the root.
    """
    at = ref.offset
    end = at + len(ref.root)
    if (
        source.startswith(ref.root, at)
        and _boundary_before(source, at)
        and (end >= len(source) or not (source[end].isalnum() or source[end] == "_"))
    ):
        return at
    match = re.search(rf"(?<![\w.]){re.escape(ref.root)}(?!\w)", source)
    return match.start() if match else 0


@lru_cache(maxsize=256)
def _part_pattern(part: str) -> re.Pattern[str]:
    return re.compile(rf"\.\s*({re.escape(part)})(?!\w)|\[\s*(['\"])({re.escape(part)})\2\s*\]")


def part_offset(source: str, ref: Reference, index: int) -> int:
    """Offset of ``ref.parts[index]`` (``env.X`` → the ``X``), found by walking from the root."""
    at = root_offset(source, ref) + len(ref.root)
    for i, part in enumerate(ref.parts[: index + 1]):
        match = _part_pattern(part).search(source, at)
        if match is None:
            return root_offset(source, ref)
        start = match.start(1) if match.group(1) is not None else match.start(3)
        if i == index:
            return start
        at = match.end()
    return root_offset(source, ref)


def filter_offset(site: TemplateSite, name: str, after: int = 0) -> int:
    """Offset of the first use of filter ``name`` at or after ``after`` (else its first use)."""
    assert site.parsed is not None
    pattern = re.compile(rf"\|\s*({re.escape(name)})(?!\w)")
    match = pattern.search(site.source, after) or pattern.search(site.source)
    if match:
        return match.start(1)
    for fname, offset in site.parsed.filters:
        if fname == name:
            return offset
    return 0


_DASHED = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\.([A-Za-z_]\w*(?:-\w+)+)")


def dashed_hint(source: str, at: int) -> str:
    """When the name at ``at`` is part of ``a.b-c`` (read by Jinja2 as ``a.b - c``), how to write a key
    that contains '-'; else an empty string."""
    for match in _DASHED.finditer(source):
        if match.start() <= at < match.end():
            head, key = match.group(1), match.group(2)
            spaced = f"{head}.{key}".replace("-", " - ")
            return (
                f" (`{match.group(0)}` is read as a subtraction, {spaced}: for a key with '-', "
                f"write {head}['{key}'])"
            )
    return ""


@rule("template-syntax", "a template string is not valid Jinja2 (the column points inside the string)")
def check_syntax(ctx: CheckContext) -> Iterator[Diagnostic]:
    for site in rendered_sites(ctx):
        if site.error is not None:
            yield ctx.diag(
                "template-syntax", "error", site.error.message, site.path, offset=site.error.offset or 0
            )
        elif "{%" in site.source and _LOADER_TAG.search(site.source):
            for message, offset in _statement_problems(site.source):
                yield ctx.diag("template-syntax", "error", message, site.path, offset=offset)


@rule("unknown-filter", "a template uses a filter that the sandbox does not provide")
def check_filters(ctx: CheckContext) -> Iterator[Diagnostic]:
    known = environment().filters
    for site in rendered_sites(ctx):
        if site.parsed is None:
            continue
        seen: set[tuple[str, int]] = set()
        for name, parser_offset in site.parsed.filters:
            if name in known:
                continue
            count = sum(1 for n, _ in seen if n == name)
            offset = _nth_filter(site.source, name, count, parser_offset)
            if (name, offset) in seen:
                continue
            seen.add((name, offset))
            yield ctx.diag(
                "unknown-filter",
                "error",
                f"unknown filter {name!r}{did_you_mean(name, known)}",
                site.path,
                offset=offset,
            )


@rule("unknown-test", "a template uses an `is` test that the sandbox does not provide")
def check_tests(ctx: CheckContext) -> Iterator[Diagnostic]:
    known = environment().tests
    for site in rendered_sites(ctx):
        if site.parsed is None or " is " not in site.source:
            continue
        if all(name in known for name in _TEST_WORD.findall(site.source)):
            continue  # every word after `is` is a known test: no need to parse again
        for name in _tests_used(site.source):
            if name in known:
                continue
            match = re.search(rf"\bis\s+(?:not\s+)?({re.escape(name)})(?!\w)", site.source)
            yield ctx.diag(
                "unknown-test",
                "error",
                f"unknown test {name!r}{did_you_mean(name, known)}",
                site.path,
                offset=match.start(1) if match else 0,
            )


def _nth_filter(source: str, name: str, n: int, fallback: int) -> int:
    matches = list(re.finditer(rf"\|\s*({re.escape(name)})(?!\w)", source))
    if not matches:
        return fallback
    return matches[min(n, len(matches) - 1)].start(1)


@lru_cache(maxsize=1024)
def _tests_used(source: str) -> tuple[str, ...]:
    from jinja2 import nodes

    tree = environment().parse(source)
    return tuple(dict.fromkeys(t.name for t in tree.find_all(nodes.Test)))


_LOADER_TAG = re.compile(r"\{%[-+]?\s*(include|extends|import|from)\b")
_TEST_WORD = re.compile(r"\bis\s+(?:not\s+)?([A-Za-z_]\w*)")
_LOADER_TAGS = {"Include": "include", "Extends": "extends", "Import": "import", "FromImport": "from"}


@lru_cache(maxsize=1024)
def _statement_problems(source: str) -> tuple[tuple[str, int], ...]:
    """Tags that parse but can never run here: templates have no loader to include or import from."""
    from jinja2 import nodes

    tree = environment().parse(source)
    out = []
    used: dict[str, int] = {}
    for node in tree.find_all((nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport)):
        tag = _LOADER_TAGS[type(node).__name__]
        matches = list(re.finditer(rf"\{{%[-+]?\s*({tag})\b", source))
        n = used.get(tag, 0)
        used[tag] = n + 1
        offset = matches[min(n, len(matches) - 1)].start(1) if matches else 0
        message = (
            f"template syntax error: {{% {tag} %}} is not available "
            "(workflow templates cannot load other templates)"
        )
        out.append((message, offset))
    return tuple(out)
