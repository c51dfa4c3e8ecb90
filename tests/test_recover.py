"""Guarantee 2's last line of defence: ``recover`` re-drives executions whose next message was lost,
and Redis going away (and coming back) loses nothing.

* A worker that dies after its checkpoint and before publishing leaves the next messages in the
  outbox; if the delivery is never retried, ``Runtime.recover(older_than_s=...)`` (and the
  ``hopflow recover`` command) publishes them, and only once they are older than the bound.
* A wake-up lost between an event's arrival and the waiter's message is re-sent by ``recover``.
* ``recover`` on healthy executions is harmless: whatever it re-sends is acknowledged as stale.
* Redis killed (SIGKILL, ``appendfsync always``) in the middle of an execution: while it is down,
  ``advance``/``start``/``record`` raise ``StoreUnavailable`` (the webhook answers 5xx, QStash
  retries); once it is back on the same data, the redelivered messages finish the execution.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import redis_server_binary
from conftest import QueueDispatcher
from reference_model import Act, Each, Ledger, Par, Plan, Wait, check

from engine.actions import ActionRegistry
from engine.catalog import Catalog
from engine.clock import VirtualClock
from engine.dispatch import DispatchError
from engine.errors import StoreUnavailable
from engine.model import Message, Outgoing
from engine.runtime import Runtime
from engine.state.store import Store, lock_key

PLAN = Plan(
    "recovering",
    (
        Act("a", comp=True),
        Par("fan", ((Act("b1", comp=True),), (Act("c1"), Act("c2")))),
        Act("z", fail_until=1, attempts=2),
    ),
)


class Died(Exception):
    """The worker process died (with everything it had in memory, including its queue)."""


class Setup:
    def __init__(self, store: Store, plan: Plan = PLAN, dispatcher: Any = None, text: str = "") -> None:
        self.plan = plan
        self.clock = VirtualClock()
        self.dispatcher = dispatcher or QueueDispatcher(self.clock)
        self.ledger = Ledger()
        registry = ActionRegistry()
        for name, fn in self.ledger.actions().items():
            registry.register(name, fn)
        self.store = store
        self.rt = Runtime(
            store,
            self.dispatcher,
            Catalog.from_texts([text or plan.yaml()]),
            actions=registry,
            clock=self.clock,
            random=lambda: 0.5,
        )

    def check(self, eid: str) -> dict[str, Any]:
        rec = self.rt.record(eid)
        check(self.plan, eid, rec, self.rt.history(eid), self.ledger.only(eid))
        return rec


def _lose_next_message_after(setup: Setup, node: str) -> str:
    """Run until the checkpoint of ``node``, then die before publishing. The delivery is never
    retried (say the dispatcher lost it): only the outbox in Redis remembers what had to be sent.
    Messages published earlier stay queued: they were handed over durably."""

    def die(point: str, message: Message) -> None:
        if point == "after_checkpoint" and message.node == node:
            raise Died(node)

    setup.rt.faults = die
    eid = setup.rt.start(setup.plan.name, setup.plan.input)
    with pytest.raises(Died):
        setup.dispatcher.drain(setup.rt)
    setup.rt.faults = None
    return eid


def test_recover_publishes_an_orphaned_outbox_once_it_is_older_than_the_bound(store: Store) -> None:
    setup = Setup(store)
    eid = _lose_next_message_after(setup, "fan")
    outbox = store.outbox(eid)
    assert sorted(o.message.branch for _, o, _ in outbox) == ["fan/0", "fan/1"]
    assert setup.rt.record(eid)["status"] == "running"

    assert setup.rt.recover(older_than_s=60) == 0  # too young: a worker may still be publishing it
    assert setup.dispatcher.queue == []
    setup.clock.advance_to(setup.clock.now() + 61)
    assert setup.rt.recover(older_than_s=60) == 1
    setup.dispatcher.drain(setup.rt)
    assert setup.check(eid)["status"] == "succeeded"
    assert store.outbox(eid) == []
    assert eid not in store.active()


@pytest.mark.parametrize("node", ["a", "fan", "b1", "c2", "z"])
def test_recover_re_drives_a_lost_message_at_any_node(store: Store, node: str) -> None:
    setup = Setup(store)
    eid = _lose_next_message_after(setup, node)
    setup.dispatcher.drain(setup.rt)  # everything else that was in flight
    rec = setup.rt.record(eid)
    # b1 ends its branch without being the last to finish: its checkpoint sends nothing
    orphaned = node != "b1"
    assert (rec["status"] == "running") == orphaned, rec
    assert setup.rt.recover(older_than_s=0) == int(orphaned)
    setup.dispatcher.drain(setup.rt)
    assert setup.check(eid)["status"] == "succeeded"


def test_recover_on_healthy_executions_is_harmless(store: Store) -> None:
    """Executions mid-flight (messages queued, a branch parked on a wait) and finished ones:
    recover, again and again, must change nothing; anything it re-sends is stale."""

    class NoDedup(QueueDispatcher):  # harsher than QStash: every re-publish is delivered
        def publish(self, outgoing: Any) -> None:
            self.seen.clear()
            super().publish(outgoing)

    plan = Plan("healthy", (Act("a", comp=True), Wait("pause", 30_000), Act("b"), Act("c", fatal=True)))
    setup = Setup(store, plan)
    setup.dispatcher = NoDedup(setup.clock)
    setup.rt.dispatcher = setup.dispatcher
    done = setup.rt.start(plan.name, plan.input, "h-done")
    setup.dispatcher.drain(setup.rt)
    mid = [setup.rt.start(plan.name, plan.input, f"h-{i}") for i in range(3)]
    kinds: list[str] = []
    for _ in range(6):  # deliver a little, recover, deliver a little ...
        for _ in range(2):
            o = setup.dispatcher.pop()
            if o is not None:
                kinds.append(setup.rt.advance(o.message).kind)
        before = {eid: (store.branches(eid), setup.rt.record(eid)["trace"]) for eid in mid}
        setup.rt.recover(older_than_s=0)
        after = {eid: (store.branches(eid), setup.rt.record(eid)["trace"]) for eid in mid}
        assert before == after, "recover changed an execution"
    results = setup.dispatcher.drain(setup.rt)
    assert all(r.kind in ("advanced", "stale", "finished") for r in results)
    for eid in [done, *mid]:
        assert setup.check(eid)["status"] == "compensated"
    assert setup.rt.recover(older_than_s=0) == 0


def test_recover_resends_a_lost_event_wake_up(store: Store) -> None:
    """The event arrived and was handed to the waiting execution, but the message that wakes it
    was never published (the notifier died, or the publish failed): recover sends it."""
    text = textwrap.dedent("""
        name: approval
        steps:
          - id: ask
            action: t.work
            with: {step: ask}
          - id: answer
            wait: {event: approved, key: "{{ execution.id }}"}
          - id: done
            succeed: {output: "{{ steps.answer.output }}"}
    """)
    setup = Setup(store, Plan("approval", ()), text=text)
    eid = setup.rt.start("approval", {}, "wake-1")
    setup.dispatcher.drain(setup.rt)
    assert setup.rt.record(eid)["status"] == "running"
    setup.dispatcher.fail_next = 1
    # the event is handed over durably, so the notification succeeds even though the wake-up
    # publish failed (a failure here would make the caller retry and store a second event)
    assert setup.rt.notify("approved", eid, {"ok": True}) == 1
    assert setup.dispatcher.queue == []
    assert setup.rt.recover(older_than_s=0) == 1
    setup.dispatcher.drain(setup.rt)
    rec = setup.rt.record(eid)
    assert rec["status"] == "succeeded" and rec["output"] == {"ok": True}


def test_a_notify_retried_after_its_wake_up_failed_is_not_a_second_event(store: Store) -> None:
    """``notify`` hands the event to the waiter (durably: the claim) and then fails to publish the
    wake-up; the API answers 5xx, so the client retries the same notification. The waiter must get
    the event once, and the retry must not be kept as a *new* event that a later wait for the same
    name and key consumes: one notification, one event."""
    text = textwrap.dedent("""
        name: twice
        steps:
          - id: first
            wait: {event: approved, key: k}
          - id: second
            wait: {event: approved, key: k}
          - id: done
            succeed: {output: ["{{ steps.first.output }}", "{{ steps.second.output }}"]}
    """)
    setup = Setup(store, Plan("twice", ()), text=text)
    eid = setup.rt.start("twice", {}, "twice-1")
    setup.dispatcher.drain(setup.rt)
    setup.dispatcher.fail_next = 1
    try:
        setup.rt.notify("approved", "k", {"n": 1})
    except DispatchError:  # → 503: the client retries, as it must when it cannot know better
        setup.rt.notify("approved", "k", {"n": 1})
    setup.dispatcher.drain(setup.rt)
    setup.rt.recover(older_than_s=0)
    setup.dispatcher.drain(setup.rt)
    rec = setup.rt.record(eid)
    assert rec["status"] == "running" and rec["current"][0]["node"] == "second", (
        f"one notification satisfied two waits: {rec['status']}, output {rec['output']}"
    )


# ------------------------------------------------------------------------------ hopflow recover

ACTIONS_MODULE = """
import os
import engine


