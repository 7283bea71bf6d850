"""Benchmark: 10 000 cells of an instant engine through the real driver and a local store.

    python -m bench.scale                      # 10 000 cells, driver with the in-process Ray stand-in
    python -m bench.scale --cells 2000 --profile 30   # and the 30 costliest functions (cProfile)
    python -m bench.scale --ray --cells 40     # the same job on a real local Ray: one actor process per cell
    python -m bench.scale --tiny               # 50 cells in-process, 4 on Ray (CI)

The engine is the fault-injection seam (``farm.cell.fault_injection``, ``fault: pass``: no
vLLM, answers at once), so what is measured is the farm itself. Two paths:

- **in-process** (default): ``farm.runner.driver.run`` (expansion, manifest, scheduling loop,
  spool + store writes, progress, aggregation with matrix, exports and page), with Ray
  replaced by ``bench.inprocess_ray`` (a BENCHMARK SEAM): the driver's own cost per cell.
- **--ray**: the same through a real local Ray on 127.0.0.1, an actor process per cell,
  as ``farm run`` does: Ray's per-cell process start and teardown come on top.

Each runs in a fresh process; reported: cells per second (the whole ``run()``, from the
job to the page) and that process's peak resident memory (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.machine import facts, load, peak_rss_mb  # noqa: E402

PER_MODEL = 100


def job_of(cells: int, build_s: float = 0.0):  # type: ignore[no-untyped-def]
    """A job of ``cells`` fault-injection cells: models of up to 100 variants, one engine, no LoRA."""
    from farm.model.spec import parse_job

    models = []
    for m in range((cells + PER_MODEL - 1) // PER_MODEL):
        variants = [{"quantization": f"q{i}", "checkpoint": "fault-injection",
                     "engine_args": {"fault": "pass", "build_s": build_s}}
                    for i in range(min(PER_MODEL, cells - m * PER_MODEL))]
        models.append({"name": f"m{m}", "variants": variants})
    return parse_job({"name": "scale", "models": models, "engines": [{"name": "fi", "kind": "fault-injection"}],
                      "probes": ["load", "generate"], "resources": {"num_cpus": 1}, "timeout_s": 60},
                     origin="bench.scale")


def child(cells: int, real_ray: bool, cpus: int, profile: int) -> None:
    import farm.runner.driver
    from bench.inprocess_ray import InProcessRay
    from farm.store import LocalStore

    work = Path(tempfile.mkdtemp(prefix="farm-bench-scale-"))
    os.environ["FARM_HOME"] = str(work / "home")
    if real_ray:
        import ray

        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only
        ray.init(address="local", num_cpus=cpus, _node_ip_address="127.0.0.1", include_dashboard=False,
                 log_to_driver=False)
    else:
        farm.runner.driver.connect = lambda address=None: InProcessRay(cpus)  # type: ignore[assignment]
    job = job_of(cells)
    store = LocalStore(work / "store")
    started = time.perf_counter()
    if profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        outcome = profiler.runcall(farm.runner.driver.run, job, store=store)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(profile)
    else:
        outcome = farm.runner.driver.run(job, store=store)
    seconds = time.perf_counter() - started
    assert outcome.counts == {"pass": cells}, outcome.counts
    if real_ray:
        ray.shutdown()
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"seconds": seconds, "peak_mb": peak_rss_mb()}))


def measure(cells: int, real_ray: bool, cpus: int, profile: int) -> str:
    before = load()
    args = [sys.executable, "-m", "bench.scale", "--child", "--cells", str(cells), "--cpus", str(cpus),
            "--profile", str(profile)] + (["--ray"] if real_ray else [])
    done = subprocess.run(args, cwd=REPO, stdout=subprocess.PIPE, text=True, check=True)
    got = json.loads(done.stdout.strip().splitlines()[-1])
    path = f"real local Ray, {cpus} CPUs" if real_ray else "in-process Ray stand-in"
    line = (f"| scale, {path} | {cells} cells in {got['seconds']:.1f} s: {cells / got['seconds']:.1f} cells/s; "
            f"driver peak RSS {got['peak_mb']:.0f} MB | {before} |")
    print(line, flush=True)
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--ray", action="store_true", help="a real local Ray: an actor process per cell")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="logical CPUs (one cell each)")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print the N costliest functions")
    parser.add_argument("--tiny", action="store_true", help="50 cells in-process and 4 on a real Ray (CI)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.cells, args.ray, args.cpus, args.profile)
        return 0
    print(facts())
    if args.tiny:
        measure(50, False, args.cpus, 0)
        measure(4, True, args.cpus, 0)
    else:
        measure(args.cells, args.ray, args.cpus, args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
