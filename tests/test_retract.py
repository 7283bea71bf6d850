"""`farm retract`: verdicts that were the farm's own failure taken back after the fact, nothing deleted.

The case it exists for: the H100 history of 2026-12-06, where two bundles lacked a package their fastapi imports
and every cell of those two engines "failed" at `from vllm import LLM`.
"""

from __future__ import annotations

import json

import pytest

from farm.model.cells import expand
from farm.model.results import CellResult, CellStatus, EnvFacts, ErrorInfo, RunManifest, utcnow
from farm.model.spec import parse_job
from farm.report.aggregate import aggregate
from farm.store import open_store, put_result, scan_run, write_manifest

JOB = {
    "name": "history",
    "models": [{"name": "moe", "variants": [{"zoo": "qwen2moe-shared"}, {"quantization": "gptq-int4", "zoo": "qwen2moe-shared-gptq4"}]}],
    "engines": [{"name": "old", "kind": "pip", "requirements": ["vllm==0.1"]},
                {"name": "new", "kind": "pip", "requirements": ["vllm==0.2"]}],
}
IMPORT_ERROR = ErrorInfo(type="ImportError", message="cannot import name 'context' from 'opentelemetry' (unknown location)",
                         frame="fastapi/telemetry/_api.py:9", signature="55ca7c87c7")


@pytest.fixture
def store(tmp_path):
    """Run r: on engine old, one cell failed (the farm's bundle) and one env did not build; on new, both passed."""
    store = open_store(str(tmp_path / "store"))
    job = parse_job(JOB)
    cells = expand(job)
    write_manifest(store, RunManifest(run_id="r", job_name="history", job=job.model_dump(mode="json"), cells=cells,
                                      launched_by="t@h", farm_version="0", started_at=utcnow(), finished_at=utcnow()),
                   create=True)
    for cell in cells:
        if cell.engine.name == "new":
            result = CellResult(run_id="r", cell_id=cell.id, cell=cell, status=CellStatus.PASS, env=EnvFacts(vllm="0.2"))
        elif cell.quantization == "none":
            result = CellResult(run_id="r", cell_id=cell.id, cell=cell, status=CellStatus.FAIL, error=IMPORT_ERROR,
                                env=EnvFacts(vllm="0.1", hostname="gpu-1"))
        else:
            result = CellResult(run_id="r", cell_id=cell.id, cell=cell, status=CellStatus.ENV_ERROR,
                                error=ErrorInfo(type="env_error", message="no bundle"))
        put_result(store, result)
    aggregate(store, "r")
    return store


def _latest(store) -> dict[tuple[str, str], CellResult]:
    return {(r.cell.engine.name, r.cell.quantization): r for r in scan_run(store, "r").latest.values()}


def test_an_engines_verdicts_become_the_farms_failure_with_who_when_why_and_nothing_is_lost(store, farm_cli, tmp_path):
    code, out, err = farm_cli("retract", "r", "--engine", "old", "--why", "the bundle lacked opentelemetry-api",
                              "--store", str(tmp_path / "store"))
    assert code == 0, err
    assert out.startswith("retracted 1 verdict(s) of run r;") and "farm run --resume r" in out
    latest = _latest(store)
    retracted = latest[("old", "none")]
    assert (retracted.attempt, retracted.status, retracted.error.type, retracted.error.origin) == \
        (2, CellStatus.INFRA_ERROR, "retracted", "farm")
    assert retracted.error.message.startswith("attempt 1's verdict (fail [55ca7c87c7]) retracted by ")
    assert retracted.error.message.endswith("Z: the bundle lacked opentelemetry-api")
    assert retracted.retry_reason == "retracted: the bundle lacked opentelemetry-api"
    assert [(a.attempt, a.status) for a in retracted.previous_attempts] == [(1, CellStatus.FAIL)]
    assert retracted.env.hostname == "gpu-1"
    everything = scan_run(store, "r", all_attempts=True)
    first = [r for r in everything.attempts[retracted.cell_id] if r.attempt == 1][0]
    assert first.status is CellStatus.FAIL and first.error == IMPORT_ERROR, "the verdict itself stays in the store"
    assert latest[("old", "gptq-int4")].attempt == 1, "an env error had no verdict to take back"
    assert {r.status for (engine, _), r in latest.items() if engine == "new"} == {CellStatus.PASS}
    # The run's matrix, written again: the cell is the farm's error, listed with the reason, not a root cause.
    code, out, _ = farm_cli("matrix", "r", "--store", str(tmp_path / "store"))
    assert code == 0 and "1 infra_error" in out and "Root causes:" not in out
    assert "retracted: the bundle lacked opentelemetry-api — 1 cell(s)" in out
    matrix = json.loads((tmp_path / "store" / "matrix" / "r.json").read_text())
    assert {c["cell_id"]: c["status"] for c in matrix["cells"]}[retracted.cell_id] == "infra_error"


def test_a_resumed_run_owes_the_retracted_cells(store, farm_cli, tmp_path, monkeypatch):
    from farm.ops.retract import retract
    from farm.runner.driver import _plan

    monkeypatch.setenv("FARM_HOME", str(tmp_path / "home"))
    before = {w.cell.id for w in _plan(store, None, "r", True).todo}
    written = retract(store, "r", engines=["old"], why="bundle", by="op@host")
    after = {w.cell.id for w in _plan(store, None, "r", True).todo}
    assert after == before | {written[0].cell_id} and len(after) == 2, "the env error and the retracted cell"


def test_what_to_retract_must_be_named_and_exist_in_the_run(store, farm_cli, tmp_path):
    where = ("--store", str(tmp_path / "store"))
    code, _, err = farm_cli("retract", "r", "--why", "x", *where)
    assert code == 1 and err.strip() == "farm: error: name what to retract: --engine NAME (every cell of that engine) or --cell CELL_ID"
    code, _, err = farm_cli("retract", "r", "--engine", "v9", "--why", "x", *where)
    assert code == 1 and err.strip() == "farm: error: --engine v9: run r has no such engine; its engines: new, old"
    code, _, err = farm_cli("retract", "r", "--cell", "nope", "--why", "x", *where)
    assert code == 1 and "--cell nope: run r has no such cell" in err and len(err.strip().splitlines()) == 1
    code, _, err = farm_cli("retract", "r", "--engine", "old", "--why", "  ", *where)
    assert code == 1 and "--why: say why" in err
    assert {r.attempt for r in _latest(store).values()} == {1}, "nothing was written"
