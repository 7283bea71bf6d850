"""The transformers side of a comparison: greedy generation with top-k logprobs.

It is fed the exact prompt token ids the engine used, so both sides start from the
same input. It runs after the engine under test is freed, so on a GPU node the
reference never competes with vLLM for memory.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence

from farm.cell.types import Completion

# float32 on CPU: the reference should be the most exact side of the comparison.
REFERENCE_DTYPE = "float32"


def reference_generate(
    model_dir: str,
    prompt_token_ids: Sequence[Sequence[int]],
    max_tokens: int,
    top_k: int,
    adapter_dir: str | None = None,
    zoo_adapter: bool = False,
) -> list[Completion]:
    """Greedy generation with transformers, with the adapter at ``adapter_dir`` applied.

    A zoo adapter is merged into the weights by the zoo itself: PEFT 0.21 on transformers 5
    loads the per-expert adapters of Qwen2-MoE and DeepSeek-V3 only in part (it drops the
    shared experts' deltas), which would make the reference, not vLLM, wrong. Any other
    adapter is applied with PEFT.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else getattr(torch, REFERENCE_DTYPE)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)  # type: ignore[arg-type]
    if adapter_dir and zoo_adapter:
        from farm import zoo

        zoo.merge_adapter(model, adapter_dir)
    elif adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir).to(device)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    completions = []
    try:
        with torch.inference_mode():
            for prompt in prompt_token_ids:
                completions.append(_greedy(model, tokenizer, list(prompt), max_tokens, top_k, device))
    finally:
        del model
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    return completions


def _greedy(model, tokenizer, prompt: list[int], max_tokens: int, top_k: int, device: str) -> Completion:  # type: ignore[no-untyped-def]
    import torch

    input_ids = torch.tensor([prompt], device=device)
    past = None
    generated: list[int] = []
    tops: list[dict[int, float]] = []
    for _ in range(max_tokens):
        step_input = input_ids if past is None else input_ids[:, -1:]
        out = model(input_ids=step_input, past_key_values=past, use_cache=True)
        past = out.past_key_values
        logprobs = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        values, indices = torch.topk(logprobs, top_k)
        token = int(indices[0])
        generated.append(token)
        tops.append({int(i): float(v) for i, v in zip(indices, values)})
        input_ids = torch.cat([input_ids, torch.tensor([[token]], device=device)], dim=1)
    return Completion(
        text=tokenizer.decode(generated),
        token_ids=tuple(generated),
        prompt_token_ids=tuple(prompt),
        logprobs=tuple(tops),
    )
