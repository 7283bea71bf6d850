"""Job files from outside: every hostile one is refused in one line, fast; any input ends in a JobSpec or one
JobSpecError line, never another exception (property-based, hypothesis)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farm.errors import JobSpecError
from farm.model.jobfile import MAX_BYTES, MAX_DEPTH, MAX_NODES
from farm.model.spec import JobSpec, load_job

MINIMAL = "name: x\nmodels: [{name: m, variants: [{zoo: qwen2-dense}]}]\n"


def _alias_bomb(indent: str, levels: int = 9, width: int = 9) -> str:
    """Anchors each used ``width`` times by the next: 9^9 ≈ 387 million values when walked."""
    lines = [f'{indent}l0: &l0 ["lol"]']
    for i in range(1, levels + 1):
        lines.append(f"{indent}l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


VARIANT_ARGS = "name: x\nmodels:\n  - name: m\n    variants:\n      - zoo: qwen2-dense\n        engine_args:\n"


HOSTILE = {
    # name: (file content, what the one line says)
    "alias bomb in engine_args": (MINIMAL + "engine_args:\n" + _alias_bomb("  "), f"expands to more than {MAX_NODES} values"),
    "alias bomb in a variant": (VARIANT_ARGS + _alias_bomb(" " * 10), f"expands to more than {MAX_NODES} values"),
    "deep nesting (1 MB of brackets)": (MINIMAL + "engine_args: {a: " + "[" * 500_000 + "]" * 500_000 + "}\n",
                                        f"nested deeper than {MAX_DEPTH} levels"),
    "binary": (b"name: x\n\xff\xfe\x00\x01garbage", "not UTF-8 text (byte 8, line 2)"),
    "duplicate key": (MINIMAL + "name: y\n", "key 'name' given twice in one mapping (first at line 1)"),
    "duplicate key deep": (MINIMAL.replace("{zoo: qwen2-dense}", "{zoo: qwen2-dense, zoo: mixtral}"), "key 'zoo' given twice"),
    "infinite timeout": (MINIMAL + "timeout_s: .inf\n", "timeout_s: inf is not a finite number"),
    "NaN in engine args": (MINIMAL + "engine_args: {gpu_memory_utilization: .nan}\n", "engine_args.gpu_memory_utilization: nan is not a finite"),
    # Found by test_any_yaml_document: a key holding a newline, quoted in the field path rather than printed.
    "newline in a key": ('name: {"\\n": .inf}\n', "name.'\\n': inf is not a finite number"),
    "huge timeout": (MINIMAL + "timeout_s: 1.0e12\n", "timeout_s: Input should be less than or equal to 604800"),
    "absurd attempts": (MINIMAL + "retries: {infra_attempts: 1000000}\n", "retries.infra_attempts: Input should be less than or equal to 10"),
    "no memory": (MINIMAL + "resources: {memory_gb: 1.0e-9}\n", "resources.memory_gb: Input should be greater than or equal to 0.1"),
    "empty prompt": (MINIMAL + "generation: {prompts: ['']}\n", "generation.prompts[0]: String should have at least 1 character"),
    "unknown fault": (MINIMAL.replace("{zoo: qwen2-dense}", "{checkpoint: fault-injection, engine_args: {fault: explode}}")
                      + "engines: [{name: fi, kind: fault-injection}]\n", "unknown fault 'explode'; the fault-injection engine knows pass,"),
    "rules leave nothing": (MINIMAL + "include: [{model: nope}]\n", "the job has no cell to run"),
    "self-reference": ("name: x\nmodels: &m [*m]\n", "an alias refers to the collection it is in"),
    "impossible date": (MINIMAL + "when: 2001-02-30\n", "not valid YAML: ValueError: day is out of range"),
    "oversize": ("name: x\n" + "#" * (MAX_BYTES + 10) + "\n", "larger than 1024 KiB"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_job_file_gets_one_line_fast(name, tmp_path):
    content, says = HOSTILE[name]
    path = tmp_path / "job.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    started = time.perf_counter()
    with pytest.raises(JobSpecError) as info:
        load_job(path)
    seconds = time.perf_counter() - started
    message = str(info.value)
    assert says in message and message.startswith(str(path)) and "\n" not in message, message
    assert seconds < 2, f"{name}: {seconds:.2f} s"  # well under one on this machine; the bound is for a loaded CI


def test_things_that_are_not_files(tmp_path):
    for path, says in ((tmp_path, "not a job file but a directory"), (Path("/dev/zero"), "not a job file but a special file"),
                       (tmp_path / "nope.yaml", "no such job file")):
        with pytest.raises(JobSpecError, match=says):
            load_job(path)


def test_merges_may_override_and_plain_jobs_still_load(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("engine_args: &d {max_model_len: 256, max_num_seqs: 4}\nname: x\nmodels: [{name: m, variants: "
                    "[{zoo: qwen2-dense, engine_args: {<<: *d, max_num_seqs: 2}}]}]\n")
    job = load_job(path)
    assert job.models[0].variants[0].engine_args == {"max_model_len": 256, "max_num_seqs": 2}
    for shipped in sorted(Path(__file__).parents[1].joinpath("jobs").glob("*.yaml")):
        if shipped.name != "known_bugs.yaml":  # the ledger, not a job
            assert isinstance(load_job(shipped), JobSpec), shipped


# --- any input: a JobSpec or one JobSpecError line, never another exception, never slow ------------------------

def _outcome(path: Path) -> None:
    started = time.perf_counter()
    try:
        load_job(path)
    except JobSpecError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path)), str(exc)
    assert time.perf_counter() - started < 1.5


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2000))
def test_any_bytes(tmp_path, data):
    path = tmp_path / "job.yaml"
    path.write_bytes(data)
    _outcome(path)


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
def _nested(children: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4))


_DOCUMENTS = st.recursive(_SCALARS, _nested, max_leaves=30)
_FIELDS = st.sampled_from(["name", "models", "engines", "probes", "engine_args", "generation", "resources", "timeout_s",
                           "retries", "include", "exclude", "unsupported", "base", "start_timeout_s"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(_FIELDS, _DOCUMENTS, max_size=6), st.booleans())
def test_any_yaml_document(tmp_path, document, with_a_model):
    if with_a_model:  # most documents fail on the first field; a valid skeleton takes them deeper
        document = {"name": "x", "models": [{"name": "m", "variants": [{"zoo": "qwen2-dense"}]}], **document}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    _outcome(path)


# --- any label: store keys under the store's prefix, page text that renders inert ------------------------------

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=1, max_size=60), st.text(min_size=1, max_size=60))
def test_any_run_or_cell_label_makes_a_key_inside_the_store(tmp_path, run_id, cell_id):
    from farm.store import LocalStore
    from farm.store.layout import check_key, log_key, manifest_key, matrix_key, result_key

    store = LocalStore(tmp_path / "store")
    keys = [result_key(run_id, cell_id, 1), log_key(run_id, cell_id, 1), manifest_key(run_id), matrix_key(run_id)]
    for key in keys:
        assert check_key(key) == key and key.split("/")[0] in ("runs", "matrix")
        assert ".." not in key.split("/") and "\\" not in key
    store.put(keys[0], b"x", overwrite=True)
    written = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert all(p.resolve().is_relative_to((tmp_path / "store").resolve()) for p in written)


@settings(max_examples=150, deadline=None)
@given(st.text(min_size=1, max_size=80))
def test_any_label_renders_inert_in_the_page(label):
    from farm.model.matrix import Matrix
    from farm.report.render import embedded_matrix, render_page

    matrix = Matrix(run_id=label, job_name=label, generated_at="2026-12-06T00:00:00+00:00", rows=[label], columns=[label],
                    cells=[], platforms=[label])
    page = render_page(matrix)
    # The template's own two scripts (the app and the embedded data) and nothing a label could open or close.
    assert page.lower().count("<script") == 2 and page.lower().count("</script") == 2
    assert embedded_matrix(page).job_name == label


def test_local_paths_must_exist_here_and_hub_ids_are_said_to_be_the_nodes(farm_cli, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    job = tmp_path / "job.yaml"
    job.write_text(f"name: p\nmodels: [{{name: m, variants: [{{checkpoint: {tmp_path}/no-such-model}}], "
                   f"loras: [{{name: a, path: {adapter}}}]}}]\n")
    code, _, err = farm_cli("validate", str(job))
    assert code == 1 and err == (f"farm: error: {job}: models[m].variants[0].checkpoint: {tmp_path}/no-such-model does not "
                                 "exist on this machine; give an existing path, a zoo item (zoo: …) or a hub id (org/name, "
                                 "for GPU nodes)\n")
    code, out, _ = farm_cli("validate", str(job), "--paths-on-nodes")  # a cluster's job: the nodes' paths
    assert code == 0 and out.startswith("job p: 2 cells")
    code, _, err = farm_cli("run", str(job), "--store", "results")  # a run here: refused before anything ran
    assert code == 1 and "no-such-model does not exist on this machine" in err and not (tmp_path / "results").exists()
    job.write_text("name: p\nmodels: [{name: m, variants: [{checkpoint: Qwen/Qwen2-0.5B}]}]\n")
    code, _, err = farm_cli("validate", str(job))
    assert code == 0 and "not checked here: hub id(s) Qwen/Qwen2-0.5B: each GPU node fetches them" in err
