"""The version axis of the matrix: columns grouped per engine, and the first version where a combination changed."""

from __future__ import annotations

from farm.model.cells import expand
from farm.model.results import CellResult, CellStatus, EnvFacts, ErrorInfo, RunManifest, utcnow
from farm.model.spec import parse_job
from farm.model.verdicts import root_cause
from farm.report.aggregate import build_matrix
from farm.report.table import format_by_version, format_table

JOB = {
    "name": "versions",
    "models": [
        {"name": "dense", "variants": [{"zoo": "qwen2-dense"}], "loras": [{"name": "attn", "zoo": "qwen2-dense-lora-attn"}]},
        {"name": "moe", "variants": [{"zoo": "qwen2moe-shared"}], "loras": [{"name": "attn", "zoo": "qwen2moe-shared-lora-attn"}]},
    ],
    "engines": [
        {"name": "v1", "kind": "pip", "requirements": ["vllm==0.1"]},
        {"name": "v2", "kind": "pip", "requirements": ["vllm==0.2"]},
        {"name": "v3", "kind": "pip", "requirements": ["vllm==0.3"]},
    ],
}

# (model, lora) → outcome per engine; "fail:sig" is a failure with that signature (and its own root cause).
OUTCOMES = {
    ("dense", "none"): ["pass", "pass", "pass"],
    ("dense", "attn"): ["pass", "fail:aaaa", "pass"],  # broke in v2, fixed in v3
    ("moe", "none"): ["fail:bbbb", "env_error", "pass"],  # v2's env did not build: v1 → v3 is the change
    ("moe", "attn"): ["fail:bbbb", "fail:cccc", "fail:cccc~moved"],  # another root cause from v2 on; v3: its line moved
}


def _error(signature: str) -> ErrorInfo:
    # "cccc~moved": the signature of cccc's bug raised elsewhere (same type and message, another frame).
    return ErrorInfo(type="E", message=f"error {signature.split('~')[0]}", signature=signature)


def _cause(signature: str) -> str:
    return root_cause(_error(signature))


def _matrix():
    job = parse_job(JOB)
    cells = expand(job)
    results = []
    for cell in cells:
        outcome = OUTCOMES[(cell.model, cell.lora)][int(cell.engine.name[1]) - 1]
        status, _, signature = outcome.partition(":")
        version = f"0.{cell.engine.name[1]}"
        results.append(CellResult(
            run_id="r", cell_id=cell.id, cell=cell, status=CellStatus(status),
            error=_error(signature) if signature else None,
            env=EnvFacts() if status == "env_error" else EnvFacts(vllm=version, vllm_dist="vllm"),
        ))
    manifest = RunManifest(run_id="r", job_name="versions", job=job.model_dump(mode="json"), cells=cells,
                           launched_by="t", farm_version="0", started_at=utcnow())
    return build_matrix(manifest, results)


def test_columns_are_grouped_per_engine_in_the_jobs_order():
    matrix = _matrix()
    assert matrix.columns == ["none · v1", "attn · v1", "none · v2", "attn · v2", "none · v3", "attn · v3"]
    assert [(g.engine, g.kind, g.columns, g.vllm) for g in matrix.engines] == [
        ("v1", "pip", ["none · v1", "attn · v1"], ["0.1"]),
        ("v2", "pip", ["none · v2", "attn · v2"], ["0.2"]),
        ("v3", "pip", ["none · v3", "attn · v3"], ["0.3"]),
    ]


def test_first_change_per_combination_skips_envs_that_did_not_build():
    changes = {(c.row, c.lora): c for c in _matrix().version_changes}
    assert ("dense · none", "none") not in changes, "same outcome on every version"
    broke = changes[("dense · none", "attn")]
    assert (broke.previous_engine, broke.engine, broke.before, broke.after, broke.after_signature) == \
        ("v1", "v2", "pass", "fail", "aaaa")
    assert broke.changes == 2 and (broke.before_vllm, broke.after_vllm) == ("0.1", "0.2")
    fixed = changes[("moe · none", "none")]
    assert (fixed.previous_engine, fixed.engine, fixed.before, fixed.after) == ("v1", "v3", "fail", "pass")
    other_cause = changes[("moe · none", "attn")]
    assert (other_cause.engine, other_cause.before_signature, other_cause.after_signature) == ("v2", "bbbb", "cccc")
    assert (other_cause.before_root_cause, other_cause.after_root_cause) == (_cause("bbbb"), _cause("cccc"))


