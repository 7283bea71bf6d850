"""The static page, rendered from ``matrix.json`` alone so it can be served straight from the store.

The template lives in ``dashboards/``; Jinja2 autoescaping makes every string from
results (error messages, model and adapter names) inert text.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from farm.aggregate import Matrix

TEMPLATE = "index.html.j2"


def dashboards_dir() -> Path:
    """The shipped templates: inside the installed package, or the repository's dashboards/."""
    for candidate in (Path(__file__).parent / "dashboards", Path(__file__).parent.parent / "dashboards"):
        if (candidate / TEMPLATE).exists():
            return candidate
    raise FileNotFoundError(f"{TEMPLATE} not found beside the farm package; reinstall farm (pip install -e .)")


def render_page(matrix: Matrix) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(dashboards_dir()),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    style = (dashboards_dir() / "style.css").read_text()
    return env.get_template(TEMPLATE).render(matrix=matrix, style=style)
