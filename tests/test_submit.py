"""`farm submit`: the real command against a real Ray head on 127.0.0.1, results read back from S3 (moto).

The job is the fault-injection seam's (each cell passes in about a second): this is about
the way from a laptop to the cluster and back, not about vLLM. The second submission
follows the job to its end and posts the run's diff to a chat webhook on 127.0.0.1.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import pytest

from farm.store import open_store, read_manifest

from .s3_servers import BUCKET
from .test_store_runs import fault_job
from .webhook_server import WebhookServer


def _wait_for_job_server(address: str, head, log, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    from ray.job_submission import JobSubmissionClient

    deadline = time.monotonic() + timeout
    while True:
        assert head.poll() is None, f"the Ray head exited: {log.read_text()[-2000:]}"
        try:
            JobSubmissionClient(address).list_jobs()
            return
        except Exception:
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(1)


@pytest.fixture
def planted_secret(monkeypatch) -> str:
    """The store's secret key, made up for this test, in the environment the Ray head starts from: it stands in
    for a node's own credentials (an instance role), and must reach no file, log or job record."""
    secret = "planted" + secrets.token_hex(16)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)  # moto takes any key
    return secret


@pytest.mark.slow
def test_submit_runs_the_job_on_the_cluster_and_the_results_reach_the_store(
    planted_secret, ray_head, moto_server, farm_cli, tmp_path, capsys
):
    import sys

    address, head, log, _ = ray_head
    _wait_for_job_server(address, head, log)
    workdir = tmp_path / "laptop"
    workdir.mkdir()
    (workdir / "jobs").mkdir()
    (workdir / "jobs" / "sub.yaml").write_text(fault_job("sub"))
    url = f"s3://{BUCKET}/submit"
    common = ["--address", address, "--store", url, "--s3-endpoint", moto_server.endpoint,
              "--working-dir", str(workdir), "--python", sys.executable,
              # The store's credentials are the head's own (its environment here, an instance role on a real
              # cluster): nothing secret travels in the job's env.
              "--env", f"FARM_HOME={tmp_path / 'job-home'}",
              "--runtime-env-json", json.dumps({"env_vars": {"AWS_DEFAULT_REGION": "us-east-1"}})]
    store = open_store(url, s3_endpoint=moto_server.endpoint)

    started = time.monotonic()
    code, out, err = farm_cli("submit", str(workdir / "jobs" / "sub.yaml"), *common, "--run-id", "night-1", timeout=120)
    submitted = time.monotonic() - started
    assert code == 0, err[-3000:]
    assert out.splitlines()[:4] == [
        f"submitted run night-1 of job sub to {address}",
        "  ray job id: night-1",
        f"  store:      {url}",
        f"  follow:     ray job logs -f night-1 --address {address}",
    ]
    assert f"  status:     farm status night-1 --store {url} --s3-endpoint {moto_server.endpoint}" in out
    deadline = time.monotonic() + 400
    while not store.exists("runs/night-1/diff.json"):  # written last, after the results, the manifest and the matrix
        assert time.monotonic() < deadline, _job_logs(address, "night-1")
        time.sleep(0.5)
    round_trip = time.monotonic() - started
    manifest = read_manifest(store, "night-1")
    assert manifest.finished_at and manifest.counts == {"pass": 3}
    assert len(store.list("runs/night-1/cells/")) == 3 and store.exists("matrix/night-1.json")
    logs = _job_logs(address, "night-1")
    assert "farm sub: run night-1: the job's first run in this store; nothing to compare" in logs
    with capsys.disabled():
        print(f"\nsubmit round trip: farm submit returned in {submitted:.1f}s; results and diff readable in the store "
              f"{round_trip:.1f}s after the submit started")

    # The next night: followed to its end, its diff posted to a chat webhook.
    with WebhookServer() as hook:
        code, out, err = farm_cli("submit", str(workdir / "jobs" / "sub.yaml"), *common, "--run-id", "night-2",
                                  "--wait", "--webhook", hook.url, timeout=400)
        assert code == 0, out[-3000:] + err[-3000:]
        assert "following night-2" in out and "ray job night-2: SUCCEEDED, exit code 0" in out
        assert ("farm sub: run night-2 against night-1: 0 regression(s), 0 fix(es), 0 other change(s), 0 added, "
                "0 removed, 3 unchanged") in out
        assert "posted the diff to the webhook" in out
        assert len(hook.posts) == 1
        text = hook.posts[0]["json"]["text"]
        assert text.startswith("farm sub: run night-2 against night-1") and f"page: {url}/index.html" in text
    assert json.loads(store.get("runs/night-2/diff.json"))["previous_run"] == "night-1"
    assert hook.url not in out, "the webhook URL (a secret) is not printed"

    code, _, err = farm_cli("submit", str(workdir / "jobs" / "sub.yaml"), *common, "--run-id", "night-2")
    assert code == 1 and err == f"farm: error: a Ray job 'night-2' already exists on {address}; give another --run-id\n"
    _assert_secret_nowhere(planted_secret, store, address, tmp_path)


