"""The CLI reference page, generated from the parser: ``python -m farm.cli.reference > docs/cli.md``.

Walks ``build_parser()`` and its subparsers (``farm env build``, ``farm zoo list`` …) and
prints each one's ``--help`` at a fixed width, so the page is the same on every terminal.
``make docs`` regenerates ``docs/cli.md``; ``tests/test_docs.py`` fails when it is stale.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

from farm.cli.app import build_parser

WIDTH = 100  # columns of every help text on the page, whatever the terminal's width

HEADER = """\
# `farm` command reference

Generated from the parser by `python -m farm.cli.reference` (`make docs` writes this file;
`tests/test_docs.py` fails when it is stale). Do not edit by hand: change the parser in
`farm/cli/` and run `make docs`.
"""


def _fixed_width(formatter_class: Any) -> Any:
    def make(prog: str) -> argparse.HelpFormatter:
        return formatter_class(prog, width=WIDTH)

    return make


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """The parser's subcommands in the order they were added (an alias's parser only once)."""
    seen: set[int] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if id(child) not in seen:
                    seen.add(id(child))
                    yield child


def _walk(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for child in _subparsers(parser):
        yield from _walk(child)


def render() -> str:
    """The Markdown page: ``farm --help``, then every subcommand's, depth first in the parser's order."""
    sections = [HEADER]
    parsers = list(_walk(build_parser()))
    sections.append("\n".join(f"- [`{p.prog}`](#{p.prog.replace(' ', '-')})" for p in parsers) + "\n")
    for parser in parsers:
        parser.formatter_class = _fixed_width(parser.formatter_class)
        text = parser.format_help().rstrip()
        sections.append(f"## `{parser.prog}`\n\n```\n{text}\n```\n")
    return "\n".join(sections)


def main() -> None:
    print(render(), end="")


if __name__ == "__main__":
    main()
