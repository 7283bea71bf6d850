"""The static page, rendered from ``matrix.json`` alone so it can be served straight from the store.

The template, stylesheet and script live in ``dashboards/`` and are inlined: the page
is one file with no build step, no CDN and nothing to fetch, so it works from a bucket,
from ``farm dashboard`` and opened as a file. The matrix is embedded whole, as
gzip-compressed base64 that the page's script inflates (``DecompressionStream``): a
50 × 40 matrix is ~1.8 MB of JSON but ~0.25 MB this way, and base64 holds no character
that HTML could act on. The script puts strings from results into the page only as
text (``textContent``), so a result containing ``<script>`` shows as text. The few
strings the template writes itself (title, fallbacks) go through Jinja2 autoescaping.
And the page's Content-Security-Policy lets only its own script run (by hash).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
from pathlib import Path

import jinja2

from farm.errors import PageError, translated
from farm.model.matrix import Matrix
from farm.version import __version__

TEMPLATE = "index.html.j2"
ASSETS = ("style.css", "app.js")


def dashboards_dir() -> Path:
    """The shipped templates: inside the installed package, or the repository's dashboards/."""
    for candidate in (Path(__file__).parents[1] / "dashboards", Path(__file__).parents[2] / "dashboards"):
        if (candidate / TEMPLATE).exists():
            return candidate
    raise FileNotFoundError(f"{TEMPLATE} not found beside the farm package; reinstall farm (pip install -e .)")


def embed(matrix_json: bytes) -> str:
    """``matrix.json`` as the page carries it (``mtime=0``: the same matrix gives the same page)."""
    # Level 6: at 100 000 cells level 9 took 2.4 s instead of 1.1 s for a page 6 % smaller (8.5 vs 9.0 MB gzipped).
    return base64.b64encode(gzip.compress(matrix_json, compresslevel=6, mtime=0)).decode("ascii")


def embedded_matrix(page: str) -> Matrix:
    """The matrix a rendered page carries (for tests and for anyone holding only the page)."""
    start = page.index('id="matrix-data"')
    data = page[page.index(">", start) + 1 : page.index("</script>", start)]
    return Matrix.model_validate_json(gzip.decompress(base64.b64decode(data)))


def render_page(matrix: Matrix, matrix_json: bytes | None = None) -> str:
    """The page for ``matrix``; ``matrix_json``: its JSON if the caller has it already (a 100 000-cell matrix
    takes ~0.6 s to serialise)."""
    with translated(PageError, "rendering the matrix page", jinja2.TemplateError, OSError):
        return _render(matrix, matrix_json)


def _render(matrix: Matrix, matrix_json: bytes | None) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(dashboards_dir()),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    style, script = ((dashboards_dir() / name).read_text() for name in ASSETS)
    if "</script" in script.lower():
        raise ValueError("dashboards/app.js must not contain '</script': it is inlined into the page")
    script_hash = "sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    return env.get_template(TEMPLATE).render(
        matrix=matrix, style=style, script=script, script_hash=script_hash,
        data=embed(matrix_json or matrix.model_dump_json().encode()), farm_version=__version__,
    )
