"""The ``farm`` command (``farm.cli.app`` builds the parser; ``farm.cli.ops`` the verbs that operate on runs)."""

from farm.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
