"""Probes: checks run against a built engine, one module each (see ``farm.probes.registry``).

Importing this package registers the built-in probes into ``farm.registry.PROBES``; the
registry imports it on first lookup.
"""

from farm.probes import (  # noqa: F401  (each import registers a probe)
    base_after_lora,
    determinism,
    generate,
    load,
    lora,
    lora_reference,
    lora_unused,
    perf,
    reference,
)
from farm.probes.registry import register

BUILTIN_PROBES = ("load", "generate", "lora", "determinism", "reference", "lora_reference", "lora_unused",
                  "base_after_lora", "perf")

__all__ = ["BUILTIN_PROBES", "register"]
