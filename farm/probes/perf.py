"""`perf`: engine build time, prefill and decode throughput, peak memory."""

from __future__ import annotations

import time

from farm.model.results import ProbeResult
from farm.probes.registry import ProbeContext, register


@register("perf")
def perf(ctx: ProbeContext) -> ProbeResult:
    """Measures (never fails): prefill tokens/s from one-token requests, decode tokens/s from the rest."""
    prompts, max_tokens = ctx.generation.prompts, max(ctx.generation.max_tokens, 2)
    ctx.engine.generate(prompts, 1)  # warm-up: the first request pays one-off costs
    started = time.perf_counter()
    prefill = ctx.engine.generate(prompts, 1)
    prefill_s = time.perf_counter() - started
    started = time.perf_counter()
    full = ctx.engine.generate(prompts, max_tokens)
    full_s = time.perf_counter() - started
    prompt_tokens = sum(len(c.prompt_token_ids) for c in prefill)
    decoded = sum(len(c.token_ids) - 1 for c in full)
    decode_s = max(full_s - prefill_s, 1e-9)
    metrics = {
        "engine_build_s": round(ctx.engine.build_seconds, 3),
        "prefill_tokens_per_s": round(prompt_tokens / max(prefill_s, 1e-9), 1),
        "decode_tokens_per_s": round(decoded / decode_s, 1),
        "prompts": len(prompts),
        "prompt_tokens": prompt_tokens,
        "decoded_tokens": decoded,
    }
    metrics.update(_gpu_memory())
    return ProbeResult(
        name="perf", passed=True,
        detail=f"prefill {metrics['prefill_tokens_per_s']} tok/s, decode {metrics['decode_tokens_per_s']} tok/s",
        metrics=metrics,
    )


def _gpu_memory() -> dict[str, float]:
    try:
        import torch

        if torch.cuda.is_available():
            return {"peak_gpu_memory_mb": round(torch.cuda.max_memory_reserved() / 2**20, 1)}
    except Exception:
        pass
    return {}
