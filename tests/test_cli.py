"""The real `farm` command: exit codes and output of validate, status, matrix and errors."""

from __future__ import annotations

from .conftest import REPO


def test_validate_prints_the_expansion(farm_cli):
    code, out, err = farm_cli("validate", str(REPO / "jobs" / "smoke.yaml"))
    assert code == 0, err
    assert out.startswith("job smoke: 12 cells, probes load, generate, lora, determinism, reference, lora_reference")
    lines = out.strip().splitlines()
    assert lines[1].split() == ["cell", "id", "model", "quantization", "lora", "engine"]
    assert len(lines) == 2 + 12
    assert any(line.split()[1:] == ["qwen2moe-shared", "gptq-int4", "attn", "current"] for line in lines[2:])


def test_validate_rejects_a_bad_spec_in_one_line(farm_cli, write_job):
    job = write_job("name: bad\nmodels:\n  - name: m\n    variants: [{zoo: qwen2-dense}]\nprobes: [lod]\n")
    code, out, err = farm_cli("validate", str(job))
    assert code == 1
    assert out == ""
    assert err.strip().count("\n") == 0
    assert err.startswith(f"farm: error: {job}: probes: unknown probe 'lod'. Did you mean 'load'?")


def test_debug_shows_the_traceback(farm_cli, write_job):
    job = write_job("name: bad\n")
    code, _, err = farm_cli("--debug", "validate", str(job))
    assert code == 1 and "Traceback" in err and "JobSpecError" in err


def test_run_with_a_bad_spec_fails_before_starting_ray(farm_cli, write_job):
    job = write_job("name: bad\nmodels: []\n")
    code, out, err = farm_cli("run", str(job))
    assert code == 1
    assert "models: " in err and "Started a local Ray" not in err + out


def test_status_and_matrix_of_unknown_run(farm_cli, tmp_path):
    code, _, err = farm_cli("status", "no-such-run", "--store", str(tmp_path / "s"))
    assert code == 1 and "does not exist in the store" in err
    code, _, err = farm_cli("matrix", "--store", str(tmp_path / "s"))
    assert code == 1 and "matrix/latest.json does not exist" in err


def test_help_ends_with_examples(farm_cli):
    code, out, _ = farm_cli("--help")
    assert code == 0
    assert out.rstrip().splitlines()[-1].strip().startswith("farm zoo build")
    assert "farm run jobs/smoke.yaml" in out


def test_no_command_prints_help(farm_cli):
    code, out, _ = farm_cli()
    assert code == 2 and "usage: farm" in out
