"""Job specs: YAML validated by pydantic.

A job names the axes of the matrix (models with their quantized variants, LoRA
adapters per model, engine versions) and how each cell is tested (probes,
engine arguments, resources, timeout). ``load_job`` turns a YAML file into a
``JobSpec`` or raises ``JobSpecError`` with one line that names the field and
what would be valid.
"""

from __future__ import annotations

import fnmatch
import math
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from farm.errors import JobSpecError, did_you_mean
from farm.model.base import NAME_PATTERN, NO_LORA, StrictModel, one_line, require_unique
from farm.model.engines import FAULTS, CurrentEngine, Engine, EngineSpec, read_patch
from farm.model.jobfile import read_job_document
from farm.model.sources import is_local_path, zoo_source
from farm.registry import PROBES

# Bounds of numbers whose absurd values were accepted and then failed late (a timeout of 1e21 s overflowed
# the cell's watchdog): a week of timeout, a large node's CPUs and GPUs, 16 TiB of memory.
MAX_TIMEOUT_S = 7 * 24 * 3600.0
MAX_CPUS, MAX_GPUS, MAX_MEMORY_GB = 1024.0, 64.0, 16384.0


class Resources(StrictModel):
    """What one cell reserves on one node (see ``farm.runner.placement``).

    CPUs and GPUs are per engine worker: a cell with ``tensor_parallel_size: N`` on GPUs
    reserves N bundles of them on one node. ``memory_gb`` is per cell: Ray schedules with it
    and the cell's process tree is killed past it (a ``crash``), so a runaway engine costs one
    cell, never its node.
    """

    # A GPU cell must also say num_cpus: a Ray GPU actor otherwise takes 1 CPU silently.
    num_cpus: float = Field(1.0, ge=0.01, le=MAX_CPUS, description="CPUs per engine worker (per cell on a CPU platform)")
    num_gpus: float = Field(0.0, ge=0, le=MAX_GPUS, description="GPUs per engine worker; 0 on a CPU platform")
    memory_gb: float | None = Field(
        None, ge=0.1, le=MAX_MEMORY_GB, description="host memory per cell in GiB: reserved in Ray and enforced (killed past it)"
    )

    @field_validator("num_gpus")
    @classmethod
    def _share_or_whole(cls, value: float) -> float:
        # Ray gives a fraction of one GPU or whole GPUs, never 1.5 of them.
        if value > 1 and not float(value).is_integer():
            raise ValueError(f"num_gpus {value:g} is neither a share of one GPU (below 1, e.g. 0.125) nor whole GPUs "
                             f"(1, 2, …); write {math.floor(value)} or {math.ceil(value)}")
        return value

    def merged(self, variant: Resources | None) -> Resources:
        """These resources with the fields a variant sets."""
        if variant is None or not variant.model_fields_set:
            return self
        return self.model_copy(update={name: getattr(variant, name) for name in variant.model_fields_set})

    @property
    def gpu_share(self) -> float | None:
        """The share of one GPU a cell takes when it shares it with others (``farm.cell.gpu_share``), else None."""
        return self.num_gpus if 0 < self.num_gpus < 1 else None


def _check_one_source(zoo_item: str | None, elsewhere: str | None, choices: str) -> None:
    """Exactly one of a zoo item (which must exist) and a checkpoint elsewhere."""
    if (zoo_item is None) == (elsewhere is None):
        raise ValueError(f"give exactly one of {choices}")
    if zoo_item is not None:
        from farm import zoo

        if zoo_item not in zoo.names():
            raise ValueError(f"unknown zoo item {zoo_item!r}.{did_you_mean(zoo_item, zoo.names())}")


