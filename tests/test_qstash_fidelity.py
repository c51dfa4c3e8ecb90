"""QStash-facing hardening (issue 7): wake-up times kept in the checkpoint, dead-letter reporting,
and the parts of the webhook that only a real delivery over a socket shows.

Each test runs the real app under uvicorn on loopback, the QStash dispatcher and ``hopflow
qstash-dev``, on a real Redis; deliveries are signed the way QStash signs them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from helpers import serve_app

from engine.config import Config
from engine.model import Message

API_KEY = "fidelity-api-key-0123456789abcdefghijkl"
AUTH = {"Authorization": f"Bearer {API_KEY}"}

LONG_WAIT = """
name: longwait
steps:
  - id: nap
    wait: {for: 10d}
  - id: done
    succeed: {output: woke}
"""

LONG_TIMEOUT = """
name: longtimeout
timeout: 30d
steps:
  - id: hold
    wait: {event: never, key: "k"}
"""


@dataclass
class Stack:
    url: str
    dev: Any
    runtime: Any
    http: httpx.Client

    def start(self, workflow: str, input: Any = None, **extra: Any) -> str:
        r = self.http.post(
            f"{self.url}/v1/executions",
            json={"workflow": workflow, "input": input or {}, **extra},
            headers=AUTH,
        )
        assert r.status_code == 202, r.text
        return str(r.json()["execution_id"])

    def record(self, eid: str) -> dict[str, Any]:
        r = self.http.get(f"{self.url}/v1/executions/{eid}", headers=AUTH)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def accepted(self, url_part: str = "/v1/step") -> list[dict[str, Any]]:
        return [e for e in self.dev.server.events() if e["event"] == "accepted" and url_part in e["url"]]

    def deliver(self, body: bytes, path: str = "/v1/step", **headers: str) -> httpx.Response:
        """A delivery as QStash makes it (or as an attacker replays a captured one): signed body."""
        from engine.signing import sign_qstash

        token = sign_qstash(body, self.url + path, self.dev.current_signing_key)
        return self.http.post(self.url + path, content=body, headers={"Upstash-Signature": token, **headers})


@contextlib.contextmanager
def stack(redis_db: Any, *workflows: str, **dev_options: Any) -> Iterator[Stack]:
    from engine.asgi import create_app
    from engine.catalog import Catalog
    from engine.devtools.qstash_dev.server import start_dev_server
    from engine.dispatch.qstash import QStashDispatcher
    from engine.egress import EgressPolicy
    from engine.runtime import Runtime
    from engine.state.store import Store

    catalog = Catalog.from_texts(list(workflows))
    holder: dict[str, Any] = {}
    with start_dev_server(max_retries=1, backoff_scale=0.001, **dev_options) as dev:

        def make_app(url: str) -> Any:
            dispatcher = QStashDispatcher(
                dev.token, dev.url, url + "/v1/step", failure_callback_url=url + "/v1/step/failed"
            )
            # the targets here are loopback test servers: allow them (the default egress policy refuses)
            loopback = EgressPolicy(allow_loopback=True)
            holder["runtime"] = runtime = Runtime(Store(redis_db), dispatcher, catalog, egress=loopback)
            config = Config(
                api_key=API_KEY,
                public_url=url,
                qstash_token=dev.token,
                qstash_url=dev.url,
                qstash_current_signing_key=dev.current_signing_key,
                qstash_next_signing_key=dev.next_signing_key,
            )
            return create_app(runtime, config=config)

        with serve_app(make_app, start_timeout_s=10) as url, httpx.Client(timeout=30) as http:
            yield Stack(url, dev, holder["runtime"], http)
        holder["runtime"].dispatcher.close()


def wait_for(predicate: Any, what: str, timeout_s: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        assert time.monotonic() < deadline, what
        time.sleep(0.02)
    return value


# --------------------------------------------------------------------- item 3: long waits woken early


def test_a_replayed_relay_of_a_long_wait_without_its_header_does_not_end_the_wait(redis_db: Any) -> None:
    """A 10-day wait is relayed through QStash (7-day maximum). Replaying the captured delivery
    without ``Hopflow-Not-Before`` (or with one in the past) used to run the node at once."""
    with stack(redis_db, LONG_WAIT) as s:
        eid = s.start("longwait")
        wait_for(
            lambda: s.record(eid)["current"] == [{"branch": "", "node": "nap", "phase": "park"}], "parked"
        )
        # the relay hop QStash holds for 7 days: its body is what a captured delivery carries
        [hop] = wait_for(lambda: [e for e in s.accepted() if e["not_before"] > time.time() + 86400], "a hop")
        stored = s.http.get(
            f"{s.dev.url}/v2/messages/{hop['message_id']}", headers={"Authorization": f"Bearer {s.dev.token}"}
        ).json()
        assert "hopflow-not-before" in {k.lower() for k in stored["header"]}  # informational, unsigned
        body = stored["body"].encode()
        assert Message.from_json(body).node == "nap"
        before = len(s.accepted())
        for forged in ({}, {"Hopflow-Not-Before": str(int(time.time()) - 60)}):
            r = s.deliver(body, **forged)
            assert r.status_code == 200, r.text
            assert r.json()["result"] == "deferred", r.json()
            record = s.record(eid)
            assert record["status"] == "running" and record["trace"] == []
            assert record["current"] == [{"branch": "", "node": "nap", "phase": "park"}]
        # each early delivery was re-published for the recorded wake-up time (chained again)
        copies = s.accepted()[before:]
        assert copies and all(e["not_before"] > time.time() + 6 * 86400 for e in copies)


def test_an_early_execution_timeout_delivery_does_not_end_the_execution(redis_db: Any) -> None:
    """The execution's ``$timeout`` message is relayed too; delivered early it must not time it out."""
    with stack(redis_db, LONG_TIMEOUT) as s:
        eid = s.start("longtimeout")
        wait_for(
            lambda: s.record(eid)["current"] == [{"branch": "", "node": "hold", "phase": "park"}], "parked"
        )
        r = s.deliver(Message(eid, "$timeout", 0).to_json())
        assert r.status_code == 200 and r.json()["result"] == "deferred", r.text
        assert s.record(eid)["status"] == "running"


