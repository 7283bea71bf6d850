"""``image`` engines: a container image per version, through Ray's ``image_uri`` (podman on every node).

    engines:
      - name: v0.11.0-image
        kind: image
        image: registry.example.com/vllm-farm:0.11.0   # vLLM + the cluster's Python and Ray + farm's requirements

Before a cell starts, the node checks with podman that the image has the cluster's
Python and Ray and the farm's requirements (pulling it, once per node). The farm's code
goes into the container the way Ray mounts its own files: a snapshot under Ray's temp
directory, which Ray mounts at the same path; the cell's FARM_HOME (zoo, compile
caches) lives there too, because the container sees no other host path.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Any

from farm.envs import interpreter
from farm.envs.build import farm_code
from farm.envs.registry import EnvKind, NodeContext, PreparedEnv, Stopwatch, register
from farm.errors import EnvBuildError
from farm.model.engines import EngineSpec, ImageEngine
from farm.settings import FARM_CELL_DISTRIBUTIONS, FARM_CELL_REQUIREMENTS


def ray_temp_dir() -> Path:
    """The node's Ray temp dir, which Ray's image_uri plugin mounts into every container at the same path."""
    try:
        import ray

        return Path(ray._private.worker.global_worker.node.get_temp_dir_path())  # no public getter in Ray 2.60
    except Exception:
        return Path("/tmp/ray")


@register
class Image(EnvKind):
    name = "image"
    spec = ImageEngine

    def prepare(self, engine: EngineSpec, node: NodeContext) -> PreparedEnv:
        assert isinstance(engine, ImageEngine)
        clock = Stopwatch()
        where = f"image {engine.image} (engine {engine.name!r}) on {socket.gethostname()}"
        podman = shutil.which("podman")
        if podman is None:
            raise EnvBuildError(f"{where}: podman is not installed on this node; Ray's image_uri starts workers with it")
        versions = interpreter.probe([podman, "run", "--rm", "--entrypoint", "python", engine.image],
                                     required=FARM_CELL_DISTRIBUTIONS, timeout=engine.pull_timeout_s)
        interpreter.check_versions(versions, node, where=where)
        if versions.missing:
            raise EnvBuildError(f"{where} lacks {', '.join(versions.missing)}, which the farm's code needs in a cell: "
                                f"add `pip install {' '.join(repr(r) for r in FARM_CELL_REQUIREMENTS)}` to the image")
        if versions.vllm is None:
            raise EnvBuildError(f"{where} has no vLLM installed")
        shared = ray_temp_dir() / "farm"
        return PreparedEnv(
            engine=engine.name,
            kind=engine.kind,
            hostname=socket.gethostname(),
            runtime_env={
                "image_uri": engine.image,
                "env_vars": {
                    "PYTHONPATH": str(farm_code(shared / "code")),
                    "FARM_HOME": str(shared / "home"),
                    "FARM_ZOO_DIR": str(shared / "home" / "zoo"),
                },
            },
            path=engine.image,
            versions=versions,
            seconds=clock(),
        )

    def describe(self, engine: Any) -> str:
        return f"image: {engine.image}"
