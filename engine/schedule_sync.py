"""QStash schedules for the workflows' ``schedules``: what should exist, what does, and the plan between.

Each declared schedule (workflow W's n-th entry) becomes one QStash schedule whose id is derived from
the namespace, W and n (:func:`schedule_id`), whose destination is the webhook (``/v1/step``) and
whose body names the schedule (:func:`fire_body`), never a hopflow message: the webhook reads the
cron, time zone, input and overlap policy from the deployed workflow at each fire
(engine/schedules.py), so only the cron, time zone and destination ever need updating in QStash.

A schedule is hopflow's, and this deployment's, only when its id is the one :func:`schedule_id`
gives for the (namespace, workflow, index) its own body names, with this deployment's namespace:
:func:`plan` never updates or deletes any other schedule of the account. Applying a plan twice
changes nothing the second time (everything is ``unchanged``). See docs/schedules.md.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.web.paths import STEP_PATH

if TYPE_CHECKING:  # pragma: no cover - typing only
    from engine.dispatch.qstash_schedules import QStashSchedules

log = logging.getLogger("hopflow.schedules")

ID_PREFIX = "hopflow."
UTC = "UTC"


def schedule_id(namespace: str, workflow: str, index: int) -> str:
    """``hopflow.<namespace or ->.<workflow>.<n>.<8 hex>``: stable, readable, and unique (names may
    contain ``.``; the digest of the three parts keeps two triples from ever sharing an id). QStash
    allows letters, digits, ``-``, ``.`` and ``_`` in a schedule id; namespaces and workflow names use
    no others."""
    digest = hashlib.sha256(f"{namespace}\n{workflow}\n{index}".encode()).hexdigest()[:8]
    return f"{ID_PREFIX}{namespace or '-'}.{workflow}.{index}.{digest}"


def cron_header(cron: str, timezone: str = UTC) -> str:
    """``Upstash-Cron``: QStash reads the expression in UTC unless it starts with ``CRON_TZ=<zone>``
    (upstash/docs qstash/features/schedules.mdx, "Timezones")."""
    cron = " ".join(cron.split())
    return cron if timezone == UTC else f"CRON_TZ={timezone} {cron}"


def parse_cron_header(text: str) -> tuple[str, str]:
    """(cron, timezone) of an ``Upstash-Cron`` value."""
    text = " ".join(text.split())
    if text.startswith("CRON_TZ="):
        zone, _, cron = text[len("CRON_TZ=") :].partition(" ")
        return cron, zone
    return text, UTC


def fire_body(namespace: str, workflow: str, index: int) -> bytes:
    """What QStash posts to the webhook at each fire: the schedule's name, nothing to execute."""
    payload = {"schedule": {"namespace": namespace, "workflow": workflow, "index": index}}
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def parse_fire_body(data: Any) -> tuple[str, str, int] | None:
    """(namespace, workflow, index) of a parsed fire body, None when it is not one."""
    if not isinstance(data, dict) or set(data) != {"schedule"} or not isinstance(data["schedule"], dict):
        return None
    inner = data["schedule"]
    namespace, workflow, index = inner.get("namespace"), inner.get("workflow"), inner.get("index")
    if not isinstance(namespace, str) or not isinstance(workflow, str):
        return None
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 10_000:
        return None
    return namespace, workflow, index


@dataclass(frozen=True)
class Declared:
    """One `schedules` entry as the QStash schedule it should be."""

    workflow: str
    index: int
    cron: str
    timezone: str
    overlap: str
    schedule_id: str
    destination: str
    body: bytes

    @property
    def cron_header(self) -> str:
        return cron_header(self.cron, self.timezone)


def declared(catalog: Any, namespace: str, destination: str) -> list[Declared]:
    """Every schedule of every workflow in ``catalog``, in name order."""
    found = []
    for name in catalog.names():
        for index, schedule in enumerate(catalog.get(name).schedules):
            found.append(
                Declared(
                    workflow=name,
                    index=index,
                    cron=schedule["cron"],
                    timezone=schedule.get("timezone", UTC),
                    overlap=schedule.get("overlap", "skip"),
                    schedule_id=schedule_id(namespace, name, index),
                    destination=destination,
                    body=fire_body(namespace, name, index),
                )
            )
    return found


def owner(schedule: dict[str, Any]) -> tuple[str, str, int] | None:
    """(namespace, workflow, index) when ``schedule`` (QStash's JSON) is one hopflow made, else None."""
    sid = schedule.get("scheduleId")
    if not isinstance(sid, str) or not sid.startswith(ID_PREFIX):
        return None
    parsed = parse_fire_body(_json(_body_of(schedule)))
    if parsed is None or schedule_id(*parsed) != sid:
        return None
    return parsed


