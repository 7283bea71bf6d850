"""Kinds whose cells run in the driver's own environment: ``current`` and the ``fault-injection`` seam."""

from __future__ import annotations

from typing import Literal

from farm.envs.registry import EnvKind, register
from farm.spec import EngineSpec


class CurrentEngine(EngineSpec):
    """The vLLM installed where the driver (and every node's default worker) runs."""

    kind: Literal["current"] = "current"


class FaultInjectionEngine(EngineSpec):
    """A TEST SEAM, not a vLLM: see ``farm.fault_injection``; tests and benchmarks about the farm use it."""

    kind: Literal["fault-injection"] = "fault-injection"


@register
class Current(EnvKind):
    name = "current"
    spec = CurrentEngine
    in_driver_env = True

    def describe(self, engine: EngineSpec) -> str:
        return "the driver's environment"


@register
class FaultInjection(EnvKind):
    name = "fault-injection"
    spec = FaultInjectionEngine
    in_driver_env = True

    def describe(self, engine: EngineSpec) -> str:
        return "fault-injection test seam (no vLLM)"
