"""``hopflow run``'s marginal cost per node as a ratio to the floor of two Redis round trips.

    python bench/fast_path.py [--repeat 7] [--small 10] [--large 300] [--kind action,set]

Each repetition measures, interleaved (so a burst of load on a shared machine hits every row alike):

* the floor: two ``PING`` round trips on the runtime's own connection (median of 200 pairs);
* the interpreter in process (``Runtime.advance`` fed from an in-memory queue), per node at N=large;
* ``hopflow run`` as ``engine.embedded.embedded_runtime`` wires it (local dispatcher, delivery in
  process) with the in-process chain fast path on (the default) and off
  (``LocalDispatcher(fast_path=False)``): the marginal cost per node, (T(large) - T(small)) / (large -
  small), so the fixed cost of a run (start, the first lease, the end) is left out.

Steps are ``action`` steps returning a 10 KB output, and ``set`` steps writing one, as in
``bench/results.py``. Medians with min and max; the ratios to the floor of the same repetition are
what to read (the absolute figures move with the machine's load). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if sys.path[:1] != [str(ROOT)]:  # first, before bench/ itself (bench/engine.py is not the engine)
    sys.path.insert(0, str(ROOT))

BLOB = "x" * 10_240
FINAL = {"succeeded", "failed", "compensated", "compensation_failed", "cancelled", "dead"}


def workflow_yaml(kind: str, name: str, steps: int) -> str:
    if kind == "action":
        body = "\n".join(f"  - id: a{i}\n    action: bench.blob" for i in range(steps))
    else:
        body = "\n".join(f"  - id: s{i}\n    set: {{blob: '{BLOB}'}}" for i in range(steps))
    return f"name: {name}\nsteps:\n{body}\n"


class MemoryQueue:
    """A dispatcher that keeps messages in a list: the interpreter without the Redis queue."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def publish(self, outgoing: Any) -> None:
        self.items.extend(outgoing)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--small", type=int, default=10)
    parser.add_argument("--large", type=int, default=300)
    parser.add_argument("--kind", default="action,set", help="step kinds to measure (action,set)")
    parser.add_argument("--profile", help="write a cProfile of the fast-path `action` runs to this file")
    args = parser.parse_args()
    kinds = [k for k in args.kind.split(",") if k in ("action", "set")]
    small, large = args.small, args.large
    if not kinds or args.repeat < 1 or not 1 <= small < large:
        parser.error("--kind action|set, --repeat ≥ 1, 1 ≤ --small < --large")

    from engine.actions import REGISTRY
    from engine.catalog import Catalog
    from engine.embedded import embedded_runtime, stop_embedded
    from engine.runtime import Runtime
    from engine.state.store import Store

    if "bench.blob" not in REGISTRY:
        REGISTRY.register("bench.blob", lambda ctx: {"blob": BLOB})
    tmp = Path(tempfile.mkdtemp(prefix="hopflow-bench-fastpath-"))
    os.environ.pop("REDIS_URL", None)
    texts = [workflow_yaml(k, f"{k}-{n}", n) for k in kinds for n in (small, large)]
    catalog = Catalog.from_texts(texts)
    profile = None
    if args.profile:
        import cProfile

        profile = cProfile.Profile()
    try:
        fast_rt, fast = embedded_runtime(catalog, directory=tmp / ".hopflow")
        slow_rt, slow = embedded_runtime(catalog, directory=tmp / ".hopflow")
        slow.fast_path = False
        memory = MemoryQueue()
        mem_rt = Runtime(Store(fast_rt.store.client), memory, catalog, actions=REGISTRY)
        client = fast_rt.store.client

        def run_ms(runtime: Any, dispatcher: Any, workflow: str, prof: Any = None) -> float:
            start = time.perf_counter()
            if prof is not None:
                prof.enable()
            eid = runtime.start(workflow, {})
            dispatcher.run_until(lambda: runtime.store.status(eid) in FINAL, timeout_s=600)
            if prof is not None:
                prof.disable()
            elapsed = (time.perf_counter() - start) * 1000
            if runtime.store.status(eid) != "succeeded":
                raise SystemExit(f"{workflow}: {eid} ended {runtime.store.status(eid)}")
            return elapsed

        def memory_us(workflow: str, n: int) -> float:
            start = time.perf_counter()
            mem_rt.start(workflow, {})
            while memory.items:
                mem_rt.advance(memory.items.pop(0).message)
            return (time.perf_counter() - start) * 1e6 / n

        def floor_us() -> float:
            samples = []
            for _ in range(200):
                start = time.perf_counter()
                client.ping()
                client.ping()
                samples.append((time.perf_counter() - start) * 1e6)
            return statistics.median(samples)

        def marginal_us(runtime: Any, dispatcher: Any, kind: str, prof: Any = None) -> float:
            big = run_ms(runtime, dispatcher, f"{kind}-{large}", prof)
            little = run_ms(runtime, dispatcher, f"{kind}-{small}")
            return (big - little) * 1000 / (large - small)

        rows: dict[str, list[float]] = {}
        ratios: dict[str, list[float]] = {}
        for kind in kinds:  # warm-up: scripts loaded, threads started
            run_ms(fast_rt, fast, f"{kind}-{small}")
            run_ms(slow_rt, slow, f"{kind}-{small}")
        for rep in range(args.repeat):
            floor = floor_us()
            rows.setdefault("floor: two Redis round trips (2x PING), µs", []).append(floor)
            for kind in kinds:
                samples = {
                    f"interpreter in process, `{kind}`, µs/node": memory_us(f"{kind}-{large}", large),
                    f"hopflow run marginal, `{kind}`, fast path, µs/node": marginal_us(
                        fast_rt, fast, kind, profile if kind == "action" else None
                    ),
                    f"hopflow run marginal, `{kind}`, no fast path, µs/node": marginal_us(
                        slow_rt, slow, kind
                    ),
                }
                for label, value in samples.items():
                    rows.setdefault(label, []).append(value)
                    ratios.setdefault(label, []).append(value / floor)
            print(f"repetition {rep + 1}/{args.repeat} done", file=sys.stderr, flush=True)
    finally:
        stop_embedded(tmp / ".hopflow")
    print(f"{args.repeat} interleaved repetitions, N={small} and N={large}; load {os.getloadavg()}")
    print(f"{'row':<56} {'median':>9} {'min':>9} {'max':>9} {'/floor':>7}")
    for label, values in rows.items():
        ratio = f"{statistics.median(ratios[label]):7.2f}x" if label in ratios else ""
        print(f"{label:<56} {statistics.median(values):9.1f} {min(values):9.1f} {max(values):9.1f} {ratio}")
    if profile is not None:
        profile.dump_stats(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
