"""`generate`: greedy generation gives non-empty text, the same on a second call."""

from __future__ import annotations

import time

from farm.model.results import ProbeResult
from farm.probes.registry import ProbeContext, register


@register("generate")
def generate(ctx: ProbeContext) -> ProbeResult:
    """Greedy output for every prompt is non-empty and identical on two calls to the same engine."""
    prompts, max_tokens = ctx.generation.prompts, ctx.generation.max_tokens
    started = time.perf_counter()
    first = ctx.engine.generate(prompts, max_tokens)
    seconds = time.perf_counter() - started
    second = ctx.engine.generate(prompts, max_tokens)
    ctx.shared["base"] = first
    empty = [p for p, c in zip(prompts, first) if not c.token_ids]
    changed = [p for p, a, b in zip(prompts, first, second) if a.token_ids != b.token_ids]
    problems = []
    if empty:
        problems.append(f"empty output for {len(empty)} prompt(s), first: {empty[0]!r}")
    if changed:
        problems.append(f"second call differs for {len(changed)} prompt(s), first: {changed[0]!r}")
    tokens = sum(len(c.token_ids) for c in first)
    return ProbeResult(
        name="generate",
        passed=not problems,
        detail="; ".join(problems) or f"{len(prompts)} prompts, {tokens} tokens, repeatable",
        metrics={"generate_s": round(seconds, 3), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1)},
        outputs=[c.text for c in first],
    )
