"""qstash-dev plus the "workflow mode" of QStash that the ``upstash-workflow`` SDK needs (bench only).

``engine/devtools/qstash_dev/server.py`` implements QStash's messaging API; the Upstash Workflow SDK
also relies on a part of QStash that keeps each workflow run's step history *on the QStash side*.
What the SDK (upstash-workflow 2.0.0, async and sync alike) needs and plain qstash-dev lacks — found
by running the peer against it (first failure: "Couldn't get workflow id from header", 500 on every retry):

1. Publishes (``/v2/publish`` and ``/v2/batch`` entries) carrying ``Upstash-Workflow-RunId`` and
   ``Upstash-Workflow-Init`` are workflow messages. ``Init: true`` starts a run whose initial body is
   the message body; ``Init: false`` appends the body (one step result, JSON) to the run's history.
2. A workflow message is delivered with the body QStash builds from the run, not the published one:
   a JSON array ``[{"messageId", "body": base64(initial body), "callType": "step"},
   {"messageId", "body": base64(step JSON), "callType": "step"}, ...]`` — and the JWT's ``body``
   claim is the hash of *that* array.
3. Deliveries of workflow messages carry the header ``Upstash-Workflow-RunId: <run id>`` (the SDK
   rejects calls without it; it does not forward it itself).
4. ``DELETE /v2/workflows/runs/{id}?cancel=false`` (the SDK's cleanup after the last step) answers
   2xx; otherwise the final call fails with 500 and is retried until the DLQ.

This module adds exactly that (plus ``GET /bench/stats``: messages and body bytes accepted, for the
bench's table), as a subclass that changes nothing for messages without workflow
headers (hopflow's messages go through the unchanged code paths). The delivered array is built when
the message is accepted rather than when it is delivered; for the linear workflows the bench runs
(one step in flight per run) the two are the same. Not implemented: ``Upstash-Workflow-CallType``
(context.call), parallel steps, wait-for-event, failure callbacks of runs, lazy fetch.

    python bench/peers/qstash_workflow.py --port 8080 [--backoff-scale 0.01] [--log-level info] [--quiet]
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

from engine.devtools.qstash_dev import server as qstash_dev  # noqa: E402

RUN_HEADER = "upstash-workflow-runid"
INIT_HEADER = "upstash-workflow-init"


class WorkflowDevServer(qstash_dev.QStashDevServer):
    """A :class:`~engine.devtools.qstash_dev.server.QStashDevServer` that also keeps workflow runs
    (see module doc)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.runs: dict[str, list[dict[str, str]]] = {}  # run id → [initial, step, step, ...]
        self.stats = {"workflow_messages": 0, "workflow_bytes": 0, "other_messages": 0, "other_bytes": 0}
        self.app.router.routes.insert(
            0, Route("/v2/workflows/runs/{run_id}", self._delete_run, methods=["DELETE"])
        )
        self.app.router.routes.insert(0, Route("/bench/stats", self._stats, methods=["GET"]))

    def _parse(self, destination: str, headers: Mapping[str, str], body: bytes, caller_ip: str) -> Any:
        msg = super()._parse(destination, headers, body, caller_ip)
        run_id = headers.get(RUN_HEADER)
        if run_id:
            msg.workflow = (run_id, (headers.get(INIT_HEADER) or "").lower() == "true")
        return msg

    def _accept(self, msg: Any) -> dict[str, Any]:
        workflow = getattr(msg, "workflow", None)
        if workflow is not None:
            run_id, init = workflow
            entry = {
                "messageId": msg.id,
                "body": base64.b64encode(msg.body).decode("ascii"),
                "callType": "step",
            }
            if init or run_id not in self.runs:
                self.runs[run_id] = [entry]
            else:
                self.runs[run_id].append(entry)
            msg.body = json.dumps(self.runs[run_id], separators=(",", ":")).encode()
            msg.forward["Upstash-Workflow-RunId"] = run_id
            self.stats["workflow_messages"] += 1
            self.stats["workflow_bytes"] += len(msg.body)
        else:
            self.stats["other_messages"] += 1
            self.stats["other_bytes"] += len(msg.body)
        result: dict[str, Any] = super()._accept(msg)
        return result

    async def _stats(self, request: Request) -> Response:
        """Messages accepted and the bytes of their (delivered) bodies, workflow runs vs the rest."""
        return JSONResponse(self.stats)

    async def _delete_run(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        run_id = request.path_params["run_id"]
        if self.runs.pop(run_id, None) is None:
            return JSONResponse({"error": f"workflow run {run_id} not found"}, status_code=404)
        return Response(status_code=200)


def main(argv: list[str] | None = None) -> int:
    """A few of ``python -m engine.devtools.qstash_dev``'s options, serving :class:`WorkflowDevServer`."""
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(prog="qstash_workflow", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=qstash_dev.DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=qstash_dev.DEFAULT_PORT)
    parser.add_argument("--backoff-scale", type=float, default=1.0)
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    server = WorkflowDevServer(backoff_scale=args.backoff_scale)
    if not args.quiet:
        print(qstash_dev.banner(server, f"http://{args.host}:{args.port}"), flush=True)
    uvicorn.run(
        server.app, host=args.host, port=args.port, log_level=args.log_level, access_log=False, lifespan="on"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
