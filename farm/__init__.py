"""farm: a compatibility test farm for vLLM.

The public surface is a few verbs; everything else is implementation:

    job = farm.load_job("jobs/smoke.yaml")
    cells = farm.expand(job)
    outcome = farm.run(job)                 # local Ray unless RAY_ADDRESS is set
    farm.aggregate(outcome.store, outcome.run_id)

The verbs are imported on first use (PEP 562): every cell's actor process imports
``farm.cell.actor``, and importing the whole surface there (the page's jinja2, the history,
the scheduler) cost each cell ~0.25 s of CPU before its engine started (bench/RESULTS.md).
"""

import importlib
from typing import TYPE_CHECKING, Any

from farm.version import __version__

_EXPORTS = {
    "Cell": "farm.model.cells",
    "FarmError": "farm.errors",
    "JobSpecError": "farm.errors",
    "StoreError": "farm.errors",
    "ZooError": "farm.errors",
    "aggregate": "farm.report.aggregate",
    "build_matrix": "farm.report.aggregate",
    "expand": "farm.model.cells",
    "load_job": "farm.model.spec",
    "load_matrix": "farm.report.aggregate",
    "open_store": "farm.store",
    "render": "farm.report.render",
    "run": "farm.runner.driver",
}
_RENAMED = {"render": "render_page"}

__all__ = [
    "Cell",
    "FarmError",
    "JobSpecError",
    "StoreError",
    "ZooError",
    "__version__",
    "aggregate",
    "build_matrix",
    "expand",
    "load_job",
    "load_matrix",
    "open_store",
    "render",
    "run",
]

if TYPE_CHECKING:
    from farm.errors import FarmError, JobSpecError, StoreError, ZooError
    from farm.model.cells import Cell, expand
    from farm.model.spec import load_job
    from farm.report.aggregate import aggregate, build_matrix, load_matrix
    from farm.report.render import render_page as render
    from farm.runner.driver import run
    from farm.store import open_store


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'farm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), _RENAMED.get(name, name))
    globals()[name] = value
    return value