class Variant(StrictModel):
    """One quantization of a model: where its weights are and how vLLM loads them."""

    quantization: str = Field("none", pattern=NAME_PATTERN, description="axis label, e.g. none, gptq-int4, ct-w4a16")
    zoo: str | None = Field(None, description="a farm zoo item, built on demand on the node")
    checkpoint: str | None = Field(None, description="a local path or a hub id (GPU job files only)")
    vllm_quantization: str | None = Field(None, description="vLLM's `quantization=` argument; None lets vLLM detect it")
    engine_args: dict[str, Any] = Field(default_factory=dict, description="vllm.LLM arguments for this variant only")
    reference: str | None = Field(
        None, description="what `reference` compares against: a zoo item or a checkpoint; default the zoo's own reference"
    )
    reference_tolerance: float | None = Field(
        None, gt=0, description="max chosen-token logprob difference (nats); default per the reference's kind"
    )
    # What the job gives every cell, except where a variant needs more (or less): a bigger model, a longer build.
    resources: Resources | None = Field(None, description="overrides the fields of the job's resources it sets")
    timeout_s: float | None = Field(None, gt=0, le=MAX_TIMEOUT_S, description="overrides the job's timeout_s for this variant's cells")

    @model_validator(mode="after")
    def _one_source(self) -> Variant:
        _check_one_source(self.zoo, self.checkpoint, "'zoo' (a zoo item name) or 'checkpoint' (a path or hub id)")
        return self

    @property
    def source(self) -> str:
        return zoo_source(self.zoo) if self.zoo is not None else str(self.checkpoint)


class Adapter(StrictModel):
    """A LoRA adapter for one model (applies to all of its variants)."""

    name: str = Field(pattern=NAME_PATTERN)
    zoo: str | None = None
    path: str | None = None
    reference: str | None = Field(None, description="adapter `lora_reference` applies with PEFT; default this one")

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value == NO_LORA:
            raise ValueError(f"{NO_LORA!r} is the built-in no-adapter column; give the adapter another name")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Adapter:
        _check_one_source(self.zoo, self.path, "'zoo' (a zoo adapter name) or 'path' (a PEFT adapter dir)")
        return self

    @property
    def source(self) -> str:
        return zoo_source(self.zoo) if self.zoo is not None else str(self.path)


class Model(StrictModel):
    name: str = Field(pattern=NAME_PATTERN)
    variants: list[Variant] = Field(min_length=1)
    loras: list[Adapter] = Field(default_factory=list)
    max_lora_rank: int = Field(8, ge=1, le=1024, description="vLLM's max_lora_rank for this model's LoRA cells")

    @model_validator(mode="after")
    def _unique(self) -> Model:
        require_unique([v.quantization for v in self.variants], "variants[].quantization")
        require_unique([a.name for a in self.loras], "loras[].name")
        return self


def _default_engines() -> list[EngineSpec]:
    return [CurrentEngine()]


class Retries(StrictModel):
    """When a cell runs again (see ``farm.runner.retry``); every attempt is its own result."""

    infra_attempts: int = Field(
        3, ge=1, le=10, description="attempts per run for infra outcomes (lost node, actor not started, env setup), each "
        "elsewhere, and cold-start timeouts (the first engine build on a node), on the same node"
    )
    recheck: int = Field(1, ge=0, le=5, description="reruns of a fail, crash or timeout, to tell a flaky cell from a broken one")


class Rule(StrictModel):
    """Matches cells by glob on any of the axes; every given axis must match."""

    model: str | None = None
    quantization: str | None = None
    lora: str | None = None
    engine: str | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Rule:
        if not any((self.model, self.quantization, self.lora, self.engine)):
            raise ValueError("a rule needs at least one of model, quantization, lora, engine")
        return self

    def matches(self, axes: dict[str, str]) -> bool:
        pattern = {"model": self.model, "quantization": self.quantization, "lora": self.lora, "engine": self.engine}
        return all(glob is None or fnmatch.fnmatchcase(axes[axis], glob) for axis, glob in pattern.items())


class Unsupported(Rule):
    """Combinations known not to apply: their cells are recorded as ``unsupported``, with the reason, and never run."""

    reason: str = Field(min_length=1, description="why, for the matrix: e.g. 'vLLM has no LoRA for this architecture'")


def _zoo_prompts() -> list[str]:
    from farm.zoo.corpus import SAMPLE_PROMPTS

    return list(SAMPLE_PROMPTS)


