"""Where a model, adapter or reference comes from: the one spelling of a zoo item as a source.

A source is text in job files, cells and results: ``zoo:<item>`` for an item of the farm's
tiny model zoo (built on demand on the node), anything else a checkpoint (a local path or a
hub id). Build and read that form only here.
"""

from __future__ import annotations

ZOO_PREFIX = "zoo:"


def zoo_source(item: str) -> str:
    """The source naming zoo item ``item``."""
    return f"{ZOO_PREFIX}{item}"


def zoo_item(source: str | None) -> str | None:
    """The zoo item a source names; None for a checkpoint (or no source)."""
    if source is None or not source.startswith(ZOO_PREFIX):
        return None
    return source.removeprefix(ZOO_PREFIX)


def is_local_path(source: str) -> bool:
    """A checkpoint given as a path on the node (not a hub id)."""
    return source.startswith(("/", "./", "../", "~"))


def is_hub_id(source: str) -> bool:
    """A checkpoint named by its hub id (``org/name``): neither a zoo item nor a local path."""
    return zoo_item(source) is None and not is_local_path(source) and "/" in source
