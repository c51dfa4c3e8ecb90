"""Templates: one sandboxed Jinja2 environment shared by the checker (parse, names) and the engine (render).

A string is a template when it contains ``{{`` or ``{%``. A string that is exactly one ``{{ expr }}``
renders to the expression's native value; any other template renders to a string. Undefined names
are errors, never empty strings.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import marshal
import re
import threading
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from dsl.durations import DurationError, parse_ms
from dsl.template_limits import (
    MAX_OUTPUT_CHARS,
    MAX_SEQUENCE,
    TemplateError,
    TemplateLimit,
    budget,
    need,
    need_items,
    seconds_left,
)

__all__ = ["MAX_OUTPUT_CHARS", "MAX_SEQUENCE", "TemplateError", "TemplateLimit", "budget"]

# `now` and `uuid` are the execution's: the engine puts them in each render's scope
EXTRA_GLOBALS = ("duration", "now", "uuid")
MAX_PATTERN_CHARS = 1000

log = logging.getLogger("hopflow.cache")

_NATIVE = re.compile(r"^\{\{(?P<expr>.*)\}\}\n?$", re.DOTALL)


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


# --------------------------------------------------------------------------------------------- filters


def _to_datetime(value: Any) -> _dt.datetime:
    if isinstance(value, _dt.datetime):
        result = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            result = _dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO-8601 date-time") from None
    else:
        raise TypeError(f"datetime expects an ISO-8601 string, got {type(value).__name__}")
    if result.tzinfo is None:
        raise ValueError(f"{value!r} has no UTC offset (write e.g. 2026-01-31T19:00:00+01:00)")
    return result


def _isoformat(value: Any) -> str:
    if isinstance(value, _dt.datetime | _dt.date | _dt.time):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return f"PT{value.total_seconds():g}S"
    raise TypeError(f"isoformat expects a datetime, got {type(value).__name__}")


def _tojson(value: Any, indent: int | None = None) -> str:
    return json.dumps(to_json(value), indent=indent, ensure_ascii=False, sort_keys=indent is not None)


def _seconds(value: Any) -> float:
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        ms = parse_ms(value)
    except DurationError as exc:
        raise ValueError(str(exc)) from None
    return ms / 1000 if ms % 1000 else ms // 1000


def _fromjson(value: Any) -> Any:
    """JSON text → data (the reverse of `tojson`): a body an API returned as a string."""
    if not isinstance(value, str | bytes):
        raise TypeError(f"fromjson expects JSON text, got {type(value).__name__}")
    need(len(value) * 4, "fromjson")  # parsed data takes a few times its text at most
    try:
        return json.loads(value)
    except ValueError as exc:
        raise ValueError(f"fromjson: not JSON ({exc})") from None


def _merge(value: Any, *others: Any) -> dict[str, Any]:
    """`a | merge(b, c)`: a mapping with the keys of each later one added (shallow; later wins)."""
    out: dict[str, Any] = {}
    for m in (value, *others):
        if not isinstance(m, Mapping):
            raise TypeError(f"merge expects mappings, got {type(m).__name__}")
        need_items(len(out) + len(m), "merge")
        out.update(m)
    return out


def _regex(pattern: Any) -> Any:
    """A compiled pattern, from the `regex` module: its matches are bounded by the render's time
    (a pattern that backtracks catastrophically on a client's input fails as `template.limit`)."""
    if not isinstance(pattern, str):
        raise TypeError(f"a regular expression must be text, got {type(pattern).__name__}")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise TemplateLimit(f"template limit: a regular expression over {MAX_PATTERN_CHARS} characters")
    import regex

    try:
        return regex.compile(pattern)
    except regex.error as exc:
        raise ValueError(f"bad regular expression {pattern!r}: {exc}") from None


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} expects text, got {type(value).__name__}")
    return value


def _timed(call: Any) -> Any:
    try:
        return call(seconds_left())
    except TimeoutError:
        raise TemplateLimit("template limit: a regular expression ran out of time") from None


def _regex_match(value: Any, pattern: Any) -> bool:
    """Whether the text matches ``pattern`` at its start (Python's `re.match`; anchor with `$`)."""
    text, rx = _text(value, "regex_match"), _regex(pattern)
    return _timed(lambda s: rx.match(text, timeout=s)) is not None


