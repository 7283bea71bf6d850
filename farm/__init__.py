"""farm: a compatibility test farm for vLLM.

The public surface is a few verbs; everything else is implementation:

    job = farm.load_job("jobs/smoke.yaml")
    cells = farm.expand(job)
    outcome = farm.run(job)                 # local Ray unless RAY_ADDRESS is set
    farm.aggregate(outcome.store, outcome.run_id)
"""

__version__ = "0.1.0"

from farm.aggregate import aggregate, build_matrix, load_matrix  # noqa: E402
from farm.cells import Cell, expand  # noqa: E402
from farm.driver import run  # noqa: E402
from farm.errors import FarmError, JobSpecError, StoreError, ZooError  # noqa: E402
from farm.render import render_page as render  # noqa: E402
from farm.spec import load_job  # noqa: E402
from farm.store import open_store  # noqa: E402

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
