"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against the real app.

uvicorn serves the app on 127.0.0.1 in a thread, with a real Redis, the local dispatcher delivering
in-process and workflows from a temp folder. One browser for the module; each test opens its own
tab (sessionStorage is per tab, so each starts signed out). Nothing is installed here: without
``/usr/bin/chromium`` (``apt-get install chromium``; ``.ci/run`` does it) the module is skipped.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from helpers import serve_app

CHROMIUM = os.environ.get("HOPFLOW_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
API_KEY = "ui-test-key-0123456789abcdef0123456789"
READ_KEY = "ui-read-key-0123456789abcdef0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
WAIT_MS = 15_000  # a bound so a broken page fails instead of hanging; never a timing assertion

pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"Chromium is not installed at {CHROMIUM} (Debian: apt-get install chromium; .ci/run does it)",
)

HOLD = """
name: hold
description: prepares, waits for an event, finishes
input: {type: object, required: [k], properties: {k: {type: string}}}
steps:
  - id: prepare
    set: {who: "{{ input.k }}"}
  - id: wait_go
    wait: {event: go, key: "{{ input.k }}"}
  - id: finish
    succeed:
      output: {got: "{{ steps.wait_go.output }}"}
"""

SLOW = """
name: slow
description: one action that runs until the test lets it finish
input: {type: object}
steps:
  - id: work
    action: ui.block
    timeout: 7s
  - id: after
    succeed: {}
"""

TRIP = """
name: trip
description: a saga whose last step fails, so the earlier ones are undone newest first
input: {type: object}
steps:
  - id: book
    action: ui.ok
    compensate: {action: ui.undo}
  - id: pay
    action: ui.ok
    compensate: {action: ui.undo}
  - id: ship
    action: ui.boom
"""


