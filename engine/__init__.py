"""hopflow's runtime. Importing ``engine`` stays cheap: no Redis, httpx or Starlette until used.

``engine.action`` (the decorator that registers workflow actions) is resolved on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    from engine.actions import action as action

__all__ = ["action"]


def __getattr__(name: str) -> Any:
    if name == "action":
        from engine.actions import action

        return action
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
