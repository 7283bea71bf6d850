"""The `farm` command: validate | run | status | matrix | dashboard | env | bundle | zoo, and submit | diff | bisect (``farm.cli.ops``).

A FarmError becomes one line on stderr and exit code 1 (the traceback with --debug).
`farm run` exits
  0  every cell ran and has a verdict, whatever it is (pass, flaky, fail, crash, timeout),
  1  a farm error before anything ran (a bad job spec, a store that cannot be written,
     a cell that asks for more than any node of the cluster has),
  3  some cells could not run (infra or env errors left after their retries): `--resume`
     runs them again,
  4  results are still spooled locally because the store was unreachable at the end (they are
     safe; a `--resume` flushes them),
  130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from farm.errors import FarmError

EXIT_FARM_ERROR = 1
EXIT_CELLS_NOT_RUN = 3
EXIT_SPOOLED = 4

EPILOG = """examples:
  farm validate jobs/smoke.yaml
  farm run jobs/smoke.yaml                       # local Ray on 127.0.0.1, results in ./farm-results
  farm run jobs/smoke.yaml --store /data/farm    # another result store
  farm run jobs/smoke.yaml --store s3://bucket/farm --s3-endpoint http://127.0.0.1:8333
  farm run --resume smoke-20261126-101500-ab12   # run what is missing, flush what is spooled
  RAY_ADDRESS=ray://head:10001 farm run jobs/smoke.yaml
  farm status smoke-20261126-101500-ab12
  farm matrix                                    # the latest run's matrix as a table
  farm dashboard --port 8700                     # the page on http://127.0.0.1:8700/, live while runs write
  farm zoo build --for-job jobs/smoke.yaml        # only what a job needs
  farm env build jobs/versions.yaml              # build the job's vLLM envs on this node ahead of a run
  farm env list                                  # the envs cached on this node
  farm env clean --failed                        # forget failed builds, so the next run retries them
  farm submit jobs/nightly.yaml --address http://head:8265 --store s3://bucket/farm
  farm diff                                      # the latest run against the previous run of its job
  farm bisect --job jobs/versions.yaml --cell qwen2-dense/none/none --good v0.31.0 --bad v0.32.0
  farm bundle 0.26.0 --python 3.12 --platform manylinux_2_31_x86_64 --against freeze.txt --out bundles/vllm-0.26.0 --split 58MiB
  farm bundle verify bundles/vllm-0.26.0/bundle.json
  farm bundle unpack bundles/vllm-0.26.0/bundle.json --into /opt/bundles/vllm-0.26.0
  farm zoo build --out ~/.cache/farm/zoo
