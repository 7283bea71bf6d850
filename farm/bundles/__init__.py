"""Offline engine bundles: one vLLM version for air-gapped GPU nodes, as a checksummed tarball.

    farm bundle 0.26.0 --python 3.12 --platform manylinux_2_31_x86_64 --against freeze.txt --out DIR --split 58MiB

``farm.bundles.resolve`` decides what goes in (pip's resolver, the target's freeze, ``LEFT_OUT``),
``farm.bundles.imports`` checks what is left out against vLLM's source, ``farm.bundles.make``
downloads, installs, strips (``STRIP``) and packs, and ``farm.bundles.pack`` (standard library
only, copied next to the parts as ``unpack.py``) verifies and unpacks on the node. The
``bundle`` engine kind (``farm.envs.bundle``) unpacks a bundle once per node into the env cache.
"""

from typing import Any

from farm.bundles.pack import read_manifest, unpack, verify


def __getattr__(name: str) -> Any:
    # Making a bundle needs `packaging` (and pip); a cell that only unpacks one must not import it.
    if name in ("make_bundle", "STRIP"):
        from farm.bundles import make

        return getattr(make, name)
    if name == "LEFT_OUT":
        from farm.bundles.resolve import LEFT_OUT

        return LEFT_OUT
    raise AttributeError(name)


__all__ = ["LEFT_OUT", "STRIP", "make_bundle", "read_manifest", "unpack", "verify"]
