"""``POST /v1/executions/{id}/resume`` (scope ``operate``): continue a saga whose compensation gave up.

An execution in ``compensation_failed`` waits for an operator (the service behind a compensation was
down longer than its retries); this is the HTTP twin of ``hopflow resume`` for that case. It retries
the compensation that failed and the execution goes on compensating. Any other status is a 409.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.web.auth import authorize
from engine.web.bodies import json_response
from engine.web.problems import Problem

if TYPE_CHECKING:  # pragma: no cover - typing only
    from starlette.requests import Request
    from starlette.responses import Response

    from engine.web.core import HopflowApp


async def resume(hop: HopflowApp, request: Request) -> Response:
    """→ 202 ``{execution_id, status}``; 404 unknown, 409 not ``compensation_failed``."""
    from engine.errors import InvalidExecutionId, NotResumable, UnknownExecution
    from engine.state.store import check_execution_id

    authorize(hop.config, request, scope="operate")
    eid: str = request.path_params["execution_id"]
    shown = eid if len(eid) <= 100 else eid[:100] + "…"
    runtime = await hop.runtime_async()
    try:
        check_execution_id(eid)
        await hop.call(runtime.resume, eid)
        status = await hop.call(runtime.store.status, eid)
    except (UnknownExecution, InvalidExecutionId):
        raise Problem("unknown-execution", f"unknown execution {shown!r}") from None
    except NotResumable as exc:
        raise Problem("conflict", exc.message) from None
    return json_response({"execution_id": eid, "status": status}, 202)
