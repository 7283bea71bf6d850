"""The built-in zoo architectures.

Shapes are chosen for the engines' kernels, not for quality: head size 32
(hidden 128, 4 heads), every linear dimension a multiple of 32 so the INT4
kernels' group size 32 divides it, 8 experts top-2 for the MoE models. Two
layers keep one engine build to seconds on a CPU.
"""

from __future__ import annotations

from farm.zoo.registry import ArchSpec, register_arch
from farm.zoo.tokenizer import EOS_TOKEN_ID

# Padded above the tokenizer's 500 entries to a multiple of 32, as real
# checkpoints pad their embeddings for the kernels.
MODEL_VOCAB_SIZE = 512

COMMON = {
    "vocab_size": MODEL_VOCAB_SIZE,
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "eos_token_id": EOS_TOKEN_ID,
    "bos_token_id": EOS_TOKEN_ID,
    "pad_token_id": EOS_TOKEN_ID,
    # Untied, so lm_head is a separate tensor the way quantizers and LoRA see it
    # in most real checkpoints.
    "tie_word_embeddings": False,
}


@register_arch("qwen2-dense")
def qwen2_dense() -> ArchSpec:
    return ArchSpec(
        name="qwen2-dense",
        hf_class="Qwen2ForCausalLM",
        config={"model_type": "qwen2", **COMMON, "intermediate_size": 256},
    )


@register_arch("qwen2moe-shared")
def qwen2moe_shared() -> ArchSpec:
    return ArchSpec(
        name="qwen2moe-shared",
        hf_class="Qwen2MoeForCausalLM",
        config={
            "model_type": "qwen2_moe",
            **COMMON,
            "intermediate_size": 256,
            "moe_intermediate_size": 64,
            "shared_expert_intermediate_size": 128,
            "num_experts": 8,
            "num_experts_per_tok": 2,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [],
        },
        # The router (8 x 128) and the shared-expert gate (1 x 128) cannot be
        # grouped by 32 on their output side, and real GPTQ checkpoints keep them.
        quant_skip=(".mlp.gate.", ".shared_expert_gate."),
    )


@register_arch("mixtral")
def mixtral() -> ArchSpec:
    return ArchSpec(
        name="mixtral",
        hf_class="MixtralForCausalLM",
        config={
            "model_type": "mixtral",
            **COMMON,
            "intermediate_size": 64,
            "num_local_experts": 8,
            "num_experts_per_tok": 2,
        },
        # On disk transformers writes Mixtral's router as block_sparse_moe.gate.
        quant_skip=(".block_sparse_moe.gate.", ".mlp.gate."),
    )
