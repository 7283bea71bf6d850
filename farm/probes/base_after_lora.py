"""`base_after_lora`: base requests after adapter requests in the same engine still give the base output."""

from __future__ import annotations

from farm.cell.compare import compare_outputs
from farm.model.results import ProbeResult
from farm.probes.registry import ProbeContext, register
from farm.probes.support import SAME_WEIGHTS_TOLERANCE, engine_outputs


@register("base_after_lora", applies=lambda cell: cell.lora_source is not None)
def base_after_lora(ctx: ProbeContext) -> ProbeResult:
    """An adapter leaves nothing behind: after adapter requests, base outputs are what they were before."""
    before = engine_outputs(ctx)
    engine_outputs(ctx, lora=True)
    generation = ctx.generation
    after = ctx.engine.generate(generation.prompts, generation.max_tokens, logprobs=generation.top_logprobs)
    result = compare_outputs(
        reference=before, candidate=after, name_ref="base-before", name_cand="base-after",
        logprob_tolerance=SAME_WEIGHTS_TOLERANCE,
    )
    return ProbeResult(
        name="base_after_lora",
        passed=result.identical == result.prompts and result.passed,
        detail=result.summary(),
        metrics=result.metrics(),
        evidence={"divergences": result.side_by_side()},
    )
