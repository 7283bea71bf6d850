"""`load`: the engine builds for this cell (model variant, quantization, LoRA enabled or not)."""

from __future__ import annotations

from farm.model.results import ProbeResult
from farm.probes.registry import ProbeContext, register


@register("load")
def load(ctx: ProbeContext) -> ProbeResult:
    """The engine built; records the build time. A failed build fails the cell before any probe runs."""
    return ProbeResult(
        name="load",
        passed=True,
        detail=f"engine built in {ctx.engine.build_seconds:.1f}s",
        metrics={"engine_build_s": round(ctx.engine.build_seconds, 3)},
    )