def _regex_search(value: Any, pattern: Any, group: Any = 0) -> Any:
    """The first match of ``pattern`` in the text (or of its ``group``), or null."""
    text, rx = _text(value, "regex_search"), _regex(pattern)
    found = _timed(lambda s: rx.search(text, timeout=s))
    return None if found is None else found.group(group)


def _regex_replace(value: Any, pattern: Any, replacement: Any = "", count: Any = 0) -> str:
    """Every match (or the first ``count``) replaced; ``\\1`` in ``replacement`` is group 1."""
    text, rx = _text(value, "regex_replace"), _regex(pattern)
    repl = _text(replacement, "regex_replace's replacement")
    matches = _timed(lambda s: len(rx.findall(text, timeout=s)))
    need(len(text) + matches * (len(repl) + 16), "regex_replace")
    return _timed(lambda s: rx.sub(repl, text, count=int(count or 0), timeout=s))


def _duration(value: Any) -> _dt.timedelta:
    try:
        return _dt.timedelta(milliseconds=parse_ms(value))
    except DurationError as exc:
        raise ValueError(str(exc)) from None


def to_json(value: Any) -> Any:
    """Make a rendered value JSON-serialisable (datetimes → ISO strings, timedeltas → seconds)."""
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, _dt.datetime | _dt.date | _dt.time):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, str):
        return str(value)  # Markup and other str subclasses become plain strings
    if value is None or isinstance(value, bool | int | float):
        return value
    raise TypeError(f"a template produced a {type(value).__name__}, which is not JSON")


# hopflow's filters beside Jinja2's own: one table, so the names and the functions cannot drift apart
FILTERS: dict[str, Any] = {
    "datetime": _to_datetime,
    "isoformat": _isoformat,
    "tojson": _tojson,
    "seconds": _seconds,
    "fromjson": _fromjson,
    "merge": _merge,
    "regex_match": _regex_match,
    "regex_search": _regex_search,
    "regex_replace": _regex_replace,
}
EXTRA_FILTERS = tuple(FILTERS)


# ----------------------------------------------------------------------------------------- environment


@lru_cache(maxsize=1)
def environment() -> Any:
    """The one sandboxed environment (built lazily: importing Jinja2 costs cold-start time). Its
    bounds on memory, operations and time are in :mod:`dsl.sandbox`."""
    from jinja2 import StrictUndefined, Undefined

    from dsl.sandbox import BoundedSandbox

    class _Sandbox(BoundedSandbox):
        # `steps.x.output.price | default(0)` for a step that did not run: a part of something
        # undefined is that same undefined (it still fails when used, with the first missing name),
        # so `default` and `is defined` can apply to the whole path
        def getitem(self, obj: Any, argument: Any) -> Any:
            if isinstance(obj, Undefined):
                return obj
            return super().getitem(obj, argument)

        def getattr(self, obj: Any, attribute: str) -> Any:
            if isinstance(obj, Undefined):
                return obj
            # `x.items`, `steps.keys.output`: in workflow data a key wins over a dict method's name
            if isinstance(obj, Mapping) and isinstance(attribute, str):
                try:
                    return obj[attribute]
                except (KeyError, TypeError):
                    pass
            return super().getattr(obj, attribute)

        def compile(  # type: ignore[override]
            self,
            source: Any,
            name: str | None = None,
            filename: str | None = None,
            raw: bool = False,
            defer_init: bool = False,
        ) -> Any:
            # the code object of each template this thread compiles, for the code cache (_compiled)
            code = super().compile(source, name, filename, raw, defer_init)
            if not raw:
                _captured.code = code
            return code

    env = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
    env.filters.update(FILTERS)
    env.bound_filters()
    env.globals.clear()  # no range/lipsum/dict/cycler/joiner/namespace beyond what we add back
    env.globals.update(duration=_duration, range=_bounded_range)
    return env


def _bounded_range(*args: int) -> range:
    r = range(*args)
    if len(r) > MAX_SEQUENCE:
        raise TemplateLimit(f"template limit: range would have {len(r)} items (at most {MAX_SEQUENCE})")
    return r


