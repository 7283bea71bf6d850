"""`farm bisect`: the search with a fake outcome oracle, the arguments' checks, and whole bisections
through the real driver (the fault-injection seam here; over the two real vLLM versions in tests/test_two_versions.py).
"""

from __future__ import annotations

import json
import math

import pytest
import yaml

from farm.errors import BisectError
from farm.model.cells import expand
from farm.model.results import CellResult, CellStatus, ErrorInfo, utcnow
from farm.model.spec import parse_job
from farm.model.verdicts import root_cause
from farm.ops.bisect import Observation, Outcome, bisect, commit_engines, read_commits, search, single_cell_job
from farm.store import open_store, put_result

STORED_ERROR = ErrorInfo(type="AttributeError", message="no w2_weight", signature="5ca1ab1e00")

PASS = Outcome("pass")
BROKEN = Outcome("fail", "a1b2c3d4e5")
OTHER = Outcome("crash", "ffff000011")
ENV = Outcome("env_error")


def oracle(outcomes):
    calls = []

    def observe(i: int) -> Observation:
        calls.append(i)
        return Observation(outcomes[i], "ran")

    return observe, calls


@pytest.mark.parametrize("change", [1, 2, 377, 637, 998, 999])
def test_finds_the_first_changed_commit_of_1000_in_log2_steps(change):
    commits = [f"c{i:04d}" for i in range(1000)]
    observe, calls = oracle([PASS] * change + [BROKEN] * (1000 - change))
    result, last_good, first, steps, skipped, monotonic, notes = search(commits, 0, 999, observe)
    assert (result, last_good, first, monotonic) == ("found", change - 1, change, True)
    assert len(calls) == len(set(calls)), "no commit is run twice"
    assert len(calls) <= math.ceil(math.log2(1000)) + 2  # two ends, then ⌈log2 n⌉ halvings at most
    assert steps[-1].judged in ("good", "changed") and not notes and not skipped


def test_same_outcome_on_both_ends_is_no_change():
    observe, calls = oracle([BROKEN] * 10)
    assert search([str(i) for i in range(10)], 0, 9, observe)[0] == "no_change"
    assert calls == [0, 9]


def test_an_end_without_a_verdict_is_refused():
    observe, _ = oracle([ENV] + [PASS] * 9)
    with pytest.raises(BisectError, match="--good 0: the cell has no verdict there"):
        search([str(i) for i in range(10)], 0, 9, observe)
    with pytest.raises(BisectError, match="--good must come before --bad"):
        search(["a", "b"], 1, 0, observe)


def test_untestable_candidates_are_skipped_and_a_range_reported():
    outcomes = [PASS] * 40 + [ENV] * 20 + [BROKEN] * 40  # the change is hidden among 20 commits that do not build
    observe, calls = oracle(outcomes)
    result, last_good, first, _, skipped, _, _ = search([f"c{i}" for i in range(100)], 0, 99, observe)
    assert (result, last_good, first) == ("range", 39, 60)
    assert skipped == [f"c{i}" for i in range(40, 60)]
    outcomes = [PASS] * 40 + [ENV] * 5 + [PASS] * 5 + [BROKEN] * 50  # skipped, but the change is elsewhere
    observe, _ = oracle(outcomes)
    assert search([f"c{i}" for i in range(100)], 0, 99, observe)[:3] == ("found", 49, 50)


def test_a_third_outcome_counts_as_changed_and_is_named():
    outcomes = [PASS] * 300 + [OTHER] * 300 + [BROKEN] * 400
    observe, _ = oracle(outcomes)
    lines: list[str] = []
    result, _, first, steps, _, _, notes = search([f"c{i}" for i in range(1000)], 0, 999, observe, say=lines.append)
    assert (result, first) == ("found", 300)
    assert any(s.judged == "third" for s in steps)
    assert len(notes) == 1 and "a third outcome: crash [ffff000011] at c" in notes[0] and "changed more than once" in notes[0]
    assert any(" third " in line for line in lines)


