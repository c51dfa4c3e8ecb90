"""The built wheel works on its own: installed into a fresh venv outside the repository, its
``hopflow validate`` finds the JSON Schema inside the installed package and checks a workflow that
lives somewhere else entirely."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "dsl", "engine", "schemas")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=_env(), timeout=timeout)
    assert proc.returncode in (0, 1), f"{args}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc


@pytest.mark.slow
def test_the_wheel_validates_workflows_outside_the_repository(tmp_path: Path) -> None:
    # build from a copy, so the checkout is never touched (no build/ or egg-info in it)
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, src / name)
    dist = tmp_path / "dist"
    build = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)], tmp_path
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("hopflow-*.whl")
    import zipfile

    shipped = set(zipfile.ZipFile(wheel).namelist())
    for asset in ("index.html", "app.js", "style.css", "vendor/mermaid.min.js", "vendor/README.md"):
        assert f"engine/web/ui/static/{asset}" in shipped, asset  # the dashboard needs no CDN
    # every engine package and the Lua scripts the store loads from beside itself
    for package in (ROOT / "engine").rglob("__init__.py"):
        if "__pycache__" not in package.parts:
            assert package.relative_to(ROOT).as_posix() in shipped, package
    for script in (ROOT / "engine" / "state" / "lua").glob("*.lua"):
        assert script.relative_to(ROOT).as_posix() in shipped, script

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    install = _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", str(wheel)], tmp_path
    )
    assert install.returncode == 0, install.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy2(ROOT / "workflows" / "dinner-reservation.yaml", elsewhere / "dinner.yaml")
    (elsewhere / "broken.yaml").write_text("name: broken\nsteps:\n  - id: a\n    actoin: x.y\n")

    # the schema the installed code reads is the one shipped inside the wheel
    where = _run(
        [str(python), "-c", "import schemas, dsl; print(schemas.WORKFLOW_SCHEMA); print(dsl.__file__)"],
        elsewhere,
    )
    schema_file, dsl_file = (Path(line) for line in where.stdout.split())
    assert schema_file.is_file() and venv in schema_file.parents
    assert venv in dsl_file.parents and ROOT not in dsl_file.parents

    hopflow = venv / "bin" / "hopflow"
    ok = _run([str(hopflow), "validate", "dinner.yaml"], elsewhere)
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "", "no problems in 1 file\n")

    bad = _run([str(hopflow), "validate", str(elsewhere)], tmp_path)
    assert bad.returncode == 1
    assert "broken.yaml:4:5: error: " in bad.stdout and "[unknown-key]" in bad.stdout
    assert "did you mean 'action'" in bad.stdout
    assert bad.stderr == "1 error, 0 warnings in 2 files\n"

    graph = _run([str(hopflow), "compile", "dinner.yaml"], elsewhere)
    assert graph.returncode == 0 and '"hash": ' in graph.stdout

    # test files: their schema ships in the wheel, and `hopflow test` runs them from it
    tests_schema = _run([str(python), "-c", "import schemas; print(schemas.WORKFLOW_TEST_SCHEMA)"], elsewhere)
    assert venv in Path(tests_schema.stdout.strip()).parents and Path(tests_schema.stdout.strip()).is_file()
    shutil.copy2(ROOT / "workflows" / "dinner-reservation.test.yaml", elsewhere / "dinner.test.yaml")
    (elsewhere / "broken.yaml").unlink()
    tested = _run([str(hopflow), "test", "dinner.test.yaml", "--min-coverage", "100"], elsewhere)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "7 passed" in tested.stdout
    # editors get the shipped schema's path, its content and its stable URL from the installed wheel
    path = _run([str(hopflow), "schema", "--path"], elsewhere)
    assert path.returncode == 0 and venv in Path(path.stdout.strip()).parents
    assert Path(path.stdout.strip()).read_text() == (ROOT / "schemas" / "workflow.schema.json").read_text()
    url = _run([str(hopflow), "schema", "--url"], elsewhere)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert url.stdout.strip() == (
        f"https://raw.githubusercontent.com/hopflow/hopflow/v{version}/schemas/workflow.schema.json"
    )
