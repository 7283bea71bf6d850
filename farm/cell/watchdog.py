"""The memory watchdog of one cell: kills the cell's processes once together they hold more than its limit.

It runs as its own small process beside the cell's actor (``python -I farm/cell/watchdog.py PID
LIMIT_BYTES LOG``), not as a thread in it: a runaway allocation inside C code can hold the
GIL that a thread would need to notice it. It imports nothing from farm (only psutil), so it
starts in a few dozen milliseconds, and it exits by itself when the actor is gone.

Past the limit it writes one line into the cell's log (the driver reads it back and
reports a ``crash`` with "killed: exceeded the cell's memory limit"), freezes the actor,
kills its descendants, then the actor, with SIGKILL: nothing a runaway engine does can
delay it. The limit is what the cell reserved in Ray (``resources.memory_gb``), so a
cell can never take the memory of its neighbours on the node, or the node itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

import psutil

# Kept in step with farm.runner.outcomes.MEMORY_MARKER (tests/test_outcomes.py checks it); not imported,
# so that this process loads no more than psutil.
MEMORY_MARKER = "farm: killed: exceeded the cell's memory limit"
# An allocator can add a few hundred MB in this time; the limit is enforced to that precision.
POLL_S = 0.05


def resident(processes: list[psutil.Process]) -> int:
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):  # exited between listing and reading
            total += process.memory_info().rss
    return total


def watch(pid: int, limit: int, log_path: str) -> int:
    me = os.getpid()
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return 0
    while os.getppid() == pid:  # reparented: the actor is gone, and so is the cell
        try:
            tree = [root, *(p for p in root.children(recursive=True) if p.pid != me)]
        except psutil.NoSuchProcess:
            return 0
        rss = resident(tree)
        if rss > limit:
            with open(log_path, "a") as log:
                log.write(f"\n{MEMORY_MARKER} ({limit / 2**30:.2f} GiB): {rss / 2**30:.2f} GiB resident in "
                          f"the cell's {len(tree)} process(es); SIGKILL\n")
            kill(tree)
            return 0
        time.sleep(POLL_S)
    return 0


def kill(tree: list[psutil.Process]) -> None:
    """Freeze the root so it starts nothing new, kill its descendants, then the root."""
    root, *descendants = tree
    for process, sig in [(root, signal.SIGSTOP), *((p, signal.SIGKILL) for p in descendants), (root, signal.SIGKILL)]:
        with contextlib.suppress(psutil.Error):  # already gone
            process.send_signal(sig)


if __name__ == "__main__":
    sys.exit(watch(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
