"""Documents in a store: results written once per attempt, runs read back tolerantly.

Readers never stop at one bad object: a truncated or corrupt document is named
(logged, and listed in the matrix) and the reader carries on with an earlier
attempt of the same cell, if there is one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pydantic import ValidationError

from farm.errors import KeyExists, KeyNotFound, StoreError
from farm.model.results import CellResult, RunManifest, no_cyclic_gc
from farm.store.base import Store
from farm.store.layout import cells_prefix, log_key, manifest_key, parse_result_key, result_key

log = logging.getLogger("farm.store")

def put_result(store: Store, result: CellResult) -> str:
    """Write a result create-once and return its key; its log tail goes beside it.

    If the result's attempt is taken by another document (a retried cell, or two drivers
    racing on one cell), it is written as the next free attempt and ``result.attempt`` is
    updated: nothing is overwritten. Writing the very same document again (a flush retried
    after the store went away mid-write) finds it in place and writes nothing new.
    """
    while True:
        key = result_key(result.run_id, result.cell_id, result.attempt)
        data = result.model_dump_json(indent=1).encode()
        try:
            store.put(key, data)
            break
        except KeyExists:
            if store.get(key) == data:
                break
            result.attempt += 1
    if result.log_tail:
        # This attempt is ours alone (the result above claimed it), so replacing its log is safe.
        store.put(log_key(result.run_id, result.cell_id, result.attempt), result.log_tail.encode(), overwrite=True)
    return key


@dataclass(frozen=True)
class Unreadable:
    key: str
    reason: str


@dataclass
class RunScan:
    """What a run's cells hold in the store: readable results per cell, and what could not be read."""

    attempts: dict[str, list[CellResult]] = field(default_factory=dict)  # cell id → attempts, oldest first
    unreadable: list[Unreadable] = field(default_factory=list)

    @property
    def latest(self) -> dict[str, CellResult]:
        return {cell_id: attempts[-1] for cell_id, attempts in self.attempts.items() if attempts}


def scan_run(store: Store, run_id: str, *, all_attempts: bool = False) -> RunScan:
    """Read a run's results: list once, then get in parallel.

    By default only the latest readable attempt of each cell is read (an unreadable one
    falls back to the attempt before it); ``all_attempts`` reads every attempt (exports).
    """
    with no_cyclic_gc():
        return _scan_run(store, run_id, all_attempts)


def _scan_run(store: Store, run_id: str, all_attempts: bool) -> RunScan:
    by_cell: dict[str, list[tuple[int, str]]] = {}
    for key in store.list(cells_prefix(run_id)):
        parsed = parse_result_key(key)
        if parsed:
            by_cell.setdefault(parsed[1], []).append((parsed[2], key))
    for keys in by_cell.values():
        keys.sort()
    scan = RunScan()
    wanted = [key for keys in by_cell.values() for _, key in (keys if all_attempts else keys[-1:])]
    while wanted:
        retry = []
        for key, data in store.get_many(wanted):
            parsed = parse_result_key(key)
            assert parsed is not None
            _, cell_id, attempt = parsed
            result = _parse(key, data, cell_id, attempt, scan)
            if result is not None:
                scan.attempts.setdefault(cell_id, []).append(result)
            elif not all_attempts:
                earlier = [k for a, k in by_cell[cell_id] if a < attempt]
                retry += earlier[-1:]
        wanted = retry
    for attempts in scan.attempts.values():
        attempts.sort(key=lambda r: r.attempt)
    return scan


def _parse(key: str, data: bytes | StoreError, cell_id: str, attempt: int, scan: RunScan) -> CellResult | None:
    if isinstance(data, StoreError):
        reason = str(data)
    else:
        try:
            result = CellResult.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            reason = f"not a valid result document ({len(data)} bytes): {first['msg']}{f' at {where}' if where else ''}"
        else:
            if result.cell_id == cell_id:
                result.attempt = attempt  # the key is what create-once protected
                return result
            reason = f"holds cell {result.cell_id}, not {cell_id}"
    log.warning("skipped %s: %s", key, reason)
    scan.unreadable.append(Unreadable(key, reason))
    return None


def read_results(store: Store, run_id: str) -> list[CellResult]:
    """The latest readable attempt of each cell in a run, ordered by cell id."""
    latest = scan_run(store, run_id).latest
    return [latest[cell_id] for cell_id in sorted(latest)]


def read_manifest(store: Store, run_id: str) -> RunManifest:
    key = manifest_key(run_id)
    try:
        data = store.get(key)
    except KeyNotFound:
        raise StoreError(f"no run {run_id!r} in {store.url}: {store.location(key)} does not exist in the store; "
                         "check the run id (farm run prints it) and --store") from None
    try:
        return RunManifest.model_validate_json(data)
    except ValidationError as exc:
        raise StoreError(f"{store.location(key)} is not a valid run manifest: {exc.errors()[0]['msg']}") from None


def write_manifest(store: Store, manifest: RunManifest, *, create: bool = False) -> str:
    """Write a run's manifest; ``create`` refuses to replace an existing run's."""
    key = manifest_key(manifest.run_id)
    try:
        store.put(key, manifest.model_dump_json(indent=1).encode(), overwrite=not create)
    except KeyExists:
        raise StoreError(f"run {manifest.run_id!r} already exists in {store.url}; continue it with "
                         f"`farm run --resume {manifest.run_id}`, or give another --run-id") from None
    return key
