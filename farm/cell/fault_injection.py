"""A fault-injection engine: a TEST SEAM for tests and benchmarks about the farm itself.

It stands in for vLLM only where the engine is not the subject (scheduling at scale,
crash containment, store outages). A job selects it with an engine of
``kind: fault-injection``; each variant says what the engine does through its
``engine_args``:

    fault: pass | raise | segfault | abort | hang | oom | gpu_oom | exit | infra     (default pass)
        raise     an exception during the build (a ``fail``)
        segfault  reads address 0 (SIGSEGV);  abort  raises SIGABRT
        hang      sleeps forever (a ``timeout``);  oom  allocates until something kills it
        gpu_oom   takes ``needs_gpu`` (default 0.5) of its GPU's memory: on a real GPU in 256 MiB
                  tensors (PyTorch raises out of memory past the cell's share, ``farm.cell.gpu_share``);
                  on Ray's logical GPUs (no CUDA) it raises the same error when ``needs_gpu`` is
                  more than its ``gpu_memory_utilization``, as a capped allocator would
        exit      sys.exit(exit_code) from deep in the engine (default code 3)
        infra     the farm's own "checkpoint missing on this node" (an ``infra_error``)
    message: what ``raise`` raises with (default "injected failure during engine build")
    build_s: seconds the "engine build" sleeps first (default 0)
    times: N    the fault fires on the first N builds only, then the engine passes (default: always);
    key: NAME   counts those builds in $FARM_HOME/fault-injection/NAME on the node (default: the fault)
    tensor_parallel_size: N  inside a placement group, starts N Ray workers of one GPU each,
                as vLLM's Ray executor does, and logs the node and GPU ids they got
    expect_env: {NAME: value}, expect_files: [path]   the build fails unless the cell's process
                sees these variables and files (relative to its working directory): what a
                Ray job's runtime_env should carry to every cell

``pass`` generates deterministic text derived from the prompt (and a different text
with the adapter), so the real probes pass against it.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from farm.cell.types import Completion
from farm.errors import EngineEnvError
from farm.model.cells import Cell
from farm.model.engines import FAULTS
from farm.settings import fault_counter_dir


@contextmanager
def build_fault_injection_engine(cell: Cell, engine_args: dict[str, Any]) -> Iterator[FaultInjectionEngine]:
    """The engine builder of ``kind: fault-injection`` (see ``farm.model.engines``)."""
    yield FaultInjectionEngine({**engine_args, **cell.engine_args}, has_adapter=cell.lora_source is not None)


class InjectedFault(RuntimeError):
    """Raised by the fault-injection engine on ``fault: raise``: the engine's failure, not the farm's
    (``farm.cell.signature.farm_origin``); any other exception from this module is the farm's own."""

    stands_in_for_engine = True


class FaultInjectionEngine:
    def __init__(self, engine_args: dict[str, Any], has_adapter: bool) -> None:
        self.fault = str(engine_args.get("fault", "pass"))
        if self.fault not in FAULTS:
            raise ValueError(f"fault-injection engine: unknown fault {self.fault!r}; use one of {', '.join(FAULTS)}")
        self.has_adapter = has_adapter
        _check_expectations(engine_args)
        started = time.perf_counter()
        time.sleep(float(engine_args.get("build_s", 0)))
        self.workers = _start_workers(int(engine_args.get("tensor_parallel_size", 1)))
        _say_where(engine_args)
        self.gpu_memory: list[Any] = []
        if self._fires(engine_args):
            print(f"fault-injection: injecting {self.fault}", flush=True)
            self._inject(int(engine_args.get("exit_code", 3)), engine_args)
        self.build_seconds = time.perf_counter() - started

    def _fires(self, engine_args: dict[str, Any]) -> bool:
        if self.fault == "pass":
            return False
        times = engine_args.get("times")
        if times is None:
            return True
        counter = fault_counter_dir() / str(engine_args.get("key", self.fault))
        counter.parent.mkdir(parents=True, exist_ok=True)
        with open(counter, "a+") as count:  # one line per build on this node
            count.seek(0)
            builds = len(count.readlines())
            count.write("build\n")
        return builds < int(times)

    def _inject(self, exit_code: int, engine_args: dict[str, Any]) -> None:
        if self.fault == "gpu_oom":
            self.gpu_memory = _take_gpu_memory(float(engine_args.get("needs_gpu", 0.5)),
                                               float(engine_args.get("gpu_memory_utilization", 1.0)))
        if self.fault == "raise":
            raise InjectedFault(str(engine_args.get("message", "injected failure during engine build")))
        if self.fault == "infra":
            raise EngineEnvError("fault-injection: checkpoint missing on this node (an injected infra outcome)")
        if self.fault == "segfault":
            ctypes.string_at(0)  # reads address 0: SIGSEGV in this process
        if self.fault == "abort":
            os.kill(os.getpid(), signal.SIGABRT)
        if self.fault == "exit":
            sys.exit(exit_code)  # SystemExit is no Exception: it ends the cell's process, as in an engine
        if self.fault == "hang":
            while True:
                time.sleep(3600)
        if self.fault == "oom":
            hoard = []
            while True:  # until the farm's watchdog, Ray's memory monitor or the kernel ends the process
                hoard.append(bytearray(64 * 2**20))

    def generate(
        self, prompts: list[str], max_tokens: int, *, lora: bool = False, logprobs: int | None = None
    ) -> list[Completion]:
        if lora and not self.has_adapter:
            raise ValueError("this cell has no LoRA adapter")
        salt = "adapter" if lora else "base"
        completions = []
        for prompt in prompts:
            digest = hashlib.sha256(f"{salt}:{prompt}".encode()).digest()
            token_ids = tuple(digest[i % len(digest)] for i in range(max_tokens))
            top = tuple({t: 0.0} for t in token_ids) if logprobs else None
            completions.append(Completion(" ".join(f"t{t}" for t in token_ids), token_ids, logprobs=top))
        return completions


