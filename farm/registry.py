"""One registry for everything that grows: probes, engine kinds, store backends, zoo architectures.

A registry maps names to entries. Built-ins register exactly as an outside plug-in would,
with the decorator or a call::

    from farm.registry import PROBES

    @PROBES.register("my-probe")
    def my_probe(ctx): ...

Entries may be *lazy*: ``registry.lazy("name", "package.module:attribute")`` imports the
module only when the entry is first asked for. A registry may name a ``builtins`` module,
imported on first lookup (importing it registers the built-ins), and an entry-point
``group``: a separately installed package adds entries by declaring, in its pyproject::

    [project.entry-points."farm.probes"]
    my-probe = "my_package.probes:my_probe"

Unknown names get "Did you mean …? Available: …" in the registry's own error class.

The well-known registries live here, not in the packages that fill them, so that the job
model can validate names against them without importing those packages (the layers of
``docs/architecture.md``): the spec asks ``PROBES`` which probes exist; the ``farm.probes``
package fills it when first asked.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from farm.errors import FarmError, did_you_mean

T = TypeVar("T")


class _Lazy:
    __slots__ = ("target",)

    def __init__(self, target: str) -> None:
        self.target = target

    def load(self) -> Any:
        module, _, attribute = self.target.partition(":")
        loaded: Any = importlib.import_module(module)
        for part in filter(None, attribute.split(".")):
            loaded = getattr(loaded, part)
        return loaded


class Registry(Generic[T]):
    """Named entries of one kind.

    Args:
        what: the entries' kind in messages ("probe", "engine kind").
        builtins: a module imported on first lookup; importing it registers the built-in entries.
        group: the entry-point group plug-in packages declare entries in.
        error: the exception an unknown or twice-registered name raises.
    """

    def __init__(self, what: str, *, builtins: str | None = None, group: str | None = None,
                 error: type[Exception] = FarmError) -> None:
        self.what = what
        self.builtins = builtins
        self.group = group
        self.error = error
        self._entries: dict[str, T | _Lazy] = {}
        self._loaded = False

    def register(self, name: str, entry: T | None = None) -> Any:
        """Add ``entry`` under ``name``; without ``entry``, a decorator that adds what it decorates."""
        if entry is not None:
            self._add(name, entry)
            return entry

        def decorate(obj: T) -> T:
            self._add(name, obj)
            return obj

        return decorate

    def lazy(self, name: str, target: str) -> None:
        """Add an entry loaded on first use: ``"module:attribute"``."""
        self._add(name, _Lazy(target))

    def _add(self, name: str, entry: T | _Lazy) -> None:
        if name in self._entries:
            raise self.error(f"{self.what} {name!r} is registered twice; pick another name for the new one")
        self._entries[name] = entry

    def unregister(self, name: str) -> None:
        """Remove an entry (a test's temporary kind); no error if it is not there."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """The entry called ``name``, loading it if lazy; the registry's error with the closest names if unknown."""
        self._load()
        if name not in self._entries:
            raise self.error(f"unknown {self.what} {name!r}.{did_you_mean(name, self._entries)}")
        entry = self._entries[name]
        if isinstance(entry, _Lazy):
            entry = self._entries[name] = entry.load()
        return entry

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        """Every entry, in the order registered (built-ins first, then entry points)."""
        self._load()
        return [(name, self.get(name)) for name in list(self._entries)]

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # before importing: the built-ins' own lookups must not recurse
        if self.builtins:
            try:
                importlib.import_module(self.builtins)
            except BaseException:
                self._loaded = False
                raise
        if self.group:
            for point in importlib.metadata.entry_points(group=self.group):
                if point.name not in self._entries:  # a built-in keeps its name
                    self._entries[point.name] = _Lazy(point.value)


# Filled by farm.probes (one module a probe); the job spec validates `probes:` against it.
PROBES: Registry[Any] = Registry("probe", builtins="farm.probes", group="farm.probes")
