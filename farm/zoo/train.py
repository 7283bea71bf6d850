"""Training the base models, and measuring how confident their outputs are.

Random weights give near-flat next-token distributions, where greedy tokens
flip on numerical noise and no engine comparison means anything. A few hundred
AdamW steps on the embedded corpus make the models memorise it, so greedy
continuations of in-domain prompts are confident (top-1 probability well above
one half), and survive bf16, INT4 and a different engine's kernels.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from farm.zoo import corpus
from farm.zoo.checkpoint import hub_compatible
from farm.zoo.registry import ArchSpec, BuildContext

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

GREEDY_TOKENS = 16


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed torch and run single-threaded, restoring the process's settings after.

    One thread because CPU reductions split work per thread, so their float
    rounding (and the bytes of a trained checkpoint) would depend on the core count.
    """
    import torch

    threads = torch.get_num_threads()
    was_det = torch.are_deterministic_algorithms_enabled()
    was_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    # warn_only: an op without a deterministic kernel should not abort a build
    # (on CPU they are deterministic anyway; the flag guards the rest).
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_det, warn_only=was_warn)
        torch.set_num_threads(threads)


def hf_config(arch: ArchSpec) -> Any:
    """The transformers config of ``arch``."""
    from transformers import AutoConfig

    cfg = dict(arch.config)
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    config.architectures = [arch.hf_class]
    return config


def token_stream(tok: PreTrainedTokenizerBase) -> tuple[torch.Tensor, list[int]]:
    """The corpus as one token tensor (documents end with EOS) and each document's start."""
    import torch

    ids: list[int] = []
    starts: list[int] = []
    for doc in corpus.DOCUMENTS:
        starts.append(len(ids))
        ids.extend(tok.encode(doc))
        ids.append(tok.eos_token_id)
    return torch.tensor(ids, dtype=torch.long), starts


def sample_windows(
    stream: torch.Tensor, starts: Sequence[int], batch: int, seq_len: int, gen: torch.Generator
) -> torch.Tensor:
    """A batch of corpus windows; half begin at a document start, where prompts begin."""
    import torch

    # Wrapping around lets every window be full length on a corpus this short.
    looped = torch.cat([stream, stream[: seq_len + 1]])
    offs = torch.randint(0, len(stream), (batch,), generator=gen)
    aligned = torch.tensor(starts)[torch.randint(0, len(starts), (batch,), generator=gen)]
    use_aligned = torch.rand(batch, generator=gen) < 0.5
    offs = torch.where(use_aligned, aligned, offs)
    return torch.stack([looped[o : o + seq_len] for o in offs.tolist()])


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def train_base(ctx: BuildContext) -> dict[str, Any]:
    """Build a base model: train it on the corpus, save it in bf16 with the tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    from farm.zoo.tokenizer import build_tokenizer

    tok = build_tokenizer()
    if ctx.arch.chat_tokens:
        tok.add_special_tokens({"additional_special_tokens": list(ctx.arch.chat_tokens)})
    p = ctx.arch.train
    with deterministic(ctx.seed):
        model = AutoModelForCausalLM.from_config(hf_config(ctx.arch), dtype=torch.float32)
        stream, starts = token_stream(tok)
        gen = torch.Generator().manual_seed(ctx.seed)
        opt = torch.optim.AdamW(model.parameters(), lr=p.lr, betas=(0.9, 0.95), weight_decay=0.0)
        model.train()
        loss = torch.tensor(float("nan"))
        for step in range(p.steps):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, p.steps, p.lr, p.warmup_steps)
            batch = sample_windows(stream, starts, p.batch_size, p.seq_len, gen)
            loss = model(input_ids=batch, labels=batch).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if (step + 1) % 100 == 0:
                ctx.progress(f"  {ctx.arch.name}: step {step + 1}/{p.steps} loss {loss.item():.3f}")
        model.eval()
        # Measured on the weights as saved (bf16), since that is what engines load.
        model = model.to(torch.bfloat16)
        model.generation_config.do_sample = False
        model.save_pretrained(ctx.out_dir)
        tok.save_pretrained(ctx.out_dir)
        hub_compatible(ctx.out_dir)
        stats = greedy_stats(model.float(), tok, corpus.SAMPLE_PROMPTS)
    return {"final_loss": round(loss.item(), 4), **stats}


def greedy_stats(
    model: torch.nn.Module,
    tok: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int = GREEDY_TOKENS,
) -> dict[str, Any]:
    """Greedy-decode each prompt and report how confident each step was.

    Args:
        model: a causal LM whose call returns ``.logits`` (transformers, or PEFT-wrapped).
        tok: its tokenizer.
        prompts: prompts to continue.
        max_new_tokens: greedy steps per prompt.

    Returns:
        ``mean_top1``: the top-1 probability averaged over all prompts and steps;
        ``min_prompt_top1``: the lowest per-prompt average; ``min_step_top1``:
        the least confident single step (where engines would flip first);
        ``greedy``: per prompt, its text, token ids, average and minimum.
    """
    import torch

    per_prompt: list[dict[str, Any]] = []
    with torch.no_grad():
        for prompt in prompts:
            ids = tok.encode(prompt)
            new: list[int] = []
            probs: list[float] = []
            for _ in range(max_new_tokens):
                logits = model(input_ids=torch.tensor([ids + new])).logits[0, -1].float()
                p = torch.softmax(logits, -1)
                top = int(torch.argmax(p))
                new.append(top)
                probs.append(float(p[top]))
            per_prompt.append(
                {
                    "prompt": prompt,
                    "text": tok.decode(new),
                    "token_ids": new,
                    "mean_top1": round(sum(probs) / len(probs), 4),
                    "min_top1": round(min(probs), 4),
                }
            )
    means = [g["mean_top1"] for g in per_prompt]
    return {
        "mean_top1": round(sum(means) / len(means), 4),
        "min_prompt_top1": min(means),
        "min_step_top1": min(g["min_top1"] for g in per_prompt),
        "greedy": per_prompt,
    }
