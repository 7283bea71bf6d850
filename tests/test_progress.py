"""The progress display: a line per finished cell and per retry, a live line on a terminal, the summary table."""

from __future__ import annotations

import io

from farm.model.cells import Cell
from farm.model.results import AttemptSummary, CellResult, CellStatus, ErrorInfo
from farm.runner.attempt import Event, EventKind
from farm.runner.progress import Progress, summary_table


def cell(name: str) -> Cell:
    return Cell(model="m", quantization=name, model_source="fault-injection")


def result(name: str, status: CellStatus, attempt: int = 1, error: str | None = None, **fields) -> CellResult:
    c = cell(name)
    info = ErrorInfo(type=error, message=f"{error} happened") if error else None
    return CellResult(run_id="r", cell_id=c.id, cell=c, status=status, attempt=attempt, error=info,
                      timings={"total": 2.0}, **fields)


def feed(progress: Progress) -> None:
    progress(Event(EventKind.PLAN, total=3, parallel=2))
    progress(Event(EventKind.STARTED, cell("a"), 1))
    progress(Event(EventKind.STARTED, cell("b"), 1))
    progress(Event(EventKind.DONE, cell("a"), 1, result=result("a", CellStatus.PASS)))
    progress(Event(EventKind.RETRY, cell("b"), 1, result=result("b", CellStatus.CRASH, error="SIGSEGV"),
                   reason="recheck: attempt 1 was crash (SIGSEGV); run again to tell flaky from broken"))
    progress(Event(EventKind.STARTED, cell("b"), 2))
    progress(Event(EventKind.DONE, cell("b"), 2, result=result("b", CellStatus.FLAKY, attempt=2)))


def test_a_line_per_cell_and_per_retry_when_not_a_terminal():
    out = io.StringIO()
    feed(Progress(stream=out, live=False))
    assert out.getvalue().splitlines() == [
        "[1/3] ✓ pass        m/a/none/current 2.0s",
        "      ↻ crash       m/b/none/current attempt 1 → 2: recheck: attempt 1 was crash (SIGSEGV); "
        "run again to tell flaky from broken",
        "[2/3] ≈ flaky       m/b/none/current 2.0s (attempt 2)",
    ]


def test_the_plan_says_what_bounds_the_cells_at_once_when_the_scheduler_says():
    out = io.StringIO()
    progress = Progress(stream=out, live=False)
    progress(Event(EventKind.PLAN, total=12, parallel=8, reason="CPU 16 / 2 a cell = 8, GPU 1 / 0.0625 a cell = 16: "
                   "the CPUs bound it"))
    assert out.getvalue() == "12 cells, 8 at once (CPU 16 / 2 a cell = 8, GPU 1 / 0.0625 a cell = 16: the CPUs bound it)\n"


def test_live_line_with_counts_running_and_eta_on_a_terminal():
    out = io.StringIO()
    progress = Progress(stream=out, live=True)
    feed(progress)
    assert "\r\x1b[K[2/3] ✓ 1 pass  ≈ 1 flaky  ETA" in out.getvalue()
    assert progress.status_line().startswith("[2/3] ✓ 1 pass  ≈ 1 flaky  ETA ")
    progress(Event(EventKind.STARTED, cell("c"), 1))
    assert "· 1 running" in progress.status_line()
    progress.close()
    assert out.getvalue().endswith("\n")


def test_eta_waits_for_a_first_cell():
    progress = Progress(stream=io.StringIO(), live=False)
    progress(Event(EventKind.PLAN, total=4, parallel=2))
    assert progress.eta() == "—"


def test_summary_table_counts_statuses_and_explains_every_cell_that_did_not_simply_pass():
    flaky = result("b", CellStatus.FLAKY, attempt=2,
                   previous_attempts=[AttemptSummary(attempt=1, status=CellStatus.FAIL, error="InjectedFault: boom")])
    crash = result("c", CellStatus.CRASH, attempt=2, error="SIGSEGV",
                   previous_attempts=[AttemptSummary(attempt=1, status=CellStatus.CRASH, error="SIGSEGV: x")])
    table = summary_table([result("a", CellStatus.PASS), flaky, crash])
    lines = table.splitlines()
    assert lines[:5] == [
        "status   cells  retried",
        "✓ pass       1        0",
        "☠ crash      1        1",
        "≈ flaky      1        1",
        "total        3        2",
    ]
    assert "m/b/none/current  flaky   fail → flaky   InjectedFault: boom" in table
    assert "m/c/none/current  crash   crash → crash  SIGSEGV: SIGSEGV happened" in table
    assert "m/a/none/current" not in table


def test_eta_leaves_cold_first_builds_out_once_a_warm_attempt_ended(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr("farm.runner.progress.time.monotonic", lambda: clock[0])
    progress = Progress(stream=io.StringIO(), live=False)
    progress(Event(EventKind.PLAN, total=6, parallel=2))
    progress(Event(EventKind.STARTED, cell("a"), 1))
    progress(Event(EventKind.STARTED, cell("b"), 1))
    clock[0] = 120.0  # the first wave pays for cold compilation
    progress(Event(EventKind.DONE, cell("a"), 1, result=result("a", CellStatus.PASS, cold_start=True)))
    progress(Event(EventKind.DONE, cell("b"), 1, result=result("b", CellStatus.PASS, cold_start=True)))
    assert progress.eta() == "4m00s"  # only cold attempts so far: 120 s × 2 rounds left
    progress(Event(EventKind.STARTED, cell("c"), 1))
    progress(Event(EventKind.STARTED, cell("d"), 1))
    clock[0] = 130.0
    progress(Event(EventKind.DONE, cell("c"), 1, result=result("c", CellStatus.PASS)))
    progress(Event(EventKind.DONE, cell("d"), 1, result=result("d", CellStatus.PASS)))
    assert progress.eta() == "10s"  # warm attempts set the pace: 10 s × 1 round left, not (120+10)/2


def test_summary_table_marks_a_cold_start_timeout():
    passed = result("a", CellStatus.PASS, attempt=2, previous_attempts=[AttemptSummary(
        attempt=1, status=CellStatus.TIMEOUT, error="timeout: no result within 5s", cold_start=True)])
    assert "m/a/none/current  pass    timeout (cold start) → pass  timeout: no result within 5s" in summary_table([passed])
