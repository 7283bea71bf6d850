"""`farm validate | run | status | matrix | dashboard`: run a job and read its results."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from farm.cli.common import EXIT_CELLS_NOT_RUN, EXIT_REPORT_NOT_WRITTEN, EXIT_SPOOLED, log_to_stderr, open_store, run_id_arg, store_arguments


def add_parsers(sub: Any) -> None:
    validate = sub.add_parser("validate", help="check a job spec and print the cells it expands to")
    validate.add_argument("job", type=Path)
    validate.add_argument("--paths-on-nodes", action="store_true",
                          help="the job's local paths are the cluster nodes', not this machine's: do not check them here")
    validate.set_defaults(handler=_validate)

    run = sub.add_parser("run", help="run every cell of a job and write the matrix")
    run.add_argument("job", type=Path, nargs="?", help="job spec (optional with --resume: the run's own is used)")
    store_arguments(run)
    run.add_argument("--address", help="Ray cluster to join (default $RAY_ADDRESS, else a local Ray on 127.0.0.1)")
    run.add_argument("--run-id", type=run_id_arg, help="name the run (default <job>-<timestamp>-<random>)")
    run.add_argument("--resume", metavar="RUN_ID", type=run_id_arg,
                     help="continue a run: flush its spooled results, skip cells with a verdict, run the rest")
    run.add_argument("--max-parallel", type=int, help="cells at once (default: what the cluster's resources allow)")
    run.add_argument("--rebuild-envs", action="store_true",
                     help="rebuild the job's pip/uv envs on each node once, even if cached (failed builds included)")
    run.add_argument("--webhook", metavar="URL",
                     help="post the run's diff to this chat webhook, Slack-compatible (default $FARM_WEBHOOK_URL)")
    run.set_defaults(handler=_run)

    status = sub.add_parser("status", help="progress of a run, read from the store alone")
    status.add_argument("run_id", type=run_id_arg)
    store_arguments(status)
    status.set_defaults(handler=_status)

    matrix = sub.add_parser("matrix", help="print a run's matrix (default: the latest), or one of several runs merged")
    matrix.add_argument("run_id", nargs="*", metavar="RUN_ID", type=run_id_arg,
                        help="a run; several: one matrix of them, with the platform as a column level where they differ")
    store_arguments(matrix)
    matrix.add_argument("--json", action="store_true", help="print matrix.json instead of the table")
    matrix.add_argument("--html", type=Path, metavar="FILE", help="also write the matrix's page to FILE (one file, no server)")
    matrix.add_argument("--by-version", action="store_true",
                        help="instead of the grid: each combination's outcome along the versions, in stretches of one "
                             "outcome (with --changed: only those whose verdict changes)")
    matrix.add_argument("--changed", action="store_true", help="with --by-version: only combinations whose verdict changes")
    matrix.set_defaults(handler=_matrix)

    dashboard = sub.add_parser("dashboard", help="serve the matrix page on 127.0.0.1; re-render it as results arrive")
    store_arguments(dashboard)
    dashboard.add_argument("--port", type=int, default=8700, help="port on 127.0.0.1 (default 8700; 0: any free port)")
    dashboard.add_argument("--interval", type=float, default=2.0, help="seconds between looks at the store (default 2)")
    dashboard.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                           help="answer requests for this host name too (default: loopback names only)")
    dashboard.set_defaults(handler=_dashboard)


def _validate(args: argparse.Namespace) -> int:
    from farm.model.cells import expand
    from farm.model.sources import is_hub_id
    from farm.model.spec import check_local_paths, load_job

    job = load_job(args.job)
    if not args.paths_on_nodes:
        check_local_paths(job, str(args.job))
    cells = expand(job)
    hub = sorted({c.model_source for c in cells if is_hub_id(c.model_source)})
    if hub:
        print(f"not checked here: hub id(s) {', '.join(hub)}: each GPU node fetches them (a token for gated ones "
              "goes on the nodes, deploy/README.md); a CPU test machine has no hub", file=sys.stderr)
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
    from farm.errors import UsageError
    from farm.model.spec import check_local_paths, load_job
    from farm.report.aggregate import load_matrix
    from farm.report.table import format_table
    from farm.runner.driver import make_run_id, run, spool_report

    if args.resume and args.run_id:
        raise UsageError("give either --resume RUN_ID (continue a run) or --run-id ID (name a new one), not both")
    if not args.job and not args.resume:
        raise UsageError("give a job spec (farm run jobs/smoke.yaml) or a run to continue (farm run --resume RUN_ID)")
    from farm.runner.progress import Progress, summary_table

    job = load_job(args.job) if args.job else None
    if job is not None and not (args.address or os.environ.get("RAY_ADDRESS")):
        check_local_paths(job, str(args.job))  # a run on this machine: its paths are here (a cluster's are the nodes')
    webhook = cli_ops.webhook_url(args.webhook)  # a bad URL fails now, not after the run
    store = open_store(args)
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
    if outcome.report_error:
        print(f"farm: every result of run {outcome.run_id} is in the store, but its matrix and page could not be "
              f"written: {outcome.report_error}; once that is fixed, `farm run --resume {outcome.run_id}` writes them",
              file=sys.stderr)
        return EXIT_REPORT_NOT_WRITTEN
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

    store = open_store(args)
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
    from farm.errors import PageError, UsageError, translated
    from farm.report.aggregate import load_matrix, load_merged
    from farm.report.render import render_page
    from farm.report.table import format_by_version, format_table

    if args.changed and not args.by_version:
        raise UsageError("--changed goes with --by-version: farm matrix RUN --by-version --changed")
    store = open_store(args)
    one = args.run_id[0] if len(args.run_id) == 1 else None
    matrix = load_merged(store, args.run_id) if len(args.run_id) > 1 else load_matrix(store, one)
    if args.json:
        print(matrix.model_dump_json(indent=1))
    else:
        print(format_by_version(matrix, changed_only=args.changed) if args.by_version else format_table(matrix))
    if args.html:
        # The page's "JSON twin" link: its matrix.json beside it (a merged matrix is kept nowhere else).
        twin = args.html.with_suffix(".json")
        matrix.matrix_key = twin.name
        data = matrix.model_dump_json().encode()
        with translated(PageError, f"writing the page to {args.html}", OSError):
            twin.write_bytes(data)
            args.html.write_text(render_page(matrix, data))
        print(f"page: {args.html} (its matrix.json: {twin})", file=sys.stderr)
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from farm.report.dashboard import serve

    log_to_stderr(logging.WARNING)
    serve(open_store(args), port=args.port, interval=args.interval, allow_hosts=tuple(args.allow_host))
    return 0
