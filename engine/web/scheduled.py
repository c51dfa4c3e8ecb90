"""A QStash schedule's fire reaching the webhook (``POST /v1/step`` with a ``{"schedule": …}`` body).

The signature was checked by the caller (:func:`engine.web.webhook.step`) over the exact body, so
the names in it come from a schedule ``hopflow schedules sync`` made. The answers: 200 with
``started`` (the execution for the fire time, new or already there) or ``skipped`` (the overlap
policy); 489 (QStash dead-letters it at once) for a fire this deployment cannot run: a schedule it
no longer declares, or an input the workflow's schema rejects; 5xx when Redis or QStash is away.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from engine.web.bodies import json_response
from engine.web.problems import non_retryable

if TYPE_CHECKING:  # pragma: no cover - typing only
    from starlette.responses import Response

    from engine.web.core import HopflowApp

log = logging.getLogger("hopflow.schedules")


async def fire(hop: HopflowApp, data: Any) -> Response:
    from engine.model import MessageError
    from engine.schedule_sync import parse_fire_body
    from engine.schedules import ScheduleUnknown, fire_delivered

    names = parse_fire_body(data)
    if names is None:
        raise MessageError("a schedule fire names {namespace, workflow, index}")
    namespace, workflow, index = names
    runtime = await hop.runtime_async()
    try:
        fired = await hop.call(fire_delivered, runtime, workflow, index, namespace)
    except ScheduleUnknown as exc:
        log.warning("schedule fire for %s#%d refused: %s", workflow, index, exc.message)
        raise non_retryable(exc.message, title="Unknown schedule") from None
    at = dt.datetime.fromtimestamp(fired.at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    payload: dict[str, Any] = {"workflow": workflow, "schedule": index, "fire_time": at}
    if fired.execution_id is not None:
        return json_response({"result": "started", "execution_id": fired.execution_id, **payload})
    if fired.note.startswith("skipped"):
        return json_response({"result": "skipped", "detail": fired.note, **payload})
    raise non_retryable(f"schedule {workflow}#{index} did not start: {fired.note}", title="Input invalid")
