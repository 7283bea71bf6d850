"""A job's history: a status strip per combination over its last runs, and what changed since the previous run.

Every aggregation writes a small summary of its run at

    history/<job>/<started_at>_<run_id>.json

One key per run, written only by that run's aggregation, so two runs of a job never
race on a shared index. The UTC start time leads the key, so listing the prefix sorts
the runs in time without reading them. A run's history is its own summary and the
summaries listed before it: re-aggregating an old run shows the history as it was
then, and costs one listing and at most ``HISTORY_WINDOW`` small reads, however many
runs the store holds. Runs aggregated before this module existed have no summary
and are not in the history.

The result goes into ``matrix.json`` (``history`` and ``changes``), the page's only
input: the page works opened from a bucket or a file, with nothing to fetch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import ValidationError

from farm.errors import StoreError
from farm.model.matrix import HISTORY_WINDOW, CellSnapshot, Change, Changes, History, HistoryRun, Matrix, RunSummary
from farm.model.results import CellStatus
from farm.store.layout import history_prefix, summary_key

if TYPE_CHECKING:
    from farm.store import Store

NOT_IN_RUN = " "  # the strip's mark for a run that did not have this cell


def summarize(matrix: Matrix) -> RunSummary:
    return RunSummary(
        run_id=matrix.run_id,
        job_name=matrix.job_name,
        started_at=matrix.started_at or matrix.generated_at,
        finished_at=matrix.finished_at,
        matrix_key=matrix.matrix_key,
        counts=matrix.counts,
        cells={
            c.cell_id: CellSnapshot(status=c.status.value, row=c.row, column=c.column, signature=c.signature,
                                    root_cause=c.root_cause, vllm=c.vllm, seconds=c.timings.get("total"))
            for c in matrix.cells
        },
    )


def attach_history(store: Store, matrix: Matrix, window: int = HISTORY_WINDOW) -> None:
    """Write this run's summary, then fill ``matrix.history`` and ``matrix.changes`` from the earlier ones."""
    current = summarize(matrix)
    key = summary_key(current.job_name, current.started_at, current.run_id)
    store.put(key, current.model_dump_json().encode(), overwrite=True)
    prefix = key.rsplit("/", 1)[0] + "/"
    earlier = [k for k in store.list(prefix) if k.endswith(".json") and k < key]
    previous: list[RunSummary] = []
    for earlier_key in reversed(earlier):  # newest first, until the window is full
        if len(previous) == window - 1:
            break
        try:
            summary = RunSummary.model_validate_json(store.get(earlier_key))
        except (StoreError, ValidationError):
            continue  # a damaged or vanished summary costs one run of history, never the aggregation
        if summary.run_id != current.run_id:
            previous.append(summary)
    runs = [*reversed(previous), current]
    matrix.history = build_history(runs, window)
    matrix.changes = diff(previous[0] if previous else None, current)


def expected_seconds(store: Store, job_name: str) -> dict[str, float]:
    """Cell id → its run time in the job's newest aggregated run (empty for a first run, or if unreadable)."""

    try:
        keys = [k for k in store.list(history_prefix(job_name)) if k.endswith(".json")]
        if not keys:
            return {}
        newest = RunSummary.model_validate_json(store.get(max(keys)))
    except (StoreError, ValidationError):
        return {}  # without durations the cells keep the job's order
    return {cell_id: snap.seconds for cell_id, snap in newest.cells.items() if snap.seconds is not None}


RECENT_RUNS = 20  # what the retry policy reads of a cell's past (farm.runner.retry.Known)


def recent_outcomes(store: Store, job_name: str, exclude_run: str | None = None,
                    window: int = RECENT_RUNS) -> dict[str, list[tuple[str, str | None, str | None]]]:
    """Cell id → its (status, root cause, vLLM version) in the job's last ``window`` aggregated runs, oldest first
    (``exclude_run``: a run being resumed is not its own past). Empty for a first run or if unreadable."""
    try:
        keys = sorted(k for k in store.list(history_prefix(job_name)) if k.endswith(".json"))
    except StoreError:
        return {}
    runs: list[RunSummary] = []
    for key in reversed(keys):
        if len(runs) == window:
            break
        try:
            summary = RunSummary.model_validate_json(store.get(key))
        except (StoreError, ValidationError):
            continue
        if summary.run_id != exclude_run:
            runs.append(summary)
    outcomes: dict[str, list[tuple[str, str | None, str | None]]] = {}
    for summary in reversed(runs):
        for cell_id, snap in summary.cells.items():
            outcomes.setdefault(cell_id, []).append((snap.status, snap.root_cause, snap.vllm))
    return outcomes


def build_history(runs: list[RunSummary], window: int = HISTORY_WINDOW) -> History:
    """Strips for the cells of the last run in ``runs`` (oldest first)."""
    current = runs[-1]
    strips = {
        cell_id: "".join(_symbol(run.cells[cell_id].status) if cell_id in run.cells else NOT_IN_RUN for run in runs)
        for cell_id in current.cells
    }
    since: dict[str, str] = {}
    for signature in {s.signature for s in current.cells.values() if s.signature}:
        for run in reversed(runs):
            if not any(s.signature == signature for s in run.cells.values()):
                break
            since[signature] = run.run_id
    return History(
        window=window,
        runs=[HistoryRun(run_id=r.run_id, started_at=r.started_at, finished_at=r.finished_at,
                         matrix_key=r.matrix_key, counts=r.counts, versions=r.versions()) for r in runs],
        cells=strips,
        signature_since=dict(sorted(since.items())),
    )


def _cause(snapshot: CellSnapshot) -> str | None:
    """What a diff compares of a failure: its root cause; a summary written before root causes, its signature."""
    return snapshot.root_cause or snapshot.signature


def diff(previous: RunSummary | None, current: RunSummary) -> Changes:
    """What changed from ``previous`` to ``current``; empty when there is no previous run."""
    if previous is None:
        return Changes()
    changes = Changes(previous_run=previous.run_id, previous_started_at=previous.started_at)
    for cell_id in [*current.cells, *(c for c in previous.cells if c not in current.cells)]:
        before, after = previous.cells.get(cell_id), current.cells.get(cell_id)
        either = after or before
        assert either is not None
        change = Change(
            cell_id=cell_id, row=either.row, column=either.column,
            before=before.status if before else None, after=after.status if after else None,
            before_signature=before.signature if before else None, after_signature=after.signature if after else None,
            before_vllm=before.vllm if before else None, after_vllm=after.vllm if after else None,
        )
        if before is None:
            changes.added.append(change)
        elif after is None:
            changes.removed.append(change)
        elif (before.status, _cause(before)) != (after.status, _cause(after)):
            rank_before, rank_after = _rank(before.status), _rank(after.status)
            if rank_before is not None and rank_after is not None and rank_after < rank_before:
                changes.regressions.append(change)
            elif rank_before is not None and rank_after is not None and rank_after > rank_before:
                changes.fixes.append(change)
            else:
                changes.other.append(change)
    return changes


def _rank(status: str) -> int | None:
    try:
        return CellStatus(status).verdict_rank
    except ValueError:
        return None


def _symbol(status: str) -> str:
    try:
        return CellStatus(status).symbol
    except ValueError:
        return "?"