@engine.action("t.work")
def work(ctx, step, item=None, fail_until=0, fatal=False):
    with open(os.environ["EFFECTS_FILE"], "a") as f:
        f.write(ctx.idempotency_key + "\\n")
    if fatal:
        raise RuntimeError(step)
    if ctx.attempt <= fail_until:
        raise TimeoutError(step)
    return {"s": step, "i": item}


@engine.action("t.undo")
def undo(ctx, step, item=None, fail_until=0):
    return None
"""


def test_the_recover_command_re_drives_an_orphaned_outbox(
    store: Store, redis_db: Any, tmp_path: Path
) -> None:
    plan = Plan("cli-recover", (Act("a"), Act("b"), Act("c")))
    setup = Setup(store, plan)
    eid = _lose_next_message_after(setup, "a")
    (tmp_path / "wf").mkdir()
    (tmp_path / "wf" / "cli-recover.yaml").write_text(plan.yaml())
    (tmp_path / "cli_actions.py").write_text(ACTIONS_MODULE)
    socket_path = redis_db.connection_pool.connection_kwargs.get("path")
    url = f"unix://{socket_path}?db=0" if socket_path else os.environ["REDIS_URL"]  # this worker's db
    env = {
        **os.environ,
        "REDIS_URL": url,
        "EFFECTS_FILE": str(tmp_path / "effects.txt"),
    }
    args = [
        sys.executable, "-m", "engine.cli", "recover", "--older-than", "0", "--drive",
        "--actions", str(tmp_path / "cli_actions.py"), "--workflows", str(tmp_path / "wf"),
    ]  # fmt: skip
    done = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert re.search(r"\b1\b", done.stdout.splitlines()[0]), done.stdout  # one execution re-driven
    rec = setup.rt.record(eid)
    assert rec["status"] == "succeeded", rec
    assert [t["step"] for t in rec["trace"]] == ["a", "b", "c"]
    assert (tmp_path / "effects.txt").read_text().split() == [f"{eid}:b", f"{eid}:c"]

    again = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert re.search(r"\b0\b", again.stdout.splitlines()[0]), again.stdout  # nothing left to do


# ----------------------------------------------------------------------------- Redis restarts


class OwnRedis:
    """A redis-server of our own (so it can be killed), durable with ``appendfsync always``."""

    def __init__(self, folder: Path) -> None:
        binary = redis_server_binary()
        if binary is None:
            pytest.skip("no redis-server binary to start and kill")
        self.binary = binary
        self.folder = folder
        self.socket = str(folder / "redis.sock")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [
            self.binary, "--port", "0", "--unixsocket", self.socket, "--unixsocketperm", "700",
            "--dir", str(self.folder), "--appendonly", "yes", "--appendfsync", "always",
            "--save", "", "--daemonize", "no", "--loglevel", "warning",
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                probe = redis.Redis(unix_socket_path=self.socket)
                if probe.ping():
                    probe.close()
                    return
            except redis.exceptions.RedisError:
                pass
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()  # its data is a throwaway


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def _client(server: OwnRedis) -> Any:
    """One immediate reconnect attempt (a pooled connection may predate the restart), no backoff:
    while Redis is down a call fails at once, as a webhook worker should (5xx, QStash retries)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(
        unix_socket_path=server.socket,
        socket_timeout=2,
        socket_connect_timeout=2,
        retry=Retry(NoBackoff(), 1),
    )


