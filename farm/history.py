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

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import Field, ValidationError

from farm.errors import StoreError
from farm.results import SCHEMA_VERSION, CellStatus, Document

if TYPE_CHECKING:
    from farm.aggregate import Matrix
    from farm.store import Store

HISTORY_WINDOW = 10  # runs per strip: ten nightlies fit a glance and keep a 2000-cell page light
NOT_IN_RUN = " "  # the strip's mark for a run that did not have this cell

# Verdict ranks: a lower rank after than before is a regression, a higher one a fix.
# Statuses without a rank (pending, running, infra/env errors, unsupported) carry no verdict.
_RANK = {CellStatus.FAIL: 0, CellStatus.CRASH: 0, CellStatus.TIMEOUT: 0, CellStatus.FLAKY: 1, CellStatus.PASS: 2}


class CellSnapshot(Document):
    """One cell in one run, as much as history and diffs need."""

    status: str  # a str, not CellStatus: a summary written by a newer farm may hold a status this one lacks
    row: str
    column: str
    signature: str | None = None
    vllm: str | None = None
    seconds: float | None = None  # the attempt's run time (timings.total): the next run's longest-first order


class RunSummary(Document):
    schema_version: int = SCHEMA_VERSION
    run_id: str
    job_name: str
    started_at: str
    finished_at: str | None = None
    matrix_key: str = ""
    counts: dict[str, int] = Field(default_factory=dict)
    cells: dict[str, CellSnapshot] = Field(default_factory=dict)

    def versions(self) -> dict[str, list[str]]:
        """Engine column → the vLLM versions its cells measured in this run (usually one)."""
        found: dict[str, set[str]] = {}
        for snap in self.cells.values():
            if snap.vllm:
                found.setdefault(snap.column.rsplit(" · ", 1)[-1], set()).add(snap.vllm)
        return {engine: sorted(versions) for engine, versions in sorted(found.items())}


class HistoryRun(Document):
    run_id: str
    started_at: str
    finished_at: str | None = None
    matrix_key: str = ""
    counts: dict[str, int] = Field(default_factory=dict)
    versions: dict[str, list[str]] = Field(default_factory=dict)  # engine → vLLM versions measured


class History(Document):
    """The last runs of a job, oldest first; the last one is this run.

    ``cells`` maps each cell of this run to its strip: one status symbol per run in
    ``runs`` (see the matrix's ``legend``), a space where that run did not have the cell.
    ``signature_since`` maps each failure signature of this run to the first run of the
    unbroken streak of runs in which it appears.
    """

    window: int = HISTORY_WINDOW
    runs: list[HistoryRun] = Field(default_factory=list)
    cells: dict[str, str] = Field(default_factory=dict)
    signature_since: dict[str, str] = Field(default_factory=dict)


class Change(Document):
    cell_id: str
    row: str
    column: str
    before: str | None = None  # status in the previous run; None: that run did not have the cell
    after: str | None = None  # status in this run; None: this run does not have the cell
    before_signature: str | None = None
    after_signature: str | None = None
    before_vllm: str | None = None
    after_vllm: str | None = None


class Changes(Document):
    """This run against the previous run of the same job.

    A regression goes down the verdict ladder pass → flaky → fail/crash/timeout, a fix
    up it. ``other`` holds every other status change: one failure for another (or the
    same status with a new signature), or to or from a status that is no verdict
    (not run, infra or env error, unsupported).
    """

    previous_run: str | None = None
    previous_started_at: str | None = None
    regressions: list[Change] = Field(default_factory=list)
    fixes: list[Change] = Field(default_factory=list)
    other: list[Change] = Field(default_factory=list)
    added: list[Change] = Field(default_factory=list)
    removed: list[Change] = Field(default_factory=list)


def summary_key(job_name: str, started_at: str, run_id: str) -> str:
    from farm.store import safe_part

    when = datetime.fromisoformat(started_at)
    when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    return f"history/{safe_part(job_name)}/{stamp}_{safe_part(run_id)}.json"


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
                                    vllm=c.vllm, seconds=c.timings.get("total"))
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
    from farm.store import safe_part

    try:
        keys = [k for k in store.list(f"history/{safe_part(job_name)}/") if k.endswith(".json")]
        if not keys:
            return {}
        newest = RunSummary.model_validate_json(store.get(max(keys)))
    except (StoreError, ValidationError):
        return {}  # without durations the cells keep the job's order
    return {cell_id: snap.seconds for cell_id, snap in newest.cells.items() if snap.seconds is not None}


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
        elif (before.status, before.signature) != (after.status, after.signature):
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
        return _RANK.get(CellStatus(status))
    except ValueError:
        return None


def _symbol(status: str) -> str:
    try:
        return CellStatus(status).symbol
    except ValueError:
        return "?"
