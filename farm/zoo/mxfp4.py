"""MXFP4 experts, the format of gpt-oss's own releases, packed by hand.

``mxfp4`` (``quant_method: mxfp4``) stores each layer's stacked experts as OCP MX FP4: E2M1 values with one
power-of-two (E8M0) scale per 32 consecutive inputs, under the names gpt-oss's checkpoints give them::

    <experts>.gate_up_proj_blocks  [E, 2I, H / 32, 16]  uint8  two E2M1 codes a byte, the even input in the low nibble
    <experts>.gate_up_proj_scales  [E, 2I, H / 32]      uint8  the scale's exponent + 127
    <experts>.down_proj_blocks     [E, H, I / 32, 16]
    <experts>.down_proj_scales     [E, H, I / 32]

that is, ``[E, out, in]`` (the bf16 parameters are ``[E, in, out]``). The expert biases, the attention, the router,
the embeddings and ``lm_head`` stay bf16 (``modules_to_not_convert``). Each block's scale is the smallest power of
two that keeps its largest value within E2M1's 6, so decoding (``code value * 2 ** (scale - 127)``) gives exactly
what a bf16 reference can hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from farm.errors import ZooError
from farm.zoo.checkpoint import WEIGHTS_FILE, copy_model_files, write_config
from farm.zoo.reference import register_quantization
from farm.zoo.registry import ArchSpec, BuildContext, stacked_experts

if TYPE_CHECKING:
    import torch

BLOCK = 32
E2M1_MAX = 6.0
# E2M1 codes 0 … 7; codes 8 … 15 are the same values negated.
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
_STACKED = ("gate_up_proj", "down_proj")
# gpt-oss's own list (its releases' config.json).
NOT_CONVERTED = ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]


def fits(arch: ArchSpec) -> bool:
    """Whether ``arch`` has stacked experts whose inputs divide into MXFP4's groups of 32."""
    c = arch.config
    return stacked_experts(arch) and c["hidden_size"] % BLOCK == 0 and c["intermediate_size"] % BLOCK == 0


def quantize_mx(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """One stacked ``[E, in, out]`` expert parameter as MXFP4 ``blocks`` and ``scales`` (``[E, out, in / 32, …]``)."""
    import torch

    experts, in_f, out_f = weight.shape
    if in_f % BLOCK:
        raise ZooError(f"MXFP4 groups {BLOCK} inputs; an expert input of {in_f} does not divide.")
    groups = weight.float().transpose(1, 2).reshape(experts, out_f, in_f // BLOCK, BLOCK)
    absmax = groups.abs().amax(dim=-1).clamp(min=2.0**-120)
    exponent = torch.ceil(torch.log2(absmax / E2M1_MAX)).clamp(-127, 127)
    scaled = groups / torch.exp2(exponent)[..., None]
    values = torch.tensor(E2M1_VALUES)
    code = (scaled.abs()[..., None] - values).abs().argmin(dim=-1) + 8 * (scaled < 0)
    code = code.to(torch.uint8)
    return {"blocks": code[..., 0::2] | (code[..., 1::2] << 4), "scales": (exponent + 127).to(torch.uint8)}


def decode_mx(blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """MXFP4 ``blocks`` and ``scales`` of one parameter back to float32 ``[E, in, out]``."""
    import torch

    lut = torch.tensor([*E2M1_VALUES, *(-v for v in E2M1_VALUES)])
    codes = torch.stack([blocks & 0x0F, blocks >> 4], dim=-1).flatten(-2).long()  # [E, out, in/32, 32]
    values = lut[codes] * torch.exp2(scales.float() - 127)[..., None]
    experts, out_f = values.shape[:2]
    return values.reshape(experts, out_f, -1).transpose(1, 2).contiguous()


def dequantize(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every tensor of an ``mxfp4`` checkpoint as float32 under the bf16 names, the experts decoded."""
    out = {}
    for key, value in tensors.items():
        if key.endswith("_scales"):
            continue
        if key.endswith("_blocks"):
            name = key[: -len("_blocks")]
            out[name] = decode_mx(value, tensors[name + "_scales"])
            continue
        out[key] = value.float()
    return out


@register_quantization("mxfp4", dequantize=dequantize, when=fits, for_stacked_experts=True, quant_method="mxfp4",
                       block=BLOCK, scale="e8m0-ceil", targets="stacked-experts")
def build_mxfp4(ctx: BuildContext) -> dict[str, Any]:
    """Quantize the base model's stacked experts as MXFP4, the rest left in bf16, as gpt-oss's releases are."""
    from safetensors.torch import load_file, save_file

    assert ctx.base_dir is not None and ctx.arch.experts is not None
    copy_model_files(ctx.base_dir, ctx.out_dir)
    tensors = load_file(ctx.base_dir / WEIGHTS_FILE)
    out: dict[str, torch.Tensor] = {}
    packed = 0
    for key in sorted(tensors):
        if key.rsplit(".", 1)[-1] in _STACKED and f".{ctx.arch.experts.module}." in key:
            out.update({f"{key}_{part}": t for part, t in quantize_mx(tensors[key]).items()})
            packed += 1
        else:
            out[key] = tensors[key]
    save_file(out, ctx.out_dir / WEIGHTS_FILE, metadata={"format": "pt"})
    write_config(ctx.out_dir, {"quant_method": "mxfp4", "modules_to_not_convert": NOT_CONVERTED})
    return {"quantized_experts": packed}