def test_a_wait_delivered_on_time_still_runs(harness: Any) -> None:
    """The wake-up check never holds back a delivery that is due (virtual clock, local queue)."""
    h = harness(LONG_WAIT.replace("10d", "2s"))
    eid = h.start("longwait", {})
    h.drain()
    assert h.runtime.record(eid)["status"] == "succeeded"


# ------------------------------------------------------------- item 14 (c): large offloaded answers


def big_call(url: str) -> str:
    return f"""
name: bigcall
input: {{type: object}}
steps:
  - id: fetch
    http:
      method: GET
      url: "{url}/big?size={{{{ input.size }}}}"
      offload: true
    timeout: 30s
    output: "{{{{ result.text | length }}}}"
"""


def test_an_offloaded_response_near_qstash_s_size_limit_completes_and_a_cut_one_fails_clearly(
    redis_db: Any,
) -> None:
    """~900 KB of response is ~1.2 MB once base64-encoded in QStash's callback: over the webhook's
    1 MiB bound, it was refused (413) and the step timed out. A response QStash cut (the dev server
    keeps 1 MiB, like a plan's message size) fails with ``http.truncated`` instead of passing half a
    body off as the answer."""
    from conftest_qstash import endpoint

    def answer(rec: Any) -> tuple[int, dict[str, str], bytes]:
        size = int(rec.path.split("size=")[1])
        return 200, {"Content-Type": "text/plain"}, b"x" * size

    with endpoint(answer) as target, stack(redis_db, big_call(target.url)) as s:
        ok = s.start("bigcall", {"size": 900_000})
        cut = s.start("bigcall", {"size": 1_500_000})
        wait_for(lambda: all(s.record(e)["status"] != "running" for e in (ok, cut)), "both finished", 30)
        good = s.record(ok)
        assert good["status"] == "succeeded", good
        assert good["output"] == 900_000
        bad = s.record(cut)
        assert bad["status"] == "failed", bad
        assert bad["error"]["name"] == "http.truncated"
        assert "1048576 of its 1500000 bytes" in bad["error"]["message"]
