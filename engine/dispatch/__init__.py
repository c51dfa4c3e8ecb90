"""Dispatchers hand outgoing messages to whatever delivers them later: QStash, or the local Redis queue.

The interpreter sees only :class:`Dispatcher`; it never knows which one is behind it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from engine.model import Outgoing


class DispatchError(Exception):
    """Publishing failed for now (network, 5xx, 429); the caller leaves the outbox for a retry."""


class Dispatcher(Protocol):
    def publish(self, outgoing: Sequence[Outgoing]) -> None:
        """Hand every message over durably, or raise DispatchError. Must be idempotent per dedup id."""
        ...
