"""The bounded Jinja2 sandbox: every template operation that can grow a value or run long is checked
*before* it runs, against :mod:`dsl.template_limits`.

Where each class of operation is held (so a new filter or method cannot slip past):

* operators (``+ - * / // % **``): all intercepted (:meth:`BoundedSandbox.call_binop`); repeat
  counts, concatenated sizes, ``%``-format widths and integer bit lengths are estimated first;
* ``~`` and block captures (``{% set %}…``, macros, ``caller()``): the code generator's join and
  ``environment.concat`` add the parts' sizes before joining them;
* filters: every entry of ``environment.filters`` is wrapped (operation count, a size estimate for
  the ones whose result size an argument controls, and a check of the result);
* calls (methods such as ``'x'.ljust(n)``, macros, ``loop(…)``): :meth:`BoundedSandbox.call`;
  ``str.format``/``format_map`` go through a formatter that bounds each field's width and the total;
* loops: every ``{% for %}`` iterates through a counter that spends the render's operation budget and
  checks its deadline; ``{{ … }}`` output is counted too.

What cannot be estimated (a deep recursion, an allocation that fails anyway) surfaces as
``RecursionError``/``MemoryError``/``OverflowError``, which :func:`dsl.templates.render_string`
turns into the same ``template.limit``.
"""

from __future__ import annotations

import functools
import math
import re
import string
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.filters import make_attrgetter
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter
from jinja2.utils import pass_environment
from markupsafe import Markup

from dsl.template_limits import (
    MAX_JSON_INDENT,
    MAX_SEQUENCE,
    MAX_VALUE_CHARS,
    TemplateLimit,
    checked,
    emit,
    need,
    need_bits,
    need_items,
    tick,
    weight,
)

_ITER = "hopflow_iter"
_JOIN = "hopflow_join"


# ------------------------------------------------------------------------------------------ loops


class Counted:
    """An iterable whose every item spends one operation of the active render's budget."""

    __slots__ = ("_items",)

    def __init__(self, items: Any) -> None:
        self._items = items

    def __iter__(self) -> Iterator[Any]:
        for item in self._items:
            tick()
            yield item

    def __len__(self) -> int:
        return len(self._items)  # TypeError for an unsized one: LoopContext then counts as it goes


def bounded_list(value: Any, what: str) -> list[Any]:
    """Materialise an iterable, refusing it past ``MAX_SEQUENCE`` items before it grows further."""
    if isinstance(value, list | tuple | str | Mapping) and len(value) > MAX_SEQUENCE:
        need_items(len(value), what)
    out: list[Any] = []
    for item in value:
        out.append(item)
        if len(out) > MAX_SEQUENCE:
            need_items(len(out), what)
    return out


# ---------------------------------------------------------------------------------- size estimates


_PERCENT = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[diouxXeEfFgGcrsa%]")


def check_percent(fmt: str, args: Any) -> None:
    """``fmt % args``: at most the format's text, plus per conversion its width or precision and
    everything it may print (every argument, as a ``%(name)s`` may repeat one)."""
    specs = _PERCENT.findall(fmt)
    if not specs:
        return
    values = args if isinstance(args, tuple) else (args,)
    stars = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
    star = max((abs(v) for v in stars), default=0)
    printed = weight(args)
    total = len(fmt)
    for (
        width,
        precision,
    ) in specs:
        for number in (width, precision):
            if number == "*":
                total += star
            elif number:
                total += int(number) if len(number) < 12 else MAX_VALUE_CHARS + 1
        total += printed
        if total > MAX_VALUE_CHARS:
            break
    need(total, "this %-formatting")


def check_replace(value: Any, old: Any, new: Any, count: Any = None) -> None:
    text, old_s, new_s = str(value), str(old), str(new)
    hits = text.count(old_s) if old_s else len(text) + 1
    if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
        hits = min(hits, count)
    need(len(text) + hits * max(0, len(new_s) - len(old_s)), "this replace")


def check_width(value: Any, width: Any, what: str) -> None:
    if isinstance(width, int) and not isinstance(width, bool):
        need(max(len(str(value)), width), what)


def _json_shape(value: Any) -> tuple[int, int]:
    """(number of nodes, deepest nesting) of a JSON-like value, giving up past the limits."""
    nodes_, deepest = 0, 0
    stack = [(value, 1)]
    while stack and nodes_ <= MAX_VALUE_CHARS:
        item, depth = stack.pop()
        nodes_ += 1
        deepest = max(deepest, depth)
        if isinstance(item, Mapping):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((v, depth + 1) for v in item)
    return nodes_, deepest


def check_indented(value: Any, indent: Any, what: str) -> None:
    """Pretty-printing writes one line per node indented by its depth: nodes * depth * indent."""
    if not isinstance(indent, int) or isinstance(indent, bool) or indent <= 0:
        return
    if indent > MAX_JSON_INDENT:
        raise TemplateLimit(f"template limit: {what} indents by at most {MAX_JSON_INDENT}")
    count, depth = _json_shape(value)
    need(weight(value) + count * depth * indent, what)


