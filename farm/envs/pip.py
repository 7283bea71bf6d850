"""``pip`` engines: requirements installed with pip into a virtualenv, once per node, in the env cache.

    engines:
      - name: v0.11.0
        kind: pip
        requirements: [vllm==0.11.0]
        extra_index_urls: [https://download.pytorch.org/whl/cu128]   # where torch's build lives, if not PyPI

pip reads the node's pip configuration (``pip.conf``, ``PIP_*``) as usual. For a single
vLLM commit use ``kind: uv`` (see ``farm.envs.uv``): pip merges an extra index with PyPI
and picks the highest version, so it may install a newer release instead of the commit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from farm.envs.build import BuiltEnv, Step
from farm.envs.registry import NodeContext, register
from farm.model.engines import PackageEngine, PipEngine


@register
class Pip(BuiltEnv):
    name = "pip"
    spec = PipEngine

    def steps(self, engine: PackageEngine, env_dir: Path, node: NodeContext) -> list[Step]:
        python = str(env_dir / "bin" / "python")
        options: list[str] = []
        if engine.index_url:
            options += ["--index-url", engine.index_url]
        for url in engine.extra_index_urls:
            options += ["--extra-index-url", url]
        for link in engine.find_links:
            options += ["--find-links", link]
        if engine.pre:
            options.append("--pre")
        steps: list[Step] = [
            [node.python, "-m", "venv", str(env_dir)],
            [python, "-m", "pip", "install", "--no-input", "--progress-bar", "off", *options, *self.requirements(engine, node)],
        ]
        if engine.uninstall:
            steps.append([python, "-m", "pip", "uninstall", "--yes", *engine.uninstall])
        return steps

    def describe(self, engine: Any) -> str:
        return "pip: " + " ".join(engine.requirements)
