"""An in-process stand-in for the few Ray calls the driver and scheduler make: a BENCHMARK SEAM.

It exists to measure what the farm's own driver costs per cell (expansion, the scheduling
loop, the spool and the store, progress, aggregation), without Ray's per-cell actor process,
which ``bench.scale --ray`` measures on its own. A cell's "actor" is a plain object in this
process: ``where`` and ``run`` execute when they are called (``CellActor.run`` is replaced by
``execute_cell``, without the log capture and faulthandler that need a process of their own),
and their futures are ready at once. Only for engines that never crash the process:
``kind: fault-injection`` with ``fault: pass``.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
from pathlib import Path
from typing import Any

NODE_ID = "inprocess-node-0000"
_ids = itertools.count()


class Future:
    __slots__ = ("id", "value")

    def __init__(self, value: Any) -> None:
        self.id = next(_ids)
        self.value = value

    def __hash__(self) -> int:
        return self.id


class _Method:
    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def remote(self, *args: Any) -> Future:
        return Future(self.fn(*args))


class _Actor:
    def __init__(self) -> None:
        self.where = _Method(self._where)
        self.run = _Method(self._run)

    def _where(self) -> str:
        return json.dumps({"node_id": NODE_ID, "pid": os.getpid(), "hostname": socket.gethostname()})

    def _run(self, cell_json: str, settings_json: str, run_id: str, attempt: int, log_path: str,
             timeout_s: float, memory_limit: int | None, gpu_share: float | None = None) -> str:
        from farm.cell.execute import CellSettings, execute_cell
        from farm.model.cells import Cell

        settings = CellSettings.model_validate_json(settings_json).model_copy(update={"gpu_share": gpu_share})
        result = execute_cell(Cell.model_validate_json(cell_json), settings, run_id, attempt, Path(log_path))
        result.node_id = NODE_ID
        return result.model_dump_json()


class _ActorClass:
    def options(self, **_options: Any) -> _ActorClass:
        return self

    def remote(self) -> _Actor:
        return _Actor()


class _Context:
    gcs_address = "inprocess:0"

    def get_node_id(self) -> str:
        return NODE_ID


class InProcessRay:
    """``ray`` as the driver uses it, for ``cpus`` logical CPUs on one node."""

    def __init__(self, cpus: int) -> None:
        self.cpus = cpus

    def remote(self, thing: Any) -> Any:
        from farm.cell.actor import CellActor

        if thing is CellActor:
            return _ActorClass()
        return _Method(thing)  # read_log, prepare_task: never reached with fault: pass

    def nodes(self) -> list[dict[str, Any]]:
        return [{"Alive": True, "NodeID": NODE_ID, "NodeManagerAddress": "127.0.0.1",
                 "Resources": {"CPU": float(self.cpus), "memory": 16 * 2**30}, "Labels": {}}]

    def wait(self, futures: list[Future], num_returns: int = 1, timeout: float | None = None) -> tuple[list, list]:
        return futures[:num_returns], futures[num_returns:]

    def get(self, future: Future) -> Any:
        return future.value

    def kill(self, actor: Any, no_restart: bool = True) -> None:
        pass

    def get_runtime_context(self) -> _Context:
        return _Context()

    def is_initialized(self) -> bool:
        return True
