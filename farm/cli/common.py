"""What several command groups share: the store flags, opening the store, the farm's log on stderr, exit codes."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

EXIT_FARM_ERROR = 1
EXIT_CELLS_NOT_RUN = 3
EXIT_SPOOLED = 4
EXIT_REPORT_NOT_WRITTEN = 5


def run_id_arg(text: str) -> str:
    """argparse's type for run ids: one line of printable characters (a run id is echoed to terminals and pages)."""
    if not text.strip() or any(ord(c) < 32 or 0x7f <= ord(c) <= 0x9f for c in text):
        raise argparse.ArgumentTypeError(f"'{text.encode('unicode_escape').decode()[:80]}' is no run id: give one line of "
                                         "printable characters (e.g. smoke-2026-12-06)")
    return text


def store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help="results directory, file://PATH or s3://BUCKET/PREFIX "
                        "(default $FARM_STORE, else ./farm-results)")
    parser.add_argument("--s3-endpoint", metavar="URL", help="S3-compatible endpoint for s3:// stores "
                        "(default $AWS_ENDPOINT_URL, else AWS); credentials come from the standard AWS chain")


def open_store(args: argparse.Namespace) -> Any:
    from farm.store import open_store as open_url

    return open_url(args.store, s3_endpoint=args.s3_endpoint)


def log_to_stderr(level: int) -> None:
    """The farm's own log lines (store outages, spooling, flushes) as `farm: …` on stderr."""
    logger = logging.getLogger("farm")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("farm: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)