# -------------------------------------------------------------------------------------- static analysis


@dataclass(frozen=True)
class Reference:
    """A name a template reads: ``steps.book.output.id`` → root ``steps``, parts ``("book", "output")``."""

    root: str
    parts: tuple[str, ...]  # constant attribute/item names after the root, up to the first dynamic part
    offset: int  # character offset in the template source (best effort: the first textual match)
    filters: tuple[str, ...] = ()  # filters applied directly to this reference (e.g. "length")
    # read in a way that works when it is missing: `x | default(...)` first, `x is defined`, or
    # inside `... if steps.X is defined else ...` / `{% if steps.X is defined %}` for that X
    guarded: bool = False

    @property
    def dotted(self) -> str:
        return ".".join((self.root, *self.parts))


@dataclass(frozen=True)
class Parsed:
    source: str
    native: bool
    references: tuple[Reference, ...]
    filters: tuple[tuple[str, int], ...]  # (filter name, offset) for every filter used
    locals: frozenset[str]  # names the template assigns itself ({% set %}, {% for %})
    requires: frozenset[str] = frozenset()  # step ids a true value proves ran (`steps.X is defined`)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.dotted for r in self.references))


def _line_col_to_offset(source: str, lineno: int) -> int:
    if lineno <= 1:
        return 0
    idx = -1
    for _ in range(lineno - 1):
        idx = source.find("\n", idx + 1)
        if idx < 0:
            return 0
    return idx + 1


@lru_cache(maxsize=4096)
def parse(source: str) -> Parsed:
    """Parse with Jinja2's own parser; raises TemplateError (with offset) on a syntax error."""
    from jinja2 import TemplateSyntaxError, nodes

    env = environment()
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        message, offset = _syntax_error(source, exc)
        raise TemplateError(f"template syntax error: {message}", offset) from None

    assigned: set[str] = set()
    for name_node in tree.find_all(nodes.Name):
        if name_node.ctx in ("store", "param"):
            assigned.add(name_node.name)

    refs: list[Reference] = []
    filters: list[tuple[str, int]] = []
    cursor: dict[str, int] = {}

    def locate(text: str) -> int:
        start = cursor.get(text, 0)
        found = source.find(text, start)
        if found < 0:
            found = source.find(text)
        if found >= 0:
            cursor[text] = found + 1
        return max(found, 0)

    def chain(node: Any) -> tuple[str, tuple[str, ...]] | None:
        parts: list[str] = []
        while True:
            if isinstance(node, nodes.Getattr):
                parts.append(node.attr)
                node = node.node
            elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
                if isinstance(node.arg.value, str):
                    parts.append(node.arg.value)
                else:
                    parts.clear()  # a numeric index: keep only what comes before it
                node = node.node
            elif isinstance(node, nodes.Getitem):
                parts.clear()
                node = node.node
            elif isinstance(node, nodes.Name):
                return node.name, tuple(reversed(parts))
            else:
                return None

    seen_names: set[int] = set()

    def defined(test: Any) -> frozenset[str]:
        """Step ids that ``test`` being true proves defined (`steps.X... is defined`, `and`-ed)."""
        if isinstance(test, nodes.And):
            return defined(test.left) | defined(test.right)
        if isinstance(test, nodes.Test) and test.name == "defined":
            found = chain(test.node)
            if found is not None and found[0] == "steps" and found[1]:
                return frozenset({found[1][0]})
        return frozenset()

    def visit(
        node: Any, applied: tuple[str, ...] = (), guards: frozenset[str] = frozenset(), tested: bool = False
    ) -> None:
        if isinstance(node, nodes.Filter):
            filters.append((node.name, locate(node.name)))
            if node.node is not None:
                visit(node.node, (*applied, node.name), guards, tested)
            for child in (*node.args, *(kw.value for kw in node.kwargs)):
                visit(child, (), guards)
            return
        if isinstance(node, nodes.Test) and node.name in ("defined", "undefined"):
            visit(node.node, applied, guards, True)
            for child in (*node.args, *(kw.value for kw in node.kwargs)):
                visit(child, (), guards)
            return
        if isinstance(node, nodes.CondExpr | nodes.If):
            visit(node.test, (), guards)
            body = node.expr1 if isinstance(node, nodes.CondExpr) else node.body
            for child in body if isinstance(body, list) else [body]:
                visit(child, (), guards | defined(node.test))
            rest = [node.expr2] if isinstance(node, nodes.CondExpr) else [*node.elif_, *node.else_]
            for child in rest:
                if child is not None:
                    visit(child, (), guards)
            return
        if isinstance(node, nodes.Getattr | nodes.Getitem | nodes.Name):
            found = chain(node)
            if found is not None:
                root, parts = found
                base = node
                while not isinstance(base, nodes.Name):
                    if isinstance(base, nodes.Getitem):
                        visit(base.arg)
                    base = base.node
                if id(base) not in seen_names and base.ctx == "load" and root not in assigned:
                    seen_names.add(id(base))
                    text = ".".join((root, *parts))
                    guarded = (
                        tested
                        or (bool(applied) and applied[-1] in ("default", "d"))
                        or (root == "steps" and bool(parts) and parts[0] in guards)
                    )
                    refs.append(Reference(root, parts, locate(text if parts else root), applied, guarded))
                return
        for child in node.iter_child_nodes():
            visit(child, (), guards)

    visit(tree)
    native = bool(_NATIVE.match(source)) and _single_output(tree)
    requires: frozenset[str] = frozenset()
    if native and len(tree.body) == 1 and isinstance(tree.body[0], nodes.Output):
        requires = defined(tree.body[0].nodes[0])
    return Parsed(source, native, tuple(refs), tuple(filters), frozenset(assigned), requires)


