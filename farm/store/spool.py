"""Nothing lost when the store is unreachable: a local spool in front of the store.

Every document a run writes goes to the spool first (one fsynced file each), and a
background thread moves it to the store. While the store is unreachable, documents
wait in the spool and the thread retries every few seconds; the driver's scheduling
never waits on the store. At the end of a run the writer flushes once more; what is
still spooled is reported with its directory, and the next ``farm run --resume``
flushes it before anything else. A flush is idempotent (see ``put_result``), so a
document whose upload was cut off mid-way is never written twice.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from pathlib import Path

from farm.errors import StoreError
from farm.model.results import CellResult, RunManifest
from farm.store.base import Store
from farm.store.documents import put_result
from farm.store.layout import manifest_key

log = logging.getLogger("farm.store")

RESULT_PREFIX = "result-"
MANIFEST = "manifest.json"
STORE_URL = "store-url"  # which store the spooled documents belong to


class Spool:
    """Documents of one run waiting for the store, in a local directory."""

    def __init__(self, directory: str | Path, store_url: str) -> None:
        self.dir = Path(directory)
        self.store_url = store_url
        bound = self.dir / STORE_URL
        if bound.exists() and bound.read_text().strip() != store_url and self.pending():
            raise StoreError(f"{self.dir} holds documents spooled for the store {bound.read_text().strip()}, "
                             f"not {store_url}; resume with --store {bound.read_text().strip()} to flush them there")

    def add_result(self, result: CellResult) -> Path:
        name = f"{RESULT_PREFIX}{result.cell_id}-attempt-{result.attempt}-{time.time_ns()}.json"
        return self._write(name, result.model_dump_json(indent=1).encode())

    def add_manifest(self, manifest: RunManifest) -> Path:
        return self._write(MANIFEST, manifest.model_dump_json(indent=1).encode())

    def pending(self) -> list[Path]:
        """Spooled documents in flush order: results first, the manifest last, so a finished
        manifest in the store means every result is there too."""
        if not self.dir.is_dir():
            return []
        results = sorted(p for p in self.dir.iterdir() if p.name.startswith(RESULT_PREFIX) and p.suffix == ".json")
        manifest = self.dir / MANIFEST
        return results + ([manifest] if manifest.exists() else [])

    def results(self) -> list[CellResult]:
        return [CellResult.model_validate_json(p.read_bytes()) for p in self.pending() if p.name != MANIFEST]

    def _write(self, name: str, data: bytes) -> Path:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / STORE_URL).write_text(self.store_url + "\n")
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".", suffix=".tmp")
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.dir / name)
        except OSError as exc:
            raise StoreError(f"cannot spool {name} to {self.dir}: {exc.strerror}; free space there or set "
                             "FARM_HOME to a writable directory") from exc
        return self.dir / name

    def cleanup(self) -> None:
        """Remove the directory once nothing is waiting in it."""
        if self.dir.is_dir() and not self.pending():
            for leftover in self.dir.iterdir():
                leftover.unlink()
            self.dir.rmdir()


class ResultWriter:
    """Spool first, then the store, from a background thread (see the module docstring)."""

    def __init__(self, store: Store, spool: Spool, *, retry_s: float = 5.0) -> None:
        self.store = store
        self.spool = spool
        self.retry_s = retry_s
        self.error: StoreError | None = None  # why the store is unreachable, while it is
        self.flushed = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ResultWriter:
        self._thread = threading.Thread(target=self._loop, name="farm-result-writer", daemon=True)
        self._thread.start()
        return self

    def add_result(self, result: CellResult) -> None:
        self.spool.add_result(result)
        self._wake.set()

    def add_manifest(self, manifest: RunManifest) -> None:
        self.spool.add_manifest(manifest)
        self._wake.set()

    def flush(self) -> bool:
        """Move every spooled document to the store; False (and ``error`` set) if the store is unreachable."""
        with self._lock:
            moved = 0
            for path in self.spool.pending():
                try:
                    self._upload(path)
                except StoreError as exc:
                    if self.error is None:
                        log.warning("store %s unreachable (%s); results wait in %s and are flushed when it is back",
                                    self.store.url, exc, self.spool.dir)
                    self.error = exc
                    return False
                path.unlink()
                moved += 1
            self.flushed += moved
            if self.error is not None:
                log.warning("store %s is reachable again: flushed %d spooled document(s)", self.store.url, moved)
                self.error = None
            return True

    def close(self) -> list[Path]:
        """Stop the thread, flush once more, and return what is still spooled (empty when all is stored)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self.flush()
        pending = self.spool.pending()
        if not pending:
            self.spool.cleanup()
        return pending

    def _upload(self, path: Path) -> None:
        data = path.read_bytes()
        if path.name == MANIFEST:
            manifest = RunManifest.model_validate_json(data)
            self.store.put(manifest_key(manifest.run_id), data, overwrite=True)
        else:
            put_result(self.store, CellResult.model_validate_json(data))

    def _loop(self) -> None:
        while not self._stop.is_set():
            # Woken by each new document; while the store is down, also retried every retry_s.
            self._wake.wait(timeout=self.retry_s if self.error is not None else None)
            self._wake.clear()
            if not self._stop.is_set():
                self.flush()
