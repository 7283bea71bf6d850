"""How far dynamic FP8 activation quantization alone moves a zoo model's top-k logprobs, on a CPU.

transformers runs a quantized item's dequantized reference twice, float32: as it is, and with the input of every
linear the checkpoint quantizes (not those it keeps: routers, gates, lm_head) quantized to FP8 E4M3 the way vLLM
does at run time: per token and per group of GROUP input channels ("token": the whole row), scale = absmax / 448,
or its next power of two (``ue8m0``, DeepGEMM's format). The experts' inputs count too (transformers 5 calls
``F.linear`` on each expert's slice). The max top-k logprob difference between the two runs, on the zoo's
prompts and the farm's own comparison, is what the activation quantization costs with no bug at all.

    farm zoo build --only qwen2moe-wide-fp8-block-dequant      # and the checkpoint it is the reference of
    PYTHONPATH=. python docs/gpu/fp8-window/actquant.py ZOO/qwen2moe-wide-fp8-block-dequant \
        ZOO/qwen2moe-wide-fp8-block 128 fp32

(ZOO: ``$FARM_ZOO_DIR``, by default ``~/.cache/farm/zoo``.) Measured 2026-12-07: block FP8 of ``qwen2moe-wide`` 0.297
(``ue8m0``: 0.496); compressed-tensors FP8 of ``qwen2moe-shared`` (``token``) 0.674.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import transformers
from transformers import AutoTokenizer

from farm.cell.compare import compare_outputs
from farm.cell.reference import reference_generate
from farm.zoo.corpus import SAMPLE_PROMPTS

FP8_MAX = 448.0


def main(reference_dir: str, quantized_dir: str, group: str, scale_kind: str) -> None:
    config = json.loads(Path(quantized_dir, "config.json").read_text())["quantization_config"]
    kept = set(config.get("modules_to_not_convert") or config.get("ignore") or [])
    tokenizer = AutoTokenizer.from_pretrained(reference_dir)
    prompts = [tokenizer(p).input_ids for p in SAMPLE_PROMPTS]
    plain = reference_generate(reference_dir, prompts, 16, 5)

    def fake_quantize(x: torch.Tensor) -> torch.Tensor:
        width = x.shape[-1] if group == "token" else int(group)
        groups = x.float().reshape(*x.shape[:-1], x.shape[-1] // width, width)
        scale = groups.abs().amax(-1, keepdim=True).clamp(min=1e-10) / FP8_MAX
        if scale_kind == "ue8m0":
            scale = torch.exp2(torch.ceil(torch.log2(scale)))
        q = (groups / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).float() * scale
        return q.reshape(x.shape).to(x.dtype)

    quantized: set[int] = set()  # storages of the weights the checkpoint quantizes
    linear = torch.nn.functional.linear

    def quantizing_linear(x, weight, bias=None):  # type: ignore[no-untyped-def]
        return linear(fake_quantize(x) if weight.untyped_storage().data_ptr() in quantized else x, weight, bias)

    load = transformers.AutoModelForCausalLM.from_pretrained

    def load_and_mark(*args, **kwargs):  # type: ignore[no-untyped-def]
        model = load(*args, **kwargs)
        for name, param in model.named_parameters():
            module = name.rsplit(".", 1)[0]
            if param.dim() >= 2 and module not in kept and "embed" not in name and not module.endswith("mlp.gate"):
                quantized.add(param.untyped_storage().data_ptr())
        return model

    transformers.AutoModelForCausalLM.from_pretrained = load_and_mark
    torch.nn.functional.linear = quantizing_linear
    simulated = reference_generate(reference_dir, prompts, 16, 5)
    result = compare_outputs(reference=plain, candidate=simulated, name_cand="fp8-activations")
    print(f"{reference_dir.rstrip('/').rsplit('/', 1)[-1]}, group {group}, scale {scale_kind}, "
          f"{len(quantized)} linears quantized: {result.summary()}")


if __name__ == "__main__":
    main(*sys.argv[1:5])
