"""`farm zoo build | list`: the tiny model zoo generated locally."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from farm.model.sources import zoo_item


def add_parsers(sub: Any) -> None:
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
            if item := zoo_item(source):
                items.add(item)
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
