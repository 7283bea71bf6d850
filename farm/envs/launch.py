"""The driver's half of ``farm.envs``: a cell whose env is prepared on its node before its actor starts there.

Per such cell: the cell's placement group (``farm.runner.placement``: one bundle with the cell's
CPUs, GPUs and memory, or a STRICT_PACK group for tensor parallel) reserves a node; a small
task in bundle 0 prepares the env there (``farm.envs.node``); the cell's actor then starts
in the same bundle with the ``runtime_env`` the task returned. The bundle keeps the node's
resources for the cell between the two, so no other cell can take them, and no node id has
to be chased. Cells of ``current`` engines skip all of this and start as before.

A failed preparation is an infra outcome for the cell (``env_error``): it runs again on
another node (``farm.runner.retry``). An engine whose env failed on as many nodes as a cell may
try (``retries.infra_attempts``), or on every node that can hold its cells, has failed for
the run (``farm.runner.scheduler``): its later cells get that ``env_error`` at once, with its log
tail, and nothing is built again.
"""

from __future__ import annotations

from typing import Any

from farm.envs.node import parse_outcome, prepare_task
from farm.envs.registry import EnvFailure, PreparedEnv, kind_of
from farm.model.engines import EngineSpec

# Past a kind's own build timeout: waiting for another process's build of the same env on
# the node (the lock), and for the placement group.
PREPARE_GRACE_S = 300.0


class EnvLauncher:
    def __init__(self, ray: Any, *, rebuild_before: float | None = None) -> None:
        self.ray = ray
        self.rebuild_before = rebuild_before
        self.failures: dict[str, EnvFailure] = {}  # engine name → its first failure, for the run's record
        self.prepared: dict[str, list[PreparedEnv]] = {}  # engine name → one per preparation, for the run's record
        self._task = ray.remote(prepare_task)

    def needs_prepare(self, engine: EngineSpec) -> bool:
        return not kind_of(engine).in_driver_env

    def timeout_s(self, engine: EngineSpec) -> float:
        """How long a cell's preparation may take, from its task's submission."""
        own = getattr(engine, "build_timeout_s", None) or getattr(engine, "pull_timeout_s", None) or 600.0
        # Once for a build this task waits for (the lock), once for its own.
        return 2 * float(own) + PREPARE_GRACE_S

    def submit(self, engine: EngineSpec, group: Any, num_cpus: float) -> Any:
        """Prepare ``engine``'s env in bundle 0 of the cell's (ready) placement group; returns the task's future."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        # The task holds the bundle's CPUs (pip and uv use them), never its GPUs, and runs once: a retry
        # after a crash would only build the same env again.
        return self._task.options(
            num_cpus=num_cpus, num_gpus=0, max_retries=0,
            scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0)
        ).remote(engine.model_dump_json(), self.rebuild_before)

    def outcome(self, answer: str | BaseException, engine: EngineSpec) -> PreparedEnv | EnvFailure:
        """The task's answer, or what ``ray.get`` raised for it; a failure is remembered for the engine.

        The scheduler gets the answer itself, so that a node lost under the task is its
        ``infra_error`` (``farm.runner.outcomes.lost_node``), not this engine's failure.
        """
        problem: BaseException | None = None
        if isinstance(answer, BaseException):  # the task died (OOM, a crash)
            problem = answer
        else:
            try:
                outcome = parse_outcome(answer)
            except Exception as exc:  # its answer is unreadable
                problem = exc
        if problem is not None:
            outcome = EnvFailure(engine=engine.name, kind=engine.kind, message=f"the env preparation task died: "
                                                                               f"{type(problem).__name__}: {str(problem)[:1000]}")
        if isinstance(outcome, EnvFailure):
            self.failures.setdefault(engine.name, outcome)
        else:
            self.prepared.setdefault(engine.name, []).append(outcome)
        return outcome

    def timed_out(self, future: Any, engine: EngineSpec, waited_s: float) -> EnvFailure:
        self.ray.cancel(future, force=True)
        failure = EnvFailure(engine=engine.name, kind=engine.kind,
                             message=f"preparing the env took over {waited_s:.0f}s (placement, lock and build); "
                                     "pre-build it with `farm env build`, or raise the engine's build_timeout_s")
        self.failures.setdefault(engine.name, failure)
        return failure

    def summary(self) -> dict[str, Any]:
        """For the run's manifest: per engine, each node's preparation (built or found, seconds, versions) or failure."""
        out: dict[str, Any] = {}
        for name, prepared in self.prepared.items():
            out.setdefault(name, {})["prepared"] = [p.model_dump(mode="json", exclude={"runtime_env"}) for p in prepared]
        for name, failure in self.failures.items():
            out.setdefault(name, {})["failure"] = failure.model_dump(mode="json")
        return out
