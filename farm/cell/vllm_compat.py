"""Everything that depends on the vLLM version lives here.

Each shim carries a version gate and the reason. The farm runs cells against many
vLLM versions, so nothing else in the farm may import vLLM internals directly.
"""

from __future__ import annotations

from typing import Any


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
