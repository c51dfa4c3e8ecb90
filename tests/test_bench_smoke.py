"""The benchmarks still run: each script with a tiny N exits 0 and prints its table (no timing checked)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_bench(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOPFLOW_", "QSTASH_", "REDIS_"))}
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=180,  # a hang guard, not a performance check
    )


@pytest.mark.slow
def test_engine_bench_prints_its_tables() -> None:
    proc = run_bench("engine.py", "--steps", "5", "--fanout", "4", "--quick")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for row in (
        "interpreter (in-memory queue)",
        "hopflow run (local dispatcher)",
        "hopflow run, max_nodes_per_call=10",
        "foreach 4, concurrency 10: interpreter",
        "foreach 4, concurrency 10: hopflow run",
        "commands per node",
        "hopflow run linear-5.yaml",
        'python -c "import engine.asgi"',
        "first webhook call",
        "hopflow validate",
    ):
        assert row in out, f"missing {row!r} in:\n{out}"
    assert "µs/node" in out and "cmd/n" in out
    assert "answer 200" in out  # the cold webhook call advanced a node


def test_webhook_bench_prints_its_table() -> None:
    peer = importlib.util.find_spec("upstash_workflow") is not None
    proc = run_bench("webhook.py", "--steps", "5", "--quick", *([] if peer else ["--no-peer"]))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "steps/s" in out and "p95 ms" in out
    assert "hopflow (engine.asgi)" in out
    if peer:
        assert "peer (upstash-workflow" in out
        assert "peer, TLS context reused (patched)" in out
        assert "hopflow/peer = " in out and "hopflow/patched peer = " in out


@pytest.mark.slow
def test_coldstart_bench_prints_its_rows_and_the_import_budget() -> None:
    peer = importlib.util.find_spec("upstash_workflow") is not None
    proc = run_bench("coldstart.py", "--quick", *([] if peer else ["--no-peer"]))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "hopflow: first webhook call (POST /v1/step)" in out
    assert "graph cache warm" in out and "graph cache empty" in out
    assert "against the import budget" in out and "total" in out
    if peer:
        assert "upstash-workflow SDK: first step call" in out
        assert "hopflow webhook / SDK step call = " in out


def test_fast_path_bench_prints_its_rows() -> None:
    proc = run_bench("fast_path.py", "--repeat", "1", "--small", "1", "--large", "3")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = proc.stdout
    for row in (
        "floor: two Redis round trips",
        "interpreter in process, `action`",
        "hopflow run marginal, `action`, fast path",
        "hopflow run marginal, `action`, no fast path",
        "hopflow run marginal, `set`, fast path",
    ):
        assert row in out, f"missing {row!r} in:\n{out}"
