"""The registry of engine environment kinds. Built-in kinds register exactly as a plug-in would:

    from farm.envs.registry import EnvKind, NodeContext, PreparedEnv, register
    from farm.model.engines import EngineSpec

    class CondaEngine(EngineSpec):
        kind: Literal["conda"] = "conda"
        env: str

    @register
    class Conda(EnvKind):
        name = "conda"
        spec = CondaEngine

        def prepare(self, engine, node: NodeContext) -> PreparedEnv: ...

A kind's ``spec`` is the pydantic model of its engines in a job file; its ``prepare``
runs on the node a cell was placed on, before the cell's actor starts there, and says
how that actor starts (its Ray ``runtime_env``), or raises ``EnvBuildError``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from farm.model.engines import ENGINE_SPECS, EngineSpec
from farm.registry import Registry


class _Doc(BaseModel):
    # Readers ignore unknown keys: a newer node may report more than this driver knows.
    model_config = ConfigDict(extra="ignore")


class EnvVersions(_Doc):
    """What an env holds, read from its installed metadata (see ``farm.cell.facts``)."""

    python: str | None = None
    python_executable: str | None = None
    prefix: str | None = None
    ray: str | None = None
    vllm: str | None = None
    vllm_dist: str | None = None
    vllm_commit: str | None = None
    torch: str | None = None
    transformers: str | None = None
    platform: str | None = None
    missing: list[str] = Field(default_factory=list)  # of the distributions a check asked for
    notes: list[str] = Field(default_factory=list)  # how the env differs from what its engine names (farm.envs.release)


class PreparedEnv(_Doc):
    """A ready env on one node, and how a cell's actor starts in it."""

    engine: str
    kind: str
    hostname: str | None = None
    node_id: str | None = None
    runtime_env: dict[str, Any] = Field(default_factory=dict)
    key: str | None = None  # the node-local cache entry, for kinds that build
    path: str | None = None  # the env's directory (or image)
    versions: EnvVersions = Field(default_factory=EnvVersions)
    built: bool = False  # built by this preparation (cold); False: found ready (warm)
    evicted: list[str] = Field(default_factory=list)  # envs the disk budget removed after this build
    seconds: float = 0.0  # preparation time, build included


class EnvFailure(_Doc):
    """An env that could not be prepared: the result of every cell of its engine."""

    engine: str
    kind: str
    hostname: str | None = None
    message: str
    log_tail: str = ""
    cached: bool = False  # a failure recorded by an earlier build, not retried (see ``farm env clean``)
    seconds: float = 0.0


@dataclass(frozen=True)
class NodeContext:
    """What a preparation on a node knows beyond the engine spec.

    Attributes:
        python: the interpreter the cluster's workers run on this node (new envs are made from it).
        python_version: its ``major.minor.micro``; an env must match it (Ray starts no worker otherwise).
        ray_version: the cluster's Ray; an env must have exactly this one.
        rebuild_before: rebuild a cached env built before this Unix time (``--rebuild-envs``), or None.
    """

    python: str
    python_version: str
    ray_version: str
    rebuild_before: float | None = None


class EnvKind:
    """One way of getting a vLLM for a cell; subclass, set ``name`` and ``spec``, and ``@register``."""

    name: ClassVar[str]
    spec: ClassVar[type[EngineSpec]]
    # True: the cell runs in the driver's own environment and nothing is prepared on the node.
    in_driver_env: ClassVar[bool] = False

    def prepare(self, engine: EngineSpec, node: NodeContext) -> PreparedEnv:
        """Make ``engine``'s env ready on this node (build or check it); runs on the cell's node.

        Raises:
            EnvBuildError: the env cannot be had here; the message says why and what to do.
        """
        raise NotImplementedError(f"engine kind {self.name!r} prepares nothing on nodes")

    def describe(self, engine: EngineSpec) -> str:
        """One line for listings: what this engine installs or points at."""
        return self.name


# Filled by farm.envs (one module a kind) on first lookup; plug-in packages declare entry points.
ENV_KINDS: Registry[EnvKind] = Registry("engine kind", builtins="farm.envs", group="farm.env_kinds")


def register(cls: type[EnvKind]) -> type[EnvKind]:
    """Class decorator: make an engine kind available to job files under ``cls.name``.

    Registers the kind's preparation here and, unless it is there already, its engine model in
    ``farm.model.engines.ENGINE_SPECS`` (where the built-in kinds' models are).
    """
    if cls.name not in ENGINE_SPECS or ENGINE_SPECS.get(cls.name) is not cls.spec:
        ENGINE_SPECS.register(cls.name, cls.spec)
    ENV_KINDS.register(cls.name, cls())
    return cls


def names() -> list[str]:
    return ENV_KINDS.names()


def get(name: str) -> EnvKind:
    return ENV_KINDS.get(name)


def kind_of(engine: EngineSpec) -> EnvKind:
    return ENV_KINDS.get(engine.kind)


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    def __call__(self) -> float:
        return round(time.perf_counter() - self.started, 3)
