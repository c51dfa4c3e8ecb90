"""Columns between hopflow (Unicode code points) and LSP clients (UTF-16 code units by default).

A character outside the Basic Multilingual Plane (an emoji, a rare CJK ideograph) is one code point
but two UTF-16 units; positions after it differ by one per such character. The client may negotiate
UTF-8 or UTF-32 instead (``positionEncoding``); both are supported.
"""

from __future__ import annotations

UTF16 = "utf-16"
UTF8 = "utf-8"
UTF32 = "utf-32"


def _units(ch: str, encoding: str) -> int:
    if encoding == UTF32:
        return 1
    if encoding == UTF8:
        return len(ch.encode("utf-8", "surrogatepass"))
    return 2 if ord(ch) > 0xFFFF else 1


def to_client(line: str, index: int, encoding: str = UTF16) -> int:
    """Code point ``index`` (0-based) of ``line`` → the client's column (0-based, in its units)."""
    index = max(0, min(index, len(line)))
    if encoding == UTF32:
        return index
    return sum(_units(ch, encoding) for ch in line[:index])


def from_client(line: str, column: int, encoding: str = UTF16) -> int:
    """The client's 0-based column in ``line`` → a code point index (0-based). A column inside a
    character (half a surrogate pair) or past the end is clamped to the character / the end."""
    if encoding == UTF32:
        return max(0, min(column, len(line)))
    used = 0
    for i, ch in enumerate(line):
        if used >= column:
            return i
        used += _units(ch, encoding)
        if used > column:
            return i
    return len(line)
