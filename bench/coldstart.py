"""Cold start, side by side: process start → first signed call answered, hopflow vs the upstash-workflow SDK.

Every sample is a fresh Python process that imports an ASGI app and answers one QStash-signed request
(a JWT the app verifies with the same signing keys), started and timed the same way for both apps:

* ``asgi`` driver (default; how Vercel's and Lambda's ASGI adapters call an app): the child imports
  the app, calls it once with an HTTP scope built from the request, and prints the answer; the time is
  from just before ``Popen`` to the moment that answer reaches this process;
* ``uvicorn`` driver (Cloud Run, a VM): the child serves the app with uvicorn on a socket this process
  bound before starting it, so the request is sent at once and queued by the kernel; the time is from
  just before ``Popen`` to the last byte of the response.

What each first call does:

* **hopflow, webhook** (``POST /v1/step``): an execution of ``COLD_YAML`` waits in Redis for its first
  node; the call verifies the JWT, reads the pinned graph from Redis, runs the ``set`` node (a Jinja2
  template), checkpoints and publishes the next node to a stub QStash on loopback;
* **hopflow, start** (``POST /v1/executions``, API key): compiles the catalog (a workflows folder),
  starts an execution and publishes its first node — once with the graph cache warm (``hopflow
  compile --cache`` ran at "build time"), once cold (the cache folder is emptied before the call);
* **SDK, step call**: ``bench/peers/upstash_peer.py`` receives a workflow call carrying its initial
  payload (``Upstash-Workflow-RunId``, protocol headers): it verifies the JWT, runs ``step-0`` and
  publishes its result with ``/v2/batch`` — the same work as hopflow's webhook call;
* **SDK, trigger call**: the first call of a run (no workflow headers): it verifies the JWT and
  publishes the run's first step with ``/v2/batch``; it runs no step.

The cases are interleaved within every repetition, in a rotating order, so a burst of load on a
shared machine hits them alike; rows give the median, min and max. Then ``python -X importtime``
of hopflow's webhook call, self time per package, against the budget below.

    python bench/coldstart.py [--repeat 7] [--driver asgi|uvicorn|both] [--top 15] [--no-peer] [--quick]

For ``bench/results.py``: :class:`ColdStart` (a context manager) gives one sampler per row,
:func:`cold_start_rows` the rows of one interleaved run.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.server
import importlib.util
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "bench" / "peers"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

QSTASH_KEY = "sig_cold_current_00000000000"
QSTASH_NEXT = "sig_cold_next_000000000000000"
API_KEY = "cold-api-key-0123456789abcdef-0123456789"  # >= 32 characters
PUBLIC = "http://127.0.0.1:9"  # the URL the JWTs are signed for (the apps never call it)

COLD_YAML = """\
name: cold-webhook
input: {type: object, properties: {name: {type: string}}}
steps:
  - id: greet
    set: {greeting: "hello {{ input.name }}"}
  - id: done
    set: {ok: true}
