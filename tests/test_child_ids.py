"""Child execution ids cannot be squatted (issue 7 item 4).

A client that started ``<parent>.<step>.<seq>`` before the parent reached that step used to have it
adopted as the parent's child, whatever its workflow, and the parent returned the attacker's output.
Now child ids carry ``~``, which no client-chosen id may contain, and a parent only takes the state of
an execution whose recorded parent link names it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from engine.asgi import create_app
from engine.config import Config
from engine.errors import InvalidExecutionId
from engine.signing import generate_ed25519_keypair, sign_ed25519

PUBLIC = "https://hopflow.test"
API_KEY = "c" * 40
KEYS = generate_ed25519_keypair()
AUTH = {"Authorization": f"Bearer {API_KEY}"}

KID = """
name: kid
input: {type: object}
steps:
  - id: answer
    succeed: {output: honest}
"""

EVIL = """
name: evil
input: {type: object}
steps:
  - id: answer
    succeed: {output: attacker-chosen}
"""

PARENT = """
name: parent
input: {type: object}
steps:
  - id: sub
    workflow: {name: kid, input: {}}
  - id: done
    succeed: {output: "{{ steps.sub.output }}"}
"""


class Api:
    def __init__(self, harness: Any, client: TestClient) -> None:
        self.h = harness
        self.client = client

    def start(self, workflow: str, eid: str | None = None) -> Any:
        body: dict[str, Any] = {"workflow": workflow, "input": {}}
        if eid is not None:
            body["id"] = eid
        return self.client.post("/v1/executions", json=body, headers=AUTH)

    def deliver_all(self) -> None:
        while self.h.dispatcher.queue:
            message = self.h.dispatcher.pop().message
            body = message.to_json()
            sig = sign_ed25519(body, PUBLIC + "/v1/step", KEYS.private_key)
            r = self.client.post("/v1/step", content=body, headers={"Hopflow-Signature": sig})
            assert r.status_code == 200, r.text

    def record(self, eid: str) -> dict[str, Any]:
        r = self.client.get(f"/v1/executions/{eid}", headers=AUTH)
        assert r.status_code == 200, r.text
        return dict(r.json())


@pytest.fixture
def api(harness: Any) -> Iterator[Api]:
    h = harness(KID, EVIL, PARENT)
    config = Config(api_key=API_KEY, public_url=PUBLIC, verify_keys=(KEYS.public_key,))
    with TestClient(create_app(h.runtime, config=config), base_url=PUBLIC) as client:
        yield Api(h, client)


def test_the_old_child_id_pattern_is_not_adopted(api: Api) -> None:
    eid = "order-1"
    squat = api.start("evil", f"{eid}.sub.1")  # what the child id used to be
    assert squat.status_code == 202, squat.text
    api.deliver_all()
    assert api.start("parent", eid).status_code == 202
    api.deliver_all()
    record = api.record(eid)
    assert record["status"] == "succeeded" and record["output"] == "honest", record
    child = api.record(f"{eid}~sub.1")  # the real child, in the reserved namespace
    assert child["workflow"] == "kid" and child["output"] == "honest", child


def test_the_reserved_child_form_is_refused_to_clients(api: Api) -> None:
    eid = "order-2"
    before = api.h.store.client.dbsize()
    for forged in (f"{eid}~sub.1", "x~y", f"{eid}~0123456789abcdef01234567"):
        r = api.start("evil", forged)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "reserved for child executions" in r.json()["detail"]
    assert api.h.store.client.dbsize() == before  # refused: nothing written
    with pytest.raises(InvalidExecutionId, match="reserved"):
        api.h.runtime.start("evil", {}, f"{eid}~sub.1")
    assert api.start("parent", eid).status_code == 202
    api.deliver_all()
    assert api.record(eid)["output"] == "honest"
    # children are still readable by their id
    assert api.record(f"{eid}~sub.1")["status"] == "succeeded"


def test_a_parent_never_adopts_an_execution_it_did_not_create(harness: Any) -> None:
    """Defence in depth: even an execution that got the child's very id some other way (written
    straight to the store, a bug elsewhere) is not adopted: its parent link does not name this parent."""
    h = harness(KID, EVIL, PARENT)
    eid = "order-3"
    graph = h.runtime.catalog.get("evil")
    h.runtime._create(graph, {}, f"{eid}~sub.1", None)  # no parent link at all
    h.drain()
    assert h.runtime.record(f"{eid}~sub.1")["output"] == "attacker-chosen"
    h.start("parent", {}, eid)
    h.drain()
    record = h.runtime.record(eid)
    assert record["status"] == "failed", record
    assert record["error"]["name"] == "workflow.conflict"
    assert record.get("output") != "attacker-chosen"


def test_a_parent_link_naming_another_parent_is_not_adopted(harness: Any) -> None:
    h = harness(KID, EVIL, PARENT)
    h.start("parent", {}, "someone-else")
    h.drain()
    graph = h.runtime.catalog.get("evil")
    other = {"eid": "someone-else", "branch": "", "node": "sub", "seq": 2}
    h.runtime._create(graph, {}, "order-4~sub.1", other)
    h.drain()
    h.start("parent", {}, "order-4")
    h.drain()
    record = h.runtime.record("order-4")
    assert record["status"] == "failed" and record["error"]["name"] == "workflow.conflict", record
