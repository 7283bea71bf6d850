"""The Ray driver: one actor per cell, bounded concurrency, every outcome recorded.

Results travel from the actor back to the driver, and only the driver writes to
the store, also under ``ray job submit`` with an ``s3://`` store. Why not let each
actor write its own result:

- The driver must write the results of cells whose actor died (crash, timeout, lost
  node) anyway; one writer keeps one path for create-once attempts and spooling.
- Only the driver's node needs the store's credentials, endpoint and network route;
  GPU workers need no S3 access at all.
- The spool that keeps results through a store outage sits on the driver's disk, not
  scattered over worker nodes that an autoscaler may remove with it.
- A result is a few KB (16 KB of log tail at most): the return trip costs nothing.

What is lost if the driver itself dies: only the cells in flight, which
``farm run --resume RUN_ID`` runs again; everything recorded was spooled to disk first.
"""

from __future__ import annotations

import getpass
import logging
import secrets
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from farm import settings
from farm.cell.execute import CellSettings
from farm.errors import JobSpecError, PageError, StoreError, StoreUnavailable
from farm.model.cells import Cell, expand
from farm.model.results import CellResult, CellStatus, ErrorInfo, Launch, RunManifest, status_counts, utcnow
from farm.model.spec import JobSpec, parse_job
from farm.report.aggregate import aggregate
from farm.report.history import expected_seconds, recent_outcomes
from farm.runner.attempt import Event, EventFn, EventKind, Work, warm_nodes
from farm.runner.connect import connect
from farm.runner.placement import alive_nodes, check_feasible, request_for
from farm.runner.retry import INFRA, Known, decide, known_from
from farm.runner.scheduler import Scheduler
from farm.store import (
    ResultWriter,
    RunScan,
    Spool,
    Store,
    cells_prefix,
    open_store,
    read_manifest,
    safe_part,
    scan_run,
    write_manifest,
)
from farm.version import __version__

log = logging.getLogger("farm.runner.driver")

@dataclass
class RunOutcome:
    run_id: str
    results: list[CellResult]  # the latest result of every cell that has one, this session's and earlier ones
    matrix_key: str | None  # None while results are still spooled (the store was unreachable at the end)
    page_key: str | None
    store: Store
    counts: dict[str, int] = field(default_factory=dict)
    ran: int = 0  # cells run by this call (a resume skips cells whose verdict is settled)
    spooled: list[Path] = field(default_factory=list)  # documents still waiting for the store
    spool_dir: Path | None = None
    store_error: str | None = None  # why the store could not take them
    report_error: str | None = None  # every result is stored, but the matrix or the page could not be written: why

    @property
    def all_ran(self) -> bool:
        """Every cell ran, whatever its verdict (pass, flaky, fail, crash, timeout); infra and env errors mean some could not."""
        return not any(r.status in INFRA for r in self.results)


ProgressFn = Callable[[int, int, CellResult], None]


def make_run_id(job_name: str) -> str:
    return f"{safe_part(job_name)}-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def spool_dir(run_id: str) -> Path:
    return settings.spool_dir() / safe_part(run_id)


