"""One exclusive lock file per build (a zoo root, an engine env): flock, so a dead holder releases it."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def exclusive(path: Path, waiting: str, on_wait: Callable[[str], Any] | None = None) -> Iterator[None]:
    """Hold ``path``'s lock until exit (or process death); say ``waiting`` through ``on_wait`` if another holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait:
                on_wait(waiting)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
