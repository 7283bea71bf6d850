"""One contract, every backend: a local directory, moto's S3 server, SeaweedFS (real servers on 127.0.0.1)."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest

from farm.errors import KeyExists, KeyNotFound, StoreError
from farm.model.cells import Cell
from farm.model.matrix import LedgerCheck, LedgerFinding
from farm.model.results import CellResult, CellStatus, ErrorInfo, ProbeResult, RunManifest, utcnow
from farm.model.spec import Engine
from farm.report.aggregate import aggregate, load_matrix
from farm.report.render import embedded_matrix
from farm.store import (
    MARKER_KEY,
    put_result,
    read_manifest,
    read_results,
    result_key,
    safe_part,
    scan_run,
    write_manifest,
)


def make_cell(model: str = "m", lora: str = "none") -> Cell:
    return Cell(model=model, quantization="none", model_source="zoo:x", lora=lora, engine=Engine())


def make_result(run_id: str, cell: Cell, status: CellStatus = CellStatus.PASS, **kw) -> CellResult:
    return CellResult(run_id=run_id, cell_id=cell.id, cell=cell, status=status, finished_at=utcnow(), **kw)


def make_manifest(run_id: str, cells: list[Cell], **kw) -> RunManifest:
    return RunManifest(run_id=run_id, job_name="j", job={"name": "j"}, cells=cells, launched_by="t@h",
                       farm_version="0", started_at=utcnow(), **kw)


def test_put_is_create_once_and_overwrite_replaces(store):
    store.put("runs/r/cells/c/attempt-1.json", b"one")
    with pytest.raises(KeyExists, match="written once"):
        store.put("runs/r/cells/c/attempt-1.json", b"two")
    assert store.get("runs/r/cells/c/attempt-1.json") == b"one"
    store.put("matrix/latest.json", b"a", overwrite=True)
    store.put("matrix/latest.json", b"b", overwrite=True)
    assert store.get("matrix/latest.json") == b"b"


def test_missing_keys(store):
    with pytest.raises(KeyNotFound, match="runs/x/manifest.json does not exist"):
        store.get("runs/x/manifest.json")
    assert not store.exists("runs/x/manifest.json")
    store.put("runs/x/manifest.json", b"{}")
    assert store.exists("runs/x/manifest.json")
    assert store.list("nothing/") == []


def test_list_is_a_sorted_string_prefix(store):
    for key in ["runs/r1/cells/b/attempt-1.json", "runs/r1/cells/a/attempt-1.json", "runs/r10/manifest.json",
                "runs/r1/manifest.json", "matrix/latest.json"]:
        store.put(key, b"x")
    assert store.list("runs/r1/") == ["runs/r1/cells/a/attempt-1.json", "runs/r1/cells/b/attempt-1.json",
                                      "runs/r1/manifest.json"]
    assert store.list("runs/r1") == [*store.list("runs/r1/"), "runs/r10/manifest.json"]
    assert store.list("runs/r1/cells/a") == ["runs/r1/cells/a/attempt-1.json"]
    assert "matrix/latest.json" in store.list("")


@pytest.mark.parametrize("key", ["../escape.json", "runs/../../x", "/abs/key", "a//b", "a/./b", "with space",
                                 "mödel", "", "trailing/", "back\\slash"])
def test_unsafe_raw_keys_are_refused_alike(store, key):
    with pytest.raises(StoreError, match="invalid store key"):
        store.put(key, b"x")
    with pytest.raises(StoreError, match="invalid store key"):
        store.get(key)


@pytest.mark.parametrize("hostile", ["../../etc/passwd", "org/model", "..", "mödel ünïcode", "with space", "",
                                     "/abs", "модель", "模型", "a" * 300])
def test_hostile_names_become_safe_distinct_keys(store, hostile):
    key = result_key(hostile, hostile, 1)
    store.put(key, b"x")
    assert store.list(f"runs/{safe_part(hostile)}/") == [key]
    assert key.startswith("runs/") and ".." not in key.split("/")
    # Sanitising never merges names: each differs from its neighbours and from its plain form.
    assert safe_part(hostile) != safe_part(hostile + "x")
    assert safe_part("a/b") != safe_part("a_b") and safe_part("модель") != safe_part("模型")


def test_check_writes_the_marker_once(store):
    store.check()
    store.check()
    assert json.loads(store.get(MARKER_KEY))["kind"] == "farm result store"


def test_two_writers_racing_on_one_raw_key_have_one_winner(store):
    winners, barrier = [], threading.Barrier(6)

    def write(i: int) -> None:
        barrier.wait()
        try:
            store.put("runs/r/cells/c/attempt-1.json", f"writer {i}".encode())
            winners.append(i)
        except KeyExists:
            pass

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(winners) == 1
    assert store.get("runs/r/cells/c/attempt-1.json") == f"writer {winners[0]}".encode()


def test_racing_results_for_one_cell_each_get_an_attempt(store):
    cell, barrier = make_cell(), threading.Barrier(4)
    results = [make_result("r", cell, log_tail=f"log {i}", timings={"total": float(i)}) for i in range(4)]

    def write(result: CellResult) -> None:
        barrier.wait()
        put_result(store, result)

    threads = [threading.Thread(target=write, args=(r,)) for r in results]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(r.attempt for r in results) == [1, 2, 3, 4]
    stored = scan_run(store, "r", all_attempts=True).attempts[cell.id]
    assert [r.attempt for r in stored] == [1, 2, 3, 4]
    assert sorted(r.timings["total"] for r in stored) == [0, 1, 2, 3], "no result overwrote another"
    for result in results:
        assert store.get(f"runs/r/logs/{cell.id}/attempt-{result.attempt}.log") == result.log_tail.encode()


def test_writing_the_same_result_again_is_idempotent(store):
    result = make_result("r", make_cell())
    put_result(store, result)
    again = CellResult.model_validate_json(result.model_dump_json())
    put_result(store, again)  # e.g. a flush retried after its first upload's answer was lost
    assert again.attempt == 1
    assert store.list("runs/r/cells/") == [result_key("r", result.cell_id, 1)]


def test_corrupt_and_misplaced_documents_are_named_and_skipped(store, caplog):
    good, only_bad, misplaced = make_cell("good"), make_cell("bad"), make_cell("moved")
    put_result(store, make_result("r", good))
    full = make_result("r", good, CellStatus.FAIL).model_dump_json().encode()
    store.put(result_key("r", good.id, 2), full[: len(full) // 2])  # truncated newer attempt
    store.put(result_key("r", only_bad.id, 1), b"\x00\xffnot json")
    store.put(result_key("r", misplaced.id, 1), make_result("r", good).model_dump_json().encode())
    scan = scan_run(store, "r")
    assert set(scan.latest) == {good.id}
    assert scan.latest[good.id].attempt == 1 and scan.latest[good.id].status is CellStatus.PASS
    named = {u.key: u.reason for u in scan.unreadable}
    assert set(named) == {result_key("r", good.id, 2), result_key("r", only_bad.id, 1),
                          result_key("r", misplaced.id, 1)}
    assert "not a valid result document" in named[result_key("r", good.id, 2)]
    assert f"holds cell {good.id}" in named[result_key("r", misplaced.id, 1)]
    assert result_key("r", only_bad.id, 1) in caplog.text
    assert [r.cell_id for r in read_results(store, "r")] == [good.id]


def test_documents_carry_schema_version_and_readers_ignore_unknown_keys(store):
    cell = make_cell()
    document = json.loads(make_result("r", cell).model_dump_json())
    assert document["schema_version"] == 1
    document.update(schema_version=2, from_the_future={"x": 1})
    document["env"]["npu"] = "yes"
    store.put(result_key("r", cell.id, 1), json.dumps(document).encode())
    manifest = json.loads(make_manifest("r", [cell]).model_dump_json())
    manifest["scheduler"] = "new"
    store.put("runs/r/manifest.json", json.dumps(manifest).encode())
    assert read_results(store, "r")[0].status is CellStatus.PASS
    assert [c.model_dump() for c in read_manifest(store, "r").cells] == [cell.model_dump()]


def test_manifest_is_created_once_and_completed(store):
    manifest = make_manifest("r", [make_cell()])
    write_manifest(store, manifest, create=True)
    with pytest.raises(StoreError, match="already exists.*--resume r"):
        write_manifest(store, manifest, create=True)
    manifest.finished_at = manifest.started_at + timedelta(seconds=5)
    write_manifest(store, manifest)
    assert read_manifest(store, "r").finished_at == manifest.finished_at
    with pytest.raises(StoreError, match="no run 'other'"):
        read_manifest(store, "other")


def test_aggregate_writes_matrix_page_and_exports(store):
    from farm.report.export import read_parquet_rows

    cells = [make_cell("a"), make_cell("b"), make_cell("c")]
    write_manifest(store, make_manifest("run-1", cells), create=True)
    put_result(store, make_result("run-1", cells[0], CellStatus.INFRA_ERROR))
    put_result(store, make_result("run-1", cells[0], probes=[  # the retry: attempt 2
        ProbeResult(name="load", passed=True), ProbeResult(name="reference", passed=False, skipped=True)]))
    put_result(store, make_result("run-1", cells[1], CellStatus.FAIL,
                                  error=ErrorInfo(type="AttributeError", message="boom", signature="abc123")))
    store.put(result_key("run-1", cells[2].id, 1), b'{"schema_version": 1, "run_id": "run-1", "cell')
    published = LedgerCheck(checked_at="2026-12-05T00:00:00+00:00", ledger="jobs/known_bugs.yaml", runs=["run-0"],
                            findings=[LedgerFinding(id="b", verdict="rediscovered", why="w")])
    store.put("known-bugs/latest.json", published.model_dump_json().encode())
    matrix_key, page_key = aggregate(store, "run-1")
    matrix = load_matrix(store, "run-1")
    assert matrix.known_bugs == published  # the last published ledger check rides along to the page
    assert json.loads(store.get(matrix_key)) == json.loads(store.get("matrix/latest.json"))
    assert matrix.counts == {"pass": 1, "fail": 1, "pending": 1}
    assert [u.key for u in matrix.unreadable] == [result_key("run-1", cells[2].id, 1)]
    assert embedded_matrix(store.get(page_key).decode()) == matrix  # the page carries the matrix it shows
    rows = read_parquet_rows(store.get("exports/parquet/run-1.parquet"))
    assert sorted((r["model"], r["attempt"], r["latest"], r["status"]) for r in rows) == [
        ("a", 1, False, "infra_error"), ("a", 2, True, "pass"), ("b", 1, True, "fail")]
    failed = next(r for r in rows if r["model"] == "b")
    assert failed["error_signature"] == "abc123"
    assert (failed["kind"], failed["root_cause"]) == ("broken", matrix.root_causes[0].root_cause)
    assert [r["kind"] for r in rows if r["model"] == "a"] == [None, None]  # infra_error, pass: no failure kind
    retried = next(r for r in rows if r["latest"] and r["model"] == "a")
    assert (retried["failed_probes"], retried["skipped_probes"]) == ([], ["reference"])
    lines = [json.loads(line) for line in store.get("exports/jsonl/run-1.jsonl").decode().splitlines()]
    assert len(lines) == 3 and sum(line["latest"] for line in lines) == 2
    assert CellResult.model_validate(lines[0]).run_id == "run-1"


def test_an_older_run_aggregated_later_does_not_become_latest(store):
    cell = make_cell()
    newer = make_manifest("new", [cell])
    older = make_manifest("old", [cell], )
    older.started_at = newer.started_at - timedelta(hours=1)
    for manifest in (newer, older):
        write_manifest(store, manifest, create=True)
        put_result(store, make_result(manifest.run_id, cell))
    aggregate(store, "new")
    aggregate(store, "old")
    assert load_matrix(store).run_id == "new"
    assert load_matrix(store, "old").run_id == "old"


def test_get_many_reads_in_parallel_and_reports_each_failure(store):
    keys = [f"k/{i:03d}" for i in range(40)]
    for key in keys:
        store.put(key, key.encode())
    got = list(store.get_many([*keys, "k/missing"]))
    assert [k for k, _ in got] == [*keys, "k/missing"]
    assert all(data == key.encode() for key, data in got[:-1])
    assert isinstance(got[-1][1], KeyNotFound)
