"""What a cold start imports: ``import engine.asgi`` and a fresh process's first signed webhook call.

No timings (the machine is shared): the test pins *which modules* load, so a heavy import creeping
onto the webhook path (YAML, JSON Schema, the CLI's rich/click, the OpenAPI document, metrics or
tracing libraries) fails here. ``bench/engine.py`` measures the time itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import QueueDispatcher

ROOT = Path(__file__).resolve().parents[1]
KEY, NEXT = "sig_cold_current_0000000000", "sig_cold_next_000000000000000"

# never needed to answer a webhook call (a pinned graph comes from Redis; no CLI, no docs)
NEVER_ON_WEBHOOK = (
    "yaml",
    "jsonschema",
    "rich",
    "click",
    "pygments",
    "prometheus_client",
    # hopflow's tracing, and OpenTelemetry at all: redis-py >= 8 probes for it at import time for
    # metrics of its own (35 ms with the SDK installed); engine.lazyimport.redis() leaves that out
    "engine.observe.traces",
    "opentelemetry",
    "psutil",
    "dsl.schema",
    "dsl.validate",
    "engine.web.openapi",
    "engine.web.api",  # the operations API: its routes import it on their first request
    "engine.web.metrics",
    "dsl.diagnostics",
    "engine.web.ui.spec",
    "engine.web.ui.view",
    "engine.web.ui.catalogue",
    "engine.devtools",  # the QStash dev server: tests and `hopflow qstash-dev` only
)

LOADED = "import json, sys; print(json.dumps(sorted(sys.modules)))"

FIRST_CALL = r"""
import asyncio, json, os, sys
import engine.asgi
body = os.environ["COLD_BODY"].encode()
path = os.environ.get("COLD_PATH", "/v1/step")
extra = json.loads(os.environ.get("COLD_HEADERS", "{}"))
if "COLD_SIG" in os.environ:
    extra["upstash-signature"] = os.environ["COLD_SIG"]
scope = {
    "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
    "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
    "root_path": "", "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 80),
    "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode())]
               + [(k.encode(), v.encode()) for k, v in extra.items()],
}
sent = []
async def receive():
    return {"type": "http.request", "body": body, "more_body": False}
async def send(message):
    sent.append(message)
asyncio.run(engine.asgi.app(scope, receive, send))
status = next(m["status"] for m in sent if m["type"] == "http.response.start")
answer = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body").decode()
print(json.dumps({"status": status, "answer": answer, "modules": sorted(sys.modules)}))
"""

WORKFLOW = """\
name: cold-webhook
steps:
  - id: greet
    set: {greeting: "hello {{ input.name }}"}
  - id: done
    set: {ok: true}
