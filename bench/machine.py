"""The machine's facts and its load, printed next to every benchmark number (they are noisy on a shared machine)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def load() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` prints them."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def facts() -> str:
    """CPU model and count, memory, Python, and the load right now: one line."""
    model = "?"
    memory = "?"
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                     "?")
        meminfo = Path("/proc/meminfo").read_text().split()
        memory = f"{int(meminfo[meminfo.index('MemTotal:') + 1]) / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return (f"{os.cpu_count()} CPUs ({model}), {memory} RAM, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}; {load()}")


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB: VmHWM, which starts afresh at exec.

    ``ru_maxrss`` does not: Linux keeps it across execve, so a child started by a parent
    holding a gigabyte reports the parent's gigabyte (seen in bench.aggregation).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
