"""`farm run --store s3://…` as a Ray job: submitted to a real Ray head on 127.0.0.1, writing to moto's S3.

The job's driver writes every result (actors return them); the workers never see the
store. The job's own runtime_env sets FARM_HOME, as a cluster user would, which Ray
would refuse to merge with the driver's if the farm set it again.
"""

from __future__ import annotations

import sys
import time

import pytest

from farm.store import open_store, read_manifest

from .s3_servers import ACCESS_KEY, BUCKET, SECRET_KEY
from .test_store_runs import fault_job

pytestmark = pytest.mark.slow


def _client(ray_head, timeout: float = 120):  # type: ignore[no-untyped-def]
    from ray.job_submission import JobSubmissionClient

    address, head, log, _ = ray_head
    deadline = time.monotonic() + timeout
    while True:
        assert head.poll() is None, f"the Ray head exited: {log.read_text()[-2000:]}"
        try:
            return JobSubmissionClient(address)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_farm_run_as_a_ray_job_writes_results_to_s3(ray_head, moto_server, tmp_path):
    """The cells see the job's env vars and working dir (the fault-injection engine fails otherwise)."""
    from ray.job_submission import JobStatus

    workdir = tmp_path / "job"
    workdir.mkdir()
    expect = "expect_env: {FARM_JOB_MARKER: travelled}, expect_files: [job.yaml, data/prompts.txt], "
    (workdir / "job.yaml").write_text(fault_job("rayjob").replace("engine_args: {", "engine_args: {" + expect))
    (workdir / "data").mkdir()
    (workdir / "data" / "prompts.txt").write_text("a file of the working dir\n")
    client = _client(ray_head)
    entrypoint = (f"{sys.executable} -m farm run job.yaml --store s3://{BUCKET}/rayjob "
                  f"--s3-endpoint {moto_server.endpoint} --run-id rj")
    runtime_env = {"working_dir": str(workdir),
                   "env_vars": {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                                "FARM_HOME": str(tmp_path / "job-home"), "FARM_JOB_MARKER": "travelled"}}
    deadline = time.monotonic() + 120
    while True:  # the head's job agent registers a few seconds after the dashboard answers
        try:
            job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
            break
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1)
    deadline = time.monotonic() + 400
    while (status := client.get_job_status(job_id)) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        assert time.monotonic() < deadline, client.get_job_logs(job_id)[-3000:]
        time.sleep(1)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert "page:   s3://farm-test/rayjob/index.html" in logs
    store = open_store(f"s3://{BUCKET}/rayjob", s3_endpoint=moto_server.endpoint)
    assert len(store.list("runs/rj/cells/")) == 3
    manifest = read_manifest(store, "rj")
    assert manifest.finished_at and manifest.counts == {"pass": 3}
    assert store.exists("matrix/rj.json") and store.exists("exports/parquet/rj.parquet")


def test_farm_run_joins_a_ray_on_loopback_by_its_127_address(ray_head, tmp_path):
    """Given 127.0.0.1:PORT, ray.init would rewrite it to the machine's other address, where a Ray started
    with --node-ip-address=127.0.0.1 does not listen: the farm keeps it on loopback (README, bench.cell_overhead)."""
    import os
    import subprocess

    _client(ray_head)  # the head is up
    gcs = ray_head[3]
    (tmp_path / "job.yaml").write_text(fault_job("joined", cells=2))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
    env["FARM_HOME"] = str(tmp_path / "home")
    done = subprocess.run([sys.executable, "-m", "farm", "run", "job.yaml", "--store", "results", "--run-id", "joined",
                           "--address", gcs], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert read_manifest(open_store(str(tmp_path / "results")), "joined").counts == {"pass": 2}


@pytest.mark.parametrize(("address", "loopback"), [
    ("127.0.0.1:6379", True), ("localhost:6379", True), ("ray://127.0.0.1:10001", True), ("[::1]:6379", True),
    ("10.0.0.5:6379", False), ("head.example:6379", False), ("auto", False), ("ray://head:10001", False),
])
def test_which_addresses_are_loopback(address: str, loopback: bool) -> None:
    from farm.runner.connect import _is_loopback

    assert _is_loopback(address) is loopback


def test_only_a_ray_listening_on_loopback_alone_gets_loopback_mode(tmp_path):
    """The farm keeps Ray's rewrite of 127.0.0.1 for a head that also listens on the machine's address (its other
    nodes must reach the driver there); here only loopback listeners can be made, so that side is the refusal."""
    import socket

    from farm.runner.connect import _loopback_only

    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert _loopback_only(f"127.0.0.1:{port}")
        assert _loopback_only(f"localhost:{port}")
        assert not _loopback_only(f"10.0.0.5:{port}")  # not this machine's loopback: never
    assert not _loopback_only(f"127.0.0.1:{port}")  # nothing listens: ray.init reports it
