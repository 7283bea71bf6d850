"""Expansion into cells and stable ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from farm.model.cells import expand
from farm.model.spec import load_job, parse_job

from .conftest import REPO

JOB = {
    "name": "t",
    "models": [
        {
            "name": "dense",
            "variants": [{"zoo": "qwen2-dense"}, {"quantization": "gptq-int4", "zoo": "qwen2-dense-gptq4"}],
            "loras": [{"name": "attn", "zoo": "qwen2-dense-lora-attn"}],
        },
        {"name": "moe", "variants": [{"zoo": "qwen2moe-shared"}], "loras": [{"name": "attn", "zoo": "qwen2moe-shared-lora-attn"}]},
    ],
}


def test_expansion_is_the_cross_product():
    cells = expand(parse_job(JOB))
    assert [(c.model, c.quantization, c.lora) for c in cells] == [
        ("dense", "none", "none"),
        ("dense", "none", "attn"),
        ("dense", "gptq-int4", "none"),
        ("dense", "gptq-int4", "attn"),
        ("moe", "none", "none"),
        ("moe", "none", "attn"),
    ]
    assert len({c.id for c in cells}) == len(cells)
    assert cells[1].lora_source == "zoo:qwen2-dense-lora-attn" and cells[1].max_lora_rank == 8
    assert cells[0].lora_source is None and cells[0].max_lora_rank is None


def test_base_false_drops_the_none_column():
    cells = expand(parse_job({**JOB, "base": False}))
    assert {c.lora for c in cells} == {"attn"}


def test_include_and_exclude_rules():
    only_quantized = expand(parse_job({**JOB, "include": [{"quantization": "gptq-*"}]}))
    assert {c.quantization for c in only_quantized} == {"gptq-int4"}
    no_moe_lora = expand(parse_job({**JOB, "exclude": [{"model": "moe", "lora": "attn"}]}))
    assert ("moe", "attn") not in {(c.model, c.lora) for c in no_moe_lora}
    assert ("moe", "none") in {(c.model, c.lora) for c in no_moe_lora}


def test_ids_depend_only_on_the_combination():
    base = {c.label: c.id for c in expand(parse_job(JOB))}
    tweaked = {**JOB, "probes": ["load"], "timeout_s": 5, "resources": {"num_cpus": 2}, "description": "x"}
    assert {c.label: c.id for c in expand(parse_job(tweaked))} == base
    reordered = {**JOB, "models": list(reversed(JOB["models"]))}
    assert {c.label: c.id for c in expand(parse_job(reordered))} == base
    other_source = json.loads(json.dumps(JOB))
    other_source["models"][0]["variants"][0] = {"checkpoint": "/models/dense"}
    changed = {c.label: c.id for c in expand(parse_job(other_source))}
    assert changed["dense/none/none/current"] != base["dense/none/none/current"]
    assert changed["moe/none/none/current"] == base["moe/none/none/current"]


def test_ids_are_stable_across_processes():
    """A fresh interpreter (another hash seed) computes the same ids: nothing depends on hash()."""
    code = ("from farm.model.spec import load_job; from farm.model.cells import expand; "
            "print(' '.join(c.id for c in expand(load_job('jobs/smoke.yaml'))))")
    here = " ".join(c.id for c in expand(load_job(REPO / "jobs" / "smoke.yaml")))
    env_seeds = [{"PYTHONHASHSEED": "1"}, {"PYTHONHASHSEED": "12345"}]
    for env in env_seeds:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env={**os.environ, **env}, check=True
        )
        assert out.stdout.strip() == here


def test_smoke_job_has_at_least_twelve_cells():
    cells = expand(load_job(REPO / "jobs" / "smoke.yaml"))
    assert len(cells) >= 12
    assert {c.model for c in cells} == {"qwen2-dense", "qwen2moe-shared", "mixtral"}
    assert {c.quantization for c in cells} == {"none", "gptq-int4"}
    assert {c.lora for c in cells} == {"none", "attn"}
