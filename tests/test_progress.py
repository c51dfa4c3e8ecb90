"""What the progress view says about a parked step, for every kind of park the interpreter records."""

from __future__ import annotations

from engine.progress import _park_detail


def test_each_kind_of_park_reads_as_a_sentence() -> None:
    assert _park_detail({"wait_wait": "event", "wait_event": "ok", "wait_key": "k1"}).startswith(
        "for event ok key=k1"
    )
    assert _park_detail({"wait_wait": "until", "wait_until": "2030-01-01T00:00:00+00:00"}) == (
        "until 2030-01-01T00:00:00+00:00"
    )
    assert _park_detail({"wait_wait": "for", "wait_ms": "1500"}) == "for 1500 ms"
    assert _park_detail({"wait_child": "e1.child.3"}) == "for child execution e1.child.3"
    assert _park_detail({"wait_wait": "offload", "wait_call": "POST https://x.test/export"}) == (
        "for the offloaded call POST https://x.test/export"
    )
    assert _park_detail({"wait_wait": "offload"}) == "for its offloaded call"
