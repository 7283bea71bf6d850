"""The result store: one small interface, backends chosen by URL.

    open_store("farm-results")                  # a local directory (also file://PATH)
    open_store("s3://bucket/prefix")            # AWS S3 or any S3-compatible server
    open_store("s3://bucket/prefix", s3_endpoint="http://127.0.0.1:8333")

Layout (keys are relative to the store's root or the S3 prefix):

    farm-store.json                                   marker, written once by Store.check()
    runs/<run_id>/manifest.json                       job spec, cells, who launched it, start/end
    runs/<run_id>/cells/<cell_id>/attempt-<n>.json    one result per cell attempt, written once
    runs/<run_id>/logs/<cell_id>/attempt-<n>.log      the cell's engine log tail
    matrix/<run_id>.json, matrix/latest.json          aggregated matrices
    exports/parquet/<run_id>.parquet                  every result of a run, for DuckDB / pandas
    exports/jsonl/<run_id>.jsonl                      the same as complete documents, one a line
    index.html                                        the page

Results are written create-if-absent: a retried cell writes a new attempt, and
nothing is silently overwritten. Only manifests, matrices, exports and the page are
replaced in place. Backends register by URL scheme (``register_backend``); the
contract they share is in ``farm.store.base``.
"""

from farm.errors import KeyExists, KeyNotFound, StoreError, StoreUnavailable
from farm.settings import DEFAULT_STORE
from farm.store import local as _local  # noqa: F401  (registers file://)
from farm.store import s3 as _s3  # noqa: F401  (registers s3://; boto3 is imported only when used)
from farm.store.base import BACKENDS, Store, backends, open_store, register_backend
from farm.store.documents import RunScan, Unreadable, put_result, read_manifest, read_results, scan_run, write_manifest
from farm.store.layout import (
    MARKER_KEY,
    PAGE_KEY,
    cells_prefix,
    check_key,
    export_key,
    log_key,
    manifest_key,
    matrix_key,
    result_key,
    safe_part,
)
from farm.store.local import LocalStore
from farm.store.s3 import S3Store
from farm.store.spool import ResultWriter, Spool

AlreadyExists = KeyExists  # the skeleton's name, kept for callers written against it

__all__ = [
    "BACKENDS",
    "DEFAULT_STORE",
    "MARKER_KEY",
    "PAGE_KEY",
    "AlreadyExists",
    "KeyExists",
    "KeyNotFound",
    "LocalStore",
    "ResultWriter",
    "RunScan",
    "S3Store",
    "Spool",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "Unreadable",
    "backends",
    "cells_prefix",
    "check_key",
    "export_key",
    "log_key",
    "manifest_key",
    "matrix_key",
    "open_store",
    "put_result",
    "read_manifest",
    "read_results",
    "register_backend",
    "result_key",
    "safe_part",
    "scan_run",
    "write_manifest",
]
