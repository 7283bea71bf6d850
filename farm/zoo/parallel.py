"""Building the families of several base models at once, in worker processes.

Every build is single-threaded (``train.deterministic``: thread count changes
float rounding, hence bytes), so a machine's other cores would idle through a
cold build of the whole zoo. Items of different base models share nothing, so
each base model's family (the base and what derives from it) is built in its
own worker process, a few at a time; the bytes are the same as a sequential
build's.

Workers are spawned, not forked (a fork of a process that has run torch's
thread pools may hang), so they import the modules that registered the items;
an item registered in ``__main__`` cannot be re-registered there, and
:func:`can_build` says so.
"""

from __future__ import annotations

import importlib
import multiprocessing
import queue
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from farm.zoo.registry import Item, Progress, registering_modules

_progress_queue: Any = None


def can_build(items: Sequence[Item]) -> bool:
    """Whether a spawned worker can re-create the registrations of ``items``."""
    return "__main__" not in registering_modules(items)


def build_families(root: Path, items: Sequence[Item], seed: int, report: Progress, jobs: int) -> None:
    """Build ``items`` (and their dependencies), one worker per base model, ``jobs`` at a time.

    The caller holds the root's lock for the workers: they never take it.

    Raises:
        ZooError: a build failed (the first failure; the other families finish first).
    """
    families: dict[str, list[str]] = {}
    for item in items:
        families.setdefault(item.base, []).append(item.name)
    modules = sorted(registering_modules(items))
    ctx = multiprocessing.get_context("spawn")
    messages = ctx.Queue()
    with ProcessPoolExecutor(
        max_workers=min(jobs, len(families)), mp_context=ctx, initializer=_init_worker, initargs=(messages, modules)
    ) as pool:
        # Submitted in name order; the pool starts them in that order.
        futures = [pool.submit(_build_family, str(root), names, seed) for names in families.values()]
        pending = set(futures)
        while pending:
            _forward(messages, report)
            _, pending = wait(pending, timeout=0.2)
    # After the workers exited, so their queues are flushed.
    _forward(messages, report)
    for future in futures:
        error = future.exception()
        if error is not None:
            raise error


def _forward(messages: Any, report: Progress) -> None:
    while True:
        try:
            report(messages.get_nowait())
        except queue.Empty:
            return


def _init_worker(messages: Any, modules: list[str]) -> None:
    import torch

    global _progress_queue
    _progress_queue = messages
    # One core per worker: builds train single-threaded anyway, and the
    # packing in between must not compete with the other workers.
    torch.set_num_threads(1)
    for name in modules:
        importlib.import_module(name)


def _build_family(root: str, names: list[str], seed: int) -> None:
    from farm.zoo import pipeline, registry

    for name in names:
        pipeline.ensure_locked(Path(root), registry.get(name), seed, _progress_queue.put)
