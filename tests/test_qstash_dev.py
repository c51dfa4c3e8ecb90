"""The local QStash-compatible server, over real sockets, driven by the official SDK and by raw HTTP."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest_qstash import Endpoint, Recorded, assert_qstash_signed, endpoint, free_port
from qstash import QStash
from qstash.errors import QStashError

from engine.devtools.qstash_dev.server import (
    DEFAULT_CURRENT_SIGNING_KEY,
    DEFAULT_NEXT_SIGNING_KEY,
    DEFAULT_TOKEN,
    RunningDevServer,
    _parser,
    banner,
    default_backoff,
    parse_duration,
    parse_retry_after,
    start_dev_server,
)

FAST = {"backoff": lambda n: 0.05}  # retries in 50 ms instead of QStash's 12 s, 2m28s, ...


@pytest.fixture(scope="module")
def dev() -> Iterator[RunningDevServer]:
    with start_dev_server(**FAST) as running:
        yield running


@pytest.fixture
def sdk(dev: RunningDevServer) -> QStash:
    return QStash(dev.token, base_url=dev.url, retry=False)


@pytest.fixture
def api(dev: RunningDevServer) -> Iterator[httpx.Client]:
    auth = {"Authorization": f"Bearer {dev.token}"}
    with httpx.Client(base_url=dev.url, headers=auth, timeout=10) as client:
        yield client


def signed_ok(ep: Endpoint) -> None:
    assert assert_qstash_signed(ep, DEFAULT_CURRENT_SIGNING_KEY, DEFAULT_NEXT_SIGNING_KEY) == len(ep.requests)


def publish(api: httpx.Client, url: str, body: bytes = b'{"x":1}', **headers: str) -> str:
    response = api.post(f"/v2/publish/{url}", content=body,
                        headers={"Content-Type": "application/json", **headers})
    assert response.status_code == 200, response.text  # QStash: 200 (202 for a duplicate)
    return str(response.json()["messageId"])


# ------------------------------------------------------------------------------------- publishing


def test_sdk_publishes_and_the_delivery_is_signed_like_qstash(dev: RunningDevServer, sdk: QStash) -> None:
    with endpoint() as ep:
        res = sdk.message.publish_json(url=f"{ep.url}/hook?tenant=a", body={"hello": "world"},
                                       headers={"X-Custom": "v1"})
        [rec] = ep.wait_for(1)
        assert rec.path == "/hook?tenant=a" and rec.method == "POST"
        assert json.loads(rec.body) == {"hello": "world"}
        assert rec.headers["upstash-message-id"] == res.message_id
        assert rec.headers["upstash-retried"] == "0"
        assert rec.headers["user-agent"] == "Upstash-QStash"
        assert rec.headers["content-type"] == "application/json"
        assert rec.headers["x-custom"] == "v1"  # Upstash-Forward-X-Custom, prefix stripped
        signed_ok(ep)
        assert dev.server.wait_idle()


def test_keys_endpoint_and_bad_token(dev: RunningDevServer, sdk: QStash) -> None:
    keys = sdk.signing_key.get()
    assert (keys.current, keys.next) == (DEFAULT_CURRENT_SIGNING_KEY, DEFAULT_NEXT_SIGNING_KEY)
    before = len(dev.server.events())
    bad = {"Authorization": "Bearer not-the-token"}
    with httpx.Client(base_url=dev.url, timeout=5) as raw:
        for method, path in (("POST", "/v2/publish/http://127.0.0.1:9/x"), ("POST", "/v2/batch"),
                             ("GET", "/v2/dlq"), ("GET", "/v2/keys"), ("GET", "/v2/messages/msg_x"),
                             ("DELETE", "/v2/dlq/1-1"), ("POST", "/v2/dlq/retry/1-1")):
            assert raw.request(method, path, headers=bad, content=b"[]").status_code == 401
            assert raw.request(method, path, content=b"[]").status_code == 401
    with pytest.raises(QStashError):
        QStash("wrong", base_url=dev.url, retry=False).message.publish_json(
            url="http://127.0.0.1:9/x", body={})
    assert len(dev.server.events()) == before  # nothing was accepted


def test_bad_publish_requests_are_rejected_with_reasons(api: httpx.Client) -> None:
    cases = [
        ("/v2/publish/not-a-url", {}, 400, "destination"),
        ("/v2/publish/ftp://127.0.0.1/x", {}, 400, "destination"),
        ("/v2/publish/http://127.0.0.1:9/x", {"Upstash-Delay": "soon"}, 400, "Upstash-Delay"),
        ("/v2/publish/http://127.0.0.1:9/x", {"Upstash-Not-Before": "tomorrow"}, 400, "Upstash-Not-Before"),
        ("/v2/publish/http://127.0.0.1:9/x", {"Upstash-Retries": "-1"}, 400, "Upstash-Retries"),
        ("/v2/publish/http://127.0.0.1:9/x", {"Upstash-Method": "BREW"}, 400, "Upstash-Method"),
        ("/v2/publish/http://127.0.0.1:9/x", {"Upstash-Callback": "nope"}, 400, "Callback"),
    ]
    for path, headers, status, needle in cases:
        response = api.post(path, headers=headers, content=b"{}")
        assert response.status_code == status and needle.lower() in response.json()["error"].lower(), path
    assert api.post("/v2/publish/http://127.0.0.1:9/x", content=b"x" * (1_048_576 + 1)).status_code == 413


def test_delay_then_get_and_cancel(dev: RunningDevServer, api: httpx.Client) -> None:
    with endpoint() as ep:
        started = time.time()
        delayed = publish(api, f"{ep.url}/delayed", b'{"n":1}', **{"Upstash-Delay": "1s"})
        cancelled = publish(api, f"{ep.url}/cancelled", b'{"n":2}', **{"Upstash-Delay": "2s"})
        info = api.get(f"/v2/messages/{delayed}").json()
        assert info["messageId"] == delayed and info["url"] == f"{ep.url}/delayed"
        assert info["body"] == '{"n":1}' and info["method"] == "POST"
        assert info["notBefore"] >= int((started + 1) * 1000) - 5
        assert api.delete(f"/v2/messages/{cancelled}").status_code == 200
        assert api.get(f"/v2/messages/{cancelled}").status_code == 404
        assert api.delete(f"/v2/messages/{cancelled}").status_code == 404
        [rec] = ep.wait_for(1, "/delayed")
        assert rec.at >= started + 1.0
        assert dev.server.wait_idle()
        assert ep.on("/cancelled") == []
        assert api.get(f"/v2/messages/{delayed}").status_code == 404  # delivered: gone
        signed_ok(ep)


def test_not_before_wins_over_delay(dev: RunningDevServer, api: httpx.Client) -> None:
    with endpoint() as ep:
        not_before = int(time.time()) + 1
        publish(api, f"{ep.url}/nb", **{"Upstash-Delay": "1h", "Upstash-Not-Before": str(not_before)})
        [rec] = ep.wait_for(1, timeout_s=10)  # an hour's delay would never arrive here
        assert rec.at >= not_before
        signed_ok(ep)


def test_duration_parsing() -> None:
    assert parse_duration("10s") == 10 and parse_duration("2m") == 120 and parse_duration("1d") == 86400
    assert parse_duration("1h30m") == 5400 and parse_duration("500ms") == 0.5 and parse_duration("7") == 7
    for bad in ("", "s", "10x", "1h 30m", "-1s"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert default_backoff(1) == pytest.approx(12.18, abs=0.01) and default_backoff(9) == 86400
    assert parse_retry_after("0") == 0 and parse_retry_after("10") == 10 and parse_retry_after("6m5s") == 365
    now = 1_700_000_000.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:40 GMT", now) == pytest.approx(20, abs=1)
    assert parse_retry_after("2d", now) is None and parse_retry_after("whenever", now) is None


# ---------------------------------------------------------------------------------- retries, DLQ


def test_retries_then_dlq_with_failure_callback(dev: RunningDevServer, api: httpx.Client,
                                                sdk: QStash) -> None:
    def answer(rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        if rec.path.startswith("/target"):
            return 500, {"X-Why": "broken"}, b"it broke"
        return 200, {}, b""

    with endpoint(answer) as ep:
        mid = publish(api, f"{ep.url}/target", b'{"order":7}', **{
            "Upstash-Retries": "2", "Upstash-Failure-Callback": f"{ep.url}/failed",
            "Upstash-Failure-Callback-Forward-X-Run": "r1", "Upstash-Forward-X-Trace": "t1"})
        attempts = ep.wait_for(3, "/target")
        assert [r.headers["upstash-retried"] for r in attempts] == ["0", "1", "2"]
        assert {r.headers["upstash-message-id"] for r in attempts} == {mid}
        [fail] = ep.wait_for(1, "/failed")
        assert dev.server.wait_idle()
        assert len(ep.on("/target")) == 3  # no fourth attempt
        assert fail.headers["x-run"] == "r1"
        payload = json.loads(fail.body)
        assert payload["status"] == 500 and base64.b64decode(payload["body"]) == b"it broke"
        assert payload["header"]["x-why"] == ["broken"]
        assert payload["retried"] == payload["maxRetries"] == 2
        assert payload["sourceMessageId"] == mid and payload["url"] == f"{ep.url}/target"
        assert payload["method"] == "POST" and base64.b64decode(payload["sourceBody"]) == b'{"order":7}'
        assert payload["sourceHeader"]["x-trace"] == ["t1"]
        for key in ("notBefore", "createdAt", "callerIP", "topicName", "endpointName", "scheduleId"):
            assert key in payload
        dlq = sdk.dlq.list(filter={"message_id": mid}).messages
        assert [m.dlq_id for m in dlq] == [payload["dlqId"]]
        assert dlq[0].response_status == 500 and dlq[0].response_body == "it broke"
        assert dlq[0].url == f"{ep.url}/target" and dlq[0].max_retries == 2
        signed_ok(ep)


def test_489_with_nonretryable_header_goes_to_dlq_at_once(dev: RunningDevServer, api: httpx.Client) -> None:
    def answer(rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        if rec.path == "/final":
            return 489, {"Upstash-NonRetryable-Error": "true"}, b"do not retry"
        return 489, {}, b"plain 489"  # without the header it is an ordinary failure

    with endpoint(answer) as ep:
        final = publish(api, f"{ep.url}/final", **{"Upstash-Retries": "3"})
        plain = publish(api, f"{ep.url}/plain", **{"Upstash-Retries": "1"})
        assert dev.server.wait_idle()
        assert len(ep.on("/final")) == 1 and len(ep.on("/plain")) == 2
        listed = {m["messageId"]: m for m in api.get("/v2/dlq").json()["messages"]}
        assert listed[final]["responseStatus"] == 489 and listed[final]["retried"] == 0
        assert listed[plain]["retried"] == 1
        signed_ok(ep)


def test_a_hanging_endpoint_times_out_and_is_retried(dev: RunningDevServer, api: httpx.Client) -> None:
    def answer(rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        if rec.headers["upstash-retried"] == "0":
            time.sleep(1.0)  # longer than Upstash-Timeout: the attempt fails, the loop carries on
        return 200, {}, b""

    with endpoint(answer) as ep:
        mid = publish(api, f"{ep.url}/hang", **{"Upstash-Timeout": "300ms", "Upstash-Retries": "2"})
        got = ep.wait_for(2, "/hang")
        assert [r.headers["upstash-retried"] for r in got] == ["0", "1"]
        assert dev.server.wait_idle()
        assert mid in {e["message_id"] for e in dev.server.events() if e["event"] == "delivered"}
        signed_ok(ep)


def test_one_slow_endpoint_does_not_hold_up_other_deliveries(dev: RunningDevServer,
                                                              api: httpx.Client) -> None:
    quick_arrived = threading.Event()
    saw_quick: list[bool] = []

    def answer(rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        if rec.path == "/quick":
            quick_arrived.set()
        else:  # the slow endpoint answers only once the other message got through (or gives up)
            saw_quick.append(quick_arrived.wait(5))
        return 200, {}, b""

    with endpoint(answer) as ep:
        publish(api, f"{ep.url}/slow")
        ep.wait_for(1, "/slow")
        publish(api, f"{ep.url}/quick")
        assert dev.server.wait_idle()
        assert saw_quick == [True]
        signed_ok(ep)


def test_dlq_list_get_delete_retry(dev: RunningDevServer, api: httpx.Client, sdk: QStash) -> None:
    healthy = {"now": False}

    def answer(rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        return (200, {}, b"fine") if healthy["now"] else (503, {}, b"down")

    with endpoint(answer) as ep:
        ids = [publish(api, f"{ep.url}/d{i}", f'{{"i":{i}}}'.encode(), **{"Upstash-Retries": "0"})
               for i in range(3)]
        assert dev.server.wait_idle()
        by_url = api.get("/v2/dlq", params={"url": f"{ep.url}/d0"}).json()["messages"]
        assert [m["messageId"] for m in by_url] == [ids[0]]
        mine = [m for m in api.get("/v2/dlq").json()["messages"] if m["messageId"] in ids]
        assert len(mine) == 3
        page = api.get("/v2/dlq", params={"count": 1}).json()
        assert len(page["messages"]) == 1 and "cursor" in page
        dlq_ids = {m["messageId"]: m["dlqId"] for m in mine}
        one = sdk.dlq.get(dlq_ids[ids[0]])
        assert one.message_id == ids[0] and one.response_status == 503 and one.body == '{"i":0}'
        sdk.dlq.delete(dlq_ids[ids[0]])
        assert api.get(f"/v2/dlq/{dlq_ids[ids[0]]}").status_code == 404
        assert api.delete(f"/v2/dlq/{dlq_ids[ids[0]]}").status_code == 404
        assert sdk.dlq.delete_many([dlq_ids[ids[1]], "no-such-id"]) == 1
        healthy["now"] = True
        retried = api.post(f"/v2/dlq/retry/{dlq_ids[ids[2]]}")
        assert retried.status_code == 200
        new_id = retried.json()["messageId"]
        assert new_id != ids[2]
        [ok] = [r for r in ep.wait_for(2, "/d2") if r.headers["upstash-message-id"] == new_id]
        assert ok.body == b'{"i":2}' and ok.headers["upstash-retried"] == "0"
        assert api.post(f"/v2/dlq/retry/{dlq_ids[ids[2]]}").status_code == 404  # left the DLQ
        assert dev.server.wait_idle()
        assert not [m for m in api.get("/v2/dlq").json()["messages"] if m["messageId"] in ids]
        signed_ok(ep)


def test_callback_body_shape(dev: RunningDevServer, api: httpx.Client) -> None:
    def answer(rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        if rec.path == "/long-call":
            return 201, {"X-Resp": "r"}, b"\x00\xffbinary result"
        return 200, {}, b""

    with endpoint(answer) as ep:
        mid = publish(api, f"{ep.url}/long-call", b"request body", **{
            "Content-Type": "text/plain", "Upstash-Method": "PUT", "Upstash-Callback": f"{ep.url}/cb",
            "Upstash-Callback-Forward-X-Step": "charge"})
        [cb] = ep.wait_for(1, "/cb")
        [call] = ep.on("/long-call")
        assert call.method == "PUT" and call.body == b"request body"
        assert cb.method == "POST" and cb.headers["x-step"] == "charge"
        assert cb.headers["content-type"] == "application/json"
        payload = json.loads(cb.body)
        assert payload["status"] == 201 and payload["header"]["x-resp"] == ["r"]
        assert base64.b64decode(payload["body"]) == b"\x00\xffbinary result"
        assert payload["retried"] == 0 and payload["maxRetries"] == 3
        assert payload["sourceMessageId"] == mid and payload["url"] == f"{ep.url}/long-call"
        assert payload["method"] == "PUT" and base64.b64decode(payload["sourceBody"]) == b"request body"
        assert payload["sourceHeader"]["content-type"] == ["text/plain"]
        assert "dlqId" not in payload
        assert int(payload["createdAt"]) <= int(payload["notBefore"]) + 1
        assert dev.server.wait_idle()
        # the callback is a delivery of its own, signed for the callback URL
        assert cb.headers["upstash-message-id"] != mid
        signed_ok(ep)


def test_batch(dev: RunningDevServer, sdk: QStash, api: httpx.Client) -> None:
    with endpoint() as ep:
        results = sdk.message.batch_json([
            {"url": f"{ep.url}/b{i}", "body": {"i": i}, "headers": {"X-I": str(i)}} for i in range(4)])
        ids = [r.message_id for r in results]  # type: ignore[union-attr]
        assert len(set(ids)) == 4
        got = ep.wait_for(4)
        assert sorted(json.loads(r.body)["i"] for r in got) == [0, 1, 2, 3]
        assert all(r.headers["x-i"] == str(json.loads(r.body)["i"]) for r in got)
        # like QStash, a bad entry gets an error of its own and the others are still sent
        assert dev.server.wait_idle()
        mixed = api.post("/v2/batch", json=[{"destination": f"{ep.url}/ok", "body": "{}"},
                                            {"destination": "nowhere", "body": "{}"}])
        assert mixed.status_code == 200, mixed.text
        first, second = mixed.json()
        assert first["messageId"] and "error" not in first
        assert "batch[1]" in second["error"] and "messageId" not in second
        assert api.post("/v2/batch", content=b"{}").status_code == 400  # not a batch at all
        ep.wait_for(1, "/ok")
        assert dev.server.wait_idle()
        signed_ok(ep)


def test_deduplication_within_the_window(dev: RunningDevServer, api: httpx.Client) -> None:
    with endpoint() as ep:
        first = api.post(f"/v2/publish/{ep.url}/once", content=b"{}",
                         headers={"Upstash-Deduplication-Id": "exec-1:-:4:charge"})
        again = api.post(f"/v2/publish/{ep.url}/once", content=b"{}",
                         headers={"Upstash-Deduplication-Id": "exec-1:-:4:charge"})
        assert first.json() == {"messageId": first.json()["messageId"]}
        assert again.json() == {"messageId": first.json()["messageId"], "deduplicated": True}
        content = [api.post(f"/v2/publish/{ep.url}/content", content=b'{"same":1}',
                            headers={"Upstash-Content-Based-Deduplication": "true"}).json() for _ in range(2)]
        assert content[1] == {"messageId": content[0]["messageId"], "deduplicated": True}
        assert dev.server.wait_idle()
        assert len(ep.on("/once")) == 1 and len(ep.on("/content")) == 1
        signed_ok(ep)


# ------------------------------------------------------------------- a server with slow backoff


@pytest.fixture(scope="module")
def slow() -> Iterator[RunningDevServer]:
    """QStash's real backoff (12 s before the first retry) and a 0.5 s dedup window."""
    with start_dev_server(dedup_window_s=0.5) as running:
        yield running