def run(
    job: JobSpec | None = None,
    *,
    store: Store | None = None,
    address: str | None = None,
    run_id: str | None = None,
    resume: bool = False,
    max_parallel: int | None = None,
    progress: ProgressFn | None = None,
    events: EventFn | None = None,
    rebuild_envs: bool = False,
    write_matrix: bool = True,
) -> RunOutcome:
    """Run every cell of ``job`` on Ray and aggregate the results into the store.

    Args:
        job: a validated job spec (see ``load_job``); with ``resume``, optional (the run's own is used).
        store: where results go; default ``$FARM_STORE``, else ``./farm-results``.
        address: a Ray cluster to join; default ``RAY_ADDRESS``, else a local Ray on 127.0.0.1.
        run_id: defaults to ``<job>-<timestamp>-<random>``; required with ``resume``.
        resume: continue run ``run_id``: flush its spooled results, skip cells whose verdict is settled,
            run the rest (no result, an infra or env error, or a failure not yet rechecked) as new attempts.
        max_parallel: cells at once; default what the live nodes hold (see ``farm.runner.placement``).
        progress: called when a cell has its final result, with (done, total, result).
        events: called for every attempt that starts, every retry, every cell done (the live display).
        rebuild_envs: rebuild the job's pip/uv envs on each node once, even if cached (failed ones included).
        write_matrix: False leaves the matrix, exports and page alone (a bisection's one-cell steps: results only).

    Raises:
        StoreError: the store cannot be written when the run starts (nothing has run then).
        ResourceError: some cell asks for more than any node of the cluster has (nothing has run then).
    """
    store = store or open_store()
    plan = _plan(store, job, run_id, resume)
    ray = _start(plan, store, address)
    pending = _execute(plan, ray, max_parallel=max_parallel, progress=progress, events=events,
                       rebuild_before=time.time() if rebuild_envs else None)
    return _finish(plan, store, pending, write_matrix)


@dataclass
class _Plan:
    """What a run will do, decided before any compute is spent."""

    job: JobSpec
    run_id: str
    manifest: RunManifest
    writer: ResultWriter
    # Every attempt of every cell, as the store holds them: read once when resuming, then kept as results come,
    # so the matrix at the end needs no second read of the store (at 100 000 cells that read was most of the
    # aggregation, bench/RESULTS.md).
    scan: RunScan
    todo: list[Work]  # the cells that owe an attempt, longest first
    declared: list[tuple[Cell, str]]  # unsupported cells and why: recorded, never run
    resume: bool


def _plan(store: Store, job: JobSpec | None, run_id: str | None, resume: bool) -> _Plan:
    """The run's job, manifest, spool and the cells it owes; nothing is written to the store yet."""
    try:
        store.check()  # unreachable, no bucket, bad credentials: say so before any compute is spent
    except StoreUnavailable as exc:
        raise StoreUnavailable(f"{exc}; nothing has run: check the endpoint and network, then run again") from None
    if resume and not run_id:
        raise JobSpecError("resuming needs the run id: farm run --resume RUN_ID")
    if not resume and job is None:
        raise JobSpecError("give a job spec to run, or --resume RUN_ID")
    run_id = run_id or make_run_id(job.name if job else "run")
    # Before the manifest: a spool left here for another store stops the run with nothing written.
    writer = ResultWriter(store, Spool(spool_dir(run_id), store.url))
    scan = RunScan()
    if resume:
        spooled = len(writer.spool.pending())
        writer.flush()  # what an earlier session spooled goes first: its manifest is read back, its results count
        manifest = _resumed_manifest(store, run_id, job, spooled, writer.spool.dir)
        job = _resumed_job(manifest, job)
        scan = _attempts(store, run_id, writer.spool.results())
    else:
        assert job is not None
        manifest = _new_manifest(job, run_id)
    past = {cell_id: known_from(runs) for cell_id, runs in recent_outcomes(store, job.name, exclude_run=run_id).items()}
    todo = longest_first(_owed(manifest.cells, scan.attempts, job, resume, past), expected_seconds(store, job.name))
    reasons = {w.cell.id: job.unsupported_reason(w.cell.axes()) for w in todo}
    declared = [(w.cell, reason) for w in todo if (reason := reasons[w.cell.id])]
    todo = [w for w in todo if not reasons[w.cell.id]]
    if resume:
        log.info("resuming %s: %d of %d cells to run; the others have a verdict", run_id, len(todo),
                 len(manifest.cells))
    return _Plan(job, run_id, manifest, writer, scan, todo, declared, resume)


