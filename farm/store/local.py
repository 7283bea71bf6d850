"""The local directory backend: the embedded default."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from farm.errors import KeyExists, KeyNotFound, StoreError
from farm.store.base import READ_WORKERS, Store, register_backend
from farm.store.layout import check_key, check_prefix


class LocalStore(Store):
    """A directory. A create-once write is a complete, fsynced temp file hard-linked to its key.

    ``link(2)`` fails if the name exists and is atomic, so a reader sees the whole file or
    none, and of two racing writers exactly one wins. Temp files start with ``.`` and are
    never listed.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)
        # Directories already checked (no symlink out of the root): resolving every component of every key
        # cost a third of aggregating 100 000 results (bench/RESULTS.md); now each is checked once.
        self._dirs: dict[str, Path] = {}

    def _path(self, key: str) -> Path:
        parent, _, name = check_key(key).rpartition("/")
        return self._inside(self._dir(parent) / name, key)

    def _dir(self, relative: str) -> Path:
        """The directory ``relative`` under the root, each of its components checked once per store object."""
        if not relative:
            return self.root
        known = self._dirs.get(relative)
        if known is None:
            above, _, name = relative.rpartition("/")
            known = self._inside(self._dir(above) / name, relative)
            self._dirs[relative] = known
        return known

    def _inside(self, path: Path, key: str) -> Path:
        """``path`` itself, or where its symlink leads if that stays inside the root."""
        if not path.is_symlink():  # one lstat: its parents were checked already
            return path
        # check_key already forbids '..'; this catches a symlink inside the store pointing out of it.
        resolved = path.resolve()
        if self.root not in resolved.parents:
            raise StoreError(f"key {key!r} escapes the store root {self.root}; "
                             "keys come from farm.store's key functions")
        return resolved

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> None:
        path = self._path(key)
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            if overwrite:
                os.replace(tmp, path)
            else:
                os.link(tmp, path)
        except FileExistsError:
            raise KeyExists(f"{self.location(key)} exists; results are written once") from None
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP) and not overwrite:
                raise StoreError(f"cannot write {path}: the filesystem refuses hard links, which create-once "
                                 "writes need; use a directory on a local filesystem (ext4, xfs, btrfs, apfs)") from exc
            raise StoreError(f"cannot write {path}: {exc.strerror}; "
                             "check the directory's permissions and free space") from exc
        finally:
            if tmp and os.path.exists(tmp):
                os.unlink(tmp)

    def get(self, key: str) -> bytes:
        parent, _, name = check_key(key).rpartition("/")
        path = self._dir(parent) / name
        try:
            # O_NOFOLLOW: a plain file is read without the lstat that _inside would spend on it (100 000 of them
            # in an aggregation); a symlink fails with ELOOP and takes the checked way.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                return self._read(path)  # the same error again, named the same way as every other read's
            return self._read(self._inside(path, key))
        with os.fdopen(fd, "rb") as file:
            try:
                return file.read()
            except IsADirectoryError:  # open(2) of a directory succeeds; its read fails
                raise KeyNotFound(f"{path} is a directory, not a key of the store") from None
            except OSError as exc:
                raise StoreError(f"cannot read {path}: {exc.strerror}") from exc

    def _read(self, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise KeyNotFound(f"{path} does not exist in the store") from None
        except IsADirectoryError:
            raise KeyNotFound(f"{path} is a directory, not a key of the store") from None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from exc

    def get_many(self, keys: Iterable[str], workers: int = READ_WORKERS) -> Iterator[tuple[str, bytes | StoreError]]:
        # A local read is a few syscalls: threads only add overhead here (measured: 4x slower with 16).
        for key in keys:
            try:
                yield key, self.get(key)
            except StoreError as exc:
                yield key, exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        # Walk only the deepest directory the prefix names: a run's cells, not the whole store.
        head = check_prefix(prefix).rpartition("/")[0]
        start = self.root / head if head else self.root
        if not start.is_dir():
            return []
        keys = []
        skip = len(str(self.root)) + 1
        for dirpath, dirs, files in os.walk(start):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            # The key of a file is its path under the root (string slicing: a Path per file costs seconds at 100 000).
            base = dirpath[skip:].replace(os.sep, "/") + "/" if len(dirpath) >= skip else ""
            for name in files:
                if name.startswith("."):
                    continue  # temp files of writes in progress
                key = base + name
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the store directory {self.root}: {exc.strerror}; "
                             "choose another --store or fix its permissions") from exc
        super().check()

    def location(self, key: str) -> str:
        return str(self.root / key)


@register_backend("file")
def _open_local(url: str, **_options: Any) -> Store:
    return LocalStore(url.removeprefix("file://") if url.startswith("file://") else url)