"""


class _StubQStash(BaseHTTPRequestHandler):
    published: list[bytes] = []

    def do_POST(self) -> None:
        _StubQStash.published.append(self.rfile.read(int(self.headers.get("content-length") or 0)))
        body = b'{"messageId":"msg_cold_stub"}'
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def qstash_stub() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StubQStash)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOPFLOW_", "QSTASH_", "REDIS_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def _redis_url(client: Any) -> str:
    kwargs = client.connection_pool.connection_kwargs
    db = kwargs.get("db", 0)
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}?db={db}"
    return f"redis://{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}/{db}"


def test_importing_the_asgi_entry_point_loads_no_third_party_library() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import engine.asgi; " + LOADED],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=ROOT,
        check=True,
    )
    loaded = set(json.loads(proc.stdout))
    heavy = ("yaml", "jsonschema", "jinja2", "redis", "httpx", "starlette", "rich", "click", "nacl")
    assert sorted(loaded & set(heavy)) == []


def test_a_first_webhook_call_imports_only_what_it_needs(
    redis_db: Any, tmp_path: Path, qstash_stub: str
) -> None:
    from engine.catalog import Catalog
    from engine.clock import VirtualClock
    from engine.egress import EgressPolicy
    from engine.runtime import Runtime
    from engine.signing import sign_qstash
    from engine.state.store import Store

    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "cold-webhook.yaml").write_text(WORKFLOW)
    queue = QueueDispatcher(VirtualClock())
    runtime = Runtime(
        Store(redis_db), queue, Catalog.from_directory(folder), egress=EgressPolicy(allow_loopback=True)
    )
    runtime.start("cold-webhook", {"name": "cold"})
    outgoing = queue.pop()
    assert outgoing is not None
    body = outgoing.message.to_json()
    public = "http://127.0.0.1:9/"
    env = {
        **_clean_env(),
        "REDIS_URL": _redis_url(redis_db),
        "QSTASH_URL": qstash_stub,
        "QSTASH_TOKEN": "cold-token",
        "QSTASH_CURRENT_SIGNING_KEY": KEY,
        "QSTASH_NEXT_SIGNING_KEY": NEXT,
        "HOPFLOW_PUBLIC_URL": public,
        "HOPFLOW_WORKFLOWS": str(folder),
        "COLD_BODY": body.decode(),
        "COLD_SIG": sign_qstash(body, public + "v1/step", KEY),
    }
    proc = subprocess.run(
        [sys.executable, "-c", FIRST_CALL], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == 200, result["answer"]
    assert json.loads(result["answer"])["result"] == "advanced"
    assert _StubQStash.published, "the next node was not published"
    loaded = set(result["modules"])
    assert {"jinja2", "redis"} <= loaded  # the call really rendered and checkpointed (published: above)
    assert "httpx" not in loaded  # the publish goes through http.client (engine/dispatch/keepalive.py)
    assert sorted(m for m in loaded if m.split(".")[0] in NEVER_ON_WEBHOOK or m in NEVER_ON_WEBHOOK) == []


def test_redis_is_imported_without_its_opentelemetry_probe_and_otel_still_imports_later() -> None:
    code = (
        "import sys; from engine import lazyimport; r = lazyimport.redis(); "
        "assert r is sys.modules['redis'] and r.Redis; "
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'probed'; "
        "import redis.asyncio; import opentelemetry.sdk.metrics, opentelemetry.metrics; "
        "assert lazyimport.redis() is r; print('ok')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_clean_env(), cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


# what compiling a workflow file needs, and a start call with a warm graph cache never imports
COMPILER = ("yaml", "jsonschema", "dsl.validate", "dsl.schema", "dsl.source", "dsl.compiler", "dsl.checks")


@pytest.mark.parametrize("warm", [True, False], ids=["warm-cache", "empty-cache"])
def test_a_first_start_call_with_a_warm_graph_cache_compiles_nothing(
    warm: bool, redis_db: Any, tmp_path: Path, qstash_stub: str
) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "cold-webhook.yaml").write_text(WORKFLOW)
    cache = tmp_path / "graph-cache"
    api_key = "cold-start-api-key-0123456789abcdef-0123"
    env = {
        **_clean_env(),
        "REDIS_URL": _redis_url(redis_db),
        "QSTASH_URL": qstash_stub,
        "QSTASH_TOKEN": "cold-token",
        "QSTASH_CURRENT_SIGNING_KEY": KEY,
        "QSTASH_NEXT_SIGNING_KEY": NEXT,
        "HOPFLOW_PUBLIC_URL": "http://127.0.0.1:9/",
        "HOPFLOW_WORKFLOWS": str(folder),
        "HOPFLOW_API_KEY": api_key,
        "HOPFLOW_CACHE_DIR": str(cache),
    }
    if warm:  # the build step of docs/deploy.md
        subprocess.run(
            [sys.executable, "-m", "engine.cli", "compile", "--cache"],
            env=env,
            cwd=ROOT,
            check=True,
            timeout=120,
        )
    published = len(_StubQStash.published)
    env |= {
        "COLD_BODY": json.dumps({"workflow": "cold-webhook", "input": {"name": "cold"}}),
        "COLD_PATH": "/v1/executions",
        "COLD_HEADERS": json.dumps({"authorization": f"Bearer {api_key}"}),
    }
    proc = subprocess.run(
        [sys.executable, "-c", FIRST_CALL], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == 202, result["answer"]
    assert len(_StubQStash.published) > published, "the first node was not published"
    compiled = sorted(
        m for m in result["modules"] if m in COMPILER or m.startswith(tuple(c + "." for c in COMPILER))
    )
    if warm:
        assert compiled == []
    else:  # without the cache the same call compiles the file (so the assertion above means something)
        assert {"yaml", "dsl.schema", "dsl.validate"} <= set(compiled)
    assert list(cache.glob("*.json")), "the graph is cached after the first compile"
