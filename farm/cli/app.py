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
import io
import logging
import sys
from typing import TextIO

from farm.cli import bundles, envs, ops, runs, zoo
from farm.cli.common import EXIT_CELLS_NOT_RUN, EXIT_FARM_ERROR, EXIT_SPOOLED, log_to_stderr
from farm.errors import FarmError
from farm.text import terminal_safe

__all__ = ["EXIT_CELLS_NOT_RUN", "EXIT_FARM_ERROR", "EXIT_SPOOLED", "build_parser", "main"]


EPILOG = """examples:
  farm validate jobs/smoke.yaml
  farm run jobs/smoke.yaml                       # local Ray on 127.0.0.1, results in ./farm-results
  farm run jobs/smoke.yaml --store /data/farm    # another result store
  farm run jobs/smoke.yaml --store s3://bucket/farm --s3-endpoint http://127.0.0.1:8333
  farm run --resume smoke-20261126-101500-ab12   # run what is missing, flush what is spooled
  RAY_ADDRESS=ray://head:10001 farm run jobs/smoke.yaml
  farm status smoke-20261126-101500-ab12
  farm matrix                                    # the latest run's matrix as a table
  farm matrix cpu-smoke-1 gpu-smoke-1 --html merged.html   # two runs, two platforms, one matrix
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


class _TerminalSafe(io.TextIOBase):
    """The CLI's stdout and stderr: what reaches a terminal never carries control sequences (a run id, a model
    name or an error message from a result could otherwise clear the screen or forge lines' colours)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(terminal_safe(text))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.stream.encoding


def main(argv: list[str] | None = None) -> int:
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _TerminalSafe(saved[0]), _TerminalSafe(saved[1])
    try:
        return _main(argv)
    finally:
        sys.stdout, sys.stderr = saved


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    log_to_stderr(logging.DEBUG if args.debug else logging.INFO)
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
    for group in (runs, envs, bundles, zoo, ops):
        group.add_parsers(sub)
    return parser
