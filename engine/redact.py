"""Secrets never leave the process: the values of ``env`` entries declared ``secret: true`` and the
rendered input and output of steps marked ``secret: true`` are replaced by ``[redacted]`` in every
text hopflow stores or shows for people.

Two ways a value is known to be secret, and where each applies:

* **by value**: every occurrence of a secret string of at least :data:`MIN_CHARS` characters (shorter
  ones would blank out ordinary words) is replaced, in error messages, history lines, the execution's
  output and error, and log records. The interpreter redacts before it stores (so a `hopflow status`
  in a shell without the secret variables set still shows nothing), and the views redact again with
  what they know (defence in depth);
* **by marking**: a secret step's input and output are what the values are taken from. The output is
  kept as is in the checkpoint, because later steps must read the real value; everything derived
  from it for people is redacted.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "[redacted]"
MIN_CHARS = 4


def secret_strings(value: Any) -> set[str]:
    """The strings (of at least :data:`MIN_CHARS` characters) inside a JSON-like value, keys apart."""
    out: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if len(item) >= MIN_CHARS:
                out.add(item)
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return out


def env_secrets(names: Iterable[str], environ: Mapping[str, str] | None = None) -> set[str]:
    """The values of the named variables where this process runs (unset ones contribute nothing)."""
    env = os.environ if environ is None else environ
    return {env[n] for n in names if len(env.get(n) or "") >= MIN_CHARS}


class Redactor:
    """Replaces every occurrence of the secret values it holds (longest first, so a secret that
    contains another is replaced whole)."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.values: list[str] = []
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        merged = set(self.values) | {v for v in values if isinstance(v, str) and len(v) >= MIN_CHARS}
        self.values = sorted(merged, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self.values)

    def text(self, text: str) -> str:
        for value in self.values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def value(self, value: Any) -> Any:
        """A copy of a JSON-like value with every string redacted (keys too: they can carry data)."""
        if not self.values:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value


# ------------------------------------------------------------------------------------------- logs

_known: set[str] = set()
_lock = threading.Lock()
_log_redactor = Redactor()


def remember(values: Iterable[str]) -> None:
    """Secret values this process has seen: log records are redacted with them from now on."""
    global _log_redactor
    fresh = {v for v in values if isinstance(v, str) and len(v) >= MIN_CHARS} - _known
    if not fresh:
        return
    with _lock:
        _known.update(fresh)
        _log_redactor = Redactor(_known)


def _redact_record(record: logging.LogRecord) -> None:
    redactor = _log_redactor
    if not redactor:
        return
    message = record.getMessage()
    clean = redactor.text(message)
    if clean != message:
        record.msg, record.args = clean, ()
    if record.exc_info and not record.exc_text:
        record.exc_text = redactor.text(logging.Formatter().formatException(record.exc_info))


_installed = False


def install_log_filter() -> None:
    """Redact every record of hopflow's loggers (``hopflow`` and below) as it is made.

    A logger's filter sees only that logger's own records and handlers belong to the application,
    so the hook is the record factory: it catches loggers created at any time, and leaves every
    other library's records alone."""
    global _installed
    with _lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            if record.name == "hopflow" or record.name.startswith("hopflow."):
                _redact_record(record)
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
