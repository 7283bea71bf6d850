"""Registries of zoo architectures and of the variants derived from each.

An item name is either an architecture (a base model, e.g. ``qwen2-dense``) or
an architecture plus a variant suffix (``qwen2-dense-gptq4``,
``qwen2-dense-lora-attn``). Every architecture gets every variant, so adding
one architecture is one ``@register_arch`` function, and adding one kind of
derived checkpoint is one ``@register_variant`` function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from farm.errors import ZooError, did_you_mean

Kind = Literal["model", "adapter"]
Progress = Callable[[str], Any]


@dataclasses.dataclass(frozen=True)
class TrainParams:
    """How a base model is trained until its greedy outputs are confident."""

    steps: int = 300
    lr: float = 3e-3
    batch_size: int = 16
    seq_len: int = 64
    warmup_steps: int = 20


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """A tiny model of one real architecture.

    Attributes:
        name: the base model's item name.
        hf_class: the ``architectures`` entry transformers and vLLM dispatch on.
        config: keyword arguments for ``transformers.AutoConfig.for_model``
            (must include ``model_type``); plain data, so it hashes into the recipe.
        lora_targets: module names the ``lora-attn`` adapter targets.
        quant_skip: substrings of on-disk weight names that GPTQ leaves in
            float (routers and gates: tiny, and real quantizers skip them too).
        train: training parameters of the base model.
    """

    name: str
    hf_class: str
    config: Mapping[str, Any]
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    quant_skip: tuple[str, ...] = ()
    train: TrainParams = TrainParams()

    def recipe(self) -> dict[str, Any]:
        """Everything about this architecture that changes the bytes built."""
        return {
            "hf_class": self.hf_class,
            "config": dict(self.config),
            "lora_targets": list(self.lora_targets),
            "quant_skip": list(self.quant_skip),
            "train": dataclasses.asdict(self.train),
        }


# Writes one derived item into ``out_dir`` from its built base model in
# ``base_dir``; returns metrics to keep in the item's manifest.
VariantBuilder = Callable[["BuildContext"], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Variant:
    """A kind of item derived from a base model (a quantization, an adapter)."""

    suffix: str
    kind: Kind
    params: Mapping[str, Any]
    builder: VariantBuilder


@dataclasses.dataclass(frozen=True)
class BuildContext:
    """What a builder gets: where to write, what to read, and how to report."""

    arch: ArchSpec
    out_dir: Path
    base_dir: Path | None
    seed: int
    params: Mapping[str, Any]
    progress: Progress


@dataclasses.dataclass(frozen=True)
class Item:
    """One buildable zoo entry."""

    name: str
    arch: ArchSpec
    variant: Variant | None = None

    @property
    def kind(self) -> Kind:
        return self.variant.kind if self.variant else "model"

    @property
    def base(self) -> str:
        return self.arch.name

    @property
    def deps(self) -> tuple[str, ...]:
        return (self.arch.name,) if self.variant else ()


_ARCHS: dict[str, ArchSpec] = {}
_VARIANTS: dict[str, Variant] = {}


def register_arch(name: str) -> Callable[[Callable[[], ArchSpec]], Callable[[], ArchSpec]]:
    """Register a function returning the :class:`ArchSpec` of base model ``name``.

    Example::

        @register_arch("llama-dense")
        def llama_dense() -> ArchSpec:
            return ArchSpec(name="llama-dense", hf_class="LlamaForCausalLM",
                            config={"model_type": "llama", **COMMON})
    """

    def deco(fn: Callable[[], ArchSpec]) -> Callable[[], ArchSpec]:
        if name in _ARCHS:
            raise ZooError(f"zoo architecture {name!r} is registered twice; rename one of them.")
        spec = fn()
        if spec.name != name:
            raise ZooError(f"@register_arch({name!r}) returned a spec named {spec.name!r}; make them equal.")
        _ARCHS[name] = spec
        return fn

    return deco


def register_variant(
    suffix: str, *, kind: Kind, **params: Any
) -> Callable[[VariantBuilder], VariantBuilder]:
    """Register a builder deriving ``<arch>-<suffix>`` items from every base model.

    ``params`` are hashed into each item's recipe: change one and the items rebuild.
    """

    def deco(fn: VariantBuilder) -> VariantBuilder:
        if suffix in _VARIANTS:
            raise ZooError(f"zoo variant {suffix!r} is registered twice; rename one of them.")
        _VARIANTS[suffix] = Variant(suffix=suffix, kind=kind, params=params, builder=fn)
        return fn

    return deco


def items() -> dict[str, Item]:
    """Every item, by name."""
    out = {a.name: Item(a.name, a) for a in _ARCHS.values()}
    for a in _ARCHS.values():
        for v in _VARIANTS.values():
            out[f"{a.name}-{v.suffix}"] = Item(f"{a.name}-{v.suffix}", a, v)
    return out


def get(name: str) -> Item:
    """The item called ``name``; a ZooError naming the closest ones if unknown."""
    all_items = items()
    try:
        return all_items[name]
    except KeyError:
        raise ZooError(f"Unknown zoo item {name!r}.{did_you_mean(name, all_items)}") from None
