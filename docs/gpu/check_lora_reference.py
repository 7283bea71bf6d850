"""On a GPU machine: the transformers side of `lora_reference` runs there, and agrees with the CPU's.

Until 2026-12-06 every `lora_reference` probe on a GPU was skipped ("no reference: … Expected all tensors to be on
the same device, … cuda:0 and cpu"): the zoo merged an adapter's deltas, read on the CPU, into a model on the
GPU. This builds a base and its adapter from the zoo, computes the adapter's greedy reference on the GPU (bf16,
what a GPU cell uses) and on the CPU (float32, in a child without CUDA), and prints, per pair, whether the
adapter changed the output and how far the two devices are apart.

    PYTHONPATH=<pydantic's wheels>:. python3 docs/gpu/check_lora_reference.py [BASE:ADAPTER …]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

PAIRS = ["qwen2-dense:qwen2-dense-lora-attn", "qwen2moe-shared:qwen2moe-shared-lora-experts", "mixtral:mixtral-lora-experts"]
TOKENS, TOP_K = 16, 5


def generate(base: str, adapter: str | None) -> list[dict]:
    from transformers import AutoTokenizer

    from farm import zoo
    from farm.cell.reference import reference_generate
    from farm.zoo.corpus import SAMPLE_PROMPTS

    base_dir = str(zoo.ensure(base))
    adapter_dir = str(zoo.ensure(adapter)) if adapter else None
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    prompts = [tokenizer(p)["input_ids"] for p in SAMPLE_PROMPTS[:4]]
    out = reference_generate(base_dir, prompts, TOKENS, TOP_K, adapter_dir=adapter_dir, zoo_adapter=bool(adapter))
    return [{"tokens": list(c.token_ids), "logprobs": [c.logprobs[i][t] for i, t in enumerate(c.token_ids)]} for c in out]


def main() -> int:
    if sys.argv[1:2] == ["--child"]:  # the CPU side: CUDA hidden
        print(json.dumps(generate(sys.argv[2], sys.argv[3])))
        return 0
    import torch

    print("device:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
    ok = True
    for pair in sys.argv[1:] or PAIRS:
        base, adapter = pair.split(":")
        try:
            gpu, plain = generate(base, adapter), generate(base, None)
        except Exception as exc:  # what the probe would have skipped with
            print(f"{pair}: FAILED: {type(exc).__name__}: {exc}")
            ok = False
            continue
        child = subprocess.run([sys.executable, __file__, "--child", base, adapter], capture_output=True, text=True,
                               env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
        if child.returncode != 0:
            print(f"{pair}: the CPU side failed: {child.stderr[-500:]}")
            ok = False
            continue
        cpu = json.loads(child.stdout.strip().splitlines()[-1])
        same = sum(g["tokens"] == c["tokens"] for g, c in zip(gpu, cpu))
        changed = sum(g["tokens"] != p["tokens"] for g, p in zip(gpu, plain))
        diff = max(abs(a - b) for g, c in zip(gpu, cpu) if g["tokens"] == c["tokens"]
                   for a, b in zip(g["logprobs"], c["logprobs"])) if same else float("nan")
        where = "the GPU" if torch.cuda.is_available() else "the CPU (no GPU here)"
        print(f"{pair}: ran on {where}; the adapter changes {changed}/4 prompts' tokens; GPU bf16 vs CPU float32: "
              f"{same}/4 prompts identical, max chosen-token logprob diff {diff:.3f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
