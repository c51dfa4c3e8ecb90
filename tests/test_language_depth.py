"""Issue 12's language additions, end to end on the real interpreter and Redis: compensations that
read the error, reducers for shared vars, and fan-out timeouts."""

from __future__ import annotations

from typing import Any

from engine.model import StepError, StepFailure


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, ctx: Any, name: str, **extra: Any) -> Any:
        self.calls.append((name, extra))
        if name.startswith("fail"):
            raise StepFailure(StepError("card.declined", f"{name} said no"))
        return {"name": name, **extra}


def test_a_compensation_reads_the_error_that_started_the_unwinding(harness: Any) -> None:
    rec = Recorder()
    h = harness(
        """
        name: comp-error
        steps:
          - id: reserve
            action: rec
            with: {name: reserve}
            compensate:
              action: rec
              with:
                name: release
                why: "{{ error.name }}: {{ error.message }}"
                failed_step: "{{ error.step }}"
          - id: charge
            action: rec
            with: {name: fail-charge}
        """,
        actions={"rec": rec},
    )
    record = h.run("comp-error")
    assert record["status"] == "compensated"
    release = [extra for name, extra in rec.calls if name == "release"]
    assert release == [{"why": "card.declined: fail-charge said no", "failed_step": "charge"}]