@pytest.fixture(scope="module")
def server(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from engine.actions import ActionRegistry
    from engine.asgi import create_app
    from engine.catalog import Catalog
    from engine.dispatch.local import LocalDispatcher
    from engine.embedded import in_process_delivery
    from engine.runtime import Runtime
    from engine.state.store import Store

    folder = tmp_path_factory.mktemp("ui-workflows")
    (folder / "hold.yaml").write_text(HOLD.lstrip())
    (folder / "trip.yaml").write_text(TRIP.lstrip())
    (folder / "slow.yaml").write_text(SLOW.lstrip())
    release = threading.Event()
    undone: list[str] = []
    registry = ActionRegistry()
    registry.register("ui.ok", lambda ctx: {"ok": True})
    registry.register("ui.undo", lambda ctx: undone.append("undo"))

    def boom(ctx: Any) -> None:
        raise RuntimeError("the warehouse is on fire")

    registry.register("ui.boom", boom)
    # bounded below the step's timeout: a test that never releases it still ends
    registry.register("ui.block", lambda ctx: {"released": release.wait(6.5)})
    dispatcher = LocalDispatcher(redis_server, prefix="hf:{ui-tests}", poll_interval_s=0.2)
    runtime = Runtime(Store(redis_server), dispatcher, Catalog.from_directory(folder), actions=registry)
    dispatcher.deliver = in_process_delivery(runtime)
    dispatcher.on_dead = runtime.mark_dead

    def make(url: str) -> Any:
        return create_app(runtime, config=config(), run_local_dispatcher=True)

    with serve_app(make, start_timeout_s=20) as url, httpx.Client(base_url=url, headers=AUTH) as http:
        yield {"url": url, "http": http, "runtime": runtime, "release": release}
        release.set()


def config() -> Any:
    from engine.config import Config, parse_api_keys

    return Config(api_key=API_KEY, api_keys=parse_api_keys(f"read:{READ_KEY}"))


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        context.set_default_timeout(WAIT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser_context: Any) -> Iterator[Any]:
    tab = browser_context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield tab
    finally:
        tab.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def sign_in(page: Any, url: str, hash_: str = "", key: str = API_KEY) -> None:
    page.goto(f"{url}/ui/{hash_}")
    page.fill("#key", key)
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#nav:not([hidden])")


def start(server: dict[str, Any], workflow: str, input_: Any) -> str:
    eid = f"ui-{workflow}-{uuid.uuid4().hex[:10]}"
    r = server["http"].post("/v1/executions", json={"workflow": workflow, "input": input_, "id": eid})
    assert r.status_code == 202, r.text
    return eid


def wait_status(server: dict[str, Any], eid: str, statuses: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        record = server["http"].get(f"/v1/executions/{eid}").json()
        if record["status"] in statuses:
            return dict(record)
        assert time.monotonic() < deadline, f"{eid} stayed {record['status']}"
        time.sleep(0.05)


def node_state(page: Any, step: str) -> str | None:
    value = page.get_attribute(f'#graph g.node[data-step="{step}"]', "data-state")
    return value


# ------------------------------------------------------------------------------------------ tests


def test_sign_in_keeps_the_key_in_the_tab_and_refuses_a_wrong_one(server: dict[str, Any], page: Any) -> None:
    page.goto(server["url"] + "/ui")  # redirected to /ui/
    assert page.url.endswith("/ui/")
    assert page.is_visible("#signin-form")
    assert not page.is_visible("#page")
    page.fill("#key", "not-the-key")
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#signin-error:text('refused')")
    assert page.evaluate("sessionStorage.getItem('hopflow.apiKey')") is None

    page.fill("#key", API_KEY)
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#nav:not([hidden])")
    assert page.evaluate("sessionStorage.getItem('hopflow.apiKey')") == API_KEY
    page.reload()  # same tab: still signed in
    page.wait_for_selector("#nav:not([hidden])")
    page.click("#signout")
    page.wait_for_selector("#signin-form")
    assert page.evaluate("sessionStorage.getItem('hopflow.apiKey')") is None


def test_the_catalogue_lists_workflows_with_their_validation_state_and_graph(
    server: dict[str, Any], page: Any
) -> None:
    sign_in(page, server["url"], "#/workflows")
    page.wait_for_selector('#workflows tr[data-name="trip"]')
    assert "valid" in page.inner_text('#workflows tr[data-name="hold"]')
    page.click('#workflows tr[data-name="trip"] a')
    page.wait_for_selector("#graph svg g.node")
    assert page.locator("#graph g.node").count() >= 3


def test_an_execution_started_from_its_workflow_page_is_followed(server: dict[str, Any], page: Any) -> None:
    sign_in(page, server["url"], "#/workflows/hold")
    page.fill("#start-input", '{"k": "from-the-page"}')
    page.click("#start-form button[type=submit]")
    page.wait_for_selector('#graph g.node.current[data-step="wait_go"][data-state="waiting"]')
    eid = page.url.rsplit("/", 1)[-1]
    assert server["http"].get(f"/v1/executions/{eid}").json()["workflow"] == "hold"
    server["runtime"].notify("go", "from-the-page", None)
    page.wait_for_selector("#status [data-state=succeeded]")


def test_a_waiting_execution_is_highlighted_and_an_event_from_the_page_resumes_it(
    server: dict[str, Any], page: Any
) -> None:
    eid = start(server, "hold", {"k": "abc"})
    wait_status(server, eid, {"running"})
    sign_in(page, server["url"], f"#/executions/{eid}")
    # the current node: coloured by its state and marked current
    page.wait_for_selector('#graph g.node.current[data-step="wait_go"][data-state="waiting"]')
    assert node_state(page, "prepare") == "done"
    assert node_state(page, "finish") == "pending"
    assert "waiting for event go (key abc)" in page.inner_text("#where")
    # the form is prefilled from what the node waits for
    assert page.input_value("#event-name") == "go"
    assert page.input_value("#event-key") == "abc"
    page.fill("#event-data", '{"ok": 1}')
    page.click("#event-form button[type=submit]")
    # live updates: the page follows the execution to its end without a reload
    page.wait_for_selector("#status [data-state=succeeded]")
    assert node_state(page, "wait_go") == "done"
    assert node_state(page, "finish") == "done"
    assert '"ok": 1' in page.inner_text("#output")
    assert wait_status(server, eid, {"succeeded"})["output"] == {"got": {"ok": 1}}


def test_a_node_that_is_running_is_drawn_running_until_it_is_done(server: dict[str, Any], page: Any) -> None:
    server["release"].clear()
    sign_in(page, server["url"], "#/workflows/slow")  # the page and Mermaid loaded before it starts
    page.wait_for_selector("#graph svg g.node")
    eid = start(server, "slow", {})
    page.evaluate("id => { location.hash = '#/executions/' + id }", eid)
    page.wait_for_selector('#graph g.node.current[data-step="work"][data-state="running"]')
    assert node_state(page, "after") == "pending"
    server["release"].set()
    page.wait_for_selector("#status [data-state=succeeded]")
    assert node_state(page, "work") == "done" and node_state(page, "after") == "done"


def test_a_failed_saga_shows_its_error_and_its_compensations_newest_first(
    server: dict[str, Any], page: Any
) -> None:
    eid = start(server, "trip", {})
    wait_status(server, eid, {"compensated"})
    sign_in(page, server["url"], f"#/executions/{eid}")
    page.wait_for_selector("#error")
    error = page.inner_text("#error")
    assert "action.RuntimeError" in error and "the warehouse is on fire" in error and "ship" in error
    steps = page.eval_on_selector_all("#compensations li", "els => els.map(e => e.dataset.step)")
    assert steps == ["pay", "book"]
    page.wait_for_selector('#graph g.node[data-step="ship"][data-state="failed"]')
    assert node_state(page, "book") == "compensated"
    assert node_state(page, "pay") == "compensated"
    timeline = page.inner_text("#timeline")
    assert timeline.index("pay compensated") < timeline.index("book compensated")
    # the steps table says the same, and selects a step like a click on the graph
    states = page.eval_on_selector_all(
        "#steps tr", "rows => rows.map(r => [r.dataset.step, r.dataset.state])"
    )
    assert states == [["book", "compensated"], ["pay", "compensated"], ["ship", "failed"]]
    page.click('#steps tr[data-step="book"] button')
    page.wait_for_selector('#graph g.node.selected[data-step="book"]')
    step = page.inner_text("#step")
    assert "Step book" in step and '"ok": true' in step and "ui.ok" in step
    assert not page.is_visible("#actions")  # nothing to operate on a finished execution


def test_cancel_from_the_page_stops_a_waiting_execution(server: dict[str, Any], page: Any) -> None:
    eid = start(server, "hold", {"k": "to-cancel"})
    wait_status(server, eid, {"running"})
    sign_in(page, server["url"], f"#/executions/{eid}")
    page.wait_for_selector('#graph g.node[data-step="wait_go"][data-state="waiting"]')
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel")
    page.wait_for_selector("#status [data-state=cancelled]")
    assert wait_status(server, eid, {"cancelled"})["status"] == "cancelled"
    page.wait_for_selector('#graph g.node[data-step="wait_go"][data-state="cancelled"]')
    assert not page.is_visible("#actions")


def test_a_read_only_key_sees_everything_and_operates_nothing(server: dict[str, Any], page: Any) -> None:
    eid = start(server, "hold", {"k": "read-only"})
    wait_status(server, eid, {"running"})
    sign_in(page, server["url"], f"#/executions/{eid}", key=READ_KEY)
    page.wait_for_selector('#graph g.node.current[data-step="wait_go"][data-state="waiting"]')
    assert page.inner_text("#who") == "read only"
    assert not page.is_visible("#actions") and not page.is_visible("#cancel")
    page.goto(f"{server['url']}/ui/#/workflows/hold")
    page.wait_for_selector("#graph svg g.node")
    assert not page.is_visible("#start-form")
    server["runtime"].notify("go", "read-only", None)


def test_a_403_from_a_button_disables_the_buttons_in_place(server: dict[str, Any], page: Any) -> None:
    """A key whose scope shrank after sign-in: the server's 403 (faked here at the browser's network
    layer; the server's own 403 is tests/test_ui_api.py's) leaves the page readable, buttons off."""
    eid = start(server, "hold", {"k": "forbidden"})
    wait_status(server, eid, {"running"})
    sign_in(page, server["url"], f"#/executions/{eid}")
    page.wait_for_selector('#graph g.node[data-step="wait_go"][data-state="waiting"]')
    forbidden = {
        "type": "https://hopflow.dev/problems/forbidden",
        "title": "Forbidden",
        "status": 403,
        "detail": "this API key has scope read; this request needs scope operate",
    }
    page.route(
        "**/v1/executions/*/cancel",
        lambda route: route.fulfill(
            status=403, content_type="application/problem+json", body=json.dumps(forbidden)
        ),
    )
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel")
    page.wait_for_selector("#actions .note.error")
    assert "may only read" in page.inner_text("#actions .note.error")
    assert page.is_disabled("#cancel") and page.is_disabled("#event-form button[type=submit]")
    assert server["http"].get(f"/v1/executions/{eid}").json()["status"] == "running"
    server["runtime"].notify("go", "forbidden", None)


def test_an_unknown_execution_says_so(server: dict[str, Any], page: Any) -> None:
    sign_in(page, server["url"], "#/executions/no-such-execution")
    page.wait_for_selector("#load-error")
    assert "unknown execution" in page.inner_text("#load-error")


def test_the_list_shows_a_running_execution_and_filters_by_status(server: dict[str, Any], page: Any) -> None:
    eid = start(server, "hold", {"k": "listed"})
    wait_status(server, eid, {"running"})
    sign_in(page, server["url"], "#/?status=running")
    page.wait_for_selector(f'#executions tr[data-id="{eid}"]')
    assert "running" in page.inner_text(f'#executions tr[data-id="{eid}"]')
    page.wait_for_selector('#counts [data-status="running"]')
    page.click(f'#executions tr[data-id="{eid}"] a')
    page.wait_for_selector('#graph g.node.current[data-step="wait_go"]')
    server["runtime"].notify("go", "listed", None)


def test_no_execution_data_without_a_key(server: dict[str, Any]) -> None:
    """The page is a static shell; every datum needs the key."""
    http = httpx.Client(base_url=server["url"])
    html = http.get("/ui/").text
    assert "hopflow" in html and "ui-" not in html
    for path in ("/v1/workflows", "/v1/workflows/hold", "/v1/executions/x/view", "/v1/whoami"):
        assert http.get(path).status_code == 401, path
    http.close()
