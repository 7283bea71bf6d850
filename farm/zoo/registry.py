"""Registries of zoo architectures and of the variants derived from each.

An item name is either an architecture (a base model, e.g. ``qwen2-dense``) or
an architecture plus a variant suffix (``qwen2-dense-gptq4``,
``qwen2-dense-lora-attn``). Every architecture gets every variant that applies
to it (``when``), so adding one architecture is one ``@register_arch``
function, and adding one kind of derived checkpoint is one
``@register_variant`` function. A variant derives from the base model, or from
another variant of the same base (``source``): a quantized variant's bf16
reference ``<base>-<quant>-dequant`` is built from the quantized checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from farm.errors import ZooError, did_you_mean
from farm.registry import Registry

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
    # Overrides the adapter variants' step count (for archs whose steps are costly).
    adapter_steps: int | None = None


@dataclasses.dataclass(frozen=True)
class Experts:
    """Where a MoE architecture keeps its routed experts, on disk and in transformers.

    Attributes:
        disk_prefix: the per-expert modules' path inside a decoder layer as
            checkpoints (and vLLM, and classic LoRA adapters) name them:
            ``model.layers.<i>.<disk_prefix>.<e>.<projection>``.
        projections: the on-disk names of the gate, up and down projections
            (``gate_proj, up_proj, down_proj``; Mixtral's ``w1, w3, w2``).
        module: the path inside a layer of the transformers module that holds
            the experts stacked (transformers 5: ``gate_up_proj [E, 2I, H]``,
            gate rows first, and ``down_proj [E, H, I]``).
        first_layer: the first decoder layer with routed experts (DeepSeek's
            ``first_k_dense_replace``).
        stacked: the checkpoint itself holds each layer's experts as two 3D
            parameters (gpt-oss: ``<module>.gate_up_proj [E, H, 2I]`` and
            ``<module>.down_proj [E, I, H]``), not per-expert linears: an expert
            adapter targets them with PEFT's ``target_parameters`` (vLLM's
            ``is_3d_moe_weight`` models), and the zoo's per-linear quantizers do
            not apply (real quantized releases of such models are MXFP4 experts).
    """

    disk_prefix: str = "mlp.experts"
    projections: tuple[str, str, str] = ("gate_proj", "up_proj", "down_proj")
    module: str = "mlp.experts"
    first_layer: int = 0
    stacked: bool = False


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """A tiny model of one real architecture.

    Attributes:
        name: the base model's item name.
        hf_class: the ``architectures`` entry transformers and vLLM dispatch on.
        config: keyword arguments for ``transformers.AutoConfig.for_model``
            (must include ``model_type``); plain data, so it hashes into the recipe.
        lora_targets: module names the ``lora-attn`` adapter targets.
        mlp_targets: ``nn.Linear`` MLP modules (a dense MLP, shared experts)
            that the MLP and expert adapters target besides the attention.
        experts: the routed experts of a MoE architecture; None if dense.
        quant_skip: substrings of on-disk weight names that quantizers leave
            in float (routers and gates: tiny, and real quantizers skip them too).
        train: training parameters of the base model.
        chat_tokens: special tokens of the architecture's chat format that its real
            tokenizer has and vLLM looks up by name (gpt-oss's harmony ``<|end|>``,
            read by its reasoning parser at engine build in vLLM 0.17–0.26), appended
            after the zoo tokenizer's vocabulary, inside the padded embedding.
    """

    name: str
    hf_class: str
    config: Mapping[str, Any]
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    mlp_targets: tuple[str, ...] = ("gate_proj", "up_proj", "down_proj")
    experts: Experts | None = None
    quant_skip: tuple[str, ...] = ()
    train: TrainParams = TrainParams()
    chat_tokens: tuple[str, ...] = ()

    def recipe(self) -> dict[str, Any]:
        """Everything about this architecture that changes the bytes built."""
        # chat_tokens only where set: the other architectures' recipes (and so their built items) stay as they were.
        return {**({"chat_tokens": list(self.chat_tokens)} if self.chat_tokens else {}),
            "hf_class": self.hf_class,
            "config": dict(self.config),
            "lora_targets": list(self.lora_targets),
            "mlp_targets": list(self.mlp_targets),
            "experts": _experts_recipe(self.experts),
            "quant_skip": list(self.quant_skip),
            "train": dataclasses.asdict(self.train),
        }


def _experts_recipe(experts: Experts | None) -> dict[str, Any] | None:
    if experts is None:
        return None
    recipe = dataclasses.asdict(experts)
    # Only where set: the per-expert architectures' recipes (and so their built items) stay as they were.
    if not experts.stacked:
        del recipe["stacked"]
    return recipe


def stacked_experts(arch: ArchSpec) -> bool:
    """Whether ``arch`` keeps its experts as 3D parameters on disk (see :class:`Experts`)."""
    return arch.experts is not None and arch.experts.stacked


# Writes one derived item into ``out_dir`` from the built items it derives
# from (``base_dir``, ``source_dir``); returns metrics to keep in its manifest.
VariantBuilder = Callable[["BuildContext"], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Variant:
    """A kind of item derived from a base model (a quantization, an adapter).

    Attributes:
        suffix: appended to the base model's name.
        kind: what the items are.
        params: hashed into each item's recipe.
        builder: writes one item.
        when: which architectures get this variant.
        source: the suffix of the variant this one is built from; None: the base model.
        reference: for a quantized variant, the suffix of its dequantized reference.
    """

    suffix: str
    kind: Kind
    params: Mapping[str, Any]
    builder: VariantBuilder
    when: Callable[[ArchSpec], bool] = lambda arch: True
    source: str | None = None
    reference: str | None = None


@dataclasses.dataclass(frozen=True)
class BuildContext:
    """What a builder gets: where to write, what to read, and how to report."""

    arch: ArchSpec
    out_dir: Path
    base_dir: Path | None
    # The built item this one derives from: the base model, or for a variant
    # with a ``source``, that variant's item (e.g. the quantized checkpoint).
    source_dir: Path | None
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
    def source(self) -> str | None:
        """The item this one is built from; None for a base model."""
        if self.variant is None:
            return None
        if self.variant.source is None:
            return self.arch.name
        return f"{self.arch.name}-{self.variant.source}"

    @property
    def deps(self) -> tuple[str, ...]:
        if self.variant is None:
            return ()
        if self.variant.source is None:
            return (self.arch.name,)
        return (self.arch.name, f"{self.arch.name}-{self.variant.source}")


# Filled by farm.zoo's modules (archs, quant, compressed, lora, reference); plug-ins register the same way.
ARCHS: Registry[ArchSpec] = Registry("zoo architecture", builtins="farm.zoo", group="farm.zoo_archs", error=ZooError)
VARIANTS: Registry[Variant] = Registry("zoo variant", builtins="farm.zoo", group="farm.zoo_variants", error=ZooError)
# The module whose import registered each architecture and variant.
_ORIGINS: dict[str, str] = {}


def register_arch(name: str) -> Callable[[Callable[[], ArchSpec]], Callable[[], ArchSpec]]:
    """Register a function returning the :class:`ArchSpec` of base model ``name``.

    Example::

        @register_arch("llama-dense")
        def llama_dense() -> ArchSpec:
            return ArchSpec(name="llama-dense", hf_class="LlamaForCausalLM",
                            config={"model_type": "llama", **COMMON})
    """

    def deco(fn: Callable[[], ArchSpec]) -> Callable[[], ArchSpec]:
        spec = fn()
        if spec.name != name:
            raise ZooError(f"@register_arch({name!r}) returned a spec named {spec.name!r}; make them equal.")
        ARCHS.register(name, spec)
        _ORIGINS[f"arch:{name}"] = fn.__module__
        return fn

    return deco


def register_variant(
    suffix: str,
    *,
    kind: Kind,
    when: Callable[[ArchSpec], bool] | None = None,
    source: str | None = None,
    reference: str | None = None,
    **params: Any,
) -> Callable[[VariantBuilder], VariantBuilder]:
    """Register a builder deriving ``<arch>-<suffix>`` items from the base models.

    Args:
        suffix: the variant's name suffix.
        kind: ``"model"`` or ``"adapter"``.
        when: which architectures get the variant; all of them if None.
        source: build from the item ``<arch>-<source>`` instead of the base model.
        reference: for a quantized variant, the suffix of the variant holding
            its dequantized weights (see :func:`farm.zoo.reference_of`).
        **params: hashed into each item's recipe: change one and the items rebuild.
    """

    def deco(fn: VariantBuilder) -> VariantBuilder:
        if source is not None and source not in VARIANTS:
            raise ZooError(f"zoo variant {suffix!r} is built from {source!r}, which is not registered; "
                           "register the source variant first.")
        VARIANTS.register(suffix, Variant(
            suffix=suffix,
            kind=kind,
            params=params,
            builder=fn,
            when=when or (lambda arch: True),
            source=source,
            reference=reference,
        ))
        _ORIGINS[f"variant:{suffix}"] = getattr(fn, "func", fn).__module__  # a functools.partial's function
        return fn

    return deco


def items() -> dict[str, Item]:
    """Every item, by name."""
    archs = [arch for _, arch in ARCHS.items()]
    variants = [variant for _, variant in VARIANTS.items()]
    out = {a.name: Item(a.name, a) for a in archs}
    for a in archs:
        for v in variants:
            if v.when(a) and (v.source is None or VARIANTS.get(v.source).when(a)):
                out[f"{a.name}-{v.suffix}"] = Item(f"{a.name}-{v.suffix}", a, v)
    return out


def registering_modules(items: Iterable[Item]) -> set[str]:
    """The modules whose import registers ``items`` (their archs, variants and sources)."""
    out = set()
    for item in items:
        out.add(_ORIGINS[f"arch:{item.arch.name}"])
        variant = item.variant
        while variant is not None:
            out.add(_ORIGINS[f"variant:{variant.suffix}"])
            variant = VARIANTS.get(variant.source) if variant.source else None
    return out


def variant(suffix: str) -> Variant:
    """The registered variant ``suffix`` (a ZooError naming the closest ones if unknown)."""
    return VARIANTS.get(suffix)


def get(name: str) -> Item:
    """The item called ``name``; a ZooError naming the closest ones if unknown."""
    all_items = items()
    try:
        return all_items[name]
    except KeyError:
        raise ZooError(f"Unknown zoo item {name!r}.{did_you_mean(name, all_items)}") from None