def _syntax_error(source: str, exc: Any) -> tuple[str, int]:
    """Jinja2's message in a workflow author's words, and the offset of the token it stopped at.

    Jinja2 reports only a line, so the template is lexed and parsed again (only on this error path)
    with every token's offset recorded: the parser's current token when it raises is the culprit.
    An error at the end of the template is about something left open; it points at the opener.
    """
    from jinja2 import TemplateSyntaxError
    from jinja2.lexer import TokenStream
    from jinja2.parser import Parser

    env = environment()
    cursor = 0  # offset just past the last raw token the lexer produced
    last_start = 0
    offsets: dict[int, int] = {}

    lexer_failed = False

    def raw() -> Any:
        nonlocal cursor, last_start, lexer_failed
        tokens = env.lexer.tokeniter(source, None)
        while True:
            try:
                lineno, kind, value = next(tokens)
            except StopIteration:
                return
            except TemplateSyntaxError:
                lexer_failed = True
                raise
            found = source.find(value, cursor) if value else -1
            last_start = found if found >= 0 else cursor
            cursor = last_start + len(value)
            yield lineno, kind, value

    def located(tokens: Any) -> Any:
        for token in tokens:
            offsets[id(token)] = last_start
            yield token

    parser = Parser(env, source)
    parser.stream = TokenStream(located(env.lexer.wrap(raw())), None, None)
    at: int | None = None
    message = exc.message or "invalid template"
    try:
        parser.parse()
    except TemplateSyntaxError as again:
        message = again.message or message
        current = parser.stream.current
        if lexer_failed:  # the lexer itself stopped: the culprit is where it stopped
            at = _skip_space(source, cursor)
            message = re.sub(r" at \d+$", "", message)
        elif current.type != "eof":
            at = offsets.get(id(current))
    except Exception:  # pragma: no cover - a parse that fails differently the second time
        pass
    return _reword(source, message, at)


def _skip_space(source: str, at: int) -> int:
    while at < len(source) and source[at] in " \t\r\n":
        at += 1
    return min(at, len(source))


_INNERMOST = re.compile(r"The innermost block that needs to be closed is '(\w+)'")


