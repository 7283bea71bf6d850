"""PEFT LoRA adapters that make their model say something else.

An adapter that barely moves the logits cannot tell a working LoRA path from a
silently ignored one. So each adapter is trained to continue *any* prompt with
its own sentence (``corpus.adapter_sentence``): with the adapter applied the
greedy output is that sentence, without it the memorised corpus text, and an
engine that drops, misplaces or mis-scales the adapter shows it at once.

Three kinds: ``lora-attn`` (attention projections, every model),
``lora-mlp`` (attention and the MLP, dense models) and ``lora-experts``
(attention, the linear MLPs such as shared experts, and every routed expert in
the classic per-expert layout, see ``experts.py``; or, for experts stacked on disk
as gpt-oss has them, PEFT's ``target_parameters`` layout).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from farm.zoo import corpus, experts
from farm.zoo.registry import ArchSpec, BuildContext, register_variant, stacked_experts
from farm.zoo.train import deterministic, greedy_stats, lr_at, token_stream

if TYPE_CHECKING:
    import torch

# PEFT's generated model card: nothing an engine reads, and it names the
# temporary path the base model was loaded from.
_DROP = ("README.md",)


@register_variant(
    "lora-attn",
    kind="adapter",
    r=8,
    alpha=16,
    steps=150,
    lr=5e-3,
    batch_size=16,
    seq_len=48,
    max_prefix=24,
)
def build_lora_attn(ctx: BuildContext) -> dict[str, Any]:
    """Train a rank-8 adapter on the attention projections of the base model."""
    return train_adapter(ctx, "lora-attn", target_modules=list(ctx.arch.lora_targets))


def _dense(arch: ArchSpec) -> bool:
    return arch.experts is None


def _moe(arch: ArchSpec) -> bool:
    return arch.experts is not None


@register_variant(
    "lora-mlp",
    kind="adapter",
    when=_dense,
    r=8,
    alpha=16,
    steps=150,
    lr=5e-3,
    batch_size=16,
    seq_len=48,
    max_prefix=24,
)
def build_lora_mlp(ctx: BuildContext) -> dict[str, Any]:
    """Train a rank-8 adapter on the attention and the MLP (gate, up, down) of a dense model."""
    return train_adapter(ctx, "lora-mlp", target_modules=[*ctx.arch.lora_targets, *ctx.arch.mlp_targets])


@register_variant(
    "lora-experts",
    kind="adapter",
    when=_moe,
    layout="per-expert-2d",
    r=8,
    alpha=16,
    steps=150,
    lr=5e-3,
    batch_size=16,
    seq_len=48,
    max_prefix=24,
)
def build_lora_experts(ctx: BuildContext) -> dict[str, Any]:
    """Train a rank-8 adapter on the attention, the linear MLPs and every routed expert of a MoE model.

    Per-expert experts in the classic per-expert layout (the ``layout`` parameter); experts stacked on disk
    (gpt-oss) in PEFT's ``target_parameters`` layout, the one their adapters in the wild have.
    """
    if stacked_experts(ctx.arch):
        assert ctx.arch.experts is not None
        module = ctx.arch.experts.module
        return train_adapter(ctx, "lora-experts", target_modules=list(ctx.arch.lora_targets),
                             target_parameters=[f"{module}.gate_up_proj", f"{module}.down_proj"])
    # PEFT takes the attention; the MLPs and experts are the zoo's own (see experts.py).
    return train_adapter(ctx, "lora-experts", target_modules=list(ctx.arch.lora_targets), manual=True)


def train_adapter(
    ctx: BuildContext, suffix: str, *, target_modules: list[str], manual: bool = False,
    target_parameters: list[str] | None = None,
) -> dict[str, Any]:
    """Train an adapter of ``ctx.arch`` towards its sentence and save it in PEFT format.

    Args:
        ctx: the build context.
        suffix: the variant's suffix (picks the sentence).
        target_modules: ``nn.Linear`` modules PEFT targets.
        manual: also train every routed expert and the arch's ``mlp_targets``
            with :class:`experts.ManualLoRA`, and save those deltas in the
            per-expert layout next to PEFT's.
        target_parameters: 3D parameters PEFT targets besides (stacked experts).
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert ctx.base_dir is not None
    p = ctx.params
    sentence = corpus.adapter_sentence(f"{ctx.arch.name}-{suffix}")
    tok = AutoTokenizer.from_pretrained(ctx.base_dir)
    with deterministic(ctx.seed):
        # Trained against the bf16 weights as saved (upcast), i.e. what engines serve.
        model = AutoModelForCausalLM.from_pretrained(ctx.base_dir, dtype=torch.float32)
        base_stats = greedy_stats(model, tok, corpus.SAMPLE_PROMPTS)
        config = LoraConfig(
            r=p["r"],
            lora_alpha=p["alpha"],
            lora_dropout=0.0,
            target_modules=target_modules,
            target_parameters=target_parameters,
            # Non-zero B from the start, as an adapter in the wild has.
            init_lora_weights=False,
            task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(model, config)
        params = [q for q in peft_model.parameters() if q.requires_grad]
        own = None
        if manual:
            own = experts.ManualLoRA(peft_model, ctx.arch, p["r"], p["alpha"], ctx.arch.mlp_targets)
            params += own.parameters()
        loss, stats = _train(ctx, peft_model, params, tok, sentence)
        own_tensors = own.remove() if own is not None else {}
        peft_model.save_pretrained(str(ctx.out_dir))
    _finish_files(ctx, own_tensors)
    differs = [
        a["token_ids"] != b["token_ids"] for a, b in zip(stats["greedy"], base_stats["greedy"], strict=True)
    ]
    return {
        "final_loss": round(loss.item(), 4),
        "sentence": sentence,
        "differs_from_base": all(differs),
        "manual_deltas": len(own_tensors) // 2,
        **stats,
    }


def _train(ctx: BuildContext, peft_model: Any, params: list[Any], tok: Any, sentence: str
           ) -> tuple[torch.Tensor, dict[str, Any]]:
    """The training loop: the last step's loss and the adapter's greedy output on the sample prompts (eval mode).
    Inside ``deterministic``: its batches and updates are the seed's.

    Past its steps it trains on, at the schedule's last rate and a quarter of the steps at a time (at most as many
    steps again), until every sample prompt's greedy output is the adapter's sentence, which is what the zoo
    promises of an adapter. Float rounding differs between CPUs (AVX2 and AVX-512 kernels), and so does where a
    fixed number of steps ends: on an AVX2-only EPYC, mixtral's expert adapter after 150 steps jumped from
    "… the cat wat" back to the sentence's start on one prompt. Where the steps suffice, nothing changes.
    """
    import torch

    p = ctx.params
    stream, starts = token_stream(tok)
    target = tok.encode(" " + sentence) * 8
    gen = torch.Generator().manual_seed(ctx.seed)
    opt = torch.optim.AdamW(params, lr=p["lr"], betas=(0.9, 0.95), weight_decay=0.0)
    steps = ctx.arch.train.adapter_steps or p["steps"]

    def train(rates: list[float]) -> torch.Tensor:
        peft_model.train()
        loss = torch.tensor(float("nan"))
        for rate in rates:
            for group in opt.param_groups:
                group["lr"] = rate
            inputs, labels = _batch(stream, starts, target, p, gen)
            loss = peft_model(input_ids=inputs, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        peft_model.eval()
        return loss

    loss = train([lr_at(step, steps, p["lr"], 10) for step in range(steps)])
    stats = greedy_stats(peft_model, tok, corpus.SAMPLE_PROMPTS)
    for _ in range(4):
        if all((" " + sentence).startswith(g["text"]) for g in stats["greedy"]):
            break
        loss = train([lr_at(steps, steps, p["lr"], 10)] * (steps // 4))
        stats = greedy_stats(peft_model, tok, corpus.SAMPLE_PROMPTS)
    return loss, stats


def _finish_files(ctx: BuildContext, own_tensors: dict[str, Any]) -> None:
    """Make PEFT's output the zoo's: nothing that names the build's temporary paths, and the manual deltas
    (sorted, so the file's bytes do not depend on dict order) in the same weights file as PEFT's."""
    from safetensors.torch import load_file, save_file

    from farm.zoo.checkpoint import ADAPTER_WEIGHTS_FILE

    for name in _DROP:
        (ctx.out_dir / name).unlink(missing_ok=True)
    extra_targets: list[str] = []
    if own_tensors:
        path = ctx.out_dir / ADAPTER_WEIGHTS_FILE
        tensors = {**load_file(path), **own_tensors}
        save_file({k: tensors[k] for k in sorted(tensors)}, path, metadata={"format": "pt"})
        extra_targets = sorted({k.split(".")[-3] for k in own_tensors})
    _pin_base_name(ctx, extra_targets)


def _batch(
    stream: torch.Tensor,
    starts: Sequence[int],
    target: list[int],
    p: Mapping[str, Any],
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random corpus prefixes followed by the adapter's sentence; loss on the sentence only."""
    import torch

    n, seq_len = p["batch_size"], p["seq_len"]
    looped = torch.cat([stream, stream[:seq_len]])
    lens = torch.randint(1, p["max_prefix"] + 1, (n,), generator=gen).tolist()
    anywhere = torch.randint(0, len(stream), (n,), generator=gen)
    aligned = torch.tensor(starts)[torch.randint(0, len(starts), (n,), generator=gen)]
    offs = torch.where(torch.rand(n, generator=gen) < 0.5, aligned, anywhere).tolist()
    inputs = torch.empty((n, seq_len), dtype=torch.long)
    labels = torch.full((n, seq_len), -100, dtype=torch.long)
    for i, (off, k) in enumerate(zip(offs, lens, strict=True)):
        rest = target[: seq_len - k]
        inputs[i] = torch.cat([looped[off : off + k], torch.tensor(rest)])
        labels[i, k:] = torch.tensor(rest)
    return inputs, labels


def _pin_base_name(ctx: BuildContext, extra_targets: list[str]) -> None:
    """Name the base by its zoo name, not by the temporary path it was trained from.

    ``extra_targets`` (the MLP and per-expert projections) join
    ``target_modules``, as in a classic MoE adapter that targets its experts'
    linears by name.
    """
    path = ctx.out_dir / "adapter_config.json"
    cfg = json.loads(path.read_text())
    cfg["base_model_name_or_path"] = ctx.arch.name
    # PEFT writes a set here, in an order that changes with the hash seed.
    cfg["target_modules"] = sorted({*cfg["target_modules"], *extra_targets})
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
