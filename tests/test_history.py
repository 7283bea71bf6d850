"""History across runs of a job and the diff against the previous run, through a real local store."""

from __future__ import annotations

import json

from farm.model.matrix import CellSnapshot, RunSummary
from farm.report.aggregate import aggregate, load_matrix
from farm.report.history import diff
from farm.store import LocalStore
from farm.store.layout import summary_key

from .synthetic import Shape, write_runs


def summary(run_id: str, **cells: tuple[str, str | None]) -> RunSummary:
    return RunSummary(run_id=run_id, job_name="j", started_at="2026-11-20T02:00:00+00:00", cells={
        cell_id: CellSnapshot(status=status, signature=signature, row="m · q", column=f"{cell_id} · v")
        for cell_id, (status, signature) in cells.items()
    })


def test_diff_sorts_changes_by_the_verdict_ladder():
    before = summary("r1", a=("pass", None), b=("fail", "s1"), c=("pass", None), d=("flaky", None), e=("fail", "s1"),
                     f=("crash", None), g=("infra_error", None), h=("pass", None), gone=("pass", None))
    after = summary("r2", a=("fail", "s2"), b=("pass", None), c=("flaky", None), d=("pass", None), e=("fail", "s3"),
                    f=("timeout", None), g=("pass", None), h=("pass", None), new=("fail", "s2"))
    changes = diff(before, after)
    assert changes.previous_run == "r1"
    assert [c.cell_id for c in changes.regressions] == ["a", "c"]
    assert [c.cell_id for c in changes.fixes] == ["b", "d"]
    # a different failure, or a change to or from a status that is no verdict
    assert [c.cell_id for c in changes.other] == ["e", "f", "g"]
    assert [c.cell_id for c in changes.added] == ["new"] and changes.added[0].before is None
    assert [c.cell_id for c in changes.removed] == ["gone"] and changes.removed[0].after is None
    regression = changes.regressions[0]
    assert (regression.before, regression.after, regression.after_signature) == ("pass", "fail", "s2")


def test_no_previous_run_means_no_changes():
    changes = diff(None, summary("r1", a=("fail", "s")))
    assert changes.previous_run is None and not changes.regressions and not changes.added


def test_summary_keys_sort_in_time_whatever_the_run_ids():
    early = summary_key("nightly", "2026-11-20T23:59:59+00:00", "zzz")
    late = summary_key("nightly", "2026-11-21T00:00:00Z", "aaa")
    shifted = summary_key("nightly", "2026-11-21T01:30:00+02:00", "mmm")  # 23:30 UTC on the 20th
    assert sorted([late, early, shifted]) == [shifted, early, late]
    assert early.startswith("history/nightly/20261120T235959Z_")


def test_history_and_changes_through_the_store(tmp_path):
    store = LocalStore(tmp_path)
    runs = write_runs(store, Shape(rows=8, columns=20, nights=3))
    matrix = load_matrix(store)
    assert matrix.run_id == runs[-1]
    history = matrix.history
    assert [r.run_id for r in history.runs] == runs
    assert set(history.cells) == {c.cell_id for c in matrix.cells}
    assert all(len(strip) == 3 for strip in history.cells.values())
    for cell in matrix.cells:  # the strip ends with this run's status
        assert history.cells[cell.cell_id][-1] == cell.symbol
    nightly = {c.vllm for c in matrix.cells if c.engine == "nightly" and c.vllm}
    assert history.runs[-1].versions["nightly"] == sorted(nightly) and len(nightly) == 1
    # the synthetic nights: tonight's nightly breaks qwen2 with LoRA (a regression) under one new signature
    assert matrix.changes.previous_run == runs[-2]
    regressed = [c for c in matrix.changes.regressions if c.after == "fail"]
    assert regressed and all(c.column.endswith("· nightly") and c.row.startswith("qwen2") for c in regressed)
    signature = regressed[0].after_signature
    assert history.signature_since[signature] == runs[-1]
    chronic = next(g.signature for g in matrix.signatures if g.error_type == "AttributeError")
    assert history.signature_since[chronic] == runs[0]
    # the JSON twin of both views is matrix.json itself
    on_disk = json.loads(store.get(f"matrix/{runs[-1]}.json"))
    assert on_disk["history"]["runs"][0]["run_id"] == runs[0] and "regressions" in on_disk["changes"]


def test_history_window_and_reaggregating_an_old_run(tmp_path):
    store = LocalStore(tmp_path)
    runs = write_runs(store, Shape(rows=2, columns=2, nights=12))
    latest = load_matrix(store)
    assert [r.run_id for r in latest.history.runs] == runs[-10:]
    # an old run, aggregated again, sees the history as it was then: nothing after it
    aggregate(store, runs[3])
    old = load_matrix(store, runs[3])
    assert [r.run_id for r in old.history.runs] == runs[:4]
    assert old.changes.previous_run == runs[2]


def test_other_jobs_and_damaged_summaries_stay_out(tmp_path):
    store = LocalStore(tmp_path)
    write_runs(store, Shape(rows=2, columns=2, nights=2), job_name="weekly")
    runs = write_runs(store, Shape(rows=2, columns=2, nights=3))
    damaged = [k for k in store.list("history/nightly/") if runs[1] in k][0]
    store.put(damaged, b"{not json", overwrite=True)
    aggregate(store, runs[-1])
    matrix = load_matrix(store)
    assert [r.run_id for r in matrix.history.runs] == [runs[0], runs[2]]
    assert matrix.changes.previous_run == runs[0]
