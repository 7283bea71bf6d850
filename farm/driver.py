"""The Ray driver: one actor per cell, bounded concurrency, every outcome recorded.

Results travel from the actor back to the driver, and only the driver writes to
the store. The driver has to write the results of cells whose actor died (crash,
timeout, infra) anyway, so one writer keeps a single path for spooling and
create-once semantics; a result is a few KB, so the return trip costs nothing.
"""

from __future__ import annotations

import getpass
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
from farm.execute import CellSettings, capture_output, engine_environment, execute_cell, farm_home, log_tail
from farm.results import CellResult, CellStatus, EnvFacts, ErrorInfo, RunManifest, utcnow
from farm.spec import JobSpec
from farm.store import Store, manifest_key, open_store, put_result, safe_part

# Where each cell's process writes its log on its node, so a crash still leaves a tail to read.
CELL_LOG_DIR = "cell-logs"


@dataclass
class RunOutcome:
    run_id: str
    results: list[CellResult]
    matrix_key: str
    page_key: str
    store: Store
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def all_ran(self) -> bool:
        """Every cell reached a verdict (pass or fail); infra and env errors mean some could not run."""
        return not any(r.status in (CellStatus.INFRA_ERROR, CellStatus.ENV_ERROR) for r in self.results)


ProgressFn = Callable[[int, int, CellResult], None]


def make_run_id(job_name: str) -> str:
    return f"{safe_part(job_name)}-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def run(
    job: JobSpec,
    *,
    store: Store | None = None,
    address: str | None = None,
    run_id: str | None = None,
    max_parallel: int | None = None,
    progress: ProgressFn | None = None,
    rebuild_envs: bool = False,
) -> RunOutcome:
    """Run every cell of ``job`` on Ray and aggregate the results into the store.

    Args:
        job: a validated job spec (see ``load_job``).
        store: where results go; default ``./farm-results``.
        address: a Ray cluster to join; default ``RAY_ADDRESS``, else a local Ray on 127.0.0.1.
        run_id: defaults to ``<job>-<timestamp>-<random>``.
        max_parallel: cells at once; default what the cluster's resources allow.
        progress: called after each cell with (done, total, result).
        rebuild_envs: rebuild the job's pip/uv envs on each node once, even if cached (failed ones included).
    """
    store = store or open_store()
    run_id = run_id or make_run_id(job.name)
    cells = expand(job)
    ray = connect(address)
    manifest = RunManifest(
        run_id=run_id,
        job_name=job.name,
        job=job.model_dump(mode="json"),
        cells=cells,
        launched_by=f"{getpass.getuser()}@{socket.gethostname()}",
        farm_version=__version__,
        git_sha=_git_sha(),
        ray_address=ray.get_runtime_context().gcs_address,
        started_at=utcnow(),
    )
    store.put(manifest_key(run_id), manifest.model_dump_json(indent=1).encode())

    settings = CellSettings.from_job(job)
    parallel = max_parallel or capacity(ray, job)
    results: list[CellResult] = []

    def record(result: CellResult) -> None:
        put_result(store, result)
        results.append(result)
        if progress:
            progress(len(results), len(cells), result)

    rebuild_before = time.time() if rebuild_envs else None
    envs = _schedule(ray, cells, settings, job, run_id, parallel, record, rebuild_before)

    manifest.envs = envs.summary()
    manifest.finished_at = utcnow()
    manifest.counts = _counts(results)
    store.put(manifest_key(run_id), manifest.model_dump_json(indent=1).encode(), overwrite=True)
    matrix_key, page_key = aggregate(store, run_id)
    return RunOutcome(run_id, results, matrix_key, page_key, store, manifest.counts)


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
    runtime_env = {"env_vars": env_vars}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    else:
        ray.init(
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            runtime_env=runtime_env,
            # A cell's log goes to its own file (and the store), not interleaved on the terminal.
            log_to_driver=False,
        )
    return ray


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
