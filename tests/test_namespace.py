"""Two deployments on one Redis database, each with its own ``HOPFLOW_NAMESPACE`` (issue 10, 6b).

Each has its own workflows, its own actions and its own local dispatcher, and both run at once on
the same database. Without namespaces they shared the local queue and the active index, and a
process with other actions leased the other deployment's messages and failed them (``dead``).
With namespaces each dispatcher delivers only its own messages, each store sees only its own
executions, and every key of a namespace starts with ``<namespace>:`` around an unchanged hash tag.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from engine.actions import ActionRegistry
from engine.catalog import Catalog
from engine.dispatch.local import LocalDispatcher
from engine.embedded import in_process_delivery
from engine.errors import UnknownExecution
from engine.runtime import Runtime
from engine.state.namespace import check_namespace, queue_prefix
from engine.state.store import Store

FLOW = """
name: {name}
steps:
  - id: work
    action: {action}
  - id: nap
    wait: {{for: 50ms}}
  - id: again
    action: {action}
"""


def deployment(client: Any, namespace: str, name: str, action: str) -> tuple[Runtime, LocalDispatcher]:
    registry = ActionRegistry()
    registry.register(action, lambda ctx: {"by": namespace})
    dispatcher = LocalDispatcher(client, prefix=queue_prefix(namespace), workers=4, poll_interval_s=0.05)
    runtime = Runtime(
        Store(client, namespace=namespace),
        dispatcher,
        Catalog.from_texts([FLOW.format(name=name, action=action)]),
        actions=registry,
    )
    dispatcher.deliver = in_process_delivery(runtime)
    dispatcher.on_dead = runtime.mark_dead
    return runtime, dispatcher


def run_both(
    a: tuple[Runtime, LocalDispatcher], b: tuple[Runtime, LocalDispatcher], ids: dict[str, list[str]]
) -> None:
    stop = threading.Event()
    loops = [threading.Thread(target=d.run_forever, args=(stop,), daemon=True) for _, d in (a, b)]
    for t in loops:
        t.start()
    try:
        for (runtime, _), eids in ((a, ids["a"]), (b, ids["b"])):
            for eid in eids:
                runtime.start(runtime.catalog.names()[0], {}, eid)
        done = threading.Event()

        def finished() -> bool:
            return all(
                rt.record(e)["status"] != "running"
                for rt, es in ((a[0], ids["a"]), (b[0], ids["b"]))
                for e in es
            )

        for _ in range(2000):  # hang guard only
            if finished():
                done.set()
                break
            stop.wait(0.02)
        assert done.is_set(), "the executions did not finish"
    finally:
        stop.set()
        for _, d in (a, b):
            d.wake()
        for t in loops:
            t.join(10)


def test_two_namespaces_on_one_database_do_not_interfere(redis_db: Any) -> None:
    a = deployment(redis_db, "shop", "orders", "t.ship")
    b = deployment(redis_db, "blog", "posts", "t.publish")
    ids = {"a": [f"same-{i}" for i in range(5)], "b": [f"same-{i}" for i in range(5)]}  # even the same ids
    run_both(a, b, ids)
    for (runtime, dispatcher), ns in ((a, "shop"), (b, "blog")):
        for eid in ids["a"]:
            record = runtime.record(eid)
            assert record["status"] == "succeeded", record
            assert record["output"] == {"by": ns}
        assert dispatcher.stats.dead == 0 and not dispatcher.stats.errors
        # its own messages only: every one it published, and nothing else — at least the start and
        # the wake-up after the wait of each execution (`work` → `nap` may run in place: fast path)
        assert dispatcher.stats.delivered == dispatcher.stats.published >= 5 * 2
        assert runtime.store.active() == []  # finished executions leave the active index
    keys = {k.decode() for k in redis_db.scan_iter(count=1000)}
    assert keys and all(k.startswith(("shop:hf:", "blog:hf:")) for k in keys), sorted(keys)[:10]
    assert "shop:hf:{same-0}:h" in keys and "blog:hf:{same-0}:h" in keys


def test_no_namespace_keeps_todays_keys_and_namespaces_do_not_see_them(redis_db: Any) -> None:
    plain = deployment(redis_db, "", "orders", "t.ship")
    other = deployment(redis_db, "shop", "orders", "t.ship")
    run_both(plain, other, {"a": ["old-1"], "b": []})
    assert plain[0].record("old-1")["status"] == "succeeded"
    assert redis_db.exists("hf:{old-1}:h") and redis_db.exists("hf:{q}:msg") == 0
    with pytest.raises(UnknownExecution):
        other[0].record("old-1")
    assert other[1].stats.delivered == 0


@pytest.mark.parametrize("bad", ["{tag}", "a b", "x" * 65, "-lead", "a:b"])
def test_a_namespace_that_could_break_the_key_layout_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not usable"):
        check_namespace(bad)


def test_hopflow_namespace_reaches_the_cli_and_the_config(
    redis_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.config import inspect_env
    from engine.embedded import EmbeddedError, embedded_runtime

    config, issues = inspect_env({"HOPFLOW_NAMESPACE": "{bad}"})
    assert config is None and any(i.variable == "HOPFLOW_NAMESPACE" and i.severity == "error" for i in issues)
    config, _ = inspect_env({"HOPFLOW_NAMESPACE": "shop"})
    assert config is not None and config.namespace == "shop"
    monkeypatch.setenv("HOPFLOW_NAMESPACE", "shop")
    runtime, dispatcher = embedded_runtime(
        Catalog.from_texts([FLOW.format(name="w", action="t.x")]), redis=redis_db
    )
    assert runtime.store.header_key("e") == "shop:hf:{e}:h" and dispatcher.key_due == "shop:hf:{q}:due"
    monkeypatch.setenv("HOPFLOW_NAMESPACE", "a b")
    with pytest.raises(EmbeddedError, match="HOPFLOW_NAMESPACE"):
        embedded_runtime(Catalog.from_texts([FLOW.format(name="w", action="t.x")]), redis=redis_db)


def test_the_asgi_runtime_uses_the_configured_namespace(redis_db: Any, tmp_path: Any) -> None:
    from engine.config import Config
    from engine.web.wiring import build_runtime

    (tmp_path / "w.yaml").write_text(FLOW.format(name="w", action="t.x"))
    runtime = build_runtime(Config(namespace="shop", workflows_dir=str(tmp_path)), redis=redis_db)
    assert runtime.store.namespace == "shop"
    assert runtime.dispatcher.key_due == "shop:hf:{q}:due"
