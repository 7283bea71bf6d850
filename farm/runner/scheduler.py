"""The scheduling loop: every cell attempt from its resource request to its result, with deadlines and retries.

An attempt moves through phases, each waiting on one Ray future:

    placing    the cell's placement group is reserved (tensor parallel: STRICT_PACK;   group.ready()
               an engine env to prepare: one bundle), on one node
    preparing  the engine's env is prepared in bundle 0 (``farm.envs``)              prepare task
    starting   the cell's actor is placed and its process starts                     actor.where()
    running    the cell runs; its clock (timeout_s) starts when the actor does        actor.run()
    reading    the actor died or was killed: its log is read on its node             read_log, pinned there

Deadlines: ``start_timeout_s`` for placing and starting (extended while our own cells fill
the cluster: a busy cluster delays a cell, it never fails it); the env kind's build timeout
for preparing (twice it, plus a grace: a build of the same env by another cell holds the
node's lock); ``timeout_s`` for running, plus a grace for faulthandler's dump of the stacks;
``LOG_READ_TIMEOUT_S`` for reading (a node that does not answer is lost). At most
``parallel`` attempts hold or wait for resources at once: what the live nodes hold,
recomputed as nodes come and go; an attempt that waits for room has no clock running but
the start deadline's, which a busy cluster extends.

Every attempt ends in one result, recorded (spooled, then stored) before the retry policy
(``farm.runner.retry``) decides whether another attempt follows; infra retries avoid the nodes
where the cell met its infra outcomes.

An engine env that failed to prepare (``env_error``) is remembered per engine and node:
the engine's later cells go to other nodes, and once it failed on ``retries.infra_attempts``
nodes, or on every node that can hold the cell, its cells get that ``env_error`` at once,
with no build and no retry (each node's env cache also keeps a failed build: ``farm.envs.cache``).

Cold starts: the loop knows, per engine, the nodes where an attempt of one of its cells has
ended in this run (whatever its outcome: a build killed at its timeout still leaves caches
behind, and in any case a node's second build is warm by definition), seeded from the
attempts a resumed run read back. An attempt that starts on a node where its engine is not
warm yet is cold (``CellResult.cold_start``; cells that start together on a fresh node are
all cold). A cold attempt's timeout is retried (``farm.runner.retry``), preferably on the same
node: a plain actor asks Ray for it with a soft node affinity; a placement group goes where
there is room.
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from farm.cell import gpu_share
from farm.cell.actor import CellActor, read_log
from farm.cell.execute import CellSettings
from farm.envs import EnvFailure, PreparedEnv
from farm.envs.launch import EnvLauncher
from farm.errors import FarmError
from farm.model.cells import Cell
from farm.model.results import CellResult, CellStatus, EnvFacts, utcnow
from farm.model.spec import JobSpec
from farm.runner import outcomes, placement
from farm.runner.attempt import Attempt, Event, EventFn, EventKind, Phase, Work, group_node
from farm.runner.placement import CellRequest
from farm.runner.retry import INFRA, cold_timeout, decide, settle
from farm.settings import cell_log_dir
from farm.store import safe_part
from farm.text import first_line

log = logging.getLogger("farm.runner.scheduler")

# After the cell's timeout, before the kill: faulthandler's dump of every thread reaches the log.
KILL_GRACE_S = 3.0
# A node that cannot run a tiny task that reads a file in this time is lost (Ray marks a silent node dead in ~30 s).
LOG_READ_TIMEOUT_S = 60.0
# How often the live nodes (and so the number of cells that fit) are read again.
NODES_TTL_S = 2.0
# The loop wakes at least this often, so the progress display's clock moves.
TICK_S = 1.0
NODE_ID_LABEL = "ray.io/node-id"
# Where an env failed when its node could not be told: it counts as a node tried, but is no label to avoid.
UNKNOWN_NODE = "?"


class Scheduler:
    def __init__(self, ray: Any, job: JobSpec, settings: CellSettings, run_id: str,
                 record: Callable[[CellResult], None], *, parallel: int | None = None, events: EventFn | None = None,
                 rebuild_before: float | None = None, warm: Iterable[tuple[str, str]] = ()):
        self.ray = ray
        self.job = job
        self.settings_json = settings.model_dump_json()
        self.run_id = run_id
        self.record = record
        self.fixed_parallel = parallel
        self.events = events or (lambda event: None)
        self.actor_class = ray.remote(CellActor)
        self.reader = ray.remote(read_log)
        self.envs = EnvLauncher(ray, rebuild_before=rebuild_before)
        self.env_failed: dict[str, dict[str, EnvFailure]] = {}  # engine → node id → why its env failed there
        # (engine, node id): an attempt of a cell with that engine has ended on that node in this run.
        self.warm: set[tuple[str, str]] = set(warm)
        self.session = secrets.token_hex(3)
        self.in_flight: dict[Any, Attempt] = {}
        self._requests: list[CellRequest] = []
        self._nodes: list[dict[str, Any]] = []
        self._nodes_read = -NODES_TTL_S

    # ---- the loop ----

    def run(self, work: list[Work]) -> None:
        queue = deque(work)
        self._requests = list({placement.request_for(w.cell, self.job) for w in work})
        bound = "" if self.fixed_parallel else placement.binding(self._requests, self.nodes())
        self.events(Event(EventKind.PLAN, total=len(work), parallel=self.parallel(), reason=bound or None))
        while queue or self.in_flight:
            while queue and self._active() < self.parallel():
                queue.extend(self._start(queue.popleft()))
            soonest = min((a.deadline for a in self.in_flight.values()), default=time.monotonic() + TICK_S)
            timeout = min(TICK_S, max(0.0, soonest - time.monotonic()))
            ready, _ = self.ray.wait(list(self.in_flight), num_returns=1, timeout=timeout)
            for future in ready:
                if future in self.in_flight:
                    attempt = self.in_flight.pop(future)
                    queue.extend(self._guarded(attempt, functools.partial(self._advance, attempt, future)))
            now = time.monotonic()
            for future, attempt in [(f, a) for f, a in self.in_flight.items() if a.deadline <= now]:
                del self.in_flight[future]
                queue.extend(self._guarded(attempt, functools.partial(self._expire, attempt)))
            self.events(Event(EventKind.TICK))

    def _guarded(self, attempt: Attempt, step: Callable[[], list[Work]]) -> list[Work]:
        """One step of one attempt; a bug in handling it costs that attempt (an infra outcome), never the run."""
        try:
            return step()
        except FarmError:  # the spool cannot be written, and such: the run cannot go on
            raise
        except Exception as exc:
            log.exception("handling cell %s failed", attempt.work.cell.label)
            return self._finish(attempt, self._infra(attempt, f"the farm failed handling the cell: {type(exc).__name__}: {exc}"))

    def parallel(self) -> int:
        """Attempts at once: ``max_parallel`` if given, else what the live nodes hold of the largest request."""
        return self.fixed_parallel or placement.capacity(self._requests, self.nodes())

    def nodes(self) -> list[dict[str, Any]]:
        if time.monotonic() - self._nodes_read > NODES_TTL_S:
            self._nodes = placement.alive_nodes(self.ray)
            self._nodes_read = time.monotonic()
        return self._nodes

    def _active(self) -> int:
        return sum(1 for a in self.in_flight.values() if a.holds_resources)

    def _wait_on(self, attempt: Attempt, phase: Phase, future: Any, seconds: float) -> list[Work]:
        attempt.phase, attempt.future, attempt.deadline = phase, future, time.monotonic() + seconds
        self.in_flight[future] = attempt
        return []

    # ---- phases ----

    def _start(self, work: Work) -> list[Work]:
        request = placement.request_for(work.cell, self.job, whole_gpu=work.whole_gpu)
        # The session in the name: a resumed run's attempt never appends to the log of one its dead driver left.
        name = f"{work.cell.id}.attempt-{work.number}.{self.session}.log"
        log_path = cell_log_dir() / safe_part(self.run_id) / name
        attempt = Attempt(work, request, log_path, None, None, 0.0)
        failed_env = self.env_failed.get(work.cell.engine.name, {})
        if self._env_failed_for_run(work.cell, request):
            return self._finish(attempt, self._env_error(attempt, next(iter(failed_env.values())), len(failed_env)))
        # Off the nodes where the engine's env already failed in this run, while others can hold the cell.
        work.avoid |= {node for node in failed_env if node != UNKNOWN_NODE}
        avoid = self._avoid(work, request)
        if request.grouped or self.envs.needs_prepare(work.cell.engine):
            from ray.util.placement_group import placement_group

            # STRICT_PACK: tensor-parallel workers on one node; one bundle holds the node for an env's preparation
            # and then the actor. The selector keeps a retry off the nodes that failed it.
            bundles = request.group_bundles()
            attempt.group = placement_group(bundles, strategy="STRICT_PACK",
                                            bundle_label_selector=[avoid] * len(bundles) if avoid else None)
            return self._wait_on(attempt, Phase.PLACING, attempt.group.ready(), self.job.start_timeout_s)
        return self._start_actor(attempt, avoid)

    def _start_actor(self, attempt: Attempt, avoid: dict[str, str] | None = None) -> list[Work]:
        options = attempt.request.actor_options(attempt.group)
        if avoid and attempt.group is None:
            options["label_selector"] = avoid
        elif attempt.group is None and attempt.work.prefer and attempt.work.prefer not in attempt.work.avoid:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            # Soft: on that node if it is alive and can hold the cell, else wherever Ray places it.
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(attempt.work.prefer, soft=True)
        runtime_env = dict(attempt.prepared.runtime_env) if attempt.prepared is not None else {}  # py_executable…
        if attempt.work.cell.engine.env:  # Ray merges these over the job's env_vars
            runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **attempt.work.cell.engine.env}
        if runtime_env:
            options["runtime_env"] = runtime_env
        # A dead engine must stay dead: a restart would hide the crash and rerun a broken cell.
        attempt.actor = self.actor_class.options(max_restarts=0, max_task_retries=0, **options).remote()
        return self._wait_on(attempt, Phase.STARTING, attempt.actor.where.remote(), self.job.start_timeout_s)

    def _advance(self, attempt: Attempt, future: Any) -> list[Work]:
        """The attempt's future is ready: its next phase, or its result."""
        try:
            value = self.ray.get(future)
        except Exception as exc:
            return self._advance_failed(attempt, exc)
        return self._advance_ready(attempt, value)

    def _advance_failed(self, attempt: Attempt, exc: Exception) -> list[Work]:
        """The attempt's future raised: whose outcome it is (the node's, the env's, the farm's, the cell's) depends on the phase."""
        from ray.exceptions import OutOfMemoryError, RayActorError, RayTaskError, RuntimeEnvSetupError

        if attempt.phase is Phase.PREPARING:
            lost = outcomes.lost_node(exc)
            if lost:  # the node went away under the build: the node's outcome, not the engine's env
                attempt.node_id = attempt.node_id or group_node(attempt.group)  # the retry avoids it
                return self._finish(attempt, self._infra(attempt, lost))
            return self._prepared(attempt, self.envs.outcome(exc, attempt.work.cell.engine))
        if attempt.phase is Phase.STARTING and attempt.prepared is not None and isinstance(exc, RuntimeEnvSetupError):
            # Ray could not start the actor in the engine's env (a py_executable or image that broke after its check).
            failure = EnvFailure(engine=attempt.work.cell.engine.name, kind=attempt.work.cell.engine.kind,
                                 hostname=attempt.prepared.hostname, message=f"environment setup failed: {exc}")
            return self._finish(attempt, self._env_error(attempt, failure))
        if attempt.phase in (Phase.PLACING, Phase.STARTING):
            what = "placed" if attempt.phase is Phase.PLACING else "started"
            return self._finish(attempt, self._infra(attempt, f"the cell's actor could not be {what}: "
                                                              f"{type(exc).__name__}: {first_line(str(exc), 500)}"))
        if attempt.phase is Phase.READING:  # the node does not answer: it is gone
            return self._finish(attempt, self._unread(attempt, f"{type(exc).__name__}: {first_line(str(exc), 500)}"))
        lost = outcomes.lost_node(exc)
        if lost:
            return self._finish(attempt, self._infra(attempt, lost))
        if isinstance(exc, RayTaskError) and not isinstance(exc, RayActorError):
            # Raised by the farm's own code around the engine (the engine's errors are results): no verdict.
            return self._finish(attempt, self._infra(attempt, f"the farm failed in the cell's actor: {first_line(str(exc), 500)}"))
        attempt.ray_error, attempt.memory_monitor = str(exc), isinstance(exc, OutOfMemoryError)
        return self._read_log(attempt, CellStatus.CRASH)

    def _advance_ready(self, attempt: Attempt, value: Any) -> list[Work]:
        """The attempt's future answered: start its next phase, or finish it with its result."""
        if attempt.phase is Phase.PLACING:
            engine = attempt.work.cell.engine
            if self.envs.needs_prepare(engine):
                # In bundle 0, with its CPUs (pip and uv use them): the node is the cell's until its actor starts there.
                prepare = self.envs.submit(engine, attempt.group, attempt.request.group_bundles()[0].get("CPU", 0))
                return self._wait_on(attempt, Phase.PREPARING, prepare, self.envs.timeout_s(engine))
            return self._start_actor(attempt)
        if attempt.phase is Phase.PREPARING:
            return self._prepared(attempt, self.envs.outcome(value, attempt.work.cell.engine))
        if attempt.phase is Phase.STARTING:
            where = json.loads(value)
            attempt.node_id, attempt.hostname = where["node_id"], where["hostname"]
            attempt.started, attempt.started_at = time.monotonic(), utcnow()
            attempt.cold = (attempt.work.cell.engine.name, attempt.node_id) not in self.warm
            self.events(Event(EventKind.STARTED, attempt.work.cell, attempt.work.number, node_id=attempt.node_id))
            memory_gb = placement.resources_of(attempt.work.cell, self.job).memory_gb
            limit = int(memory_gb * placement.GIB) if memory_gb else None
            timeout = placement.timeout_of(attempt.work.cell, self.job)
            run = attempt.actor.run.remote(attempt.work.cell.model_dump_json(), self.settings_json, self.run_id,
                                           attempt.work.number, str(attempt.log_path), timeout, limit,
                                           attempt.request.gpu_share)
            return self._wait_on(attempt, Phase.RUNNING, run, timeout + KILL_GRACE_S)
        if attempt.phase is Phase.RUNNING:
            return self._finish(attempt, CellResult.model_validate_json(value))
        log = value  # reading
        if attempt.dead is CellStatus.TIMEOUT:
            error = outcomes.timeout_error(placement.timeout_of(attempt.work.cell, self.job), log)
            return self._finish(attempt, self._dead(attempt, CellStatus.TIMEOUT, error, log))
        error = outcomes.crash_error(attempt.ray_error, log, memory_monitor=attempt.memory_monitor)
        return self._finish(attempt, self._dead(attempt, CellStatus.CRASH, error, log))

    def _env_failed_for_run(self, cell: Cell, request: CellRequest) -> bool:
        """The engine's env failed on as many nodes as a cell may try, or on every node that can hold it."""
        failed = self.env_failed.get(cell.engine.name, {})
        fitting = placement.nodes_for(request, self.nodes())
        return bool(failed) and (len(failed) >= self.job.retries.infra_attempts or set(fitting) <= set(failed))

    def _prepared(self, attempt: Attempt, outcome: PreparedEnv | EnvFailure) -> list[Work]:
        attempt.prepare_s = round(time.monotonic() - attempt.placed, 3)
        if isinstance(outcome, EnvFailure):
            return self._finish(attempt, self._env_error(attempt, outcome))
        attempt.prepared = outcome
        return self._start_actor(attempt)

    def _expire(self, attempt: Attempt) -> list[Work]:
        if attempt.phase is Phase.PREPARING:  # no busy extension: the node is the cell's, the build is what is slow
            waited = time.monotonic() - attempt.placed
            return self._prepared(attempt, self.envs.timed_out(attempt.future, attempt.work.cell.engine, waited))
        if attempt.phase in (Phase.PLACING, Phase.STARTING):
            if self._busy(attempt):  # waiting behind our own cells on a node that can hold it: not a failure
                return self._wait_on(attempt, attempt.phase, attempt.future, self.job.start_timeout_s)
            return self._finish(attempt, self._infra(
                attempt, f"the cell's actor was not {'placed' if attempt.phase is Phase.PLACING else 'started'} within "
                         f"{self.job.start_timeout_s:g}s, with room for it on the cluster ({attempt.request.describe()})"))
        if attempt.phase is Phase.RUNNING:
            attempt.kill(self.ray)
            return self._read_log(attempt, CellStatus.TIMEOUT)
        return self._finish(attempt, self._unread(attempt, f"no answer within {LOG_READ_TIMEOUT_S:g}s"))

    def _busy(self, attempt: Attempt) -> bool:
        """Our own running cells hold the room it needs, and a live node could hold it once they finish."""
        fitting = placement.nodes_for(attempt.request, self.nodes())
        return bool(fitting) and any(a.phase in (Phase.PREPARING, Phase.RUNNING) for a in self.in_flight.values())

    def _read_log(self, attempt: Attempt, dead: CellStatus) -> list[Work]:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        attempt.dead = dead
        attempt.release(self.ray)
        assert attempt.node_id is not None  # only attempts whose actor ran get here
        # The log lives on the actor's node; soft=False: a node that is gone must fail the read, not move it.
        # No CPU: it must run on a node whose CPUs cells hold. Once: a node that fails it is gone.
        future = self.reader.options(
            num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(attempt.node_id, soft=False)
        ).remote(str(attempt.log_path))
        return self._wait_on(attempt, Phase.READING, future, LOG_READ_TIMEOUT_S)

    # ---- results ----

    def _dead(self, attempt: Attempt, status: CellStatus, error: Any, log: str) -> CellResult:
        from farm.cell.execute import LOG_TAIL_BYTES

        result = CellResult(run_id=self.run_id, cell_id=attempt.work.cell.id, cell=attempt.work.cell, status=status,
                            error=error, log_tail=log[-LOG_TAIL_BYTES:], started_at=attempt.started_at,
                            finished_at=utcnow(), env=EnvFacts(hostname=attempt.hostname))
        if attempt.started is not None:
            result.timings["total"] = round(time.monotonic() - attempt.started, 3)
        return result

    def _infra(self, attempt: Attempt, message: str) -> CellResult:
        where = f" (node {attempt.node_id[:12]})" if attempt.node_id else ""
        return self._dead(attempt, CellStatus.INFRA_ERROR, outcomes.infra_error(message + where), "")

    def _env_error(self, attempt: Attempt, failure: EnvFailure, nodes: int = 0) -> CellResult:
        """The cell's engine env could not be prepared: an infra outcome, never a compatibility verdict."""
        engine = attempt.work.cell.engine.name
        message = failure.message if repr(engine) in failure.message else f"engine {engine!r}: {failure.message}"
        if nodes:
            message = f"{message} (not built again in this run: it failed on {nodes} node(s))"
        else:  # remember the node, so the retry builds elsewhere
            attempt.node_id = attempt.node_id or group_node(attempt.group)
            self.env_failed.setdefault(engine, {})[attempt.node_id or UNKNOWN_NODE] = failure
        result = self._dead(attempt, CellStatus.ENV_ERROR, outcomes.infra_error(message, "env_error"), failure.log_tail)
        result.env.hostname = failure.hostname or result.env.hostname
        return result

    def _unread(self, attempt: Attempt, why: str) -> CellResult:
        """The log could not be read on the actor's node: a crash there is the node's, not the cell's."""
        if attempt.dead is CellStatus.TIMEOUT:  # the farm killed it at its timeout: a verdict, log or not
            error = outcomes.timeout_error(placement.timeout_of(attempt.work.cell, self.job), "")
            error.message += f"; its log could not be read on its node ({why})"
            return self._dead(attempt, CellStatus.TIMEOUT, error, "")
        return self._infra(attempt, f"the cell's node stopped answering when its actor died ({why}); "
                                    f"Ray said: {first_line(attempt.ray_error, 500)}")

    def _finish(self, attempt: Attempt, result: CellResult) -> list[Work]:
        attempt.release(self.ray)
        work = attempt.work
        result.attempt = work.number
        result.retry_reason = work.reason
        result.node_id = result.node_id or attempt.node_id
        if result.env.hostname is None:
            result.env.hostname = attempt.hostname
        if attempt.prepare_s is not None:
            result.timings["env_prepare"] = attempt.prepare_s
        if attempt.started is not None and attempt.node_id:  # its actor ran there: the engine's next build is warm
            result.cold_start = attempt.cold
            self.warm.add((work.cell.engine.name, attempt.node_id))
        settle(result, work.history, work.known)
        if result.status is CellStatus.ENV_ERROR and self._env_failed_for_run(work.cell, attempt.request):
            work.infra_outcomes = self.job.retries.infra_attempts  # nowhere left to build it: no retry
        elif result.status in INFRA and result.error is not None and result.error.origin == gpu_share.ORIGIN:
            work.infra_outcomes += 1
            work.whole_gpu = True  # the share was too small, not the node: the next attempt gets a whole GPU
        elif result.status in INFRA:
            work.infra_outcomes += 1
            if result.node_id:
                work.avoid.add(result.node_id)
        elif cold_timeout(result):  # no verdict: retried like an infra outcome, but on the same node if it can
            work.infra_outcomes += 1
        self.record(result)
        work.history.append(result)
        decision = decide(work.history, self.job.retries, work.infra_outcomes, work.known)
        if not decision.retry:
            self.events(Event(EventKind.DONE, work.cell, result.attempt, result=result))
            return []
        work.reason, work.prefer = decision.reason, decision.prefer_node
        self.events(Event(EventKind.RETRY, work.cell, result.attempt, result=result, reason=decision.reason))
        return [work]

    def _avoid(self, work: Work, request: CellRequest) -> dict[str, str] | None:
        """A label selector that keeps the attempt off nodes where the cell met infra outcomes, if others can hold it."""
        if not work.avoid:
            return None
        others = [n for n in placement.nodes_for(request, self.nodes()) if n not in work.avoid]
        if not others:
            return None  # the only nodes that can hold it failed it once: try them again rather than never
        return {NODE_ID_LABEL: f"!in({', '.join(sorted(work.avoid))})"}


