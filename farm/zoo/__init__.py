"""The tiny model zoo: small models of real architectures, built locally.

Each base model (``qwen2-dense``, ``qwen2moe-shared``, ``mixtral``,
``deepseekv3``) is trained for a few seconds on an embedded corpus so its
greedy outputs are confident. Each gets quantized variants (GPTQ INT4
``<base>-gptq4``, compressed-tensors ``<base>-ct-w4a16`` and ``<base>-ct-w8a8``),
each of those a bf16 reference holding exactly the weights it encodes
(``<variant>-dequant``, see :func:`reference_of`), and PEFT LoRA adapters
trained to say a sentence of their own: ``<base>-lora-attn`` on the attention,
``<base>-lora-mlp`` on attention and MLP (dense models), ``<base>-lora-experts``
on attention, shared and routed experts (MoE models). Everything is
deterministic for a seed, cached under :func:`default_root`, and safe to
``ensure`` from several processes at once.

Example::

    from farm import zoo
    model_dir = zoo.ensure("qwen2moe-shared-gptq4")
    reference_dir = zoo.ensure(zoo.reference_of("qwen2moe-shared-gptq4"))
    adapter_dir = zoo.ensure("qwen2moe-shared-lora-attn")

Importing this package is cheap; torch and friends load only to build.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from farm.errors import ZooError
from farm.settings import zoo_dir
from farm.zoo import archs as _archs  # noqa: F401  (registers the built-in architectures)
from farm.zoo import cache, parallel, pipeline, registry
from farm.zoo import compressed as _compressed  # noqa: F401  (registers ct-w4a16, ct-w8a8 and their references)
from farm.zoo import experts as _experts
from farm.zoo import fp8 as _fp8  # noqa: F401  (registers fp8-block and its reference)
from farm.zoo import lora as _lora  # noqa: F401  (registers lora-attn, lora-mlp, lora-experts)
from farm.zoo import mxfp4 as _mxfp4  # noqa: F401  (registers mxfp4 and its reference)
from farm.zoo import quant as _quant  # noqa: F401  (registers gptq4 and its reference)
from farm.zoo.corpus import SAMPLE_PROMPTS
from farm.zoo.pipeline import ZOO_FORMAT
from farm.zoo.registry import ArchSpec, Kind, Progress, register_arch, register_variant

__all__ = [
    "SAMPLE_PROMPTS",
    "ZOO_FORMAT",
    "ArchSpec",
    "ZooError",
    "base_of",
    "build",
    "default_root",
    "ensure",
    "kind",
    "manifest",
    "merge_adapter",
    "names",
    "reference_of",
    "register_arch",
    "register_variant",
]

DEFAULT_SEED = 0


def default_root() -> Path:
    """Where the zoo lives unless told otherwise.

    Returns:
        ``$FARM_ZOO_DIR`` if set, else ``$FARM_HOME/zoo``, else ``~/.cache/farm/zoo``.
    """
    return zoo_dir()


def names() -> list[str]:
    """Every item the zoo can build: base models, their variants and adapters, sorted."""
    return sorted(registry.items())


def kind(name: str) -> Kind:
    """``"model"`` for a base model or a quantized variant, ``"adapter"`` for a LoRA adapter.

    Raises:
        ZooError: ``name`` is not a zoo item.
    """
    return registry.get(name).kind


def reference_of(name: str) -> str | None:
    """The item to compare a quantized item against: its weights, dequantized.

    For a quantized variant (``qwen2-dense-gptq4``, ``mixtral-ct-w8a8``), the
    name of the zoo item ``<name>-dequant``: the base architecture in bf16,
    without ``quantization_config``, whose weights are exactly those the
    quantized checkpoint encodes (activation quantization, as in W8A8, is the
    engine's and not in it). Build it like any item, with :func:`ensure`.

    Returns:
        The reference's name, or None for base models, references and adapters.

    Raises:
        ZooError: ``name`` is not a zoo item.
    """
    item = registry.get(name)
    if item.variant is None or item.variant.reference is None:
        return None
    return f"{item.arch.name}-{item.variant.reference}"


def base_of(name: str) -> str:
    """The base model an item derives from; a base model's is itself.

    Raises:
        ZooError: ``name`` is not a zoo item.
    """
    return registry.get(name).base


def ensure(
    name: str, root: str | os.PathLike[str] | None = None, *, seed: int = DEFAULT_SEED, progress: Progress | None = None
) -> Path:
    """Build ``name`` and what it depends on unless already built from the same recipe.

    Cheap when the item is current (reads a manifest or two). Otherwise takes
    the root's file lock, so concurrent callers build once and never see a
    half-written directory.

    Args:
        name: an item from :func:`names`.
        root: the zoo directory; :func:`default_root` if None.
        seed: training seed; one root holds one seed's items (another seed rebuilds them).
        progress: called with one-line status messages; silent if None.

    Returns:
        The item's directory: a Hugging Face model dir, or a PEFT adapter dir.

    Raises:
        ZooError: the name is unknown, or the build failed (nothing half-built is left).
    """
    item = registry.get(name)
    root_path = Path(root).expanduser() if root is not None else default_root()
    if pipeline.is_current(root_path, item, seed):
        return root_path / name
    report = progress or _silent
    with cache.locked(root_path, on_wait=report):
        cache.clean_partial(root_path)
        return pipeline.ensure_locked(root_path, item, seed, report)


def build(
    root: str | os.PathLike[str] | None = None,
    names: Iterable[str] | None = None,
    seed: int = DEFAULT_SEED,
    progress: Progress | None = print,
    jobs: int | None = None,
) -> dict[str, Path]:
    """Ensure several items (all by default) under one lock.

    Args:
        root: the zoo directory; :func:`default_root` if None.
        names: items to build; every item if None.
        seed: training seed.
        progress: called with one-line status messages; silent if None.
        jobs: how many base models' families to build at once, each in a
            worker process (builds are single-threaded, so this is how a cold
            build uses more than one core); the CPU count if None, 1 for no
            workers. The bytes built do not depend on it.

    Returns:
        Each requested item's directory, by name.

    Raises:
        ZooError: a name is unknown or a build failed.
    """
    wanted = [registry.get(n) for n in (names if names is not None else sorted(registry.items()))]
    root_path = Path(root).expanduser() if root is not None else default_root()
    report = progress or _silent
    jobs = jobs if jobs is not None else (os.cpu_count() or 1)
    out: dict[str, Path] = {}
    with cache.locked(root_path, on_wait=report):
        cache.clean_partial(root_path)
        stale = [item for item in wanted if not pipeline.is_current(root_path, item, seed)]
        stale_names = {item.name for item in stale}
        for item in wanted:
            if item.name not in stale_names:
                report(f"zoo: {item.name} is up to date")
        if jobs > 1 and len({item.base for item in stale}) > 1 and parallel.can_build(stale):
            parallel.build_families(root_path, stale, seed, report, jobs)
        for item in wanted:
            out[item.name] = pipeline.ensure_locked(root_path, item, seed, report)
    return out


def merge_adapter(model: Any, adapter_dir: str | os.PathLike[str]) -> int:
    """Add every delta of a zoo adapter into a transformers model of its base, in place.

    The PEFT-free way to apply a zoo adapter, for references: PEFT 0.21 on
    transformers 5 loads the per-expert ``<base>-lora-experts`` adapters of
    Qwen2-MoE and DeepSeek-V3 only in part (it rewrites their ``gate_proj``,
    ``up_proj`` and ``down_proj`` targets to the stacked experts and drops the
    shared experts' and dense MLP's deltas); for every other zoo adapter this
    gives what ``PeftModel`` gives.

    Args:
        model: a transformers causal LM loaded from the adapter's base (not PEFT-wrapped).
        adapter_dir: the adapter's directory, e.g. from ``ensure("mixtral-lora-experts")``.

    Returns:
        How many deltas (one per module, and per expert and projection) were merged.

    Raises:
        ZooError: the adapter's base is not a zoo model, or it names a module the model lacks.
    """
    import json

    path = Path(adapter_dir)
    base = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
    return _experts.merge_adapter(model, registry.get(base).arch, path)


def manifest(name: str, root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The manifest of a built item: recipe, file hashes, library versions and metrics.

    The metrics include the transformers greedy outputs (``metrics.greedy``) of
    the item on :data:`SAMPLE_PROMPTS` and their top-1 probabilities.

    Raises:
        ZooError: the item is unknown or not built under ``root``; call :func:`ensure` first.
    """
    registry.get(name)
    root_path = Path(root).expanduser() if root is not None else default_root()
    data = cache.read_manifest(root_path / name)
    if data is None:
        raise ZooError(f"zoo item {name!r} is not built in {root_path}; call zoo.ensure({name!r}) first.")
    return data


def _silent(_: str) -> None:
    return None
