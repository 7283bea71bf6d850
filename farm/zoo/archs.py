"""The built-in zoo architectures.

Shapes are chosen for the engines' kernels, not for quality: head size 32
(hidden 128, 4 heads), every linear dimension a multiple of 32 so the INT4
kernels' group size 32 divides it, 8 experts top-2 for the MoE models. Two
layers keep one engine build to seconds on a CPU.
"""

from __future__ import annotations

import dataclasses

from farm.zoo.registry import ArchSpec, Experts, TrainParams, register_arch
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
        experts=Experts(),
        # The shared expert is an ordinary MLP: the MLP adapters target it by name.
        mlp_targets=("gate_proj", "up_proj", "down_proj"),
        # The router (8 x 128) and the shared-expert gate (1 x 128) cannot be
        # grouped by 32 on their output side, and real GPTQ checkpoints keep them.
        quant_skip=(".mlp.gate.", ".shared_expert_gate."),
    )


@register_arch("qwen2moe-narrow")
def qwen2moe_narrow() -> ArchSpec:
    """Qwen2-MoE with shared experts whose routed experts are 96 wide, not a multiple of 64.

    vLLM's Marlin MoE kernels need expert widths that are multiples of 64; below
    that, INT4 MoE checkpoints take the Triton WNA16 MoE method instead (on a
    GPU as on a CPU). Real deployments land there too: Qwen1.5-MoE-A2.7B's
    experts (1408 wide) split four ways by tensor parallelism are 352 wide per
    GPU. The two shapes together cover both INT4 MoE paths.
    """
    base = qwen2moe_shared()
    return dataclasses.replace(base, name="qwen2moe-narrow", config={**base.config, "moe_intermediate_size": 96})


@register_arch("qwen2moe-wide")
def qwen2moe_wide() -> ArchSpec:
    """Qwen2-MoE with shared experts whose every quantized linear is a multiple of 128 wide on both sides.

    The shape block-FP8 checkpoints need (``weight_block_size: [128, 128]``, the format of the official
    FP8 releases of Qwen3 and DeepSeek-V3): vLLM checks that each part of a merged projection (q, k, v;
    gate, up) and each expert's width fills whole 128 blocks. Four KV heads (k, v: 4 x 32 = 128) and
    128-wide routed experts; the rest is ``qwen2moe-shared``.
    """
    base = qwen2moe_shared()
    return dataclasses.replace(base, name="qwen2moe-wide",
                               config={**base.config, "num_key_value_heads": 4, "moe_intermediate_size": 128})


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
        experts=Experts(disk_prefix="block_sparse_moe.experts", projections=("w1", "w3", "w2")),
        # No MLP outside the routed experts.
        mlp_targets=(),
        # On disk transformers writes Mixtral's router as block_sparse_moe.gate.
        quant_skip=(".block_sparse_moe.gate.", ".mlp.gate."),
    )


@register_arch("mixtral-narrow")
def mixtral_narrow() -> ArchSpec:
    """Mixtral with 96-wide experts: plain FusedMoE (no shared experts) on the INT4 MoE path
    that ``qwen2moe-narrow`` takes, the control for its shared-expert rows."""
    base = mixtral()
    return dataclasses.replace(base, name="mixtral-narrow", config={**base.config, "intermediate_size": 96})


@register_arch("deepseekv3")
def deepseekv3() -> ArchSpec:
    """DeepSeek-V3: multi-head latent attention, a shared expert, sigmoid routing.

    MLA keeps DeepSeek's real head dims (nope 128, rope 64, v 128, latent 512):
    vLLM's CPU MLA needs ``kv_lora_rank + qk_rope_head_dim == 576``, and the GPU
    MLA backends reject smaller heads. The first layer is dense, as in the real
    model (``first_k_dense_replace``), so the zoo has a dense and a MoE layer.
    """
    return ArchSpec(
        name="deepseekv3",
        hf_class="DeepseekV3ForCausalLM",
        config={
            "model_type": "deepseek_v3",
            **COMMON,
            # MLA has no grouped KV heads; transformers wants them equal.
            "num_key_value_heads": 4,
            "intermediate_size": 256,
            "moe_intermediate_size": 64,
            "n_shared_experts": 1,
            "n_routed_experts": 8,
            "num_experts_per_tok": 2,
            "n_group": 1,
            "topk_group": 1,
            "first_k_dense_replace": 1,
            "q_lora_rank": None,
            "kv_lora_rank": 512,
            "qk_nope_head_dim": 128,
            "qk_rope_head_dim": 64,
            "v_head_dim": 128,
            # vLLM reads the router from these (transformers always does
            # sigmoid scoring with a correction bias, i.e. noaux_tc).
            "topk_method": "noaux_tc",
            "scoring_func": "sigmoid",
            # No multi-token-prediction layer: nothing an engine would load.
            "num_nextn_predict_layers": 0,
        },
        lora_targets=("q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"),
        # Layer 0's dense MLP and the shared experts.
        mlp_targets=("gate_proj", "up_proj", "down_proj"),
        experts=Experts(),
        # The router (8 x 128); its e_score_correction_bias is not a weight.
        quant_skip=(".mlp.gate.",),
        # kv_b_proj (512 -> 1024 per token) makes a step 3x a Qwen2 step, so the
        # rate is higher. 240 steps, not 120: at 120 one prompt's greedy path ran
        # through a near tie (top-1 0.37) on a CPU with AMX, so 4-bit rounding
        # changed the base's output and the expert adapter said its sentence after
        # eleven spaces; at 240 (adapters 160) every prompt has top-1 >= 0.95 and
        # the dequantized references agree with the base on all 16 tokens. Cold
        # build: base ~60 s, each adapter ~25 s on 2 cores.
        train=TrainParams(steps=240, lr=5e-3, adapter_steps=160),
    )


@register_arch("gptoss")
def gptoss() -> ArchSpec:
    """gpt-oss: experts stored as 3D parameters, attention sinks, sliding and full attention layers alternating.

    The experts are what sets it apart: on disk each layer has ``mlp.experts.gate_up_proj [E, H, 2I]`` and
    ``mlp.experts.down_proj [E, I, H]`` (with biases), and vLLM loads LoRA for them through its 3D-expert path
    (``is_3d_moe_weight``), from PEFT's ``target_parameters`` layout. The rest follows gpt-oss-20b's config:
    biased attention projections, a sliding window of 128 on every other layer, YaRN rope (factor 32 over
    4096 positions, theta 150000), the clamped SwiGLU, the expert width equal to the hidden size. bf16: the real
    releases' MXFP4 experts are a format the zoo does not write.
    """
    return ArchSpec(
        name="gptoss",
        hf_class="GptOssForCausalLM",
        config={
            "model_type": "gpt_oss",
            **COMMON,
            "head_dim": 32,
            "intermediate_size": 128,
            "num_local_experts": 8,
            "num_experts_per_tok": 2,
            "attention_bias": True,
            "sliding_window": 128,
            "layer_types": ["sliding_attention", "full_attention"],
            "max_position_embeddings": 131072,
            "rope_parameters": {"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0,
                                "original_max_position_embeddings": 4096, "beta_fast": 32.0, "beta_slow": 1.0,
                                "truncate": False},
        },
        experts=Experts(stacked=True),
        mlp_targets=(),
        quant_skip=(".mlp.router.",),
        # The harmony format's tokens, in o200k_harmony's order (ids 199998 … 200012 there, 500 … 507 here).
        chat_tokens=("<|startoftext|>", "<|return|>", "<|constrain|>", "<|channel|>", "<|start|>", "<|end|>",
                     "<|message|>", "<|call|>"),
    )
