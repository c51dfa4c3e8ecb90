"""Text that was meant to be a template but is not one (or not the one meant).

Authors bring other tools' syntax: ``${API}`` (shell), ``${{ env.API }}`` (GitHub Actions), and
single braces ``{ input.x }``. None of these is an error to YAML or Jinja2: the text is simply kept,
so ``if: "${{ input.vip }}"`` is the always-true string ``"$True"`` and a URL keeps a literal
``${API}``. Warnings, because such text can be meant literally; each is reported only where a literal
is very unlikely (see :func:`check_lookalikes`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from dsl.checks import CheckContext, rule
from dsl.checks.env import declared_env
from dsl.diagnostics import Diagnostic
from dsl.source import JsonPath

_ROOTS = r"(?:input|steps|vars|env|execution|item|index|error|result)"
_SINGLE = re.compile(rf"(?<![{{$])\{{\s*({_ROOTS}(?:\.\w+|\[[^\]{{}}]+\])+)\s*\}}(?!\}})")
_HALF_OPEN = re.compile(rf"(?<![{{$])\{{(\s*{_ROOTS}\b[^{{}}]*)\}}\}}")
_LONE_BRACE = re.compile(r"(?<!\{)\{(?![{%#])")  # a '{' that is not part of '{{', '{%' or '{#'
_GITHUB = re.compile(r"\$\{\{")
_SHELL = re.compile(r"\$\{(\w+)\}|\$(\w+)\b")
_OPEN_QUOTES = {"\u201c": "\u201d", "\u2018": "\u2019", "\u201e": "\u201c", "\u00ab": "\u00bb"}
# keys whose value is never shown to anyone as text: a stray '$' there changes what the step does
_STRUCTURAL = frozenset({"url", "if", "items", "until", "key", "method"})


def _places(ctx: CheckContext) -> Iterator[tuple[JsonPath, str]]:
    """Every string value the runtime renders: not descriptions, the input schema or unknown keys."""
    unknown = ctx.unknown
    for path, value in ctx.strings:
        if not path or path[0] in ("input", "description", "name", "env", "version"):
            continue
        if path[-1] == "description" or ("{" not in value and "$" not in value):
            continue
        if unknown and any(path[:n] in unknown for n in range(1, len(path) + 1)):
            continue
        yield path, value


@rule(
    "template-lookalike",
    "text that looks like another tool's template syntax (`${API}`, `${{ … }}`, `{ input.x }`) and is "
    "therefore kept as it is, not rendered",
)
def check_lookalikes(ctx: CheckContext) -> Iterator[Diagnostic]:
    env = set(declared_env(ctx))
    for path, value in _places(ctx):
        if "${{" not in value and not (env and "$" in value) and not _LONE_BRACE.search(value):
            if value[:1] not in _OPEN_QUOTES:
                continue  # the usual case: nothing that could look like another syntax
        key = next((p for p in reversed(path) if isinstance(p, str)), "")
        if key == "url" and "{{" not in value and not value.startswith(("http://", "https://")):
            continue  # not a URL at all: the schema says so, with the same advice
        for match in _GITHUB.finditer(value):
            if key in _STRUCTURAL and match.start() == 0:
                yield ctx.diag(
                    "template-lookalike",
                    "warning",
                    "'${{ … }}' keeps the '$' as text (that is GitHub Actions' syntax), so this "
                    f"{key} is not what the template gives: remove the '$'",
                    path,
                    offset=match.start(),
                )
        for match in _SHELL.finditer(value):
            name = match.group(1) or match.group(2)
            if name in env:
                yield ctx.diag(
                    "template-lookalike",
                    "warning",
                    f"{match.group(0)!r} is not substituted: environment variables are read in "
                    f"templates, write '{{{{ env.{name} }}}}'",
                    path,
                    offset=match.start(),
                )
        if len(value) > 2 and value[0] in _OPEN_QUOTES and value[-1] == _OPEN_QUOTES[value[0]]:
            yield ctx.diag(
                "template-lookalike",
                "warning",
                f"this value is wrapped in typographic quotes {value[0]}…{value[-1]}, which YAML keeps as "
                'text: use straight quotes " "',
                path,
                offset=0,
            )
        if "{{" in value and "}}" in value:
            stripped = re.sub(r"\{\{.*?\}\}|\{%.*?%\}", lambda m: " " * len(m.group(0)), value, flags=re.S)
        else:
            stripped = value
        for match in _HALF_OPEN.finditer(value):
            yield ctx.diag(
                "template-lookalike",
                "warning",
                f"this template opens with one '{{' but closes with '}}}}', so it is kept as text: write "
                f"'{{{{{match.group(1)}}}}}'",
                path,
                offset=match.start(),
            )
        for match in _SINGLE.finditer(stripped):
            yield ctx.diag(
                "template-lookalike",
                "warning",
                f"single braces are kept as text: write '{{{{ {match.group(1)} }}}}' to read "
                f"{match.group(1)}",
                path,
                offset=match.start(),
            )
