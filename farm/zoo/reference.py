"""Dequantized references: the exact weights a quantized item encodes, as a plain bf16 model.

The farm's ``reference`` probe runs vLLM on a quantized checkpoint and
transformers on that checkpoint's reference ``<item>-dequant``: the base
architecture, no ``quantization_config``, bf16 weights equal to what the
quantized tensors decode to (the quantizers choose scales that make this exact,
see ``quant.exact_scale``). Rounding to INT4 is then no disagreement; what is
left is the engine's own doing: its kernels, and for W8A8 its dynamic
activation quantization, which no weight-only reference captures.

Each reference is built from its quantized item, never from the base model, so
a bug in a packer shows up as a reference that disagrees with the base.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from farm.errors import ZooError
from farm.zoo import cache, corpus
from farm.zoo.checkpoint import WEIGHTS_FILE, copy_model_files
from farm.zoo.registry import ArchSpec, BuildContext, VariantBuilder, register_variant, stacked_experts

if TYPE_CHECKING:
    import torch

REFERENCE_SUFFIX = "-dequant"

# Decodes every tensor of a quantized checkpoint to float32 under the base
# model's on-disk names (packed linears back to ``<module>.weight``).
Dequantizer = Callable[[Mapping[str, "torch.Tensor"]], dict[str, "torch.Tensor"]]


def register_quantization(
    suffix: str,
    *,
    dequantize: Dequantizer,
    when: Callable[[ArchSpec], bool] | None = None,
    for_stacked_experts: bool = False,
    **params: Any,
) -> Callable[[VariantBuilder], VariantBuilder]:
    """Register a quantized variant ``<arch>-<suffix>`` and its reference ``<arch>-<suffix>-dequant``.

    Args:
        suffix: the quantized variant's suffix.
        dequantize: decodes the variant's tensors (see :data:`Dequantizer`).
        when: which architectures get the variant; all if None (within those for_stacked_experts selects).
        for_stacked_experts: a quantizer of stacked experts (MXFP4), offered to those architectures only; a
            per-linear one (the default) is offered to every other.
        **params: the variant's recipe parameters.

    Example::

        @register_quantization("gptq4", dequantize=dequantize_gptq, bits=4, group_size=32)
        def build_gptq4(ctx: BuildContext) -> dict[str, Any]: ...
    """
    reference = suffix + REFERENCE_SUFFIX
    fits = when or (lambda arch: True)

    def applies(arch: ArchSpec) -> bool:
        # The per-linear quantizers: bf16 3D experts beside their formats would be a checkpoint no quantizer
        # makes (see Experts.stacked).
        return stacked_experts(arch) == for_stacked_experts and fits(arch)

    def deco(fn: VariantBuilder) -> VariantBuilder:
        register_variant(suffix, kind="model", when=applies, reference=reference, **params)(fn)
        register_variant(reference, kind="model", when=applies, source=suffix, dtype="bfloat16")(
            functools.partial(build_reference, dequantize=dequantize)
        )
        return fn

    return deco


def build_reference(ctx: BuildContext, *, dequantize: Dequantizer) -> dict[str, Any]:
    """Decode the quantized item in ``ctx.source_dir`` into a bf16 model like its base."""
    import torch
    from safetensors.torch import load_file, save_file

    assert ctx.base_dir is not None and ctx.source_dir is not None
    source = ctx.source_dir.name
    # The base's config: bf16, and no quantization_config.
    copy_model_files(ctx.base_dir, ctx.out_dir)
    dense = dequantize(load_file(ctx.source_dir / WEIGHTS_FILE))
    base = load_file(ctx.base_dir / WEIGHTS_FILE)
    if sorted(dense) != sorted(base):
        missing, extra = sorted(set(base) - set(dense)), sorted(set(dense) - set(base))
        raise ZooError(
            f"{source} does not decode to the tensors of {ctx.arch.name}: missing {missing[:5]}, "
            f"unexpected {extra[:5]}; its dequantizer and packer disagree on names."
        )
    out: dict[str, torch.Tensor] = {}
    changed = 0
    max_err = 0.0
    for key in sorted(dense):
        exact = dense[key]
        value = exact.to(torch.bfloat16).contiguous()
        if value.shape != base[key].shape or not torch.equal(value.float(), exact):
            raise ZooError(
                f"{source}: {key} does not decode to a bf16 tensor of shape {tuple(base[key].shape)} "
                "exactly; its quantizer must choose scales with quant.exact_scale."
            )
        out[key] = value
        if not torch.equal(value, base[key]):
            changed += 1
            max_err = max(max_err, float((value.float() - base[key].float()).abs().max()))
    save_file(out, ctx.out_dir / WEIGHTS_FILE, metadata={"format": "pt"})
    return {"tensors_changed": changed, "max_abs_diff_from_base": round(max_err, 6), **_greedy_vs_base(ctx)}


def _greedy_vs_base(ctx: BuildContext) -> dict[str, Any]:
    """Greedy output of the reference in transformers, and how far it agrees with the base's.

    It tells whether rounding the weights alone flips the model's greedy tokens,
    so that an engine disagreeing with the bf16 base is the quantization's doing
    only where the reference disagrees too.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from farm.zoo.train import deterministic, greedy_stats

    assert ctx.base_dir is not None
    base_manifest = cache.read_manifest(ctx.base_dir) or {}
    base_greedy = base_manifest.get("metrics", {}).get("greedy", [])
    tok = AutoTokenizer.from_pretrained(ctx.out_dir)
    with deterministic(ctx.seed):
        model = AutoModelForCausalLM.from_pretrained(ctx.out_dir, dtype=torch.float32)
        stats = greedy_stats(model, tok, corpus.SAMPLE_PROMPTS)
    agree = [
        common_prefix(a["token_ids"], b["token_ids"]) for a, b in zip(stats["greedy"], base_greedy, strict=True)
    ]
    return {"agree_with_base_tokens": agree, **stats}


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens two greedy outputs share."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n