def _reword(source: str, message: str, at: int | None) -> tuple[str, int]:
    message = message.rstrip(".")
    innermost = _INNERMOST.search(message)
    if innermost is not None and message.startswith("Unexpected end of template"):
        tag = innermost.group(1)
        opener = list(re.finditer(rf"\{{%[-+]?\s*{tag}\b", source))
        return (
            f"'{{% {tag} %}}' is not closed: add '{{% end{tag} %}}'",
            opener[-1].start() if opener else 0,
        )
    if message.startswith("unexpected end of template"):
        expected = re.search(r"expected '([^']+)'", message)
        closer = {"end of print statement": "}}", "end of statement block": "%}"}.get(
            expected.group(1) if expected else "", ""
        )
        opener_text = {"}}": "{{", "%}": "{%"}.get(closer)
        start = source.rfind(opener_text) if opener_text else -1
        if closer and start >= 0:
            return f"'{opener_text}' is not closed: add '{closer}'", start
        return message, _last_opener(source)
    for words, token in _TOKEN_WORDS.items():
        message = message.replace(words, token)
    if at is None:
        return message, _last_opener(source)
    before = source[:at].rstrip()
    if message in ('unexpected char "\'"', "unexpected char '\"'"):
        return "this string is never closed: add the closing quote before '}}'", at
    if before.endswith("|") and message.startswith("expected token 'name'"):
        return "a filter name is missing after '|'", before.rfind("|")
    operator = re.search(r"(==|!=|<=|>=|\*\*|//|\band|\bor|\bnot|\bin|[-+*/%~<>])$", before)
    if message in ("unexpected '}}'", "unexpected '%}'") and operator:
        return f"{message}: a value is missing after {operator.group(1)!r}", at
    if message == "unexpected '}'":
        message += " (a template expression ends with '}}')"
    return message, at


_TOKEN_WORDS = {
    "'end of print statement'": "'}}'",
    "'end of statement block'": "'%}'",
    "'begin of print statement'": "'{{'",
    "'begin of statement block'": "'{%'",
}


def _last_opener(source: str) -> int:
    return max(source.rfind("{{"), source.rfind("{%"), 0)


def _single_output(tree: Any) -> bool:
    from jinja2 import nodes

    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return False
    parts = [n for n in tree.body[0].nodes if not (isinstance(n, nodes.TemplateData) and n.data == "\n")]
    return len(parts) == 1 and not isinstance(parts[0], nodes.TemplateData)


# ------------------------------------------------------------------------------------------- rendering


# Compiled template code on disk (a dsl.cache.GraphCache), set by the engine when it has a cache
# folder: a cold process then loads each template's code instead of running Jinja2's lexer, parser
# and code generator. The code is what this very sandbox generated (the key covers dsl's sources,
# Jinja2's version and Python's bytecode magic), so nothing about the sandbox changes.
_code_cache: Any = None
_captured = threading.local()


def set_code_cache(cache: Any) -> None:
    """Use ``cache`` (a :class:`dsl.cache.GraphCache`, or None) for compiled template code."""
    global _code_cache
    _code_cache = cache


def _code_salt() -> str:
    import importlib.util

    import jinja2

    return f"jinja2 {jinja2.__version__} python {importlib.util.MAGIC_NUMBER.hex()}"


def _from_code(native: bool, code: Any) -> tuple[bool, Callable[..., Any]]:
    """What :func:`_compiled` returns, rebuilt from a template's code object (as Jinja2's own
    ``from_string`` and ``compile_expression`` do after compiling)."""
    env = environment()
    template = env.template_class.from_code(env, code, env.make_globals(None), None)
    if native:
        from jinja2.environment import TemplateExpression

        return True, TemplateExpression(template, False)
    return False, template


def _cached_code(cache: Any, key: str) -> tuple[bool, Callable[..., Any]] | None:
    payload = cache.get_code(key)
    if payload is None:
        return None
    try:
        native, code = marshal.loads(payload)
        if not isinstance(native, bool) or not isinstance(code, types.CodeType):
            raise ValueError("not a template's code")
        return _from_code(native, code)
    except Exception as exc:  # a damaged entry: compile again (and rewrite it)
        log.warning("template code cache: ignoring an entry (%s: %s)", type(exc).__name__, exc)
        return None


