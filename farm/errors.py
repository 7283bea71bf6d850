"""One error tree for the farm.

    FarmError            anything the farm itself reports to a user
    ├── JobSpecError     a job spec that does not validate (names the field and what is valid)
    ├── StoreError       the result store cannot be read or written
    │   ├── StoreUnavailable  the store cannot be reached right now (network, server down, 5xx
    │   │                     after botocore's retries); a run spools results and flushes later
    │   ├── KeyExists        a create-once write found its key taken (a result is written once)
    │   └── KeyNotFound      a key that is not in the store
    ├── ZooError         a tiny-model zoo item is unknown or cannot be built
    ├── EngineEnvError   an engine environment cannot be prepared
    │   └── EnvBuildError    ... on a node (build, version check): its cells get ``env_error`` with the log tail
    ├── ResourceError    the cluster has no node that can hold a cell's request (checked before anything runs)
    ├── SubmitError      a job cannot be submitted to a Ray cluster (arguments, unreachable job server)
    ├── BisectError      a bisection cannot start or go on (bad --good/--bad, same outcome on both ends)
    ├── BundleError      an offline engine bundle cannot be made, verified or unpacked
    ├── PageError        the matrix page cannot be rendered or served (template, port taken)
    ├── WebhookError     a chat webhook is not a URL, refuses the post or cannot be reached
    └── UsageError       a command line that asks for something contradictory or incomplete

Every message says what is wrong *and* what to do about it. The CLI prints a
FarmError as one line and exits 1; the traceback only with ``--debug``.
Failures of the engine under test are never FarmErrors: they are results.

Lower-level exceptions (an ``OSError`` while packing a bundle, a template error while rendering
the page) are translated where the farm calls into them, with ``translated``, the way httpx maps
its transport's exceptions: the user sees one line naming what the farm was doing.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


class FarmError(Exception):
    """Base of every error the farm reports to its user."""


class JobSpecError(FarmError):
    """A job spec is invalid."""


class StoreError(FarmError):
    """The result store cannot be read or written."""


class StoreUnavailable(StoreError):
    """The store cannot be reached now; the same call may succeed later."""


class KeyExists(StoreError):
    """A create-once write found its key taken."""


class KeyNotFound(StoreError):
    """The key is not in the store."""


class ZooError(FarmError):
    """A zoo item is unknown or cannot be built."""


class EngineEnvError(FarmError):
    """An engine environment cannot be prepared."""


class EnvBuildError(EngineEnvError):
    """An engine environment could not be prepared on a node; its cells get ``env_error``.

    Args:
        message: what is wrong and what to do, one paragraph.
        log_tail: the end of the build's log (pip's resolver error, a version check).
        cached: the failure was recorded by an earlier build and not retried now.
    """

    def __init__(self, message: str, log_tail: str = "", *, cached: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.log_tail = log_tail
        self.cached = cached


class ResourceError(FarmError):
    """No node of the cluster can hold what a cell asks for."""


class SubmitError(FarmError):
    """A job cannot be submitted to a Ray cluster."""


class BisectError(FarmError):
    """A bisection cannot start or go on."""


class BundleError(FarmError):
    """An offline engine bundle cannot be made, verified or unpacked (``farm bundle``)."""


class PageError(FarmError):
    """The matrix page cannot be rendered or served."""


class WebhookError(FarmError):
    """A chat webhook cannot take the run's diff."""


class UsageError(FarmError):
    """A command line asks for something contradictory or incomplete; the message says what to write instead."""


@contextmanager
def translated(into: type[FarmError], doing: str, *errors: type[BaseException]) -> Iterator[None]:
    """Re-raise ``errors`` raised inside the block as ``into``: one line, ``"<doing>: <what went wrong>"``.

    A FarmError passes through unchanged; the original exception stays chained for ``--debug``.
    """
    try:
        yield
    except FarmError:
        raise
    except errors as exc:
        detail = f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) and exc.strerror and exc.filename else exc
        raise into(f"{doing}: {type(exc).__name__}: {detail}") from exc


def did_you_mean(name: str, available: Iterable[str]) -> str:
    """A suffix for "unknown name" errors: the closest match and the full list."""
    options = sorted(available)
    close = difflib.get_close_matches(name, options, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"{hint} Available: {', '.join(options)}."