# ------------------------------------------------------------------------------------------ filters


def _pre_center(env: Any, value: Any, width: Any = 80, *_: Any, **__: Any) -> None:
    check_width(value, width, "center")


def _pre_indent(env: Any, s: Any, width: Any = 4, *_: Any, **__: Any) -> None:
    text = str(s)
    pad = width if isinstance(width, int) and not isinstance(width, bool) else len(str(width))
    need(len(text) + (text.count("\n") + 1) * max(0, pad), "indent")


def _pre_replace(env: Any, s: Any, old: Any = "", new: Any = "", count: Any = None, **__: Any) -> None:
    check_replace(s, old, new, count)


def _pre_format(env: Any, value: Any, *args: Any, **kwargs: Any) -> None:
    check_percent(str(value), kwargs or args)


def _pre_wordwrap(
    env: Any, s: Any, width: Any = 79, _long: Any = True, wrapstring: Any = None, *_: Any, **kw: Any
) -> None:
    text = str(s)
    wrap = kw.get("wrapstring", wrapstring)
    sep = len(str(wrap)) if wrap is not None else len(env.newline_sequence)
    w = kw.get("width", width)
    per_line = w if isinstance(w, int) and not isinstance(w, bool) and w > 0 else 1
    lines = len(text) // 2 + len(text) // per_line + text.count("\n") + 1
    need(len(text) + lines * sep, "wordwrap")


def _pre_count(position: int, keyword: str, what: str) -> Callable[..., None]:
    def pre(env: Any, *args: Any, **kwargs: Any) -> None:
        n = kwargs.get(keyword, args[position] if len(args) > position else None)
        if isinstance(n, int) and not isinstance(n, bool):
            need_items(n, what)

    return pre


def _pre_list(env: Any, value: Any, *_: Any, **__: Any) -> None:
    if isinstance(value, str):
        need_items(len(value), "list")