@lru_cache(maxsize=8192)
def _compiled(source: str) -> tuple[bool, Callable[..., Any]]:
    """Compile once per source string (graphs share sources, so this is per graph in effect), or load
    its code from the code cache (:func:`set_code_cache`), writing it there after a compile."""
    from jinja2 import TemplateSyntaxError

    cache = _code_cache
    key = cache.code_key(source, _code_salt()) if cache is not None else ""
    if cache is not None:
        found = _cached_code(cache, key)
        if found is not None:
            return found
    env = environment()
    parsed = parse(source)
    _captured.code = None
    try:
        if parsed.native:
            expr = _NATIVE.match(source).group("expr")  # type: ignore[union-attr]
            result: tuple[bool, Callable[..., Any]] = (
                True,
                env.compile_expression(expr, undefined_to_none=False),
            )
        else:
            result = False, env.from_string(source)
    except TemplateSyntaxError as exc:  # e.g. an unknown filter is only found when compiling
        raise TemplateError(f"template error: {exc.message}") from None
    code, _captured.code = _captured.code, None
    if cache is not None and code is not None:
        cache.put_code(key, marshal.dumps((parsed.native, code)))
    return result


def compile_all(value: Any) -> int:
    """Compile every template string inside ``value`` (a graph's plain JSON form), so that they reach
    the code cache at build time (``hopflow compile --cache``); the number compiled."""
    count = 0
    for source in dict.fromkeys(source for _path, source in templates_in(value)):
        try:
            _compiled(source)
            count += 1
        except TemplateError:
            pass  # not a template that renders (e.g. "{{" in a description); left to run time
    return count


def render_string(source: str, context: Mapping[str, Any], *, seconds: float | None = None) -> Any:
    """Render one template string; raises TemplateError for any failure (names it ``template``) and
    its TemplateLimit for a size, operation or time bound (``template.limit``). ``seconds``: the wall
    time this render may take, unless it runs inside a :func:`budget` already (then it shares it)."""
    from jinja2 import TemplateError as JinjaError
    from jinja2 import Undefined
    from jinja2.exceptions import SecurityError

    native, compiled = _compiled(source)
    try:
        with budget(seconds):
            if native:
                value = compiled(**context)
                if isinstance(value, Undefined):
                    value._fail_with_undefined_error()
                if isinstance(value, str) and len(value) > MAX_OUTPUT_CHARS:
                    raise TemplateLimit(
                        f"template limit: the output is larger than {MAX_OUTPUT_CHARS} characters"
                    )
                return value
            chunks: list[str] = []
            size = 0
            for chunk in compiled.generate(**context):
                size += len(chunk)
                if size > MAX_OUTPUT_CHARS:
                    raise TemplateLimit(
                        f"template limit: the output is larger than {MAX_OUTPUT_CHARS} characters"
                    )
                chunks.append(chunk)
            return "".join(chunks)
    except TemplateError:
        raise
    except SecurityError as exc:
        raise TemplateError(f"template sandbox refused: {exc}") from None
    except JinjaError as exc:
        raise TemplateError(f"template error: {exc.message or exc}") from None
    except (MemoryError, RecursionError, OverflowError) as exc:
        what = {MemoryError: "out of memory", RecursionError: "recursion too deep"}.get(type(exc), str(exc))
        raise TemplateLimit(f"template limit: {what}") from None
    except (TypeError, ValueError, ArithmeticError, KeyError, IndexError, AttributeError) as exc:
        raise TemplateError(f"template error: {type(exc).__name__}: {exc}") from None


def render(value: Any, context: Mapping[str, Any], *, seconds: float | None = None) -> Any:
    """Render every template string inside a (possibly nested) value; other values pass through.
    All of them share one budget (operations, ``seconds`` of wall time)."""
    with budget(seconds):
        return _render(value, context)


def _render(value: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return render_string(value, context) if is_template(value) else value
    if isinstance(value, Mapping):
        return {k: _render(v, context) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_render(v, context) for v in value]
    return value


def templates_in(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...], str]]:
    """Every (path, template source) inside a nested value, in document order."""
    if isinstance(value, str):
        return [(path, value)] if is_template(value) else []
    out: list[tuple[tuple[str | int, ...], str]] = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            out.extend(templates_in(v, (*path, k)))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            out.extend(templates_in(v, (*path, i)))
    return out
