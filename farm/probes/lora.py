"""`lora`: with the adapter applied, greedy output differs from the base output."""

from __future__ import annotations

import time

from farm.model.results import ProbeResult
from farm.probes.registry import ProbeContext, register


@register("lora", applies=lambda cell: cell.lora_source is not None)
def lora(ctx: ProbeContext) -> ProbeResult:
    """The adapter changes the output: an adapter that is silently ignored fails here."""
    prompts, max_tokens = ctx.generation.prompts, ctx.generation.max_tokens
    base = ctx.shared.get("base") or ctx.engine.generate(prompts, max_tokens)
    started = time.perf_counter()
    adapted = ctx.engine.generate(prompts, max_tokens, lora=True)
    seconds = time.perf_counter() - started
    differing = sum(a.token_ids != b.token_ids for a, b in zip(base, adapted))
    return ProbeResult(
        name="lora",
        passed=differing == len(prompts),
        detail=f"adapter output differs from base on {differing}/{len(prompts)} prompts",
        metrics={"lora_generate_s": round(seconds, 3), "prompts_differing": differing},
        outputs=[c.text for c in adapted],
    )