def _pre_urlize(env: Any, value: Any, *args: Any, **kwargs: Any) -> None:
    text = str(value)
    extra = sum(len(str(v)) for v in (*args, *kwargs.values()) if isinstance(v, str))
    need(3 * len(text) + (len(text) // 4 + 1) * (extra + 64), "urlize")


def _pre_pprint(env: Any, value: Any, *_: Any, **__: Any) -> None:
    check_indented(value, 1, "pprint")


def _pre_tojson(env: Any, value: Any, indent: Any = None, **kwargs: Any) -> None:
    check_indented(value, kwargs.get("indent", indent), "tojson")


_PRECHECKS: dict[str, Callable[..., None]] = {
    "center": _pre_center,
    "indent": _pre_indent,
    "replace": _pre_replace,
    "format": _pre_format,
    "wordwrap": _pre_wordwrap,
    "batch": _pre_count(1, "linecount", "batch"),
    "slice": _pre_count(1, "slices", "slice"),
    "list": _pre_list,
    "urlize": _pre_urlize,
    "pprint": _pre_pprint,
    "tojson": _pre_tojson,
}


@pass_environment
def _join(environment: Any, value: Any, d: Any = "", attribute: Any = None) -> str:
    """``join``, sized before it is built (the items are counted and weighed, then joined)."""
    items = bounded_list(value, "join")
    if attribute is not None:
        getter = make_attrgetter(environment, attribute)
        items = [getter(item) for item in items]
    sep = str(d)
    need(sum(weight(i) for i in items) + len(sep) * max(0, len(items) - 1), "join")
    return sep.join(map(str, items))


@pass_environment
def _sum(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    """``sum``: numbers as usual; lists are concatenated once (Python's ``sum`` of lists is quadratic)."""
    items = bounded_list(iterable, "sum")
    if attribute is not None:
        getter = make_attrgetter(environment, attribute)
        items = [getter(item) for item in items]
    if isinstance(start, list | tuple):
        out = list(start)
        for item in items:
            need_items(len(out) + len(item), "sum")
            out.extend(item)
        return out
    if all(isinstance(i, int) for i in items) and isinstance(start, int):
        need_bits(max((abs(i).bit_length() for i in items), default=0) + len(items).bit_length(), "sum")
    return sum(items, start)


def bounded_filter(name: str, f: Callable[..., Any]) -> Callable[..., Any]:
    """``f`` that spends an operation, is sized first where an argument controls its result's size,
    and whose result is checked."""
    pre = _PRECHECKS.get(name)
    passes = getattr(f, "jinja_pass_arg", None) is not None
    what = f"the {name} filter's result"

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        tick()
        if pre is not None:
            user = args[1:] if passes else args
            pre(_env_of(args[0]) if passes else None, *user, **kwargs)
        return checked(f(*args, **kwargs), what)

    return wrapper


def _env_of(first: Any) -> Any:
    return getattr(first, "environment", first)  # a context / eval context, or the environment


# ------------------------------------------------------------------------------------------- calls


def check_method(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Methods of strings whose result size an argument controls."""
    owner = getattr(obj, "__self__", None)
    if not isinstance(owner, str):
        return
    name = getattr(obj, "__name__", "")
    first = args[0] if args else None
    if name in ("center", "ljust", "rjust", "zfill"):
        check_width(owner, kwargs.get("width", first), name)
    elif name == "expandtabs":
        size = kwargs.get("tabsize", first if first is not None else 8)
        if isinstance(size, int) and not isinstance(size, bool):
            need(len(owner) + owner.count("\t") * max(0, size), name)
    elif name == "replace" and len(args) >= 2:
        check_replace(owner, args[0], args[1], args[2] if len(args) > 2 else kwargs.get("count"))
    elif name == "join" and args:
        items = bounded_list(first, "join")
        need(sum(weight(i) for i in items) + len(owner) * max(0, len(items) - 1), "join")
    elif name == "translate" and isinstance(first, Mapping):
        longest = max((len(v) for v in first.values() if isinstance(v, str)), default=1)
        need(len(owner) * max(1, longest), "translate")


class _Metered(string.Formatter):
    """``str.format``: each field's width/precision is bounded before formatting; the total after each."""

    _total = 0

    def vformat(self, format_string: str, args: Any, kwargs: Any) -> str:
        self._total = len(format_string)
        return super().vformat(format_string, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> Any:
        for number in re.findall(r"\d+", format_spec):
            if len(number) > 9 or int(number) > MAX_VALUE_CHARS:
                need(MAX_VALUE_CHARS + 1, f"the format field {{:{format_spec[:40]}}}")
        out = super().format_field(value, format_spec)
        self._total += len(out)
        need(self._total, "this str.format")
        return out


class _BoundedFormatter(_Metered, SandboxedFormatter):
    pass


class _BoundedEscapeFormatter(_Metered, SandboxedEscapeFormatter):
    pass


# ------------------------------------------------------------------------------------ environment


class _Generator(CodeGenerator):
    """Compiles ``a ~ b`` to a sized join instead of Jinja's unchecked ``str_join``."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write(f"environment.{_JOIN}((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def _sized_concat(parts: Iterable[Any]) -> str:
    """``environment.concat`` (block captures, macro bodies): add the sizes up before joining."""
    items = parts if isinstance(parts, list) else list(parts)
    need(sum(len(p) for p in items), "this block of output")
    return "".join(items)


def _finalize(value: Any) -> Any:
    text = value if isinstance(value, str) else str(value)
    emit(len(text))
    return text


class BoundedSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    code_generator_class = _Generator

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=_finalize, **options)
        self.concat = _sized_concat  # type: ignore[assignment]

    def bound_filters(self) -> None:
        """Wrap every filter registered so far (call after adding the workflow's own)."""
        self.filters.update(join=_join, sum=_sum)
        for name, f in list(self.filters.items()):
            self.filters[name] = bounded_filter(name, f)

    # -- every {% for %} iterates through Counted (the tree is rewritten just before code generation)

    def _generate(self, source: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(source, nodes.Node):
            for loop in list(source.find_all(nodes.For)):
                loop.iter = nodes.Call(
                    nodes.EnvironmentAttribute(_ITER), [loop.iter], [], None, None, lineno=loop.lineno
                )
        return super()._generate(source, *args, **kwargs)

    def hopflow_iter(self, items: Any) -> Counted:
        return Counted(items)

    def hopflow_join(self, parts: tuple[Any, ...]) -> str:
        tick()
        texts = [p if isinstance(p, str) else str(p) for p in parts]
        need(sum(len(t) for t in texts), "this ~ concatenation")
        return "".join(texts)

    # -- operators and calls

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        tick()
        check_binop(operator, left, right)
        return checked(super().call_binop(context, operator, left, right), f"the result of {operator}")

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        tick()
        if isinstance(__obj, LoopContext) and args:  # `loop(children)` in a recursive loop
            args = (Counted(args[0]), *args[1:])
        check_method(__obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        return checked(result, "the call's result")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        owner = value.__self__
        formatter = (
            _BoundedEscapeFormatter(self, escape=owner.escape)
            if isinstance(owner, Markup)
            else _BoundedFormatter(self)
        )
        is_map = value.__name__ == "format_map"

        def bounded(*args: Any, **kwargs: Any) -> str:
            tick()
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one positional argument")
                args, kwargs = (), args[0]
            return type(owner)(formatter.vformat(owner, args, kwargs))

        return functools.update_wrapper(bounded, value)


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse an operator whose result would be too large, from its operands' sizes alone."""
    if operator == "*":
        for seq, count in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(count, int) and not isinstance(count, bool):
                need_items(len(seq) * count, "this repetition")
        if _is_int(left) and _is_int(right):
            need_bits(abs(left).bit_length() + abs(right).bit_length(), "this product")
    elif operator == "**":
        if _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
            need_bits(math.log2(abs(left)) * right if right < 10**9 else math.inf, "this power")
    elif operator == "+":
        if isinstance(left, str) and isinstance(right, str):
            need(len(left) + len(right), "this concatenation")
        elif isinstance(left, list | tuple) and isinstance(right, list | tuple):
            need_items(len(left) + len(right), "this concatenation")
    elif operator == "%" and isinstance(left, str):
        check_percent(left, right)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
