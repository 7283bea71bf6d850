"""The zoo's on-disk cache: manifests, a root-wide lock and atomic installs.

Several processes on one node (Ray actors, parallel test workers) may ask for
the same item at once. They serialise on an ``flock`` of ``<root>/.zoo.lock``,
and an item only ever appears under its final name by ``rename`` of a fully
written directory, so a reader never sees half an item: if ``<root>/<name>/``
has a manifest, it is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from farm.filelock import exclusive

MANIFEST = "farm-zoo.json"
LOCK_FILE = ".zoo.lock"
_BUILD_PREFIX = ".build-"
_TRASH_PREFIX = ".trash-"


def read_manifest(item_dir: Path) -> dict[str, Any] | None:
    """The manifest of an installed item, or None if absent or unreadable."""
    try:
        data = json.loads((item_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_manifest(item_dir: Path, manifest: dict[str, Any]) -> None:
    (item_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def file_digests(item_dir: Path) -> dict[str, str]:
    """sha256 of every file of an item but its manifest, by relative path."""
    out = {}
    for f in sorted(item_dir.rglob("*")):
        if f.is_file() and f.name != MANIFEST:
            out[f.relative_to(item_dir).as_posix()] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def locked(root: Path, on_wait: Callable[[str], Any] | None = None) -> AbstractContextManager[None]:
    """Hold the root's exclusive build lock; released on exit or process death."""
    return exclusive(root / LOCK_FILE, f"zoo: waiting for another process building in {root}", on_wait)


def clean_partial(root: Path) -> None:
    """Remove build and trash dirs left by a crashed build. Call only under the lock."""
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith((_BUILD_PREFIX, _TRASH_PREFIX)):
            shutil.rmtree(p, ignore_errors=True)


def staging_dir(root: Path, name: str) -> Path:
    """A fresh directory in ``root`` (same filesystem, so the install is a rename)."""
    path = root / f"{_BUILD_PREFIX}{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def install(staged: Path, final: Path) -> None:
    """Move a fully written item into place, replacing a stale one."""
    for p in [staged, *staged.rglob("*")]:
        # safetensors writes 0600; another user's job on the node may read the zoo.
        p.chmod(0o755 if p.is_dir() else 0o644)
    trash = None
    if final.exists():
        trash = final.with_name(f"{_TRASH_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}")
        final.rename(trash)
    staged.rename(final)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