def test_a_new_variant_of_the_same_root_cause_is_no_version_change():
    # The same bug raised from a moved line (another signature, one root cause) on v3: no change there.
    matrix = _matrix()
    moved = [c for c in matrix.cells if (c.model, c.lora, c.engine) == ("moe", "attn", "v3")][0]
    same_cause = [c for c in matrix.cells if (c.model, c.lora, c.engine) == ("moe", "attn", "v2")][0]
    assert moved.signature != same_cause.signature and moved.root_cause == same_cause.root_cause
    assert next(c for c in matrix.version_changes if (c.row, c.lora) == ("moe · none", "attn")).changes == 1


def test_the_terminal_table_shows_versions_side_by_side_and_the_changes():
    text = format_table(_matrix())
    lines = text.splitlines()
    assert lines[0].split() == ["v1:", "vllm", "0.1", "v2:", "vllm", "0.2", "v3:", "vllm", "0.3"]
    assert lines[1].index("none · v2") == lines[0].index("v2:"), "each label sits over its engine's columns"
    assert "First version where the outcome changed:" in text
    assert f"  dense · none · attn: pass on v1 → fail [{_cause('aaaa')}] on v2 (2 changes along the versions)" in lines
    assert f"  moe · none · none: fail [{_cause('bbbb')}] on v1 → pass on v3" in lines


def test_probes_that_could_not_judge_are_listed_under_the_table():
    # On a GPU every lora_reference was skipped ("no reference: … cuda:0 and cpu!") while its cells passed: the
    # table says which checks the verdicts lack, grouped by probe and reason, the largest group first.
    from farm.model.results import ProbeResult

    matrix = _matrix()
    assert "could not judge" not in format_table(matrix), "nothing skipped, no section"
    job = parse_job(JOB)
    no_reference = "no reference: transformers+PEFT could not run zoo:x: RuntimeError: Expected all tensors to be on the same device"
    results = [CellResult(run_id="r", cell_id=cell.id, cell=cell, status=CellStatus.PASS, env=EnvFacts(vllm="0.1"),
                          probes=[ProbeResult(name="load", passed=True),
                                  ProbeResult(name="lora_reference", passed=False, skipped=True, detail=no_reference)]
                          + ([ProbeResult(name="reference", passed=False, skipped=True, detail="no reference:\n  moe")]
                             if cell.model == "moe" and cell.engine.name == "v1" else []))
               for cell in expand(job) if cell.lora == "attn"]
    manifest = RunManifest(run_id="r", job_name="versions", job=job.model_dump(mode="json"), cells=[r.cell for r in results],
                           launched_by="t", farm_version="0", started_at=utcnow())
    lines = format_table(build_matrix(manifest, results)).splitlines()
    at = lines.index("Probes that could not judge (skipped: the verdicts above do not include them):")
    assert lines[at + 1:] == [f"  lora_reference in 6 cell(s): {no_reference}", "  reference in 1 cell(s): no reference: moe"]


def test_each_combination_reads_as_stretches_of_one_outcome_along_the_versions():
    lines = format_by_version(_matrix()).splitlines()
    assert lines[0] == "4 combination(s) over 3 engine(s) (v1 … v3), 3 with a verdict that changes:"
    assert lines[2:] == [
        "dense · none · none", "  v1 … v3  pass",  # one outcome on every version: one stretch
        "dense · none · attn", "  v1  pass", "  v2  fail (broken): E: error aaaa", "  v3  pass",
        # An env that did not build shows as what it is, between the verdicts: never merged into one.
        "moe · none · none", "  v1  fail (broken): E: error bbbb", "  v2  env_error", "  v3  pass",
        # v3's moved line of the same bug (another signature, one root cause) stays in v2's stretch.
        "moe · none · attn", "  v1       fail (broken): E: error bbbb", "  v2 … v3  fail (broken): E: error cccc",
    ]


def test_by_version_changed_leaves_out_combinations_with_one_verdict():
    text = format_by_version(_matrix(), changed_only=True)
    assert "dense · none · none" not in text and "dense · none · attn" in text
    assert "moe · none · none" in text, "fail on v1, pass on v3: the env_error between says nothing"