"""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    _log_to_stderr(logging.DEBUG if args.debug else logging.INFO)
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
    except BrokenPipeError:  # `farm ... | head`: the reader has what it wanted
        sys.stderr.close()
        return 0


def build_parser() -> argparse.ArgumentParser:
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
    run.add_argument("job", type=Path, nargs="?", help="job spec (optional with --resume: the run's own is used)")
    _store_arguments(run)
    run.add_argument("--address", help="Ray cluster to join (default $RAY_ADDRESS, else a local Ray on 127.0.0.1)")
    run.add_argument("--run-id", help="name the run (default <job>-<timestamp>-<random>)")
    run.add_argument("--resume", metavar="RUN_ID",
                     help="continue a run: flush its spooled results, skip cells with a verdict, run the rest")
    run.add_argument("--max-parallel", type=int, help="cells at once (default: what the cluster's resources allow)")
    run.add_argument("--rebuild-envs", action="store_true",
                     help="rebuild the job's pip/uv envs on each node once, even if cached (failed builds included)")
    run.add_argument("--webhook", metavar="URL",
                     help="post the run's diff to this chat webhook, Slack-compatible (default $FARM_WEBHOOK_URL)")
    run.set_defaults(handler=_run)

    status = sub.add_parser("status", help="progress of a run, read from the store alone")
    status.add_argument("run_id")
    _store_arguments(status)
    status.set_defaults(handler=_status)

    matrix = sub.add_parser("matrix", help="print a run's matrix (default: the latest)")
    matrix.add_argument("run_id", nargs="?")
    _store_arguments(matrix)
    matrix.add_argument("--json", action="store_true", help="print matrix.json instead of the table")
    matrix.set_defaults(handler=_matrix)

    dashboard = sub.add_parser("dashboard", help="serve the matrix page on 127.0.0.1; re-render it as results arrive")
    _store_arguments(dashboard)
    dashboard.add_argument("--port", type=int, default=8700, help="port on 127.0.0.1 (default 8700; 0: any free port)")
    dashboard.add_argument("--interval", type=float, default=2.0, help="seconds between looks at the store (default 2)")
    dashboard.set_defaults(handler=_dashboard)

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

    bundle = sub.add_parser(
        "bundle", help="make an offline vLLM bundle for air-gapped nodes (VERSION), or verify / unpack one",
        usage="farm bundle VERSION --python X.Y --platform TAG --out DIR [options]\n"
              "       farm bundle verify BUNDLE_JSON\n"
              "       farm bundle unpack BUNDLE_JSON --into DIR")
    bundle.add_argument("what", nargs="+", metavar="VERSION | verify BUNDLE_JSON | unpack BUNDLE_JSON")
    bundle.add_argument("--python", help="the node's Python, major.minor (e.g. 3.12)")
    bundle.add_argument("--platform", help="the node's manylinux tag, e.g. manylinux_2_31_x86_64 "
                        "(2_NN: at most the node's glibc, `ldd --version`)")
    bundle.add_argument("--against", type=Path, metavar="FREEZE", help="the node's `pip freeze`: what it has is left out")
    bundle.add_argument("--out", type=Path, help="a new directory for the bundle")
    bundle.add_argument("--split", metavar="SIZE", help="split the tarball into parts of at most SIZE (e.g. 58MiB)")
    bundle.add_argument("--extra", nargs="+", default=[], metavar="REQ", help="more requirements to bundle")
    bundle.add_argument("--ray", metavar="VERSION", help="the cluster's Ray (default: the Ray installed here)")
    bundle.add_argument("--find-links", action="append", default=[], metavar="DIR", help="passed to pip")
    bundle.add_argument("--index-url", help="passed to pip")
    bundle.add_argument("--no-index", action="store_true", help="passed to pip: only --find-links")
    bundle.add_argument("--keep-work", action="store_true", help="keep DIR/.work (the wheels and the site folder)")
    bundle.add_argument("--into", type=Path, help="for unpack: a new directory")
    bundle.set_defaults(handler=_bundle)

    zoo = sub.add_parser("zoo", help="the tiny model zoo generated locally")
    zoo_sub = zoo.add_subparsers(metavar="ACTION")
    build = zoo_sub.add_parser("build", help="build (or verify) zoo items; cached and idempotent")
    build.add_argument("--out", type=Path, help="zoo directory (default $FARM_ZOO_DIR or ~/.cache/farm/zoo)")
    build.add_argument("--only", nargs="+", metavar="NAME", help="build only these items (and what they need)")
    build.add_argument("--for-job", type=Path, metavar="JOB",
                       help="build only the items a job uses (its models, adapters and references)")
    build.set_defaults(handler=_zoo_build)
    listing = zoo_sub.add_parser("list", help="list zoo items")
    listing.set_defaults(handler=_zoo_list)

    from farm.cli import ops as cli_ops

    cli_ops.add_parsers(sub, _store_arguments)
    return parser


def _store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help="results directory, file://PATH or s3://BUCKET/PREFIX "
                        "(default $FARM_STORE, else ./farm-results)")
    parser.add_argument("--s3-endpoint", metavar="URL", help="S3-compatible endpoint for s3:// stores "
                        "(default $AWS_ENDPOINT_URL, else AWS); credentials come from the standard AWS chain")


def _open_store(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from farm.store import open_store

    return open_store(args.store, s3_endpoint=args.s3_endpoint)


def _log_to_stderr(level: int) -> None:
    """The farm's own log lines (store outages, spooling, flushes) as `farm: …` on stderr."""
    logger = logging.getLogger("farm")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("farm: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)


def _validate(args: argparse.Namespace) -> int:
    from farm.model.cells import expand
    from farm.model.spec import load_job

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
    from farm.cli import ops as cli_ops
    from farm.errors import JobSpecError
    from farm.model.spec import load_job
    from farm.report.aggregate import format_table, load_matrix
    from farm.run.driver import make_run_id, run, spool_report

    if args.resume and args.run_id:
        raise JobSpecError("give either --resume RUN_ID (continue a run) or --run-id ID (name a new one), not both")
    if not args.job and not args.resume:
        raise JobSpecError("give a job spec (farm run jobs/smoke.yaml) or a run to continue (farm run --resume RUN_ID)")
    from farm.run.progress import Progress, summary_table

    job = load_job(args.job) if args.job else None
    webhook = cli_ops.webhook_url(args.webhook)  # a bad URL fails now, not after the run
    store = _open_store(args)
    run_id = args.resume or args.run_id or make_run_id(job.name)  # type: ignore[union-attr]
    started = time.monotonic()
    print(f"{'resuming' if args.resume else 'run'} {run_id}: results in {store.url}", flush=True)
    progress = Progress()
    try:
        outcome = run(job, store=store, address=args.address, run_id=run_id, resume=bool(args.resume),
                      max_parallel=args.max_parallel, events=progress, rebuild_envs=args.rebuild_envs)
    except KeyboardInterrupt:
        progress.close()
        print(f"farm: interrupted; what finished is in the store (or spooled); continue with "
              f"`farm run --resume {run_id}`", file=sys.stderr)
        return 130
    progress.close()
    if args.resume:
        print(f"ran {outcome.ran} cell(s); {len(outcome.results) - outcome.ran} already had a result")
    if outcome.spooled:
        print(f"farm: {spool_report(outcome)}", file=sys.stderr)
        return EXIT_SPOOLED
    assert outcome.matrix_key and outcome.page_key
    print()
    print(format_table(load_matrix(store, outcome.run_id)))
    print()
    print(summary_table(outcome.results))
    print(f"\nrun {outcome.run_id} finished in {time.monotonic() - started:.0f}s")
    print(f"matrix: {store.location(outcome.matrix_key)}")
    print(f"page:   {store.location(outcome.page_key)}")
    cli_ops.after_run(store, outcome.run_id, outcome.page_key, webhook)
    if not outcome.all_ran:
        print(f"some cells could not run (infra or env errors after their retries): see the matrix; "
              f"`farm run --resume {outcome.run_id}` runs them again", file=sys.stderr)
        return EXIT_CELLS_NOT_RUN
    return 0


def _status(args: argparse.Namespace) -> int:
    from farm.model.results import status_counts
    from farm.store import read_manifest, scan_run

    store = _open_store(args)
    manifest = read_manifest(store, args.run_id)
    scan = scan_run(store, args.run_id)
    latest = scan.latest
    counts = status_counts(latest.values())
    state = "finished" if manifest.finished_at else "in progress (or its driver died: farm run --resume continues it)"
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no results yet"
    print(f"run {manifest.run_id} ({manifest.job_name}): {state}; "
          f"{len(latest)}/{len(manifest.cells)} cells have a result: {summary}")
    print(f"started {manifest.started_at:%Y-%m-%d %H:%M:%S} UTC by {manifest.launched_by} "
          f"(farm {manifest.farm_version}{', git ' + manifest.git_sha[:12] if manifest.git_sha else ''})"
          + "".join(f"; resumed {r.at:%Y-%m-%d %H:%M:%S} by {r.launched_by}" for r in manifest.resumes)
          + (f"; finished {manifest.finished_at:%Y-%m-%d %H:%M:%S}" if manifest.finished_at else ""))
    retried = sum(1 for r in latest.values() if r.attempt > 1)
    if retried:
        print(f"{retried} cell(s) needed more than one attempt")
    for document in scan.unreadable:
        print(f"unreadable: {store.location(document.key)}: {document.reason}")
    return 0


def _matrix(args: argparse.Namespace) -> int:
    from farm.report.aggregate import format_table, load_matrix

    matrix = load_matrix(_open_store(args), args.run_id)
    print(matrix.model_dump_json(indent=1) if args.json else format_table(matrix))
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from farm.report.dashboard import serve

    _log_to_stderr(logging.WARNING)
    serve(_open_store(args), port=args.port, interval=args.interval)
    return 0


def _env_build(args: argparse.Namespace) -> int:
    from farm.envs import EnvFailure, cache, kind_of
    from farm.envs.node import prepare_here
    from farm.errors import EngineEnvError
    from farm.model.spec import load_job

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


def _bundle(args: argparse.Namespace) -> int:
    from farm.bundles import pack
    from farm.errors import BundleError

    action, *rest = args.what
    try:
        if action in ("verify", "unpack"):
            if len(rest) != 1:
                raise BundleError(f"farm bundle {action} takes one bundle.json (or its directory)")
            if action == "verify":
                document = pack.verify(Path(rest[0]))
                print(f"ok: {document['name']}: {len(document['parts'])} part(s), "
                      f"{document['archive']['size'] / 2**20:.1f} MiB, SHA-256 verified")
                return 0
            if args.into is None:
                raise BundleError("farm bundle unpack needs --into DIR (a new directory)")
            document = pack.unpack(Path(rest[0]), args.into)
            print(f"unpacked {document['name']} into {args.into}; its site folder: {args.into / pack.SITE}")
            return 0
        return _bundle_make(args, action, rest)
    except pack.BundleError as exc:
        raise BundleError(str(exc)) from None


def _bundle_make(args: argparse.Namespace, version: str, rest: list[str]) -> int:
    from farm.bundles import pack
    from farm.bundles.make import make_bundle
    from farm.errors import BundleError

    if rest:
        raise BundleError(f"farm bundle takes one VERSION, got {' '.join([version, *rest])}")
    missing = [flag for flag, value in (("--python", args.python), ("--platform", args.platform), ("--out", args.out))
               if not value]
    if missing:
        raise BundleError(f"farm bundle {version} needs {', '.join(missing)}; e.g. farm bundle {version} --python 3.12 "
                          "--platform manylinux_2_31_x86_64 --out bundles/vllm-" + version)
    try:
        split = pack.parse_size(args.split) if args.split else None
    except ValueError as exc:
        raise BundleError(f"--split: {exc}") from None
    pip_args = [*(f"--find-links={d}" for d in args.find_links), *(["--no-index"] if args.no_index else []),
                *([f"--index-url={args.index_url}"] if args.index_url else [])]
    document = make_bundle(version, python=args.python, platform_tag=args.platform, out=args.out, against=args.against,
                           split=split, extras=args.extra, ray_version=args.ray, pip_args=pip_args,
                           keep_work=args.keep_work)
    shipped = document["packages"]
    print(f"bundle {document['name']}: {document['archive']['size'] / 2**20:.1f} MiB in {len(document['parts'])} "
          f"part(s), {len(shipped)} packages ({document['site_bytes'] / 2**20:.0f} MiB unpacked), needs glibc >= "
          f"{document['glibc']}; made in {document['build_s']:.0f}s")
    print(f"  the target has: {', '.join(p['name'] for p in document['target_has']) or '-'}")
    print(f"  left out (unused on the farm's paths): {', '.join(p['name'] for p in document['left_out']) or '-'}")
    for rule in document["stripped"]:
        if rule["files"]:
            print(f"  stripped {rule['pattern']}: {rule['files']} files, {rule['bytes'] / 2**20:.1f} MiB")
    print(f"  {args.out / pack.MANIFEST}; on the node: python3 {args.out / 'unpack.py'} unpack "
          f"{args.out / pack.MANIFEST} --into DIR")
    return 0


def _zoo_build(args: argparse.Namespace) -> int:
    from farm import zoo

    started = time.monotonic()
    names = list(args.only or [])
    if args.for_job:
        names += _zoo_items_of(args.for_job)
    built = zoo.build(root=args.out, names=names or None)
    width = max(map(len, built), default=0)
    for name, path in sorted(built.items()):
        print(f"{name:<{width}}  {path}")
    print(f"{len(built)} zoo items ready in {time.monotonic() - started:.0f}s")
    return 0


def _zoo_items_of(job_path: Path) -> list[str]:
    """The zoo items a job's cells load: models, adapters, and the references the probes compare with."""
    from farm import zoo
    from farm.model.cells import expand
    from farm.model.spec import load_job

    items: set[str] = set()
    for cell in expand(load_job(job_path)):
        for source in (cell.model_source, cell.lora_source, cell.reference, cell.lora_reference):
            if source and source.startswith("zoo:"):
                items.add(source.removeprefix("zoo:"))
    for item in list(items):
        reference = zoo.reference_of(item)
        if reference:
            items.add(reference)
    return sorted(items)


def _zoo_list(args: argparse.Namespace) -> int:
    from farm import zoo

    width = max(map(len, zoo.names()))
    for name in zoo.names():
        reference = zoo.reference_of(name)
        print(f"{name:<{width}}  {zoo.kind(name):<8} base {zoo.base_of(name)}" + (f", reference {reference}" if reference else ""))
    return 0
