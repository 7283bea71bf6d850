"""Quantized checkpoints packed by hand from the trained bf16 weights: GPTQ INT4 here.

No calibration: round-to-nearest, symmetric, which is what GPTQ degenerates to
without Hessian updates. Every scale is rounded *up* to the few significant
bits that make each dequantized weight ``q * scale`` exactly representable in
bf16 and in fp16 (:func:`exact_scale`), so the ``-dequant`` reference of a
quantized item (see ``reference.py``) holds exactly the weights every kernel
sees, whatever dtype it dequantizes in.

The GPTQ layout is AutoGPTQ's (``checkpoint_format: gptq``, i.e. v1, where a
stored zero point is the real one minus one), the format vLLM's GPTQ loaders read:

    qweight [in/8, out]  int32   eight 4-bit values along the input dim, low nibble first
    qzeros  [in/G, out/8] int32  eight 4-bit zero points along the output dim
    scales  [in/G, out]  float16
    g_idx   [in]         int32   group of each input channel (desc_act false: i // G)

Weights are read and written in the on-disk naming that transformers'
``save_pretrained`` produces (per-expert ``experts.N.gate_proj`` for Qwen2-MoE
and DeepSeek-V3, ``block_sparse_moe.experts.N.w1`` for Mixtral), so every
expert is packed as the ordinary 2-D linear it is on disk.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from farm.errors import ZooError
from farm.zoo.checkpoint import WEIGHTS_FILE, copy_model_files, write_config
from farm.zoo.reference import register_quantization
from farm.zoo.registry import ArchSpec, BuildContext

if TYPE_CHECKING:
    import torch

GROUP_SIZE = 32
BITS = 4
PACK = 32 // BITS
ZERO = 2 ** (BITS - 1)  # symmetric: the real zero point is mid-range
# Significand bits of bf16, the narrower of the two half formats.
_BF16_BITS = 8
# fp16's smallest normal: scales stay normal in every half format.
_MIN_SCALE = 2.0**-14
# Never quantized, whatever the architecture: real quantized checkpoints keep
# them in float (lm_head=False) and vLLM expects them so.
_ALWAYS_SKIP = ("embed_tokens", "lm_head", "norm")
_GPTQ_PARTS = ("qweight", "qzeros", "scales", "g_idx")


def quantization_config() -> dict[str, Any]:
    """The ``quantization_config`` written into a GPTQ variant's config.json."""
    return {
        "quant_method": "gptq",
        "bits": BITS,
        "group_size": GROUP_SIZE,
        "desc_act": False,
        "sym": True,
        "checkpoint_format": "gptq",
        "lm_head": False,
    }


