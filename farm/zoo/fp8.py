"""Block-FP8 checkpoints, the format of the official FP8 releases of Qwen3 and DeepSeek-V3, packed by hand.

``fp8-block`` (``quant_method: fp8``, ``weight_block_size: [128, 128]``, dynamic activations): each
linear weight in FP8 E4M3 with one scale per 128 x 128 block, under the name those checkpoints give it
(``weight * weight_scale_inv``, block by block, is the weight again)::

    weight            [out, in]              float8_e4m3fn
    weight_scale_inv  [out / 128, in / 128]  float32

Activations are quantized per token and per group of 128 at run time, so nothing about them is
stored. Routers, gates and ``lm_head`` stay in bf16 (``modules_to_not_convert``); vLLM builds those
layers unquantized whatever the list says. Every quantized dim must fill whole blocks: only
architectures that fit (``qwen2moe-wide``) get the variant, and packing anything else is a ZooError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from farm.zoo.checkpoint import write_config
from farm.zoo.compressed import FP8_MAX
from farm.zoo.quant import pack_linears
from farm.zoo.reference import register_quantization
from farm.zoo.registry import ArchSpec, BuildContext

if TYPE_CHECKING:
    import torch

BLOCK = 128
_SCALE = ".weight_scale_inv"


def fits_blocks(arch: ArchSpec) -> bool:
    """Whether every linear of ``arch`` fills whole 128 x 128 blocks: its hidden size, attention projections
    (heads x head dim, KV heads x head dim) and MLP and expert widths. MLA (DeepSeek's latent projections,
    576 wide) does not."""
    c = arch.config
    head_dim = c.get("head_dim", c["hidden_size"] // c["num_attention_heads"])
    widths = [c["hidden_size"], c["num_attention_heads"] * head_dim, c["num_key_value_heads"] * head_dim,
              *(c[k] for k in ("intermediate_size", "moe_intermediate_size", "shared_expert_intermediate_size") if k in c)]
    return "kv_lora_rank" not in c and all(w % BLOCK == 0 for w in widths)


def quantize_block(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """One ``[out, in]`` weight as FP8 E4M3 with a power-of-two scale per 128 x 128 block (exact in bf16)."""
    import torch

    out_f, in_f = weight.shape
    blocks = weight.float().reshape(out_f // BLOCK, BLOCK, in_f // BLOCK, BLOCK)
    absmax = blocks.abs().amax(dim=(1, 3)).clamp(min=2.0**-20)
    scale = torch.exp2(torch.ceil(torch.log2(absmax / FP8_MAX)))  # [out/128, in/128]
    q = (blocks / scale[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return {"weight": q.reshape(out_f, in_f), "weight_scale_inv": scale}


def dequantize(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every tensor of an ``fp8-block`` checkpoint as float32, FP8 weights decoded block by block."""
    out = {}
    for key, value in tensors.items():
        if key.endswith(_SCALE):
            continue
        scale = tensors.get(key[: -len(".weight")] + _SCALE) if key.endswith(".weight") else None
        if scale is None:
            out[key] = value.float()
            continue
        full = scale.float().repeat_interleave(BLOCK, dim=0).repeat_interleave(BLOCK, dim=1)
        out[key] = value.float() * full[: value.shape[0], : value.shape[1]]
    return out


@register_quantization("fp8-block", dequantize=dequantize, when=fits_blocks, quant_method="fp8",
                       weight_block_size=[BLOCK, BLOCK], activations="dynamic", scale="pow2")
def build_fp8_block(ctx: BuildContext) -> dict[str, Any]:
    """Quantize the base model's linear weights as block FP8 (E4M3, 128 x 128 blocks, dynamic activations)."""
    quantized, kept = pack_linears(ctx, quantize_block, group_size=BLOCK, out_multiple=BLOCK)
    write_config(ctx.out_dir, {"quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3",
                               "weight_block_size": [BLOCK, BLOCK], "modules_to_not_convert": kept})
    return {"quantized_linears": quantized, "modules_to_not_convert": kept}
