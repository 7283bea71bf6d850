"""``venv`` engines: a virtualenv someone built, at the same path on every node.

    engines:
      - name: v0.10.2
        kind: venv
        path: /opt/envs/vllm-0.10.2

The farm builds nothing: it checks on each node that ``<path>/bin/python`` exists and
has the cluster's Python and Ray and the farm's own requirements, then starts the
cell's actor with it (Ray's ``py_executable``). What is wrong is said before any cell
runs, as the engine's ``env_error``.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from farm.envs import interpreter
from farm.envs.build import actor_env_vars, farm_code
from farm.envs.registry import EnvKind, NodeContext, PreparedEnv, Stopwatch, register
from farm.errors import EnvBuildError
from farm.model.engines import EngineSpec, VenvEngine
from farm.settings import FARM_CELL_DISTRIBUTIONS, FARM_CELL_REQUIREMENTS, code_dir


@register
class Venv(EnvKind):
    name = "venv"
    spec = VenvEngine

    def prepare(self, engine: EngineSpec, node: NodeContext) -> PreparedEnv:
        assert isinstance(engine, VenvEngine)
        clock = Stopwatch()
        where = f"venv {engine.path} (engine {engine.name!r}) on {socket.gethostname()}"
        python = Path(engine.path).expanduser() / "bin" / "python"
        if not python.exists():
            raise EnvBuildError(f"{where}: no {python}; build the env at that path on every node, "
                                "or use kind: pip to let the farm build it")
        versions = interpreter.probe([str(python)], required=FARM_CELL_DISTRIBUTIONS)
        interpreter.check_versions(versions, node, where=where)
        if versions.missing:
            raise EnvBuildError(f"{where} lacks {', '.join(versions.missing)}, which the farm's code needs in a cell: "
                                f"install {' '.join(repr(r) for r in FARM_CELL_REQUIREMENTS)} into it")
        if versions.vllm is None:
            raise EnvBuildError(f"{where} has no vLLM installed")
        return PreparedEnv(
            engine=engine.name,
            kind=engine.kind,
            hostname=socket.gethostname(),
            runtime_env={"py_executable": str(python), "env_vars": actor_env_vars(farm_code(code_dir()))},
            path=engine.path,
            versions=versions,
            seconds=clock(),
        )

    def describe(self, engine: Any) -> str:
        return f"venv: {engine.path}"