def test_a_non_monotonic_history_is_reported_not_hidden():
    """pass, then broken from 300, fixed again at 600-799, broken again: the search finds 300 and
    the store's earlier result at 700 (a nightly) shows the flip back."""
    outcomes = [PASS] * 300 + [BROKEN] * 300 + [PASS] * 200 + [BROKEN] * 200
    observe, _ = oracle(outcomes)
    result, _, first, _, _, monotonic, notes = search([f"c{i}" for i in range(1000)], 0, 999, observe,
                                                      known={700: [PASS]})
    assert (result, first, monotonic) == ("found", 300, False)
    assert notes == ["not monotonic: c700 gives --good's outcome (pass) after the change at c300; "
                     "the outcome flips back and forth (flaky, or fixed and broken again)"]


def test_commit_lists_are_checked_line_by_line(tmp_path):
    good = tmp_path / "commits.txt"
    shas = [f"{i:040x}" for i in range(1, 4)]
    good.write_text(f"# oldest first\n{shas[0]} first\n\n{shas[1]}\n{shas[2]}  # newest\n")
    assert read_commits(good) == [(shas[0], "first"), (shas[1], shas[1][:12]), (shas[2], shas[2][:12])]
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{shas[0]}\n72d9c31\n")
    with pytest.raises(BisectError, match=r"bad.txt:2: '72d9c31' is not a full 40-character commit sha"):
        read_commits(bad)
    with pytest.raises(BisectError, match="No such file"):
        read_commits(tmp_path / "missing.txt")


def test_commit_engines_take_the_install_fields_of_like():
    job = parse_job({"name": "j", "models": [{"name": "m", "variants": [{"zoo": "qwen2-dense"}]}],
                     "engines": [{"name": "cpu", "kind": "uv", "requirements": ["vllm==0.11.0"], "variant": "cpu",
                                  "uninstall": ["torchvision"], "extra_index_urls": ["https://example.org/simple"]}]})
    engines = commit_engines(job, [("a" * 40, "one"), ("b" * 40, "two")], "cpu")
    assert [(e.name, e.kind, e.commit, e.variant, e.uninstall, e.requirements) for e in engines] == [
        ("one", "uv", "a" * 40, "cpu", ["torchvision"], []), ("two", "uv", "b" * 40, "cpu", ["torchvision"], [])]
    assert engines[0].extra_index_urls == ["https://example.org/simple"]
    with pytest.raises(BisectError, match="--like gpu: job j has no such engine. Did you mean 'cpu'?"):
        commit_engines(job, [("a" * 40, "one")], "gpu")


# ---- the arguments, through the real CLI (no Ray starts for a bad argument) ----


def fault_engines_job(name: str = "fib", engines: int = 6) -> str:
    listed = ", ".join(f"{{name: e{i}, kind: fault-injection}}" for i in range(engines))
    return f"""
name: {name}
models:
  - name: m
    variants:
      - {{quantization: q, checkpoint: fault-injection, engine_args: {{fault: pass}}}}
      - {{quantization: other, checkpoint: fault-injection, engine_args: {{fault: pass}}}}
engines: [{listed}]
probes: [load, generate]
timeout_s: 120
"""