def _body_of(schedule: dict[str, Any]) -> bytes:
    if isinstance(schedule.get("body"), str):
        return str(schedule["body"]).encode()
    if isinstance(schedule.get("bodyBase64"), str):
        try:
            return base64.b64decode(schedule["bodyBase64"], validate=True)
        except ValueError:
            return b""
    return b""


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


@dataclass(frozen=True)
class Change:
    """One line of a plan. ``action``: create, update, delete or unchanged."""

    action: str
    schedule_id: str
    workflow: str
    index: int
    cron: str  # the Upstash-Cron value (wanted, or what QStash has for a delete)
    destination: str
    reasons: tuple[str, ...] = ()
    paused: bool = False
    next_fire_ms: int | None = None  # QStash's nextScheduleTime, when it has the schedule
    declared: Declared | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "action": self.action,
            "schedule_id": self.schedule_id,
            "workflow": self.workflow,
            "schedule": self.index,
            "cron": self.cron,
            "destination": self.destination,
            "reasons": list(self.reasons),
            "paused": self.paused,
        }
        if self.next_fire_ms is not None:
            out["next_fire_ms"] = self.next_fire_ms
        return out

    def describe(self) -> str:
        why = f" ({'; '.join(self.reasons)})" if self.reasons else ""
        paused = " [paused in QStash]" if self.paused else ""
        return (
            f"{self.action:<9} {self.workflow}#{self.index}  {self.cron}  → {self.schedule_id}{why}{paused}"
        )


def plan(wanted: list[Declared], existing: list[dict[str, Any]], namespace: str) -> list[Change]:
    """What turns ``existing`` (QStash's list) into exactly ``wanted`` for this namespace."""
    ours: dict[str, dict[str, Any]] = {}
    for schedule in existing:
        found = owner(schedule)
        if found is not None and found[0] == namespace:
            ours[str(schedule["scheduleId"])] = schedule
    changes: list[Change] = []
    for d in wanted:
        have = ours.pop(d.schedule_id, None)
        if have is None:
            changes.append(_change("create", d, ("not in QStash",)))
            continue
        reasons = []
        if " ".join(str(have.get("cron", "")).split()) != d.cron_header:
            reasons.append(f"cron {have.get('cron')!r} → {d.cron_header!r}")
        if have.get("destination") != d.destination:
            reasons.append(f"destination {have.get('destination')} → {d.destination}")
        if _body_of(have) != d.body:
            reasons.append("body")
        if str(have.get("method") or "POST").upper() != "POST":
            reasons.append(f"method {have.get('method')} → POST")
        changes.append(
            _change(
                "update" if reasons else "unchanged",
                d,
                tuple(reasons),
                paused=bool(have.get("isPaused")),
                next_fire_ms=_ms(have.get("nextScheduleTime")),
            )
        )
    for sid, have in sorted(ours.items()):
        _, workflow, index = owner(have) or ("", "?", 0)
        changes.append(
            Change(
                "delete",
                sid,
                workflow,
                index,
                str(have.get("cron", "")),
                str(have.get("destination", "")),
                ("no longer declared",),
                paused=bool(have.get("isPaused")),
            )
        )
    return changes


def _change(
    action: str,
    d: Declared,
    reasons: tuple[str, ...],
    *,
    paused: bool = False,
    next_fire_ms: int | None = None,
) -> Change:
    return Change(
        action,
        d.schedule_id,
        d.workflow,
        d.index,
        d.cron_header,
        d.destination,
        reasons,
        paused,
        next_fire_ms,
        d,
    )


def _ms(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def apply(client: QStashSchedules, changes: list[Change]) -> list[Change]:
    """Carry out every create, update and delete of ``changes`` (in order); the ones carried out."""
    done = []
    for change in changes:
        if change.action in ("create", "update"):
            assert change.declared is not None
            client.upsert(change.schedule_id, change.destination, change.cron, change.declared.body)
        elif change.action == "delete":
            client.delete(change.schedule_id)  # already gone (another sync): nothing to do
        else:
            continue
        log.info("schedules sync: %s", change.describe())
        done.append(change)
    return done


def sync(
    catalog: Any, client: QStashSchedules, namespace: str, destination: str, *, dry_run: bool = False
) -> list[Change]:
    """Plan against QStash's current list and (unless ``dry_run``) apply it; the whole plan."""
    changes = plan(declared(catalog, namespace, destination), client.list(), namespace)
    if not dry_run:
        apply(client, changes)
    return changes


def sync_from_config(config: Any, catalog: Any) -> list[Change]:
    """:func:`sync` with the QStash account, webhook URL and namespace of ``config`` (deploy-time sync)."""
    from engine.dispatch.qstash_schedules import QStashSchedules

    if not config.qstash_token or not config.public_url:
        raise ValueError("syncing schedules to QStash needs QSTASH_TOKEN and HOPFLOW_PUBLIC_URL")
    with QStashSchedules(config.qstash_token, config.qstash_url) as client:
        return sync(catalog, client, config.namespace, config.public_url + STEP_PATH)
