"""The store interface, the registry of backends by URL scheme, and the keys.

Every backend has the same semantics, which ``tests/test_store_contract.py`` checks
against each of them:

- ``put(key, data)`` is create-if-absent and atomic: readers see the whole object or
  nothing, and a second ``put`` of the key raises ``KeyExists``. ``overwrite=True``
  replaces atomically (manifests, matrices, the page).
- ``get`` of a missing key raises ``KeyNotFound``; ``list(prefix)`` is a plain string
  prefix over keys, sorted, without the backend's own temporary objects.
- A store that cannot be reached raises ``StoreUnavailable``; other failures
  (no such bucket, bad credentials) raise ``StoreError`` saying what to do.
- Keys are ``/``-separated segments of ``[A-Za-z0-9._-]``, never ``.`` or ``..``:
  both backends refuse anything else, so nothing can escape the store's root or prefix.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from farm.errors import KeyExists, KeyNotFound, StoreError, did_you_mean
from farm.registry import Registry
from farm.settings import store_url
from farm.store.layout import MARKER_KEY

# Parallel reads: aggregation of a large run is bound by round trips, not bandwidth.
READ_WORKERS = 16


class Store(ABC):
    """A flat space of keys holding bytes; see the module docstring for the contract."""

    url: str

    @abstractmethod
    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> None:
        """Write ``data`` at ``key``; without ``overwrite``, raise ``KeyExists`` if the key is taken."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """Read a key; raise ``KeyNotFound`` naming it when it is missing."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """All keys that start with ``prefix``, sorted."""

    def exists(self, key: str) -> bool:
        try:
            self.get(key)
        except KeyNotFound:
            return False
        return True

    def get_many(self, keys: Iterable[str], workers: int = READ_WORKERS) -> Iterator[tuple[str, bytes | StoreError]]:
        """``(key, data)`` for each key, read in parallel, in the given order; a failed read yields its error."""

        def one(key: str) -> tuple[str, bytes | StoreError]:
            try:
                return key, self.get(key)
            except StoreError as exc:
                return key, exc

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="farm-store-get") as pool:
            yield from pool.map(one, keys)

    def check(self) -> None:
        """Fail now, saying what to do, if the store cannot be written (before a run spends any compute).

        Also proves that create-once holds here: the store's marker is written create-once, and
        writing it again must fail. An S3 server that ignores conditional writes fails this.
        """
        marker = json.dumps({"schema_version": 1, "kind": "farm result store"}).encode()
        for _ in range(2):  # the first write succeeds only on a new store; then one must be refused
            try:
                self.put(MARKER_KEY, marker)
            except KeyExists:
                return
        raise StoreError(f"{self.url} let {MARKER_KEY} be written twice: it ignores create-once (conditional) writes, "
                         "so results could be overwritten silently; use a server that honours If-None-Match "
                         "(AWS S3, MinIO, SeaweedFS and moto do)")

    def location(self, key: str) -> str:
        """Where a person finds ``key`` (a path or a URL)."""
        return f"{self.url.rstrip('/')}/{key}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


# ---- the registry of backends, by URL scheme ----

BackendFactory = Callable[..., Store]
# Filled by farm.store's own modules (file://, s3://); plug-in packages declare entry points.
BACKENDS: Registry[BackendFactory] = Registry("store URL scheme", builtins="farm.store", group="farm.store_backends",
                                              error=StoreError)


def register_backend(*schemes: str) -> Callable[[BackendFactory], BackendFactory]:
    """Register a store backend for URL schemes; built-ins register this way too.

    The factory is called as ``factory(url, **options)`` with the full URL and the
    options given to ``open_store`` (e.g. ``s3_endpoint``); it ignores options it has no use for.
    """

    def decorate(factory: BackendFactory) -> BackendFactory:
        for scheme in schemes:
            BACKENDS.register(scheme, factory)
        return factory

    return decorate


def backends() -> list[str]:
    return BACKENDS.names()


def open_store(url: str | None = None, *, s3_endpoint: str | None = None, **options: Any) -> Store:
    """A store from a URL: a path or ``file://PATH`` → a local directory; ``s3://bucket/prefix`` → S3.

    Args:
        url: default ``$FARM_STORE``, else ``./farm-results``.
        s3_endpoint: an S3-compatible endpoint (MinIO, SeaweedFS, …); default ``$AWS_ENDPOINT_URL``, else AWS.
    """
    url = store_url(url)
    scheme = url.split("://", 1)[0].lower() if "://" in url else "file"
    if scheme not in BACKENDS:
        raise StoreError(f"store URL scheme {scheme!r} is not supported.{did_you_mean(scheme, BACKENDS.names())} "
                         "Use a directory, file://PATH or s3://BUCKET/PREFIX")
    if s3_endpoint and scheme != "s3":
        raise StoreError(f"--s3-endpoint applies to s3:// stores, but {url!r} is a {scheme} store; "
                         f"did you mean s3://{url.removeprefix('file://').strip('/')}?")
    return BACKENDS.get(scheme)(url, s3_endpoint=s3_endpoint, **options)
