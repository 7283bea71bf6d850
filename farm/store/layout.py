"""Every key of the store, built and parsed in one place.

    farm-store.json                                   the store's marker (farm.store.base.Store.check)
    runs/<run>/manifest.json                          the job, its cells, start/end, who launched it
    runs/<run>/cells/<cell>/attempt-<n>.json          one result per attempt (written once)
    runs/<run>/logs/<cell>/attempt-<n>.log            that attempt's log tail
    runs/<run>/diff.json                              what changed against the job's previous run
    matrix/<run>.json, matrix/latest.json             the aggregated matrix (the page's JSON twin)
    history/<job>/<start>_<run>.json                  one summary per run, for history strips and diffs
    exports/<format>/<run>.<format>                   JSONL and Parquet exports
    bisect/<bisection>.json                           a bisection's transcript
    index.html                                        the page

Names from outside (run ids, job names, cell ids) go through ``safe_part``, so no input
can reach outside its prefix or merge two names into one key.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import UTC, datetime

from farm.errors import StoreError

MARKER_KEY = "farm-store.json"  # written once by check(); says "a farm store lives here"
PAGE_KEY = "index.html"
KNOWN_BUGS_KEY = "known-bugs/latest.json"  # the last `farm known-bugs check --publish`: the page shows it
RUNS_PREFIX = "runs/"
BISECT_PREFIX = "bisect"

_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_SAFE_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,119}")
_RESULT = re.compile(r"^runs/([^/]+)/cells/([^/]+)/attempt-(\d+)\.json$")
_RUN_DOCUMENT = re.compile(r"^runs/([^/]+)/(manifest\.json|cells/.+)$")


def check_key(key: str) -> str:
    """Refuse keys that are not plain ``/``-separated safe segments (the same rule on every backend)."""
    segments = key.split("/")
    if not key or any(not _SEGMENT.fullmatch(s) or s in (".", "..") for s in segments):
        raise StoreError(f"invalid store key {key!r}: keys are '/'-separated segments of letters, digits, "
                         "'.', '_', '-' (never '.' or '..'); build them with farm.store's key functions, "
                         "which sanitise names")
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix: complete segments as in keys, then a partial (possibly empty) last segment."""
    head, _, tail = prefix.rpartition("/")
    if head:
        check_key(head)
    if tail and not _SEGMENT.fullmatch(tail):
        raise StoreError(f"invalid store prefix {prefix!r}: use letters, digits, '.', '_', '-' and '/'")
    return prefix


def safe_part(value: str) -> str:
    """One key segment for any string: unchanged when already safe, else a readable form plus a hash.

    The hash keeps distinct inputs distinct (``a/b`` and ``a_b``, or two names in another
    script that both reduce to ``_``), so sanitising never merges two runs or cells.
    """
    if _SAFE_PART.fullmatch(value) and value not in (".", ".."):
        return value
    text = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")[:100] or "_"
    return f"{text}-{hashlib.sha256(value.encode()).hexdigest()[:8]}"


def result_key(run_id: str, cell_id: str, attempt: int) -> str:
    return f"runs/{safe_part(run_id)}/cells/{safe_part(cell_id)}/attempt-{attempt}.json"


def log_key(run_id: str, cell_id: str, attempt: int) -> str:
    return f"runs/{safe_part(run_id)}/logs/{safe_part(cell_id)}/attempt-{attempt}.log"


def manifest_key(run_id: str) -> str:
    return f"runs/{safe_part(run_id)}/manifest.json"


def cells_prefix(run_id: str) -> str:
    return f"runs/{safe_part(run_id)}/cells/"


def matrix_key(run_id: str | None = None) -> str:
    return f"matrix/{safe_part(run_id)}.json" if run_id else "matrix/latest.json"


def export_key(run_id: str, fmt: str) -> str:
    return f"exports/{fmt}/{safe_part(run_id)}.{fmt}"  # one format a folder: readers take folders


def diff_key(run_id: str) -> str:
    return f"runs/{safe_part(run_id)}/diff.json"


def history_prefix(job_name: str) -> str:
    return f"history/{safe_part(job_name)}/"


def summary_key(job_name: str, started_at: str, run_id: str) -> str:
    """A run's summary, named by its start (UTC) so a listing sorts runs oldest first."""
    when = datetime.fromisoformat(started_at)
    when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    return f"{history_prefix(job_name)}{stamp}_{safe_part(run_id)}.json"


def bisect_key(bisect_id: str) -> str:
    return f"{BISECT_PREFIX}/{safe_part(bisect_id)}.json"


def parse_result_key(key: str) -> tuple[str, str, int] | None:
    """(run, cell, attempt) of a result key; None for any other key."""
    match = _RESULT.match(key)
    return (match.group(1), match.group(2), int(match.group(3))) if match else None


def parse_run_document(key: str) -> tuple[str, str] | None:
    """(run, "manifest.json" or "cells/…") of a run's manifest or result key; None for any other key."""
    match = _RUN_DOCUMENT.match(key)
    return (match.group(1), match.group(2)) if match else None
