"""Building the engine under test for one cell.

``with build_engine(cell, engine_args) as engine:`` builds the engine the cell's kind
names (``EngineSpec.engine_builder``): for every kind but the fault-injection test seam, a
``vllm.LLM`` for the cell's model variant (with LoRA enabled when the cell has an adapter),
always freed on exit, so one process can build several engines in a row.
"""

from __future__ import annotations

import gc
import importlib
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from farm.cell import vllm_compat
from farm.cell.types import Completion, EngineHandle
from farm.errors import EngineEnvError
from farm.model.cells import Cell
from farm.model.sources import is_local_path, zoo_item

# Small enough for a tiny model on a 2-core CPU, large enough for the probes' prompts.
DEFAULT_ENGINE_ARGS: dict[str, Any] = {"max_model_len": 256, "max_num_seqs": 4, "seed": 0}

# What an engine kind's ``engine_builder`` names: (cell, job-level engine args) → a context manager.
EngineBuilder = Callable[[Cell, dict[str, Any]], AbstractContextManager[EngineHandle]]


def resolve_source(source: str) -> str:
    """A cell's model or adapter source as a path vLLM can load: zoo items are built on demand."""
    item = zoo_item(source)
    if item is not None:
        from farm import zoo

        return str(zoo.ensure(item))
    if is_local_path(source):
        path = Path(source).expanduser()
        if not path.exists():
            # A checkpoint missing on this node says nothing about compatibility.
            raise EngineEnvError(f"checkpoint {source} does not exist on {socket.gethostname()}; "
                                 "put it on every node (or shared storage) or use a hub id")
        return str(path)
    return source


class VllmEngine:
    def __init__(self, llm: Any, lora_path: str | None, build_seconds: float) -> None:
        self.llm = llm
        self.lora_path = lora_path
        self.build_seconds = build_seconds

    def generate(
        self, prompts: list[str], max_tokens: int, *, lora: bool = False, logprobs: int | None = None
    ) -> list[Completion]:
        request = None
        if lora:
            if self.lora_path is None:
                raise ValueError("this cell has no LoRA adapter")
            request = vllm_compat.lora_request("adapter", 1, self.lora_path)
        outputs = self.llm.generate(
            prompts, vllm_compat.sampling_params(max_tokens, logprobs), lora_request=request, use_tqdm=False
        )
        return [
            Completion(
                text=o.outputs[0].text,
                token_ids=tuple(o.outputs[0].token_ids),
                prompt_token_ids=tuple(o.prompt_token_ids or ()),
                logprobs=vllm_compat.top_logprobs(o.outputs[0].logprobs) if logprobs else None,
            )
            for o in outputs
        ]


def engine_kwargs(cell: Cell, engine_args: dict[str, Any], model_path: str) -> dict[str, Any]:
    kwargs = {**DEFAULT_ENGINE_ARGS, **engine_args, **cell.engine_args, "model": model_path}
    if cell.vllm_quantization:
        kwargs["quantization"] = cell.vllm_quantization
    if cell.lora_source:
        # One adapter per cell: a LoRA slot more would only cost memory.
        kwargs.update(enable_lora=True, max_loras=1, max_lora_rank=cell.max_lora_rank or 8)
    workers = int(kwargs.get("tensor_parallel_size", 1)) * int(kwargs.get("pipeline_parallel_size", 1))
    if workers > 1 and _in_placement_group():
        # The farm reserved one STRICT_PACK bundle per worker on one node (farm.runner.placement): vLLM's Ray
        # executor starts its workers in them; its default, multiprocessing, would not use them.
        kwargs.setdefault("distributed_executor_backend", "ray")
    return kwargs


def _in_placement_group() -> bool:
    import ray

    if not ray.is_initialized():
        return False
    from ray.util import get_current_placement_group

    return get_current_placement_group() is not None


def build_engine(cell: Cell, engine_args: dict[str, Any], *, enable_lora: bool | None = None) -> AbstractContextManager[EngineHandle]:
    """Build the cell's engine with its kind's builder; the exception of a failed build propagates unchanged.

    ``enable_lora=False`` builds the same variant with LoRA off (the ``lora_unused`` probe's baseline).
    """
    if enable_lora is False:
        cell = cell.model_copy(update={"lora_source": None, "max_lora_rank": None})
    module, _, function = cell.engine.engine_builder.partition(":")
    builder: EngineBuilder = getattr(importlib.import_module(module), function)
    return builder(cell, engine_args)


@contextmanager
def build_vllm_engine(cell: Cell, engine_args: dict[str, Any]) -> Iterator[EngineHandle]:
    """A ``vllm.LLM`` for the cell, freed on exit: the builder of every engine kind but the test seam."""
    model_path = resolve_source(cell.model_source)
    lora_path = resolve_source(cell.lora_source) if cell.lora_source else None
    vllm_compat.cpu_threads_bind_for_this_vllm()
    from vllm import LLM

    started = time.perf_counter()
    llm = LLM(**engine_kwargs(cell, engine_args, model_path))
    engine = VllmEngine(llm, lora_path, time.perf_counter() - started)
    try:
        yield engine
    finally:
        del engine, llm
        gc.collect()
        _empty_cuda_cache()


def _empty_cuda_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # freeing memory must never mask the cell's own outcome
        pass
