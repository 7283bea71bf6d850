"""The `farm` command: validate | run | status | matrix | dashboard | zoo.

A FarmError becomes one line on stderr and exit code 1 (the traceback with --debug).
`farm run` exits 0 when every cell reached a verdict, pass or fail, and 3 when some
cells could not run at all (infrastructure errors).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from farm.errors import FarmError

EXIT_FARM_ERROR = 1
EXIT_CELLS_NOT_RUN = 3

EPILOG = """examples:
  farm validate jobs/smoke.yaml
  farm run jobs/smoke.yaml                       # local Ray on 127.0.0.1, results in ./farm-results
  farm run jobs/smoke.yaml --store /data/farm    # another result store
  RAY_ADDRESS=ray://head:10001 farm run jobs/smoke.yaml
  farm status smoke-20261126-101500-ab12
  farm matrix                                    # the latest run's matrix as a table
  farm dashboard --port 8700                     # the page on http://127.0.0.1:8700/, live while runs write
  farm zoo build --out ~/.cache/farm/zoo
"""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except FarmError as exc:
        if args.debug:
            raise
        print(f"farm: error: {exc}", file=sys.stderr)
        return EXIT_FARM_ERROR
    except KeyboardInterrupt:
        print("farm: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="farm",
        description="Compatibility test farm for vLLM: model × quantization × LoRA × version.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of farm errors")
    sub = parser.add_subparsers(metavar="COMMAND")

    validate = sub.add_parser("validate", help="check a job spec and print the cells it expands to")
    validate.add_argument("job", type=Path)
    validate.set_defaults(handler=_validate)

    run = sub.add_parser("run", help="run every cell of a job and write the matrix")
    run.add_argument("job", type=Path)
    run.add_argument("--store", help="results directory or URL (default ./farm-results, or $FARM_STORE)")
    run.add_argument("--address", help="Ray cluster to join (default $RAY_ADDRESS, else a local Ray on 127.0.0.1)")
    run.add_argument("--run-id", help="name the run (default <job>-<timestamp>-<random>)")
    run.add_argument("--max-parallel", type=int, help="cells at once (default: what the cluster's resources allow)")
    run.set_defaults(handler=_run)

    status = sub.add_parser("status", help="progress of a run, read from the store alone")
    status.add_argument("run_id")
    status.add_argument("--store")
    status.set_defaults(handler=_status)

    matrix = sub.add_parser("matrix", help="print a run's matrix (default: the latest)")
    matrix.add_argument("run_id", nargs="?")
    matrix.add_argument("--store")
    matrix.add_argument("--json", action="store_true", help="print matrix.json instead of the table")
    matrix.set_defaults(handler=_matrix)

    dashboard = sub.add_parser("dashboard", help="serve the matrix page on 127.0.0.1; re-render it as results arrive")
    dashboard.add_argument("--store")
    dashboard.add_argument("--port", type=int, default=8700, help="port on 127.0.0.1 (default 8700; 0: any free port)")
    dashboard.add_argument("--interval", type=float, default=2.0, help="seconds between looks at the store (default 2)")
    dashboard.set_defaults(handler=_dashboard)

    zoo = sub.add_parser("zoo", help="the tiny model zoo generated locally")
    zoo_sub = zoo.add_subparsers(metavar="ACTION")
    build = zoo_sub.add_parser("build", help="build (or verify) zoo items; cached and idempotent")
    build.add_argument("--out", type=Path, help="zoo directory (default $FARM_ZOO_DIR or ~/.cache/farm/zoo)")
    build.add_argument("--only", nargs="+", metavar="NAME", help="build only these items (and what they need)")
    build.set_defaults(handler=_zoo_build)
    listing = zoo_sub.add_parser("list", help="list zoo items")
    listing.set_defaults(handler=_zoo_list)
    return parser


def _validate(args: argparse.Namespace) -> int:
    from farm.cells import expand
    from farm.spec import load_job

    job = load_job(args.job)
    cells = expand(job)
    print(f"job {job.name}: {len(cells)} cells, probes {', '.join(job.probes)}, "
          f"{job.resources.num_cpus:g} CPU / {job.resources.num_gpus:g} GPU per cell, timeout {job.timeout_s:g}s")
    rows = [("cell id", "model", "quantization", "lora", "engine")]
    rows += [(c.id, c.model, c.quantization, c.lora, c.engine.name) for c in cells]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    return 0


def _run(args: argparse.Namespace) -> int:
    from farm.aggregate import format_table, load_matrix
    from farm.driver import run
    from farm.spec import load_job
    from farm.store import open_store

    job = load_job(args.job)
    store = open_store(args.store)
    started = time.monotonic()

    def progress(done: int, total: int, result) -> None:  # type: ignore[no-untyped-def]
        seconds = result.timings.get("total")
        took = f" {seconds:.1f}s" if seconds is not None else ""
        print(f"[{done}/{total}] {result.status.symbol} {result.status.value:<11} {result.cell.label}{took}", flush=True)

    outcome = run(job, store=store, address=args.address, run_id=args.run_id,
                  max_parallel=args.max_parallel, progress=progress)
    print()
    print(format_table(load_matrix(store, outcome.run_id)))
    print(f"\nrun {outcome.run_id} finished in {time.monotonic() - started:.0f}s")
    print(f"matrix: {store.location(outcome.matrix_key)}")
    print(f"page:   {store.location(outcome.page_key)}")
    if not outcome.all_ran:
        print("some cells could not run (infra errors): see the matrix", file=sys.stderr)
        return EXIT_CELLS_NOT_RUN
    return 0


def _status(args: argparse.Namespace) -> int:
    from farm.results import RunManifest
    from farm.store import manifest_key, open_store, read_results

    store = open_store(args.store)
    manifest = RunManifest.model_validate_json(store.get(manifest_key(args.run_id)))
    results = read_results(store, args.run_id)
    counts: dict[str, int] = {}
    for result in results:
        counts[result.status.value] = counts.get(result.status.value, 0) + 1
    state = "finished" if manifest.finished_at else "in progress (or its driver died)"
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no results yet"
    print(f"run {manifest.run_id} ({manifest.job_name}): {state}; "
          f"{len(results)}/{len(manifest.cells)} cells have a result: {summary}")
    return 0


def _matrix(args: argparse.Namespace) -> int:
    from farm.aggregate import format_table, load_matrix
    from farm.store import open_store

    matrix = load_matrix(open_store(args.store), args.run_id)
    print(matrix.model_dump_json(indent=1) if args.json else format_table(matrix))
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from farm.dashboard import serve
    from farm.store import open_store

    serve(open_store(args.store), port=args.port, interval=args.interval)
    return 0


def _zoo_build(args: argparse.Namespace) -> int:
    from farm import zoo

    started = time.monotonic()
    built = zoo.build(root=args.out, names=args.only)
    for name, path in sorted(built.items()):
        print(f"{name:<28} {path}")
    print(f"{len(built)} zoo items ready in {time.monotonic() - started:.0f}s")
    return 0


def _zoo_list(args: argparse.Namespace) -> int:
    from farm import zoo

    for name in zoo.names():
        print(f"{name:<28} {zoo.kind(name):<8} base {zoo.base_of(name)}")
    return 0
