"""Heavy third-party modules imported the cheap way, on first use (cold starts of webhook calls).

Each function returns the module, importing it without the parts a server never uses when it is not
loaded yet; a later explicit import of such a part still works.

``import httpx`` also imports httpx's command line (``httpx._main``: rich, click, pygments) when
those are installed — as they are next to hopflow's own CLI — which is about half of httpx's import
time and is never used by a server. :func:`httpx` imports httpx without it.
"""

from __future__ import annotations

import sys
from types import ModuleType


def httpx() -> ModuleType:
    """The ``httpx`` module, without importing its command line when httpx is not loaded yet."""
    module = sys.modules.get("httpx")
    if module is not None:
        return module
    block = "httpx._main" not in sys.modules
    if block:
        # httpx's __init__ falls back to a stub ``main`` when ``._main`` cannot be imported
        sys.modules["httpx._main"] = None  # type: ignore[assignment]
    try:
        import httpx as module
    finally:
        if block and sys.modules.get("httpx._main", False) is None:
            del sys.modules["httpx._main"]  # a later explicit ``import httpx._main`` still works
    return module


# redis-py >= 8 asks at import time whether OpenTelemetry is installed, for metrics of its own that
# hopflow never turns on: with opentelemetry-sdk present (``hopflow[otel]``), that imports the SDK's
# whole metrics package (and psutil) — ~35 ms of a cold start, before the first command is sent.
_REDIS_OTEL_PROBES = ("opentelemetry.sdk.metrics", "opentelemetry.metrics")


def redis() -> ModuleType:
    """The ``redis`` module, imported without redis-py's OpenTelemetry probes when not loaded yet.

    redis-py then records that OpenTelemetry is unavailable *to itself*: its own optional metrics
    (``redis.observability``) stay off in this process, which hopflow never enables. hopflow's traces
    (:mod:`engine.observe.traces`) import OpenTelemetry themselves, later, unaffected.
    """
    module = sys.modules.get("redis")
    if module is not None:
        return module
    blocked = [name for name in _REDIS_OTEL_PROBES if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # "import x" raises ImportError
    try:
        import redis as module
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
    return module
