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
