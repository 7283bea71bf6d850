"""What a cell reserves, the check that some node can hold it, and how many cells fit at once."""

from __future__ import annotations

import pytest

from farm.errors import ResourceError
from farm.model.cells import expand
from farm.model.spec import parse_job
from farm.runner.placement import GIB, binding, capacity, check_feasible, nodes_for, request_for


def job(resources: dict, engine_args: dict | None = None, variant: dict | None = None):
    data = {
        "name": "p",
        "models": [{"name": "m", "variants": [{"checkpoint": "fault-injection", **(variant or {})}]}],
        "engines": [{"name": "fi", "kind": "fault-injection"}],
        "resources": resources,
        "engine_args": engine_args or {},
    }
    spec = parse_job(data)
    return spec, expand(spec)[0]


def node(node_id: str, **resources: float) -> dict:
    return {"NodeID": node_id, "Alive": True, "NodeManagerAddress": "127.0.0.1", "Resources": resources}


def test_cpu_cell_is_one_actor():
    spec, cell = job({"num_cpus": 2, "memory_gb": 1.5})
    request = request_for(cell, spec)
    assert not request.grouped
    assert request.per_node() == {"CPU": 2, "memory": 1.5 * GIB}
    assert request.actor_options() == {"num_cpus": 2, "num_gpus": 0, "memory": int(1.5 * GIB)}


def test_cpu_tensor_parallel_takes_its_workers_cpus_in_one_actor():
    spec, cell = job({"num_cpus": 1}, {"tensor_parallel_size": 2})
    assert request_for(cell, spec).per_node() == {"CPU": 2}


def test_gpu_cell_sets_cpus_explicitly():
    spec, cell = job({"num_cpus": 4, "num_gpus": 1})
    assert request_for(cell, spec).actor_options() == {"num_cpus": 4, "num_gpus": 1}


def test_gpu_tensor_parallel_is_a_strict_pack_group():
    spec, cell = job({"num_cpus": 2, "num_gpus": 1, "memory_gb": 8}, variant={"engine_args": {"tensor_parallel_size": 4}})
    request = request_for(cell, spec)
    assert request.grouped and request.workers == 4
    assert request.bundle_dicts() == [{"CPU": 2, "GPU": 1, "memory": 8 * GIB}] + [{"CPU": 2, "GPU": 1}] * 3
    assert request.per_node() == {"CPU": 8, "GPU": 4, "memory": 8 * GIB}
    options = request.actor_options(group=object())
    strategy = options.pop("scheduling_strategy")
    assert options == {"num_cpus": 2, "num_gpus": 0, "memory": 8 * GIB}, "the actor holds bundle 0's CPUs, never a GPU"
    assert strategy.placement_group_bundle_index == 0 and strategy.placement_group_capture_child_tasks
    assert "4 engine workers × {2 CPU, 1 GPU}" in request.describe()


def test_a_variant_overrides_the_jobs_resources_and_timeout_without_changing_the_cell_id():
    spec, plain = job({"num_cpus": 1, "memory_gb": 4})
    spec2, tuned = job({"num_cpus": 1, "memory_gb": 4}, variant={"resources": {"memory_gb": 1}, "timeout_s": 20})
    assert plain.id == tuned.id
    assert request_for(tuned, spec2).per_node() == {"CPU": 1, "memory": 1 * GIB}
    assert tuned.timeout_s == 20 and plain.resources is None


def test_unsatisfiable_request_names_itself_and_the_largest_node():
    spec, cell = job({"num_cpus": 1, "num_gpus": 1}, {"tensor_parallel_size": 4})
    nodes = [node("a" * 56, CPU=2, GPU=2, memory=8 * GIB), node("b" * 56, CPU=64)]
    with pytest.raises(ResourceError) as info:
        check_feasible([request_for(cell, spec)], nodes, spec.name)
    message = str(info.value)
    assert message.startswith("cells of job 'p' need {4 CPU, 4 GPU} on one node (4 engine workers × {1 CPU, 1 GPU}), "
                              "and no node has that: the largest node, aaaaaaaaaaaa (127.0.0.1), has "
                              "{2 CPU, 2 GPU, memory 8 GiB}")
    assert "Lower `resources`" in message
    with pytest.raises(ResourceError, match="no live node"):
        check_feasible([request_for(cell, spec)], [], spec.name)
    check_feasible([request_for(cell, spec)], [*nodes, node("c" * 56, CPU=8, GPU=8)], spec.name)


def test_what_bounds_the_cells_at_once_is_named():
    # The lent H100 (16 CPUs, one GPU): a 1/16 share at 2 CPUs a cell ran 8 cells at once, not 16.
    spec, cell = job({"num_cpus": 2, "num_gpus": 0.0625})
    h100 = [node("a", CPU=16, GPU=1)]
    assert capacity([request_for(cell, spec)], h100) == 8
    assert binding([request_for(cell, spec)], h100) == "CPU 16 / 2 a cell = 8, GPU 1 / 0.0625 a cell = 16: the CPUs bound it"
    spec, cell = job({"num_cpus": 1, "num_gpus": 0.125, "memory_gb": 4})
    assert binding([request_for(cell, spec)], [node("a", CPU=16, GPU=1, memory=64 * GIB), node("b", CPU=16, GPU=1,
                                                                                              memory=64 * GIB)]) == (
        "CPU 32 / 1 a cell = 32, GPU 2 / 0.125 a cell = 16, memory 128 / 4 a cell = 32: the GPUs bound it")
    spec, cell = job({"num_cpus": 1, "num_gpus": 0.0625})
    assert binding([request_for(cell, spec)], h100) == "CPU 16 / 1 a cell = 16, GPU 1 / 0.0625 a cell = 16"
    # A node without GPUs holds none of these cells: its CPUs bound nothing.
    spec, cell = job({"num_cpus": 2, "num_gpus": 0.0625})
    assert binding([request_for(cell, spec)], [*h100, node("cpu", CPU=64)]) == (
        "CPU 16 / 2 a cell = 8, GPU 1 / 0.0625 a cell = 16: the CPUs bound it")
    spec, cell = job({"num_cpus": 2})  # one resource: nothing to weigh
    assert binding([request_for(cell, spec)], h100) == "" and binding([], h100) == ""


def test_capacity_counts_node_by_node():
    spec, cell = job({"num_cpus": 2})
    request = request_for(cell, spec)
    # 3 + 3 CPUs hold two 2-CPU cells, not three: a cell never spans nodes.
    assert capacity([request], [node("a", CPU=3), node("b", CPU=3)]) == 2
    spec, cell = job({"num_cpus": 1, "num_gpus": 1}, {"tensor_parallel_size": 2})
    assert capacity([request_for(cell, spec)], [node("a", CPU=16, GPU=8), node("b", CPU=16, GPU=3)]) == 5
    assert nodes_for(request_for(cell, spec), [node("a", CPU=16, GPU=8), node("b", CPU=16, GPU=1)]) == ["a"]
