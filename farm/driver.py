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
import json
import logging
import math
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from farm import __version__
from farm.aggregate import aggregate
from farm.cells import Cell, expand
from farm.envs import EnvFailure, PreparedEnv
from farm.envs.launch import EnvLauncher
from farm.errors import JobSpecError, StoreUnavailable
from farm.execute import CellSettings, capture_output, engine_environment, execute_cell, farm_home, log_tail
from farm.results import CellResult, CellStatus, EnvFacts, ErrorInfo, Launch, RunManifest, utcnow
from farm.spec import JobSpec, parse_job
from farm.store import (
    ResultWriter,
    Spool,
    Store,
    open_store,
    read_manifest,
    safe_part,
    scan_run,
    write_manifest,
)

log = logging.getLogger("farm.driver")

# Where each cell's process writes its log on its node, so a crash still leaves a tail to read.
CELL_LOG_DIR = "cell-logs"
# Where the driver keeps results until the store has them (see farm.store.spool).
SPOOL_DIR = "spool"


@dataclass
class RunOutcome:
    run_id: str
    results: list[CellResult]  # the latest result of every cell that has one, this session's and earlier ones
    matrix_key: str | None  # None while results are still spooled (the store was unreachable at the end)
    page_key: str | None
    store: Store
    counts: dict[str, int] = field(default_factory=dict)
    ran: int = 0  # cells run by this call (a resume skips cells that already have a verdict)
    spooled: list[Path] = field(default_factory=list)  # documents still waiting for the store
    spool_dir: Path | None = None
    store_error: str | None = None  # why the store could not take them

    @property
    def all_ran(self) -> bool:
        """Every cell reached a verdict (pass or fail); infra and env errors mean some could not run."""
        return not any(r.status in (CellStatus.INFRA_ERROR, CellStatus.ENV_ERROR) for r in self.results)


ProgressFn = Callable[[int, int, CellResult], None]


def make_run_id(job_name: str) -> str:
    return f"{safe_part(job_name)}-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def spool_dir(run_id: str) -> Path:
    return farm_home() / SPOOL_DIR / safe_part(run_id)


