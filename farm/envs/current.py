"""Kinds whose cells run in the driver's own environment: ``current`` and the ``fault-injection`` seam."""

from __future__ import annotations

from farm.envs.registry import EnvKind, register
from farm.model.engines import CurrentEngine, EngineSpec, FaultInjectionEngine


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
