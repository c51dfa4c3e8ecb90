"""QStash's schedules API over httpx: list, get, create-or-update (by id), delete.

``hopflow schedules sync`` and ``schedules list`` use it; the webhook never does. The wire format
is QStash's (upstash/docs ``qstash/openapi.yaml``, ``/v2/schedules``…; the official SDKs'
``schedule.py`` / ``schedules.ts`` send the same): ``POST /v2/schedules/<destination>`` with
``Upstash-Cron`` and ``Upstash-Schedule-Id`` creates the schedule, or replaces every setting of the
one with that id. 429, 5xx and connection failures are retried a bounded number of times; any other
4xx raises :class:`ScheduleRejected` at once. Errors never contain the token.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from engine import lazyimport
from engine.dispatch import DispatchError
from engine.dispatch.qstash import DEFAULT_QSTASH_URL, DispatchRejected, rate_limit_wait

if TYPE_CHECKING:  # pragma: no cover - typing only
    import httpx


class ScheduleRejected(DispatchRejected):
    """QStash refused a schedules request (a 4xx other than 429): repeating it cannot help."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class QStashSchedules:
    """A small client of ``/v2/schedules`` (the token is never shown: see ``__repr__``)."""

    def __init__(
        self,
        token: str,
        base_url: str = DEFAULT_QSTASH_URL,
        *,
        timeout_s: float = 10.0,
        max_attempts: int = 3,
        backoff_s: float = 0.2,
        deadline_s: float = 20.0,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not token:
            raise ValueError("a QStash token is required")
        self._token = token
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_attempts = max(1, max_attempts)
        self.backoff_s = backoff_s
        self.deadline_s = deadline_s
        self._client = client
        self._own_client = client is None
        self._lock = threading.Lock()
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"QStashSchedules(base_url={self.base_url!r})"

    # ------------------------------------------------------------------------------------ the API

    def list(self) -> list[dict[str, Any]]:
        """Every schedule of the account (``GET /v2/schedules``), hopflow's and anyone else's."""
        data = self._request("GET", "/v2/schedules").json()
        if not isinstance(data, list):
            raise DispatchError("QStash's schedule list is not a JSON array")
        return [s for s in data if isinstance(s, dict)]

    def get(self, schedule_id: str) -> dict[str, Any] | None:
        """One schedule, or None when QStash has none with this id."""
        try:
            data = self._request("GET", f"/v2/schedules/{schedule_id}").json()
        except ScheduleRejected as exc:
            if exc.status == 404:
                return None
            raise
        return data if isinstance(data, dict) else None

    def upsert(
        self,
        schedule_id: str,
        destination: str,
        cron: str,
        body: bytes,
        *,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Create the schedule ``schedule_id``, or replace all its settings; QStash's schedule id."""
        sent = {
            "Upstash-Cron": cron,
            "Upstash-Schedule-Id": schedule_id,
            "Content-Type": content_type,
            **(headers or {}),
        }
        response = self._request("POST", f"/v2/schedules/{destination}", body, sent)
        try:
            return str(response.json()["scheduleId"])
        except (ValueError, KeyError, TypeError):
            return schedule_id

    def delete(self, schedule_id: str) -> bool:
        """Delete a schedule; False when it was already gone (404)."""
        try:
            self._request("DELETE", f"/v2/schedules/{schedule_id}")
        except ScheduleRejected as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # --------------------------------------------------------------------------------------- HTTP

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                httpx = lazyimport.httpx()
                self._client = httpx.Client(timeout=self.timeout_s, follow_redirects=False)
            return self._client

    def _request(
        self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        httpx = lazyimport.httpx()
        client = self._http()
        started = time.monotonic()
        problem = "no attempt made"
        for attempt in range(self.max_attempts):
            wait = self.backoff_s * 2**attempt * random.uniform(0.5, 1.0)
            try:
                response = client.request(
                    method,
                    self.base_url + path,
                    content=body,
                    headers={**(headers or {}), "Authorization": f"Bearer {self._token}"},
                )
            except httpx.TimeoutException:
                problem = "QStash did not answer in time"
            except httpx.TransportError as exc:
                problem = f"cannot reach QStash at {self.base_url} ({type(exc).__name__})"
            else:
                if response.is_success:
                    return response
                detail = f"HTTP {response.status_code}: {_error_text(response)}"
                if response.status_code != 429 and response.status_code < 500:
                    raise ScheduleRejected(
                        f"QStash refused {method} {_shown(path)}: {detail}", response.status_code
                    )
                problem = f"QStash is unavailable: {detail}"
                limited = rate_limit_wait(response.headers, time.time())
                if limited is not None:
                    wait = max(wait, limited)
            if attempt == self.max_attempts - 1 or time.monotonic() - started + wait > self.deadline_s:
                break
            self._sleep(wait)
        raise DispatchError(f"{method} {_shown(path)} failed: {problem}")

    def close(self) -> None:
        with self._lock:
            if self._own_client and self._client is not None:
                self._client.close()
                self._client = None

    def __enter__(self) -> QStashSchedules:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _shown(path: str) -> str:
    return path if len(path) <= 200 else path[:200] + "…"


def _error_text(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return data["error"][:200]
    return response.text[:200]
