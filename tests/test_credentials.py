"""Cells run without the driver's store credentials: a real `farm run` on a real local Ray, a secret planted
in the driver's environment, and every file the run wrote searched for it."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from farm.cell.credentials import STORE_CREDENTIALS, drop_store_credentials

JOB = """
name: creds
models:
  - name: tiny
    variants:
      # The fault-injection engine fails with what the process sees when it differs from the expectation:
      # here, whatever the cell's process holds under these names ends in the stored error message.
      - {quantization: none, checkpoint: fault-injection,
         engine_args: {expect_env: {AWS_SECRET_ACCESS_KEY: unset-here, AWS_ACCESS_KEY_ID: unset-here, AWS_REGION: eu-north-1}}}
engines:
  - {name: fi, kind: fault-injection}
probes: [load]
retries: {recheck: 0}
timeout_s: 60
KEEP
"""


def _everything_under(*roots: Path) -> bytes:
    return b"".join(p.read_bytes() for root in roots for p in sorted(root.rglob("*")) if p.is_file())


def test_a_cell_runs_without_the_drivers_store_credentials(farm_cli, write_job, tmp_path):
    secret, key_id = secrets.token_hex(20), "AKIA" + secrets.token_hex(8).upper()
    env = {"AWS_SECRET_ACCESS_KEY": secret, "AWS_ACCESS_KEY_ID": key_id, "AWS_REGION": "eu-north-1",
           "FARM_HOME": str(tmp_path / "home")}
    job = write_job(JOB.replace("KEEP", ""))
    code, out, err = farm_cli("run", str(job), "--store", "results", "--run-id", "c1", env=env)
    assert code == 0, err[-2000:]
    result = json.loads(next((tmp_path / "results" / "runs" / "c1" / "cells").rglob("attempt-1.json")).read_text())
    # Neither key reached the cell; what is no credential (the region) did.
    assert result["status"] == "fail"
    assert "$AWS_SECRET_ACCESS_KEY=None" in result["error"]["message"] and "$AWS_ACCESS_KEY_ID=None" in result["error"]["message"]
    assert "AWS_REGION" not in result["error"]["message"]
    said = next(line for line in result["log_tail"].splitlines() if "runs without the store credentials" in line)
    assert "AWS_ACCESS_KEY_ID" in said and "AWS_SECRET_ACCESS_KEY" in said and "AWS_REGION" not in said
    written = _everything_under(tmp_path / "results", tmp_path / "home")  # store, matrix, exports, page, cell logs
    assert secret.encode() not in written and key_id.encode() not in written and secret not in out + err


def test_a_job_keeps_a_credential_by_name(farm_cli, write_job, tmp_path):
    env = {"AWS_SECRET_ACCESS_KEY": "kept-on-purpose", "AWS_ACCESS_KEY_ID": "dropped", "FARM_HOME": str(tmp_path / "home")}
    job = write_job(JOB.replace("KEEP", "keep_env: [AWS_SECRET_ACCESS_KEY]").replace("AWS_REGION: eu-north-1", "")
                    .replace("AWS_SECRET_ACCESS_KEY: unset-here", "AWS_SECRET_ACCESS_KEY: kept-on-purpose"))
    code, _, err = farm_cli("run", str(job), "--store", "results", "--run-id", "c2", env=env)
    assert code == 0, err[-2000:]
    result = json.loads(next((tmp_path / "results" / "runs" / "c2" / "cells").rglob("attempt-1.json")).read_text())
    assert result["error"]["message"].endswith("$AWS_ACCESS_KEY_ID=None, not 'unset-here'"), result["error"]["message"]


def test_which_names_are_store_credentials(monkeypatch):
    credentials = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
                   "AWS_CONTAINER_CREDENTIALS_FULL_URI", "MINIO_SECRET_KEY", "S3_ACCESS_KEY", "R2_SECRET_ACCESS_KEY"]
    others = ["AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_MAX_ATTEMPTS", "HF_HOME", "VLLM_CPU_KVCACHE_SPACE", "PATH"]
    assert [n for n in credentials if not STORE_CREDENTIALS.search(n)] == []
    assert [n for n in others if STORE_CREDENTIALS.search(n)] == []
    import os

    for name in [n for n in os.environ if STORE_CREDENTIALS.search(n)]:  # the test session's own (conftest)
        monkeypatch.delenv(name)
    for name in credentials + others:
        monkeypatch.setenv(name, "x")
    assert drop_store_credentials(keep=["AWS_PROFILE"]) == sorted(set(credentials) - {"AWS_PROFILE"})


def test_a_failure_in_the_cells_own_set_up_is_stored_with_its_exception(farm_cli, write_job, tmp_path):
    # The cell's log cannot be opened (its run's folder is a file): the set-up around the engine fails, and the
    # driver used to see only Ray's wrapper of the actor's exception.
    home = tmp_path / "home"
    (home / "cell-logs").mkdir(parents=True)
    (home / "cell-logs" / "s1").write_text("a file where the run's log folder goes")
    job = write_job(JOB.replace("KEEP", "retries: {recheck: 0, infra_attempts: 1}").replace("retries: {recheck: 0}\n", ""))
    code, _, err = farm_cli("run", str(job), "--store", "results", "--run-id", "s1", env={"FARM_HOME": str(home)})
    assert code == 3, err[-2000:]  # a cell could not run: no verdict
    result = json.loads(next((tmp_path / "results" / "runs" / "s1" / "cells").rglob("attempt-1.json")).read_text())
    assert result["status"] == "infra_error" and result["error"]["origin"] == "farm", result["error"]
    message = result["error"]["message"]
    assert message.startswith("the farm's own code failed at farm/cell/execute.py:") and "FileExistsError" in message, message
