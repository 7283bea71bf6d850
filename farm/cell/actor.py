"""A cell's Ray actor: one process per attempt, and what surrounds the engine in it.

The actor lives for exactly one attempt and is killed when it is done. Around the engine:

- **Its log.** stdout and stderr, C level included, go to a file on the actor's node
  (``$FARM_HOME/cell-logs/<run>/<cell>.attempt-N.log``), so a process that dies leaves its last
  words behind. The driver reads a dead actor's log back through ``read_log``, a task pinned
  to that node.
- **faulthandler**, so SIGSEGV, SIGABRT, SIGBUS, SIGFPE and SIGILL print "Fatal Python
  error: …" and every thread's stack into that log (``farm.runner.outcomes`` turns it into the crash's
  signal and frame), and so that just before the cell's timeout every thread's stack is
  dumped there too: a timeout says where the engine hung.
- **The memory watchdog** (``farm.cell.watchdog``), a separate small process that kills the
  cell's process tree past ``resources.memory_gb``.

``where`` answers as soon as the process runs: the driver learns the node and pid, and that
the actor was placed and started, before the cell's own clock starts.
"""

from __future__ import annotations

import contextlib
import faulthandler
import fcntl
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from farm.cell.credentials import drop_store_credentials
from farm.cell.execute import CellSettings, capture_output, execute_cell, log_tail, setup_failure
from farm.model.cells import Cell
from farm.settings import ENV_IN_USE_VARIABLE


def _hold_env() -> object | None:
    """A shared lock on the env's ``.in-use`` file for this process's life: the env cache's budget never evicts
    an env a cell runs in (``farm.envs.cache.enforce_budget``). The lock goes with the process."""
    path = os.environ.get(ENV_IN_USE_VARIABLE)
    if not path:
        return None
    try:
        marker = open(path, "a+")  # noqa: SIM115  (held open on purpose: the lock lives as long as the file)
        fcntl.flock(marker, fcntl.LOCK_SH)
    except OSError:
        return None
    return marker


# Enough of a log to find the fatal signal's or the timeout's stack dump (every thread's) at its end.
LOG_READ_BYTES = 200_000


class CellActor:
    """Lives for exactly one attempt of one cell, in its own worker process."""

    def where(self) -> str:
        import ray

        self._in_use = _hold_env()

        return json.dumps({"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                           "hostname": socket.gethostname()})

    def run(self, cell_json: str, settings_json: str, run_id: str, attempt: int, log_path: str,
            timeout_s: float, memory_limit: int | None, gpu_share: float | None = None) -> str:
        import ray

        path = Path(log_path)
        cell = Cell.model_validate_json(cell_json)
        settings = CellSettings.model_validate_json(settings_json).model_copy(update={"gpu_share": gpu_share})
        dropped = drop_store_credentials(settings.keep_env)  # before anything of the cell runs (farm.cell.credentials)
        try:
            with capture_output(path), _fault_handler(timeout_s), _memory_watchdog(memory_limit, path):
                if dropped:
                    print(f"farm: the cell's process runs without the store credentials {', '.join(dropped)} "
                          "(a job keeps one with keep_env)", file=sys.stderr, flush=True)
                result = execute_cell(cell, settings, run_id, attempt, path)
        except Exception as exc:  # not the engine's (execute_cell keeps those): the set-up around it
            result = setup_failure(cell, run_id, attempt, exc)
        result.node_id = ray.get_runtime_context().get_node_id()
        result.log_tail = log_tail(path)
        return result.model_dump_json()


@contextlib.contextmanager
def _fault_handler(timeout_s: float) -> Iterator[None]:
    """Fatal signals, and the cell's timeout, print every thread's stack to the log (fd 2 is the log here)."""
    faulthandler.enable(file=sys.stderr, all_threads=True)
    # Just before the driver kills the actor at the timeout, so the log shows where the engine hung.
    faulthandler.dump_traceback_later(timeout_s, exit=False, file=sys.stderr)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


@contextlib.contextmanager
def _memory_watchdog(limit: int | None, log_path: Path) -> Iterator[None]:
    if not limit:
        yield
        return
    script = Path(__file__).with_name("watchdog.py")
    # -I: the script's directory (farm/) does not shadow anything, and the user's site is not read.
    watcher = subprocess.Popen([sys.executable, "-I", str(script), str(os.getpid()), str(limit), str(log_path)],
                               stdin=subprocess.DEVNULL)
    try:
        yield
    finally:
        watcher.kill()
        watcher.wait()


def read_log(log_path: str, limit: int = LOG_READ_BYTES) -> str:
    """The end of a cell's log on this node; the body of the task pinned to a dead actor's node."""
    return log_tail(Path(log_path), limit)