def dequantize_gptq(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every tensor of a GPTQ checkpoint as float32, packed linears unpacked to ``.weight``."""
    out = {}
    for key, value in tensors.items():
        if key.endswith(".qweight"):
            prefix = key[: -len("qweight")]
            out[prefix + "weight"] = unpack_gptq({p: tensors[prefix + p] for p in _GPTQ_PARTS})
        elif not key.endswith((".qzeros", ".scales", ".g_idx")):
            out[key] = value.float()
    return out


@register_quantization("gptq4", dequantize=dequantize_gptq, group_size=GROUP_SIZE, bits=BITS, scale="exact-5bit")
def build_gptq4(ctx: BuildContext) -> dict[str, Any]:
    """Pack the base model's linear weights into GPTQ int4; everything else to fp16."""
    from safetensors.torch import load_file, save_file

    assert ctx.base_dir is not None
    copy_model_files(ctx.base_dir, ctx.out_dir)
    tensors = load_file(ctx.base_dir / WEIGHTS_FILE)
    out: dict[str, torch.Tensor] = {}
    packed = 0
    for key in sorted(tensors):
        value = tensors[key]
        if should_quantize(ctx.arch, key, value, out_multiple=PACK):
            prefix = key[: -len("weight")]
            for part, t in pack_gptq(value).items():
                out[prefix + part] = t
            packed += 1
        else:
            out[key] = value.half() if value.is_floating_point() else value
    save_file(out, ctx.out_dir / WEIGHTS_FILE, metadata={"format": "pt"})
    # vLLM's GPTQ kernels compute in float16; saying so keeps dtype="auto" working.
    write_config(ctx.out_dir, quantization_config(), dtype="float16")
    return {"packed_linears": packed}


def should_quantize(
    arch: ArchSpec, key: str, value: torch.Tensor, *, group_size: int | None = GROUP_SIZE, out_multiple: int = 1
) -> bool:
    """Whether the on-disk tensor ``key`` is a linear weight a quantizer packs.

    Args:
        arch: the architecture (its ``quant_skip`` names what stays in float).
        key: the on-disk tensor name.
        value: the tensor.
        group_size: the input dim must be a multiple of it (None: no groups).
        out_multiple: the output dim must be a multiple of it (GPTQ packs zero points along it).

    Raises:
        ZooError: a linear weight that should be packed has a shape the format cannot take.
    """
    if not key.endswith(".weight") or value.ndim != 2:
        return False
    if any(s in key for s in _ALWAYS_SKIP) or any(s in key for s in arch.quant_skip):
        return False
    out_features, in_features = value.shape
    if (group_size and in_features % group_size) or out_features % out_multiple:
        raise ZooError(
            f"cannot quantize {key} of shape {tuple(value.shape)}: the input dim must be a "
            f"multiple of {group_size} and the output dim of {out_multiple}; fix the shapes in the "
            f"{arch.name!r} arch or add the tensor to its quant_skip."
        )
    return True


def pack_linears(ctx: BuildContext, pack: Callable[[torch.Tensor], dict[str, torch.Tensor]], *,
                 group_size: int | None, out_multiple: int = 1, only: str | None = None) -> tuple[int, list[str]]:
    """The base model's files and weights into ``ctx.out_dir``, each linear weight ``quant.should_quantize`` takes
    (and whose name holds ``only``, if given) replaced by ``pack``'s tensors under its prefix.

    Returns:
        how many linears were packed, and the linears left in float (on-disk module names, for the config's
        list of what is not quantized).
    """
    from safetensors.torch import load_file, save_file

    assert ctx.base_dir is not None
    copy_model_files(ctx.base_dir, ctx.out_dir)
    tensors = load_file(ctx.base_dir / WEIGHTS_FILE)
    out: dict[str, torch.Tensor] = {}
    kept = []
    packed = 0
    for key in sorted(tensors):
        value = tensors[key]
        if (only is None or only in key) and should_quantize(ctx.arch, key, value, group_size=group_size,
                                                             out_multiple=out_multiple):
            out.update({key[: -len("weight")] + part: t for part, t in pack(value).items()})
            packed += 1
            continue
        out[key] = value
        if key.endswith(".weight") and value.ndim == 2 and "embed_tokens" not in key:
            kept.append(key[: -len(".weight")])
    save_file(out, ctx.out_dir / WEIGHTS_FILE, metadata={"format": "pt"})
    return packed, kept


def exact_scale(absmax: torch.Tensor, qmax: int) -> torch.Tensor:
    """``absmax / qmax`` rounded up to the significant bits that keep ``q * scale`` exact in bf16.

    With ``|q| <= qmax`` needing ``qmax.bit_length()`` bits, a scale of
    ``8 - that`` significant bits makes every product fit bf16's 8 (and fp16's
    11). Rounding up, never down, keeps ``|w / scale| <= qmax``: nothing clips.
    """
    import torch

    bits = _BF16_BITS - qmax.bit_length()
    mantissa, exponent = torch.frexp((absmax.float() / qmax).clamp(min=_MIN_SCALE))
    return torch.ldexp(torch.ceil(mantissa * 2**bits) / 2**bits, exponent)


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """Pack int values in [0, 15] along dim 0 (groups of eight) into int32, low nibble first."""
    import torch

    rows, cols = q.shape
    q = q.to(torch.int64).view(rows // PACK, PACK, cols)
    word = torch.zeros((rows // PACK, cols), dtype=torch.int64)
    for k in range(PACK):
        word |= q[:, k, :] << (BITS * k)
    # Reinterpret as signed int32: the top nibble may set the sign bit.
    return (word - (word >= 2**31).to(torch.int64) * 2**32).to(torch.int32)


def unpack_nibbles(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`pack_nibbles`: int32 ``[r, c]`` to int64 ``[r * 8, c]`` in [0, 15]."""
    import torch

    x = x.to(torch.int64) & 0xFFFFFFFF
    return torch.stack([(x >> (BITS * k)) & 0xF for k in range(PACK)], 1).flatten(0, 1)


def pack_gptq(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """Quantize one ``[out, in]`` weight to GPTQ v1 tensors (see the module docstring)."""
    import torch

    w = weight.float()
    out_f, in_f = w.shape
    groups = w.view(out_f, in_f // GROUP_SIZE, GROUP_SIZE)
    scale = exact_scale(groups.abs().amax(-1), ZERO - 1)  # [out, in/G], exact in fp16
    q = (torch.round(groups / scale[..., None]) + ZERO).clamp(0, 2**BITS - 1).view(out_f, in_f)
    zeros = torch.full((in_f // GROUP_SIZE, out_f), ZERO - 1, dtype=torch.int64)  # v1: zero - 1
    return {
        "qweight": pack_nibbles(q.t().contiguous()),
        "qzeros": pack_nibbles(zeros.t().contiguous()).t().contiguous(),
        "scales": scale.t().contiguous().half(),
        "g_idx": (torch.arange(in_f, dtype=torch.int32) // GROUP_SIZE),
    }


def unpack_gptq(parts: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Dequantize GPTQ v1 tensors back to a float32 ``[out, in]`` weight."""
    q = unpack_nibbles(parts["qweight"])  # [in, out]
    zeros = unpack_nibbles(parts["qzeros"].t()).t() + 1  # [in/G, out], v1 stores zero - 1
    g = parts["g_idx"].long()
    w = (q - zeros[g]).float() * parts["scales"].float()[g]
    return w.t().contiguous()