def _assert_secret_nowhere(secret: str, store, address: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Every store object, every file the run left (spool, cell logs, the head's home), Ray's session logs and
    `ray job list`: none holds the secret the head's processes had in their environment."""
    import glob
    import os
    import subprocess
    import sys

    found = [key for key in store.list("") if secret.encode() in store.get(key)]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    ray_logs = [p for root in glob.glob("/tmp/farm-ray-*/session_latest/logs") for p in Path(root).rglob("*") if p.is_file()]
    found += [str(p) for p in files + ray_logs if secret.encode() in p.read_bytes()]
    jobs = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ray"), "job", "list", "--address", address],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert jobs.returncode == 0 and "night-2" in jobs.stdout, jobs.stderr[-2000:]
    cell_logs = [p for p in files if "cell-logs" in p.parts]
    assert len(store.list("")) > 10 and len(cell_logs) == 6 and len(ray_logs) > 5, "the search had something to search"
    assert found == [] and secret not in jobs.stdout, found


def _job_logs(address: str, job_id: str) -> str:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address).get_job_logs(job_id)[-4000:]


def test_what_looks_like_a_secret():
    from farm.ops.submit import secret_like

    secrets_ = [("AWS_SECRET_ACCESS_KEY", "x"), ("HF_TOKEN", "x"), ("DB_PASSWORD", "x"), ("OPENAI_API_KEY", "x"),
                ("K", "AKIAIOSFODNN7EXAMPLE"), ("K", "hf_" + "a" * 34), ("K", "ghp_" + "a" * 36), ("K", "xoxb-123-abc-defgh"),
                ("K", "-----BEGIN OPENSSH PRIVATE KEY-----\n...")]
    plain = [("AWS_ENDPOINT_URL", "http://minio:9000"), ("AWS_DEFAULT_REGION", "us-east-1"), ("FARM_HOME", "/opt/farm"),
             ("HF_HOME", "/opt/farm/hf"), ("VLLM_CPU_KVCACHE_SPACE", "1"), ("KEYBOARD", "us")]
    assert [pair for pair in secrets_ if not secret_like(*pair)] == []
    assert [pair for pair in plain if secret_like(*pair)] == []


@pytest.mark.parametrize(("args", "message"), [
    (["--store", "s3://b/p"], "farm: error: give the cluster with --address http://HEAD:8265"),
    (["--address", "head:6379", "--store", "s3://b/p"],
     "farm: error: --address 'head:6379': jobs are submitted to the head's dashboard, an http URL such as http://head:8265"),
    (["--address", "http://127.0.0.1:1"], "farm: error: give --store s3://BUCKET/PREFIX"),
    (["--address", "http://127.0.0.1:1", "--store", "results"],
     "farm: error: --store 'results' is a relative path: on the head it would land in the job's temporary working dir"),
    (["--address", "http://127.0.0.1:1", "--store", "s3://b/p", "--runtime-env-json", "{env_vars"],
     "farm: error: --runtime-env-json is not valid JSON (Expecting property name enclosed in double quotes at column 2)"),
    (["--address", "http://127.0.0.1:1", "--store", "s3://b/p", "--runtime-env-json", '{"working_dir": "x"}'],
     "farm: error: give the working dir once: --working-dir DIR, not working_dir in --runtime-env-json"),
    (["--address", "http://127.0.0.1:1", "--store", "s3://b/p", "--env", "FARM_NOT_SET_ANYWHERE"],
     "farm: error: --env FARM_NOT_SET_ANYWHERE: FARM_NOT_SET_ANYWHERE is not set here; set it, or give --env "
     "FARM_NOT_SET_ANYWHERE=VALUE"),
    (["--address", "http://127.0.0.1:1", "--store", "s3://b/p", "--working-dir", "missing"],
     "farm: error: --working-dir {tmp}/missing is not a directory; give the folder to upload"),
    (["--address", "http://127.0.0.1:1", "--store", "s3://b/p", "--working-dir", "elsewhere"],
     "farm: error: {tmp}/job.yaml is not inside the working dir {tmp}/elsewhere: the cluster sees only what is uploaded"),
    (["--address", "http://127.0.0.1:1", "--store", "s3://b/p"], "farm: error: cannot reach the Ray job server at "
     "http://127.0.0.1:1"),
    (["--address", "http://127.0.0.1:1", "--store", "s3://b/p", "--env", "AWS_SECRET_ACCESS_KEY=x"],
     "farm: error: env var AWS_SECRET_ACCESS_KEY looks like a secret (its name says so): Ray keeps a job's env vars in "
     "its job table"),
    (["--address", "http://127.0.0.1:1", "--store", "s3://b/p", "--runtime-env-json",
      '{"env_vars": {"MY_HF": "hf_abcdefghijklmnopqrstuvwxyz0123456789"}}'],
     "farm: error: env var MY_HF looks like a secret (its value has a credential's form)"),
])
def test_submit_misuse_is_one_line(farm_cli, write_job, tmp_path, args, message):
    job = write_job(fault_job("sub"))
    (tmp_path / "elsewhere").mkdir()
    code, out, err = farm_cli("submit", str(job), *args, env={"RAY_ADDRESS": "", "FARM_STORE": ""})
    assert code == 1, out + err
    assert err.startswith(message.format(tmp=tmp_path)) and err.count("\n") == 1, err


@pytest.mark.slow
def test_a_cluster_with_token_auth_takes_the_token_from_where_ray_keeps_it(ray_head_with_token, farm_cli, tmp_path):
    """A real head with RAY_AUTH_MODE=token (as cluster.yaml starts it): no token, a wrong one, then the right one
    in ~/.ray/auth_token, where Ray's own tools look; the run goes through to its end."""
    import sys

    from .conftest import RAY_TOKEN

    address, head, log, _ = ray_head_with_token
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "tok.yaml").write_text(fault_job("tok", cells=1))
    args = ["submit", "jobs/tok.yaml", "--address", address, "--store", str(tmp_path / "store"), "--working-dir", ".",
            "--python", sys.executable, "--env", f"FARM_HOME={tmp_path / 'job-home'}"]
    deadline = time.monotonic() + 120
    while True:  # the job server answers (401 without a token) once the head is up
        code, _, err = farm_cli(*args, timeout=120)
        if "cannot reach" not in err or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith(f"farm: error: the Ray cluster at {address} wants a token (token authentication is on) and "
                          "this machine has none: copy the head's, e.g. `ray exec cluster.yaml 'cat ~/.ray/auth_token' > "
                          "~/.ray/auth_token`, or set RAY_AUTH_TOKEN"), err

    code, _, err = farm_cli(*args, timeout=120, env={"RAY_AUTH_TOKEN": "not-the-token"})
    assert code == 1 and err.count("\n") == 1, err
    assert "refused the token from $RAY_AUTH_TOKEN" in err and "ray get-auth-token" in err

    (tmp_path / "laptop-home" / ".ray").mkdir(parents=True)
    (tmp_path / "laptop-home" / ".ray" / "auth_token").write_text(RAY_TOKEN + "\n")
    code, out, err = farm_cli(*args, "--run-id", "tok-1", "--wait", timeout=400)
    assert code == 0, out[-3000:] + err[-3000:] + log.read_text()[-2000:]
    assert "ray job tok-1: SUCCEEDED, exit code 0" in out
    assert (tmp_path / "store" / "runs" / "tok-1" / "manifest.json").exists()
