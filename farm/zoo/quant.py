"""GPTQ INT4 checkpoints packed by hand from the trained bf16 weights.

No calibration: round-to-nearest per group of 32 input channels, symmetric,
which is what GPTQ degenerates to without Hessian updates. The on-disk layout
is AutoGPTQ's (``checkpoint_format: gptq``, i.e. v1, where a stored zero point
is the real one minus one), the format vLLM's GPTQ loaders read:

    qweight [in/8, out]  int32   eight 4-bit values along the input dim, low nibble first
    qzeros  [in/G, out/8] int32  eight 4-bit zero points along the output dim
    scales  [in/G, out]  float16
    g_idx   [in]         int32   group of each input channel (desc_act false: i // G)

Weights are read and written in the on-disk naming that transformers'
``save_pretrained`` produces (per-expert ``experts.N.gate_proj`` for Qwen2-MoE,
``block_sparse_moe.experts.N.w1`` for Mixtral), so every expert is packed as
the ordinary 2-D linear it is on disk.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from farm.errors import ZooError
from farm.zoo import corpus
from farm.zoo.registry import ArchSpec, BuildContext, register_variant

if TYPE_CHECKING:
    import torch

GROUP_SIZE = 32
BITS = 4
PACK = 32 // BITS
ZERO = 2 ** (BITS - 1)  # symmetric: the real zero point is mid-range
WEIGHTS_FILE = "model.safetensors"
# Never quantized, whatever the architecture: real GPTQ checkpoints keep them
# in float (lm_head=False) and vLLM expects them so.
_ALWAYS_SKIP = ("embed_tokens", "lm_head", "norm")


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


@register_variant("gptq4", kind="model", group_size=GROUP_SIZE, bits=BITS, scale="absmax/7")
def build_gptq4(ctx: BuildContext) -> dict[str, Any]:
    """Pack the base model's linear weights into GPTQ int4; everything else to fp16."""
    from safetensors.torch import load_file, save_file

    assert ctx.base_dir is not None
    for f in sorted(ctx.base_dir.iterdir()):
        if f.is_file() and f.name != WEIGHTS_FILE and not f.name.startswith("farm-"):
            shutil.copy2(f, ctx.out_dir / f.name)
    tensors = load_file(ctx.base_dir / WEIGHTS_FILE)
    out: dict[str, torch.Tensor] = {}
    packed = 0
    for key in sorted(tensors):
        value = tensors[key]
        if should_quantize(ctx.arch, key, value):
            prefix = key[: -len("weight")]
            for part, t in pack_gptq(value).items():
                out[prefix + part] = t
            packed += 1
        else:
            out[key] = value.half() if value.is_floating_point() else value
    save_file(out, ctx.out_dir / WEIGHTS_FILE, metadata={"format": "pt"})
    config_path = ctx.out_dir / "config.json"
    config = json.loads(config_path.read_text())
    # vLLM's GPTQ kernels compute in float16; saying so keeps dtype="auto" working.
    config["dtype"] = "float16"
    config["quantization_config"] = quantization_config()
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return {"packed_linears": packed, **fake_quant_check(ctx)}


def should_quantize(arch: ArchSpec, key: str, value: torch.Tensor) -> bool:
    """Whether the on-disk tensor ``key`` is a linear weight GPTQ packs."""
    if not key.endswith(".weight") or value.ndim != 2:
        return False
    if any(s in key for s in _ALWAYS_SKIP) or any(s in key for s in arch.quant_skip):
        return False
    out_features, in_features = value.shape
    if in_features % GROUP_SIZE or out_features % PACK:
        raise ZooError(
            f"cannot GPTQ-pack {key} of shape {tuple(value.shape)}: the input dim must be a "
            f"multiple of {GROUP_SIZE} and the output dim of {PACK}; fix the shapes in the "
            f"{arch.name!r} arch or add the tensor to its quant_skip."
        )
    return True


