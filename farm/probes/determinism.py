"""`determinism`: the same greedy output across repeats in one engine, one prompt at a time and batched."""

from __future__ import annotations

from farm.model.results import ProbeResult
from farm.probes.registry import ProbeContext, register


@register("determinism")
def determinism(ctx: ProbeContext) -> ProbeResult:
    """Greedy tokens are identical across `generation.repeats` batched runs and a run one prompt at a time."""
    prompts, max_tokens = ctx.generation.prompts, ctx.generation.max_tokens
    runs = [[c.token_ids for c in ctx.engine.generate(prompts, max_tokens)] for _ in range(ctx.generation.repeats)]
    runs.append([ctx.engine.generate([p], max_tokens)[0].token_ids for p in prompts])
    differing = sorted({i for run in runs[1:] for i, tokens in enumerate(run) if tokens != runs[0][i]})
    labels = [f"batched #{n + 1}" for n in range(ctx.generation.repeats)] + ["one at a time"]
    return ProbeResult(
        name="determinism",
        passed=not differing,
        detail=(f"{len(runs)} runs ({', '.join(labels)}) identical on all {len(prompts)} prompts" if not differing
                else f"runs differ on prompt(s) {differing}"),
        metrics={"runs": len(runs), "prompts_differing": len(differing)},
    )
