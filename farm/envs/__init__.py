"""Engine environments: how each cell gets *its* vLLM, many versions in one Ray cluster.

    kind             the cell's actor runs in                      prepared on its node
    current          the driver's own environment                  nothing
    fault-injection  the driver's env, with a fake engine (a test seam, see farm.cell.fault_injection)
    venv             a pre-built virtualenv at a path on every node   checked (Python, Ray, farm's needs)
    pip / uv         requirements, built once per node into the env cache (farm.envs.cache)
    release          a published release from its own requirements, pins the index lacks substituted (farm.envs.release)
    bundle           an offline bundle (farm bundle), unpacked once per node into the env cache, on a given Python
    image            a container image (Ray's image_uri; podman)   pulled and checked

Each kind is one module that registers its engine model and its preparation
(``farm.envs.registry``); a plug-in registers the same way. A kind that prepares runs
in a small Ray task on the node the cell was placed on (``farm.envs.node``), which
returns how the cell's actor starts there (Ray ``runtime_env``: ``py_executable`` or
``image_uri``), or why it cannot: the cell's ``env_error``, never a compatibility verdict.
"""

from farm.envs import bundle, cache, current, image, pip, release, uv, venv  # noqa: F401  (register the built-in kinds)
from farm.envs.registry import (
    ENV_KINDS,
    EnvFailure,
    EnvKind,
    EnvVersions,
    NodeContext,
    PreparedEnv,
    get,
    kind_of,
    names,
    register,
)
from farm.errors import EnvBuildError

__all__ = [
    "EnvBuildError",
    "EnvFailure",
    "EnvKind",
    "ENV_KINDS",
    "EnvVersions",
    "NodeContext",
    "PreparedEnv",
    "cache",
    "get",
    "kind_of",
    "names",
    "register",
]
