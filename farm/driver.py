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
from farm.execute import CellSettings, capture_output, engine_environment, execute_cell, farm_home, log_tail
from farm.results import CellResult, CellStatus, ErrorInfo, RunManifest, utcnow
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
        """Every cell reached a verdict (pass or fail); infra errors mean some could not run."""
        return not any(r.status == CellStatus.INFRA_ERROR for r in self.results)


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
) -> RunOutcome:
    """Run every cell of ``job`` on Ray and aggregate the results into the store.

    Args:
        job: a validated job spec (see ``load_job``).
        store: where results go; default ``./farm-results``.
        address: a Ray cluster to join; default ``RAY_ADDRESS``, else a local Ray on 127.0.0.1.
        run_id: defaults to ``<job>-<timestamp>-<random>``.
        max_parallel: cells at once; default what the cluster's resources allow.
        progress: called after each cell with (done, total, result).
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

    _schedule(ray, cells, settings, job, run_id, parallel, record)

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


def _schedule(
    ray: Any,
    cells: list[Cell],
    settings: CellSettings,
    job: JobSpec,
    run_id: str,
    parallel: int,
    record: Callable[[CellResult], None],
) -> None:
    remote_actor = ray.remote(CellActor)
    queue = list(cells)
    in_flight: dict[Any, tuple[Cell, Any, float, Path]] = {}
    settings_json = settings.model_dump_json()
    while queue or in_flight:
        while queue and len(in_flight) < parallel:
            cell = queue.pop(0)
            log_path = farm_home() / CELL_LOG_DIR / safe_part(run_id) / f"{cell.id}.attempt-1.log"
            actor = remote_actor.options(
                num_cpus=job.resources.num_cpus,
                num_gpus=job.resources.num_gpus,
                # A dead engine must stay dead: a restart would hide the crash and rerun a broken cell.
                max_restarts=0,
            ).remote()
            future = actor.run.remote(cell.model_dump_json(), settings_json, run_id, 1, str(log_path))
            in_flight[future] = (cell, actor, time.monotonic() + job.timeout_s, log_path)
        next_deadline = min(deadline for _, _, deadline, _ in in_flight.values())
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=max(0.0, next_deadline - time.monotonic()))
        for future in ready:
            cell, actor, _, log_path = in_flight.pop(future)
            record(_collect(ray, future, cell, run_id, log_path))
            ray.kill(actor, no_restart=True)
        now = time.monotonic()
        for future in [f for f, (_, _, deadline, _) in in_flight.items() if deadline <= now]:
            cell, actor, _, log_path = in_flight.pop(future)
            ray.kill(actor, no_restart=True)
            record(_ended_without_result(cell, run_id, CellStatus.TIMEOUT, f"no result within {job.timeout_s:.0f}s; actor killed", log_path))


def _collect(ray: Any, future: Any, cell: Cell, run_id: str, log_path: Path) -> CellResult:
    from ray.exceptions import ActorDiedError, RayActorError, RuntimeEnvSetupError

    try:
        return CellResult.model_validate_json(ray.get(future))
    except RuntimeEnvSetupError as exc:
        return _ended_without_result(cell, run_id, CellStatus.INFRA_ERROR, f"environment setup failed: {exc}", log_path)
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
