"""Write ``bench/RESULTS.md``: hopflow's rows side by side with their baselines, from one run.

    python bench/results.py            # 5 interleaved repetitions (≤ 8 min on a quiet 2-core machine)
    python bench/results.py --quick    # the smoke test: tiny sizes, 1 repetition, no file unless --out

Every repetition runs every row once, in the same order (interleaved), so a burst of load on a
shared machine hits all rows alike; each row is the median with min and max over the repetitions,
and the headline figures are **ratios** between rows of the same run, never absolute claims. The
file records the machine, the date, the load average and the command.

Rows (``bench/README.md`` says how each is wired):

* interpreter per node: ``set`` and ``action`` steps each writing a 10 KB output, at N small and
  large (node 10 vs node 1,000: the cost of a node must not grow with the execution's length);
* ``hopflow run`` (local dispatcher, in process, wired as ``hopflow run`` wires it) marginal cost
  per node, as a ratio to the floor of two Redis round trips (two ``PING``s) measured in the run;
  hopflow's Redis database is emptied and every runtime built anew at each repetition;
* a Celery chain of N tasks (10 KB outputs, worker in its own process, ``-P solo``) on the same
  Redis server, next to ``hopflow run`` with the same N ``action`` steps;
* the webhook stack over loopback (uvicorn + QStash dev server + JWT on every delivery) vs the
  upstash-workflow SDK as shipped and with its per-call TLS-context cost patched out, at 10, 100 and
  500 steps; what each webhook call spends (JWT, JSON, Redis, publish…: ``bench/breakdown.py``);
* QStash messages and bytes per execution: linear runs of both stacks, and hopflow's saga,
  fan-out and foreach examples (``workflows/``) counted at the QStash dev server;
* cold start: a fresh process answering its first signed webhook call, vs the SDK app;
* ``hopflow validate --jobs 1`` vs ``check-jsonschema``, one process each, on 1 and on 50 files.

Optional peers (rows are left out, and the file says so, when missing): ``pip install -e
'.[dev]'`` brings the upstash-workflow SDK and check-jsonschema, ``pip install -e '.[bench]'``
brings Celery.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import itertools
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BLOB = "x" * 10_240  # a 10 KB output per step
FLOOR = "two Redis round trips (2x PING), the floor"
COLD_HOPFLOW = "hopflow: fresh process → first signed webhook call answered"
COLD_PEER = "upstash-workflow SDK app: fresh process, import only (no call)"
BREAKDOWN = ("framework", "body", "jwt", "json", "thread hop", "interpreter", "redis", "publish")
EXAMPLES = (  # (label, workflow file, input) — saga, fan-out, foreach, a compensating saga
    ("travel-saga (saga, 4 steps)", "workflows/patterns/travel-saga.yaml", None),
    (
        "travel-saga, card declined (compensates)",
        "workflows/patterns/travel-saga.yaml",
        {"card": "tok_declined"},
    ),
    ("scatter-gather (foreach fan-out, 6 items)", "workflows/patterns/scatter-gather.yaml", None),
    ("order-fulfilment (foreach + parallel + saga)", "workflows/order-fulfilment.yaml", None),
)


def _load(name: str) -> ModuleType:
    """A sibling bench script as a module (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def set_yaml(name: str, steps: int) -> str:
    body = "\n".join(f"  - id: s{i}\n    set: {{blob: '{BLOB}'}}" for i in range(steps))
    return f"name: {name}\nsteps:\n{body}\n"


def action_yaml(name: str, steps: int) -> str:
    body = "\n".join(f"  - id: a{i}\n    action: bench.blob" for i in range(steps))
    return f"name: {name}\nsteps:\n{body}\n"


class Row:
    """One measured line: a sample per repetition (``sample`` is None for rows derived from others)."""

    def __init__(
        self, section: str, label: str, unit: str, sample: Callable[[], float] | None = None
    ) -> None:
        self.section, self.label, self.unit, self.sample = section, label, unit, sample
        self.values: list[float] = []

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def cells(self) -> str:
        digits = 0 if self.median >= 100 else (1 if self.median >= 10 else 2)
        return f"{self.median:,.{digits}f} | {min(self.values):,.{digits}f} | {max(self.values):,.{digits}f}"


def process_ms(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    elapsed = (time.perf_counter() - start) * 1000
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(argv[:3])}… exited {proc.returncode}: {proc.stderr[-800:]}")
    return elapsed


def get_json(url: str) -> Any:
    import httpx

    return httpx.get(url, timeout=10.0, trust_env=False).json()


class Sizes:
    def __init__(self, args: argparse.Namespace) -> None:
        self.repeat, self.small, self.large = args.repeat, args.small, args.large
        self.chain = args.chain
        self.webhook = [int(s) for s in str(args.webhook_steps).split(",") if s.strip()]
        self.files = args.files
        self.files_label = f"{self.files} files"
        self.node_rows: dict[str, tuple[str, str]] = {}  # kind → (early node row, late node row)
        if args.quick:
            self.repeat, self.small, self.large, self.chain = 1, 3, 12, 5
            self.webhook, self.files = [3, 6], 3
        self.target_n = 100 if 100 in self.webhook else self.webhook[len(self.webhook) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="interleaved repetitions (default 5)")
    parser.add_argument("--small", type=int, default=10, help="N of the short executions (default 10)")
    parser.add_argument("--large", type=int, default=1000, help="N of the long executions (default 1000)")
    parser.add_argument("--chain", type=int, default=100, help="N of the Celery chain and its hopflow row")
    parser.add_argument("--webhook-steps", default="10,100,500", help="N of the webhook stacks (10,100,500)")
    parser.add_argument("--files", type=int, default=50, help="files of the larger validate row (50)")
    parser.add_argument("--no-webhook", action="store_true", help="leave out the loopback stacks")
    parser.add_argument(
        "--only", help="run only the sections whose title contains this text (e.g. Webhook); no file"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 repetition (smoke test)")
    parser.add_argument("--out", help="where to write (default bench/RESULTS.md; --quick: stdout only)")
    args = parser.parse_args()
    size = Sizes(args)
    if size.repeat < 1 or size.small < 1 or size.large <= size.small or not size.webhook or size.chain < 2:
        parser.error("--repeat ≥ 1, 1 ≤ --small < --large, --chain ≥ 2, --webhook-steps not empty")
    partial = args.quick or args.only
    out = Path(args.out) if args.out else (None if partial else ROOT / "bench" / "RESULTS.md")
    command = "python bench/results.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])

    be, wh = _load("engine"), _load("webhook")
    from engine.actions import REGISTRY
    from engine.catalog import Catalog
    from engine.embedded import stop_embedded

    if "bench.blob" not in REGISTRY:
        REGISTRY.register("bench.blob", lambda ctx: {"blob": BLOB})
    tmp = Path(tempfile.mkdtemp(prefix="hopflow-bench-results-"))
    logs = tmp / "logs"
    logs.mkdir()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HOPFLOW_", "QSTASH_", "REDIS_"))}
    clean.pop("PEER_REUSE_SSL", None)
    clean["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), clean.get("PYTHONPATH")) if p)
    py = sys.executable
    rows: list[Row] = []
    notes: list[str] = []
    traffic: dict[str, list[tuple[int, int]]] = {}  # label → (messages, bytes) per repetition
    breakdown: dict[int, list[dict[str, Any]]] = {}  # N → per repetition: snapshot differences
    cpu: dict[str, list[float]] = {}  # derived row label → its values (filled by the webhook samples)
    cold: dict[str, str] = {}  # "hopflow" / "peer-step" → the label of that cold-start row
    positions: dict[str, list[float]] = {}  # workflow → seconds of each advance of its last memory run
    try:
        with contextlib.ExitStack() as stack:
            # ---------------------------------------------------------- in-process rows (embedded)
            texts = [
                f(f"{kind}-{n}", n)
                for kind, f in (("set", set_yaml), ("action", action_yaml))
                for n in sorted({size.small, size.large, size.chain})
            ]
            bench = be.Bench(tmp / ".hopflow", Catalog.from_texts(texts))
            stack.callback(stop_embedded, tmp / ".hopflow")
            store = bench.clients["store"]
            current: dict[bool, tuple[Any, Any]] = {}

            def fresh_store() -> None:
                """An empty database 0 and runtimes built anew (their caches empty) for this repetition."""
                bench.admin.flushdb()
                current.clear()
                current.update({memory: bench.runtime(memory=memory) for memory in (True, False)})

            def run_ms(workflow: str, memory: bool) -> float:
                runtime, dispatcher = current[memory]
                start = time.perf_counter()
                eid = runtime.start(workflow, {})
                if memory:
                    advances: list[float] = []
                    while dispatcher.items:
                        message = dispatcher.items.popleft().message
                        began = time.perf_counter()
                        runtime.advance(message)
                        advances.append(time.perf_counter() - began)
                    positions[workflow] = advances
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

            def at_node(kind: str, first: int) -> Callable[[], float]:
                """µs of one ``Runtime.advance`` at nodes first..first+9 of the N=large run of this
                repetition (the median of the ten): how much a node costs by its position."""

                def sample() -> float:
                    times = positions[f"{kind}-{size.large}"][first : first + 10]
                    return statistics.median(times) * 1e6

                return sample

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
                    large = run_ms(f"{kind}-{size.large}", False)
                    small = run_ms(f"{kind}-{size.small}", False)
                    return (large - small) * 1000 / (size.large - size.small)

                return sample

            sec = "Interpreter and `hopflow run` (embedded Redis, in process)"
            for kind in ("set", "action"):
                for n in (size.small, size.large):
                    rows.append(
                        Row(
                            sec,
                            f"interpreter, `{kind}` 10 KB, N={n}",
                            "µs/node",
                            per_node(f"{kind}-{n}", n, True),
                        )
                    )
            low, high = min(10, size.large // 4), max(size.large - 10, size.large // 2)
            node_rows = {
                kind: (f"interpreter, `{kind}`, node {low}-{low + 9} of {size.large}",
                       f"interpreter, `{kind}`, node {high}-{high + 9} of {size.large}")
                for kind in ("set", "action")
            }  # fmt: skip
            for kind, (early, late) in node_rows.items():
                rows.append(Row(sec, early, "µs/node", at_node(kind, low)))
                rows.append(Row(sec, late, "µs/node", at_node(kind, high)))
            size.node_rows = node_rows
            rows += [
                Row(sec, FLOOR, "µs", floor_us),
                Row(sec, "hopflow run, marginal per `action` node", "µs/node", marginal_us("action")),
                Row(sec, "hopflow run, marginal per `set` node", "µs/node", marginal_us("set")),
            ]

            # ------------------------------------------------------------ Celery on the same Redis
            celery_label = f"Celery chain, N={size.chain}, per task"
            hop_chain = f"hopflow run, `action` 10 KB, N={size.chain}, per node"
            sec_c = "Celery chain on the same Redis server"
            if importlib.util.find_spec("celery") is not None:
                celery_url = f"redis+socket://{bench.socket}?virtual_host=1"
                celery_env = {**clean, "CELERY_REDIS_URL": celery_url}
                worker = stack.enter_context(
                    wh.process(
                        "celery-worker",
                        [
                            py,
                            "-m",
                            "celery",
                            "--workdir",
                            str(ROOT / "bench" / "peers"),
                            "-A",
                            "celery_chain",
                            "worker",
                            "-P",
                            "solo",
                            "-c",
                            "1",
                            "--without-gossip",
                            "--without-mingle",
                            "--without-heartbeat",
                            "-l",
                            "warning",
                        ],
                        celery_env,
                        logs,
                    )
                )
                os.environ["CELERY_REDIS_URL"] = celery_url
                sys.path.insert(0, str(ROOT / "bench" / "peers"))
                import celery_chain

                def celery_ms_per_task() -> float:
                    if worker.popen.poll() is not None:
                        raise SystemExit(f"the Celery worker exited:\n{worker.tail()}")
                    start = time.perf_counter()
                    celery_chain.run_chain(size.chain, timeout_s=300)
                    return (time.perf_counter() - start) * 1e6 / size.chain

                rows += [
                    Row(sec_c, hop_chain, "µs/node", per_node(f"action-{size.chain}", size.chain, False)),
                    Row(sec_c, celery_label, "µs/task", celery_ms_per_task),
                ]
            else:
                notes.append("Celery rows left out: `pip install -e '.[bench]'` installs Celery.")

            # -------------------------------------------------------------------------- cold start
            sec_cold = "Cold start (fresh processes)"
            rows.append(Row(sec_cold, "python -c pass", "ms", lambda: process_ms([py, "-c", "pass"], clean)))
            peer_installed = importlib.util.find_spec("upstash_workflow") is not None
            if (ROOT / "bench" / "coldstart.py").exists():
                # both apps answer their first signed call, the same way (branch cold-cache); its own
                # embedded Redis, since database 0 of ours is emptied at every repetition
                cs = stack.enter_context(_load("coldstart").ColdStart(tmp / "coldstart", peer=peer_installed))
                for key, label, sample in cs.samplers("asgi"):
                    rows.append(Row(sec_cold, label, "ms", sample))
                    cold[key] = label
            else:
                cold.update(
                    interim_cold_rows(be, stack, tmp, bench.socket, clean, rows, sec_cold, peer_installed)
                )
                notes.append(
                    "Cold start rows are **interim** (bench/coldstart.py, from branch `cold-cache`, is not "
                    "here yet): hopflow's row is bench/engine.py's child answering its first signed webhook "
                    "call; the SDK's row only imports its app (its first call is not driven, so the row is "
                    "a lower bound and the ratio flatters the SDK)."
                )

            # ---------------------------------------------------------------------------- validate
            sec_v = "Validate, one process each (no worker processes)"
            hopflow_bin = shutil.which("hopflow", path=str(Path(py).parent))
            cj_bin = shutil.which("check-jsonschema", path=str(Path(py).parent))
            schema = ROOT / "schemas" / "workflow.schema.json"
            one = [ROOT / "workflows" / "dinner-reservation.yaml"]
            many_dir = tmp / "validate"
            many_dir.mkdir()
            many = _load("validate").generate(many_dir, size.files, 40)  # + the children they call
            size.files_label = f"{len(many)} files"
            for label, files in (("1 file", one), (size.files_label, many)):
                paths = [str(p) for p in files]
                if hopflow_bin:
                    rows.append(
                        Row(
                            sec_v,
                            f"hopflow validate --jobs 1, {label}",
                            "ms",
                            lambda paths=paths: process_ms(
                                [hopflow_bin, "validate", "--jobs", "1", *paths], clean
                            ),
                        )
                    )
                if cj_bin:
                    rows.append(
                        Row(
                            sec_v,
                            f"check-jsonschema, {label}",
                            "ms",
                            lambda paths=paths: process_ms(
                                [cj_bin, "--schemafile", str(schema), *paths], clean
                            ),
                        )
                    )
            if not cj_bin:
                notes.append("check-jsonschema rows left out: `pip install -e '.[dev]'` installs it.")

            # ---------------------------------------------------- the webhook stack over loopback
            peers: list[Any] = []
            if not args.no_webhook:
                svc = start_webhook_stack(wh, stack, tmp, logs, clean, size, peer_installed)
                peers = svc["peers"]
                sec_w = "Webhook stack over loopback vs the upstash-workflow SDK (per step)"
                http, rdb = svc["http"], svc["redis"]

                def stats() -> dict[str, int]:
                    return dict(http.get(f"{svc['dev_url']}/bench/stats").json())

                def hopflow_step_ms(n: int) -> Callable[[], float]:
                    def sample() -> float:
                        before, cut = stats(), get_json(svc["breakdown_url"])
                        run = wh.run_hopflow(http, rdb, svc["hop_url"], f"bench-linear-{n}", n, 300)
                        after, cut2 = stats(), get_json(svc["breakdown_url"])
                        used = cut2["process_cpu_s"] - cut["process_cpu_s"]
                        cpu[f"hopflow webhook server, N={n}"].append(used * 1000 / n)
                        record(traffic, f"hopflow, linear {n} steps", before, after, "other")
                        breakdown.setdefault(n, []).append(diff_breakdown(cut, cut2))
                        return float(run.seconds * 1000 / n)

                    return sample

                def peer_step_ms(peer: Any, n: int) -> Callable[[], float]:
                    def sample() -> float:
                        before = stats()
                        cpu0 = get_json(f"{peer.url}/timings/cpu")["process_cpu_s"]
                        run = wh.run_peer(http, svc["dev_url"], peer.url, n, 600)
                        used = get_json(f"{peer.url}/timings/cpu")["process_cpu_s"] - cpu0
                        cpu[f"{peer.label} server, N={n}"].append(used * 1000 / n)
                        if peer.key == "peer":
                            record(traffic, f"SDK, linear {n} steps", before, stats(), "workflow")
                        return float(run.seconds * 1000 / n)

                    return sample

                for n in size.webhook:
                    rows.append(Row(sec_w, f"hopflow webhook, N={n}", "ms/step", hopflow_step_ms(n)))
                    for peer in peers:
                        rows.append(Row(sec_w, f"{peer.label}, N={n}", "ms/step", peer_step_ms(peer, n)))
                sec_cpu = (
                    "CPU of the app server process per step (the runs above; QStash dev server excluded)"
                )
                for n in size.webhook:
                    for name in ("hopflow webhook", *(p.label for p in peers)):
                        row = Row(sec_cpu, f"{name} server, N={n}", "ms CPU/step")
                        cpu[row.label] = row.values
                        rows.append(row)
                if not peers:
                    notes.append("SDK rows left out: `pip install -e '.[dev]'` installs upstash-workflow.")

                examples = svc["examples"]

                def example_sample(label: str, name: str, data: Any) -> Callable[[], float]:
                    def sample() -> float:
                        before = stats()
                        ms = run_example(http, rdb, svc["hop_url"], name, data, label)
                        record(traffic, f"hopflow, {label}", before, stats(), "other")
                        return ms

                    return sample

                sec_e = "Examples through the webhook stack (QStash traffic below)"
                for label, name, data in examples:
                    rows.append(
                        Row(
                            sec_e,
                            f"hopflow webhook, {label}",
                            "ms/execution",
                            example_sample(label, name, data),
                        )
                    )

            if args.only:
                rows[:] = [r for r in rows if args.only.lower() in r.section.lower() or r.sample is None]
            # ---------------------------------------------------------------- warm-up, then reps
            fresh_store()
            for memory in (True, False):  # scripts loaded, pools started
                run_ms(f"action-{size.small}", memory)
            load_before = os.getloadavg()
            started = time.monotonic()
            for rep in range(size.repeat):
                fresh_store()
                for row in rows:
                    if row.sample is not None:
                        row.values.append(row.sample())
                print(
                    f"repetition {rep + 1}/{size.repeat} done ({time.monotonic() - started:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
            load_after = os.getloadavg()
            elapsed_s = time.monotonic() - started
    except SystemExit as exc:
        print(f"bench/results.py: {exc}", file=sys.stderr)
        print(f"(logs kept in {logs})", file=sys.stderr)
        return 1
    shutil.rmtree(tmp, ignore_errors=True)

    # ----------------------------------------------------------------------------- derived rows
    sec_b = f"What one webhook call spends (hopflow, exclusive time per call, N={size.target_n})"
    cuts = breakdown.get(size.target_n, [])
    if cuts:
        total = Row(sec_b, "total (ASGI call of POST /v1/step), wall", "µs/call")
        total_cpu = Row(sec_b, "total, CPU of the threads that ran it", "µs CPU/call")
        parts = {c: Row(sec_b, f"{c}, wall", "µs/call") for c in BREAKDOWN}
        parts_cpu = {c: Row(sec_b, f"{c}, CPU", "µs CPU/call") for c in BREAKDOWN}
        counts = {c: Row(sec_b, f"{c} per call", "count") for c in ("redis_calls", "publishes", "json_calls")}
        for cut in cuts:
            calls = max(1, cut["calls"])
            total.values.append(sum(cut["totals_s"].values()) * 1e6 / calls)
            total_cpu.values.append(sum(cut["cpu_s"].values()) * 1e6 / calls)
            for c in BREAKDOWN:
                parts[c].values.append(cut["totals_s"][c] * 1e6 / calls)
                parts_cpu[c].values.append(cut["cpu_s"][c] * 1e6 / calls)
            for c, row in counts.items():
                row.values.append(cut[c] / calls)
        rows += [total, *parts.values(), total_cpu, *parts_cpu.values(), *counts.values()]

    by = {r.label: r for r in rows}
    text = render(rows, by, size, traffic, notes, command, load_before, load_after, elapsed_s, peers, cold)
    print(text)
    if out is not None:
        out.write_text(text)
        print(f"wrote {out}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------- webhook stack


def start_webhook_stack(
    wh: ModuleType,
    stack: contextlib.ExitStack,
    tmp: Path,
    logs: Path,
    clean: dict[str, str],
    size: Sizes,
    peer_installed: bool,
) -> dict[str, Any]:
    """redis-server, the QStash dev server (with the SDK's workflow runs), hopflow (instrumented by
    bench/breakdown.py) and the SDK peers, each its own process on loopback, as bench/webhook.py."""
    import httpx
    import redis

    workflows = tmp / "workflows"
    workflows.mkdir()
    for n in {*size.webhook, 3}:
        (workflows / f"bench-linear-{n}.yaml").write_text(wh.linear_yaml(f"bench-linear-{n}", n))
    examples = []
    for label, path, data in EXAMPLES:
        source = ROOT / path
        shutil.copy(source, workflows / source.name)
        given = json.loads(source.with_name(source.stem + ".input.json").read_text())
        examples.append((label, source.stem, {**given, **(data or {})}))

    redis_port, dev_port, hop_port, breakdown_port = (wh.free_port() for _ in range(4))
    dev_url, hop_url = f"http://127.0.0.1:{dev_port}", f"http://127.0.0.1:{hop_port}"
    qstash_env = {
        "QSTASH_URL": dev_url,
        "QSTASH_TOKEN": wh.TOKEN,
        "QSTASH_CURRENT_SIGNING_KEY": wh.CURRENT_KEY,
        "QSTASH_NEXT_SIGNING_KEY": wh.NEXT_KEY,
    }
    hop_env = {
        **clean,
        **qstash_env,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "HOPFLOW_PUBLIC_URL": hop_url,
        "HOPFLOW_API_KEY": wh.API_KEY,
        "HOPFLOW_WORKFLOWS": str(workflows),
        "HOPFLOW_ACTIONS": ",".join(str(ROOT / "workflows" / p) for p in ("demo.py", "patterns/services.py")),
        "HOPFLOW_EGRESS_ALLOW": "loopback",
        "BENCH_BREAKDOWN_PORT": str(breakdown_port),
    }
    peers = []
    if peer_installed:
        peers.append(wh.Peer("peer", "SDK as shipped", {**clean, **qstash_env}))
        peers.append(
            wh.Peer("peer-tls", "SDK, TLS context reused", {**clean, **qstash_env, "PEER_REUSE_SSL": "1"})
        )
    redis_argv = [
        wh.redis_server_binary(),
        "--bind",
        "127.0.0.1",
        "--port",
        str(redis_port),
        "--dir",
        str(tmp),
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
    ]
    redis_proc = stack.enter_context(wh.process("redis", redis_argv, clean, logs))
    wh.wait_redis(redis_proc, redis_port)
    dev_argv = [sys.executable, str(wh.PEERS / "qstash_workflow.py"), "--port", str(dev_port), "--quiet"]
    dev = stack.enter_context(wh.process("qstash-dev", dev_argv, clean, logs))
    hop_argv = [sys.executable, str(ROOT / "bench" / "breakdown.py"), str(hop_port)]
    hop = stack.enter_context(wh.process("hopflow", hop_argv, hop_env, logs))
    for peer in peers:
        peer.port = wh.free_port()
        argv = wh.server_argv("upstash_peer:app", peer.port, wh.PEERS, False)
        peer.proc = stack.enter_context(wh.process(peer.key, argv, peer.env, logs))
    wh.wait_http(dev, f"{dev_url}/v2/keys")
    wh.wait_http(hop, f"{hop_url}/healthz")
    for peer in peers:
        wh.wait_http(peer.proc, f"{peer.url}/timings/ready")
    http = stack.enter_context(httpx.Client(timeout=60.0, trust_env=False))
    rdb = redis.Redis(host="127.0.0.1", port=redis_port, decode_responses=True)
    # first calls compile the catalog, import lazily, open connections
    wh.run_hopflow(http, rdb, hop_url, "bench-linear-3", 3, 120)
    for peer in peers:
        wh.run_peer(http, dev_url, peer.url, 3, 120)
    for label, name, data in examples:
        run_example(http, rdb, hop_url, name, data, label)
    return {
        "http": http,
        "redis": rdb,
        "dev_url": dev_url,
        "hop_url": hop_url,
        "breakdown_url": f"http://127.0.0.1:{breakdown_port}/",
        "peers": peers,
        "examples": examples,
    }


def interim_cold_rows(
    be: ModuleType,
    stack: contextlib.ExitStack,
    tmp: Path,
    socket: str,
    clean: dict[str, str],
    rows: list[Row],
    section: str,
    peer_installed: bool,
) -> dict[str, str]:
    """Cold start without bench/coldstart.py: bench/engine.py's child answers a first signed webhook
    call (database 2 of our Redis: never emptied); the SDK app is only imported."""
    from engine.catalog import Catalog
    from engine.egress import EgressPolicy
    from engine.embedded import redis_client
    from engine.runtime import Runtime
    from engine.signing import sign_qstash
    from engine.state.store import Store

    py = sys.executable
    folder = tmp / "cold"
    folder.mkdir()
    (folder / "cold-webhook.yaml").write_text(be.COLD_YAML)
    url = f"unix://{socket}?db=2"
    queue = be.MemoryQueue()
    runtime = Runtime(
        Store(redis_client(url)),
        queue,
        Catalog.from_directory(folder),
        egress=EgressPolicy(allow_loopback=True),
    )
    public = "http://127.0.0.1:9/"
    env = {
        **clean,
        "REDIS_URL": url,
        "QSTASH_URL": stack.enter_context(be.stub_qstash()),
        "QSTASH_TOKEN": "bench-token",
        "QSTASH_CURRENT_SIGNING_KEY": be.QSTASH_KEY,
        "QSTASH_NEXT_SIGNING_KEY": be.QSTASH_NEXT,
        "HOPFLOW_PUBLIC_URL": public,
        "HOPFLOW_WORKFLOWS": str(folder),
    }

    def hopflow_cold() -> float:
        queue.items.clear()
        runtime.start("cold-webhook", {"name": "bench"})
        body = queue.items.popleft().message.to_json().decode()
        sig = sign_qstash(body.encode(), public + "v1/step", be.QSTASH_KEY)
        start = time.perf_counter()
        proc = subprocess.run(
            [py, "-c", be.COLD_CHILD],
            capture_output=True,
            text=True,
            env={**env, "BENCH_BODY": body, "BENCH_SIG": sig},
            cwd=ROOT,
            timeout=120,
        )
        elapsed = (time.perf_counter() - start) * 1000
        lines = proc.stdout.strip().splitlines()
        answer = json.loads(lines[-1]) if proc.returncode == 0 and lines else {}
        if answer.get("status") != 200 or '"advanced"' not in answer.get("answer", ""):
            raise SystemExit(f"cold webhook call failed: {answer or proc.stderr[-800:]}")
        return elapsed

    rows.append(Row(section, COLD_HOPFLOW, "ms", hopflow_cold))
    labels = {"hopflow": COLD_HOPFLOW}
    if peer_installed:
        peer_env = {
            **env,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "bench" / "peers"), clean["PYTHONPATH"]]),
        }
        rows.append(
            Row(section, COLD_PEER, "ms", lambda: process_ms([py, "-c", "import upstash_peer"], peer_env))
        )
        labels["peer-step"] = COLD_PEER
    return labels


def run_example(http: Any, rdb: Any, url: str, workflow: str, data: Any, label: str) -> float:
    """Start one execution through the API, wait for its final status; ms from start to final."""
    wh = sys.modules["bench_webhook"]  # loaded by main()
    start = time.perf_counter()
    response = http.post(
        f"{url}/v1/executions",
        json={"workflow": workflow, "input": data},
        headers={"Authorization": f"Bearer {wh.API_KEY}"},
    )
    if response.status_code != 202:
        raise SystemExit(f"{label}: start answered {response.status_code}: {response.text[:300]}")
    key = f"hf:{{{response.json()['execution_id']}}}:h"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = rdb.hget(key, "status")
        if status in wh.FINAL:
            break
        time.sleep(0.005)
    else:
        raise SystemExit(f"{label}: not over after 120 s")
    expected = "compensated" if "compensates" in label else "succeeded"
    if status != expected:
        raise SystemExit(f"{label}: ended {status!r}, expected {expected}")
    return (time.perf_counter() - start) * 1000


def record(
    traffic: dict[str, list[tuple[int, int]]],
    label: str,
    before: dict[str, int],
    after: dict[str, int],
    kind: str,
) -> None:
    messages = after[f"{kind}_messages"] - before[f"{kind}_messages"]
    size = after[f"{kind}_bytes"] - before[f"{kind}_bytes"]
    traffic.setdefault(label, []).append((messages, size))


def diff_breakdown(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in after.items():
        if isinstance(value, dict):
            out[key] = {k: v - before[key][k] for k, v in value.items()}
        else:
            out[key] = value - before[key]
    return out


# ------------------------------------------------------------------------------------ the file


def render(
    rows: list[Row],
    by: dict[str, Row],
    size: Sizes,
    traffic: dict[str, list[tuple[int, int]]],
    notes: list[str],
    command: str,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    elapsed_s: float,
    peers: list[Any],
    cold: dict[str, str],
) -> str:
    def med(label: str) -> float | None:
        row = by.get(label)
        return row.median if row is not None and row.values else None

    lines = [
        "# Benchmark results",
        "",
        f"Generated by `{command}` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC "
        f"({elapsed_s / 60:.1f} min of repetitions).",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"redis-py parser: {'hiredis' if importlib.util.find_spec('hiredis') else 'pure Python'}; "
        f"{versions()}.",
        f"Load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load_before)}; "
        f"after: {', '.join(f'{x:.2f}' for x in load_after)}.",
        "",
        "A load average above the CPU count means other work shared the machine: every row saw it (the "
        "rows are interleaved), so the **ratios** hold better than the absolute figures. Regenerate on a "
        "quiet machine with the same command. How each row is wired: bench/README.md.",
        "Optional peers: `pip install -e '.[dev]'` (the upstash-workflow SDK, check-jsonschema), "
        "`pip install -e '.[bench]'` (Celery).",
        "",
        f"{size.repeat} interleaved repetitions (every row once per repetition, in this order); "
        "median, min and max.",
    ]
    section = None
    for row in rows:
        if not row.values:
            continue
        if row.section != section:
            section = row.section
            lines += [
                "",
                f"## {section}",
                "",
                "| row | unit | median | min | max |",
                "|---|---|---:|---:|---:|",
            ]
        lines.append(f"| {row.label} | {row.unit} | {row.cells()} |")

    if traffic:
        lines += [
            "",
            "## QStash messages and bytes per execution",
            "",
            "Counted at the QStash dev server: messages accepted and the bytes of the bodies it delivers "
            "(for the SDK, the arrays of step results QStash's workflow runs build). Median over the "
            "repetitions (the counts do not vary between runs).",
            "",
            "| execution | messages | bytes | bytes per message |",
            "|---|---:|---:|---:|",
        ]
        for label, values in traffic.items():
            messages = statistics.median(v[0] for v in values)
            size_b = statistics.median(v[1] for v in values)
            lines.append(f"| {label} | {messages:,.0f} | {size_b:,.0f} | {size_b / max(1, messages):,.0f} |")
        lines += [
            "",
            "The SDK's fan-out (parallel `context.run` steps) is not measured: the QStash dev server's "
            "workflow-run extension (bench/peers/qstash_workflow.py) implements linear runs only.",
        ]

    lines += ["", "## Targets of issue 11 (ratios from this run)", ""]
    lines += targets(med, size, peers, cold)
    if notes:
        lines += ["", "## Notes", "", *(f"* {n}" for n in notes)]
    lines.append("")
    return "\n".join(lines)


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("redis", "httpx", "upstash-workflow", "celery", "check-jsonschema"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    return ", ".join(found)


def verdict(value: float | None, target: float, *, at_most: bool) -> str:
    """``met`` or ``missed by N %`` for a ratio and its target."""
    if value is None:
        return "not measured (its tool is not installed)"
    ok = value <= target if at_most else value >= target
    if ok:
        return f"**met** ({value:.2f}x, target {'≤' if at_most else '≥'} {target:g}x)"
    off = value / target - 1 if at_most else 1 - value / target
    return f"**missed** by {off:.0%} ({value:.2f}x, target {'≤' if at_most else '≥'} {target:g}x)"


def targets(
    med: Callable[[str], float | None], size: Sizes, peers: list[Any], cold: dict[str, str]
) -> list[str]:
    def ratio(a: str, b: str) -> float | None:
        x, y = med(a), med(b)
        return None if x is None or y is None or y == 0 else x / y

    out = []
    floor = med(FLOOR)
    interp = med(f"interpreter, `action` 10 KB, N={size.large}")
    out.append(
        f"* Item 2, `hopflow run` marginal per `action` node / floor: "
        f"{verdict(ratio('hopflow run, marginal per `action` node', FLOOR), 3, at_most=True)}; "
        f"per `set` node: {fmt(ratio('hopflow run, marginal per `set` node', FLOOR))} "
        f"(floor {floor:.0f} µs)."
        if floor
        else "* Item 2: floor not measured."
    )
    if interp is not None:
        state = "**met**" if interp <= 400 else f"**missed** by {interp / 400 - 1:.0%}"
        out.append(
            f"* Item 2, interpreter in process ≤ 400 µs per `action` node (N={size.large}): "
            f"{state} ({interp:.0f} µs)."
        )
    for kind, (early, late) in size.node_rows.items():
        out.append(
            f"* Flat in N, one `{kind}` node late / early in a {size.large}-node execution "
            f"(`{late.split(', ')[-1]}` / `{early.split(', ')[-1]}`): {fmt(ratio(late, early))} (1x is flat)."
        )
    for kind in ("set", "action"):
        flat = ratio(
            f"interpreter, `{kind}` 10 KB, N={size.large}", f"interpreter, `{kind}` 10 KB, N={size.small}"
        )
        out.append(
            f"* Interpreter `{kind}`, per node of an N={size.large} / of an N={size.small} execution: "
            f"{fmt(flat)} (whole executions: start and end are shared by fewer nodes at N={size.small})."
        )
    hop_label, peer_label = cold.get("hopflow", COLD_HOPFLOW), cold.get("peer-step", COLD_PEER)
    cold_ratio = ratio(hop_label, peer_label)
    hop_cold = med(hop_label)
    interim = " (interim rows, see the notes)" if hop_label == COLD_HOPFLOW else ""
    out.append(
        f"* Item 3, cold start, first signed call, hopflow / SDK{interim}: "
        f"{verdict(cold_ratio, 1, at_most=True)}; ≤ 250 ms: "
        + (
            "not measured"
            if hop_cold is None
            else ("**met**" if hop_cold <= 250 else f"**missed** ({hop_cold:.0f} ms)")
        )
        + "."
    )
    if peers:
        by_n = []
        for n in size.webhook:
            by_n.append((n, ratio(f"SDK, TLS context reused, N={n}", f"hopflow webhook, N={n}")))
        shipped = [(n, ratio(f"SDK as shipped, N={n}", f"hopflow webhook, N={n}")) for n in size.webhook]
        target = dict(by_n).get(size.target_n)
        growing = all(
            a is not None and b is not None and b >= a for (_, a), (_, b) in itertools.pairwise(by_n)
        )
        out.append(
            f"* Item 4, per step over HTTP, SDK (TLS-patched) / hopflow at N={size.target_n}: "
            f"{verdict(target, 2, at_most=False)}; gap growing with N "
            f"({', '.join(f'N={n}: {fmt(r)}' for n, r in by_n)}): {'**yes**' if growing else '**no**'}."
        )
        out.append(
            "* SDK as shipped / hopflow per step: " + ", ".join(f"N={n}: {fmt(r)}" for n, r in shipped) + "."
        )
        by_cpu = [
            (n, ratio(f"SDK, TLS context reused server, N={n}", f"hopflow webhook server, N={n}"))
            for n in size.webhook
        ]
        growing = all(
            a is not None and b is not None and b >= a for (_, a), (_, b) in itertools.pairwise(by_cpu)
        )
        out.append(
            f"* Item 4, app server CPU per step, SDK (TLS-patched) / hopflow at N={size.target_n}: "
            f"{verdict(dict(by_cpu).get(size.target_n), 2, at_most=False)}; gap growing with N "
            f"({', '.join(f'N={n}: {fmt(r)}' for n, r in by_cpu)}): {'**yes**' if growing else '**no**'}."
        )
    celery = ratio(
        f"Celery chain, N={size.chain}, per task", f"hopflow run, `action` 10 KB, N={size.chain}, per node"
    )
    out.append(f"* Celery chain / `hopflow run` per step (N={size.chain}, same Redis): {fmt(celery)}.")
    for label in ("1 file", size.files_label):
        v = ratio(f"check-jsonschema, {label}", f"hopflow validate --jobs 1, {label}")
        out.append(f"* check-jsonschema / `hopflow validate --jobs 1`, {label}, one process each: {fmt(v)}.")
    return out


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


if __name__ == "__main__":
    sys.exit(main())
