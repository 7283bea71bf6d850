"""How a probe registers. Built-in probes register exactly as an outside plug-in would:

    from farm.probes.registry import ProbeContext, register

    @register("my-probe", applies=lambda cell: cell.lora != "none")
    def my_probe(ctx: ProbeContext) -> ProbeResult: ...

A probe gets the built engine and returns a ``ProbeResult`` (or a ``Deferred`` that
returns one after the engine is freed); raising is allowed and becomes the cell's
failure with the probe's name attached. Probes live in ``farm.registry.PROBES``; a
plug-in package may instead declare its probe under the ``farm.probes`` entry-point
group, pointing at a ``Probe``.
"""

from __future__ import annotations

from collections.abc import Callable

from farm.cell.types import Deferred, Probe, ProbeContext, ProbeFn
from farm.model.cells import Cell
from farm.registry import PROBES

__all__ = ["Deferred", "Probe", "ProbeContext", "register"]


def register(name: str, applies: Callable[[Cell], bool] | None = None) -> Callable[[ProbeFn], ProbeFn]:
    def decorate(fn: ProbeFn) -> ProbeFn:
        PROBES.register(name, Probe(name, fn, applies or (lambda cell: True), (fn.__doc__ or "").strip()))
        return fn

    return decorate
