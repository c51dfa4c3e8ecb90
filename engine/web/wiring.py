"""Wiring a runtime from a :class:`~engine.config.Config`: Redis, the dispatcher, actions, the catalog.

The ASGI app builds its runtime with :func:`build_runtime` on the first request that needs one (a
platform's cold start pays for Redis and httpx only then); ``hopflow serve`` builds it eagerly to
fail fast. The local dispatcher's deliveries go in-process, or over HTTP signed with Ed25519
(:func:`http_delivery`) when the workers are other processes behind a load balancer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine import lazyimport
from engine.web.paths import FAILED_PATH, STEP_PATH

if TYPE_CHECKING:  # pragma: no cover - typing only
    from engine.config import Config
    from engine.model import Message
    from engine.runtime import Runtime

log = logging.getLogger("hopflow.asgi")


class LazyCatalog:
    """A :class:`~engine.catalog.Catalog` compiled on first use (cold starts of webhook calls skip it),
    through the graph cache (``cache``: ``HOPFLOW_CACHE_DIR``'s value; dsl/cache.py)."""

    def __init__(
        self,
        directory: str,
        *,
        time_budget_ms: int = 7500,
        cache: str | None = None,
        write_cache: bool = True,
    ) -> None:
        self.directory = directory
        self.time_budget_ms = time_budget_ms
        self.cache = cache
        self.write_cache = write_cache  # False: read a warm cache, write nothing (serve's preflight)
        self._catalog: Any = None
        self._lock = threading.Lock()

    def load(self) -> Any:
        with self._lock:
            if self._catalog is None:
                from dsl.cache import GraphCache
                from engine.catalog import Catalog

                self._catalog = Catalog.from_directory(
                    self.directory,
                    time_budget_ms=self.time_budget_ms,
                    cache=GraphCache.from_setting(self.cache, read_only=not self.write_cache),
                )
            return self._catalog

    def get(self, name: str) -> Any:
        return self.load().get(name)

    def names(self) -> list[str]:
        names: list[str] = self.load().names()
        return names

    def triggered_by(self, event: str) -> list[Any]:
        found: list[Any] = self.load().triggered_by(event)
        return found

    def __contains__(self, name: object) -> bool:
        return name in self.load()


def build_runtime(config: Config, *, redis: Any = None, catalog: Any = None, eager: bool = False) -> Runtime:
    """A runtime for ``config``: Redis (``REDIS_URL`` or embedded), the dispatcher, actions, catalog.

    The dispatcher is QStash when ``QSTASH_TOKEN`` is set (destination ``$HOPFLOW_PUBLIC_URL/v1/step``,
    failure callback ``/v1/step/failed``), otherwise the local Redis queue; its delivery loop is not
    started here (see :func:`local_delivery` and ``create_app``'s lifespan). ``eager`` compiles the
    catalog now (``hopflow serve`` fails fast on a bad workflow file).
    """
    from engine.actions import REGISTRY, load_modules

    lazyimport.redis()  # before engine.embedded's `import redis`: without redis-py's OTel probes
    from engine.embedded import redis_client
    from engine.runtime import Runtime
    from engine.state.redis_url import script_key_locking
    from engine.state.store import Store

    load_modules(config.actions)
    from dsl.cache import GraphCache
    from dsl.templates import set_code_cache

    set_code_cache(GraphCache.from_setting(config.cache_dir))  # compiled template code, on disk
    client = redis if redis is not None else redis_client(config.redis_url)
    if catalog is None:
        catalog = LazyCatalog(
            config.workflows_dir, time_budget_ms=round(config.time_budget_s * 1000), cache=config.cache_dir
        )
        if eager:
            catalog.load()
    dispatcher: Any
    if config.dispatcher_kind == "qstash":
        from engine.dispatch.qstash import QStashDispatcher

        if not config.public_url or not config.qstash_token:
            raise ValueError("QStash needs HOPFLOW_PUBLIC_URL")
        dispatcher = QStashDispatcher(
            config.qstash_token,
            config.qstash_url,
            config.public_url + STEP_PATH,
            failure_callback_url=config.public_url + FAILED_PATH,
            deadline_s=max(1.0, min(8.0, config.time_budget_s / 2)),
        )
    else:
        from engine.dispatch.local import LocalDispatcher
        from engine.state.namespace import queue_prefix

        dispatcher = LocalDispatcher(
            client, lease_s=max(60.0, 4 * config.time_budget_s), prefix=queue_prefix(config.namespace)
        )
    runtime = Runtime(
        Store(client, namespace=config.namespace, key_locking=script_key_locking(config.redis_url)),
        dispatcher,
        catalog,
        actions=REGISTRY,
        time_budget_s=config.time_budget_s,
        max_nodes_per_call=config.max_nodes_per_call,
        egress=config.egress(),
    )
    if config.dispatcher_kind == "local":
        dispatcher.deliver = local_delivery(runtime, config)
        dispatcher.on_dead = runtime.mark_dead
    return runtime


def local_delivery(runtime: Runtime, config: Config) -> Callable[[Message], None]:
    """How the local dispatcher's loop delivers: in-process, or over HTTP signed with Ed25519.

    In-process (the default) calls ``runtime.advance`` directly. With ``HOPFLOW_SIGNING_KEY`` *and*
    ``HOPFLOW_PUBLIC_URL`` set, each message is POSTed to ``$HOPFLOW_PUBLIC_URL/v1/step`` with a
    ``Hopflow-Signature`` header instead, so a load balancer can spread the work over several workers
    that share the Redis (each worker holds only ``HOPFLOW_VERIFY_KEYS``).
    """
    if config.signing_key and config.public_url:
        return http_delivery(
            config.public_url + STEP_PATH, config.signing_key, timeout_s=config.time_budget_s + 5.0
        )
    from engine.dispatch.inprocess import in_process_delivery

    return in_process_delivery(runtime)


class DeliveryFailed(Exception):
    """An HTTP delivery got a retryable answer (5xx, 401, connection error); the queue retries it."""


def http_delivery(
    url: str, signing_key: str, *, timeout_s: float = 15.0, client: Any = None
) -> Callable[[Message], None]:
    """``deliver`` that POSTs each message to ``url`` signed with Ed25519 (``Hopflow-Signature``)."""
    from engine.dispatch.local import Redeliver
    from engine.signing import sign_ed25519

    state: dict[str, Any] = {"client": client}
    lock = threading.Lock()

    def http() -> Any:
        with lock:
            if state["client"] is None:
                httpx = lazyimport.httpx()

                state["client"] = httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False)
            return state["client"]

    def deliver(message: Message) -> None:
        httpx = lazyimport.httpx()

        body = message.to_json()
        headers = {
            "Content-Type": "application/json",
            "Hopflow-Signature": sign_ed25519(body, url, signing_key),
        }
        try:
            response = http().post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"cannot reach {url}: {type(exc).__name__}") from None
        if response.status_code == 489:
            log.error("dropping delivery %s: %s", message.dedup_id, _problem_detail(response))
            return
        if not response.is_success:
            raise DeliveryFailed(f"{url} answered {response.status_code}: {_problem_detail(response)}")
        try:
            result = response.json().get("result")
        except (ValueError, AttributeError):
            result = None
        if result == "busy":
            raise Redeliver(0.2)

    return deliver


def _problem_detail(response: Any) -> str:
    try:
        return str(response.json().get("detail"))[:300]
    except (ValueError, AttributeError):
        return response.text[:300]
