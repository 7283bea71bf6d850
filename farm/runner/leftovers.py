"""What a local Ray of an earlier run left behind when its driver was killed (SIGKILL, OOM killer).

A driver that dies that way never calls ``ray.shutdown``: its Ray's agents and a worker stay alive for about
three minutes, holding memory and CPUs the next run on a 2-core machine needs. So a driver that starts a
local Ray records it (``$FARM_HOME/local-ray/<pid>.json``: its own pid and start time, the Ray session's
directory), removes the record when it ends, and before starting a local Ray kills what records of dead
drivers name. A process belongs to that Ray when it holds a file open inside the session's directory (its
logs, its sockets): by its session, never by a process name, since another user's or another test's Ray
runs the same programs. Ray's agents rename themselves (``ray::DashboardAgent``), so their command lines say
nothing; their open files do.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

from farm.settings import farm_home

log = logging.getLogger("farm.runner.leftovers")


def records_dir() -> Path:
    return farm_home() / "local-ray"


def _started(pid: int) -> str | None:
    """A process's start time (clock ticks since boot, /proc/PID/stat field 22): with the pid, who it is."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def record(session_dir: str) -> Path:
    """Note this driver's local Ray; the note goes when the driver ends normally."""
    directory = records_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{os.getpid()}.json"
    path.write_text(json.dumps({"driver_pid": os.getpid(), "driver_started": _started(os.getpid()),
                                "session_dir": session_dir}))
    atexit.register(lambda: path.unlink(missing_ok=True))
    return path


def clean_up() -> list[int]:
    """Kill what the local Rays of dead drivers left; the pids killed."""
    killed: list[int] = []
    for path in sorted(records_dir().glob("*.json")) if records_dir().is_dir() else []:
        try:
            noted: dict[str, Any] = json.loads(path.read_text())
            pid, session = int(noted["driver_pid"]), str(noted["session_dir"])
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if _started(pid) is not None and _started(pid) == noted.get("driver_started"):
            continue  # its driver is alive: a run in progress
        left = _holding(session)
        for leftover in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(leftover, signal.SIGKILL)
        if left:
            log.warning("killed %d process(es) a local Ray of an earlier run left when its driver died (session %s)",
                        len(left), session)
        killed += left
        path.unlink(missing_ok=True)
    return killed


def _holding(session_dir: str) -> list[int]:
    """The processes with a file open inside ``session_dir``."""
    prefix = session_dir.rstrip("/") + "/"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if any(os.readlink(fd).startswith(prefix) for fd in (entry / "fd").iterdir()):
                found.append(int(entry.name))
        except OSError:  # gone, or another user's
            continue
    return found
