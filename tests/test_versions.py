"""The version axis of the matrix: columns grouped per engine, and the first version where a combination changed."""

from __future__ import annotations

from farm.model.cells import expand
from farm.model.results import CellResult, CellStatus, EnvFacts, ErrorInfo, RunManifest, utcnow
from farm.model.spec import parse_job
from farm.model.verdicts import root_cause
from farm.report.aggregate import build_matrix, format_table

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