class Generation(StrictModel):
    # The zoo's models are confident on their own domain, so these prompts give peaked outputs.
    prompts: list[Annotated[str, StringConstraints(min_length=1, max_length=100_000)]] = Field(
        default_factory=_zoo_prompts, min_length=1, max_length=1000)
    max_tokens: int = Field(16, ge=1, le=4096)
    top_logprobs: int = Field(5, ge=1, le=20, description="top-k compared at the first divergence")
    repeats: int = Field(3, ge=2, le=20, description="`determinism`: generations compared in one engine")


class JobSpec(StrictModel):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    models: list[Model] = Field(min_length=1)
    engines: list[Engine] = Field(default_factory=_default_engines, min_length=1)
    base: bool = Field(True, description="include the no-adapter column 'none'")
    probes: list[str] = Field(default_factory=lambda: ["load", "generate", "lora"], min_length=1)
    engine_args: dict[str, Any] = Field(default_factory=dict, description="passed to vllm.LLM for every cell")
    keep_env: list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]] = Field(
        default_factory=list, description="store credentials a cell keeps (e.g. AWS_PROFILE for a model bucket): "
        "by default every cell's process drops them (farm.cell.credentials)")
    generation: Generation = Field(default_factory=Generation)
    resources: Resources = Field(default_factory=Resources)
    timeout_s: float = Field(
        900.0, gt=0, le=MAX_TIMEOUT_S, description="per cell, engine build included; the default leaves room for a cold first build "
        "(JIT compilation on a fresh GPU node: 90-120 s even for a tiny model), whose timeout is retried, not a verdict"
    )
    start_timeout_s: float = Field(
        300.0, gt=0, le=MAX_TIMEOUT_S, description="for a cell's actor to be placed and started while its node has room; then an infra retry"
    )
    retries: Retries = Field(default_factory=Retries)
    include: list[Rule] = Field(default_factory=list)
    exclude: list[Rule] = Field(default_factory=list)
    # Unlike exclude, the cells stay in the matrix: the page shows the combination and why it is not tested.
    unsupported: list[Unsupported] = Field(default_factory=list)

    def has_cells(self) -> bool:
        """Whether the include/exclude rules leave a cell (the axes farm.model.cells.expand matches them on)."""
        for model in self.models:
            for variant in model.variants:
                for lora in ([NO_LORA] if self.base else []) + [a.name for a in model.loras]:
                    for engine in self.engines:
                        axes = {"model": model.name, "quantization": variant.quantization, "lora": lora, "engine": engine.name}
                        if (not self.include or any(r.matches(axes) for r in self.include)) and not any(
                                r.matches(axes) for r in self.exclude):
                            return True
        return False

    def unsupported_reason(self, axes: dict[str, str]) -> str | None:
        """The reason of the first ``unsupported`` rule that matches a cell's axes, if any."""
        return next((rule.reason for rule in self.unsupported if rule.matches(axes)), None)

    @field_validator("probes")
    @classmethod
    def _known_probes(cls, probes: list[str]) -> list[str]:
        for name in probes:
            if name not in PROBES:
                raise ValueError(f"unknown probe {name!r}.{did_you_mean(name, PROBES.names())}")
        require_unique(probes, "probes")
        return probes

    @model_validator(mode="after")
    def _unique(self) -> JobSpec:
        require_unique([m.name for m in self.models], "models[].name")
        require_unique([e.name for e in self.engines], "engines[].name")
        return self

    @model_validator(mode="after")
    def _gpu_shares(self) -> JobSpec:
        """A cell that shares a GPU runs one engine worker, in at most its share of the GPU's memory."""
        for model in self.models:
            for i, variant in enumerate(model.variants):
                share = self.resources.merged(variant.resources).gpu_share
                if share is None:
                    continue
                where = f"models[{model.name}].variants[{i}]"
                args = {**self.engine_args, **variant.engine_args}
                workers = int(args.get("tensor_parallel_size", 1) or 1) * int(args.get("pipeline_parallel_size", 1) or 1)
                if workers > 1:
                    raise ValueError(f"{where}: {workers} engine workers cannot share a GPU (num_gpus {share:g}); "
                                     "give tensor- or pipeline-parallel cells whole GPUs (num_gpus: 1)")
                asked = args.get("gpu_memory_utilization")
                if isinstance(asked, int | float) and asked > share + 1e-9:
                    raise ValueError(f"{where}: gpu_memory_utilization {asked:g} is more than the cell's GPU share "
                                     f"(num_gpus {share:g}), and its neighbours' memory; leave it out (the farm sets it "
                                     "to the share) or raise num_gpus")
        return self

    @model_validator(mode="after")
    def _known_faults(self) -> JobSpec:
        """A fault-injection job names faults the engine knows: an unknown one failed every cell at run time."""
        if not any(e.kind == "fault-injection" for e in self.engines):
            return self
        given = [("engine_args.fault", self.engine_args)] + [
            (f"models[{m.name}].variants[{i}].engine_args.fault", v.engine_args)
            for m in self.models for i, v in enumerate(m.variants)]
        for where, arguments in given:
            if "fault" in arguments and str(arguments["fault"]) not in FAULTS:
                raise ValueError(f"{where}: unknown fault {arguments['fault']!r}; the fault-injection engine knows "
                                 f"{', '.join(FAULTS)}")
        return self