def run(
    job: JobSpec | None = None,
    *,
    store: Store | None = None,
    address: str | None = None,
    run_id: str | None = None,
    resume: bool = False,
    max_parallel: int | None = None,
    progress: ProgressFn | None = None,
    rebuild_envs: bool = False,
    write_matrix: bool = True,
) -> RunOutcome:
    """Run every cell of ``job`` on Ray and aggregate the results into the store.

    Args:
        job: a validated job spec (see ``load_job``); with ``resume``, optional (the run's own is used).
        store: where results go; default ``$FARM_STORE``, else ``./farm-results``.
        address: a Ray cluster to join; default ``RAY_ADDRESS``, else a local Ray on 127.0.0.1.
        run_id: defaults to ``<job>-<timestamp>-<random>``; required with ``resume``.
        resume: continue run ``run_id``: flush its spooled results, skip cells that have a verdict,
            run the rest (cells without a result, or with an infra or env error) as new attempts.
        max_parallel: cells at once; default what the cluster's resources allow.
        progress: called after each cell with (done, total, result).
        rebuild_envs: rebuild the job's pip/uv envs on each node once, even if cached (failed ones included).
        write_matrix: False leaves the matrix, exports and page alone (a bisection's one-cell steps: results only).

    Raises:
        StoreError: the store cannot be written when the run starts (nothing has run then).
    """
    store = store or open_store()
    try:
        store.check()  # unreachable, no bucket, bad credentials: say so before any compute is spent
    except StoreUnavailable as exc:
        raise StoreUnavailable(f"{exc}; nothing has run: check the endpoint and network, then run again") from None
    if resume:
        if not run_id:
            raise JobSpecError("resuming needs the run id: farm run --resume RUN_ID")
        manifest = read_manifest(store, run_id)
        job = _resumed_job(manifest, job)
    else:
        if job is None:
            raise JobSpecError("give a job spec to run, or --resume RUN_ID")
        run_id = run_id or make_run_id(job.name)
        manifest = _new_manifest(job, run_id)
    assert job is not None
    # Before the manifest: a spool left here for another store stops the run with nothing written.
    writer = ResultWriter(store, Spool(spool_dir(run_id), store.url))
    if not resume:
        write_manifest(store, manifest, create=True)  # an existing run is never replaced: it says to --resume

    done: dict[str, CellResult] = {}
    if resume:
        writer.flush()  # results spooled by an earlier session go first, so they count as done
        done = scan_run(store, run_id).latest | {r.cell_id: r for r in writer.spool.results()}
    # Cells that could not run (infra, or an env that did not build) run again; verdicts stay.
    todo = [c for c in manifest.cells
            if c.id not in done or done[c.id].status in (CellStatus.INFRA_ERROR, CellStatus.ENV_ERROR)]
    first_attempt = {cell_id: result.attempt + 1 for cell_id, result in done.items()}
    if resume:
        log.info("resuming %s: %d of %d cells to run; the others have a verdict", run_id, len(todo),
                 len(manifest.cells))

    ray = connect(address) if todo else None
    if resume:
        manifest.resumes.append(_launch(ray))
        manifest.finished_at = None
        write_manifest(store, manifest)
    elif ray is not None:
        manifest.ray_address = ray.get_runtime_context().gcs_address
        write_manifest(store, manifest)

    results: list[CellResult] = []

    def record(result: CellResult) -> None:
        result.attempt = max(result.attempt, first_attempt.get(result.cell_id, 1))
        writer.add_result(result)  # on local disk before anything else happens
        results.append(result)
        if progress:
            progress(len(results), len(todo), result)

    writer.start()
    try:
        if todo:
            settings = CellSettings.from_job(job)
            rebuild_before = time.time() if rebuild_envs else None
            envs = _schedule(ray, todo, settings, job, run_id, max_parallel or capacity(ray, job), record, rebuild_before)
            manifest.envs = envs.summary()
        latest = done | {r.cell_id: r for r in results}
        manifest.finished_at = utcnow()
        manifest.counts = _counts(list(latest.values()))
        writer.add_manifest(manifest)
    finally:
        pending = writer.close()  # also on Ctrl-C: what was recorded reaches the store or stays spooled
    outcome = RunOutcome(run_id, list(latest.values()), None, None, store, manifest.counts, ran=len(results),
                         spooled=pending, spool_dir=writer.spool.dir)
    if pending:
        outcome.store_error = str(writer.error) if writer.error else "the store did not take them"
        return outcome
    if write_matrix:
        outcome.matrix_key, outcome.page_key = aggregate(store, run_id)
    return outcome


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


