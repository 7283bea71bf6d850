"""Benchmark: aggregation of a run of 100 000 synthetic results into its matrix and page.

    python -m bench.aggregation                          # local store and moto, 100 000 results each
    python -m bench.aggregation --results 20000 --backends moto
    python -m bench.aggregation --tiny                   # 200 results, both backends (CI)

Writes one synthetic run (``tests/synthetic.py``: a nightly-like job, every status, root
causes with tracebacks, env facts per version) into a store, then runs ``aggregate()``
on it in a fresh process, as the driver does at the end of a run: list + get + parse every
result, the matrix, history and changes, the exports (JSONL, Parquet), the page. Reported:
its wall time and that process's peak resident memory (``ru_maxrss``; the interpreter and
the farm's imports included, measured on their own too). The moto server (the store tests'
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

from bench.machine import facts, load  # noqa: E402

THREADS = 16


def write_run(url: str, endpoint: str | None, count: int) -> str:
    """One synthetic run of about ``count`` results (a few cells of the shape are 'not run': no document)."""
    from farm.results import RunManifest
    from farm.store import manifest_key, open_store, put_result
    from tests import synthetic

    columns = 200 if count >= 20_000 else 20
    shape = synthetic.Shape(rows=max(1, count // columns), columns=columns, nights=1)
    cells = synthetic._cells(shape, hostile=False)
    store = open_store(url, s3_endpoint=endpoint)
    run_id = "nightly-bench"
    started = synthetic.START
    manifest = RunManifest(run_id=run_id, job_name="nightly", job={"name": "nightly"}, cells=cells,
                           launched_by="bench@localhost", farm_version="bench", started_at=started,
                           finished_at=started)
    store.put(manifest_key(run_id), manifest.model_dump_json().encode(), overwrite=True)

    def one(item: tuple[int, object]) -> int:
        index, cell = item
        result = synthetic._result(cell, index, run_id, 0, 1, started, False)  # type: ignore[arg-type]
        if result is None:
            return 0
        put_result(store, result)
        return 1

    with ThreadPoolExecutor(THREADS) as pool:
        written = sum(pool.map(one, enumerate(cells), chunksize=256))
    print(f"  wrote {written} results ({len(cells)} cells) in {url}", file=sys.stderr, flush=True)
    return run_id


def aggregate_child(url: str, endpoint: str | None, run_id: str) -> None:
    """In a fresh process: the farm's imports, then aggregate(); prints JSON with both peaks."""
    import resource

    from farm.aggregate import aggregate, load_matrix
    from farm.store import open_store

    imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    store = open_store(url, s3_endpoint=endpoint)
    started = time.perf_counter()
    aggregate(store, run_id)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    matrix = load_matrix(store, run_id)
    page = len(store.get("index.html"))
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "imports_mb": imported, "cells": len(matrix.cells),
                      "page_mb": page / 2**20}))


def measure(name: str, url: str, endpoint: str | None, count: int) -> str:
    print(f"{name}: writing …", file=sys.stderr, flush=True)
    started = time.perf_counter()
    run_id = write_run(url, endpoint, count)
    written = time.perf_counter() - started
    before = load()
    child = subprocess.run([sys.executable, "-m", "bench.aggregation", "--child", url, endpoint or "", run_id],
                           cwd=REPO, capture_output=True, text=True, check=True)
    got = json.loads(child.stdout.strip().splitlines()[-1])
    line = (f"| aggregation, {name} | {got['cells']} results → matrix + exports + page: {got['seconds']:.1f} s, "
            f"peak RSS {got['peak_mb']:.0f} MB ({got['imports_mb']:.0f} MB of it imports); page "
            f"{got['page_mb']:.1f} MB | {before} |")
    print(f"  (writing the results took {written:.0f} s)", file=sys.stderr)
    print(line, flush=True)
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=int, default=100_000)
    parser.add_argument("--backends", default="local,moto")
    parser.add_argument("--tiny", action="store_true", help="200 results (CI)")
    parser.add_argument("--child", nargs=3, metavar=("URL", "ENDPOINT", "RUN_ID"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        url, endpoint, run_id = args.child
        aggregate_child(url, endpoint or None, run_id)
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