def check_local_paths(job: JobSpec, origin: str) -> None:
    """Refuse a job whose local paths (checkpoints, adapters, references given as /…, ./…, ~…) do not exist here.

    For a run on this machine and for ``farm validate``; a job for a cluster names the nodes' paths, and hub ids
    (``org/name``, GPU jobs) are looked up by the node."""
    for field, source in _local_paths(job):
        if not Path(source).expanduser().exists():
            raise JobSpecError(f"{origin}: {field}: {source} does not exist on this machine; give an existing path, "
                               "a zoo item (zoo: …) or a hub id (org/name, for GPU nodes)")


def _local_paths(job: JobSpec) -> list[tuple[str, str]]:
    found = []
    for model in job.models:
        for i, variant in enumerate(model.variants):
            found += [(f"models[{model.name}].variants[{i}].{name}", value) for name, value in
                      (("checkpoint", variant.checkpoint), ("reference", variant.reference)) if value and is_local_path(value)]
        for adapter in model.loras:
            found += [(f"models[{model.name}].loras[{adapter.name}].{name}", value) for name, value in
                      (("path", adapter.path), ("reference", adapter.reference)) if value and is_local_path(value)]
    return found


def load_job(path: str | Path) -> JobSpec:
    """Read and validate a job spec.

    Raises:
        JobSpecError: one line naming the file, the field and what would be valid.
    """
    path = Path(path)
    data = read_job_document(path)  # limits on size, encoding, depth, aliases, duplicate keys (farm.model.jobfile)
    return parse_job(_with_patches_read(data, path), origin=str(path))


def _with_patches_read(data: Any, job_file: Path) -> Any:
    """Engines' ``patches`` file names read into ``{path, diff}``, relative to the job file's directory."""
    engines = data.get("engines") if isinstance(data, dict) else None
    for engine in engines if isinstance(engines, list) else []:
        patches = engine.get("patches") if isinstance(engine, dict) else None
        if isinstance(patches, list):
            for i, patch in enumerate(patches):
                if isinstance(patch, str):
                    try:
                        patches[i] = read_patch(patch, job_file.parent)
                    except ValueError as exc:
                        name = engine.get("name", "?")
                        raise JobSpecError(f"{job_file}: engines[{name}].patches[{i}]: {exc}") from None
    return data


def parse_job(data: Any, origin: str = "<job>") -> JobSpec:
    """Validate an already-parsed job document (see ``load_job``)."""
    if not isinstance(data, dict):
        raise JobSpecError(f"{origin}: a job spec is a YAML mapping with at least 'name' and 'models'")
    try:
        job = JobSpec.model_validate(data)
    except ValidationError as exc:
        raise JobSpecError(f"{origin}: {one_line(exc)}") from None
    if not job.has_cells():
        raise JobSpecError(f"{origin}: the job has no cell to run: its include/exclude rules (or base: false "
                               "without adapters) leave none; loosen them (farm validate lists what remains)")
    return job


