"""What the scheduling loop keeps per cell and per attempt, and what it tells the progress display.

``Work`` is a cell that owes an attempt; ``Attempt`` one attempt in flight, in one ``Phase``
(see ``farm.runner.scheduler`` for what each waits on); ``Event`` what the display hears.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from farm.envs import PreparedEnv
from farm.model.cells import Cell
from farm.model.results import CellResult, CellStatus
from farm.runner.placement import CellRequest
from farm.runner.retry import Known


class Phase(str, Enum):
    """Where an attempt is; each phase waits on one Ray future."""

    PLACING = "placing"
    PREPARING = "preparing"
    STARTING = "starting"
    RUNNING = "running"
    READING = "reading"


class EventKind(str, Enum):
    PLAN = "plan"  # the cells to run and how many at once
    STARTED = "started"  # an attempt's actor started on a node
    RETRY = "retry"  # an attempt ended and another follows
    DONE = "done"  # a cell has its final result
    TICK = "tick"  # the loop woke (the display's clock moves)


@dataclass
class Event:
    """What the loop tells the progress display: the ``plan``, an attempt ``started`` on a node, a ``retry``, a cell ``done``."""

    kind: EventKind
    cell: Cell | None = None
    attempt: int = 0
    result: CellResult | None = None
    reason: str | None = None
    node_id: str | None = None
    total: int = 0  # plan: cells to run
    parallel: int = 0  # plan: cells at once


EventFn = Callable[[Event], None]


@dataclass
class Work:
    """A cell that owes an attempt: its attempts so far in this run, and why the next one runs."""

    cell: Cell
    history: list[CellResult] = field(default_factory=list)
    reason: str | None = None
    infra_outcomes: int = 0  # in this session (a resume starts a fresh budget)
    avoid: set[str] = field(default_factory=set)  # nodes where the cell met infra outcomes
    prefer: str | None = None  # the node the next attempt should run on if Ray can (after a cold-start timeout)
    known: Known = field(default_factory=Known)  # what earlier runs of the job say about the cell (farm.runner.retry)
    whole_gpu: bool = False  # it ran out of memory in its share of a GPU: the next attempts take a whole one

    @property
    def number(self) -> int:
        return max((a.attempt for a in self.history), default=0) + 1


@dataclass
class Attempt:
    work: Work
    request: CellRequest
    log_path: Path
    phase: Phase | None
    future: Any
    deadline: float
    group: Any = None
    actor: Any = None
    node_id: str | None = None
    hostname: str | None = None
    started_at: Any = None
    started: float | None = None  # monotonic, when the actor ran: the cell's clock
    dead: CellStatus | None = None  # while reading: crash or timeout
    ray_error: str = ""
    memory_monitor: bool = False
    placed: float = field(default_factory=time.monotonic)  # when its resources were asked for
    prepared: PreparedEnv | None = None
    prepare_s: float | None = None  # from asking for the node to the env ready (or failed): placement, lock, build
    cold: bool = False  # the first build of its engine on its node in this run

    @property
    def holds_resources(self) -> bool:
        return self.phase in (Phase.PLACING, Phase.PREPARING, Phase.STARTING, Phase.RUNNING)

    def release(self, ray: Any) -> None:
        """Kill its actor and give back its placement group."""
        self.kill(ray)
        if self.group is not None:
            from ray.util.placement_group import remove_placement_group

            with contextlib.suppress(Exception):  # already gone with its node
                remove_placement_group(self.group)
            self.group = None

    def kill(self, ray: Any) -> None:
        if self.actor is not None:
            with contextlib.suppress(Exception):  # already dead
                ray.kill(self.actor, no_restart=True)
            self.actor = None


def group_node(group: Any) -> str | None:
    """The node that holds bundle 0 of a ready placement group."""
    if group is None:
        return None
    from ray.util.placement_group import placement_group_table

    with contextlib.suppress(Exception):
        return placement_group_table(group)["bundles_to_node_id"].get(0)
    return None


def warm_nodes(history: Iterable[CellResult]) -> set[tuple[str, str]]:
    """(engine, node id) for every attempt whose cell ran on its node: a resumed run's warm nodes."""
    return {(a.cell.engine.name, a.node_id) for a in history if a.node_id and a.status.is_verdict()}
