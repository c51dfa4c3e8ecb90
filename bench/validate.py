"""How fast is ``hopflow validate`` next to a plain JSON Schema check of the same files?

Generates N realistic workflows (~40 steps each, nested parallel/foreach, switches, catches,
compensations, templates) into a temporary folder, then times, as separate processes on the same
files, best of a few repetitions:

* ``hopflow validate --jobs 1 DIR`` and ``hopflow validate DIR`` (one worker per CPU) — load with
  positions, schema, compile, every static check;
* ``check-jsonschema --schemafile schemas/workflow.schema.json FILES...`` — the schema only.

Prints files/second for both and the ratio. ``--profile`` also profiles the in-process pipeline
(cProfile, top functions by cumulative and own time).

    python bench/validate.py [--files 500] [--steps 40] [--repeat 3] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import pstats
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _strategies():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "hopflow_bench_strategies", ROOT / "tests" / "strategies.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def generate(folder: Path, files: int, steps: int, seed: int = 1) -> list[Path]:
    strategies = _strategies()
    rng = random.Random(seed)
    paths = []
    for i in range(files):
        path = folder / f"wf{i:04}.yaml"
        text = "# yaml-language-server: $schema=../schemas/workflow.schema.json\n"
        text += strategies.to_yaml(strategies.generate(rng, steps=steps))
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    for name in strategies.CHILD_WORKFLOWS:  # what the generated files call, so the folder is valid
        path = folder / f"child-{name}.yaml"
        path.write_text(strategies.child_workflow(name), encoding="utf-8")
        paths.append(path)
    return paths


def best_of(command: list[str], repeat: int) -> tuple[float, int]:
    times = []
    code = 0
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        code = proc.returncode
        if code not in (0,):
            print(f"  ! {command[0]} exited {code}: {(proc.stderr or proc.stdout)[-500:]}", file=sys.stderr)
    return min(times), code


def profile(paths: list[Path]) -> None:
    from dsl.validate import validate_path

    profiler = cProfile.Profile()
    profiler.enable()
    for path in paths:
        validate_path(path)
    profiler.disable()
    for key in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(key).print_stats(25)
        print(f"\n--- in-process pipeline, top 25 by {key} ---")
        print("\n".join(out.getvalue().splitlines()[:45]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    bindir = Path(sys.executable).parent
    hopflow = shutil.which("hopflow", path=str(bindir)) or shutil.which("hopflow")
    checker = shutil.which("check-jsonschema", path=str(bindir)) or shutil.which("check-jsonschema")
    if hopflow is None or checker is None:
        print("needs `hopflow` and `check-jsonschema` on PATH (pip install -e '.[dev]')", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="hopflow-bench-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        paths = generate(folder, args.files, args.steps)
        total_bytes = sum(p.stat().st_size for p in paths)
        print(
            f"generated {len(paths)} workflows ({total_bytes / len(paths) / 1024:.1f} KiB each on average) "
            f"in {time.perf_counter() - start:.1f}s"
        )
        schema = ROOT / "schemas" / "workflow.schema.json"
        single, single_code = best_of([hopflow, "validate", "--jobs", "1", str(folder)], args.repeat)
        ours, ours_code = best_of([hopflow, "validate", str(folder)], args.repeat)
        theirs, theirs_code = best_of([checker, "--schemafile", str(schema), *map(str, paths)], args.repeat)
        n = len(paths)
        print(
            f"hopflow validate --jobs 1 DIR  {single:7.2f} s  {n / single:8.1f} files/s  (exit {single_code})"
        )
        print(
            f"hopflow validate DIR           {ours:7.2f} s  {n / ours:8.1f} files/s  "
            f"(exit {ours_code}, jobs=auto)"
        )
        print(
            f"check-jsonschema FILES...      {theirs:7.2f} s  {n / theirs:8.1f} files/s  (exit {theirs_code})"
        )
        print(
            f"ratio vs check-jsonschema: {theirs / single:.2f}x in one process, "
            f"{theirs / ours:.2f}x with the default workers "
            "(hopflow also compiles and runs every static check)"
        )
        if args.profile:
            profile(paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