def _start(plan: _Plan, store: Store, address: str | None) -> Any:
    """Join Ray if any cell is to run, check that every cell fits a node, then write the manifest."""
    ray = connect(address) if plan.todo else None
    if ray is not None:
        # Before the manifest: a request no node can hold is the job's error, and nothing has run.
        check_feasible([request_for(w.cell, plan.job) for w in plan.todo], alive_nodes(ray), plan.job.name)
    manifest = plan.manifest
    if plan.resume:
        manifest.resumes.append(_launch(ray))
        manifest.finished_at = None
        write_manifest(store, manifest)
    else:
        if ray is not None:
            manifest.ray_address = ray.get_runtime_context().gcs_address
        write_manifest(store, manifest, create=True)  # an existing run is never replaced: it says to --resume
    return ray


def _execute(plan: _Plan, ray: Any, *, max_parallel: int | None, progress: ProgressFn | None,
             events: EventFn | None, rebuild_before: float | None) -> list[Path]:
    """Record the declared cells, run the others; returns what is still spooled when the writer closes."""
    done = 0

    def record(result: CellResult) -> None:
        plan.writer.add_result(result)  # on local disk before anything else happens
        plan.scan.attempts.setdefault(result.cell_id, []).append(result)

    def on_event(event: Event) -> None:
        nonlocal done
        if event.kind is EventKind.DONE and event.result is not None:
            done += 1
            if progress:
                progress(done, len(plan.todo), event.result)
        if events:
            events(event)

    history = plan.scan.attempts
    manifest = plan.manifest
    plan.writer.start()
    try:
        for cell, reason in plan.declared:
            record(_unsupported(cell, reason, plan.run_id))
        if plan.todo:
            scheduler = Scheduler(ray, plan.job, CellSettings.from_job(plan.job), plan.run_id, record,
                                  parallel=max_parallel, events=on_event, rebuild_before=rebuild_before,
                                  warm=warm_nodes(a for attempts in history.values() for a in attempts))
            scheduler.run(plan.todo)
            manifest.envs = scheduler.envs.summary()
        manifest.finished_at = utcnow()
        manifest.counts = status_counts(plan.scan.latest.values())
        plan.writer.add_manifest(manifest)
    finally:
        pending = plan.writer.close()  # also on Ctrl-C: what was recorded reaches the store or stays spooled
    return pending


def _finish(plan: _Plan, store: Store, pending: list[Path], write_matrix: bool) -> RunOutcome:
    """The outcome; with everything in the store, the matrix, exports and page too."""
    manifest = plan.manifest
    outcome = RunOutcome(plan.run_id, list(plan.scan.latest.values()), None, None, store, manifest.counts,
                         ran=len(plan.todo), spooled=pending, spool_dir=plan.writer.spool.dir)
    if pending:
        outcome.store_error = str(plan.writer.error) if plan.writer.error else "the store did not take them"
        return outcome
    if write_matrix:
        try:
            outcome.matrix_key, outcome.page_key = aggregate(store, plan.run_id, plan.scan, manifest=manifest)
        except (StoreError, PageError) as exc:  # e.g. a full disk: the results are safe, the cells ran
            outcome.report_error = str(exc)
    return outcome


def _unsupported(cell: Cell, reason: str, run_id: str) -> CellResult:
    now = utcnow()
    return CellResult(run_id=run_id, cell_id=cell.id, cell=cell, status=CellStatus.UNSUPPORTED, started_at=now,
                      finished_at=now, error=ErrorInfo(type="unsupported", message=reason, origin="job"))


def _attempts(store: Store, run_id: str, spooled: list[CellResult]) -> RunScan:
    """Every attempt of every cell of a run, oldest first: the store's and those still in the spool."""
    scan = scan_run(store, run_id, all_attempts=True)
    attempts = scan.attempts
    for result in spooled:
        known = attempts.setdefault(result.cell_id, [])
        if all(a.attempt != result.attempt for a in known):
            known.append(result)
    for known in attempts.values():
        known.sort(key=lambda r: r.attempt)
    return scan


