"""The known-bug ledger's last published check in the store (`farm known-bugs check --publish`): read into every
aggregation, and written with the newest matrix and page again when published."""

from __future__ import annotations

import logging

from farm.errors import KeyNotFound
from farm.model.matrix import LedgerCheck, Matrix
from farm.store import Store, matrix_key
from farm.store.layout import KNOWN_BUGS_KEY, PAGE_KEY

log = logging.getLogger("farm.report.ledger")


def read_known_bugs(store: Store) -> LedgerCheck | None:
    """The last published known-bug check, if any (one that cannot be read is left out, with a warning)."""
    try:
        return LedgerCheck.model_validate_json(store.get(KNOWN_BUGS_KEY))
    except KeyNotFound:
        return None
    except ValueError as exc:
        log.warning("%s in %s is unreadable (%s): the page shows no ledger", KNOWN_BUGS_KEY, store.url, str(exc)[:200])
        return None


def publish_known_bugs(store: Store, check: LedgerCheck) -> str | None:
    """Store ``check`` and show it on the page now: the newest matrix and the page are written again with it.
    Returns the page's key, or None when the store has no matrix yet (the next run's page shows it)."""
    from farm.report.render import render_page

    store.put(KNOWN_BUGS_KEY, check.model_dump_json(indent=1).encode(), overwrite=True)
    try:
        matrix = Matrix.model_validate_json(store.get(matrix_key()))
    except KeyNotFound:
        return None
    matrix.known_bugs = check
    data = matrix.model_dump_json().encode()
    store.put(matrix_key(), data, overwrite=True)
    store.put(matrix_key(matrix.run_id), data, overwrite=True)
    store.put(PAGE_KEY, render_page(matrix, data).encode(), overwrite=True)
    return PAGE_KEY