def connect(address: str | None = None) -> Any:
    """Join the given cluster (or RAY_ADDRESS, e.g. under `ray job submit`), else start a local Ray."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        # Without this, a local Ray also listens on the machine's other addresses and 0.0.0.0.
        # Never set when joining a real cluster, whose nodes must reach each other.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        return ray
    env_vars = {"FARM_HOME": str(farm_home()), **engine_environment(farm_home())}
    if os.environ.get("FARM_ZOO_DIR"):
        env_vars["FARM_ZOO_DIR"] = os.environ["FARM_ZOO_DIR"]
    # Under `ray job submit`, Ray merges this with the job's runtime_env and refuses a variable
    # set by both (even to the same value): the job's own settings win, and they are in our env already.
    job_env = _job_runtime_env().get("env_vars") or {}
    runtime_env = {"env_vars": {k: v for k, v in env_vars.items() if k not in job_env}}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    else:
        ray.init(
            # "local": always a Ray of our own. Without an address, ray.init joins the newest Ray
            # already started on this machine (another user's, another test's), whose workers run other code.
            address="local",
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            runtime_env=runtime_env,
            # A cell's log goes to its own file (and the store), not interleaved on the terminal.
            log_to_driver=False,
        )
    return ray


def _job_runtime_env() -> dict[str, Any]:
    """The runtime_env of the Ray job this driver runs in (empty outside `ray job submit`)."""
    try:
        # Ray's job supervisor hands the entrypoint its job config in this variable (ray 2.x).
        return dict(json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")).get("runtime_env") or {})
    except (ValueError, AttributeError):
        return {}


def capacity(ray: Any, job: JobSpec) -> int:
    """How many cells fit the cluster at once, so no cell waits for resources while its timeout runs."""
    total = ray.cluster_resources()
    fits = [math.floor(total.get("CPU", 0) / job.resources.num_cpus)]
    if job.resources.num_gpus:
        fits.append(math.floor(total.get("GPU", 0) / job.resources.num_gpus))
    return max(1, min(fits))


class CellActor:
    """Lives for exactly one cell, in its own worker process; killed when the cell is done."""

    def run(self, cell_json: str, settings_json: str, run_id: str, attempt: int, log_path: str) -> str:
        path = Path(log_path)
        with capture_output(path):
            result = execute_cell(
                Cell.model_validate_json(cell_json), CellSettings.model_validate_json(settings_json), run_id, attempt, path
            )
        result.log_tail = log_tail(path)
        return result.model_dump_json()


@dataclass
class _Slot:
    """One cell in flight: first its env's preparation (``future`` of the task), then its actor's run."""

    cell: Cell
    future: Any
    deadline: float
    log_path: Path
    actor: Any = None
    group: Any = None  # the cell's placement group, when its env is prepared on its node
    prepared: PreparedEnv | None = None
    started: float = field(default_factory=time.monotonic)
    prepare_s: float | None = None  # from reserving the node to the env ready (or failed): placement, lock, build

    @property
    def preparing(self) -> bool:
        return self.actor is None and self.group is not None


def _schedule(
    ray: Any,
    cells: list[Cell],
    settings: CellSettings,
    job: JobSpec,
    run_id: str,
    parallel: int,
    record: Callable[[CellResult], None],
    rebuild_before: float | None = None,
) -> EnvLauncher:
    """Run every cell; returns the env launcher, which knows how each engine's env was prepared."""
    remote_actor = ray.remote(CellActor)
    envs = EnvLauncher(ray, job.resources, rebuild_before=rebuild_before)
    queue = list(cells)
    in_flight: dict[Any, _Slot] = {}
    settings_json = settings.model_dump_json()

    def start_actor(slot: _Slot, **options: Any) -> None:
        slot.actor = remote_actor.options(
            num_cpus=job.resources.num_cpus,
            num_gpus=job.resources.num_gpus,
            # A dead engine must stay dead: a restart would hide the crash and rerun a broken cell.
            max_restarts=0,
            **options,
        ).remote()
        slot.future = slot.actor.run.remote(slot.cell.model_dump_json(), settings_json, run_id, 1, str(slot.log_path))
        slot.deadline = time.monotonic() + job.timeout_s  # the cell's timeout starts when its env is ready
        in_flight[slot.future] = slot

    def finish(slot: _Slot, result: CellResult) -> None:
        if slot.actor is not None:
            ray.kill(slot.actor, no_restart=True)
        envs.release(slot.group)
        if slot.prepare_s is not None:
            result.timings["env_prepare"] = slot.prepare_s
        record(result)

    while queue or in_flight:
        while queue and len(in_flight) < parallel:
            cell = queue.pop(0)
            log_path = farm_home() / CELL_LOG_DIR / safe_part(run_id) / f"{cell.id}.attempt-1.log"
            failure = envs.failure(cell.engine)
            if failure is not None:  # this engine's env already failed in this run: no second build
                record(_env_error(cell, run_id, failure))
                continue
            slot = _Slot(cell, None, 0.0, log_path)
            if envs.needs_prepare(cell.engine):
                slot.future, slot.group = envs.submit(cell.engine)
                slot.deadline = envs.deadline(cell.engine)
                in_flight[slot.future] = slot
            else:
                start_actor(slot)
        next_deadline = min(slot.deadline for slot in in_flight.values())
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=max(0.0, next_deadline - time.monotonic()))
        for future in ready:
            slot = in_flight.pop(future)
            if slot.preparing:
                slot.prepare_s = round(time.monotonic() - slot.started, 3)
                outcome = envs.outcome(future, slot.cell.engine)
                if isinstance(outcome, EnvFailure):
                    finish(slot, _env_error(slot.cell, run_id, outcome))
                    continue
                slot.prepared = outcome
                start_actor(slot, **envs.actor_options(outcome, slot.group))
                continue
            finish(slot, _collect(ray, future, slot.cell, run_id, slot.log_path, env_prepared=slot.prepared is not None))
        now = time.monotonic()
        for future in [f for f, slot in in_flight.items() if slot.deadline <= now]:
            slot = in_flight.pop(future)
            if slot.preparing:
                slot.prepare_s = round(now - slot.started, 3)
                finish(slot, _env_error(slot.cell, run_id, envs.timed_out(future, slot.cell.engine, now - slot.started)))
                continue
            finish(slot, _ended_without_result(slot.cell, run_id, CellStatus.TIMEOUT,
                                               f"no result within {job.timeout_s:.0f}s; actor killed", slot.log_path))
    return envs


