"""Benchmark: aggregation of a run of 100 000 synthetic results into its matrix and page.

    python -m bench.aggregation                          # local store and moto, 100 000 results each
    python -m bench.aggregation --results 20000 --backends moto
    python -m bench.aggregation --tiny                   # 200 results, both backends (CI)

Writes one synthetic run (``tests/synthetic.py``: a nightly-like job, every status, root
causes with tracebacks, env facts per version) into a store, then aggregates it in a fresh
process, two ways:

- **end of ``farm run``**: the driver holds the manifest and every result it recorded (here: made in the child
  process, untimed), so ``aggregate(store, run, scan, manifest=…)`` builds the matrix, history and changes
  and the page without reading the results back; then the exports (JSONL, Parquet), timed apart.
- **from the store**: ``aggregate(store, run, exports=False)`` as ``farm dashboard`` and
  ``farm matrix`` run it: list + get + parse every result, then the same matrix and page.

Reported: wall time and the process's peak resident memory (VmHWM; the interpreter
and the farm's imports included, measured on their own too). The moto server (the store tests'
S3, ``tests/s3_servers.py``) runs on 127.0.0.1 and is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.machine import facts, load, peak_rss_mb  # noqa: E402

THREADS = 16
RUN_ID = "nightly-bench"


def synthetic_run(count: int):  # type: ignore[no-untyped-def]
    """The manifest and results of one synthetic run of about ``count`` cells (a few are 'not run': no result)."""
    from farm.model.results import RunManifest
    from tests import synthetic

    columns = 200 if count >= 20_000 else 20
    shape = synthetic.Shape(rows=max(1, count // columns), columns=columns, nights=1)
    cells = synthetic._cells(shape, hostile=False)
    assert len({cell.id for cell in cells}) == len(cells), "the synthetic cells' ids must be distinct"
    started = synthetic.START
    manifest = RunManifest(run_id=RUN_ID, job_name="nightly", job={"name": "nightly"}, cells=cells,
                           launched_by="bench@localhost", farm_version="bench", started_at=started,
                           finished_at=started)
    results = (synthetic._result(cell, index, RUN_ID, 0, 1, started, False) for index, cell in enumerate(cells))
    return manifest, [r for r in results if r is not None]


def write_run(url: str, endpoint: str | None, count: int) -> int:
    """Write the synthetic run into the store, as a driver would; returns the number of results."""
    from farm.store import manifest_key, open_store, put_result

    manifest, results = synthetic_run(count)
    store = open_store(url, s3_endpoint=endpoint)
    store.put(manifest_key(RUN_ID), manifest.model_dump_json().encode(), overwrite=True)
    with ThreadPoolExecutor(THREADS) as pool:
        for _ in pool.map(lambda result: put_result(store, result), results, chunksize=256):
            pass
    print(f"  wrote {len(results)} results ({len(manifest.cells)} cells) in {url}", file=sys.stderr, flush=True)
    return len(results)


def aggregate_child(mode: str, url: str, endpoint: str | None, count: int) -> None:
    """In a fresh process: the farm's imports, then one way of aggregating; prints JSON with the peaks.

    ``driver``: what ``farm run`` does at the end of its run: the results it recorded are in its memory
    (made here, untimed), so the matrix, page and exports need no read of the store.
    ``store``: what ``farm dashboard`` and ``farm matrix`` do: list and read every result, matrix and page.
    """
    from farm.report.aggregate import aggregate, load_matrix
    from farm.report.export import export
    from farm.store import RunScan, open_store

    imported = peak_rss_mb()
    store = open_store(url, s3_endpoint=endpoint)
    scan = manifest = None
    if mode == "driver":
        manifest, results = synthetic_run(count)
        scan = RunScan(attempts={r.cell_id: [r] for r in results})
    started = time.perf_counter()
    aggregate(store, RUN_ID, scan, exports=False, manifest=manifest)
    seconds = time.perf_counter() - started
    exports = None
    if scan is not None:
        started = time.perf_counter()
        export(store, RUN_ID, scan)
        exports = time.perf_counter() - started
    peak = peak_rss_mb()
    matrix = load_matrix(store, RUN_ID)
    page = len(store.get("index.html"))
    print(json.dumps({"seconds": seconds, "exports": exports, "peak_mb": peak, "imports_mb": imported,
                      "cells": len(matrix.cells), "results": sum(c.result_key is not None for c in matrix.cells),
                      "page_mb": page / 2**20}))


def measure(name: str, url: str, endpoint: str | None, count: int) -> list[str]:
    print(f"{name}: writing …", file=sys.stderr, flush=True)
    started = time.perf_counter()
    write_run(url, endpoint, count)
    written = time.perf_counter() - started
    print(f"  (writing the results took {written:.0f} s)", file=sys.stderr)
    lines = []
    for mode, what in (("driver", "end of `farm run`: results in memory → matrix + page"),
                       ("store", "from the store (`farm dashboard`, `farm matrix`): list + read + parse → matrix + page")):
        before = load()
        child = subprocess.run([sys.executable, "-m", "bench.aggregation", "--child", mode, url, endpoint or "",
                                str(count)], cwd=REPO, capture_output=True, text=True, check=True)
        got = json.loads(child.stdout.strip().splitlines()[-1])
        exports = f"; then exports (JSONL + Parquet) {got['exports']:.1f} s" if got["exports"] is not None else ""
        line = (f"| aggregation, {name}, {what} | {got['results']} results of {got['cells']} cells: "
                f"**{got['seconds']:.1f} s**{exports}; peak RSS {got['peak_mb']:.0f} MB ({got['imports_mb']:.0f} MB "
                f"of it imports); page {got['page_mb']:.1f} MB | {before} |")
        print(line, flush=True)
        lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=int, default=100_000)
    parser.add_argument("--backends", default="local,moto")
    parser.add_argument("--tiny", action="store_true", help="200 results (CI)")
    parser.add_argument("--child", nargs=4, metavar=("MODE", "URL", "ENDPOINT", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, url, endpoint, count = args.child
        aggregate_child(mode, url, endpoint or None, int(count))
        return 0
    count = 200 if args.tiny else args.results
    from tests.s3_servers import ACCESS_KEY, BUCKET, SECRET_KEY, SERVERS

    # The moto server's fixed test credentials, and never botocore's instance-metadata lookup.
    os.environ.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION="us-east-1",
                      AWS_EC2_METADATA_DISABLED="true")
    print(facts())
    with tempfile.TemporaryDirectory(prefix="farm-bench-agg-") as work:
        for name in args.backends.split(","):
            if name == "local":
                measure(name, str(Path(work) / "store"), None, count)
                continue
            server = SERVERS[name](Path(work) / name).start()
            try:
                measure(name, f"s3://{BUCKET}/bench", server.endpoint, count)
            finally:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