"""

# The import-time budget of hopflow's first webhook call: ms of `-X importtime` self time summed per
# package (wherever it is imported from), median of 3 runs, on a quiet 2-core machine. Which modules
# may load is pinned by tests/test_cold_start.py (module sets, never time); these figures say what
# each piece may cost, so a regression shows in this bench's output.
IMPORT_BUDGET_MS: dict[str, float] = {
    "hopflow": 40.0,  # engine.* and dsl.*: the webhook route, runtime, interpreter, store, sandbox
    "redis": 45.0,  # redis-py, its asyncio half included (redis.commands imports it); no OpenTelemetry
    "jinja2": 20.0,  # the sandbox; templates come from the code cache, not Jinja's compiler
    "httpx": 50.0,  # httpx + httpcore + h11: the QStash publisher (httpx's command line left out)
    "starlette": 15.0,  # routing, requests, responses
    "opentelemetry": 0.0,  # redis-py's import-time probe is left out (engine.lazyimport.redis)
    "yaml": 0.0,  # no workflow file is read: graphs are pinned in Redis
    "jsonschema": 0.0,
    "total": 230.0,  # every module of the call, the interpreter's start and the driver's asyncio included
}
GROUPS = {"engine": "hopflow", "dsl": "hopflow", "httpcore": "httpx", "h11": "httpx"}


# ---------------------------------------------------------------------------------------- children

# One child for every app: import it, build the HTTP scope, call it once, print the answer.
ASGI_CHILD = r"""
import os, sys, json
t0 = __import__("time").perf_counter()
sys.path[:0] = [p for p in os.environ.get("COLD_APP_DIR", "").split(os.pathsep) if p]
import asyncio, importlib
module, _, attr = os.environ["COLD_APP"].partition(":")
app = getattr(importlib.import_module(module), attr)
request = json.loads(os.environ["COLD_REQUEST"])
body = request["body"].encode()
headers = [(k.lower().encode(), v.encode()) for k, v in request["headers"].items()]
headers += [(b"host", b"127.0.0.1:9"), (b"content-length", str(len(body)).encode())]
scope = {
    "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
    "scheme": "http", "path": request["path"], "raw_path": request["path"].encode(),
    "query_string": b"", "root_path": "", "client": ("127.0.0.1", 40000),
    "server": ("127.0.0.1", 9), "headers": headers,
}
sent = []
async def receive():
    return {"type": "http.request", "body": body, "more_body": False}
async def send(message):
    sent.append(message)
asyncio.run(app(scope, receive, send))
status = next(m["status"] for m in sent if m["type"] == "http.response.start")
answer = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body").decode()
out = {"status": status, "answer": answer[:300]}
if os.environ.get("COLD_MODULES"):
    out["modules"] = sorted(sys.modules)
