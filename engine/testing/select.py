"""``-k EXPR``: pytest's keyword expressions over a case's id (``FILE::case name``).

Words match case-insensitively as substrings; ``and``, ``or``, ``not`` and parentheses combine them
(``-k "refund and not timeout"``). Anything else in a word (``-``, ``.``, ``/``) is part of the word.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_TOKEN = re.compile(r"\s*(\(|\)|[^\s()]+)")


class SelectError(ValueError):
    """An expression that cannot be read (one line for the CLI)."""


def matcher(expression: str) -> Callable[[str], bool]:
    tokens = [t for t in _TOKEN.findall(expression) if t]
    if not tokens:
        return lambda _text: True
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def primary() -> Callable[[str], bool]:
        token = peek()
        if token is None:
            raise SelectError(f"-k {expression!r}: the expression ends too early")
        if token == "(":
            take()
            inner = disjunction()
            if peek() != ")":
                raise SelectError(f"-k {expression!r}: a '(' is not closed")
            take()
            return inner
        if token in ("and", "or", ")"):
            raise SelectError(f"-k {expression!r}: unexpected {token!r}")
        if token == "not":
            take()
            operand = primary()
            return lambda text: not operand(text)
        word = take().lower()
        return lambda text: word in text.lower()

    def conjunction() -> Callable[[str], bool]:
        parts = [primary()]
        while peek() == "and":
            take()
            parts.append(primary())
        return lambda text: all(p(text) for p in parts)

    def disjunction() -> Callable[[str], bool]:
        parts = [conjunction()]
        while peek() == "or":
            take()
            parts.append(conjunction())
        return lambda text: any(p(text) for p in parts)

    result = disjunction()
    if peek() is not None:
        raise SelectError(f"-k {expression!r}: unexpected {peek()!r}")
    return result
