"""Job spec validation: good specs load, bad ones give one line naming the field and what is valid."""

from __future__ import annotations

import pytest

from farm.errors import JobSpecError
from farm.model.spec import load_job, parse_job

from .conftest import REPO

MINIMAL = {"name": "t", "models": [{"name": "m", "variants": [{"zoo": "qwen2-dense"}]}]}


def with_model(**fields):
    return {"name": "t", "models": [{"name": "m", "variants": [{"zoo": "qwen2-dense"}], **fields}]}


def error_of(data) -> str:
    with pytest.raises(JobSpecError) as info:
        parse_job(data, origin="job.yaml")
    message = str(info.value)
    assert "\n" not in message, "errors are one line"
    assert message.startswith("job.yaml: ")
    return message


def test_shipped_jobs_validate():
    from farm.ops.known_bugs import load_ledger

    for path in sorted((REPO / "jobs").glob("*.yaml")):
        if path.name == "known_bugs.yaml":  # the ledger, not a job
            assert len(load_ledger(path).bugs) >= 4
            continue
        job = load_job(path)
        assert job.models, path


def test_minimal_spec_gets_defaults():
    job = parse_job(MINIMAL)
    assert job.probes == ["load", "generate", "lora"]
    assert job.engines[0].name == "current" and job.engines[0].kind == "current"
    assert job.base is True
    assert job.resources.num_cpus == 1 and job.resources.num_gpus == 0
    assert job.models[0].variants[0].quantization == "none"


def test_unknown_top_level_field_suggests_the_right_one():
    message = error_of({**MINIMAL, "probs": ["load"]})
    assert "unknown field 'probs'" in message
    assert "Did you mean 'probes'?" in message


def test_unknown_nested_field_names_its_path():
    data = with_model(variants=[{"zoo": "qwen2-dense", "quantisation": "none"}])
    message = error_of(data)
    assert message.startswith("job.yaml: models[0].variants[0]: unknown field 'quantisation'")
    assert "Did you mean 'quantization'?" in message


def test_missing_required_field():
    assert error_of({"name": "t"}) == "job.yaml: models: required field is missing"


def test_unknown_probe_lists_available():
    message = error_of({**MINIMAL, "probes": ["load", "genrate"]})
    assert "probes: unknown probe 'genrate'. Did you mean 'generate'?" in message
    assert "Available: base_after_lora, determinism, generate, load, lora, lora_reference, lora_unused, perf, reference." in message


def test_unknown_zoo_item():
    message = error_of({"name": "t", "models": [{"name": "m", "variants": [{"zoo": "qwen2-dens"}]}]})
    assert "models[0].variants[0]: unknown zoo item 'qwen2-dens'. Did you mean 'qwen2-dense'?" in message


def test_variant_needs_exactly_one_source():
    message = error_of({"name": "t", "models": [{"name": "m", "variants": [{"quantization": "none"}]}]})
    assert "exactly one of 'zoo'" in message
    both = {"zoo": "qwen2-dense", "checkpoint": "/x"}
    assert "exactly one of" in error_of({"name": "t", "models": [{"name": "m", "variants": [both]}]})


def test_engine_kind_is_validated():
    message = error_of({**MINIMAL, "engines": [{"name": "v1", "kind": "conda"}]})
    assert message.startswith("job.yaml: engines[0].kind: unknown engine kind 'conda'.")
    assert "Available: bundle, current, fault-injection, image, pip, release, uv, venv." in message


def test_bad_names_and_numbers():
    assert "is not a valid name" in error_of({**MINIMAL, "name": "has space"})
    assert error_of({**MINIMAL, "timeout_s": 0}).startswith("job.yaml: timeout_s: ")
    assert error_of({**MINIMAL, "resources": {"num_cpus": -1}}).startswith("job.yaml: resources.num_cpus: ")


def test_duplicates_are_rejected():
    data = with_model(loras=[{"name": "a", "zoo": "qwen2-dense-lora-attn"}, {"name": "a", "zoo": "qwen2-dense-lora-attn"}])
    assert "loras[].name must be unique; repeated: a" in error_of(data)


def test_none_is_reserved_for_the_base_column():
    data = with_model(loras=[{"name": "none", "zoo": "qwen2-dense-lora-attn"}])
    assert "'none' is the built-in no-adapter column" in error_of(data)


def test_empty_rule_is_rejected():
    assert "a rule needs at least one of" in error_of({**MINIMAL, "exclude": [{}]})


def test_yaml_errors_and_missing_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\nmodels: [\n")
    with pytest.raises(JobSpecError, match=r"bad.yaml, line \d+, column \d+: not valid YAML: "):
        load_job(bad)
    with pytest.raises(JobSpecError, match="no such job file"):
        load_job(tmp_path / "nope.yaml")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(JobSpecError, match="a job spec is a YAML mapping"):
        load_job(scalar)


def test_unsupported_cells_are_recorded_with_their_reason_and_never_run(tmp_path, monkeypatch):
    from farm.model.results import CellStatus
    from farm.runner.driver import run
    from farm.store import LocalStore, read_results

    job = parse_job({
        "name": "declared",
        "models": [{"name": "m", "variants": [{"quantization": "q", "checkpoint": "fault-injection",
                                               "engine_args": {"fault": "segfault"}}]}],
        "engines": [{"name": "fi", "kind": "fault-injection"}],
        "unsupported": [{"model": "m", "reason": "vLLM has no LoRA for m (upstream #1)"}],
    })
    monkeypatch.setenv("FARM_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("farm.runner.driver.connect", lambda *a, **k: pytest.fail("no cell runs, so no Ray starts"))
    store = LocalStore(tmp_path / "store")
    outcome = run(job, store=store, run_id="d1")
    (result,) = read_results(store, "d1")
    assert result.status is CellStatus.UNSUPPORTED and result.error.message == "vLLM has no LoRA for m (upstream #1)"
    assert result.error.signature is None, "a declared combination is no root cause"
    matrix = store.get("matrix/d1.json").decode()
    assert '"unsupported"' in matrix and "upstream #1" in matrix
    assert outcome.results[0].status is CellStatus.UNSUPPORTED


def test_an_unsupported_rule_needs_a_reason():
    with pytest.raises(JobSpecError, match=r"unsupported\[0\]\.reason"):
        parse_job({"name": "j", "models": [{"name": "m", "variants": [{"zoo": "qwen2-dense"}]}],
                   "unsupported": [{"model": "m"}]})
