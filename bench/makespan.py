"""Benchmark: makespan of cells with known durations on N logical workers, against the ideal.

    python -m bench.makespan                   # 20 cells, 2-48 s each, 4 workers: job order, then longest-first
    python -m bench.makespan --workers 8 --scale 1
    python -m bench.makespan --tiny            # 6 cells of 0-1 s, 2 workers (CI)

The cells are the fault-injection seam (``farm.cell.fault_injection``, ``fault: pass`` with
``build_s``: its "engine build" sleeps that long), listed in the job shortest first, the
worst order for a first-come scheduler. They run through ``farm.runner.driver.run`` on a local Ray
on 127.0.0.1 started with ``num_cpus=N`` (N logical workers, one CPU per cell; sleeping cells
leave the real cores to Ray). Twice, in one store:

1. **job order**: the job's first run, nothing known about its cells;
2. **longest first**: the same job again; the driver orders cells by their run time in the
   job's previous run (``farm.runner.driver.longest_first``).

makespan: from the driver's plan to its last cell done. ideal: max(sum / N, longest) of the
declared durations; the ratio also against the ideal of the cells' measured in-actor times,
which separates the farm's per-cell start cost from the order.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.machine import facts, load  # noqa: E402

DURATIONS = [24, 12, 8, 8, 6, 6, 4, 4, 4, 4, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1]


def job_of(durations: list[float]):  # type: ignore[no-untyped-def]
    from farm.model.spec import parse_job

    variants = [{"quantization": f"c{i:02d}-{d:g}s", "checkpoint": "fault-injection",
                 "engine_args": {"fault": "pass", "build_s": d}} for i, d in enumerate(sorted(durations))]
    return parse_job({"name": "makespan", "models": [{"name": "m", "variants": variants}],
                      "engines": [{"name": "fi", "kind": "fault-injection"}], "probes": ["load", "generate"],
                      "resources": {"num_cpus": 1}, "timeout_s": 600}, origin="bench.makespan")


def ideal(durations: list[float], workers: int) -> float:
    return max(sum(durations) / workers, max(durations))


def one_run(job, store, workers: int, durations: list[float], label: str) -> str:  # type: ignore[no-untyped-def]
    from farm.runner.driver import run

    marks: dict[str, float] = {}

    def events(event) -> None:  # type: ignore[no-untyped-def]
        if event.kind == "plan":
            marks["plan"] = time.perf_counter()
        elif event.kind == "done":
            marks["done"] = time.perf_counter()

    before = load()
    started = time.perf_counter()
    outcome = run(job, store=store, events=events)
    whole = time.perf_counter() - started
    assert outcome.counts == {"pass": len(durations)}, outcome.counts
    makespan = marks["done"] - marks["plan"]
    measured = [r.timings["total"] for r in outcome.results]
    line = (f"| makespan, {label} | {len(durations)} cells on {workers} workers: {makespan:.1f} s; ideal "
            f"{ideal(durations, workers):.1f} s → **{makespan / ideal(durations, workers):.2f}**; against the "
            f"cells' measured times {makespan / ideal(measured, workers):.2f}; whole run() {whole:.1f} s | {before} |")
    print(line, flush=True)
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=4, help="logical workers (Ray num_cpus), one cell each")
    parser.add_argument("--scale", type=float, default=2.0, help="multiplies the durations (default 2: 2-48 s)")
    parser.add_argument("--tiny", action="store_true", help="6 cells of 0-1 s on 2 workers (CI)")
    args = parser.parse_args(argv)
    durations = [0, 0, 0, 0.5, 0.5, 1] if args.tiny else [d * args.scale for d in DURATIONS]
    workers = 2 if args.tiny else args.workers
    print(facts())
    with tempfile.TemporaryDirectory(prefix="farm-bench-makespan-") as work:
        os.environ["FARM_HOME"] = str(Path(work) / "home")  # Ray's workers inherit it
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only
        import ray

        from farm.store import LocalStore

        ray.init(address="local", num_cpus=workers, _node_ip_address="127.0.0.1", include_dashboard=False,
                 log_to_driver=False)
        try:
            store = LocalStore(Path(work) / "store")
            job = job_of(durations)
            one_run(job, store, workers, durations, "job order (shortest first)")
            one_run(job, store, workers, durations, "longest first (previous run's times)")
        finally:
            ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