def _check_expectations(engine_args: dict[str, Any]) -> None:
    wrong = [f"${name}={os.environ.get(name)!r}, not {value!r}"
             for name, value in (engine_args.get("expect_env") or {}).items() if os.environ.get(name) != str(value)]
    wrong += [f"no {path} in {os.getcwd()}" for path in engine_args.get("expect_files") or [] if not os.path.exists(path)]
    if wrong:
        raise InjectedFault(f"the cell's process does not see what it expects: {'; '.join(wrong)}")


class SimulatedOutOfMemoryError(RuntimeError):
    """What PyTorch's capped allocator raises past a cell's GPU share, on a logical GPU that has no memory."""

    stands_in_for_engine = True


def _take_gpu_memory(needs: float, share: float) -> list[Any]:
    """Hold ``needs`` of GPU 0's memory; where there is no CUDA, fail as a capped allocator would past ``share``."""
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    if not cuda:
        if needs > share:
            raise SimulatedOutOfMemoryError(
                f"CUDA out of memory (simulated on a logical GPU): the engine needs {needs:g} of the GPU, "
                f"its gpu_memory_utilization is {share:g}")
        return []
    chunk = 256 * 2**20
    total = torch.cuda.get_device_properties(0).total_memory
    held = [torch.empty(chunk, dtype=torch.uint8, device="cuda") for _ in range(int(needs * total) // chunk)]
    print(f"fault-injection: holding {len(held) * chunk / 2**30:.1f} GiB of GPU memory", flush=True)
    return held


def _say_where(engine_args: dict[str, Any]) -> None:
    """One line in the cell's log: the GPUs Ray gave the actor and vLLM's memory budget (what a test reads back)."""
    import ray

    gpus = [str(g) for g in ray.get_gpu_ids()] if ray.is_initialized() else []
    print(f"fault-injection: GPUs [{','.join(gpus)}]; gpu_memory_utilization "
          f"{engine_args.get('gpu_memory_utilization', 'unset')}", flush=True)


class _Worker:
    def where(self) -> tuple[str, list[Any]]:
        import ray

        return ray.get_runtime_context().get_node_id(), [str(g) for g in ray.get_gpu_ids()]


def _start_workers(size: int) -> list[Any]:
    """Like vLLM's Ray executor: one GPU worker per rank, no CPUs, in the placement group the cell captured."""
    if size <= 1:
        return []
    import ray
    from ray.util import get_current_placement_group

    group = get_current_placement_group()
    if group is None:
        print(f"fault-injection: tensor_parallel_size={size} outside a placement group: no workers", flush=True)
        return []
    # One GPU and no CPU per worker, as vLLM asks; no strategy: the cell's actor captures child tasks into its group.
    worker: Any = ray.remote(num_cpus=0, num_gpus=1)(_Worker)
    workers = [worker.remote() for _ in range(size)]
    placed = ray.get([w.where.remote() for w in workers], timeout=120)
    nodes = sorted({node for node, _ in placed})
    gpus = [gpu for _, ids in placed for gpu in ids]
    print(f"fault-injection: {size} tensor-parallel workers in placement group {group.id.hex()}: "
          f"nodes {','.join(nodes)}; GPUs {','.join(gpus)}", flush=True)
    return workers
