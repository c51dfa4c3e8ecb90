"""Write ``bench/RESULTS.md``: hopflow's rows side by side with their baselines, from one run.

    python bench/results.py            # ≥ 5 interleaved repetitions (a few minutes)
    python bench/results.py --quick    # the smoke test: tiny sizes, 2 repetitions, no file unless --out

Every repetition runs every row once, in the same order (interleaved), so a burst of load on a
shared machine hits all rows alike; each row is the median with min and max over the repetitions,
and the headline figures are **ratios** between rows of the same run, never absolute claims. The
file records the machine, the date and the load average, so a run on a busy machine says so.

Rows (the pieces are those of ``bench/engine.py``; its docstring says how each is wired):

* interpreter per node, ``set`` and ``action`` steps each writing a 10 KB output, at N small and
  large (node 10 vs node 1,000: the cost of a node must not grow with the execution's length);
* ``hopflow run`` (local dispatcher, in process) marginal cost per node with ``action`` steps, as a
  ratio to the floor of two Redis round trips (two ``PING``s on the same socket) measured in the run;
* cold start: a fresh process answering its first signed webhook call, vs a fresh process importing
  the upstash-workflow SDK app (``bench/peers/upstash_peer.py``; its first call is not driven here);
* ``hopflow validate`` vs ``check-jsonschema`` on one file, process start to exit.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BLOB = "x" * 10_240  # a 10 KB output per step
COLD_HOPFLOW = "hopflow: first signed webhook call, fresh process"
COLD_PEER = "upstash-workflow SDK app: import only, fresh process"


def _bench_engine() -> Any:
    spec = importlib.util.spec_from_file_location("bench_engine", ROOT / "bench" / "engine.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_engine"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def set_yaml(name: str, steps: int) -> str:
    body = "\n".join(f"  - id: s{i}\n    set: {{blob: '{BLOB}'}}" for i in range(steps))
    return f"name: {name}\nsteps:\n{body}\n"


def action_yaml(name: str, steps: int) -> str:
    body = "\n".join(f"  - id: a{i}\n    action: bench.blob" for i in range(steps))
    return f"name: {name}\nsteps:\n{body}\n"


class Row:
    def __init__(self, label: str, unit: str, sample: Callable[[], float]) -> None:
        self.label, self.unit, self.sample = label, unit, sample
        self.values: list[float] = []

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def cells(self) -> str:
        return f"{self.median:,.1f} | {min(self.values):,.1f} | {max(self.values):,.1f}"


def process_ms(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    elapsed = (time.perf_counter() - start) * 1000
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(argv[:3])}… exited {proc.returncode}: {proc.stderr[-800:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="interleaved repetitions (default 5)")
    parser.add_argument("--small", type=int, default=10, help="N of the short executions (default 10)")
    parser.add_argument("--large", type=int, default=1000, help="N of the long executions (default 1000)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 repetitions (smoke test)")
    parser.add_argument("--out", help="where to write (default bench/RESULTS.md; --quick: stdout only)")
    args = parser.parse_args()
    repeat, small, large = args.repeat, args.small, args.large
    if args.quick:
        repeat, small, large = 2, 3, 12
    if repeat < 1 or small < 1 or large <= small:
        parser.error("--repeat ≥ 1 and 1 ≤ --small < --large")
    out = Path(args.out) if args.out else (None if args.quick else ROOT / "bench" / "RESULTS.md")

    be = _bench_engine()
    from engine.actions import REGISTRY
    from engine.catalog import Catalog
    from engine.embedded import stop_embedded

    if "bench.blob" not in REGISTRY:
        REGISTRY.register("bench.blob", lambda ctx: {"blob": BLOB})
    tmp = Path(tempfile.mkdtemp(prefix="hopflow-bench-results-"))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HOPFLOW_", "QSTASH_", "REDIS_"))}
    clean["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), clean.get("PYTHONPATH")) if p)
    py = sys.executable
    try:
        texts = [
            f(f"{kind}-{n}", n)
            for kind, f in (("set", set_yaml), ("action", action_yaml))
            for n in (small, large)
        ]
        bench = be.Bench(tmp / ".hopflow", Catalog.from_texts(texts))
        runtimes = {memory: bench.runtime(memory=memory) for memory in (True, False)}
        store = bench.clients["store"]

        def run_ms(workflow: str, memory: bool) -> float:
            runtime, dispatcher = runtimes[memory]
            start = time.perf_counter()
            eid = runtime.start(workflow, {})
            if memory:
                while dispatcher.items:
                    runtime.advance(dispatcher.items.popleft().message)
            else:
                dispatcher.run_until(
                    lambda: (store.hget(f"hf:{{{eid}}}:h", "status") or b"").decode() in be.FINAL,
                    timeout_s=600,
                )
            elapsed = (time.perf_counter() - start) * 1000
            final = store.hget(f"hf:{{{eid}}}:h", "status")
            if final != b"succeeded":
                raise SystemExit(f"{workflow}: execution {eid} ended {final!r}")
            return elapsed

        def per_node(workflow: str, n: int, memory: bool) -> Callable[[], float]:
            return lambda: run_ms(workflow, memory) * 1000 / n

        def floor_us() -> float:
            samples = []
            for _ in range(200):
                start = time.perf_counter()
                store.ping()
                store.ping()
                samples.append((time.perf_counter() - start) * 1e6)
            return statistics.median(samples)

        def marginal_us(kind: str) -> Callable[[], float]:
            def sample() -> float:
                return (
                    (run_ms(f"{kind}-{large}", False) - run_ms(f"{kind}-{small}", False))
                    * 1000
                    / (large - small)
                )

            return sample

        # cold start: the hopflow child of bench/engine.py (one signed call) vs the SDK app's import
        from engine.egress import EgressPolicy
        from engine.runtime import Runtime
        from engine.signing import sign_qstash
        from engine.store import Store

        folder = tmp / "cold"
        folder.mkdir()
        (folder / "cold-webhook.yaml").write_text(be.COLD_YAML)
        queue = be.MemoryQueue()
        cold_rt = Runtime(
            Store(store), queue, Catalog.from_directory(folder), egress=EgressPolicy(allow_loopback=True)
        )
        public = "http://127.0.0.1:9/"
        stub = be.stub_qstash()
        qstash_url = stub.__enter__()
        cold_env = {
            **clean,
            "REDIS_URL": f"unix://{bench.socket}",
            "QSTASH_URL": qstash_url,
            "QSTASH_TOKEN": "bench-token",
            "QSTASH_CURRENT_SIGNING_KEY": be.QSTASH_KEY,
            "QSTASH_NEXT_SIGNING_KEY": be.QSTASH_NEXT,
            "HOPFLOW_PUBLIC_URL": public,
            "HOPFLOW_WORKFLOWS": str(folder),
        }

        def hopflow_cold() -> float:
            queue.items.clear()
            cold_rt.start("cold-webhook", {"name": "bench"})
            body = queue.items.popleft().message.to_json().decode()
            sig = sign_qstash(body.encode(), public + "v1/step", be.QSTASH_KEY)
            return process_ms([py, "-c", be.COLD_CHILD], {**cold_env, "BENCH_BODY": body, "BENCH_SIG": sig})

        peer = importlib.util.find_spec("upstash_workflow") is not None
        peer_env = {
            **cold_env,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "bench" / "peers"), clean["PYTHONPATH"]]),
        }
        target = ROOT / "workflows" / "dinner-reservation.yaml"
        hopflow_bin = shutil.which("hopflow", path=str(Path(py).parent))
        cj_bin = shutil.which("check-jsonschema", path=str(Path(py).parent))
        schema = ROOT / "schemas" / "workflow.schema.json"

        rows: list[Row] = [
            Row(f"interpreter, `set` 10 KB, N={small}", "µs/node", per_node(f"set-{small}", small, True)),
            Row(f"interpreter, `set` 10 KB, N={large}", "µs/node", per_node(f"set-{large}", large, True)),
            Row(
                f"interpreter, `action` 10 KB, N={small}", "µs/node", per_node(f"action-{small}", small, True)
            ),
            Row(
                f"interpreter, `action` 10 KB, N={large}", "µs/node", per_node(f"action-{large}", large, True)
            ),
            Row("two Redis round trips (2x PING), the floor", "µs", floor_us),
            Row("hopflow run, marginal per `action` node", "µs/node", marginal_us("action")),
            Row("hopflow run, marginal per `set` node", "µs/node", marginal_us("set")),
            Row("python -c pass", "ms", lambda: process_ms([py, "-c", "pass"], clean)),
            Row(COLD_HOPFLOW, "ms", hopflow_cold),
        ]
        if peer:
            rows.append(
                Row(
                    COLD_PEER,
                    "ms",
                    lambda: process_ms([py, "-c", "import upstash_peer"], peer_env),
                )
            )
        if hopflow_bin and target.exists():
            rows.append(
                Row(
                    "hopflow validate (1 file), process",
                    "ms",
                    lambda: process_ms([hopflow_bin, "validate", str(target)], clean),
                )
            )
        if cj_bin and target.exists():
            rows.append(
                Row(
                    "check-jsonschema (1 file), process",
                    "ms",
                    lambda: process_ms([cj_bin, "--schemafile", str(schema), str(target)], clean),
                )
            )

        for runtime_memory in (True, False):  # warm-up: scripts loaded, pools started
            run_ms(f"action-{small}", runtime_memory)
        load_before = os.getloadavg()
        for rep in range(repeat):
            for row in rows:
                row.values.append(row.sample())
            print(f"repetition {rep + 1}/{repeat} done", file=sys.stderr, flush=True)
        load_after = os.getloadavg()
        stub.__exit__(None, None, None)
    finally:
        stop_embedded(tmp / ".hopflow")
        shutil.rmtree(tmp, ignore_errors=True)

    by = {r.label: r for r in rows}

    def ratio(a: str, b: str) -> str:
        if a not in by or b not in by:
            return "n/a (row not measured: its tool is not installed)"
        return f"{by[a].median / by[b].median:.2f}x"

    floor = "two Redis round trips (2x PING), the floor"
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `python bench/results.py{' --quick' if args.quick else ''}` on "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"redis-py parser: {'hiredis' if importlib.util.find_spec('hiredis') else 'pure Python'}.",
        f"Load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load_before)}; "
        f"after: {', '.join(f'{x:.2f}' for x in load_after)}.",
        "",
        "A load average above the CPU count means other work shared the machine: every row saw it (the "
        "rows are interleaved), so the **ratios** hold better than the absolute figures. Regenerate on a "
        "quiet machine with the same command.",
        "",
        f"{repeat} interleaved repetitions; median, min and max.",
        "",
        "| row | unit | median | min | max |",
        "|---|---|---:|---:|---:|",
        *(f"| {r.label} | {r.unit} | {r.cells()} |" for r in rows),
        "",
        "## Ratios",
        "",
        f"* interpreter, `set` node {large} vs node {small}: "
        f"{ratio(f'interpreter, `set` 10 KB, N={large}', f'interpreter, `set` 10 KB, N={small}')} "
        "(flat is 1x)",
        f"* interpreter, `action` node {large} vs node {small}: "
        f"{ratio(f'interpreter, `action` 10 KB, N={large}', f'interpreter, `action` 10 KB, N={small}')}",
        "* hopflow run marginal `action` node / floor: "
        f"{ratio('hopflow run, marginal per `action` node', floor)} (target ≤ 3x)",
        f"* hopflow run marginal `set` node / floor: {ratio('hopflow run, marginal per `set` node', floor)}",
        "* cold start, hopflow first webhook call / SDK app import: "
        f"{ratio(COLD_HOPFLOW, COLD_PEER)} (the SDK's own first call is not driven here, so this "
        "flatters the SDK: its row is a lower bound)",
        f"* validate, hopflow / check-jsonschema per process: "
        f"{ratio('hopflow validate (1 file), process', 'check-jsonschema (1 file), process')}",
        "",
        "Not in this file yet (see `bench/webhook.py` for the full stack vs the SDK over loopback, "
        "`bench/engine.py` for commands and round trips per node): the webhook stack vs the SDK at 10, "
        "100 and 500 steps, a Celery chain, QStash messages and bytes per execution.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if out is not None:
        out.write_text(text)
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
