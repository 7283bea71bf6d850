"""What a cell reserves in Ray, whether the cluster has a node for it, and how many cells fit at once.

A cell runs on one node, always:

- **GPU, one engine worker**: the actor asks ``num_gpus`` and ``num_cpus`` (set explicitly: a Ray
  GPU actor otherwise takes 1 CPU silently).
- **GPU, tensor (× pipeline) parallel N > 1**: a STRICT_PACK placement group of N bundles
  ``{GPU: num_gpus, CPU: num_cpus}``, so vLLM's N Ray workers share one node (NVLink, no
  cross-node NCCL). The actor holds bundle 0's CPUs and no GPU, and captures its child tasks
  into the group, so vLLM's workers (``num_gpus`` each, no CPUs) land in its bundles.
- **GPU share** (``num_gpus`` below 1): the same actor with a fraction of one GPU, so several small cells
  run on one GPU at once; ``farm.cell.gpu_share`` holds each to its share of the GPU's memory. A cell
  that ran out of memory inside its share is retried on a whole GPU (``whole_gpu``) for its verdict.
- **CPU platform** (``num_gpus: 0``): one actor with ``num_cpus`` × N CPUs; vLLM's CPU workers are
  its child processes.

``memory_gb`` goes to Ray as ``memory`` (in bundle 0 for a group) so no node is given cells
whose limits add up past its memory; the cell's watchdog enforces it (``farm.cell.watchdog``).

Before anything runs, ``check_feasible`` compares every cell's request with the cluster's
nodes: a request no node can hold is a ``ResourceError`` naming it and the largest node,
never an actor that waits forever.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from farm.errors import ResourceError
from farm.model.cells import Cell
from farm.model.spec import JobSpec, Resources

GIB = 2**30
# Ray's own per-node entries (node:<ip>, object store) are not what a cell asks for.
_CELL_RESOURCES = ("CPU", "GPU", "memory")


@dataclass(frozen=True)
class CellRequest:
    """Resources of one cell attempt: a plain actor, or a STRICT_PACK group of ``workers`` bundles."""

    workers: int
    bundles: tuple[tuple[tuple[str, float], ...], ...]  # one per engine worker; empty for a plain actor
    actor: tuple[tuple[str, float], ...]  # the actor's own num_cpus / num_gpus / memory

    @property
    def grouped(self) -> bool:
        return bool(self.bundles)

    def per_node(self) -> dict[str, float]:
        """What one node must have for the cell: everything, since a cell never spans nodes."""
        total: dict[str, float] = {}
        for bundle in self.bundles or (self.actor,):
            for key, value in bundle:
                total[key] = total.get(key, 0) + value
        return {k: v for k, v in total.items() if v}

    @property
    def gpu_share(self) -> float | None:
        """The fraction of one GPU the cell's actor holds, when it shares the GPU with other cells."""
        gpus = dict(self.actor).get("GPU", 0)
        return gpus if 0 < gpus < 1 and not self.grouped else None

    def describe(self) -> str:
        shown = _format(self.per_node())
        if self.grouped:
            return f"{shown} on one node ({self.workers} engine workers × {_format(dict(self.bundles[-1]))})"
        return shown

    def actor_options(self, group: Any = None) -> dict[str, Any]:
        options: dict[str, Any] = {"num_cpus": 0, "num_gpus": 0, **{_OPTION[k]: v for k, v in self.actor}}
        if "memory" in options:
            options["memory"] = int(options["memory"])
        if group is not None:
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            # Bundle 0 holds the actor; capturing child tasks puts vLLM's Ray workers into the group's bundles.
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                group, placement_group_bundle_index=0, placement_group_capture_child_tasks=True
            )
        return options

    def bundle_dicts(self) -> list[dict[str, float]]:
        return [dict(bundle) for bundle in self.bundles]

    def group_bundles(self) -> list[dict[str, float]]:
        """The bundles of the cell's placement group: one per engine worker, or the actor's own request as one."""
        return self.bundle_dicts() or [{k: v for k, v in self.actor if v}]


_OPTION = {"CPU": "num_cpus", "GPU": "num_gpus", "memory": "memory"}


def engine_workers(cell: Cell, job: JobSpec) -> int:
    """vLLM's worker processes for the cell: tensor × pipeline parallel size, from the job's and variant's engine_args."""
    args = {**job.engine_args, **cell.engine_args}
    return max(1, int(args.get("tensor_parallel_size", 1))) * max(1, int(args.get("pipeline_parallel_size", 1)))


def resources_of(cell: Cell, job: JobSpec) -> Resources:
    return cell.resources or job.resources


def timeout_of(cell: Cell, job: JobSpec) -> float:
    return cell.timeout_s or job.timeout_s


