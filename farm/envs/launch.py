"""The driver's half of ``farm.envs``: a cell whose env is prepared on its node before its actor starts there.

Per such cell: a placement group of one bundle (the cell's CPUs and GPUs) reserves a
node; a small task in that bundle prepares the env there (``farm.envs.node``); the
cell's actor then starts in the same bundle with the ``runtime_env`` the task returned.
The bundle keeps the node's resources for the cell between the two, so no other cell
can take them, and no node id has to be chased. Cells of ``current`` engines skip all
of this and start as before.

A failed preparation is remembered for the run: every later cell of that engine gets
the same ``env_error`` at once, with the same log tail, and nothing is rebuilt.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from farm.envs.node import parse_outcome, prepare_task
from farm.envs.registry import EnvFailure, PreparedEnv, kind_of
from farm.spec import EngineSpec, Resources

# Past a kind's own build timeout: waiting for another process's build of the same env on
# the node (the lock), and for the placement group.
PREPARE_GRACE_S = 300.0


class EnvLauncher:
    def __init__(self, ray: Any, resources: Resources, *, rebuild_before: float | None = None) -> None:
        self.ray = ray
        self.resources = resources
        self.rebuild_before = rebuild_before
        self.failures: dict[str, EnvFailure] = {}
        self.prepared: dict[str, list[PreparedEnv]] = {}  # engine name → one per preparation, for the run's record
        # The task holds the bundle's CPUs (pip and uv use them), never its GPUs, and runs once: a retry
        # after a crash would only build the same env again.
        self._task = ray.remote(prepare_task)
        self._task_options = {"num_cpus": resources.num_cpus, "num_gpus": 0, "max_retries": 0}

    def needs_prepare(self, engine: EngineSpec) -> bool:
        return not kind_of(engine).in_driver_env

    def failure(self, engine: EngineSpec) -> EnvFailure | None:
        return self.failures.get(engine.name)

    def deadline(self, engine: EngineSpec) -> float:
        own = getattr(engine, "build_timeout_s", None) or getattr(engine, "pull_timeout_s", None) or 600.0
        # Once for a build this task waits for (the lock), once for its own.
        return time.monotonic() + 2 * float(own) + PREPARE_GRACE_S

    def submit(self, engine: EngineSpec) -> tuple[Any, Any]:
        """Reserve a bundle and prepare ``engine``'s env in it; returns (future, placement group)."""
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        bundle = {"CPU": self.resources.num_cpus}
        if self.resources.num_gpus:
            bundle["GPU"] = self.resources.num_gpus
        group = placement_group([bundle])
        future = self._task.options(
            **self._task_options,
            scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0)
        ).remote(engine.model_dump_json(), self.rebuild_before)
        return future, group

    def outcome(self, future: Any, engine: EngineSpec) -> PreparedEnv | EnvFailure:
        """The task's answer; a failure is remembered for the engine."""
        try:
            outcome = parse_outcome(self.ray.get(future))
        except Exception as exc:  # the task died (node lost, OOM) or its answer is unreadable
            outcome = EnvFailure(engine=engine.name, kind=engine.kind,
                                 message=f"the env preparation task died: {type(exc).__name__}: {str(exc)[:1000]}")
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

    def actor_options(self, prepared: PreparedEnv, group: Any) -> dict[str, Any]:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return {
            "scheduling_strategy": PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0),
            "runtime_env": prepared.runtime_env,
        }

    def release(self, group: Any) -> None:
        if group is None:
            return
        from ray.util.placement_group import remove_placement_group

        with contextlib.suppress(Exception):  # already gone with its node
            remove_placement_group(group)

    def summary(self) -> dict[str, Any]:
        """For the run's manifest: per engine, each node's preparation (built or found, seconds, versions) or failure."""
        out: dict[str, Any] = {}
        for name, prepared in self.prepared.items():
            out.setdefault(name, {})["prepared"] = [p.model_dump(mode="json", exclude={"runtime_env"}) for p in prepared]
        for name, failure in self.failures.items():
            out.setdefault(name, {})["failure"] = failure.model_dump(mode="json")
        return out