@pytest.mark.parametrize(("args", "message"), [
    (["--cell", "m/q/none", "--good", "e09", "--bad", "e5"],
     "farm: error: --good e09: not one of the engines of job fib. Did you mean 'e0'? Available: e0, e1, e2, e3, e4, e5."),
    (["--cell", "m/q/none", "--good", "e4", "--bad", "e1"],
     "farm: error: --good e4 comes after --bad e1 in the job engine order (oldest first): give the older one as --good"),
    (["--cell", "m/q/none", "--good", "e1", "--bad", "e1"],
     "farm: error: --good and --bad are both e1; give two different engines"),
    (["--cell", "m/zz/none", "--good", "e0", "--bad", "e1"],
     "farm: error: --cell m/zz/none: job fib has no cell with this id or combination; give a cell id from "
     "`farm validate` or one of: m/other/none, m/q/none"),
    (["--cell", "m/q/none", "--good", "e0", "--bad", "e1", "--like", "e0"],
     "farm: error: --like ENGINE applies to --commits FILE"),
])
def test_bad_arguments_are_one_line(farm_cli, write_job, tmp_path, args, message):
    job = write_job(fault_engines_job())
    code, out, err = farm_cli("bisect", "--job", str(job), *args, "--store", str(tmp_path / "store"))
    assert code == 1, out + err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert not (tmp_path / "store").exists(), "nothing written for a bad argument"


# ---- whole bisections through the real driver, with the fault-injection seam ----


@pytest.fixture(scope="module")
def local_ray():
    from farm.runner.driver import connect

    ray = connect()
    yield ray
    ray.shutdown()


def test_bisect_runs_one_cell_a_step_and_reuses_the_store(local_ray, tmp_path, monkeypatch):
    """e3..e5 already failed in an earlier run (seeded): the bisection runs e0 and e2 only, finds e3."""
    monkeypatch.setenv("FARM_HOME", str(tmp_path / "home"))
    job = parse_job(yaml.safe_load(fault_engines_job()))
    store = open_store(str(tmp_path / "store"))
    base = next(c for c in expand(job) if c.quantization == "q")
    for engine in job.engines[3:]:
        _, cell = single_cell_job(job, base, engine)
        assert cell.id in {c.id for c in expand(job)}, "a step's cell is the job's own cell"
        put_result(store, CellResult(run_id="nightly-1", cell_id=cell.id, cell=cell, status=CellStatus.FAIL,
                                     error=STORED_ERROR,
                                     finished_at=utcnow()))
    lines: list[str] = []
    verdict = bisect(job, "m/q/none", "e0", "e5", store=store, say=lines.append)
    assert (verdict.result, verdict.last_good, verdict.first_changed) == ("found", "e2", "e3")
    assert verdict.first_changed_outcome == f"fail [{root_cause(STORED_ERROR)}]" and verdict.good_outcome == "pass"
    assert [(s.candidate, s.source) for s in verdict.steps] == [("e0", "ran"), ("e5", "store"), ("e2", "ran"),
                                                                 ("e3", "store")]
    assert verdict.runs == 2 and verdict.monotonic
    runs = sorted({k.split("/")[1] for k in store.list("runs/") if not k.startswith("runs/nightly-1/")})
    assert runs == [f"{verdict.bisect_id}-1", f"{verdict.bisect_id}-2"]
    for run_id in runs:  # one cell a step, with the job's name, and no matrix of its own
        manifest = json.loads(store.get(f"runs/{run_id}/manifest.json"))
        assert len(manifest["cells"]) == 1 and manifest["job_name"] == "fib"
    assert store.list("matrix/") == [] and not store.exists("index.html")
    # Read as a matrix all the same (farm matrix, farm known-bugs check), built from its results, nothing written.
    from farm.report.aggregate import load_matrix

    step = load_matrix(store, runs[0])
    assert [(c.engine, c.status) for c in step.cells] == [("e0", CellStatus.PASS)] and store.list("matrix/") == []
    stored = json.loads(store.get(f"bisect/{verdict.bisect_id}.json"))
    assert stored["first_changed"] == "e3" and stored["schema_version"] == 1 and stored["transcript"] == lines[:-1]
    assert lines[-2] == "4 step(s) for 6 candidates: 2 ran, 2 from the store"
    print("\n".join(lines))

    # Bisecting again runs nothing: every step's result is in the store now.
    again = bisect(job, "m/q/none", "e0", "e5", store=store, say=lambda line: None)
    assert (again.first_changed, again.runs) == ("e3", 0)
