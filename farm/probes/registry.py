"""The probe registry. Built-in probes register exactly as an outside plug-in would:

    from farm.probes.registry import ProbeContext, register

    @register("my-probe", applies=lambda cell: cell.lora != "none")
    def my_probe(ctx: ProbeContext) -> ProbeResult: ...

A probe gets the built engine and returns a ``ProbeResult`` (or a ``Deferred`` that
returns one after the engine is freed); raising is allowed and becomes the cell's
failure with the probe's name attached.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from farm.errors import FarmError, did_you_mean
from farm.results import ProbeResult

if TYPE_CHECKING:
    from farm.cells import Cell
    from farm.engine import EngineHandle
    from farm.spec import Generation


@dataclass
class ProbeContext:
    cell: Cell
    engine: EngineHandle
    generation: Generation
    engine_args: dict[str, Any] = field(default_factory=dict)
    # Outputs one probe computed that another may reuse (e.g. the base greedy output).
    shared: dict[str, Any] = field(default_factory=dict)


# A probe may return a callable instead of a result: it runs after the engine is freed
# (a transformers reference, a second engine), so two models never share memory.
Deferred = Callable[[], ProbeResult]
ProbeFn = Callable[[ProbeContext], ProbeResult | Deferred]


@dataclass(frozen=True)
class Probe:
    name: str
    run: ProbeFn
    applies: Callable[[Cell], bool]
    doc: str


_PROBES: dict[str, Probe] = {}


def register(name: str, applies: Callable[[Cell], bool] | None = None) -> Callable[[ProbeFn], ProbeFn]:
    def decorate(fn: ProbeFn) -> ProbeFn:
        if name in _PROBES:
            raise FarmError(f"probe {name!r} is registered twice; pick another name for the new one")
        _PROBES[name] = Probe(name, fn, applies or (lambda cell: True), (fn.__doc__ or "").strip())
        return fn

    return decorate


def names() -> list[str]:
    _load_builtins()
    return sorted(_PROBES)


def get(name: str) -> Probe:
    _load_builtins()
    if name not in _PROBES:
        raise FarmError(f"unknown probe {name!r}.{did_you_mean(name, _PROBES)}")
    return _PROBES[name]


BUILTIN_PROBES = ("load", "generate", "lora", "determinism", "reference", "lora_reference", "lora_unused",
                  "base_after_lora", "perf")


def _load_builtins() -> None:
    # Importing a probe's module registers it; each built-in is one module, like a plug-in.
    for module in BUILTIN_PROBES:
        importlib.import_module(f"farm.probes.{module}")
