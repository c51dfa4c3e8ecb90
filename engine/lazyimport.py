"""Heavy third-party modules imported the cheap way, on first use (cold starts of webhook calls).

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
