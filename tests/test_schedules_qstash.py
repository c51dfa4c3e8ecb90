"""QStash schedules: stable ids, the sync plan (idempotent, never touching others' schedules), the fire
path through the webhook (once per fire time, catch-up, overlap), qstash-dev's schedules API (the
official SDK as the wire-compatibility proof) and the whole loop: sync → qstash-dev fires → a run."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from helpers import serve_app

from engine.schedule_sync import (
    cron_header,
    declared,
    fire_body,
    owner,
    parse_cron_header,
    plan,
    schedule_id,
)
from engine.schedules import FIRE_EARLY_S, ScheduleUnknown, fire_delivered

NIGHTLY = """
    name: nightly
    schedules:
      - cron: "0 9 * * 1-5"
        timezone: Europe/Lisbon
        input: {report: daily}
      - cron: "30 * * * *"
    steps:
      - id: done
        succeed: {output: "{{ input }}"}
"""

SLOW = """
    name: slow
    schedules:
      - cron: "*/5 * * * *"
    steps:
      - id: nap
        wait: {for: 1h}
"""

MINUTELY = """
    name: minutely
    schedules:
      - cron: "* * * * *"
        input: {hello: world}
    steps:
      - id: done
        succeed: {output: "{{ input }}"}
"""

DEST = "https://hopflow.example/v1/step"


def at(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def qstash_json(d: Any, *, paused: bool = False) -> dict[str, Any]:
    """A schedule as QStash lists it, for the declared ``d``."""
    return {
        "scheduleId": d.schedule_id,
        "cron": d.cron_header,
        "destination": d.destination,
        "body": d.body.decode(),
        "method": "POST",
        "isPaused": paused,
        "createdAt": 1,
        "retries": 3,
    }


# ------------------------------------------------------------------------------ ids and the plan


def test_schedule_ids_are_stable_valid_for_qstash_and_unique_per_namespace_workflow_and_index() -> None:
    import re

    first = schedule_id("", "billing.invoice", 0)
    assert first == schedule_id("", "billing.invoice", 0)
    assert first.startswith("hopflow.-.billing.invoice.0.")
    assert re.fullmatch(r"[A-Za-z0-9._-]+", schedule_id("shop-prod", "a_b.c-d", 12))
    # names may contain dots: the digest keeps look-alike triples apart
    assert schedule_id("a", "b.c", 0) != schedule_id("a.b", "c", 0)
    assert len({schedule_id(ns, "w", i) for ns in ("", "x") for i in (0, 1)}) == 4


def test_the_time_zone_travels_as_a_cron_tz_prefix() -> None:
    assert cron_header("0 9 * * 1-5", "UTC") == "0 9 * * 1-5"
    assert cron_header("0  9 * * 1-5", "Europe/Lisbon") == "CRON_TZ=Europe/Lisbon 0 9 * * 1-5"
    assert parse_cron_header("CRON_TZ=Europe/Lisbon 0 9 * * 1-5") == ("0 9 * * 1-5", "Europe/Lisbon")
    assert parse_cron_header("*/5 * * * *") == ("*/5 * * * *", "UTC")


def test_the_plan_creates_updates_deletes_only_this_deployments_schedules(harness: Any) -> None:
    h = harness(NIGHTLY, MINUTELY)
    wanted = declared(h.runtime.catalog, "shop", DEST)
    assert [(d.workflow, d.index) for d in wanted] == [("minutely", 0), ("nightly", 0), ("nightly", 1)]
    assert wanted[1].cron_header == "CRON_TZ=Europe/Lisbon 0 9 * * 1-5"
    assert json.loads(wanted[1].body) == {
        "schedule": {"namespace": "shop", "workflow": "nightly", "index": 0}
    }

    assert [c.action for c in plan(wanted, [], "shop")] == ["create"] * 3
    in_sync = [qstash_json(d) for d in wanted]
    assert [c.action for c in plan(wanted, in_sync, "shop")] == ["unchanged"] * 3  # a second sync: nothing

    drifted = [dict(s) for s in in_sync]
    drifted[1]["cron"] = "0 9 * * 1-5"  # the time zone was lost
    drifted[2]["destination"] = "https://old.example/v1/step"
    gone = qstash_json(declared(harness(SLOW).runtime.catalog, "shop", DEST)[0])  # no longer declared
    others = [
        {**qstash_json(wanted[0]), "scheduleId": "scd_someone_elses"},  # not a hopflow id
        qstash_json(declared(h.runtime.catalog, "other-ns", DEST)[0]),  # another deployment
        {**qstash_json(wanted[0]), "scheduleId": "hopflow.shop.fake.0.00000000"},  # id and body disagree
        {"scheduleId": "hopflow.x", "cron": "* * * * *", "destination": DEST, "body": "not json"},
    ]
    changes = plan(wanted, [*drifted, gone, *others], "shop")
    by_id = {c.schedule_id: c for c in changes}
    assert by_id[wanted[0].schedule_id].action == "unchanged"
    assert by_id[wanted[1].schedule_id].action == "update"
    assert "cron '0 9 * * 1-5' → 'CRON_TZ=Europe/Lisbon 0 9 * * 1-5'" in by_id[wanted[1].schedule_id].reasons
    assert by_id[wanted[2].schedule_id].action == "update"
    assert by_id[gone["scheduleId"]].action == "delete"
    assert by_id[gone["scheduleId"]].workflow == "slow"
    assert len(changes) == 4  # nothing about the four schedules that are not this deployment's
    assert owner(others[1]) == ("other-ns", "minutely", 0) and owner(others[2]) is None


# ------------------------------------------------------------------------------ the fire path


def test_a_fire_delivered_twice_starts_one_execution_for_its_fire_time(harness: Any) -> None:
    h = harness(NIGHTLY)
    first = fire_delivered(h.runtime, "nightly", 0, "", now=at("2026-12-01T09:00:00.4+00:00"))
    assert first.execution_id == "nightly@2026-12-01T09:00:00Z"
    # QStash's retry (or a duplicate) of the same fire, minutes later: the same execution, once
    again = fire_delivered(h.runtime, "nightly", 0, "", now=at("2026-12-01T09:02:30+00:00"))
    assert again.execution_id == first.execution_id
    h.drain()
    assert h.runtime.record(first.execution_id)["output"] == {"report": "daily"}
    assert [e["execution_id"] for e in listed(h.runtime.store, "nightly")] == [first.execution_id]


def listed(store: Any, workflow: str) -> list[dict[str, Any]]:
    from engine.state.index import Filters, list_executions

    return list(list_executions(store, Filters(workflow=workflow)).executions)


def test_a_fire_arriving_a_little_early_counts_for_its_time_and_a_late_retry_for_the_latest(
    harness: Any,
) -> None:
    h = harness(NIGHTLY)
    early = fire_delivered(h.runtime, "nightly", 1, "", now=at("2026-12-01T10:29:58+00:00"))
    assert early.execution_id == "nightly@2026-12-01T10:30:00Z.1"  # clocks a little apart
    assert FIRE_EARLY_S < 60  # never more than a cron's resolution
    h.drain()  # it ran and ended
    # a retry of the 10:30 fire that only gets through after 12:30 and 11:30 passed: catch-up runs
    # the most recent fire time once, never a burst of the missed ones
    late = fire_delivered(h.runtime, "nightly", 1, "", now=at("2026-12-01T12:40:00+00:00"))
    assert late.execution_id == "nightly@2026-12-01T12:30:00Z.1"
    assert fire_delivered(h.runtime, "nightly", 1, "", now=at("2026-12-01T12:30:05+00:00")).execution_id == (
        late.execution_id
    )


def test_the_overlap_policy_holds_on_the_qstash_path(harness: Any) -> None:
    h = harness(SLOW)
    first = fire_delivered(h.runtime, "slow", 0, "", now=at("2026-12-01T10:00:01+00:00"))
    assert h.runtime.record(first.execution_id)["status"] == "running"
    skipped = fire_delivered(h.runtime, "slow", 0, "", now=at("2026-12-01T10:05:01+00:00"))
    assert skipped.execution_id is None and "still running" in skipped.note


def test_a_fire_for_a_schedule_not_declared_here_is_refused(harness: Any) -> None:
    h = harness(NIGHTLY)
    with pytest.raises(ScheduleUnknown, match="no workflow 'gone'"):
        fire_delivered(h.runtime, "gone", 0, "")
    with pytest.raises(ScheduleUnknown, match="declares no schedule #5"):
        fire_delivered(h.runtime, "nightly", 5, "")
    with pytest.raises(ScheduleUnknown, match="namespace"):
        fire_delivered(h.runtime, "nightly", 0, "other")


# ---------------------------------------------------------------------- qstash-dev and the SDK


@pytest.fixture
def dev() -> Iterator[Any]:
    from engine.devtools.qstash_dev.server import start_dev_server

    with start_dev_server(max_retries=2, backoff_scale=0.001) as running:
        yield running


def test_qstash_dev_speaks_the_schedules_api_the_official_sdk_uses(dev: Any) -> None:
    from qstash import QStash
    from qstash.errors import QStashError

    client = QStash(dev.token, base_url=dev.url)
    sid = client.schedule.create_json(
        destination="https://example.com/hook",
        cron="CRON_TZ=America/New_York 0 4 * * *",
        body={"hello": "world"},
        schedule_id="my-schedule.1",
        retries=1,
    )
    assert sid == "my-schedule.1"
    other = client.schedule.create(destination="https://example.com/other", cron="*/5 * * * *")
    got = client.schedule.get(sid)
    assert (got.cron, got.destination, got.body, got.retries, got.paused) == (
        "CRON_TZ=America/New_York 0 4 * * *",
        "https://example.com/hook",
        '{"hello": "world"}',
        1,
        False,
    )
    assert got.next_schedule_time and got.next_schedule_time > time.time() * 1000
    assert sorted(s.schedule_id for s in client.schedule.list()) == sorted([sid, other])
    # the same id again replaces the schedule's settings in place
    client.schedule.create(destination="https://example.com/moved", cron="1 1 1 1 1", schedule_id=sid)
    moved = client.schedule.get(sid)
    assert (moved.destination, moved.cron, moved.body) == ("https://example.com/moved", "1 1 1 1 1", None)
    assert len(client.schedule.list()) == 2
    client.schedule.pause(sid)
    assert client.schedule.get(sid).paused is True
    client.schedule.resume(sid)
    assert client.schedule.get(sid).paused is False
    client.schedule.delete(sid)
    assert [s.schedule_id for s in client.schedule.list()] == [other]
    with pytest.raises(QStashError):
        client.schedule.get(sid)
    with pytest.raises(QStashError, match="Upstash-Cron"):
        client.schedule.create(destination="https://example.com", cron="every day")
    with pytest.raises(QStashError, match="Schedule ID is invalid"):
        client.schedule.create(destination="https://example.com", cron="* * * * *", schedule_id="a/b c")


def test_qstash_dev_fires_a_schedule_on_its_clock_as_a_signed_delivery(dev: Any) -> None:
    from conftest_qstash import Endpoint

    from engine.signing import verify_qstash

    endpoint = Endpoint()
    try:
        client = httpx.Client(base_url=dev.url, headers={"Authorization": f"Bearer {dev.token}"})
        r = client.post(
            f"/v2/schedules/{endpoint.url}/hook",
            headers={"Upstash-Cron": "* * * * *", "Upstash-Schedule-Id": "s1", "Content-Type": "text/plain"},
            content=b"tick",
        )
        assert r.status_code == 200, r.text
        schedules = dev.server.schedules
        paused = client.patch("/v2/schedules/s1/pause")
        assert paused.status_code == 200
        assert schedules.tick(time.time() + 61) == []  # paused: the trigger is ignored
        client.post("/v2/schedules/s1/resume")  # openapi.yaml's verb works too
        assert len(schedules.tick(time.time() + 121)) == 1
        assert schedules.tick(time.time() + 121) == []  # fired once for that time, not again
        (delivery,) = endpoint.wait_for(1)
        assert delivery.body == b"tick" and delivery.headers["upstash-schedule-id"] == "s1"
        verify_qstash(
            delivery.headers["upstash-signature"],
            delivery.body,
            f"{endpoint.url}/hook",
            [dev.current_signing_key],
        )
        listed = client.get("/v2/schedules/s1").json()
        assert listed["lastScheduleTime"] > 0 and listed["isPaused"] is False
        assert client.delete("/v2/schedules/s1").status_code == 200
        assert client.delete("/v2/schedules/s1").status_code == 404
        client.close()
    finally:
        endpoint.close()


# --------------------------------------------------------------------------------- the CLI


def _write(folder: Path, *texts: str) -> None:
    folder.mkdir(exist_ok=True)
    for old in folder.glob("*.yaml"):
        old.unlink()
    for text in texts:
        body = textwrap.dedent(text).lstrip()
        name = body.split("\n", 1)[0].split(":", 1)[1].strip()
        (folder / f"{name}.yaml").write_text(body)


@pytest.fixture
def cli_env(dev: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    from engine.config import VARIABLES

    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in dev.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HOPFLOW_PUBLIC_URL", "https://hopflow.example")
    monkeypatch.setenv("HOPFLOW_NAMESPACE", "shop")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "workflows"


def hopflow(*args: str) -> Any:
    from engine.cli import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_schedules_sync_makes_qstash_hold_exactly_the_declared_schedules(dev: Any, cli_env: Path) -> None:
    from qstash import QStash

    client = QStash(dev.token, base_url=dev.url)
    foreign = client.schedule.create(destination="https://elsewhere.example/", cron="0 0 * * *")
    _write(cli_env, NIGHTLY, MINUTELY)

    planned = hopflow("schedules", "sync", "--dry-run")
    assert planned.exit_code == 0, planned.output
    assert "3 would be created, 0 would be updated, 0 would be deleted, 0 unchanged" in planned.output
    assert [s.schedule_id for s in client.schedule.list()] == [foreign]  # a dry run changes nothing

    listed = json.loads(hopflow("schedules", "list", "--json").output)
    assert {(r["workflow"], r["where"], r["state"]) for r in listed["schedules"]} == {
        ("minutely", "qstash", "missing"),
        ("nightly", "qstash", "missing"),
    }

    done = hopflow("schedules", "sync")
    assert done.exit_code == 0, done.output
    assert "3 created, 0 updated, 0 deleted, 0 unchanged" in done.output
    ours = {s.schedule_id: s for s in client.schedule.list() if s.schedule_id != foreign}
    nightly = ours[schedule_id("shop", "nightly", 0)]
    assert nightly.cron == "CRON_TZ=Europe/Lisbon 0 9 * * 1-5"
    assert nightly.destination == "https://hopflow.example/v1/step"
    assert nightly.body == fire_body("shop", "nightly", 0).decode()

    again = hopflow("schedules", "sync", "--json")
    assert json.loads(again.output)["counts"] == {"create": 0, "update": 0, "delete": 0, "unchanged": 3}
    text = hopflow("schedules", "list").output
    assert "nightly#0  0 9 * * 1-5  (Europe/Lisbon, overlap skip)  QStash: synced" in text

    # a changed cron is updated in place; a removed workflow's schedules are deleted
    _write(cli_env, NIGHTLY.replace('"30 * * * *"', '"45 * * * *"'))
    drift = hopflow("schedules", "list").output
    assert "QStash: drifted (cron '30 * * * *' → '45 * * * *')" in drift
    assert "minutely#0  * * * * *  QStash: stray" in drift
    changed = hopflow("schedules", "sync")
    assert "0 created, 1 updated, 1 deleted, 1 unchanged" in changed.output, changed.output
    assert sorted(s.schedule_id for s in client.schedule.list()) == sorted(
        [foreign, schedule_id("shop", "nightly", 0), schedule_id("shop", "nightly", 1)]
    )
    assert client.schedule.get(schedule_id("shop", "nightly", 1)).cron == "45 * * * *"
    assert client.schedule.get(foreign).destination == "https://elsewhere.example/"  # never touched


def test_schedules_sync_refuses_without_qstash_or_with_a_broken_workflow(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(cli_env, NIGHTLY)
    (cli_env / "broken.yaml").write_text("name: broken\nsteps: 3\n")
    broken = hopflow("schedules", "sync")
    assert broken.exit_code == 2 and "broken.yaml" in broken.output  # its schedules would be deleted
    (cli_env / "broken.yaml").unlink()
    monkeypatch.setenv("QSTASH_URL", "http://127.0.0.1:9")  # nothing listens there
    down = hopflow("schedules", "sync")
    assert down.exit_code == 1 and len(down.output.strip().splitlines()) == 1
    assert "cannot reach QStash" in down.output and "Traceback" not in down.output
    monkeypatch.delenv("QSTASH_TOKEN")
    local = hopflow("schedules", "sync")
    assert local.exit_code == 2 and "QSTASH_TOKEN is not set" in local.output
    assert "local (hopflow serve)" in hopflow("schedules", "list").output


# ------------------------------------------------------------------------------ end to end


def test_sync_then_qstash_dev_fires_then_one_execution_runs(tmp_path: Path, redis_db: Any) -> None:
    """The app syncs at startup (HOPFLOW_SCHEDULES_SYNC=1), qstash-dev fires the cron schedule on its
    clock with every delivery duplicated, the webhook verifies the signature and starts the
    workflow once; a fire for a schedule nobody declares is dead-lettered (489)."""
    from qstash import QStash

    from engine.actions import REGISTRY
    from engine.catalog import Catalog
    from engine.config import Config
    from engine.devtools.qstash_dev.server import start_dev_server
    from engine.dispatch.qstash import QStashDispatcher
    from engine.runtime import Runtime
    from engine.state.store import Store
    from engine.web.app import create_app

    _write(tmp_path / "workflows", MINUTELY)
    catalog = Catalog.from_directory(tmp_path / "workflows")
    store = Store(redis_db)
    with start_dev_server(max_retries=2, backoff_scale=0.001, duplicate=True) as dev:
        holder: dict[str, Any] = {}

        def make_app(url: str) -> Any:
            dispatcher = QStashDispatcher(
                dev.token, dev.url, url + "/v1/step", failure_callback_url=url + "/v1/step/failed"
            )
            holder["runtime"] = Runtime(store, dispatcher, catalog, actions=REGISTRY)
            config = Config(
                public_url=url,
                api_key="k" * 40,
                qstash_token=dev.token,
                qstash_url=dev.url,
                qstash_current_signing_key=dev.current_signing_key,
                qstash_next_signing_key=dev.next_signing_key,
                schedules_sync=True,
            )
            return create_app(holder["runtime"], config=config)

        with serve_app(make_app, start_timeout_s=10) as url:
            schedules = dev.server.schedules
            deadline = time.monotonic() + 20
            while not schedules.all() and time.monotonic() < deadline:  # the startup sync
                time.sleep(0.05)
            (made,) = schedules.all()
            assert made.id == schedule_id("", "minutely", 0) and made.destination == url + "/v1/step"
            assert len(schedules.tick(made.next_fire + 0.5)) == 1  # its fire time comes on qstash-dev's clock

            found: list[dict[str, Any]] = []
            while time.monotonic() < deadline:
                found = listed(store, "minutely")
                if found and holder["runtime"].record(found[0]["execution_id"])["status"] == "succeeded":
                    break
                time.sleep(0.05)
            assert len(found) == 1, found
            assert holder["runtime"].record(found[0]["execution_id"])["output"] == {"hello": "world"}
            assert dev.server.wait_idle(20)
            attempts = [
                e for e in dev.server.events() if e["event"] == "attempt" and e["url"] == made.destination
            ]
            assert attempts and all(e["status"] == 200 and e["copies"] == 2 for e in attempts)

            QStash(dev.token, base_url=dev.url).message.publish_json(
                url=url + "/v1/step", body=json.loads(fire_body("", "retired", 0))
            )
            assert dev.server.wait_idle(20)
            (dead,) = [e for e in dev.server.events() if e["event"] == "dlq"]
            assert dead["status"] == 489
            assert len(listed(store, "minutely")) == 1
        holder["runtime"].dispatcher.close()


def test_a_startup_sync_that_cannot_reach_qstash_is_logged_without_the_token(
    harness: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from engine.config import Config
    from engine.web.core import HopflowApp

    token = "qstash-token-that-must-not-leak-0123456789"
    config = Config(
        qstash_token=token,
        qstash_url="http://127.0.0.1:9",  # nothing listens there
        public_url="https://hopflow.example",
        api_key="k" * 40,
        schedules_sync=True,
    )
    hop = HopflowApp(harness(NIGHTLY).runtime, config)
    with caplog.at_level(logging.INFO, logger="hopflow.asgi"):
        hop._sync_schedules()  # what the lifespan runs in the background: it never raises
    (record,) = [r for r in caplog.records if "schedules sync at startup" in r.getMessage()]
    assert record.levelno == logging.ERROR and "cannot reach QStash" in record.getMessage()
    assert token not in caplog.text
