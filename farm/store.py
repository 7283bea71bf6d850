"""The result store: one small interface, backends chosen by URL.

Layout (keys are relative to the store's root):

    runs/<run_id>/manifest.json                       job spec, cells, start/end, who launched it
    runs/<run_id>/cells/<cell_id>/attempt-<n>.json    one result per cell attempt, written once
    runs/<run_id>/logs/<cell_id>/attempt-<n>.log      the cell's engine log tail
    matrix/<run_id>.json, matrix/latest.json          aggregated matrices
    index.html                                        the page

Results are written create-if-absent: a retried cell writes a new attempt, and
nothing is silently overwritten. Only manifests, matrices and the page are
replaced in place.
"""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
from abc import ABC, abstractmethod
from pathlib import Path

from farm.errors import StoreError
from farm.results import CellResult

DEFAULT_STORE = "farm-results"


class AlreadyExists(StoreError):
    """A create-only write found the key taken."""


class Store(ABC):
    url: str

    @abstractmethod
    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> None:
        """Write ``data`` at ``key``; without ``overwrite``, raise AlreadyExists if the key is taken."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """Read a key; raise StoreError naming the key when it is missing."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """All keys under ``prefix``, sorted."""

    def exists(self, key: str) -> bool:
        try:
            self.get(key)
        except StoreError:
            return False
        return True

    def location(self, key: str) -> str:
        """Where a person finds ``key`` (a path or a URL)."""
        return f"{self.url.rstrip('/')}/{key}"


class LocalStore(Store):
    """A directory. Create-only writes are an exclusive hard link of a complete temp file."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise StoreError(f"key {key!r} escapes the store root {self.root}; keys come from safe_part()")
        return path

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                if overwrite:
                    os.replace(tmp, path)
                else:
                    try:
                        os.link(tmp, path)  # atomic and exclusive: fails if the key exists
                    except FileExistsError:
                        raise AlreadyExists(f"{self.location(key)} exists; results are written once") from None
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except StoreError:
            raise
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc.strerror}; check the directory's permissions and space") from exc

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise StoreError(f"{path} does not exist in the store") from None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from exc

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix
        start = base if base.is_dir() else base.parent
        if not start.exists():
            return []
        keys = []
        for dirpath, _dirs, files in os.walk(start):
            for name in files:
                if name.startswith("."):
                    continue  # temp files of writes in progress
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def location(self, key: str) -> str:
        return str(self.root / key)


def open_store(url: str | None = None) -> Store:
    """A store from a URL: a path or file:// → local directory."""
    url = url or os.environ.get("FARM_STORE") or DEFAULT_STORE
    if url.startswith("file://"):
        return LocalStore(url.removeprefix("file://"))
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise StoreError(f"store URL scheme {scheme!r} is not supported; use a directory path or file://PATH")
    return LocalStore(url)


def safe_part(value: str) -> str:
    """One path segment that cannot escape its prefix, whatever the input (slashes, '..', unicode)."""
    text = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "_"
    return text[:120]


def result_key(run_id: str, cell_id: str, attempt: int) -> str:
    return f"runs/{safe_part(run_id)}/cells/{safe_part(cell_id)}/attempt-{attempt}.json"


def log_key(run_id: str, cell_id: str, attempt: int) -> str:
    return f"runs/{safe_part(run_id)}/logs/{safe_part(cell_id)}/attempt-{attempt}.log"


def manifest_key(run_id: str) -> str:
    return f"runs/{safe_part(run_id)}/manifest.json"


def put_result(store: Store, result: CellResult) -> str:
    key = result_key(result.run_id, result.cell_id, result.attempt)
    store.put(key, result.model_dump_json(indent=1).encode())
    if result.log_tail:
        store.put(log_key(result.run_id, result.cell_id, result.attempt), result.log_tail.encode(), overwrite=True)
    return key


def read_results(store: Store, run_id: str) -> list[CellResult]:
    """The latest attempt of each cell in a run."""
    latest: dict[str, tuple[int, str]] = {}
    for key in store.list(f"runs/{safe_part(run_id)}/cells/"):
        match = re.search(r"/cells/([^/]+)/attempt-(\d+)\.json$", key)
        if match:
            cell_id, attempt = match.group(1), int(match.group(2))
            if cell_id not in latest or attempt > latest[cell_id][0]:
                latest[cell_id] = (attempt, key)
    return [CellResult.model_validate_json(store.get(key)) for _, key in sorted(latest.values(), key=lambda v: v[1])]
