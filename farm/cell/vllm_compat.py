"""Everything that depends on the vLLM version lives here.

Each shim carries a version gate and the reason. The farm runs cells against many
vLLM versions, so nothing else in the farm may import vLLM internals directly.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

# The CPU worker's source, where the binding words are read (v1 engine, then the older worker).
_CPU_WORKERS = ("v1/worker/cpu_worker.py", "worker/cpu_worker.py")
# Where a vLLM that knows "nobind" reads it: its CPU worker up to 0.19, the OpenMP process manager from 0.20 on.
_NOBIND_READERS = (*_CPU_WORKERS, "utils/ompmultiprocessing.py")


def cpu_threads_bind_for_this_vllm() -> None:
    """Before an engine is built: say "bind no cores" in the words the installed vLLM knows.

    The farm sets ``VLLM_CPU_OMP_THREADS_BIND=nobind`` (Ray gives each cell its CPUs). vLLM knows
    ``nobind`` since 0.11.1; 0.11.0 and earlier spell it ``all`` and hand any other value to a C++ op
    as a core list, which crashes the process on ``nobind`` (SIGSEGV in ``cpu_worker.init_device``):
    a crash of the farm's making, never a verdict. From 0.20 on the word is read in
    ``utils/ompmultiprocessing.py``, where ``all`` is a core list that fails to parse (``ValueError:
    invalid literal for int() … 'all'``). Read from the installed source, not a version number (builds
    from commits carry none that compares). A value the job's engine sets is its own.
    """
    if os.environ.get("VLLM_CPU_OMP_THREADS_BIND") != "nobind":
        return
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        return
    root = Path(list(spec.submodule_search_locations)[0])
    readers = [root / relative for relative in _NOBIND_READERS if (root / relative).is_file()]
    has_cpu_worker = any((root / relative).is_file() for relative in _CPU_WORKERS)
    if has_cpu_worker and not any("nobind" in reader.read_text(errors="replace") for reader in readers):
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "all"


def lora_request(name: str, int_id: int, path: str) -> Any:
    """A LoRARequest. Positional arguments: the third one was `lora_local_path` before
    vLLM 0.6 (renamed to `lora_path`, vllm-project/vllm#6234), positional works for both."""
    from vllm.lora.request import LoRARequest

    return LoRARequest(name, int_id, path)


def sampling_params(max_tokens: int, logprobs: int | None = None) -> Any:
    """Greedy sampling that always produces `max_tokens` tokens so outputs compare position by position."""
    from vllm import SamplingParams

    return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, logprobs=logprobs)


def top_logprobs(sample_logprobs: Any) -> tuple[dict[int, float], ...]:
    """Per position {token id: logprob}. vLLM returns a list of dicts of `Logprob`, or since
    0.11 optionally a `FlatLogprobs` container (vllm-project/vllm#26059); both iterate the same way."""
    if sample_logprobs is None:
        return ()
    return tuple({int(token): float(getattr(lp, "logprob", lp)) for token, lp in (position or {}).items()}
                 for position in sample_logprobs)
