"""Every result of a run as Parquet and JSONL, for people who query with DuckDB or pandas.

    exports/parquet/<run_id>.parquet   one flat row per cell attempt, with a fixed schema, so the
                                       files of all runs query as one table (or one folder):
                                       SELECT model, status FROM 'exports/parquet/*.parquet' WHERE latest
    exports/jsonl/<run_id>.jsonl       the complete result documents, one a line, each with "latest" added

``latest`` marks the attempt the matrix uses for its cell. Parquet needs pyarrow
(``pip install 'farm[export]'``); without it only the JSONL is written, and a warning says so.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

from farm.model.platforms import platform_of
from farm.model.results import no_cyclic_gc
from farm.model.verdicts import failure_kind, root_cause
from farm.store import RunScan, Store, export_key, result_key

log = logging.getLogger("farm.report.export")

_STRINGS = ("run_id", "cell_id", "key", "status", "model", "quantization", "lora", "engine", "model_source",
            "lora_source", "vllm_quantization", "vllm", "vllm_commit", "vllm_dist", "ray", "torch", "transformers",
            "python", "platform", "platform_name", "device",
            "hostname", "cuda", "compute_capability", "cpu", "kind", "root_cause", "error_type", "error_message", "error_frame", "error_signature",
            "error_probe")


def rows(scan: RunScan) -> list[dict[str, Any]]:
    """One flat row per attempt, latest attempt of each cell marked."""
    out = []
    for cell_id in sorted(scan.attempts):
        attempts = scan.attempts[cell_id]
        for result in attempts:
            error = result.error
            kind = failure_kind(result.status, error)
            out.append({
                "run_id": result.run_id,
                "cell_id": result.cell_id,
                "attempt": result.attempt,
                "latest": result is attempts[-1],
                "key": result_key(result.run_id, result.cell_id, result.attempt),
                "status": result.status.value,
                **result.cell.axes(),
                "model_source": result.cell.model_source,
                "lora_source": result.cell.lora_source,
                "vllm_quantization": result.cell.vllm_quantization,
                **result.env.model_dump(include={"vllm", "vllm_commit", "vllm_dist", "ray", "torch", "transformers",
                                                 "python", "platform", "device", "hostname", "cuda", "compute_capability",
                                                 "cpu", "cpu_features"}),
                "platform_name": platform_of(result.env),  # what the matrix's platform level says (farm.model.platforms)
                "kind": kind.value if kind else None,
                "root_cause": root_cause(error) if kind else None,
                "error_type": error.type if error else None,
                "error_message": error.message if error else None,
                "error_frame": error.frame if error else None,
                "error_signature": error.signature if error else None,
                "error_probe": error.probe if error else None,
                "failed_probes": [p.name for p in result.probes if p.failed],
                "skipped_probes": [p.name for p in result.probes if p.skipped],
                "probes": {p.name: p.passed for p in result.probes},
                "timings": dict(result.timings),
                "peak_rss_mb": result.peak_rss_mb,
                "started_at": result.started_at,
                "finished_at": result.finished_at,
                "schema_version": result.schema_version,
            })
    return out


def to_jsonl(scan: RunScan) -> bytes:
    lines = []
    for cell_id in sorted(scan.attempts):
        attempts = scan.attempts[cell_id]
        for result in attempts:
            document = result.model_dump(mode="json")
            document["latest"] = result is attempts[-1]
            lines.append(json.dumps(document, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode() if lines else b""


def to_parquet(scan: RunScan) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows(scan), schema=parquet_schema())
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def parquet_schema() -> Any:
    """Fixed column types: a run whose cells all passed still has string error columns (all null)."""
    import pyarrow as pa

    timestamp = pa.timestamp("us", tz="UTC")
    fields = [pa.field(name, pa.string()) for name in _STRINGS]
    fields += [
        pa.field("attempt", pa.int32()),
        pa.field("latest", pa.bool_()),
        pa.field("failed_probes", pa.list_(pa.string())),
        pa.field("skipped_probes", pa.list_(pa.string())),
        pa.field("cpu_features", pa.list_(pa.string())),
        pa.field("probes", pa.map_(pa.string(), pa.bool_())),
        pa.field("timings", pa.map_(pa.string(), pa.float64())),
        pa.field("peak_rss_mb", pa.float64()),
        pa.field("started_at", timestamp),
        pa.field("finished_at", timestamp),
        pa.field("schema_version", pa.int32()),
    ]
    return pa.schema(fields)


def export(store: Store, run_id: str, scan: RunScan) -> list[str]:
    """Write the run's JSONL and (with pyarrow) Parquet exports; return their keys."""
    with no_cyclic_gc():
        return _export(store, run_id, scan)


def _export(store: Store, run_id: str, scan: RunScan) -> list[str]:
    keys = [export_key(run_id, "jsonl")]
    store.put(keys[0], to_jsonl(scan), overwrite=True)
    try:
        data = to_parquet(scan)
    except ImportError:
        log.warning("pyarrow is not installed: skipped the Parquet export of %s (pip install 'farm[export]')", run_id)
        return keys
    keys.append(export_key(run_id, "parquet"))
    store.put(keys[1], data, overwrite=True)
    return keys


def read_parquet_rows(data: bytes) -> list[dict[str, Any]]:
    """The rows of an exported Parquet file (for tests and quick looks)."""
    import pyarrow.parquet as pq

    return list(pq.read_table(io.BytesIO(data)).to_pylist())

