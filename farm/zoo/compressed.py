"""compressed-tensors checkpoints (the llm-compressor format), packed by hand.

Two schemes, as llm-compressor writes them and vLLM loads them:

``ct-w4a16`` (``format: pack-quantized``): INT4 weights, symmetric, one scale
per group of 32 input channels, activations left in bf16::

    weight_packed [out, in/8] int32  eight 4-bit values (q + 8) along the input dim, low nibble first
    weight_scale  [out, in/32] bf16
    weight_shape  [2]          int64  (out, in)

``ct-w8a8`` (``format: int-quantized``): INT8 weights with one scale per
output channel; activations quantized to INT8 per token at run time (dynamic,
so nothing about them is stored)::

    weight       [out, in] int8
    weight_scale [out, 1]  bf16

Routers, gates and lm_head stay in bf16 and are named, module by module, in the
config's ``ignore`` list; embeddings and norms are not ``Linear`` layers, so the
scheme's ``targets: [Linear]`` never reaches them.

``ct-fp8`` (``format: float-quantized``): FP8 E4M3 weights with one scale per
output channel, activations quantized to FP8 per token at run time (llm-compressor's
``FP8_DYNAMIC`` scheme)::

    weight       [out, in] float8_e4m3fn
    weight_scale [out, 1]  bf16

``ct-w4a16-experts`` (MoE architectures only) packs the routed experts alone,
the way many real MoE checkpoints are quantized (attention, shared experts and
dense MLPs left in bf16 and listed in ``ignore``). It is also the form that gets
an INT4 MoE past the attention layers on a CPU: vLLM's CPU backend has no WNA16
kernel for plain linear layers, but builds the experts' INT4 MoE method.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from farm.zoo.checkpoint import write_config
from farm.zoo.quant import GROUP_SIZE, exact_scale, pack_linears, pack_nibbles, unpack_nibbles
from farm.zoo.reference import register_quantization
from farm.zoo.registry import ArchSpec, BuildContext

if TYPE_CHECKING:
    import torch

_SUFFIXES = (".weight_packed", ".weight_scale", ".weight_shape")


def quantization_config(scheme: str, ignore: list[str]) -> dict[str, Any]:
    """The ``quantization_config`` of a ``ct-w4a16``, ``ct-w8a8`` or ``ct-fp8`` checkpoint."""
    if scheme == "fp8":
        fmt = "float-quantized"
        weights = {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "channel",
                   "dynamic": False, "observer": "minmax"}
        inputs = {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "token",
                  "dynamic": True, "observer": None}
    elif scheme == "w4a16":
        fmt = "pack-quantized"
        weights = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group",
                   "group_size": GROUP_SIZE, "dynamic": False, "actorder": None, "observer": "minmax"}
        inputs = None
    else:
        fmt = "int-quantized"
        weights = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel",
                   "dynamic": False, "observer": "minmax"}
        inputs = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token",
                  "dynamic": True, "observer": None}
    return {
        "quant_method": "compressed-tensors",
        "format": fmt,
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {"targets": ["Linear"], "weights": weights,
                        "input_activations": inputs, "output_activations": None},
        },
        "ignore": ignore,
        "kv_cache_scheme": None,
        "global_compression_ratio": None,
    }


def pack_w4a16(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """One ``[out, in]`` weight as ``pack-quantized`` INT4 tensors (see the module docstring)."""
    import torch

    w = weight.float()
    out_f, in_f = w.shape
    groups = w.view(out_f, in_f // GROUP_SIZE, GROUP_SIZE)
    scale = exact_scale(groups.abs().amax(-1), 7)  # [out, in/G]
    q = torch.round(groups / scale[..., None]).clamp(-8, 7).view(out_f, in_f)
    return {
        "weight_packed": pack_nibbles((q + 8).t().contiguous()).t().contiguous(),
        "weight_scale": scale.to(torch.bfloat16),
        "weight_shape": torch.tensor([out_f, in_f], dtype=torch.int64),
    }


def quantize_w8a8(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """One ``[out, in]`` weight as ``int-quantized`` INT8 with per-channel scales."""
    import torch

    w = weight.float()
    scale = exact_scale(w.abs().amax(-1, keepdim=True), 127)  # [out, 1], powers of two
    return {
        "weight": torch.round(w / scale).clamp(-127, 127).to(torch.int8),
        "weight_scale": scale.to(torch.bfloat16),
    }


# The largest finite float8_e4m3fn.
FP8_MAX = 448.0


def quantize_fp8(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """One ``[out, in]`` weight as ``float-quantized`` FP8 E4M3 with per-channel scales (powers of two)."""
    import torch

    w = weight.float()
    absmax = w.abs().amax(-1, keepdim=True).clamp(min=2.0**-20)
    scale = torch.exp2(torch.ceil(torch.log2(absmax / FP8_MAX)))  # a power of two: q * scale is exact in bf16
    return {"weight": (w / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), "weight_scale": scale.to(torch.bfloat16)}


def dequantize(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every tensor of a ``ct-w4a16`` or ``ct-w8a8`` checkpoint as float32, quantized linears decoded."""
    import torch

    out = {}
    for key, value in tensors.items():
        if key.endswith(".weight_packed"):
            prefix = key[: -len("weight_packed")]
            out_f, in_f = tensors[prefix + "weight_shape"].tolist()
            q = unpack_nibbles(value.t().contiguous()).t()[:, :in_f].contiguous() - 8
            scale = tensors[prefix + "weight_scale"].float()
            out[prefix + "weight"] = q.float() * scale.repeat_interleave(in_f // scale.shape[1], dim=1)
        elif key.endswith(_SUFFIXES):
            continue
        elif value.dtype in (torch.int8, torch.float8_e4m3fn):
            out[key] = value.float() * tensors[key + "_scale"].float()
        else:
            out[key] = value.float()
    return out


@register_quantization("ct-w4a16", dequantize=dequantize, format="pack-quantized", group_size=GROUP_SIZE,
                       bits=4, scale="exact-5bit")
def build_w4a16(ctx: BuildContext) -> dict[str, Any]:
    """Pack the base model's linear weights as compressed-tensors W4A16."""
    return _build(ctx, "w4a16")


@register_quantization("ct-w8a8", dequantize=dequantize, format="int-quantized", weights="channel",
                       activations="dynamic-token", bits=8, scale="exact-pow2")
def build_w8a8(ctx: BuildContext) -> dict[str, Any]:
    """Quantize the base model's linear weights as compressed-tensors W8A8 (INT8)."""
    return _build(ctx, "w8a8")


@register_quantization("ct-fp8", dequantize=dequantize, format="float-quantized", weights="channel",
                       activations="dynamic-token", bits=8, scale="pow2")
def build_fp8(ctx: BuildContext) -> dict[str, Any]:
    """Quantize the base model's linear weights as compressed-tensors FP8 (E4M3, dynamic activations)."""
    return _build(ctx, "fp8")


def _has_experts(arch: ArchSpec) -> bool:
    return arch.experts is not None


@register_quantization("ct-w4a16-experts", dequantize=dequantize, when=_has_experts, format="pack-quantized",
                       group_size=GROUP_SIZE, bits=4, scale="exact-5bit", targets="routed-experts")
def build_w4a16_experts(ctx: BuildContext) -> dict[str, Any]:
    """Pack only the routed experts' linear weights as compressed-tensors W4A16."""
    return _build(ctx, "w4a16", experts_only=True)


def _build(ctx: BuildContext, scheme: str, *, experts_only: bool = False) -> dict[str, Any]:
    routed = f".{ctx.arch.experts.disk_prefix}." if experts_only and ctx.arch.experts else None
    pack = {"w4a16": pack_w4a16, "w8a8": quantize_w8a8, "fp8": quantize_fp8}[scheme]
    quantized, ignore = pack_linears(ctx, pack, group_size=GROUP_SIZE if scheme == "w4a16" else None, only=routed)
    write_config(ctx.out_dir, quantization_config(scheme, ignore))
    return {"quantized_linears": quantized, "ignore": ignore}
