"""Applying an engine's ``patches`` to the vLLM installed in its env: how a fix is tested before it ships.

Each diff is applied with ``patch -p1`` from the env's ``site-packages`` (a diff made in vLLM's
repository, ``a/vllm/…`` and ``b/vllm/…``, applies as it is). A dry run first: a patch that does not
apply changes nothing and is the engine's ``env_error``, with patch's own words. The files a patch
touches are copied before it writes them: in a uv-built env they are hard links into the shared
cache, which every other env of the node reads.

What was applied is written to the env (``farm-patches.json``) and shown with its notes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from farm.errors import EnvBuildError
from farm.model.engines import Patch

PATCHES_FILE = "farm-patches.json"
_TARGET = re.compile(r"^\+\+\+ (?:b/)?(\S+)", re.MULTILINE)


def site_packages(env_dir: Path) -> Path:
    found = sorted(env_dir.glob("lib/python*/site-packages"))
    if not found:
        raise EnvBuildError(f"the env {env_dir} has no lib/python*/site-packages to apply patches in")
    return found[0]


def apply(patches: list[Patch], env_dir: Path, log: Path) -> list[dict[str, str]]:
    """Apply ``patches`` in order; returns what was applied (written to ``farm-patches.json``)."""
    site = site_packages(env_dir)
    applied = []
    for patch in patches:
        command = ["patch", "-p1", "--batch", "--forward", "--no-backup-if-mismatch", "-d", str(site)]
        _run([*command, "--dry-run"], patch, log)
        for target in _TARGET.findall(patch.diff):
            _break_link(site / target)
        _run(command, patch, log)
        applied.append({"path": patch.path, "sha256": hashlib.sha256(patch.diff.encode()).hexdigest()[:16]})
    (env_dir / PATCHES_FILE).write_text(json.dumps(applied, indent=1) + "\n")
    return applied


def notes(env_dir: Path) -> list[str]:
    try:
        applied = json.loads((env_dir / PATCHES_FILE).read_text())
    except (OSError, ValueError):
        return []
    return [f"patched with {p['path']} (sha256 {p['sha256']})" for p in applied]


def _run(command: list[str], patch: Patch, log: Path) -> None:
    try:
        proc = subprocess.run(command, input=patch.diff, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise EnvBuildError("`patch` is not installed on this node (Debian: patch); engines with patches need it") from None
    with open(log, "a") as out:
        out.write(f"$ {' '.join(command)} < {patch.path}\n{proc.stdout}{proc.stderr}")
    if proc.returncode:
        said = " | ".join(line for line in (proc.stdout + proc.stderr).splitlines() if line.strip())[-400:]
        raise EnvBuildError(f"patch {patch.path} does not apply to the installed vLLM: {said}")


def _break_link(path: Path) -> None:
    """Give ``path`` its own inode, so that patching it leaves the uv cache (and every env linked to it) alone."""
    if path.is_file() and path.stat().st_nlink > 1:
        copy = path.with_name(path.name + ".farm-tmp")
        shutil.copy2(path, copy)
        os.replace(copy, path)
