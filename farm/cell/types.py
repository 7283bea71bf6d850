"""What a cell's engine and its probes hand each other: completions, the engine handle, the probe context.

Kept apart from ``farm.cell.engine`` (which imports vLLM) and ``farm.probes`` (which the cell
finds through ``farm.registry.PROBES``), so that both sides, and a plug-in probe, import
only these types.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from farm.model.cells import Cell
from farm.model.results import ProbeResult
from farm.model.spec import Generation


@dataclass(frozen=True)
class Completion:
    text: str
    token_ids: tuple[int, ...]
    prompt_token_ids: tuple[int, ...] = ()
    # Per generated position: the top-k candidates (token id → logprob), when asked for.
    logprobs: tuple[dict[int, float], ...] | None = None


class EngineHandle(Protocol):
    build_seconds: float

    def generate(
        self, prompts: list[str], max_tokens: int, *, lora: bool = False, logprobs: int | None = None
    ) -> list[Completion]:
        """Greedy completions, with the cell's adapter applied when ``lora`` is true."""
        ...


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