def _env_error(cell: Cell, run_id: str, failure: EnvFailure) -> CellResult:
    """A cell whose engine env could not be prepared: an infra result, never a compatibility verdict."""
    message = failure.message if repr(failure.engine) in failure.message else f"engine {failure.engine!r}: {failure.message}"
    return CellResult(
        run_id=run_id,
        cell_id=cell.id,
        cell=cell,
        status=CellStatus.ENV_ERROR,
        error=ErrorInfo(type="env_error", message=message[:2000]),
        env=EnvFacts(hostname=failure.hostname),
        log_tail=failure.log_tail,
        finished_at=utcnow(),
    )


def _collect(ray: Any, future: Any, cell: Cell, run_id: str, log_path: Path, *, env_prepared: bool = False) -> CellResult:
    from ray.exceptions import ActorDiedError, RayActorError, RuntimeEnvSetupError

    try:
        return CellResult.model_validate_json(ray.get(future))
    except RuntimeEnvSetupError as exc:
        # Ray could not start the actor in the engine's env (a py_executable or image that broke after its check).
        status = CellStatus.ENV_ERROR if env_prepared else CellStatus.INFRA_ERROR
        return _ended_without_result(cell, run_id, status, f"environment setup failed: {exc}", log_path)
    except (ActorDiedError, RayActorError) as exc:
        return _ended_without_result(cell, run_id, CellStatus.CRASH, _first_line(str(exc)), log_path)
    except Exception as exc:  # anything else Ray raises means the farm could not run the cell
        return _ended_without_result(cell, run_id, CellStatus.INFRA_ERROR, f"{type(exc).__name__}: {exc}", log_path)


def _ended_without_result(cell: Cell, run_id: str, status: CellStatus, message: str, log_path: Path) -> CellResult:
    return CellResult(
        run_id=run_id,
        cell_id=cell.id,
        cell=cell,
        status=status,
        error=ErrorInfo(type=status.value, message=message[:2000]),
        log_tail=log_tail(log_path),
        finished_at=utcnow(),
    )


def _first_line(text: str) -> str:
    return next((line for line in text.splitlines() if line.strip()), text)[:500]


def _counts(results: list[CellResult]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for result in results:
        counts[result.status.value] = counts.get(result.status.value, 0) + 1
    return counts


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None
