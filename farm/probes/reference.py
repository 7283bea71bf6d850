"""`reference`: vLLM's greedy tokens and top-k logprobs agree with transformers on the same weights."""

from __future__ import annotations

from farm.cell.compare import compare_outputs
from farm.model.results import ProbeResult
from farm.probes.registry import Deferred, ProbeContext, register
from farm.probes.support import engine_outputs, reference_for


@register("reference")
def reference(ctx: ProbeContext) -> Deferred:
    """Greedy tokens match transformers, or at the first divergence each side's token is in the other's top-k;
    chosen-token logprobs agree within the reference's tolerance."""
    candidate = engine_outputs(ctx)
    target = reference_for(ctx.cell)

    def compare() -> ProbeResult:
        from farm.cell.engine import resolve_source
        from farm.cell.reference import reference_generate

        try:
            expected = reference_generate(
                resolve_source(target.source),
                [c.prompt_token_ids for c in candidate],
                ctx.generation.max_tokens,
                ctx.generation.top_logprobs,
            )
        except Exception as exc:  # transformers cannot run this reference: no verdict on vLLM
            return ProbeResult(
                name="reference", passed=False, skipped=True,
                detail=f"no reference: transformers could not run {target.source}: {type(exc).__name__}: {exc}"[:500],
            )
        result = compare_outputs(reference=expected, candidate=candidate, logprob_tolerance=target.tolerance)
        return ProbeResult(
            name="reference",
            passed=result.passed,
            detail=f"{result.summary()}; reference: {target.kind} ({target.source})",
            metrics=result.metrics(),
            evidence={"reference": target.source, "reference_kind": target.kind, "divergences": result.side_by_side()},
        )

    return compare
