"""The `farm` command: validate | run | status | matrix | env | zoo.

A FarmError becomes one line on stderr and exit code 1 (the traceback with --debug).
`farm run` exits 0 when every cell reached a verdict, pass or fail, and 3 when some
cells could not run at all (infrastructure errors, or an engine env that could not be built).
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
  farm env build jobs/versions.yaml              # build the job's vLLM envs on this node ahead of a run
  farm env list                                  # the envs cached on this node
  farm env clean --failed                        # forget failed builds, so the next run retries them
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
    run.add_argument("--rebuild-envs", action="store_true",
                     help="rebuild the job's pip/uv envs on each node once, even if cached (failed builds included)")
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

    env = sub.add_parser("env", help="the engine envs (one per vLLM version) cached on this node")
    env_sub = env.add_subparsers(metavar="ACTION")
    env_build = env_sub.add_parser("build", help="build (or check) a job's engine envs on this node; cached")
    env_build.add_argument("job", type=Path)
    env_build.add_argument("--engine", nargs="+", metavar="NAME", help="only these engines")
    env_build.add_argument("--rebuild", action="store_true", help="rebuild even if cached")
    env_build.set_defaults(handler=_env_build)
    env_list = env_sub.add_parser("list", help="the env cache on this node ($FARM_ENV_CACHE or $FARM_HOME/envs)")
    env_list.set_defaults(handler=_env_list)
    env_clean = env_sub.add_parser("clean", help="remove cached envs: by key or engine name, failed ones, or all")
    env_clean.add_argument("which", nargs="*", metavar="KEY_OR_ENGINE")
    env_clean.add_argument("--failed", action="store_true", help="every failed build (their next run retries them)")
    env_clean.add_argument("--all", action="store_true", help="every env in the cache")
    env_clean.set_defaults(handler=_env_clean)

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
                  max_parallel=args.max_parallel, progress=progress, rebuild_envs=args.rebuild_envs)
    print()
    print(format_table(load_matrix(store, outcome.run_id)))
    print(f"\nrun {outcome.run_id} finished in {time.monotonic() - started:.0f}s")
    print(f"matrix: {store.location(outcome.matrix_key)}")
    print(f"page:   {store.location(outcome.page_key)}")
    if not outcome.all_ran:
        print("some cells could not run (infra or env errors): see the matrix", file=sys.stderr)
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


def _env_build(args: argparse.Namespace) -> int:
    from farm.envs import EnvFailure, cache, kind_of
    from farm.envs.node import prepare_here
    from farm.errors import EngineEnvError
    from farm.spec import load_job

    job = load_job(args.job)
    engines = [e for e in job.engines if not args.engine or e.name in args.engine]
    unknown = sorted(set(args.engine or []) - {e.name for e in job.engines})
    if unknown:
        raise EngineEnvError(f"{args.job} has no engine {', '.join(map(repr, unknown))}; "
                             f"its engines: {', '.join(e.name for e in job.engines)}")
    rebuild_before = time.time() if args.rebuild else None
    failed = 0
    for engine in engines:
        if kind_of(engine).in_driver_env:
            print(f"{engine.name:<16} {engine.kind:<8} nothing to build: {kind_of(engine).describe(engine)}")
            continue
        print(f"{engine.name:<16} {engine.kind:<8} preparing: {kind_of(engine).describe(engine)}", flush=True)
        outcome = prepare_here(engine, rebuild_before)
        if isinstance(outcome, EnvFailure):
            failed += 1
            print(f"{engine.name:<16} {engine.kind:<8} env_error: {outcome.message}", file=sys.stderr)
            tail = outcome.log_tail.rstrip().splitlines()[-20:]
            print("\n".join(f"    | {line}" for line in tail), file=sys.stderr)
            continue
        manifest = cache.read(outcome.key) if outcome.key else None
        size = f"{manifest.size_bytes / 2**30:.1f} GiB" if manifest and manifest.size_bytes else ""
        how = f"built in {outcome.seconds:.0f}s" if outcome.built else f"ready ({outcome.seconds:.1f}s)"
        vllm = f"{outcome.versions.vllm_dist or 'vllm'} {outcome.versions.vllm}"
        print(f"{engine.name:<16} {engine.kind:<8} {how}: {vllm}, torch {outcome.versions.torch}, "
              f"Python {outcome.versions.python}, Ray {outcome.versions.ray}  {size}  {outcome.path}")
    return EXIT_FARM_ERROR if failed else 0


def _env_list(args: argparse.Namespace) -> int:
    from farm.envs import cache

    entries = cache.entries()
    print(f"env cache {cache.root()}: {len(entries)} env(s)")
    rows = [("key", "status", "engines", "vllm", "python", "ray", "size", "built at", "build")]
    for key, manifest in entries:
        if manifest is None:
            rows.append((key, "partial", "", "", "", "", "", "", ""))
            continue
        v = manifest.versions
        rows.append((key, manifest.status, ",".join(manifest.engines), f"{v.vllm_dist or ''} {v.vllm or ''}".strip(),
                     v.python or "", v.ray or "", f"{manifest.size_bytes / 2**30:.1f}G" if manifest.size_bytes else "",
                     manifest.built_at_text, f"{manifest.build_s:.0f}s"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    return 0


def _env_clean(args: argparse.Namespace) -> int:
    from farm.envs import cache
    from farm.errors import EngineEnvError

    if not (args.which or args.failed or args.all):
        raise EngineEnvError("say which envs to remove: keys or engine names (see `farm env list`), --failed, or --all")
    removed = 0
    for key, manifest in cache.entries():
        named = key in args.which or bool(manifest and set(manifest.engines) & set(args.which))
        wanted = args.all or named or (args.failed and manifest is not None and not manifest.ready)
        if wanted and cache.remove(key):
            removed += 1
            print(f"removed {key} ({','.join(manifest.engines) if manifest else 'partial'})")
    print(f"{removed} env(s) removed from {cache.root()}")
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
