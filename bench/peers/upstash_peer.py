"""The peer for ``bench/webhook.py``: the official ``upstash-workflow`` SDK serving an N-step workflow.

Served with plain Starlette (the SDK's ``async_serve`` handler only needs ``.headers``, ``.url`` and
``await .body()``, which a Starlette ``Request`` has), so FastAPI is not needed:

    QSTASH_URL=... QSTASH_TOKEN=... QSTASH_CURRENT_SIGNING_KEY=... QSTASH_NEXT_SIGNING_KEY=... \\
        python -m uvicorn --app-dir bench/peers upstash_peer:app --port 8001

``POST /workflow`` is the workflow endpoint (trigger it by publishing ``{"token": T, "steps": N}`` to
it through QStash). Each of the N steps is ``context.run("step-i", noop)``; the noop records when it
ran, so ``GET /timings/T`` gives the bench the step times and when the run finished. With both
signing keys in the environment the SDK verifies the ``Upstash-Signature`` JWT of every call.

``PEER_REUSE_SSL=1`` patches one inefficiency out of the SDK, for a second, clearly labelled row:
every call builds a throw-away ``AsyncQStash`` client (``_DisabledWorkflowContext.try_authentication``),
and each builds a new TLS context (~25 ms of CPU on this machine) although it never connects. With
the variable set, ``ssl.create_default_context`` returns one cached context per set of arguments.
"""

from __future__ import annotations

import functools
import os
import ssl
import time
from typing import Any

if os.environ.get("PEER_REUSE_SSL") == "1":
    ssl.create_default_context = functools.lru_cache(maxsize=8)(ssl.create_default_context)

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from upstash_workflow import AsyncWorkflowContext, async_serve

STEPS: dict[str, list[float]] = {}  # token → when each step's function ran
DONE: dict[str, float] = {}  # token → when the route function ran to its end (all steps replayed)


async def workflow(context: AsyncWorkflowContext[dict[str, Any]]) -> None:
    payload = context.request_payload or {}
    token = str(payload.get("token", ""))
    steps = int(payload.get("steps", 1))
    for i in range(steps):

        async def noop(i: int = i) -> int:
            STEPS.setdefault(token, []).append(time.time())
            return i

        await context.run(f"step-{i}", noop)
    DONE.setdefault(token, time.time())


_handler = async_serve(workflow)["handler"]


async def endpoint(request: Request) -> Response:
    result = await _handler(request)
    return Response(result.body, status_code=result.status, headers=result.headers)


async def cpu(request: Request) -> Response:
    """CPU seconds this process has used so far (the bench's "app server CPU per step" rows)."""
    return JSONResponse({"process_cpu_s": time.process_time()})


async def timings(request: Request) -> Response:
    token = request.path_params["token"]
    return JSONResponse({"steps": STEPS.get(token, []), "done": DONE.get(token)})


app = Starlette(
    routes=[
        Route("/workflow", endpoint, methods=["POST"]),
        Route("/timings/cpu", cpu, methods=["GET"]),
        Route("/timings/{token}", timings, methods=["GET"]),
    ]
)
