"""The local directory backend: the embedded default."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
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

    No key leaves the root, at every read and write: each directory of a key is opened relative to the one
    above it without following symlinks (``O_NOFOLLOW``), and a symlink met on the way is followed only if it
    leads inside the root. Nothing of it is cached: a directory swapped for a symlink out of the store while
    a ``farm dashboard`` serves it is refused at the next request. Files are created with the process's
    umask (readable by the group where it says so), not the 0600 of a temp file.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        """The file ``key`` names, its directories checked (for the path-based operations: exists)."""
        parent, _, name = check_key(key).rpartition("/")
        directory = self.root / parent if parent else self.root
        resolved = directory.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise self._escapes(key)
        return self._inside(resolved / name, key)

    def _escapes(self, key: str) -> StoreError:
        return StoreError(f"key {key!r} escapes the store root {self.root} through a symlink; "
                          "keys come from farm.store's key functions")

    def _inside(self, path: Path, key: str) -> Path:
        """``path`` itself, or where its symlink leads if that stays inside the root."""
        if not path.is_symlink():
            return path
        resolved = path.resolve()
        if self.root not in resolved.parents:
            raise self._escapes(key)
        return resolved

    @contextlib.contextmanager
    def _directory(self, relative: str, key: str, *, create: bool = False) -> Iterator[tuple[int, Path]]:
        """An fd of the root's directory ``relative`` and its path, opened one component at a time without
        following a symlink (one met is followed only into the root); ``create``: make missing directories."""
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        here = self.root  # the path of fd, for following a symlink (no /proc outside Linux)
        try:
            for name in relative.split("/") if relative else []:
                try:
                    below = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, dir_fd=fd)
                    below = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    below, here = self._follow(here / name, key)
                else:
                    here = here / name
                os.close(fd)
                fd = below
            yield fd, here
        finally:
            os.close(fd)

    def _follow(self, link: Path, key: str) -> tuple[int, Path]:
        """The directory a symlink leads to, opened, and its path; only if it is inside the root."""
        resolved = link.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise self._escapes(key)
        return os.open(resolved, os.O_RDONLY | os.O_DIRECTORY), resolved

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> None:
        parent, _, name = check_key(key).rpartition("/")
        path = self.root / key
        try:
            with self._directory(parent, key, create=True) as (directory, _):
                self._write(directory, name, data, overwrite, key)
        except FileExistsError:
            raise KeyExists(f"{self.location(key)} exists; results are written once") from None
        except StoreError:
            raise
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP) and not overwrite:
                raise StoreError(f"cannot write {path}: the filesystem refuses hard links, which create-once "
                                 "writes need; use a directory on a local filesystem (ext4, xfs, btrfs, apfs)") from exc
            raise StoreError(f"cannot write {path}: {exc.strerror}; "
                             "check the directory's permissions and free space") from exc

    def _write(self, directory: int, name: str, data: bytes, overwrite: bool, key: str) -> None:
        """A complete, fsynced temp file in ``directory``, then linked (create-once) or renamed to ``name``."""
        tmp = f".{name}.{secrets.token_hex(6)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666, dir_fd=directory)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            if not overwrite:
                os.link(tmp, name, src_dir_fd=directory, dst_dir_fd=directory, follow_symlinks=False)
                return
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISLNK(os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode):
                    raise self._escapes(key)  # renaming over a symlink is safe, but someone planted it: say so
            os.replace(tmp, name, src_dir_fd=directory, dst_dir_fd=directory)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=directory)

    def get(self, key: str) -> bytes:
        parent, _, name = check_key(key).rpartition("/")
        path = self.root / key
        try:
            with self._directory(parent, key) as (directory, here):
                try:
                    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=directory)
                except OSError as exc:
                    if exc.errno != errno.ELOOP:
                        raise
                    return self._read(self._inside(here / name, key))
        except (FileNotFoundError, NotADirectoryError):
            raise KeyNotFound(f"{path} does not exist in the store") from None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from exc
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
        if start.resolve() != self.root and self.root not in start.resolve().parents:
            raise self._escapes(prefix)
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
