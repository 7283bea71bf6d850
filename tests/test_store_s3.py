"""What only the S3 backend has to get right: URLs, endpoints, and one clear line for each way S3 says no.

The `farm run` cases fail before Ray starts: a store that cannot be written costs no compute.
"""

from __future__ import annotations

import time

import pytest

from farm.errors import StoreError, StoreUnavailable
from farm.store import S3Store, open_store

from .s3_servers import BUCKET, free_port

JOB = """
name: s3err
models:
  - name: m
    variants: [{quantization: q, checkpoint: fault-injection}]
engines: [{name: fi, kind: fault-injection}]
probes: [load]
"""


def one_line_error(code: int, out: str, err: str) -> str:
    assert code == 1, out + err
    assert "Started a local Ray" not in err + out and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("farm: error: "), err
    return lines[0]


def test_urls():
    with pytest.raises(StoreError, match="'x' is not a valid S3 bucket name"):
        open_store("s3://x/prefix")
    with pytest.raises(StoreError, match="invalid store key"):
        open_store("s3://bucket-ok/a/../b")
    with pytest.raises(StoreError, match="without '\\?' or '#'"):
        open_store("s3://bucket-ok/p?versionId=1")
    store = open_store("s3://bucket-ok//deep/prefix/", s3_endpoint="http://127.0.0.1:9")
    assert isinstance(store, S3Store) and (store.bucket, store.prefix) == ("bucket-ok", "deep/prefix")
    assert store.location("index.html") == "s3://bucket-ok/deep/prefix/index.html"


def test_endpoint_from_aws_endpoint_url(moto_server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint)
    store = open_store(f"s3://{BUCKET}/from-env")
    assert store.endpoint == moto_server.endpoint
    store.put("k.json", b"{}")
    assert store.get("k.json") == b"{}"


def test_missing_bucket(farm_cli, write_job, moto_server):
    code, out, err = farm_cli("run", str(write_job(JOB)), "--store", "s3://no-such-bucket/p",
                              "--s3-endpoint", moto_server.endpoint)
    line = one_line_error(code, out, err)
    assert "bucket 'no-such-bucket' does not exist at " + moto_server.endpoint in line
    assert "aws s3 mb s3://no-such-bucket" in line
    code, out, err = farm_cli("status", "r", "--store", "s3://no-such-bucket/p", "--s3-endpoint",
                              moto_server.endpoint)
    assert "does not exist" in one_line_error(code, out, err)


def test_bad_credentials(farm_cli, write_job, seaweed_server):
    store_args = ["--store", f"s3://{BUCKET}/p", "--s3-endpoint", seaweed_server.endpoint]
    for env in ({"AWS_SECRET_ACCESS_KEY": "wrong"}, {"AWS_ACCESS_KEY_ID": "nobody"}):
        code, out, err = farm_cli("run", str(write_job(JOB)), *store_args, env=env)
        line = one_line_error(code, out, err)
        assert f"{seaweed_server.endpoint} refused to let these credentials" in line
        assert "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE" in line


def test_no_credentials(farm_cli, write_job, moto_server, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    code, out, err = farm_cli("run", str(write_job(JOB)), "--store", f"s3://{BUCKET}/p",
                              "--s3-endpoint", moto_server.endpoint)
    assert "no AWS credentials to " in one_line_error(code, out, err)


def test_unreachable_at_start_fails_fast_and_runs_nothing(farm_cli, write_job, tmp_path):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    code, out, err = farm_cli("run", str(write_job(JOB)), "--store", f"s3://{BUCKET}/p", "--s3-endpoint", endpoint,
                              env={"FARM_HOME": str(tmp_path / "home")})
    line = one_line_error(code, out, err)
    assert f"cannot reach the S3 endpoint {endpoint}" in line and "nothing has run" in line
    assert time.monotonic() - started < 30
    assert not (tmp_path / "home" / "spool").exists()


def test_unreachable_is_store_unavailable_for_every_operation():
    store = open_store(f"s3://{BUCKET}/p", s3_endpoint=f"http://127.0.0.1:{free_port()}")
    for call in (lambda: store.put("a", b"x"), lambda: store.get("a"), lambda: store.list("a/"),
                 lambda: store.exists("a"), store.check):
        with pytest.raises(StoreUnavailable, match="cannot reach the S3 endpoint"):
            call()