sys.stdout.write(json.dumps(out) + "\n")
sys.stdout.flush()
os._exit(0)
"""

# uvicorn on the socket the bench bound (inherited as COLD_FD): no port polling, no race.
UVICORN_CHILD = r"""
import os, socket, sys
sys.path[:0] = [p for p in os.environ.get("COLD_APP_DIR", "").split(os.pathsep) if p]
import uvicorn
sock = socket.socket(fileno=int(os.environ["COLD_FD"]))
config = uvicorn.Config(os.environ["COLD_APP"], log_level="warning", access_log=False)
uvicorn.Server(config).run(sockets=[sock])
"""


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: str

    def http(self) -> bytes:
        head = [f"POST {self.path} HTTP/1.1", "Host: 127.0.0.1:9", "Connection: close"]
        head += [f"{k}: {v}" for k, v in self.headers.items()]
        head.append(f"Content-Length: {len(self.body.encode())}")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + self.body.encode()


@dataclass
class Answer:
    ms: float
    status: int
    body: str
    modules: list[str] = field(default_factory=list)


def run_asgi(app: str, request: Request, env: dict[str, str], *, modules: bool = False) -> Answer:
    child_env = {**env, "COLD_APP": app, "COLD_REQUEST": json.dumps(request.__dict__)}
    if modules:
        child_env["COLD_MODULES"] = "1"
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", ASGI_CHILD],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env,
        cwd=env.get("COLD_CWD", str(ROOT)),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    ms = (time.perf_counter() - start) * 1000
    _, err = proc.communicate(timeout=60)
    if not line:
        detail = err[-2000:].decode(errors="replace")
        raise SystemExit(f"{app}: the child printed nothing (exit {proc.returncode}):\n{detail}")
    data = json.loads(line)
    return Answer(ms, data["status"], data["answer"], data.get("modules", []))


def run_uvicorn(app: str, request: Request, env: dict[str, str]) -> Answer:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.set_inheritable(True)
    child_env = {**env, "COLD_APP": app, "COLD_FD": str(listener.fileno())}
    raw = request.http()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", UVICORN_CHILD],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=child_env,
        cwd=env.get("COLD_CWD", str(ROOT)),
        pass_fds=(listener.fileno(),),
    )
    try:
        with socket.create_connection(listener.getsockname(), timeout=60) as conn:
            conn.sendall(raw)  # queued by the kernel until uvicorn accepts
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        ms = (time.perf_counter() - start) * 1000
    finally:
        listener.close()
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    response = b"".join(chunks)
    head, _, body = response.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        detail = err[-2000:].decode(errors="replace")
        raise SystemExit(f"{app} under uvicorn answered {response[:300]!r}:\n{detail}") from None
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    return Answer(ms, status, body.decode(errors="replace")[:300])


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out


# ------------------------------------------------------------------------------------ stub QStash


class _StubQStash(http.server.BaseHTTPRequestHandler):
    """Answers a publish like QStash and a batch with one answer per entry (loopback only)."""

    published: list[str] = []

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        _StubQStash.published.append(self.path)
        answer: Any = {"messageId": f"msg_{uuid.uuid4().hex}"}
        if self.path.startswith("/v2/batch"):
            answer = [{"messageId": f"msg_{uuid.uuid4().hex}"} for _ in json.loads(raw)]
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def stub_qstash() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StubQStash)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------------------ cases


class _Queue:
    def __init__(self) -> None:
        self.items: list[Any] = []

    def publish(self, outgoing: Any) -> None:
        self.items.extend(outgoing)


LABELS = {
    "hopflow": "hopflow: first webhook call (POST /v1/step)",
    "hopflow-start-warm": "hopflow: first start call (POST /v1/executions), graph cache warm",
    "hopflow-start-cold": "hopflow: first start call (POST /v1/executions), graph cache empty",
    "peer-step": "upstash-workflow SDK: first step call",
    "peer-trigger": "upstash-workflow SDK: first trigger call",
}


class ColdStart:
    """Everything a cold-start sample needs: Redis, a stub QStash, a workflows folder, a warm cache,
    and one unmeasured sample of each row (``.pyc`` files written, the OS page cache warm).

    ``with ColdStart(tmp) as cs: cs.samplers(driver)`` → ``[(key, label, sample)]``; each ``sample()``
    starts one fresh process, checks that its first call really did the work (200, a message
    published) and returns milliseconds. ``redis_socket`` reuses a running Redis (``bench/results.py``'s
    embedded one); otherwise an embedded Redis is started under ``tmp`` and stopped at exit.
    """

    def __init__(self, tmp: Path, *, redis_socket: str | None = None, peer: bool = True) -> None:
        self.tmp = Path(tmp)
        self.redis_socket = redis_socket
        self.peer = peer and importlib.util.find_spec("upstash_workflow") is not None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> ColdStart:
        from engine.catalog import Catalog
        from engine.egress import EgressPolicy
        from engine.embedded import embedded_socket, redis_client, stop_embedded
        from engine.runtime import Runtime
        from engine.state.store import Store

        self.tmp.mkdir(parents=True, exist_ok=True)
        if self.redis_socket is None:
            home = self.tmp / ".hopflow"
            self.redis_socket = embedded_socket(home)
            self._stack.callback(stop_embedded, home)
        self.qstash_url = self._stack.enter_context(stub_qstash())
        self.workflows = self.tmp / "workflows"
        self.workflows.mkdir(exist_ok=True)
        (self.workflows / "cold-webhook.yaml").write_text(COLD_YAML)
        self.cache = self.tmp / "graph-cache"
        self._queue = _Queue()
        client = redis_client(f"unix://{self.redis_socket}")
        self._runtime = Runtime(
            Store(client), self._queue, Catalog.from_directory(self.workflows), egress=EgressPolicy()
        )
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("HOPFLOW_", "QSTASH_", "REDIS_"))}
        clean["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), clean.get("PYTHONPATH")) if p)
        clean.pop("UPSTASH_WORKFLOW_URL", None)
        # Every module byte-compiled, for both apps alike, as an installed package is (pip writes .pyc
        # files at install time). With PYTHONDONTWRITEBYTECODE set (as on this machine), hopflow's
        # source checkout would be compiled again by every process while the SDK's site-packages
        # have .pyc files. The children write and read them under a private prefix instead.
        clean.pop("PYTHONDONTWRITEBYTECODE", None)
        clean["PYTHONPYCACHEPREFIX"] = str(self.tmp / "pycache")
        self.env = {
            **clean,
            "REDIS_URL": f"unix://{self.redis_socket}",
            "QSTASH_URL": self.qstash_url,
            "QSTASH_TOKEN": "cold-token",
            "QSTASH_CURRENT_SIGNING_KEY": QSTASH_KEY,
            "QSTASH_NEXT_SIGNING_KEY": QSTASH_NEXT,
            "HOPFLOW_PUBLIC_URL": PUBLIC + "/",
            "HOPFLOW_WORKFLOWS": str(self.workflows),
            "HOPFLOW_API_KEY": API_KEY,
            "HOPFLOW_CACHE_DIR": str(self.cache),
        }
        self.peer_env = {
            **self.env,
            "COLD_APP_DIR": str(PEERS),
            "UPSTASH_WORKFLOW_URL": PUBLIC,
        }
        self.warm_cache()
        for key in self.keys():  # byte-compile every module into the prefix, warm the OS page cache
            self.sample(key)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    # ---- the cache, as `hopflow compile --cache` leaves it in a build

    def warm_cache(self) -> None:
        hopflow = shutil.which("hopflow", path=str(Path(sys.executable).parent)) or "hopflow"
        proc = subprocess.run(
            [hopflow, "compile", "--cache", str(self.workflows)],
            env=self.env,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if proc.returncode != 0:
            raise SystemExit(f"hopflow compile --cache failed: {proc.stderr[-800:]}")

    def empty_cache(self) -> None:
        shutil.rmtree(self.cache, ignore_errors=True)

    # ---- requests

    def hopflow_step(self) -> Request:
        from engine.signing import sign_qstash

        self._queue.items.clear()
        self._runtime.start("cold-webhook", {"name": "cold"})
        body = self._queue.items.pop(0).message.to_json()
        sig = sign_qstash(body, PUBLIC + "/v1/step", QSTASH_KEY)
        return Request(
            "/v1/step", {"Content-Type": "application/json", "Upstash-Signature": sig}, body.decode()
        )

    def hopflow_start(self) -> Request:
        body = json.dumps({"workflow": "cold-webhook", "input": {"name": "cold"}})
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
        return Request("/v1/executions", headers, body)

    def peer_step(self) -> Request:
        from engine.signing import sign_qstash

        payload = json.dumps({"token": uuid.uuid4().hex, "steps": 3})
        initial = base64.b64encode(payload.encode()).decode()
        body = json.dumps([{"messageId": f"msg_{uuid.uuid4().hex}", "body": initial, "callType": "step"}])
        headers = {
            "Content-Type": "application/json",
            "Upstash-Signature": sign_qstash(body.encode(), PUBLIC + "/workflow", QSTASH_KEY),
            "Upstash-Workflow-Sdk-Version": "1",
            "Upstash-Workflow-RunId": f"wfr_{uuid.uuid4().hex}",
        }
        return Request("/workflow", headers, body)

    def peer_trigger(self) -> Request:
        from engine.signing import sign_qstash

        body = json.dumps({"token": uuid.uuid4().hex, "steps": 3})
        headers = {
            "Content-Type": "application/json",
            "Upstash-Signature": sign_qstash(body.encode(), PUBLIC + "/workflow", QSTASH_KEY),
        }
        return Request("/workflow", headers, body)

    # ---- samples

    def sample(self, key: str, driver: str = "asgi", *, modules: bool = False) -> Answer:
        app, env = "engine.asgi:app", self.env
        if key.startswith("peer"):
            app, env = "upstash_peer:app", self.peer_env
        request = {
            "hopflow": self.hopflow_step,
            "hopflow-start-warm": self.hopflow_start,
            "hopflow-start-cold": self.hopflow_start,
            "peer-step": self.peer_step,
            "peer-trigger": self.peer_trigger,
        }[key]()
        if key == "hopflow-start-cold":
            self.empty_cache()
        published = len(_StubQStash.published)
        try:
            if driver == "uvicorn":
                answer = run_uvicorn(app, request, env)
            else:
                answer = run_asgi(app, request, env, modules=modules)
        finally:
            if key == "hopflow-start-cold":
                self.warm_cache()
        expected = 202 if key.startswith("hopflow-start") else 200
        if answer.status != expected:
            raise SystemExit(f"{LABELS[key]} ({driver}) answered {answer.status}: {answer.body}")
        if len(_StubQStash.published) <= published:
            raise SystemExit(f"{LABELS[key]} ({driver}) published nothing: {answer.body}")
        if key == "hopflow" and '"advanced"' not in answer.body:
            raise SystemExit(f"{LABELS[key]} ({driver}) did not advance: {answer.body}")
        return answer

    def keys(self) -> list[str]:
        keys = ["hopflow", "hopflow-start-warm", "hopflow-start-cold"]
        return keys + (["peer-step", "peer-trigger"] if self.peer else [])

    def samplers(self, driver: str = "asgi") -> list[tuple[str, str, Callable[[], float]]]:
        """``(key, label, sample)`` per row; ``sample()`` → ms of one fresh process."""
        suffix = "" if driver == "asgi" else f" [{driver}]"
        return [
            (key, LABELS[key] + suffix, lambda key=key: self.sample(key, driver).ms) for key in self.keys()
        ]


def cold_start_rows(
    repeat: int = 5, *, drivers: tuple[str, ...] = ("asgi",), peer: bool = True
) -> list[tuple[str, str, list[float]]]:
    """One interleaved run: ``[(label, "ms", values)]`` per row (for ``bench/results.py``)."""
    tmp = Path(tempfile.mkdtemp(prefix="hopflow-bench-cold-"))
    try:
        with ColdStart(tmp, peer=peer) as cs:
            rows = [row for driver in drivers for row in cs.samplers(driver)]
            values: dict[str, list[float]] = {label: [] for _, label, _ in rows}
            for rep in range(repeat):
                shift = rep % len(rows)  # rotate who goes first: no row always follows the same one
                for _, label, sample in rows[shift:] + rows[:shift]:
                    values[label].append(sample())
            return [(label, "ms", values[label]) for _, label, _ in rows]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------- -X importtime


def importtime(cs: ColdStart, key: str = "hopflow", runs: int = 3) -> tuple[list[tuple[str, float]], float]:
    """``-X importtime`` of one first call: self time (ms) summed per package, median of ``runs``
    fresh processes; and the median total."""
    app, env = ("engine.asgi:app", cs.env) if key.startswith("hopflow") else ("upstash_peer:app", cs.peer_env)
    samples: list[dict[str, float]] = []
    for _ in range(runs):
        request = {"hopflow": cs.hopflow_step, "peer-step": cs.peer_step}[key]()
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", ASGI_CHILD],
            env={**env, "COLD_APP": app, "COLD_REQUEST": json.dumps(request.__dict__)},
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        by: dict[str, float] = {}
        for line in proc.stderr.splitlines():
            parts = line.split("|")
            if not line.startswith("import time:") or len(parts) != 3 or "imported package" in line:
                continue
            top = parts[2].strip().split(".")[0]
            group = GROUPS.get(top, top)
            by[group] = by.get(group, 0.0) + int(parts[0].split(":")[1]) / 1000
        by["total"] = sum(by.values())
        samples.append(by)
    names = {name for sample in samples for name in sample}
    medians = {name: statistics.median(sample.get(name, 0.0) for sample in samples) for name in names}
    total = medians.pop("total")
    return sorted(medians.items(), key=lambda r: -r[1]), total


def budget_lines(rows: list[tuple[str, float]], total: float) -> list[str]:
    by = dict(rows)
    lines = []
    for name, limit in IMPORT_BUDGET_MS.items():
        spent = total if name == "total" else by.get(name, 0.0)
        verdict = "ok" if round(spent, 1) <= limit else f"OVER by {spent - limit:.1f} ms"
        lines.append(f"    {name:<14} {spent:7.1f} ms  (budget {limit:5.1f} ms)  {verdict}")
    return lines


# ------------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="interleaved repetitions (default 7, ≥ 5)")
    parser.add_argument("--driver", choices=("asgi", "uvicorn", "both"), default="both")
    parser.add_argument("--top", type=int, default=15, help="imports listed from -X importtime")
    parser.add_argument("--no-peer", action="store_true", help="hopflow only")
    parser.add_argument("--quick", action="store_true", help="one repetition, asgi only (smoke test)")
    args = parser.parse_args()
    repeat = 1 if args.quick else max(1, args.repeat)
    drivers = ("asgi",) if args.quick else (("asgi", "uvicorn") if args.driver == "both" else (args.driver,))
    tmp = Path(tempfile.mkdtemp(prefix="hopflow-bench-cold-"))
    try:
        with ColdStart(tmp, peer=not args.no_peer) as cs:
            if not cs.peer and not args.no_peer:
                print("(upstash-workflow is not installed: the SDK rows are left out)")
            rows = [row for driver in drivers for row in cs.samplers(driver)]
            values: dict[str, list[float]] = {label: [] for _, label, _ in rows}
            load_before = os.getloadavg()
            for rep in range(repeat):
                shift = rep % len(rows)
                for _, label, sample in rows[shift:] + rows[:shift]:
                    values[label].append(sample())
            load_after = os.getloadavg()
            modules = cs.sample("hopflow", modules=True).modules
            runs = 1 if args.quick else 3
            top, total = importtime(cs, runs=runs)
            peer_top, peer_total = importtime(cs, "peer-step", runs=runs) if cs.peer else ([], 0.0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    width = max(len(label) for label in values)
    print(
        f"\ncold start: process start → first signed call answered; {repeat} interleaved repetitions; "
        f"{os.cpu_count()} CPUs; load {load_before[0]:.2f} → {load_after[0]:.2f}"
    )
    print(f"{'row':<{width}} {'median ms':>10} {'min':>8} {'max':>8}")
    for label, vals in values.items():
        print(f"{label:<{width}} {statistics.median(vals):>10.1f} {min(vals):>8.1f} {max(vals):>8.1f}")
    print()
    for driver in drivers:
        suffix = "" if driver == "asgi" else f" [{driver}]"
        ours = values[LABELS["hopflow"] + suffix]
        for key in ("peer-step", "peer-trigger"):
            theirs = values.get(LABELS[key] + suffix)
            if theirs:
                print(
                    f"{driver}: hopflow webhook / SDK {key[5:]} call = "
                    f"{statistics.median(ours) / statistics.median(theirs):.2f}x (median), "
                    f"{min(ours) / min(theirs):.2f}x (min)  (≤ 1 is the target)"
                )
        warm = values[LABELS["hopflow-start-warm"] + suffix]
        cold = values[LABELS["hopflow-start-cold"] + suffix]
        print(
            f"{driver}: hopflow start call, warm / empty graph cache = "
            f"{statistics.median(warm) / statistics.median(cold):.2f}x (median)"
        )
    print(f"\nmodules loaded by hopflow's first webhook call: {len(modules)}")
    print(
        f"-X importtime, hopflow's first webhook call (self time per package, median of 3; "
        f"all: {total:.1f} ms):"
    )
    for name, ms in top[: args.top]:
        print(f"    {name:<40} {ms:7.1f} ms")
    print("  against the import budget (bench/coldstart.py IMPORT_BUDGET_MS):")
    print("\n".join(budget_lines(top, total)))
    if peer_top:
        print(f"-X importtime, the SDK's first step call (all: {peer_total:.1f} ms):")
        for name, ms in peer_top[: min(args.top, 10)]:
            print(f"    {name:<40} {ms:7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
