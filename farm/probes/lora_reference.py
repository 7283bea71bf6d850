"""`lora_reference`: with the adapter, vLLM agrees with transformers + PEFT applying the same adapter."""

from __future__ import annotations

from farm.cell.compare import compare_outputs
from farm.model.results import ProbeResult
from farm.model.sources import zoo_item
from farm.probes.registry import Deferred, ProbeContext, register
from farm.probes.support import engine_outputs, reference_for


@register("lora_reference", applies=lambda cell: cell.lora_source is not None)
def lora_reference(ctx: ProbeContext) -> Deferred:
    """Adapter outputs match transformers + PEFT on the reference weights (the check that catches
    adapter weights laid out or applied differently from PEFT)."""
    candidate = engine_outputs(ctx, lora=True)
    target = reference_for(ctx.cell)
    adapter = ctx.cell.lora_reference or ctx.cell.lora_source
    assert adapter is not None

    def compare() -> ProbeResult:
        from farm.cell.engine import resolve_source
        from farm.cell.reference import reference_generate

        try:
            expected = reference_generate(
                resolve_source(target.source),
                [c.prompt_token_ids for c in candidate],
                ctx.generation.max_tokens,
                ctx.generation.top_logprobs,
                adapter_dir=resolve_source(adapter),
                zoo_adapter=zoo_item(adapter) is not None,
            )
        except Exception as exc:  # PEFT cannot apply this adapter: no verdict on vLLM
            return ProbeResult(
                name="lora_reference", passed=False, skipped=True,
                detail=f"no reference: transformers+PEFT could not run {adapter}: {type(exc).__name__}: {exc}"[:500],
            )
        result = compare_outputs(
            reference=expected, candidate=candidate, name_ref="transformers+adapter", logprob_tolerance=target.tolerance
        )
        return ProbeResult(
            name="lora_reference",
            passed=result.passed,
            detail=f"{result.summary()}; reference: {target.kind} + adapter {adapter}",
            metrics=result.metrics(),
            evidence={"reference": target.source, "adapter": adapter, "divergences": result.side_by_side()},
        )

    return compare
