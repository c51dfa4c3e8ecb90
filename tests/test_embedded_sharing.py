"""Several ``hopflow`` commands sharing one embedded Redis (one ``.hopflow/``) at the same time.

The last command to leave shuts the server down; a command attaching while another is leaving must
never find it gone ("Redis is unreachable"). Found by running the examples side by side.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"
HANG_GUARD_S = 120  # only stops a broken command from hanging the suite; nothing is timed


def run_once(cwd: Path) -> tuple[int, str, str]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "run",
            str(WORKFLOWS / "send-welcome.yaml"),
            "--input",
            f"@{WORKFLOWS / 'send-welcome.input.json'}",
            "--actions",
            str(WORKFLOWS / "demo.py"),
            "--fast-forward",
            "--json",
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.slow
def test_commands_started_and_ending_together_share_the_embedded_redis(tmp_path: Path) -> None:
    results = []
    with ThreadPoolExecutor(3) as pool:
        for _ in range(5):  # rounds of three commands that start, and mostly end, together
            results += list(pool.map(run_once, [tmp_path] * 3))
    for code, out, err in results:
        assert code == 0, err
        assert json.loads(out)["status"] == "succeeded"
        assert "unreachable" not in err
