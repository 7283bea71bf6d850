"""A cell that shares its GPU with other cells (``resources.num_gpus`` below 1): held to its share.

Ray places as many cells on one GPU as their shares allow (``farm.runner.placement``) and gives
each the same ``CUDA_VISIBLE_DEVICES``; nothing in CUDA keeps one process out of another's memory.
So, in the cell's own process, before its engine is built:

- **vLLM's budget is the share.** ``gpu_memory_utilization`` defaults to the share (the job may
  ask for less, never more: ``farm.model.spec``).
- **A fixed KV cache.** vLLM sizes its KV cache from the whole GPU's free memory, measured before
  and after a profiling run: what a neighbour allocates or frees meanwhile is charged to this
  engine, which then gets a wrong cache, fails with "No available memory for the cache blocks" or
  trips its own "Error in memory profiling" assertion (vllm-project/vllm#55827, #18854). Neither
  would be the engine's verdict. ``kv_cache_memory_bytes`` (vLLM 0.10.1 and later, #21489) makes
  vLLM skip that measurement; the farm sets it to ``KV_CACHE_FRACTION`` of the share unless the
  job sets it, and refuses (an infra outcome) to share a GPU with a vLLM that lacks it.
- **A hard cap.** PyTorch's allocator in this process is capped at the share
  (``torch.cuda.set_per_process_memory_fraction``): an engine that overruns its share gets a CUDA
  out-of-memory error in its own process, and its neighbours never notice.

An out-of-memory error inside a share says the share was too small, not that vLLM is broken: the
cell's outcome is an ``infra_error`` with ``origin`` ``gpu_share``, and the driver runs it again on
a whole GPU (``farm.runner.retry``), where the same error would be a verdict.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from farm.errors import EngineEnvError
from farm.model.cells import Cell

# How ErrorInfo.origin marks an out-of-memory error inside a share (the driver retries it on a whole GPU).
ORIGIN = "gpu_share"
# The part of a share given to the KV cache when the job does not say: the rest is for weights, activations,
# the CUDA context and the probes' second engine. A tiny zoo model's KV cache needs a few MiB of it.
KV_CACHE_FRACTION = 0.25
GIB = 2**30


def engine_args(cell: Cell, engine_args: dict[str, Any], share: float | None) -> dict[str, Any]:
    """The job's engine arguments for a cell, with what sharing a GPU needs; the share's limits applied to this process."""
    if share is None:
        return engine_args
    args = {**engine_args, **cell.engine_args}
    shared = {**engine_args, "gpu_memory_utilization": args.get("gpu_memory_utilization", share)}
    if cell.engine.kind == "fault-injection":  # the test seam: no vLLM, and no GPU unless it asks for one
        return shared
    total = cap_memory(share)
    if total is not None and "kv_cache_memory_bytes" not in args:
        if not _vllm_takes_kv_cache_bytes():
            raise EngineEnvError(f"this vLLM cannot share a GPU safely (num_gpus {share:g}): it has no "
                                 "kv_cache_memory_bytes (vLLM 0.10.1 and later), so it would size its KV cache from "
                                 "memory its neighbours use; give its cells whole GPUs (num_gpus: 1)")
        shared["kv_cache_memory_bytes"] = int(total * share * KV_CACHE_FRACTION)
    return shared


def cap_memory(share: float) -> int | None:
    """Cap PyTorch's allocator in this process at ``share`` of GPU 0; the GPU's memory in bytes, or None without CUDA."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    torch.cuda.set_per_process_memory_fraction(share, 0)
    return int(torch.cuda.get_device_properties(0).total_memory)


def _vllm_takes_kv_cache_bytes() -> bool:
    from vllm.engine.arg_utils import EngineArgs

    return any(field.name == "kv_cache_memory_bytes" for field in dataclasses.fields(EngineArgs))


def out_of_memory(exc: BaseException) -> bool:
    """Whether the exception, or one it was raised from, is a CUDA out-of-memory error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__.endswith("OutOfMemoryError") or "CUDA out of memory" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def overrun_message(share: float, error: str) -> str:
    """The outcome's message: the share, in GiB where the GPU is known, and what to do."""
    where = f"num_gpus {share:g}"
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            total = torch.cuda.get_device_properties(0).total_memory
            where += f" = {share * total / GIB:.1f} GiB of the {torch.cuda.get_device_name(0)}'s {total / GIB:.1f} GiB"
    except Exception:  # the message must not fail where CUDA is in a bad state after the error
        pass
    return (f"the cell ran out of GPU memory inside its share ({where}): {error}; the farm runs it again on a whole "
            "GPU for its verdict (give the variant a larger resources.num_gpus to keep it shared)")