class ShortLocks(Store):
    def run(self, name: str, execution_id: str, args: dict[str, Any], branch: str | None = None) -> dict:
        if name == "begin":
            args["lock_ms"] = 300
        return super().run(name, execution_id, args, branch)


def test_redis_killed_mid_execution_then_restarted_loses_nothing(own_redis: OwnRedis) -> None:
    plan = Plan("restart", (Act("a", comp=True), Each("each", (1, 2, 3), 2, (Act("x"),)), Act("b")))
    setup = Setup(ShortLocks(_client(own_redis)), plan)
    rt, q = setup.rt, setup.dispatcher
    eid = rt.start(plan.name, plan.input, "restart-1")
    for _ in range(3):
        o = q.pop()
        assert o is not None
        assert rt.advance(o.message).kind == "advanced"

    def state() -> tuple[Any, ...]:  # (a hash's field order may change when Redis reloads it)
        return setup.store.branches(eid), sorted(setup.store.outbox(eid), key=str), rt.history(eid)

    snapshot = state()

    own_redis.kill()
    pending = q.pending()
    assert pending, "messages are in flight"
    for o in pending:
        with pytest.raises(StoreUnavailable):
            rt.advance(o.message)  # → 5xx: the dispatcher keeps it and retries later
    with pytest.raises(StoreUnavailable):
        rt.start(plan.name, plan.input, "restart-2")
    with pytest.raises(StoreUnavailable):
        rt.record(eid)
    with pytest.raises(StoreUnavailable):
        rt.recover(older_than_s=0)

    own_redis.start()  # same folder, same append-only file
    assert state() == snapshot
    q.drain(rt)  # the retried deliveries (scripts are reloaded on NOSCRIPT)
    assert setup.check(eid)["status"] == "succeeded"
    assert not setup.store.client.exists("hf:{restart-2}:h"), "a start that failed wrote something"


