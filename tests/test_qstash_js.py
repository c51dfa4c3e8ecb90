"""The official QStash JS client (``@upstash/qstash``, from npm) against ``hopflow qstash-dev``.

Beside the Python SDK (tests/test_qstash_dev.py), a second official client proves the dev server
speaks QStash's wire format: publish (200, 202 for a duplicate), batch, get/cancel messages, bulk
cancel, the DLQ (list, bulk delete by ``dlqIds``), schedules (create, update in place, get, list,
pause/resume, delete) and the ``Receiver`` verifying a signed delivery.
The client is installed from the committed lockfile (tests/js/package-lock.json) by ``.ci/run`` or,
when missing, by this test (``npm ci``); it is skipped only where node or npm is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest_qstash import Recorded, endpoint

from engine.devtools.qstash_dev.server import start_dev_server

JS = Path(__file__).resolve().parent / "js"
NODE = shutil.which("node")
NPM = shutil.which("npm")

pytestmark = pytest.mark.skipif(
    NODE is None or NPM is None, reason="node and npm are needed to run the official QStash JS client"
)


def installed() -> Path:
    module = JS / "node_modules" / "@upstash" / "qstash"
    if not (module / "package.json").exists():
        assert NPM is not None
        done = subprocess.run(
            [NPM, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=JS,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"npm ci in tests/js failed:\n{done.stdout}\n{done.stderr}"
    return module


def test_the_official_js_client_works_against_the_dev_server() -> None:
    installed()

    def answer(rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        return (500, {}, b"no") if rec.path == "/js/fail" else (200, {}, b"ok")

    with start_dev_server(backoff=lambda n: 0.05) as dev, endpoint(answer) as ep:
        # one signed delivery for the Receiver to verify
        from engine.signing import sign_qstash

        body = '{"signed":true}'
        url = f"{ep.url}/js/signed"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("QSTASH_", "UPSTASH_"))},
            **dev.env(),
            "TARGET": ep.url,
            "SIGNED_BODY": body,
            "SIGNED_URL": url,
            "SIGNED_SIGNATURE": sign_qstash(body.encode(), url, dev.current_signing_key),
        }
        assert NODE is not None
        run = subprocess.run(
            [NODE, str(JS / "compat.mjs")], cwd=JS, env=env, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, f"the JS client failed:\n{run.stdout}\n{run.stderr}"
        out = json.loads(run.stdout.strip().splitlines()[-1])
        assert dev.server.wait_idle(10)

        assert out["first"]["messageId"]
        assert out["duplicate"] == {"messageId": out["first"]["messageId"], "deduplicated": True}
        assert [bool(b.get("messageId")) for b in out["batch"]] == [True, True]
        assert out["later"]["messageId"] and out["later"]["url"] == f"{ep.url}/js/later"
        assert out["laterGone"] is True
        assert out["cancelled"] == {"cancelled": 2}
        [dead] = out["dlq"]
        assert dead["responseStatus"] == 500
        assert out["dlqDeleted"]["deleted"] == 1
        assert out["verified"] is True
        assert out["schedule"] == {"cron": "*/5 * * * *", "destination": f"{ep.url}/js/moved", "body": None}
        assert out["schedulePaused"] is True and out["scheduleResumed"] is True
        assert out["scheduleIds"] == ["js-schedule.1"] and out["schedulesLeft"] == 0
        # what the JS client published was delivered, signed, with its forwarded header
        [one] = ep.on("/js/one")
        assert json.loads(one.body) == {"hello": "js"} and one.headers["x-from"] == "js"
        assert sorted(r.method for r in ep.on("/js/b0") + ep.on("/js/b1")) == ["POST", "PUT"]
        assert ep.on("/js/later") == [] and ep.on("/js/many0") == []