def test_a_single_engine_matrix_has_no_version_lines():
    job = parse_job({**JOB, "engines": [{"name": "current"}]})
    cells = expand(job)
    results = [CellResult(run_id="r", cell_id=c.id, cell=c, status=CellStatus.PASS) for c in cells]
    manifest = RunManifest(run_id="r", job_name="j", job=job.model_dump(mode="json"), cells=cells,
                           launched_by="t", farm_version="0", started_at=utcnow())
    matrix = build_matrix(manifest, results)
    assert len(matrix.engines) == 1 and matrix.version_changes == []
    text = format_table(matrix)
    assert text.splitlines()[0].startswith("model · quantization") and "version" not in text


def test_versions_sort_as_releases():
    from farm.report.versions import release_order

    assert sorted(["0.28.0", "0.11.2", "0.9.2", "0.11.1+cpu", "0.11.1", "0.24.1.dev3+gabc", "0.24.1"], key=release_order) == \
        ["0.9.2", "0.11.1", "0.11.1+cpu", "0.11.2", "0.24.1", "0.24.1.dev3+gabc", "0.28.0"]


# --- platforms: runs on a CPU and on a GPU merged into one matrix ---------------------------------------------

# What the cells measured (farm.cell.execute.env_facts): this kind of machine, and the H200 the GPU run used.
CPU_FACTS = dict(platform="Linux-x86_64", device="cpu (2 cores)", cpu="Intel(R) Xeon(R) Processor",
                 cpu_features=["avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8"])
GPU_FACTS = dict(platform="Linux-x86_64", device="NVIDIA H200", cuda="13.0", compute_capability="9.0",
                 cpu="Intel(R) Xeon(R) Processor", cpu_features=CPU_FACTS["cpu_features"])


def test_a_platform_is_named_from_what_the_cell_measured():
    from farm.model.platforms import platform_of

    assert platform_of(EnvFacts(**GPU_FACTS)) == "NVIDIA H200 · sm_90"
    assert platform_of(EnvFacts(**{**GPU_FACTS, "compute_capability": None})) == "NVIDIA H200", "a result from before it was measured"
    assert platform_of(EnvFacts(**CPU_FACTS)) == "x86_64 CPU · AMX"
    assert platform_of(EnvFacts(**{**CPU_FACTS, "cpu_features": ["avx2", "avx512f"]})) == "x86_64 CPU · AVX-512"
    assert platform_of(EnvFacts(**{**CPU_FACTS, "cpu_features": ["avx2"]})) == "x86_64 CPU · AVX2"
    assert platform_of(EnvFacts(platform="Linux-aarch64", device="cpu (64 cores)")) == "aarch64 CPU"
    assert platform_of(EnvFacts()) is None, "a result that measured nothing (an env that did not build)"


def _run(run_id: str, engines: list[dict], outcomes: dict[tuple[str, str], list[str]], facts: dict) -> tuple:
    """A run of JOB's models on ``engines``; outcomes per (model, lora) and engine as in OUTCOMES."""
    job = parse_job({**JOB, "engines": engines})
    cells = expand(job)
    names = [e["name"] for e in engines]
    results = []
    for cell in cells:
        status, _, signature = outcomes[(cell.model, cell.lora)][names.index(cell.engine.name)].partition(":")
        results.append(CellResult(run_id=run_id, cell_id=cell.id, cell=cell, status=CellStatus(status),
                                  error=_error(signature) if signature else None,
                                  env=EnvFacts(vllm=cell.engine.requirements[0].split("==")[1], **facts)))
    manifest = RunManifest(run_id=run_id, job_name="versions", job=job.model_dump(mode="json"), cells=cells,
                           launched_by="t", farm_version="0", started_at=utcnow())
    return manifest, results


GPU_ENGINES = [{"name": "v2", "kind": "uv", "requirements": ["vllm==0.2"]}, {"name": "v3", "kind": "uv", "requirements": ["vllm==0.3"]}]
GPU_OUTCOMES = {
    ("dense", "none"): ["pass", "pass"],  # as on the CPU
    ("dense", "attn"): ["pass", "pass"],  # CPU: fails on v2 only: the same release differs by platform
    ("moe", "none"): ["fail:dddd", "fail:dddd"],  # CPU passes on v3: differs on 0.3
    ("moe", "attn"): ["fail:cccc", "fail:cccc"],  # the same bug on both
}


