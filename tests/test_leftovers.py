"""A local driver killed with SIGKILL leaves its Ray's agents and a worker behind; the next local run on the
machine kills them, found by their open files in that Ray's session, never by name."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from farm.runner.leftovers import _holding

from .test_faults import slow_job

pytestmark = pytest.mark.slow


def test_the_next_local_run_kills_what_a_killed_drivers_ray_left(tmp_path):
    (tmp_path / "job.yaml").write_text(slow_job(2, 30))
    env = {**os.environ, "FARM_HOME": str(tmp_path / "home"), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    driver = subprocess.Popen([sys.executable, "-m", "farm", "run", "job.yaml", "--store", "results", "--run-id", "k1"],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = tmp_path / "home" / "local-ray"
    deadline = time.monotonic() + 120
    while not (list(records.glob("*.json")) and list((tmp_path / "home" / "cell-logs").glob("k1/*.log"))):
        assert time.monotonic() < deadline and driver.poll() is None, "the run did not start"
        time.sleep(0.2)
    session = json.loads(next(records.glob("*.json")).read_text())["session_dir"]
    driver.send_signal(signal.SIGKILL)  # only the driver: its Ray's processes are on their own now
    driver.wait(timeout=30)
    time.sleep(2)
    left = _holding(session)
    assert left, "a killed driver's Ray leaves processes behind (else this test tests nothing)"

    resumed = subprocess.run([sys.executable, "-m", "farm", "run", "--resume", "k1", "--store", "results"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "process(es) a local Ray of an earlier run left when its driver died" in resumed.stderr
    assert _holding(session) == [] and not any(os.path.exists(f"/proc/{pid}") for pid in left)
    assert list(records.glob("*.json")) == [], "a driver that ended normally leaves no record"
