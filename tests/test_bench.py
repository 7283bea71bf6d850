"""The benchmarks in bench/ run: each script once at its ``--tiny`` size (numbers are not checked).

Benchmarks are not tests; this only keeps them from rotting. Each runs as its README
command does, in a fresh process, with this checkout's farm first on the path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("script", ["env_cache", "aggregation", "scale", "makespan", "cell_overhead"])
def test_bench_runs_tiny(script: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "FARM_HOME": str(tmp_path / "home"), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-m", f"bench.{script}", "--tiny"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert rows, done.stdout  # each prints its result as a row of bench/RESULTS.md's table
    assert "load " in done.stdout  # next to the machine's load


def test_gpu_bench_packs_the_smoke_job_into_a_job_the_farm_accepts() -> None:
    # bench/gpu.py runs on a GPU machine only; what it hands `farm run` is checked here.
    import yaml

    from bench.gpu import packed, warm_job
    from farm.model.spec import JobSpec

    job = yaml.safe_load((REPO / "jobs" / "gpu_smoke.yaml").read_text())
    assert job["engine_args"]["gpu_memory_utilization"] > 0.0625  # kept, the share would be refused
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        JobSpec.model_validate({**job, "resources": {**job["resources"], "num_gpus": 0.0625}})
    dense = JobSpec.model_validate(packed(job, 0.0625, num_cpus=1))
    assert (dense.resources.num_gpus, dense.resources.num_cpus) == (0.0625, 1)
    assert "gpu_memory_utilization" not in dense.engine_args
    assert JobSpec.model_validate(packed(job, 0.125)).resources.num_cpus == job["resources"]["num_cpus"]
    assert job["resources"]["num_gpus"] == 1  # the job itself is left as it was, for the one-at-a-time run
    warm = JobSpec.model_validate(warm_job(job, 0.0625, num_cpus=1))  # every cell once, packed alike, no probes' work
    assert warm.probes == ["load", "generate"] and warm.name != dense.name
    assert (warm.resources, warm.models, warm.engines) == (dense.resources, dense.models, dense.engines)