def request_for(cell: Cell, job: JobSpec, *, whole_gpu: bool = False) -> CellRequest:
    """What the cell reserves; ``whole_gpu`` turns a GPU share into one whole GPU (the retry of a share overrun)."""
    res = resources_of(cell, job)
    if whole_gpu and res.gpu_share is not None:
        res = res.model_copy(update={"num_gpus": 1.0})
    workers = engine_workers(cell, job)
    memory = (("memory", res.memory_gb * GIB),) if res.memory_gb else ()
    if res.num_gpus and workers > 1:
        bundle = (("CPU", res.num_cpus), ("GPU", res.num_gpus))
        first = bundle + memory
        return CellRequest(workers, (first, *(bundle,) * (workers - 1)), (("CPU", res.num_cpus), *memory))
    if res.num_gpus:
        return CellRequest(1, (), (("CPU", res.num_cpus), ("GPU", res.num_gpus), *memory))
    # CPU platform: vLLM's CPU workers are the actor's child processes, on its CPUs.
    return CellRequest(workers, (), (("CPU", res.num_cpus * workers), *memory))


def alive_nodes(ray: Any) -> list[dict[str, Any]]:
    return [node for node in ray.nodes() if node.get("Alive")]


def fits(request: dict[str, float], node_resources: dict[str, float]) -> bool:
    return all(node_resources.get(key, 0) >= value - 1e-9 for key, value in request.items())


def check_feasible(requests: list[CellRequest], nodes: list[dict[str, Any]], job_name: str) -> None:
    """Raise ResourceError if some cell's request fits no node of the cluster (it would wait forever)."""
    for request in sorted(set(requests), key=lambda r: -sum(r.per_node().values())):
        needed = request.per_node()
        if any(fits(needed, node["Resources"]) for node in nodes):
            continue
        # The node that comes closest: the largest share of its scarcest resource, then of all of them.
        largest = max(nodes, key=lambda n: (min(_shares(needed, n["Resources"])), sum(_shares(needed, n["Resources"]))),
                      default=None)
        has = (f"the largest node, {largest['NodeID'][:12]} ({largest.get('NodeManagerAddress', '?')}), has "
               f"{_format(_cell_part(largest['Resources']))}") if largest else "the cluster has no live node"
        raise ResourceError(f"cells of job {job_name!r} need {request.describe()}, and no node has that: {has}. "
                            "Lower `resources` (or tensor_parallel_size) in the job, or add a node that large")


def capacity(requests: list[CellRequest], nodes: list[dict[str, Any]]) -> int:
    """How many cells the live nodes hold at once, node by node (a cell never spans nodes).

    Counted with the smallest request: with cells of several sizes, Ray packs what fits and the
    rest wait for room before their clocks start (``farm.runner.scheduler``), so the bound is what the
    cluster could run at best, never less.
    """
    if not requests or not nodes:
        return 1
    needed = _smallest(requests)
    total = 0
    for node in nodes:
        have = node["Resources"]
        total += min((math.floor(have.get(k, 0) / v + 1e-9) for k, v in needed.items()), default=0)
    return max(1, total)


def _smallest(requests: list[CellRequest]) -> dict[str, float]:
    return min(requests, key=lambda r: sum(r.per_node().values())).per_node()


def binding(requests: list[CellRequest], nodes: list[dict[str, Any]]) -> str:
    """Which resource bounds the cells at once, with the request :func:`capacity` counts, resource by resource over
    the nodes that can hold it: e.g. "CPU 16 / 2 a cell = 8, GPU 1 / 0.0625 a cell = 16: the CPUs bound it" (on the
    lent H100, a GPU share of 1/16 ran 8 cells at once, not 16, at 2 CPUs a cell); "" when the cells ask for one
    resource only, or no node holds them."""
    if not requests:
        return ""
    needed = _smallest(requests)
    nodes = [n for n in nodes if fits(needed, n["Resources"])]
    if len(needed) < 2 or not nodes:
        return ""
    fit = {k: sum(math.floor(n["Resources"].get(k, 0) / v + 1e-9) for n in nodes) for k, v in needed.items()}
    have = {k: sum(n["Resources"].get(k, 0) for n in nodes) for k in needed}
    scale = {"memory": GIB}  # Ray counts memory in bytes
    parts = [f"{k} {have[k] / scale.get(k, 1):g} / {v / scale.get(k, 1):g} a cell = {fit[k]}" for k, v in needed.items()]
    tight = min(fit, key=lambda k: fit[k])
    plural = {"CPU": "the CPUs", "GPU": "the GPUs", "memory": "the memory"}.get(tight, tight)
    return ", ".join(parts) + (f": {plural} bound it" if len(set(fit.values())) > 1 else "")


def nodes_for(request: CellRequest, nodes: list[dict[str, Any]]) -> list[str]:
    """The ids of live nodes that can hold the request."""
    needed = request.per_node()
    return [node["NodeID"] for node in nodes if fits(needed, node["Resources"])]


def _shares(needed: dict[str, float], have: dict[str, float]) -> list[float]:
    return [min(1.0, have.get(key, 0) / value) for key, value in needed.items()]


def _cell_part(resources: dict[str, float]) -> dict[str, float]:
    return {k: resources[k] for k in _CELL_RESOURCES if k in resources}


def _format(resources: dict[str, float]) -> str:
    parts = []
    for key in _CELL_RESOURCES:
        if key in resources:
            value = resources[key]
            parts.append(f"memory {value / GIB:.3g} GiB" if key == "memory" else f"{value:g} {key}")
    return "{" + ", ".join(parts) + "}"