def _merged():
    from farm.report.aggregate import merge_runs

    return merge_runs([_run("cpu-1", JOB["engines"], OUTCOMES, CPU_FACTS), _run("gpu-1", GPU_ENGINES, GPU_OUTCOMES, GPU_FACTS)])


def test_runs_on_two_platforms_merge_with_the_platform_as_the_top_column_level():
    matrix = _merged()
    cpu, gpu = "x86_64 CPU · AMX", "NVIDIA H200 · sm_90"
    assert matrix.platforms == [cpu, gpu] and matrix.runs == ["cpu-1", "gpu-1"] and matrix.run_id == "cpu-1 + gpu-1"
    assert matrix.matrix_key == "", "a merged matrix is kept nowhere in the store"
    assert matrix.columns == [f"{lora} · {engine} · {platform}" for platform, engines in ((cpu, "v1 v2 v3"), (gpu, "v2 v3"))
                              for engine in engines.split() for lora in ("none", "attn")]
    # Engines of one name on two platforms are two groups.
    assert [(g.platform, g.engine, g.kind) for g in matrix.engines] == [
        (cpu, "v1", "pip"), (cpu, "v2", "pip"), (cpu, "v3", "pip"), (gpu, "v2", "uv"), (gpu, "v3", "uv")]
    assert len(matrix.cells) == 12 + 8 and {c.platform for c in matrix.cells} == {cpu, gpu}
    # Versions are compared on one platform at a time: the GPU's v2 after the CPU's v3 is no change.
    changes = {(c.row, c.lora, c.platform): c for c in matrix.version_changes}
    assert set(changes) == {("dense · none", "attn", cpu), ("moe · none", "none", cpu), ("moe · none", "attn", cpu)}
    cause = next(c for c in matrix.root_causes if c.root_cause == _cause("cccc"))
    assert cause.platforms == [cpu, gpu] and cause.vllm == ["0.2", "0.3"]


def test_verdicts_that_differ_by_platform_are_compared_on_a_shared_release():
    differences = {(d.row, d.lora): d for d in _merged().platform_differences}
    assert set(differences) == {("moe · none", "none")}
    moe = differences[("moe · none", "none")]
    assert moe.release == "0.3", "the newest release both measured"
    assert [(o.platform, o.engine, o.status, o.vllm) for o in moe.outcomes] == [
        ("x86_64 CPU · AMX", "v3", "pass", "0.3"), ("NVIDIA H200 · sm_90", "v3", "fail", "0.3")]
    # Not listed: dense · attn fails on the CPU's v2 only, and on 0.3, the newest release both measured, both
    # pass; moe · attn fails on both with one root cause (the CPU's v3 raises it from a moved line).


def test_the_terminal_table_names_the_platforms_and_their_differences():
    text = format_table(_merged())
    lines = text.splitlines()
    assert lines[0].split("──")[1].strip() == "x86_64 CPU · AMX" and "── NVIDIA H200 · sm_90 " in lines[0]
    assert lines[0].index("── NVIDIA H200") == lines[2].index("none · v2 · NVIDIA H200"), "over its own columns"
    assert "Verdicts that differ by platform:" in lines
    assert "  moe · none · none (vLLM 0.3):" in lines and "    NVIDIA H200 · sm_90: fail/broken [" + _cause("dddd") + "] on v3 (vLLM 0.3)" in lines
    assert f"  dense · none · attn [x86_64 CPU · AMX]: pass on v1 → fail [{_cause('aaaa')}] on v2 (2 changes along the versions)" in lines


def test_a_cell_in_two_runs_on_one_platform_shows_the_later_run():
    from farm.report.aggregate import merge_runs

    first = _run("a", JOB["engines"], OUTCOMES, CPU_FACTS)
    again = _run("b", JOB["engines"][2:], {k: [v[0]] for k, v in GPU_OUTCOMES.items()}, CPU_FACTS)  # v3 rerun
    matrix = merge_runs([first, again])
    assert matrix.platforms == ["x86_64 CPU · AMX"] and matrix.columns[-1] == "attn · v3", "one platform: no platform level"
    assert len(matrix.cells) == 12 and matrix.platform_differences == []
    moe_v3 = next(c for c in matrix.cells if (c.model, c.lora, c.engine) == ("moe", "none", "v3"))
    assert (moe_v3.status, moe_v3.signature) == (CellStatus.FAIL, "dddd") and moe_v3.result_key.startswith("runs/b/")