@pytest.mark.parametrize("point", ["after_step", "after_checkpoint"])
def test_redis_dies_inside_a_node(own_redis: OwnRedis, point: str) -> None:
    """Redis dies while a node runs (its checkpoint cannot be written) or right after the
    checkpoint (the outbox cannot be cleared): the call fails with StoreUnavailable, the delivery
    is retried after the restart, and the execution ends as if nothing happened."""
    plan = Plan("dies", (Act("a", comp=True), Act("b"), Act("c")))
    setup = Setup(ShortLocks(_client(own_redis)), plan)
    rt, q = setup.rt, setup.dispatcher
    fired: list[Message] = []

    def kill_redis(at: str, message: Message) -> None:
        if at == point and message.node == "b" and not fired:
            fired.append(message)
            own_redis.kill()

    rt.faults = kill_redis
    eid = rt.start(plan.name, plan.input, f"dies-{point}")
    retry: list[Outgoing] = []
    while q.queue:
        o = q.pop()
        assert o is not None
        try:
            rt.advance(o.message)
        except StoreUnavailable:
            retry.append(o)  # 5xx → redelivered later
            break
    assert fired and retry
    own_redis.start()
    if point == "after_step":  # the lock the dead checkpoint left (Redis persisted it) expires
        deadline = time.monotonic() + 5
        while setup.store.client.exists(lock_key(eid, "")):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    q.seen.clear()  # a redelivery, not a new publish
    for o in retry:
        q.publish([o])
    q.drain(rt)
    rec = setup.check(eid)
    assert rec["status"] == "succeeded"
    assert [t["step"] for t in rec["trace"]] == ["a", "b", "c"]
    assert setup.store.outbox(eid) == []


def test_a_client_for_an_unreachable_redis_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """The webhook must answer 5xx quickly when Redis is down (QStash retries later): the client
    from ``redis_client`` retries twice with a short backoff, not redis-py's seconds-long default."""
    import socket
    import tempfile

    import redis

    from engine.embedded import RedisUnreachable, redis_client

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{port}/0")
    # building the client asks the server whether it is a cluster (engine/state/redis_url.py), through the
    # same bounded retries: an unreachable server is one readable, transient error right away
    with pytest.raises(RedisUnreachable, match="cannot reach Redis"):
        redis_client()
    nowhere = f"unix://{tempfile.gettempdir()}/nobody-{port}.sock"
    client = redis_client(nowhere)  # a socket URL is never asked: no cluster over a Unix socket
    retry = client.get_retry()
    assert retry is not None and retry.get_retries() == 2
    with pytest.raises(redis.ConnectionError):
        client.ping()
