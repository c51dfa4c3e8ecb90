"""QStash's schedules API for the dev server (``hopflow qstash-dev``): create/update, list, get,
delete, pause and resume, and a clock that fires each schedule as a signed, retried delivery.

``POST /v2/schedules/<destination>`` with ``Upstash-Cron`` (optionally ``CRON_TZ=<zone> …``) creates
a schedule; with ``Upstash-Schedule-Id`` naming an existing one it replaces that schedule's settings
(upstash/docs ``qstash/openapi.yaml``). Every other publish header (``Upstash-Retries``,
``Upstash-Forward-*``, callbacks, ``Upstash-Timeout``…) is kept and applies to each fire, which
becomes an ordinary dev-server message (signed, retried, dead-lettered) carrying an
``Upstash-Schedule-Id`` header, as QStash's do (``qstash/howto/receiving.mdx``).

The dev server wires this in with :meth:`QStashDevServer.__init__` (routes) and its ``start``/``stop``
(the clock); nothing here imports the server module, which hands over what a fire needs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dsl.schedule_times import ScheduleError, check_schedule, next_fires

log = logging.getLogger("hopflow.qstash_dev")

SCHEDULE_ID = re.compile(r"^[A-Za-z0-9._-]{1,256}$")  # openapi.yaml: alphanumerics, -, . and _
# request headers that are about the API call or the schedule itself, not the messages it makes
NOT_KEPT = frozenset(
    {
        "authorization",
        "host",
        "content-length",
        "connection",
        "accept",
        "accept-encoding",
        "user-agent",
        "upstash-cron",
        "upstash-schedule-id",
        "upstash-deduplication-id",
        "upstash-content-based-deduplication",
    }
)


def split_cron(text: str) -> tuple[str, str]:
    """(cron, time zone) of an ``Upstash-Cron`` value (``CRON_TZ=<zone>`` prefix, default UTC)."""
    text = " ".join(text.split())
    if text.startswith("CRON_TZ="):
        zone, _, cron = text[len("CRON_TZ=") :].partition(" ")
        return cron, zone
    return text, "UTC"


@dataclass
class DevSchedule:
    id: str
    destination: str
    cron: str  # as given (with its CRON_TZ= prefix)
    body: bytes
    headers: dict[str, str]  # lower-cased publish headers applied to each fire
    created_at: float
    caller_ip: str
    next_fire: float
    paused: bool = False
    last_fire: float | None = None
    last_states: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        forwarded = {
            name[len("upstash-forward-") :]: [value]
            for name, value in self.headers.items()
            if name.startswith("upstash-forward-")
        }
        if "content-type" in self.headers:
            forwarded["Content-Type"] = [self.headers["content-type"]]
        d: dict[str, Any] = {
            "scheduleId": self.id,
            "cron": self.cron,
            "destination": self.destination,
            "createdAt": int(self.created_at * 1000),
            "method": (self.headers.get("upstash-method") or "POST").upper(),
            "header": forwarded,
            "retries": int(self.headers.get("upstash-retries") or 3),
            "callerIp": self.caller_ip,
            "isPaused": self.paused,
            "nextScheduleTime": int(self.next_fire * 1000),
        }
        if self.body:
            try:
                d["body"] = self.body.decode("utf-8")
            except UnicodeDecodeError:
                d["bodyBase64"] = base64.b64encode(self.body).decode("ascii")
        for name, key in (("upstash-callback", "callback"), ("upstash-failure-callback", "failureCallback")):
            if self.headers.get(name):
                d[key] = self.headers[name]
        if self.last_fire is not None:
            d["lastScheduleTime"] = int(self.last_fire * 1000)
            d["lastScheduleStates"] = dict(self.last_states)
        return d


class DevSchedules:
    """The schedules of one dev server. ``parse``/``accept`` are the server's: a fire is published
    exactly like ``POST /v2/publish``; ``bad_request`` is the error ``parse`` raises. ``clock`` is
    the schedules' clock (tests move it to a fire time); ``tick_s`` how often it is read."""

    def __init__(
        self,
        *,
        parse: Callable[[str, dict[str, str], bytes, str], Any],
        accept: Callable[[Any], dict[str, Any]],
        authorized: Callable[[Request], bool],
        bad_request: type[Exception],
        clock: Callable[[], float] = time.time,
        tick_s: float = 0.2,
    ) -> None:
        self._parse = parse
        self._accept = accept
        self._authorized = authorized
        self._bad_request = bad_request
        self.clock = clock
        self.tick_s = tick_s
        self._schedules: dict[str, DevSchedule] = {}
        self._task: asyncio.Task[None] | None = None

    def routes(self) -> list[Route]:
        return [
            Route("/v2/schedules", self._list, methods=["GET"]),
            # both SDKs send PATCH (qstash-py schedule.py, qstash-js schedules.ts); openapi.yaml says POST
            Route("/v2/schedules/{schedule_id}/pause", self._pause, methods=["PATCH", "POST"]),
            Route("/v2/schedules/{schedule_id}/resume", self._resume, methods=["PATCH", "POST"]),
            Route("/v2/schedules/{schedule_id}", self._get, methods=["GET"]),
            Route("/v2/schedules/{schedule_id}", self._delete, methods=["DELETE"]),
            Route("/v2/schedules/{destination:path}", self._create, methods=["POST"]),
        ]

    def all(self) -> list[DevSchedule]:
        return list(self._schedules.values())

    # ------------------------------------------------------------------------------------ the clock

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="qstash-dev-schedules")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:  # one bad schedule never stops the others
                log.exception("qstash-dev: schedule tick failed")
            await asyncio.sleep(self.tick_s)

    def tick(self, now: float | None = None) -> list[str]:
        """Fire every schedule whose next time has come (once, however many times passed, like a
        cron that was not running); the message ids published."""
        now = self.clock() if now is None else now
        fired = []
        for schedule in list(self._schedules.values()):
            if schedule.next_fire > now:
                continue
            cron, zone = split_cron(schedule.cron)
            at = schedule.next_fire
            schedule.next_fire = next_fires(cron, zone, now, 1)[0]
            if schedule.paused:  # "the cron trigger will simply be ignored" (openapi.yaml)
                continue
            message_id = self._fire(schedule, at)
            if message_id is not None:
                fired.append(message_id)
        return fired

    def _fire(self, schedule: DevSchedule, at: float) -> str | None:
        try:
            msg = self._parse(schedule.destination, dict(schedule.headers), schedule.body, schedule.caller_ip)
        except self._bad_request as exc:  # validated at creation; kept for safety
            log.warning("qstash-dev: schedule %s cannot fire: %s", schedule.id, exc)
            return None
        msg.forward["Upstash-Schedule-Id"] = schedule.id  # delivered as a header
        message_id = str(self._accept(msg)["messageId"])
        schedule.last_fire = at
        schedule.last_states = {message_id: "IN_PROGRESS"}
        return message_id

    # ----------------------------------------------------------------------------------- routes

    @staticmethod
    def _error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def _unauthorized(self) -> JSONResponse:
        return self._error(401, "Unauthorized: missing or wrong QStash token")

    async def _create(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        destination = _destination(request)
        if urlsplit(destination).scheme not in ("http", "https") or not urlsplit(destination).hostname:
            return self._error(400, "invalid destination: URL groups are not implemented by the dev server")
        cron_text = request.headers.get("upstash-cron", "")
        if not cron_text.strip():
            return self._error(400, "Upstash-Cron header is required")
        cron, zone = split_cron(cron_text)
        try:
            check_schedule(cron, zone)
        except ScheduleError as exc:
            return self._error(400, f"invalid Upstash-Cron header: {exc.message}")
        schedule_id = request.headers.get("upstash-schedule-id") or f"scd_{secrets.token_hex(12)}"
        if not SCHEDULE_ID.fullmatch(schedule_id):
            return self._error(
                400,
                "Schedule ID is invalid. Schedule IDs can only contain alphanumeric characters, "
                "hyphens, periods, and underscores.",
            )
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower() not in NOT_KEPT}
        body = await request.body()
        caller_ip = request.client.host if request.client else ""
        try:
            self._parse(destination, dict(headers), body, caller_ip)  # a fire must be publishable
        except self._bad_request as exc:
            return self._error(400, str(exc))
        now = self.clock()
        old = self._schedules.get(schedule_id)
        self._schedules[schedule_id] = DevSchedule(
            id=schedule_id,
            destination=destination,
            cron=" ".join(cron_text.split()),
            body=body,
            headers=headers,
            created_at=old.created_at if old else now,
            caller_ip=caller_ip,
            next_fire=next_fires(cron, zone, now, 1)[0],
            paused=old.paused if old else False,
            last_fire=old.last_fire if old else None,
            last_states=old.last_states if old else {},
        )
        return JSONResponse({"scheduleId": schedule_id})

    async def _list(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        return JSONResponse([s.to_json() for s in self._schedules.values()])

    def _found(self, request: Request) -> DevSchedule | None:
        return self._schedules.get(request.path_params["schedule_id"])

    async def _get(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        schedule = self._found(request)
        return JSONResponse(schedule.to_json()) if schedule else self._error(404, "schedule not found")

    async def _delete(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        if self._schedules.pop(request.path_params["schedule_id"], None) is None:
            return self._error(404, "schedule not found")
        return Response(status_code=200)

    async def _pause(self, request: Request) -> Response:
        return await self._set_paused(request, True)

    async def _resume(self, request: Request) -> Response:
        return await self._set_paused(request, False)

    async def _set_paused(self, request: Request, paused: bool) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        schedule = self._found(request)
        if schedule is None:
            return self._error(404, "schedule not found")
        schedule.paused = paused  # already in that state: no effect (openapi.yaml)
        return Response(status_code=200)


def _destination(request: Request) -> str:
    """The destination URL after ``/v2/schedules/`` (as the SDKs send it: not encoded), with the
    request's query minus the token parameter."""
    raw_path = request.scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else request.url.path
    dest = path.split("/v2/schedules/", 1)[1] if "/v2/schedules/" in path else ""
    if not dest.startswith(("http://", "https://")):
        dest = unquote(dest)
    query = request.scope.get("query_string", b"").decode("latin-1")
    query = "&".join(p for p in query.split("&") if p and not p.startswith(("qstashToken=", "qstash_token=")))
    return f"{dest}?{query}" if query else dest
