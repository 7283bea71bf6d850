"""`farm run --store s3://…` as a Ray job: submitted to a real Ray head on 127.0.0.1, writing to moto's S3.

The job's driver writes every result (actors return them); the workers never see the
store. The job's own runtime_env sets FARM_HOME, as a cluster user would, which Ray
would refuse to merge with the driver's if the farm set it again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from farm.store import open_store, read_manifest

from .s3_servers import ACCESS_KEY, BUCKET, SECRET_KEY, free_port
from .test_store_runs import fault_job

pytestmark = pytest.mark.slow


@pytest.fixture
def ray_head(tmp_path, monkeypatch):
    """A Ray head node with a dashboard (the job server), every port on 127.0.0.1 chosen free."""
    # Token auth would need a token file in ~/.ray; a loopback-only test cluster has no use for it.
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    dashboard = free_port()
    temp = tempfile.mkdtemp(prefix="farm-ray-")  # Ray's unix sockets live here: pytest's paths are too long
    ports = {"port": free_port(), "dashboard-port": dashboard, "ray-client-server-port": free_port(),
             "dashboard-agent-listen-port": free_port(), "dashboard-agent-grpc-port": free_port(),
             "runtime-env-agent-port": free_port(), "metrics-export-port": free_port(),
             "node-manager-port": free_port(), "object-manager-port": free_port()}
    command = [os.path.join(os.path.dirname(sys.executable), "ray"), "start", "--head", "--block",
               "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
               "--num-cpus=2", "--disable-usage-stats", f"--temp-dir={temp}",
               *(f"--{name}={port}" for name, port in ports.items())]
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "FARM_HOME": str(tmp_path / "home")}
    with open(tmp_path / "head.log", "wb") as log:
        head = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{dashboard}", head, tmp_path / "head.log"
    finally:
        head.terminate()  # `ray start --block` stops the processes of its node on SIGTERM
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # stragglers of the node: all in the head's own group
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def _client(ray_head, timeout: float = 120):  # type: ignore[no-untyped-def]
    from ray.job_submission import JobSubmissionClient

    address, head, log = ray_head
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
