"""The operations verbs of the `farm` command: submit | diff | bisect, and what `farm run` does after a run.

Kept apart from ``farm.cli.app`` so the verbs that run a job and the verbs that operate
the farm (a cluster from a laptop, every night, down to the first bad version) grow
separately; ``farm.cli.app`` adds these parsers and calls ``after_run``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from farm.cli.common import run_id_arg, store_arguments

EPILOG = """examples:
  farm submit jobs/nightly.yaml --address http://head:8265 --store s3://bucket/farm
  farm submit jobs/nightly.yaml --address http://head:8265 --store s3://bucket/farm --wait \\
      --webhook "$SLACK_WEBHOOK_URL"        # the store's credentials: the nodes' instance role (deploy/)
  farm diff                                       # the latest run against the previous run of its job
  farm bisect --job jobs/versions.yaml --cell qwen2-dense/none/none --good v0.31.0 --bad v0.32.0
  farm bisect --job jobs/nightly.yaml --cell qwen2moe/gptq-int4/lora --good GOODSHA --bad BADSHA --commits commits.txt
"""


def add_parsers(sub: Any) -> None:
    """Add submit, diff, bisect, repro, known-bugs and retract to the `farm` command's subparsers."""
    submit = sub.add_parser("submit", help="submit a job to a Ray cluster (Ray's job SDK); print how to follow it",
                            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    submit.add_argument("job", type=Path)
    submit.add_argument("--address", help="the head's job server, http://HEAD:8265 (default $RAY_API_SERVER_ADDRESS "
                        "or an http $RAY_ADDRESS)")
    submit.add_argument("--store", help="where the run's driver on the head writes: s3://BUCKET/PREFIX or an absolute "
                        "path on the head (default $FARM_STORE)")
    submit.add_argument("--s3-endpoint", metavar="URL", help="S3-compatible endpoint, as the head reaches it")
    submit.add_argument("--working-dir", type=Path, default=Path("."),
                        help="uploaded to the cluster; holds the job file (default: .)")
    submit.add_argument("--runtime-env-json", metavar="JSON", help="more of the job's Ray runtime_env, e.g. env_vars")
    submit.add_argument("--env", action="append", default=[], metavar="NAME[=VALUE]",
                        help="an env var for the run (its value here when none is given), e.g. AWS_ENDPOINT_URL; "
                        "one that looks like a secret is refused (Ray's job list shows env vars)")
    submit.add_argument("--allow-secret-env", action="store_true",
                        help="send env vars that look like secrets anyway (everyone who reaches the cluster can read them)")
    submit.add_argument("--run-id", type=run_id_arg, help="name the run (default <job>-<timestamp>-<random>); also the Ray job id")
    submit.add_argument("--webhook", metavar="URL", help="the run posts its diff to this chat webhook, Slack-compatible "
                        "(default $FARM_WEBHOOK_URL); it travels in the job's env, not its command line")
    submit.add_argument("--max-parallel", type=int, help="passed to farm run")
    submit.add_argument("--rebuild-envs", action="store_true", help="passed to farm run")
    submit.add_argument("--python", default="python",
                        help="the interpreter on the head that has farm installed (default: python)")
    submit.add_argument("--wait", action="store_true",
                        help="follow the job's log until it ends; exit with its exit code")
    submit.set_defaults(handler=_submit)

    diff = sub.add_parser("diff", help="a run against the previous run of the same job: regressions and fixes")
    diff.add_argument("run_id", nargs="?", type=run_id_arg, help="default: the run matrix/latest.json shows")
    store_arguments(diff)
    diff.add_argument("--record", action="store_true",
                      help="compute and write the diff now (farm run does it after each run)")
    diff.add_argument("--json", action="store_true", help="print the diff document")
    diff.add_argument("--webhook", metavar="URL", help="also post the summary to this chat webhook")
    diff.set_defaults(handler=_diff)

    bisect = sub.add_parser("bisect", help="the first version or commit where one combination's outcome changes",
                            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    bisect.add_argument("--job", type=Path, required=True)
    bisect.add_argument("--cell", required=True, help="a cell id (farm validate) or MODEL/QUANTIZATION/LORA")
    bisect.add_argument("--good", required=True, help="the older end: an engine of the job, or a commit of --commits")
    bisect.add_argument("--bad", required=True, help="the newer end, where the outcome differs from --good's")
    bisect.add_argument("--commits", type=Path, metavar="FILE",
                        help="an ordered list of vLLM commits (oldest first), each run as a uv engine")
    bisect.add_argument("--like", metavar="ENGINE",
                        help="with --commits: copy this job engine's install fields (indexes, variant, uninstall)")
    store_arguments(bisect)
    bisect.add_argument("--address", help="Ray cluster to join (default $RAY_ADDRESS, else a local Ray on 127.0.0.1)")
    bisect.add_argument("--json", action="store_true", help="print the verdict document at the end")
    bisect.set_defaults(handler=_bisect)

    _add_repro_and_known_bugs(sub)
    _add_retract(sub)


def _add_retract(sub: Any) -> None:
    retract = sub.add_parser("retract", help="take back verdicts that were the farm's own failure (kept, never deleted)",
                             description="Each selected cell gets one more attempt, an infra_error saying who retracted "
                             "its verdict, when and why; the run is aggregated again and `farm run --resume RUN_ID` "
                             "runs those cells again.")
    retract.add_argument("run_id", metavar="RUN_ID", type=run_id_arg)
    retract.add_argument("--engine", action="append", default=[], metavar="NAME", help="every cell of this engine")
    retract.add_argument("--cell", action="append", default=[], metavar="CELL_ID", help="this cell")
    retract.add_argument("--why", required=True, help="why these verdicts are the farm's and not vLLM's (kept with them)")
    store_arguments(retract)
    retract.set_defaults(handler=_retract)


def _add_repro_and_known_bugs(sub: Any) -> None:
    repro = sub.add_parser("repro", help="a standalone repro.py (vLLM only, no farm) for a root cause, signature or cell")
    repro.add_argument("what", metavar="ROOT_CAUSE|SIGNATURE|CELL_ID", help="as farm matrix and the page show it")
    repro.add_argument("--run", help="the run to take the cell from (default: the run matrix/latest.json shows)")
    store_arguments(repro)
    repro.add_argument("-o", "--output", type=Path, default=Path("repro.py"), help="default: ./repro.py")
    repro.set_defaults(handler=_repro)

    known = sub.add_parser("known-bugs", help="the known-bug ledger (jobs/known_bugs.yaml) against measured runs")
    known_sub = known.add_subparsers(metavar="ACTION")
    check = known_sub.add_parser("check", help="per bug: rediscovered, contradicted (with the evidence), or not reproducible")
    check.add_argument("run_ids", nargs="+", metavar="RUN_ID", type=run_id_arg, help="runs whose matrices to read (e.g. a CPU and a GPU run)")
    check.add_argument("--ledger", type=Path, default=Path("jobs/known_bugs.yaml"), help="default: jobs/known_bugs.yaml")
    store_arguments(check)
    check.add_argument("--json", action="store_true", help="print the findings as JSON")
    check.add_argument("--publish", action="store_true",
                       help="keep the findings in the store (known-bugs/latest.json) and show them on its page")
    check.set_defaults(handler=_known_bugs_check)


def webhook_url(given: str | None) -> str | None:
    from farm.report.diff import check_webhook

    url = given or os.environ.get("FARM_WEBHOOK_URL")
    return check_webhook(url) if url else None


def after_run(store: Any, run_id: str, page_key: str | None, webhook: str | None) -> None:
    """What `farm run` does once a run is aggregated: its diff, printed, stored, and posted."""
    from farm.errors import FarmError
    from farm.report.diff import post_webhook, record_diff, summary
    from farm.store.layout import diff_key

    diff = record_diff(store, run_id)
    page = f"page: {store.location(page_key)}" if page_key else None
    print()
    print(summary(diff))
    print(f"diff:   {store.location(diff_key(run_id))}")
    if webhook:
        try:
            post_webhook(webhook, summary(diff, page=page))
            print("posted the diff to the webhook")
        except FarmError as exc:  # the run's results are safe; a chat outage must not fail the run
            print(f"farm: warning: {exc}", file=sys.stderr)


def _submit(args: argparse.Namespace) -> int:
    from farm.ops.submit import follow, submit

    run_args = []
    if args.max_parallel:
        run_args += ["--max-parallel", str(args.max_parallel)]
    if args.rebuild_envs:
        run_args.append("--rebuild-envs")
    submission, client = submit(
        args.job, address=args.address, store_url=args.store, s3_endpoint=args.s3_endpoint,
        working_dir=args.working_dir, runtime_env_json=args.runtime_env_json, env=args.env, run_id=args.run_id,
        webhook=webhook_url(args.webhook), python=args.python, run_args=run_args, allow_secret_env=args.allow_secret_env,
    )
    print(submission.instructions(), flush=True)
    if not args.wait:
        return 0
    print(f"\nfollowing {submission.run_id} (Ctrl-C stops following, not the job):", flush=True)
    follow(submission, client)
    print(f"\nray job {submission.run_id}: {submission.status}, exit code {submission.exit_code}")
    return int(submission.exit_code or 0)


def _diff(args: argparse.Namespace) -> int:
    from farm.report.diff import load_diff, post_webhook, record_diff, summary
    from farm.store import open_store

    webhook = webhook_url(args.webhook)
    store = open_store(args.store, s3_endpoint=args.s3_endpoint)
    if args.record:
        from farm.report.aggregate import load_matrix

        run_id = args.run_id or load_matrix(store).run_id
        diff = record_diff(store, run_id)
    else:
        diff = load_diff(store, args.run_id)
    print(diff.model_dump_json(indent=1) if args.json else summary(diff))
    if webhook:
        post_webhook(webhook, summary(diff))
    return 0


def _known_bugs_check(args: argparse.Namespace) -> int:
    import json

    from farm.ops.known_bugs import as_check, as_json, check, load_ledger, report
    from farm.report.aggregate import load_matrix, load_merged
    from farm.report.ledger import publish_known_bugs
    from farm.store import open_store

    ledger = load_ledger(args.ledger)
    store = open_store(args.store, s3_endpoint=args.s3_endpoint)
    # Several runs: one matrix, as `farm matrix RUN RUN` shows it (a cell measured twice on one platform counts once).
    matrix = load_merged(store, args.run_ids) if len(args.run_ids) > 1 else load_matrix(store, args.run_ids[0])
    findings = [check(bug, [matrix], ledger.bugs) for bug in ledger.bugs]
    print(json.dumps(as_json(findings), indent=1) if args.json else report(findings))
    if args.publish:
        page = publish_known_bugs(store, as_check(findings, str(args.ledger), list(args.run_ids)))
        print(f"published to {store.url}: known-bugs/latest.json" + (f" and the page {page}" if page else
              " (no matrix in the store yet: the next run's page shows it)"), file=sys.stderr if args.json else sys.stdout)
    return 0


def _retract(args: argparse.Namespace) -> int:
    from farm.ops.retract import retract
    from farm.store import open_store

    store = open_store(args.store, s3_endpoint=args.s3_endpoint)
    written = retract(store, args.run_id, why=args.why, engines=args.engine, cells=args.cell)
    print(f"retracted {len(written)} verdict(s) of run {args.run_id}; its matrix is written again"
          + (f"; `farm run --resume {args.run_id}` runs them again" if written else " (the others had none)"))
    return 0


def _repro(args: argparse.Namespace) -> int:
    from farm.model.results import CellResult
    from farm.ops.repro import ReproError, make_repro, pick_cell
    from farm.report.aggregate import load_matrix
    from farm.store import open_store, read_manifest

    store = open_store(args.store, s3_endpoint=args.s3_endpoint)
    matrix = load_matrix(store, args.run)
    cell = pick_cell(matrix, args.what)
    if cell.result_key is None:
        raise ReproError(f"cell {cell.cell_id} of run {matrix.run_id} has no result yet: nothing to reproduce")
    result = CellResult.model_validate_json(store.get(cell.result_key))
    manifest = read_manifest(store, matrix.run_id)
    args.output.write_text(make_repro(result, manifest.job))
    args.output.chmod(0o755)
    print(f"{args.output}: cell {cell.cell_id} ({result.cell.label}) of run {matrix.run_id}, "
          f"{cell.status.value}{' (' + cell.kind + ')' if cell.kind else ''}; run it with `python {args.output}`")
    return 0


def _bisect(args: argparse.Namespace) -> int:
    from farm.errors import BisectError
    from farm.model.spec import load_job
    from farm.ops.bisect import bisect
    from farm.store import open_store

    if args.like and not args.commits:
        raise BisectError("--like ENGINE applies to --commits FILE: it gives the commits' uv engines its install fields")
    job = load_job(args.job)
    store = open_store(args.store, s3_endpoint=args.s3_endpoint)
    verdict = bisect(job, args.cell, args.good, args.bad, store=store, commits=args.commits, like=args.like,
                     address=args.address, say=lambda line: print(line, flush=True))
    if args.json:
        print(verdict.model_dump_json(indent=1))
    if verdict.result == "no_change":
        print(f"farm: error: --good {verdict.good} and --bad {verdict.bad} give the same outcome for "
              f"{verdict.combination} ({verdict.good_outcome}): nothing to bisect; give a --bad where it differs "
              "(farm matrix lists the first change per combination)", file=sys.stderr)
        return 1
    return 0
