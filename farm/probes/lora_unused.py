"""`lora_unused`: with LoRA enabled, a request without an adapter gives the LoRA-disabled output.

The LoRA-disabled output comes from a second engine built in the same actor after the
first is freed, not from the sibling `none` cell: the cell stays self-contained (it
does not depend on which other cells a job includes, their order, or a resume), both
engines run on the same node and vLLM build, and on a CPU the second build costs
seconds. On a GPU it doubles the engine build time of adapter cells; jobs that cannot
afford that leave this probe out.
"""

from __future__ import annotations

from farm.cell.compare import compare_outputs
from farm.model.results import ProbeResult
from farm.probes.registry import Deferred, ProbeContext, register
from farm.probes.support import SAME_WEIGHTS_TOLERANCE, engine_outputs


@register("lora_unused", applies=lambda cell: cell.lora_source is not None)
def lora_unused(ctx: ProbeContext) -> Deferred:
    """A request with no adapter is unaffected by enable_lora=True (same tokens and logprobs as LoRA off)."""
    with_lora_enabled = engine_outputs(ctx)
    engine_args = ctx.engine_args

    def compare() -> ProbeResult:
        from farm.cell.engine import build_engine

        generation = ctx.generation
        with build_engine(ctx.cell, engine_args, enable_lora=False) as plain:
            without_lora = plain.generate(
                generation.prompts, generation.max_tokens, logprobs=generation.top_logprobs
            )
        result = compare_outputs(
            reference=without_lora, candidate=with_lora_enabled,
            name_ref="lora-disabled", name_cand="lora-enabled", logprob_tolerance=SAME_WEIGHTS_TOLERANCE,
        )
        return ProbeResult(
            name="lora_unused",
            passed=result.passed and result.near_ties == 0,
            detail=result.summary(),
            metrics=result.metrics(),
            evidence={"divergences": result.side_by_side()},
        )

    return compare
