"""``uv`` engines: like ``pip`` (see ``farm.envs.pip``), installed with uv; and single vLLM commits.

    engines:
      - name: main-72d9c31
        kind: uv
        commit: 72d9c316d3f6ede485146fe5aabd4e61dbc59069   # vLLM's per-commit wheel index
        torch_backend: auto                                 # uv picks torch's CUDA build from the driver
      - name: nightly
        kind: uv
        commit: nightly                                     # the newest main commit; rebuilt daily
        pre: true

uv gives an extra index priority over PyPI, which is what a per-commit or nightly index
needs (vLLM's installation docs say the same). uv does not read pip's configuration: give
``find_links`` / ``index_url`` in the engine. uv must be on the node's PATH or installed
in the driver's env (``pip install uv``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from farm.envs import cache
from farm.envs.build import BuiltEnv, Step
from farm.envs.registry import EnvVersions, NodeContext, register
from farm.errors import EnvBuildError
from farm.model.engines import NIGHTLY, PackageEngine, UvEngine


def uv_command() -> list[str]:
    """uv on PATH, else the one installed in this interpreter's env (``pip install uv``)."""
    found = shutil.which("uv")
    if found:
        return [found]
    try:
        from uv import find_uv_bin  # type: ignore[import-not-found]

        return [find_uv_bin()]
    except Exception:
        raise EnvBuildError("uv is not installed on this node: `pip install uv` in the cluster's env "
                            "(or put uv on PATH), or use kind: pip") from None


def shared_cache() -> list[str]:
    """uv's options for the node's one uv cache, on the env cache's file system: envs hard-link their files from it,
    so envs that share wheels (torch, the nvidia libraries) share their disk."""
    return ["--cache-dir", str(cache.uv_cache()), "--link-mode", "hardlink"]


def index_options(engine: PackageEngine, extra_index_urls: list[str] | None = None) -> list[str]:
    """uv's index options of an engine: its index, extra indexes (``extra_index_urls`` first), find-links, pre-releases."""
    options = ["--index-url", engine.index_url] if engine.index_url else []
    for url in [*(extra_index_urls or []), *engine.extra_index_urls]:
        options += ["--extra-index-url", url]
    for link in engine.find_links:
        options += ["--find-links", link]
    return options + (["--prerelease", "allow"] if engine.pre else [])


@register
class Uv(BuiltEnv):
    name = "uv"
    spec = UvEngine

    def steps(self, engine: PackageEngine, env_dir: Path, node: NodeContext) -> list[Step]:
        assert isinstance(engine, UvEngine)
        uv = uv_command()
        python = str(env_dir / "bin" / "python")
        options = index_options(engine, [engine.commit_index] if engine.commit_index else [])
        if engine.torch_backend:
            options += ["--torch-backend", engine.torch_backend]
        steps: list[Step] = [
            # --allow-existing: the env dir already holds the build log.
            [*uv, "venv", "--allow-existing", "--python", node.python, str(env_dir)],
            [*uv, "pip", "install", "--python", python, *shared_cache(), *options, *self.requirements(engine, node)],
        ]
        if engine.uninstall:
            steps.append([*uv, "pip", "uninstall", "--python", python, *engine.uninstall])
        return steps

    def requirements(self, engine: PackageEngine, node: NodeContext) -> list[str]:
        wanted = super().requirements(engine, node)
        return wanted if engine.requirements else ["vllm", *wanted]

    def verify(self, engine: PackageEngine, versions: EnvVersions) -> None:
        assert isinstance(engine, UvEngine)
        if engine.commit in (None, NIGHTLY):
            return
        got = versions.vllm_commit or ""
        if not got or not (engine.commit.startswith(got) or got.startswith(engine.commit)):
            raise EnvBuildError(f"engine {engine.name!r} asked for vLLM commit {engine.commit[:12]}, but the env got "
                                f"{versions.vllm_dist or 'vllm'} {versions.vllm} (commit {got or 'unknown'}): "
                                f"the index {engine.commit_index} has no wheel for this platform, or another index won")

    def describe(self, engine: Any) -> str:
        what = [f"commit {engine.commit}"] if engine.commit else []
        return "uv: " + " ".join([*what, *engine.requirements])

