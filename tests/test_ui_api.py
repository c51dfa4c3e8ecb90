"""The dashboard's server side in-process: its JSON routes and its static files, on a real Redis.

Routes: GET /v1/workflows, /v1/workflows/{name}, /v1/executions/{id}/view, /v1/whoami,
POST /v1/executions/{id}/resume; GET /ui and /ui/<file>. The browser side is tests/test_ui_browser.py.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from engine.asgi import create_app
from engine.config import Config

API_KEY = "u" * 40
PUBLIC = "https://hopflow.test"  # the name the app answers for (requests to another Host are refused)
AUTH = {"Authorization": f"Bearer {API_KEY}"}

SAGA = """
name: trip
input: {type: object}
steps:
  - id: book
    action: t.ok
    with: {who: "{{ input.k }}"}
    compensate: {action: t.undo}
  - id: wait_go
    wait: {event: go, key: "{{ input.k }}"}
  - id: ship
    action: t.ship
"""


class Flags:
    def __init__(self) -> None:
        self.fail_ship = False
        self.fail_undo = False
        self.big = False


@pytest.fixture
def flags() -> Flags:
    return Flags()


@pytest.fixture
def app(harness: Any, flags: Flags) -> Iterator[tuple[Any, TestClient]]:
    def ship(ctx: Any) -> Any:
        if flags.fail_ship:
            raise RuntimeError("no truck")
        return {"blob": "x" * 10_000} if flags.big else {"shipped": True}

    def undo(ctx: Any) -> None:
        if flags.fail_undo:
            raise RuntimeError("undo service down")

    h = harness(SAGA, actions={"t.ok": lambda ctx, who: {"id": "b1"}, "t.undo": undo, "t.ship": ship})
    with TestClient(
        create_app(h.runtime, config=Config(api_key=API_KEY, public_url=PUBLIC)), base_url=PUBLIC
    ) as client:
        yield h, client


def problem(r: Any, status: int, kind: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    doc = dict(r.json())
    assert doc["type"].endswith("/" + kind), doc
    return doc


# ------------------------------------------------------------------------------------ catalogue


def test_the_catalogue_lists_compiled_workflows(app: Any) -> None:
    _, client = app
    r = client.get("/v1/workflows", headers=AUTH)
    assert r.status_code == 200
    (trip,) = r.json()["workflows"]
    assert trip["name"] == "trip" and trip["valid"] is True and trip["diagnostics"] == []
    assert trip["steps"] == 3 and len(trip["graph"]) == 64
    one = client.get("/v1/workflows/trip", headers=AUTH).json()
    assert one["graph"] == trip["graph"]
    assert "n_book" in one["mermaid"] and "c_book" in one["mermaid"]
    assert [(n["id"], n["kind"], n["drawn"], n["undo"]) for n in one["nodes"]] == [
        ("book", "action", "n_book", "c_book"),
        ("wait_go", "wait", "n_wait_go", None),
        ("ship", "action", "n_ship", None),
    ]
    problem(client.get("/v1/workflows/nope", headers=AUTH), 404, "unknown-workflow")


def test_the_catalogue_of_a_folder_shows_each_files_validation_state(app: Any, tmp_path: Path) -> None:
    from engine.web.wiring import LazyCatalog

    h, client = app
    (tmp_path / "good.yaml").write_text(SAGA.lstrip())
    (tmp_path / "good.input.json").write_text('{"k": "sample"}')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "nap.yaml").write_text(
        "name: nap\nsteps:\n  - id: rest\n    wait: {for: 0s}\n  - id: up\n    succeed: {}\n"
    )
    (tmp_path / "broken.yaml").write_text("name: broken\nsteps:\n  - id: a\n    actoin: x.y\n")
    h.runtime.catalog = LazyCatalog(str(tmp_path))
    found = {w["name"]: w for w in client.get("/v1/workflows", headers=AUTH).json()["workflows"]}
    assert set(found) == {"trip", "nap", "broken"}
    assert found["trip"]["valid"] is True and found["trip"]["file"] == "good.yaml"
    nap = found["nap"]
    assert nap["valid"] is True and nap["file"] == "sub/nap.yaml"
    assert [(d["severity"], d["line"]) for d in nap["diagnostics"]] == [("warning", 4)]
    broken = found["broken"]
    assert broken["valid"] is False and broken["graph"] is None and broken["steps"] is None
    assert broken["diagnostics"][0]["severity"] == "error"
    assert broken["diagnostics"][0]["line"] == 4 and "actoin" in broken["diagnostics"][0]["message"]
    assert all(str(tmp_path) not in d["message"] for d in broken["diagnostics"])  # no server paths
    one = client.get("/v1/workflows/broken", headers=AUTH).json()
    assert one["mermaid"] is None and one["nodes"] == []
    assert client.get("/v1/workflows/trip", headers=AUTH).json()["example_input"] == {"k": "sample"}
    nap_detail = client.get("/v1/workflows/nap", headers=AUTH).json()
    assert nap_detail["example_input"] is None
    assert [(n["id"], n["line"]) for n in nap_detail["nodes"]] == [("rest", 3), ("up", 5)]


def test_the_catalogue_runs_the_folder_wide_checks(app: Any, tmp_path: Path) -> None:
    """Like `hopflow validate DIR`: names unique in the folder, child workflows that exist."""
    from engine.web.wiring import LazyCatalog

    h, client = app
    (tmp_path / "a.yaml").write_text("name: same\nsteps:\n  - id: x\n    succeed: {}\n")
    (tmp_path / "b.yaml").write_text("name: same\nsteps:\n  - id: y\n    succeed: {}\n")
    (tmp_path / "parent.yaml").write_text(
        "name: parent\nsteps:\n  - id: call\n    workflow: {name: nobody}\n"
    )
    h.runtime.catalog = LazyCatalog(str(tmp_path))
    found = [
        (w["name"], w["file"], w["valid"], [d["rule"] for d in w["diagnostics"]])
        for w in client.get("/v1/workflows", headers=AUTH).json()["workflows"]
    ]
    assert found == [
        ("parent", "parent.yaml", False, ["unknown-workflow"]),
        ("same", "a.yaml", True, []),
        ("same", "b.yaml", False, ["duplicate-workflow-name"]),
    ]
    text = client.get("/v1/workflows", headers=AUTH).text
    assert str(tmp_path) not in text  # the server's folder stays private


# ----------------------------------------------------------------------------------------- view


def test_the_view_of_a_waiting_execution(app: Any) -> None:
    h, client = app
    eid = h.start("trip", {"k": "v1"})
    h.drain()
    view = client.get(f"/v1/executions/{eid}/view", headers=AUTH).json()
    assert view["status"] == "running" and view["workflow"] == "trip"
    assert view["input"] == {"k": "v1"}
    assert view["nodes"]["book"]["state"] == "done"
    assert view["nodes"]["book"]["drawn"] == "n_book" and view["nodes"]["book"]["undo"] == "c_book"
    assert view["nodes"]["wait_go"]["state"] == "waiting"
    assert view["nodes"]["wait_go"]["branches"] == [""]
    assert view["nodes"]["ship"]["state"] == "pending"
    assert view["steps"]["book"]["outputs"] == [{"item": "", "value": {"id": "b1"}}]
    assert view["steps"]["book"]["config"] == {"name": "t.ok", "with": {"who": "{{ input.k }}"}}
    assert view["steps"]["book"]["inputs"] == [{"item": "", "value": {"who": "v1"}}]  # rendered
    assert view["steps"]["ship"]["inputs"] == []  # recorded for steps with a compensation only
    assert "n_wait_go" in view["mermaid"]
    texts = [e["text"] for e in view["timeline"]["entries"]]
    assert texts[0] == "started (trip)" and texts[-1] == "wait_go waiting for event go (key v1)"
    assert view["compensations"] == [] and view["error"] is None


def test_the_view_of_a_compensated_execution_and_a_clipped_output(app: Any, flags: Flags) -> None:
    h, client = app
    flags.big = True
    big = h.start("trip", {"k": "big"})
    h.drain()
    h.runtime.notify("go", "big", None)
    h.drain()
    view = client.get(f"/v1/executions/{big}/view", headers=AUTH).json()
    (shipped,) = view["steps"]["ship"]["outputs"]
    assert shipped["value"]["truncated"] is True and len(shipped["value"]["preview"]) <= 4001

    flags.fail_ship = True
    eid = h.start("trip", {"k": "v2"})
    h.drain()
    h.runtime.notify("go", "v2", None)
    h.drain()
    view = client.get(f"/v1/executions/{eid}/view", headers=AUTH).json()
    assert view["status"] == "compensated"
    assert view["error"] == {"name": "action.RuntimeError", "message": "no truck", "step": "ship"}
    assert view["nodes"]["ship"]["state"] == "failed"
    assert view["nodes"]["book"]["state"] == "compensated"
    assert [c["step"] for c in view["compensations"]] == ["book"]


def test_the_view_refuses_unknown_executions_and_missing_keys(app: Any) -> None:
    _, client = app
    problem(client.get("/v1/executions/nope/view", headers=AUTH), 404, "unknown-execution")
    problem(client.get("/v1/executions/bad%20id/view", headers=AUTH), 404, "unknown-execution")
    for path in ("/v1/executions/nope/view", "/v1/workflows", "/v1/workflows/trip", "/v1/whoami"):
        problem(client.get(path), 401, "unauthorized")
        problem(client.get(path, headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")
    problem(client.post("/v1/executions/x/resume"), 401, "unauthorized")


def test_whoami_names_the_scopes_of_the_key(app: Any) -> None:
    _, client = app
    assert client.get("/v1/whoami", headers=AUTH).json() == {"scopes": ["read", "operate"]}


# --------------------------------------------------------------------------------------- resume


def test_resume_continues_a_compensation_that_gave_up(app: Any, flags: Flags) -> None:
    h, client = app
    flags.fail_ship = True
    flags.fail_undo = True
    eid = h.start("trip", {"k": "r"})
    h.drain()
    problem(client.post(f"/v1/executions/{eid}/resume", headers=AUTH), 409, "conflict")
    h.runtime.notify("go", "r", None)
    h.drain()
    assert h.runtime.record(eid)["status"] == "compensation_failed"
    view = client.get(f"/v1/executions/{eid}/view", headers=AUTH).json()
    assert view["nodes"]["book"]["state"] == "failed"
    assert view["nodes"]["book"]["compensation"] == "failed"
    flags.fail_undo = False
    r = client.post(f"/v1/executions/{eid}/resume", headers=AUTH)
    assert r.status_code == 202, r.text
    assert r.json() == {"execution_id": eid, "status": "compensating"}
    h.drain()
    assert h.runtime.record(eid)["status"] == "compensated"
    problem(client.post("/v1/executions/nope/resume", headers=AUTH), 404, "unknown-execution")
    problem(client.post("/v1/executions/bad%20id/resume", headers=AUTH), 404, "unknown-execution")


# ---------------------------------------------------------------------------------- static files


def test_ui_redirects_to_the_folder_and_serves_a_static_shell(app: Any) -> None:
    _, client = app
    r = client.get("/ui", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "ui/"
    r = client.get("/ui/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert '<script src="app.js"' in r.text and "API key" in r.text
    assert client.get("/ui/index.html").text == r.text
    for name, media in (
        ("app.js", "text/javascript"),
        ("style.css", "text/css"),
        ("mermaid.min.js", "text/javascript"),
    ):
        asset = client.get(f"/ui/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(media), name
    assert len(client.get("/ui/mermaid.min.js").content) > 1_000_000


def test_ui_files_carry_an_etag_and_gzip(app: Any) -> None:
    _, client = app
    raw = client.get("/ui/app.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in raw.headers
    etag = raw.headers["etag"]
    r = client.get("/ui/app.js", headers={"If-None-Match": etag})
    assert r.status_code == 304 and not r.content
    zipped = client.get("/ui/app.js", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.content == raw.content  # httpx decoded it
    head = client.head("/ui/app.js", headers={"Accept-Encoding": "identity"})
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(raw.content)
    assert gzip.decompress(gzip.compress(raw.content)) == raw.content


@pytest.mark.parametrize(
    "path",
    [
        "/ui/nope.js",
        "/ui/../pyproject.toml",
        "/ui/%2e%2e/pyproject.toml",
        "/ui/vendor/README.md",
        "/ui/static/app.js",
    ],
)
def test_only_the_dashboards_own_files_are_served(app: Any, path: str) -> None:
    _, client = app
    problem(client.get(path), 404, "not-found")


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/ui", {"GET", "HEAD"}),
        ("/ui/", {"GET", "HEAD"}),
        ("/ui/app.js", {"GET", "HEAD"}),
        ("/v1/workflows", {"GET", "HEAD"}),
        ("/v1/workflows/trip", {"GET", "HEAD"}),
        ("/v1/executions/x/view", {"GET", "HEAD"}),
        ("/v1/whoami", {"GET", "HEAD"}),
        ("/v1/executions/x/resume", {"POST"}),
    ],
)
def test_the_dashboards_routes_refuse_other_methods(app: Any, path: str, allowed: set[str]) -> None:
    _, client = app
    for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
        if method in allowed:
            continue
        r = client.request(method, path, headers=AUTH, json={})
        assert r.status_code == 405, (method, path, r.text)
        assert set(r.headers["allow"].split(", ")) == allowed


def test_a_read_key_reads_the_dashboards_routes_and_may_not_resume(harness: Any) -> None:
    from engine.config import parse_api_keys

    read = {"Authorization": "Bearer " + "r" * 40}
    h = harness(
        SAGA, actions={"t.ok": lambda ctx, who: 1, "t.undo": lambda ctx: None, "t.ship": lambda ctx: 1}
    )
    config = Config(api_key=API_KEY, public_url=PUBLIC, api_keys=parse_api_keys("read:" + "r" * 40))
    with TestClient(create_app(h.runtime, config=config), base_url=PUBLIC) as client:
        eid = h.start("trip", {"k": "r"})
        h.drain()
        assert client.get("/v1/whoami", headers=read).json() == {"scopes": ["read"]}
        assert client.get("/v1/workflows", headers=read).status_code == 200
        assert client.get(f"/v1/executions/{eid}/view", headers=read).status_code == 200
        assert client.post(f"/v1/executions/{eid}/resume", headers=read).status_code == 403


SECRET = """
name: sec
input: {type: object}
steps:
  - id: token
    secret: true
    action: t.token
    with: {note: "{{ input.note }}"}
    compensate: {action: t.undo}
  - id: use
    action: t.echo
    with: {t: "{{ steps.token.output.access_token }}"}
"""


def test_the_view_never_shows_a_secret_steps_values(harness: Any) -> None:
    from engine.redact import REDACTED

    token = "tok-very-secret-0123456789"
    h = harness(
        SECRET,
        actions={
            "t.token": lambda ctx, note: {"access_token": token},
            "t.echo": lambda ctx, t: {"got": t},
            "t.undo": lambda ctx: None,
        },
    )
    with TestClient(
        create_app(h.runtime, config=Config(api_key=API_KEY, public_url=PUBLIC)), base_url=PUBLIC
    ) as client:
        eid = h.start("sec", {"note": token})
        h.drain()
        r = client.get(f"/v1/executions/{eid}/view", headers=AUTH)
        assert r.status_code == 200
        assert token not in r.text
        view = r.json()
        assert view["steps"]["token"]["outputs"] == [{"item": "", "value": REDACTED}]
        assert view["steps"]["token"]["inputs"] == [{"item": "", "value": REDACTED}]
        assert view["steps"]["use"]["outputs"] == [{"item": "", "value": {"got": REDACTED}}]
        assert view["input"] == {"note": REDACTED}