def _owed(cells: list[Cell], history: dict[str, list[CellResult]], job: JobSpec, resume: bool,
          past: dict[str, Known]) -> list[Work]:
    """The cells that owe an attempt: no result yet, or the retry policy wants another (a resume's fresh budget).
    ``past``: what earlier runs of the job say about each cell (its known root causes, its flip rate)."""
    todo = []
    for cell in cells:
        attempts = history.get(cell.id, [])
        known = past.get(cell.id, Known())
        if not attempts:
            todo.append(Work(cell, reason="resumed: no result from the session that died" if resume else None, known=known))
            continue
        decision = decide(attempts, job.retries, infra_outcomes=0, known=known)
        if decision.retry:
            avoid = {a.node_id for a in attempts if a.status in INFRA and a.node_id}
            todo.append(Work(cell, list(attempts), reason=decision.reason, avoid=avoid, prefer=decision.prefer_node,
                             known=known))
    return todo


def longest_first(todo: list[Work], expected: dict[str, float]) -> list[Work]:
    """Cells with a known run time (the job's previous run) longest first; the others, in the job's order, before them.

    Longest-first keeps a long cell from starting last and running alone at the end (bench/RESULTS.md,
    "makespan"). A cell never run before goes first: it may be the longest, and a new job keeps its order.
    """
    return sorted(todo, key=lambda w: (w.cell.id in expected, -expected.get(w.cell.id, 0.0)))


def _new_manifest(job: JobSpec, run_id: str) -> RunManifest:
    launch = _launch(None)
    return RunManifest(
        run_id=run_id,
        job_name=job.name,
        job=job.model_dump(mode="json"),
        cells=expand(job),
        launched_by=launch.launched_by,
        farm_version=launch.farm_version,
        git_sha=launch.git_sha,
        started_at=launch.at,
    )


def _resumed_manifest(store: Store, run_id: str, job: JobSpec | None, spooled: int, spool: Path) -> RunManifest:
    """The run's manifest from the store. When the store lost it (an in-memory S3 restarted) but has results of
    the run (``spooled`` of them just flushed from ``spool``): a new one from the job file given, or one line
    saying to give it."""
    try:
        return read_manifest(store, run_id)
    except StoreUnavailable:
        raise
    except StoreError as exc:
        found = len(store.list(cells_prefix(run_id)))
        if not found:
            raise
        where = f"{found} result(s) of it are in the store ({spooled} just flushed from the spool {spool})"
        if job is None:
            raise StoreError(f"{exc}; but {where}: give its job file too (farm run JOB --resume {run_id}) to start "
                             "its manifest again and keep them") from None
        log.warning("%s; but %s: its manifest starts again from job %s", exc, where, job.name)
        return _new_manifest(job, run_id)


def _resumed_job(manifest: RunManifest, job: JobSpec | None) -> JobSpec:
    """The run's own job spec; a job given with --resume must expand to the same cells."""
    own = parse_job(manifest.job, origin=f"run {manifest.run_id}'s manifest")
    if job is not None and [c.id for c in expand(job)] != [c.id for c in manifest.cells]:
        raise JobSpecError(f"job {job.name!r} does not expand to the cells of run {manifest.run_id}; "
                           f"resume without a job file (farm run --resume {manifest.run_id}) to use the run's own")
    return own


def _launch(ray: Any) -> Launch:
    return Launch(
        launched_by=f"{getpass.getuser()}@{socket.gethostname()}",
        at=utcnow(),
        farm_version=__version__,
        git_sha=_git_sha(),
        ray_address=ray.get_runtime_context().gcs_address if ray is not None else None,
    )


def spool_report(outcome: RunOutcome) -> str:
    """What is spooled where, and how to get it into the store: for a run that ended with the store away."""
    results = sum(1 for p in outcome.spooled if p.name != "manifest.json")
    manifest = " and the run's manifest" if any(p.name == "manifest.json" for p in outcome.spooled) else ""
    return (f"{results} result(s){manifest} of run {outcome.run_id} are spooled in {outcome.spool_dir}, "
            f"not yet in {outcome.store.url} ({outcome.store_error}); once the store is reachable, "
            f"`farm run --resume {outcome.run_id}` with the same --store flushes them (from this machine)")



def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None
