"""bench/load.py still runs: ``--quick`` (tiny numbers) on one Redis and on a 3-master cluster with
1 and 2 real ``hopflow serve`` workers, delivering in-process and over HTTP, every execution
finishing, and its report written. Nothing about time is asserted; the histogram arithmetic it
reports is checked on its own."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_load", ROOT / "bench" / "load.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_load_bench_quick_runs_both_topologies_and_writes_its_report(tmp_path: Path) -> None:
    from cluster import redis_server_binary

    if redis_server_binary() is None:
        pytest.skip("no cluster-capable redis-server here")
    out = tmp_path / "LOAD.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOPFLOW_", "QSTASH_", "REDIS_"))}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "load.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,  # a hang guard, not a performance check
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith(("| single", "| cluster"))]
    setups = [
        (setup, count) for setup in ("single", "cluster", "single+http", "cluster+http") for count in "12"
    ]
    assert [tuple(c.strip() for c in r.split("|")[1:3]) for r in rows] == setups
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[3]) > 0, row  # nodes/s measured
        assert float(cells[7]) > 0, row  # Redis commands per node counted
        assert cells[11] == "0", row  # no failed start, no unfinished execution
    assert "## Where it saturates" not in proc.stdout  # printed as bullets; the heading is the report's
    report = out.read_text()
    assert "# Load:" in report and "Load average before" in report and "## Where it saturates" in report
    assert report.count("| single |") >= 2 and report.count("| cluster+http |") >= 2


def test_histogram_quantile_interpolates_inside_a_bucket() -> None:
    load = load_module()
    buckets = [(0.005, 50.0), (0.01, 90.0), (0.025, 100.0), (float("inf"), 100.0)]
    assert load.histogram_quantile(buckets, 0.5) == pytest.approx(0.005)
    assert load.histogram_quantile(buckets, 0.7) == pytest.approx(0.0075)
    assert load.histogram_quantile(buckets, 0.99) == pytest.approx(0.0235)
    assert load.histogram_quantile([], 0.5) != load.histogram_quantile([], 0.5)  # NaN: nothing observed


def test_the_driver_refuses_anything_but_loopback() -> None:
    load = load_module()
    with pytest.raises(SystemExit, match="loopback"):
        load.drive_main(["--urls", "http://10.0.0.1:8000", "--executions", "1", "--prefix", "x"])
