"""The ``farm`` command (``farm.cli.app`` builds the parser; ``farm.cli.ops`` the verbs that operate on runs)."""

from farm.cli.app import main

__all__ = ["main"]
