"""How to fix a value or key that the schema rejects: the hint half of a diagnostic.

The schema layer knows *what* is wrong (a string where a mapping goes, an unknown key); this module
knows the usual *why* and says how to write it instead: YAML 1.1 reading ``12:30`` as a number or
``on`` as a boolean, the shorthand ``workflow: child`` for ``workflow: {name: child}``, ``5 min`` for
``5m``, words from other workflow languages (``then``, ``do``, ``args``) for ours, invisible
characters in a key. Every function returns a fragment to append, or ``None``.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

# Words authors bring from other tools, by the place they write them: place → {their word: ours}.
# A place is a schema title ("Step", "Switch case", …); "*" applies everywhere.
SYNONYMS: dict[str, dict[str, str]] = {
    "*": {},
    "Step": {
        "name": "id",
        "uses": "action",
        "run": "action",
        "call": "action",
        "sleep": "wait",
        "delay": "wait",
        "pause": "wait",
        "request": "http",
        "fetch": "http",
        "subworkflow": "workflow",
        "assign": "set",
        "vars": "set",
        "variables": "set",
        "when": "if",
        "condition": "if",
        "only_if": "if",
        "goto": "next",
        "then": "next",
        "on_error": "catch",
        "rescue": "catch",
        "except": "catch",
        "errors": "catch",
        "undo": "compensate",
        "rollback": "compensate",
        "compensation": "compensate",
        "retries": "retry",
        "params": "with",
        "args": "with",
        "arguments": "with",
        "inputs": "with",
        "parameters": "with",
        "result": "output",
        "returns": "output",
        "branches": "parallel",
        "loop": "foreach",
        "for_each": "foreach",
        "map": "foreach",
        "raise": "fail",
        "throw": "fail",
        "error": "fail",
        "return": "succeed",
        "end": "succeed",
        "choice": "switch",
        "choose": "switch",
        "cases": "switch",
    },
    "Switch case": {
        "then": "goto",
        "to": "goto",
        "jump": "goto",
        "next": "goto",
        "target": "goto",
        "when": "if",
        "condition": "if",
        "case": "if",
        "else": "default",
        "otherwise": "default",
    },
    "Catch entry": {
        "error": "errors",
        "on": "errors",
        "names": "errors",
        "then": "goto",
        "to": "goto",
        "next": "goto",
    },
    "Retry policy": {
        "attempts": "max_attempts",
        "retries": "max_attempts",
        "max_retries": "max_attempts",
        "times": "max_attempts",
        "count": "max_attempts",
        "delay": "interval",
        "wait": "interval",
        "initial_interval": "interval",
        "factor": "backoff",
        "multiplier": "backoff",
        "max_delay": "max_interval",
        "errors": "on",
        "retry_on": "on",
        "when": "on",
    },
    "Wait": {
        "delay": "for",
        "duration": "for",
        "sleep": "for",
        "seconds": "for",
        "time": "until",
        "at": "until",
        "when": "until",
        "deadline": "until",
        "name": "event",
        "signal": "event",
        "match": "key",
        "correlation": "key",
        "correlation_id": "key",
    },
    "Foreach": {
        "do": "steps",
        "body": "steps",
        "each": "items",
        "in": "items",
        "over": "items",
        "list": "items",
        "var": "as",
        "item": "as",
        "name": "as",
        "parallelism": "concurrency",
        "max_concurrency": "concurrency",
        "limit": "concurrency",
    },
    "Parallel block": {"steps": "branches", "tasks": "branches"},
    "Branch": {"do": "steps", "body": "steps"},
    "Child workflow": {
        "args": "input",
        "params": "input",
        "payload": "input",
        "with": "input",
        "arguments": "input",
        "workflow": "name",
        "id": "name",
    },
    "HTTP request": {
        "uri": "url",
        "endpoint": "url",
        "verb": "method",
        "data": "json",
        "payload": "json",
        "params": "query",
        "query_params": "query",
        "header": "headers",
        "status": "expect",
        "expected": "expect",
        "expect_status": "expect",
    },
    "Fail": {"name": "error", "code": "error", "reason": "message", "msg": "message"},
    "Succeed": {"result": "output", "value": "output", "return": "output"},
    "Defaults": {"retries": "retry"},
    "hopflow workflow": {"title": "name", "id": "name", "vars": "env", "environment": "env"},
}


def synonym(place: str | None, key: str, allowed: list[str]) -> str | None:
    """Our word for ``key`` at ``place`` when the author used another tool's word for it."""
    for table in (SYNONYMS.get(place or "", {}), SYNONYMS["*"]):
        ours = table.get(key) or table.get(key.lower())
        if ours is not None and ours in allowed:
            return ours
    return None


