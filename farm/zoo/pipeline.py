"""Recipes, staleness and the build of one item with its dependencies."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import shutil
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from farm.errors import ZooError
from farm.zoo import cache, corpus, registry, tokenizer
from farm.zoo.registry import BuildContext, Item, Progress

# Bump when a change to the zoo's code changes what it writes: every item
# built by an older format is then stale and rebuilt on the next ensure().
ZOO_FORMAT = 4
_VERSIONED = ("torch", "transformers", "peft", "tokenizers", "safetensors")


def recipe(item: Item, seed: int) -> dict[str, Any]:
    """Everything the bytes of ``item`` depend on (short of library versions).

    A variant's recipe contains its base's, so changing a base rebuilds its
    variants too. Library versions are recorded in the manifest but left out
    of the recipe: engines in different environments share one zoo, and a
    different torch must not make them rebuild it back and forth.
    """
    r: dict[str, Any] = {
        "zoo_format": ZOO_FORMAT,
        "item": item.name,
        "kind": item.kind,
        "seed": seed,
        "corpus": corpus.digest(),
        "tokenizer": tokenizer.RECIPE,
        "arch": item.arch.recipe(),
    }
    variant = item.variant
    if variant is not None:
        r["variant"] = {"suffix": variant.suffix, "params": dict(variant.params)}
        # A variant built from another one (a dequantized reference from its
        # quantized checkpoint) changes whenever that one does.
        chain = []
        while variant.source is not None:
            variant = registry.variant(variant.source)
            chain.append({"suffix": variant.suffix, "params": dict(variant.params)})
        if chain:
            r["sources"] = chain
    return r


def recipe_hash(item: Item, seed: int) -> str:
    blob = json.dumps(recipe(item, seed), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def is_current(root: Path, item: Item, seed: int) -> bool:
    """Whether ``item`` and everything it depends on are built from today's recipe."""
    manifest = cache.read_manifest(root / item.name)
    if manifest is None or manifest.get("recipe_hash") != recipe_hash(item, seed):
        return False
    return all(is_current(root, registry.get(d), seed) for d in item.deps)


def ensure_locked(root: Path, item: Item, seed: int, progress: Progress) -> Path:
    """Build ``item`` (and its dependencies) unless current. Caller holds the lock."""
    for dep in item.deps:
        ensure_locked(root, registry.get(dep), seed, progress)
    final = root / item.name
    if is_current(root, item, seed):
        return final
    progress(f"zoo: building {item.name} ({item.kind}, seed {seed})")
    started = time.monotonic()
    staged = cache.staging_dir(root, item.name)
    try:
        metrics = _run_builder(root, item, seed, staged, progress)
        seconds = round(time.monotonic() - started, 1)
        cache.write_manifest(staged, _manifest(item, seed, staged, metrics, seconds))
        cache.install(staged, final)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    summary = f", mean top-1 {metrics['mean_top1']:.3f}" if "mean_top1" in metrics else ""
    progress(f"zoo: built {item.name} in {seconds:.1f}s{summary}")
    return final


def _run_builder(root: Path, item: Item, seed: int, out: Path, progress: Progress) -> dict[str, Any]:
    from farm.zoo import train

    ctx = BuildContext(
        arch=item.arch,
        out_dir=out,
        base_dir=root / item.base if item.variant else None,
        source_dir=root / item.source if item.source else None,
        seed=seed,
        params=dict(item.variant.params) if item.variant else dataclasses.asdict(item.arch.train),
        progress=progress,
    )
    builder = item.variant.builder if item.variant else train.train_base
    try:
        return builder(ctx)
    except ZooError:
        raise
    except ImportError as exc:
        raise ZooError(
            f"building zoo item {item.name!r} needs {exc.name or exc}: install the farm's "
            "zoo dependencies (torch, transformers, peft, tokenizers, safetensors) in this env."
        ) from exc
    except Exception as exc:
        raise ZooError(
            f"building zoo item {item.name!r} failed: {type(exc).__name__}: {exc}. Nothing was "
            "installed; rerun with --debug for the traceback, and if the libraries changed, "
            "check the arch's config against them."
        ) from exc


def _manifest(item: Item, seed: int, staged: Path, metrics: dict[str, Any], seconds: float) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for dist in _VERSIONED:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "zoo_format": ZOO_FORMAT,
        "name": item.name,
        "kind": item.kind,
        "base": item.base,
        "seed": seed,
        "recipe_hash": recipe_hash(item, seed),
        "recipe": recipe(item, seed),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": seconds,
        "versions": versions,
        "machine": platform.machine(),
        "files": cache.file_digests(staged),
        "metrics": metrics,
    }
