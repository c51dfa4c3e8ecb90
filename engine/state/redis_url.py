"""A Redis client from a URL: one standalone server, or a Redis Cluster (Valkey alike), chosen by the URL.

``connect(url)`` is the one place hopflow builds a client for a user's Redis:

* ``redis+cluster://[user:password@]host:port[,host:port…]`` (``rediss+cluster://`` with TLS) — a
  cluster, seeded from the listed nodes (any of them is enough; the client learns the rest).
* ``redis://`` / ``rediss://`` — asked once (``INFO cluster``) whether the server is a cluster node
  (``cluster_enabled:1``); if so the client becomes a ``redis.cluster.RedisCluster`` seeded from that
  node, so a cluster is used from the URL of any of its nodes without further configuration.
* ``unix://`` — always a standalone server (a cluster cannot be reached over a Unix socket).

Every key of one script call shares a hash tag (see :mod:`engine.state.store`), so the same scripts run on
both kinds of client. Detection costs one round trip when the process builds its client; if the
server cannot be reached then, :class:`ConnectError` is raised (the CLI prints it, the ASGI app
answers 5xx and builds again on the next request) instead of guessing the wrong kind of client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
PLAIN_SCHEMES = ("redis", "rediss", "unix")
UPSTASH_SUFFIX = "upstash.io"


class ConnectError(Exception):
    """A URL hopflow cannot use, or a server it cannot ask whether it is a cluster (one readable line)."""


class Unreachable(ConnectError):
    """The server did not answer (down, or a network problem): transient, unlike a bad URL."""


@dataclass(frozen=True)
class Target:
    """A parsed Redis URL (never printed whole: ``password`` is a secret)."""

    scheme: str  # redis, rediss or unix (the ``+cluster`` part removed)
    cluster: bool  # said so by the URL (redis+cluster://)
    nodes: tuple[tuple[str, int], ...] = ()
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    query: tuple[tuple[str, str], ...] = ()

    @property
    def tls(self) -> bool:
        return self.scheme == "rediss"

    @property
    def upstash(self) -> bool:
        """Upstash Redis (by its host name): a single endpoint with its own scripting rules."""
        return any(h.lower().rstrip(".").endswith(UPSTASH_SUFFIX) for h, _ in self.nodes)


def parse(url: str) -> Target:
    """``url`` → :class:`Target`; :class:`ConnectError` with a readable reason when it is unusable."""
    if "://" not in url:
        raise ConnectError("REDIS_URL is not a redis://, rediss://, unix:// or redis+cluster:// URL")
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    if scheme in CLUSTER_SCHEMES:
        cluster, scheme = True, CLUSTER_SCHEMES[scheme]
    elif scheme in PLAIN_SCHEMES:
        cluster = False
    else:
        raise ConnectError("REDIS_URL is not a redis://, rediss://, unix:// or redis+cluster:// URL")
    if scheme == "unix":
        return Target("unix", False)
    rest, _, query = rest.partition("?")
    userinfo, at, hostlist = rest.rpartition("@")
    if not at:
        userinfo, hostlist = "", rest
    hostlist, _, path = hostlist.partition("/")
    username = password = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")  # as redis.Redis.from_url reads it
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    nodes = []
    for item in hostlist.split(","):
        item = item.strip()
        if not item:
            continue
        host, port = _host_port(item)
        nodes.append((host, port))
    if not nodes:
        raise ConnectError("REDIS_URL names no host")
    if len(nodes) > 1 and not cluster:
        raise ConnectError(
            "REDIS_URL lists several hosts; for a cluster write redis+cluster://host:port,host:port"
        )
    db = 0
    if path.strip("/"):
        try:
            db = int(path.strip("/"))
        except ValueError:
            raise ConnectError(f"REDIS_URL's database {path.strip('/')!r} is not a number") from None
    if cluster and db != 0:
        raise ConnectError("a Redis Cluster has only database 0; drop the /N from REDIS_URL")
    return Target(scheme, cluster, tuple(nodes), username, password, db, tuple(parse_qsl(query)))


def _host_port(item: str) -> tuple[str, int]:
    if item.startswith("["):  # [::1]:6379
        host, _, tail = item[1:].partition("]")
        port_text = tail.lstrip(":")
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
    try:
        port = int(port_text) if port_text else 6379
    except ValueError:
        raise ConnectError(f"REDIS_URL's port {port_text!r} is not a number") from None
    if not host or not 0 < port < 65536:
        raise ConnectError(f"REDIS_URL's host:port {item!r} is not usable")
    return host, port


def connect(url: str, **kwargs: Any) -> Any:
    """A ``redis.Redis`` or a ``redis.cluster.RedisCluster`` for ``url`` (see the module docstring).

    Keyword arguments go to the client (timeouts, retry, ``decode_responses``, ``client_name``).
    """
    import redis

    target = parse(url)
    if target.cluster:
        return _cluster(target, kwargs)
    client = redis.Redis.from_url(url, **kwargs)
    if target.scheme == "unix":
        return client
    try:
        enabled = _cluster_enabled(client)
    except redis.exceptions.ResponseError as exc:
        if target.db != 0:  # SELECT N refused: a cluster node (Redis) or an index out of range (Valkey)
            client.close()
            raise ConnectError(
                f"cannot use database {target.db} of this Redis ({str(exc)[:80]}); "
                "a cluster has only database 0: drop the /N from REDIS_URL"
            ) from None
        enabled = False  # INFO disabled or renamed (some managed services): not a cluster we could use
    except redis.exceptions.RedisError as exc:
        client.close()
        raise Unreachable(
            f"cannot reach Redis to see whether it is a cluster: {type(exc).__name__}"
        ) from None
    if not enabled:
        return client
    client.close()
    if target.db != 0:
        raise ConnectError("this Redis is a cluster node, and a cluster has only database 0; drop the /N")
    return _cluster(target, kwargs)


def _cluster_enabled(client: Any) -> bool:
    info = client.info("cluster")
    return str(info.get("cluster_enabled", "0")) in ("1", "True", "true")


def _cluster(target: Target, kwargs: dict[str, Any]) -> Any:
    from redis.cluster import ClusterNode, RedisCluster

    options = dict(kwargs)
    options.pop("single_connection_client", None)
    options.pop("db", None)
    for key, value in target.query:  # ?ssl_cert_reqs=none and the like, as redis.from_url takes them
        options.setdefault(key, value)
    if target.username:
        options.setdefault("username", target.username)
    if target.password is not None:
        options.setdefault("password", target.password)
    if target.tls:
        options.setdefault("ssl", True)
    try:
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in target.nodes], **options)
    except Exception as exc:  # RedisClusterException, connection errors: none of the nodes answered
        raise Unreachable(f"cannot reach the Redis Cluster: {type(exc).__name__}: {exc}") from None


def script_key_locking(url: str | None) -> bool:
    """Whether hopflow's fully declared scripts carry Upstash's ``allow-key-locking`` flag: on for an
    Upstash host, ``HOPFLOW_SCRIPT_KEY_LOCKING=1``/``0`` decides otherwise (Redis and Valkey refuse
    the flag, so it is never on for them by default)."""
    import os

    forced = os.environ.get("HOPFLOW_SCRIPT_KEY_LOCKING", "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    if not url:
        return False
    try:
        return parse(url).upstash
    except ConnectError:
        return False


def is_cluster(client: Any) -> bool:
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster)


def describe(client: Any) -> dict[str, Any]:
    """What ``hopflow doctor`` shows: mode, the server (Redis or Valkey, its version), and the nodes."""
    info = client.info("server")
    if is_cluster(client):  # RedisCluster.info answers per node: {"host:port": {...}}
        per_node = [v for v in info.values() if isinstance(v, dict)]
        info = per_node[0] if per_node else info
    flavour = "Valkey" if info.get("server_name") == "valkey" or "valkey_version" in info else "Redis"
    version = str(info.get("valkey_version") or info.get("redis_version") or "?")
    out: dict[str, Any] = {"mode": "standalone", "server": flavour, "version": version, "nodes": []}
    if is_cluster(client):
        out["mode"] = "cluster"
        out["nodes"] = sorted(f"{n.host}:{n.port} {n.server_type}" for n in client.get_nodes())
    return out