def _pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """Pack int values in [0, 15] along dim 0 (groups of eight) into int32, low nibble first."""
    import torch

    rows, cols = q.shape
    q = q.to(torch.int64).view(rows // PACK, PACK, cols)
    word = torch.zeros((rows // PACK, cols), dtype=torch.int64)
    for k in range(PACK):
        word |= q[:, k, :] << (BITS * k)
    # Reinterpret as signed int32: the top nibble may set the sign bit.
    return (word - (word >= 2**31).to(torch.int64) * 2**32).to(torch.int32)


def pack_gptq(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """Quantize one ``[out, in]`` weight to GPTQ v1 tensors (see the module docstring)."""
    import torch

    w = weight.float()
    out_f, in_f = w.shape
    groups = w.view(out_f, in_f // GROUP_SIZE, GROUP_SIZE)
    scale = (groups.abs().amax(-1) / (ZERO - 1)).clamp(min=1e-8)  # [out, in/G]
    # Round against the fp16 scale that is stored, so dequantizing is exact.
    scale = scale.half().float()
    q = (torch.round(groups / scale[..., None]) + ZERO).clamp(0, 2**BITS - 1).view(out_f, in_f)
    zeros = torch.full((in_f // GROUP_SIZE, out_f), ZERO - 1, dtype=torch.int64)  # v1: zero - 1
    return {
        "qweight": _pack_nibbles(q.t().contiguous()),
        "qzeros": _pack_nibbles(zeros.t().contiguous()).t().contiguous(),
        "scales": scale.t().contiguous().half(),
        "g_idx": (torch.arange(in_f, dtype=torch.int32) // GROUP_SIZE),
    }


def unpack_gptq(parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """Dequantize GPTQ v1 tensors back to a float32 ``[out, in]`` weight."""
    import torch

    def nibbles(x: torch.Tensor) -> torch.Tensor:  # int32 [r, c] -> [r * 8, c]
        x = x.to(torch.int64) & 0xFFFFFFFF
        return torch.stack([(x >> (BITS * k)) & 0xF for k in range(PACK)], 1).flatten(0, 1)

    q = nibbles(parts["qweight"])  # [in, out]
    zeros = nibbles(parts["qzeros"].t()).t() + 1  # [in/G, out], v1 stores zero - 1
    g = parts["g_idx"].long()
    w = (q - zeros[g]).float() * parts["scales"].float()[g]
    return w.t().contiguous()


def fake_quant_check(ctx: BuildContext) -> dict[str, Any]:
    """Greedy output of the dequantized weights in transformers, against the base's.

    It tells whether INT4 rounding alone flips the model's greedy tokens, so
    that an engine disagreeing with the bf16 reference is the engine's doing.
    """
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from farm.zoo.train import greedy_stats

    assert ctx.base_dir is not None
    tensors = load_file(ctx.out_dir / WEIGHTS_FILE)
    dense: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if key.endswith(".qweight"):
            prefix = key[: -len("qweight")]
            parts = {p: tensors[prefix + p] for p in ("qweight", "qzeros", "scales", "g_idx")}
            dense[prefix + "weight"] = unpack_gptq(parts).half()
        elif not key.endswith((".qzeros", ".scales", ".g_idx")):
            dense[key] = value
    tok = AutoTokenizer.from_pretrained(ctx.base_dir)
    # ".build-" so that a build killed mid-check leaves nothing clean_partial misses.
    with tempfile.TemporaryDirectory(dir=ctx.out_dir.parent, prefix=".build-fakequant-") as tmp:
        shutil.copy2(ctx.base_dir / "config.json", Path(tmp) / "config.json")
        save_file(dense, Path(tmp) / WEIGHTS_FILE, metadata={"format": "pt"})
        model = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32)
    stats = greedy_stats(model, tok, corpus.SAMPLE_PROMPTS)
    base_model = AutoModelForCausalLM.from_pretrained(ctx.base_dir, dtype=torch.float32)
    base = greedy_stats(base_model, tok, corpus.SAMPLE_PROMPTS)
    agree = [
        _common_prefix(a["token_ids"], b["token_ids"])
        for a, b in zip(stats["greedy"], base["greedy"], strict=True)
    ]
    return {"fake_quant_agree_tokens": agree, **stats}


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n
