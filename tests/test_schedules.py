"""Local schedules: fire times, the deterministic id, overlap policies and the catch-up policy."""

from __future__ import annotations

import datetime as dt
from typing import Any

from engine.schedules import Scheduler, fire_id

NIGHTLY = """
    name: nightly
    schedules:
      - cron: "0 9 * * 1-5"
        timezone: Europe/Lisbon
        input: {report: daily}
    steps:
      - id: done
        succeed: {output: "{{ input }}"}
"""

SLOW = """
    name: slow
    schedules:
      - cron: "*/5 * * * *"
        overlap: OVERLAP
    steps:
      - id: nap
        wait: {for: 1h}
"""


def at(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def test_a_schedule_fires_once_per_time_with_a_deterministic_id(harness: Any) -> None:
    h = harness(NIGHTLY)
    s = Scheduler(h.runtime)
    assert s.tick(at("2026-12-01T08:00:00+00:00")) == []  # first seen, long after the last fire time
    assert s.tick(at("2026-12-01T08:59:59+00:00")) == []
    fired = s.tick(at("2026-12-01T09:00:01+00:00"))  # 09:00 in Lisbon is 09:00 UTC in December
    assert [f.execution_id for f in fired] == ["nightly@2026-12-01T09:00:00Z"]
    assert fire_id("nightly", 0, at("2026-12-01T09:00:00+00:00")) == "nightly@2026-12-01T09:00:00Z"
    # another process ticking at the same time: nothing new (and start is idempotent per id anyway)
    assert Scheduler(h.runtime).tick(at("2026-12-01T09:00:02+00:00")) == []
    h.drain()
    assert h.runtime.record("nightly@2026-12-01T09:00:00Z")["output"] == {"report": "daily"}


def test_after_downtime_only_the_most_recent_missed_time_fires(harness: Any) -> None:
    h = harness(NIGHTLY)
    s = Scheduler(h.runtime)
    s.tick(at("2026-12-01T08:00:00+00:00"))
    # down from Tuesday morning until Friday noon: Tue, Wed, Thu, Fri 09:00 were missed
    fired = s.tick(at("2026-12-04T12:00:00+00:00"))
    assert [f.execution_id for f in fired] == ["nightly@2026-12-04T09:00:00Z"]
    assert s.tick(at("2026-12-04T12:00:01+00:00")) == []
    # Saturday and Sunday: no fire time
    assert s.tick(at("2026-12-06T23:00:00+00:00")) == []


def test_overlap_skip_allow_and_cancel_previous(harness: Any) -> None:
    for policy in ("skip", "allow", "cancel-previous"):
        name = f"slow-{policy}"  # one store for the three: a workflow each
        h = harness(SLOW.replace("OVERLAP", policy).replace("name: slow", f"name: {name}"))
        s = Scheduler(h.runtime)
        s.tick(at("2026-12-01T10:00:30+00:00"))  # first seen within the grace: fires for 10:00
        first = f"{name}@2026-12-01T10:00:00Z"
        assert h.runtime.record(first)["status"] == "running"
        fired = s.tick(at("2026-12-01T10:05:01+00:00"))
        second = f"{name}@2026-12-01T10:05:00Z"
        if policy == "skip":
            assert fired[0].execution_id is None and "still running" in fired[0].note
        else:
            assert fired[0].execution_id == second
        if policy == "cancel-previous":
            h.drain()
            assert h.runtime.record(first)["status"] in ("cancelled", "compensated")


def test_schedules_list_shows_the_next_fire_times_and_graph_shows_the_cron(tmp_path: Any) -> None:
    import json
    import os
    import subprocess
    import sys
    import textwrap

    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "nightly.yaml").write_text(textwrap.dedent(NIGHTLY).lstrip())

    def hopflow(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "engine.cli", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env={k: v for k, v in os.environ.items() if k != "REDIS_URL"},
        )

    listed = hopflow("schedules", "list", "--json", "--count", "2")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)["schedules"]
    assert row["workflow"] == "nightly" and row["timezone"] == "Europe/Lisbon" and row["overlap"] == "skip"
    first, second = (dt.datetime.fromisoformat(t) for t in row["next"])
    assert first < second and first.hour == 9 and first.weekday() < 5
    assert row["next_ids"][0].startswith("nightly@")
    text = hopflow("schedules", "list")
    assert text.returncode == 0 and text.stdout.startswith(
        "nightly#0  0 9 * * 1-5  (Europe/Lisbon, overlap skip)"
    )
    graph = hopflow("graph", "workflows/nightly.yaml")
    assert "cron 0 9 * * 1-5 (Europe/Lisbon)" in graph.stdout
    bad = hopflow("validate", "workflows/nightly.yaml")
    assert bad.returncode == 0, bad.stdout


def test_the_served_app_fires_schedules_in_its_lifespan(
    monkeypatch: Any, tmp_path: Any, redis_db: Any
) -> None:
    import functools
    import time

    from starlette.testclient import TestClient

    from engine.asgi import LazyApp

    every_minute = "name: minutely\nschedules:\n  - cron: '* * * * *'\nsteps:\n  - id: a\n    succeed: {}\n"
    (tmp_path / "minutely.yaml").write_text(every_minute)
    kwargs = redis_db.connection_pool.connection_kwargs  # the test's own Redis (embedded or REDIS_URL)
    db = kwargs.get("db", 0)
    if kwargs.get("path"):
        monkeypatch.setenv("REDIS_URL", f"unix://{kwargs['path']}?db={db}")
    else:
        monkeypatch.setenv(
            "REDIS_URL", f"redis://{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}/{db}"
        )
    for name in ("QSTASH_TOKEN", "HOPFLOW_SIGNING_KEY", "HOPFLOW_DEV_INSECURE", "HOPFLOW_ACTIONS"):
        monkeypatch.delenv(name, raising=False)
    key = "k" * 40
    monkeypatch.setenv("HOPFLOW_WORKFLOWS", str(tmp_path))
    monkeypatch.setenv("HOPFLOW_API_KEY", key)
    monkeypatch.setenv("HOPFLOW_PUBLIC_URL", "https://hopflow.test")
    auth = {"Authorization": f"Bearer {key}"}
    with functools.partial(TestClient, base_url="https://hopflow.test")(LazyApp()) as client:
        # every minute's fire time is less than a minute ago: the first tick fires it
        deadline = time.monotonic() + 20
        found: list[Any] = []
        while not found and time.monotonic() < deadline:
            found = client.get("/v1/executions?workflow=minutely", headers=auth).json()["executions"]
            time.sleep(0.2)
        assert len(found) == 1 and found[0]["execution_id"].startswith("minutely@")
