"""Store throughput and aggregation time, per backend, on loopback.

    python bench/store_throughput.py                  # local, moto, seaweedfs; ~5 minutes on 2 cores
    python bench/store_throughput.py --ops 500 --results 2000 --backends local

For each backend (a local directory; moto's S3 server; SeaweedFS, both started here on
127.0.0.1 and stopped at the end) it measures:

- put / get of result-sized objects (a real CellResult document, about 3 KB), one client
  thread and 16 threads (``get_many``, as aggregation reads);
- list of a run's keys;
- ``aggregate()`` of a run of N synthetic results (default 10 000): list + parallel get +
  parse, matrix, page, exports; the results are loaded in parallel first (not timed).

Not a test: numbers depend on the machine; run it on a quiet one.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.s3_servers import ACCESS_KEY, BUCKET, SECRET_KEY, SERVERS  # noqa: E402

THREADS = 16


def synthetic(run_id: str, count: int):  # type: ignore[no-untyped-def]
    """A manifest and ``count`` results shaped like a real run's (80 % pass, failures in 20 groups)."""
    from farm.model.cells import Cell
    from farm.model.results import CellResult, CellStatus, EnvFacts, ErrorInfo, ProbeResult, RunManifest, utcnow
    from farm.model.spec import Engine

    engines = [Engine(name=f"v0.{i}", kind="current") for i in range(5)]
    cells = []
    for i in range(count):
        model, rest = divmod(i, 100)
        cells.append(Cell(model=f"model-{model}", quantization=f"q{rest % 4}", model_source=f"org/model-{model}",
                          lora=f"lora-{rest // 4 % 5}" if rest // 4 % 5 else "none",
                          lora_source=f"org/lora-{rest // 4 % 5}" if rest // 4 % 5 else None,
                          engine=engines[rest // 20 % 5]))
    now = utcnow()
    manifest = RunManifest(run_id=run_id, job_name="bench", job={"name": "bench"}, cells=cells,
                           launched_by="bench@localhost", farm_version="bench", started_at=now)
    results = []
    for i, cell in enumerate(cells):
        status = CellStatus.PASS if i % 10 < 8 else CellStatus.FAIL if i % 10 == 8 else CellStatus.CRASH
        error = None if status is CellStatus.PASS else ErrorInfo(
            type="AttributeError", message=f"'SharedFusedMoE' object has no attribute 'w{i % 20}_weight'",
            frame=f"vllm/lora/layers/fused_moe.py:{40 + i % 20}", signature=f"sig{i % 20:02d}",
            traceback_tail="Traceback (most recent call last):\n  ...\n" * 8)
        probes = [ProbeResult(name=name, passed=status is CellStatus.PASS, outputs=[f"output {i} of {name}"] * 3)
                  for name in ("load", "generate", "lora")]
        results.append(CellResult(run_id=run_id, cell_id=cell.id, cell=cell, status=status, probes=probes, error=error,
                                  env=EnvFacts(vllm="0.32.0", torch="2.13.0", python="3.11.7", device="cpu"),
                                  timings={"engine_build": 2.5, "generate": 0.4, "total": 3.1}, peak_rss_mb=2048.0,
                                  started_at=now, finished_at=now, log_tail="INFO engine log line\n" * 40))
    return manifest, results


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s"


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def bench_backend(name: str, url: str, endpoint: str | None, ops: int, results: int) -> dict[str, str]:
    from farm.report.aggregate import aggregate, build_matrix
    from farm.report.export import export
    from farm.report.render import render_page
    from farm.store import open_store, put_result, read_manifest, scan_run, write_manifest

    store = open_store(url, s3_endpoint=endpoint)
    store.check()
    _, sample = synthetic("sample", 1)
    data = sample[0].model_dump_json(indent=1).encode()
    keys = [f"bench/ops/{i:06d}.json" for i in range(ops)]
    row = {"backend": name, "object": f"{len(data) / 1024:.1f} KB"}

    half = ops // 2
    row["put 1 thread"] = rate(half, timed(lambda: [store.put(k, data) for k in keys[:half]]))
    with ThreadPoolExecutor(THREADS) as pool:
        row[f"put {THREADS} threads"] = rate(ops - half, timed(lambda: list(pool.map(lambda k: store.put(k, data),
                                                                                    keys[half:]))))
    row["get 1 thread"] = rate(half, timed(lambda: [store.get(k) for k in keys[:half]]))
    row[f"get_many ({THREADS} threads on S3)"] = rate(ops, timed(lambda: list(store.get_many(keys, THREADS))))
    listing = timed(lambda: store.list("bench/ops/"))
    row["list"] = f"{rate(ops, listing)} keys ({ops} in {listing * 1000:.0f} ms)"

    run_id = f"bench-{results}"
    manifest, documents = synthetic(run_id, results)
    write_manifest(store, manifest, create=True)
    with ThreadPoolExecutor(THREADS) as pool:
        load = timed(lambda: list(pool.map(lambda r: put_result(store, r), documents)))
    row[f"load {results} results"] = f"{load:.2f} s"
    # The whole of aggregate(), then its parts, each on its own (they share nothing but the store).
    row["aggregate"] = f"{timed(lambda: aggregate(store, run_id)):.2f} s"
    scan = None

    def do_scan() -> None:
        nonlocal scan
        scan = scan_run(store, run_id, all_attempts=True)

    row["· scan: list + get + parse"] = f"{timed(do_scan):.2f} s"
    assert scan is not None and len(scan.attempts) == results, "every result read back"
    matrix = None

    def do_matrix() -> None:
        nonlocal matrix
        matrix = build_matrix(read_manifest(store, run_id), list(scan.latest.values()), scan.unreadable)

    row["· matrix"] = f"{timed(do_matrix):.2f} s"
    row["· page"] = f"{timed(lambda: render_page(matrix)):.2f} s"
    row["· exports"] = f"{timed(lambda: export(store, run_id, scan)):.2f} s"
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=2000, help="objects for put/get/list (default 2000)")
    parser.add_argument("--results", type=int, default=10_000, help="synthetic results to aggregate (default 10000)")
    parser.add_argument("--backends", default="local,moto,seaweedfs")
    args = parser.parse_args()
    # The servers' fixed test credentials, and never botocore's instance-metadata lookup.
    os.environ.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION="us-east-1",
                      AWS_EC2_METADATA_DISABLED="true")
    rows = []
    with tempfile.TemporaryDirectory(prefix="farm-bench-") as work:
        for name in args.backends.split(","):
            server = None
            if name == "local":
                url, endpoint = str(Path(work) / "local-store"), None
            else:
                server = SERVERS[name](Path(work) / name).start()
                url, endpoint = f"s3://{BUCKET}/bench", server.endpoint
            try:
                print(f"{name} …", file=sys.stderr, flush=True)
                rows.append(bench_backend(name, url, endpoint, args.ops, args.results))
            finally:
                if server is not None:
                    server.stop()
    print("| " + " | ".join(["", *(row["backend"] for row in rows)]) + " |")
    print("|---|" + "---:|" * len(rows))
    for metric in [m for m in rows[0] if m != "backend"]:
        print("| " + " | ".join([metric, *(row.get(metric, "") for row in rows)]) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