def invisible(key: str) -> str | None:
    """The name of an invisible or look-alike character hiding in a key, if any."""
    if any(ch.isascii() and ch.isalpha() for ch in key):
        for ch in key:
            if not ch.isascii() and ch.isalpha():
                name = unicodedata.name(ch, "")
                if name.startswith(("CYRILLIC", "GREEK")):
                    return f"it contains a look-alike letter (U+{ord(ch):04X} {name}): retype it"
    for ch in key:
        if ch.isascii() and (ch.isprintable() or ch in " \t"):
            continue
        category = unicodedata.category(ch)
        if category in ("Cf", "Zs", "Cc", "Mn") or ch in "\u2010\u2011\u2012\u2013\u2014\u2212":
            name = unicodedata.name(ch, f"U+{ord(ch):04X}")
            return f"it contains an invisible or look-alike character (U+{ord(ch):04X} {name}): retype it"
    return None


# ------------------------------------------------------------------------------------ YAML 1.1 readings

_BOOL_WORDS = {"yes", "no", "on", "off", "y", "n"}


def yaml_reading(source: str | None, value: Any) -> str | None:
    """When YAML 1.1 turned the author's unquoted text into something else, say so."""
    if source is None:
        return None
    text = source.strip()
    if isinstance(value, bool) and text.lower() in _BOOL_WORDS:
        return f"YAML reads an unquoted {text} as the boolean {str(value).lower()}; quote it: '{text}'"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if re.fullmatch(r"[-+]?\d+(:[0-5]?\d)+(\.\d*)?", text):
            return f"YAML 1.1 reads the unquoted {text} as the base-60 number {value:g}; quote it: '{text}'"
        if re.fullmatch(r"[-+]?0[0-7]+", text) or text.lower().startswith(("0x", "0b", "0o")):
            return f"YAML reads the unquoted {text} as the number {value:g}; quote it: '{text}'"
        if "_" in text:
            return f"YAML reads the unquoted {text} as the number {value:g}; quote it: '{text}'"
    if value is None and text.lower() in ("null", "~"):
        return f"YAML reads an unquoted {text} as null (no value); quote it: '{text}'"
    return None


# --------------------------------------------------------------------------------------------- durations

_UNIT_WORDS = {
    "ms": "ms",
    "msec": "ms",
    "msecs": "ms",
    "millisecond": "ms",
    "milliseconds": "ms",
    "s": "s",
    "sec": "s",
    "secs": "s",
    "second": "s",
    "seconds": "s",
    "m": "m",
    "min": "m",
    "mins": "m",
    "minute": "m",
    "minutes": "m",
    "h": "h",
    "hr": "h",
    "hrs": "h",
    "hour": "h",
    "hours": "h",
    "d": "d",
    "day": "d",
    "days": "d",
}


def duration_fix(text: str) -> str | None:
    """``'5 min'`` → ``'5m'``, ``'1 hour 30 minutes'`` → ``'1h30m'``, ``'5S'`` → ``'5s'``; else None."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([A-Za-z]+)", text)
    if not parts or re.sub(r"[\d.\sA-Za-z,]|and", "", text):
        return None
    out = ""
    for number, unit in parts:
        ours = _UNIT_WORDS.get(unit.lower())
        if ours is None or (unit == "M" and ours == "m"):
            return None
        out += number + ours
    return out if out != text else None


def duration_hint(value: Any) -> str | None:
    """Why a value is not a duration, for values that are close to one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        shown = f"{value:g}"
        return f"a number needs a unit: write '{shown}s' for seconds (or ms, m, h, d)"
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("-"):
            return "a duration cannot be negative"
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return f"a number needs a unit: write '{text}s' for seconds (or ms, m, h, d)"
        if re.fullmatch(r"P(T?\d+[DHMS])+", text.upper()):
            return "ISO-8601 durations are not used here: write e.g. '30s', '5m' or '1h30m'"
        fixed = duration_fix(text)
        if fixed is not None:
            return f"did you mean {fixed!r}?"
    return None


# ------------------------------------------------------------------------------------------ shorthands


def _flow(value: Any) -> str:
    if isinstance(value, str):
        return value if re.fullmatch(r"[\w.\-/ ]+", value) and value.strip() == value else repr(value)
    if value is None:
        return "…"
    return str(value).lower() if isinstance(value, bool) else str(value)


