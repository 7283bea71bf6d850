"""Expansion of a job into cells, each with an id that is stable across runs and machines."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict

from farm.model.engines import CurrentEngine
from farm.model.sources import zoo_source
from farm.model.spec import NO_LORA, Engine, JobSpec, Resources

NOT_IDENTITY = {"reference", "lora_reference", "reference_tolerance", "resources", "timeout_s"}


class Cell(BaseModel):
    """One combination of the matrix: model variant × LoRA adapter × engine.

    Only these identity fields feed the id: probes, resources and timeouts may
    change between runs while the cell stays the same combination.
    """

    model_config = ConfigDict(frozen=True)

    model: str
    quantization: str
    model_source: str  # "zoo:<item>" or a checkpoint path / hub id
    vllm_quantization: str | None = None
    engine_args: dict[str, Any] = {}  # the variant's own vllm.LLM arguments (e.g. dtype for a GPTQ checkpoint)
    lora: str = NO_LORA
    lora_source: str | None = None
    max_lora_rank: int | None = None  # set only for adapter cells, so it cannot split base cells' ids
    engine: Engine = CurrentEngine()
    # What the reference probes compare against. Not part of the combination, so not of the id.
    reference: str | None = None
    lora_reference: str | None = None
    reference_tolerance: float | None = None
    # How the cell runs, not what it is: set only where its variant overrides the job's.
    resources: Resources | None = None
    timeout_s: float | None = None

    @property
    def id(self) -> str:
        identity = self.model_dump(mode="json", exclude=NOT_IDENTITY)
        # The engine's own identity: its install spec, without build policies and defaults (see EngineSpec).
        identity["engine"] = self.engine.identity()
        canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def row(self) -> str:
        return f"{self.model} · {self.quantization}"

    @property
    def column(self) -> str:
        return f"{self.lora} · {self.engine.name}"

    @property
    def label(self) -> str:
        return cell_label(self.model, self.quantization, self.lora, self.engine.name)

    @property
    def combination(self) -> str:
        """The cell without its engine: what a version history and a bisection follow across engines."""
        return cell_label(self.model, self.quantization, self.lora)

    def axes(self) -> dict[str, str]:
        return {"model": self.model, "quantization": self.quantization, "lora": self.lora, "engine": self.engine.name}


def cell_label(model: str, quantization: str, lora: str, engine: str | None = None) -> str:
    """``model/quantization/lora/engine`` (without the engine: the combination): how people name a cell."""
    return "/".join((model, quantization, lora, engine) if engine is not None else (model, quantization, lora))


def expand(job: JobSpec) -> list[Cell]:
    """All cells of a job after include/exclude rules, in a stable order."""
    cells: list[Cell] = []
    for model in job.models:
        adapters: list[tuple[str, str | None, str | None]] = [(NO_LORA, None, None)] if job.base else []
        adapters += [(a.name, a.source, _source_of(a.reference)) for a in model.loras]
        for variant in model.variants:
            for lora, lora_source, lora_reference in adapters:
                for engine in job.engines:
                    cell = Cell(
                        model=model.name,
                        quantization=variant.quantization,
                        model_source=variant.source,
                        vllm_quantization=variant.vllm_quantization,
                        engine_args=variant.engine_args,
                        lora=lora,
                        lora_source=lora_source,
                        max_lora_rank=model.max_lora_rank if lora_source else None,
                        engine=engine,
                        reference=_source_of(variant.reference),
                        lora_reference=lora_reference,
                        reference_tolerance=variant.reference_tolerance,
                        resources=_resources(job.resources, variant.resources),
                        timeout_s=variant.timeout_s,
                    )
                    axes = cell.axes()
                    if job.include and not any(rule.matches(axes) for rule in job.include):
                        continue
                    if any(rule.matches(axes) for rule in job.exclude):
                        continue
                    cells.append(cell)
    return cells


def _source_of(name: str | None) -> str | None:
    """A reference named in a job: a zoo item becomes ``zoo:<item>``, anything else is a checkpoint."""
    if name is None:
        return None
    from farm import zoo

    return zoo_source(name) if name in zoo.names() else name


def _resources(job: Resources, variant: Resources | None) -> Resources | None:
    """The job's resources with the fields the variant sets; None when it sets none."""
    if variant is None or not variant.model_fields_set:
        return None
    return job.merged(variant)