def test_retry_after_is_honoured_instead_of_backoff(slow: RunningDevServer) -> None:
    def answer(rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        if rec.headers["upstash-retried"] == "0":
            return 503, {"Retry-After": "1"}, b"later"
        return 200, {}, b""

    with endpoint(answer) as ep, httpx.Client(base_url=slow.url, timeout=5,
                                              headers={"Authorization": f"Bearer {slow.token}"}) as api:
        publish(api, f"{ep.url}/ra")
        first, second = ep.wait_for(2, timeout_s=8)  # the default backoff would take 12 s
        assert second.at - first.at >= 1.0
        assert second.headers["upstash-retried"] == "1"
        assert slow.server.wait_idle()
        assert assert_qstash_signed(ep, slow.current_signing_key, slow.next_signing_key) == 2


def test_deduplication_window_expires(slow: RunningDevServer) -> None:
    with endpoint() as ep, httpx.Client(base_url=slow.url, timeout=5,
                                        headers={"Authorization": f"Bearer {slow.token}"}) as api:
        headers = {"Upstash-Deduplication-Id": "d-1"}
        a = api.post(f"/v2/publish/{ep.url}/w", content=b"{}", headers=headers).json()
        b = api.post(f"/v2/publish/{ep.url}/w", content=b"{}", headers=headers).json()
        assert b.get("deduplicated") is True
        time.sleep(0.6)
        c = api.post(f"/v2/publish/{ep.url}/w", content=b"{}", headers=headers).json()
        assert "deduplicated" not in c and c["messageId"] != a["messageId"]
        ep.wait_for(2, "/w")
        assert slow.server.wait_idle()


def test_plan_delay_limit_is_enforced() -> None:
    with start_dev_server(max_delay_s=60) as dev, httpx.Client(base_url=dev.url, timeout=5, headers={
            "Authorization": f"Bearer {dev.token}"}) as api:
        too_far = api.post("/v2/publish/http://127.0.0.1:9/x", content=b"{}", headers={"Upstash-Delay": "2m"})
        assert too_far.status_code == 400 and "maximum" in too_far.json()["error"]
        later = str(int(time.time()) + 3600)
        assert api.post("/v2/publish/http://127.0.0.1:9/x", content=b"{}",
                        headers={"Upstash-Not-Before": later}).status_code == 400
        ok = api.post("/v2/publish/http://127.0.0.1:9/x", content=b"{}", headers={"Upstash-Delay": "1m"})
        assert ok.status_code == 200
        assert api.delete(f"/v2/messages/{ok.json()['messageId']}").status_code == 200


# ------------------------------------------------------------------------------------ fault knobs


def test_duplicate_knob_sends_every_delivery_twice() -> None:
    with start_dev_server(duplicate=True, **FAST) as dev, endpoint() as ep:
        sdk = QStash(dev.token, base_url=dev.url)
        mid = sdk.message.publish_json(url=f"{ep.url}/dup", body={}).message_id
        got = ep.wait_for(2, "/dup")
        assert dev.server.wait_idle()
        assert len(ep.on("/dup")) == 2
        assert {r.headers["upstash-message-id"] for r in got} == {mid}
        assert {r.headers["upstash-retried"] for r in got} == {"0"}
        assert assert_qstash_signed(ep, dev.current_signing_key, dev.next_signing_key) == 2


def test_reorder_knob_changes_arrival_order() -> None:
    with start_dev_server(reorder_window_s=0.5, seed=11, **FAST) as dev, endpoint() as ep:
        QStash(dev.token, base_url=dev.url).message.batch_json(
            [{"url": f"{ep.url}/r", "body": {"i": i}} for i in range(8)])
        got = ep.wait_for(8, "/r")
        order = [json.loads(r.body)["i"] for r in got]
        assert sorted(order) == list(range(8))
        assert order != list(range(8))


def test_drop_knob_redelivers_what_was_delivered() -> None:
    with start_dev_server(drop_response_rate=1.0, **FAST) as dev, endpoint() as ep:
        with httpx.Client(base_url=dev.url, headers={"Authorization": f"Bearer {dev.token}"}) as api:
            mid = publish(api, f"{ep.url}/lost", **{"Upstash-Retries": "2"})
            assert dev.server.wait_idle()
            got = ep.on("/lost")
            # every attempt reached the endpoint and got 200, yet each was treated as lost
            assert [r.headers["upstash-retried"] for r in got] == ["0", "1", "2"]
            [entry] = api.get("/v2/dlq").json()["messages"]
            assert entry["messageId"] == mid and entry["responseStatus"] == 0
        drops = [e for e in dev.server.events() if e["event"] == "attempt"]
        assert [e["dropped"] for e in drops] == [True, True, True]


# ------------------------------------------------------------------------------------ entry points


def test_cli_parser_and_banner() -> None:
    args = _parser().parse_args(["--port", "9999", "--duplicate", "--reorder-window", "500ms",
                                 "--drop-responses", "0.1", "--backoff-scale", "0.01", "--max-delay", "7d"])
    assert args.port == 9999 and args.duplicate and args.reorder_window == 0.5
    assert args.drop_responses == 0.1 and args.max_delay == 7 * 86400
    from engine.devtools.qstash_dev.server import QStashDevServer

    text = banner(QStashDevServer(), "http://127.0.0.1:8080")
    assert DEFAULT_TOKEN in text and DEFAULT_CURRENT_SIGNING_KEY in text and DEFAULT_NEXT_SIGNING_KEY in text


def test_module_entry_point_serves_and_prints_credentials() -> None:
    port = free_port()
    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "engine.devtools.qstash_dev", "--port", str(port)]
    proc = subprocess.Popen(command, cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONPATH": str(root)})
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in first
        printed = "".join(proc.stdout.readline() for _ in range(5))
        assert f"QSTASH_TOKEN={DEFAULT_TOKEN}" in printed
        assert f"QSTASH_CURRENT_SIGNING_KEY={DEFAULT_CURRENT_SIGNING_KEY}" in printed
        deadline = time.monotonic() + 15
        while True:
            try:
                keys = httpx.get(f"http://127.0.0.1:{port}/v2/keys", timeout=1,
                                 headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"})
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "qstash-dev did not come up"
                time.sleep(0.05)
        assert keys.json() == {"current": DEFAULT_CURRENT_SIGNING_KEY, "next": DEFAULT_NEXT_SIGNING_KEY}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ------------------------------------------------------------ fidelity to QStash (issue 7 item 14)


def test_publish_answers_200_and_202_for_a_duplicate(dev: RunningDevServer, api: httpx.Client) -> None:
    """QStash: 200 for a publish, 202 Accepted for a duplicate (upstash/docs
    qstash/features/deduplication.mdx, qstash/openapi.yaml)."""
    with endpoint() as ep:
        headers = {"Upstash-Deduplication-Id": "fidelity-dup", "Upstash-Delay": "1h"}
        first = api.post(f"/v2/publish/{ep.url}/dup", content=b"{}", headers=headers)
        again = api.post(f"/v2/publish/{ep.url}/dup", content=b"{}", headers=headers)
        assert first.status_code == 200 and again.status_code == 202
        assert again.json() == {"messageId": first.json()["messageId"], "deduplicated": True}
        assert api.delete(f"/v2/messages/{first.json()['messageId']}").status_code == 200


def test_callbacks_inherit_the_source_messages_retries(api: httpx.Client) -> None:
    """A callback without ``Upstash-Callback-Retries`` gets the source message's retries, as on
    QStash (openapi.yaml: "Default is same as original message retries"): an offloaded call published
    with ``Upstash-Retries: 0`` has a callback that is never retried unless it says so."""
    seen: dict[str, int] = {}

    def answer(rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        if rec.path.startswith("/cb"):
            seen[rec.path] = seen.get(rec.path, 0) + 1
            return 503, {}, b"busy"
        return 200, {}, b"ok"

    with start_dev_server(**FAST) as server, endpoint(answer) as ep:
        auth = {"Authorization": f"Bearer {server.token}"}
        for path, extra in (("/cb-inherit", {}), ("/cb-explicit", {"Upstash-Callback-Retries": "2"})):
            r = httpx.post(
                f"{server.url}/v2/publish/{ep.url}/call",
                content=b"{}",
                headers={**auth, "Upstash-Retries": "0", "Upstash-Callback": f"{ep.url}{path}", **extra},
            )
            assert r.status_code == 200, r.text
        assert server.server.wait_idle(10)
    assert seen == {"/cb-inherit": 1, "/cb-explicit": 3}


def test_bulk_cancel_dlq_ids_in_the_query_and_the_qstash_token_query(
    dev: RunningDevServer, api: httpx.Client
) -> None:
    with endpoint(lambda rec: (500, {}, b"no")) as ep:
        ids = [publish(api, f"{ep.url}/later{i}", **{"Upstash-Delay": "1h"}) for i in range(3)]
        r = api.delete("/v2/messages", params=[("messageIds", ids[0]), ("messageIds", ids[1])])
        assert r.status_code == 200 and r.json() == {"cancelled": 2}
        assert api.get(f"/v2/messages/{ids[0]}").status_code == 404
        assert api.get(f"/v2/messages/{ids[2]}").status_code == 200
        r = api.delete("/v2/messages", params={"messageIds": ids[2]})
        assert r.json() == {"cancelled": 1}
        dead = [publish(api, f"{ep.url}/dead{i}", **{"Upstash-Retries": "0"}) for i in range(3)]
        assert dev.server.wait_idle()
        entries = {m["messageId"]: m["dlqId"] for m in api.get("/v2/dlq").json()["messages"]}
        dlq_ids = [entries[m] for m in dead]
        r = api.delete("/v2/dlq", params={"dlqIds": f"{dlq_ids[0]},{dlq_ids[1]}"})
        assert r.status_code == 200 and r.json() == {"deleted": 2}
        r = api.delete("/v2/dlq", params=[("dlqIds", dlq_ids[2]), ("dlqIds", "no-such-id")])
        assert r.json() == {"deleted": 1}
    # Upstash-Method takes GET, POST, PUT, PATCH, DELETE only (openapi.yaml)
    r = httpx.post(
        f"{dev.url}/v2/publish/http://127.0.0.1:9/x",
        headers={"Authorization": f"Bearer {dev.token}", "Upstash-Method": "HEAD"},
    )
    assert r.status_code == 400 and "upstash-method" in r.json()["error"].lower()
    # QStash's query-parameter token is qstash_token (openapi.yaml, bearerAuthQuery)
    assert httpx.get(f"{dev.url}/v2/keys", params={"qstash_token": dev.token}).status_code == 200
    assert httpx.get(f"{dev.url}/v2/keys", params={"qstash_token": "wrong"}).status_code == 401
