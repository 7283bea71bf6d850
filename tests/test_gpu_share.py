"""Cells that share a GPU: what a share may be, what it reserves, and an overrun that costs one attempt of one cell.

The whole path on a Ray cluster of logical GPUs is in tests/test_faults.py; here the parts, with the
fault-injection engine (a test about the farm itself) in this process.
"""

from __future__ import annotations

import pytest

from farm.cell import gpu_share
from farm.cell.execute import CellSettings, execute_cell
from farm.errors import JobSpecError
from farm.model.cells import expand
from farm.model.results import CellStatus
from farm.model.spec import Retries, parse_job
from farm.runner.placement import capacity, request_for
from farm.runner.retry import decide


def job(resources: dict, engine_args: dict | None = None, variant: dict | None = None):
    spec = parse_job({
        "name": "shared",
        "models": [{"name": "m", "variants": [{"checkpoint": "fault-injection", **(variant or {})}]}],
        "engines": [{"name": "fi", "kind": "fault-injection"}],
        "probes": ["load", "generate"],
        "resources": resources,
        "engine_args": engine_args or {},
    })
    return spec, expand(spec)[0]


def test_a_share_is_below_one_gpu_or_whole_gpus():
    with pytest.raises(JobSpecError, match=r"num_gpus 1\.5 is neither a share of one GPU \(below 1, e\.g\. 0\.125\) "
                                           r"nor whole GPUs \(1, 2, …\); write 1 or 2"):
        job({"num_gpus": 1.5})
    assert job({"num_gpus": 2})[0].resources.gpu_share is None
    assert job({"num_gpus": 0.125})[0].resources.gpu_share == 0.125


def test_tensor_parallel_cells_cannot_share_a_gpu():
    with pytest.raises(JobSpecError, match=r"models\[m\]\.variants\[0\]: 2 engine workers cannot share a GPU "
                                           r"\(num_gpus 0\.5\); give tensor- or pipeline-parallel cells whole GPUs"):
        job({"num_gpus": 0.5}, variant={"engine_args": {"tensor_parallel_size": 2}})


def test_vllm_may_not_budget_more_than_the_share():
    with pytest.raises(JobSpecError, match=r"gpu_memory_utilization 0\.3 is more than the cell's GPU share "
                                           r"\(num_gpus 0\.125\)"):
        job({"num_gpus": 0.125}, engine_args={"gpu_memory_utilization": 0.3})
    # A variant's own share decides, not the job's.
    spec, cell = job({"num_gpus": 1}, engine_args={"gpu_memory_utilization": 0.3},
                     variant={"resources": {"num_gpus": 0.5}})
    assert cell.resources.gpu_share == 0.5
    with pytest.raises(JobSpecError, match=r"gpu_memory_utilization 0\.3 is more"):
        job({"num_gpus": 1}, engine_args={"gpu_memory_utilization": 0.3}, variant={"resources": {"num_gpus": 0.25}})


def test_a_share_is_a_fraction_of_one_gpu_in_ray_and_whole_gpu_turns_it_into_one():
    spec, cell = job({"num_cpus": 1, "num_gpus": 0.25})
    shared = request_for(cell, spec)
    assert shared.actor_options() == {"num_cpus": 1, "num_gpus": 0.25}
    assert shared.gpu_share == 0.25
    whole = request_for(cell, spec, whole_gpu=True)
    assert whole.actor_options() == {"num_cpus": 1, "num_gpus": 1} and whole.gpu_share is None
    node = {"NodeID": "n", "Alive": True, "Resources": {"CPU": 16, "GPU": 2}}
    assert capacity([shared], [node]) == 8, "four cells on each of the node's two GPUs"
    spec, cell = job({"num_cpus": 1, "num_gpus": 1})
    assert request_for(cell, spec).gpu_share is None and request_for(cell, spec, whole_gpu=True).gpu_share is None


def settings(share: float | None) -> CellSettings:
    return CellSettings(probes=["load", "generate"], gpu_share=share)


def test_an_overrun_inside_a_share_is_no_verdict_and_is_retried_on_a_whole_gpu():
    spec, cell = job({"num_gpus": 0.25}, variant={"engine_args": {"fault": "gpu_oom", "needs_gpu": 0.5}})
    result = execute_cell(cell, settings(0.25), "r1")
    assert result.status is CellStatus.INFRA_ERROR and result.error.origin == gpu_share.ORIGIN
    assert result.error.message.startswith(
        "the cell ran out of GPU memory inside its share (num_gpus 0.25): CUDA out of memory (simulated on a logical "
        "GPU): the engine needs 0.5 of the GPU, its gpu_memory_utilization is 0.25; the farm runs it again on a whole "
        "GPU"), result.error.message
    decision = decide([result], Retries(), infra_outcomes=1)
    assert decision.retry and decision.reason == ("GPU share: attempt 1 ran out of GPU memory in its share; "
                                                  "run again on a whole GPU")
    # On a whole GPU the same engine is held to nothing but the GPU: it passes.
    assert execute_cell(cell, settings(None), "r1").status is CellStatus.PASS
    # A share large enough passes too, with vLLM's budget set to the share.
    spec, cell = job({"num_gpus": 0.75}, variant={"engine_args": {"fault": "gpu_oom", "needs_gpu": 0.5}})
    assert execute_cell(cell, settings(0.75), "r1").status is CellStatus.PASS


def test_an_out_of_memory_error_on_a_whole_gpu_stays_the_engines():
    spec, cell = job({"num_gpus": 1}, variant={"engine_args": {"fault": "gpu_oom", "needs_gpu": 0.5,
                                                                "gpu_memory_utilization": 0.25}})
    result = execute_cell(cell, settings(None), "r1")
    assert result.status is CellStatus.FAIL and result.error.origin != gpu_share.ORIGIN
    assert result.error.type == "SimulatedOutOfMemoryError"


def test_the_share_sets_vllms_budget_unless_the_job_asks_for_less():
    spec, cell = job({"num_gpus": 0.25})
    assert gpu_share.engine_args(cell, {"dtype": "bfloat16"}, 0.25) == {"dtype": "bfloat16", "gpu_memory_utilization": 0.25}
    assert gpu_share.engine_args(cell, {"gpu_memory_utilization": 0.2}, 0.25) == {"gpu_memory_utilization": 0.2}
    assert gpu_share.engine_args(cell, {"dtype": "bfloat16"}, None) == {"dtype": "bfloat16"}


def test_out_of_memory_is_found_through_the_exceptions_chain():
    class OutOfMemoryError(RuntimeError):
        pass

    try:
        try:
            raise OutOfMemoryError("Tried to allocate 2.00 GiB")
        except OutOfMemoryError as inner:
            raise ValueError("engine core initialization failed") from inner
    except ValueError as outer:
        assert gpu_share.out_of_memory(outer)
    assert gpu_share.out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB"))
    assert not gpu_share.out_of_memory(RuntimeError("No available memory for the cache blocks"))