def shorthand(key: str, value: Any) -> str | None:
    """The mapping form the author probably meant for a scalar (or list) written where a mapping goes."""
    v = _flow(value)
    if key == "workflow" and isinstance(value, str):
        return f"write workflow: {{name: {v}}}"
    if key == "fail" and isinstance(value, str):
        return f"write fail: {{error: {v}}}"
    if key == "succeed":
        if value is None:
            return "write succeed: {} (or succeed: {output: …})"
        return f"write succeed: {{output: {v}}}"
    if key == "wait" and isinstance(value, str | int | float) and not isinstance(value, bool):
        if isinstance(value, str) and "{{" in value:
            return f"write wait: {{until: {value!r}}} for a point in time"
        if isinstance(value, str) and re.match(r"\d{4}-\d\d-\d\d", value):
            return f"write wait: {{until: {value!r}}}"
        if isinstance(value, str) and re.fullmatch(r"[A-Za-z][\w.-]*", value) and not duration_fix(value):
            return f"write wait: {{event: {v}, key: '{{{{ … }}}}'}} to wait for an event"
        duration = value if isinstance(value, str) else f"{value:g}s"
        return f"write wait: {{for: {duration}}}"
    if key == "http" and isinstance(value, str):
        return f"write http: {{url: {value!r}}}"
    if key == "retry" and isinstance(value, int) and not isinstance(value, bool):
        return f"write retry: {{max_attempts: {value}}}"
    if key == "foreach" and isinstance(value, str | list):
        return "write foreach: {items: …, steps: [...]}"
    if key == "parallel" and isinstance(value, list):
        return "write parallel: {branches: [{steps: [...]}, …]}: each branch holds its own list of steps"
    if key == "compensate" and isinstance(value, str):
        return f"write compensate: {{action: {v}}}"
    if key == "catch" and isinstance(value, dict):
        return "write catch as a list: catch: [{errors: [...], goto: id}] (start each entry with '- ')"
    if key == "switch" and isinstance(value, dict):
        if "cases" in value:
            return (
                "switch is the list of cases itself: remove 'cases:' and put its '- if: …' items "
                "under switch:"
            )
        return "switch is a list of cases: start each case with '- ', e.g. - {if: '{{ … }}', goto: id}"
    if key == "env":
        if isinstance(value, str):
            return f"write env: [{value}]"
        if isinstance(value, dict):
            names = ", ".join(str(k) for k in value)
            return (
                f"env lists names only, their values come from the process environment: write env: [{names}]"
            )
    if key == "headers" and isinstance(value, list):
        return "write headers as a mapping: headers: {Name: value} (without '- ')"
    if key == "set" and isinstance(value, list):
        return "write set as a mapping: set: {name: value} (without '- ')"
    if key == "with" and isinstance(value, list):
        return "write with as a mapping of argument names: with: {name: value}"
    if key == "steps" and isinstance(value, dict):
        return "start each step with '- ' (steps is a list)"
    return None


def list_hint(key: str, value: Any) -> str | None:
    """A single value written where a list goes: suggest the one-element list."""
    if isinstance(value, str | int) and not isinstance(value, bool):
        return f"write it as a list: {key}: [{value}]"
    if isinstance(value, dict):
        return "start each item with '- ' (this is a mapping, not a list)"
    return None


def number_hint(expected: str, value: Any) -> str | None:
    """``"3"`` where a number goes."""
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+(\.\d+)?\s*", value):
        return f"write {value.strip()} without quotes"
    if expected == "integer" and isinstance(value, float) and not value.is_integer():
        return "give a whole number"
    return None


STATIC_FIELDS = {
    "Step id": "a step id",
    "Workflow name": "a workflow name",
    "Event name": "an event name",
    "Duration": "a duration",
    "Error name": "an error name",
    "Raised error name": "an error name",
    "Item variable": "the item's name",
    "Environment name": "an environment variable name",
}


def static_template(title: str | None, value: Any) -> str | None:
    """A template where the language needs a fixed value, and why."""
    if not isinstance(value, str) or ("{{" not in value and "{%" not in value):
        return None
    what = STATIC_FIELDS.get(title or "")
    if what is None:
        return None
    why = "it must be known before the workflow runs (for the graph and the static checks)"
    if title == "Event name":
        return f"{what} cannot be a template: {why}; put what varies in 'key'"
    return f"{what} cannot be a template: {why}"


_KEY_LINE = re.compile(r"^(\s*)(?:-\s+)?([^\s#:'\"{}\[\],][^:#]*?):(?:\s+(#.*)?)?$")


def empty_parent(lines: list[str], row: int, indent: int, stop: int = -1) -> tuple[str, int] | None:
    """The key a line most likely belongs under, when it was not indented enough.

    ``lines[row]`` sits at ``indent``; scanning up through the keys of its own mapping (same
    indentation; lines deeper belong to a sibling's value, shallower ones end the mapping), the
    nearest sibling written ``key:`` with nothing after it — no value on its line and nothing indented
    under it — is the parent it was meant for: ``(key, 0-based row)``. ``stop`` (a 0-based row) bounds
    the scan. ``None`` when no such key exists.
    """
    for above in range(row - 1, stop, -1):
        text = lines[above]
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        here = len(text) - len(text.lstrip(" "))
        if here > indent:
            return None  # a sibling with a value indented under it: that one is not empty
        if here < indent:
            return None  # the mapping starts here: no empty sibling above
        key = _KEY_LINE.match(text)
        if key is not None and not stripped.startswith("- "):
            return key.group(2).strip(), above
    return None


def indent_under(parent: str, row: int, what: str = "this line") -> str:
    """The advice for a line that belongs under an empty ``parent:`` key at 0-based ``row``."""
    return (
        f"{what} probably belongs under '{parent}:' on line {row + 1}, which has no value: indent it "
        f"(and the lines that go with it) deeper than '{parent}'"
    )
