"""Benchmark: the page for a synthetic 50 × 40 matrix — weight, aggregation time, render time in Chromium.

    python -m bench.page                               # from the repository root
    python -m bench.page --nights 10 --screenshot docs/matrix.png

Writes synthetic nightly runs (tests/synthetic.py) into a temporary local store,
aggregates them as the driver does, then opens the latest page in headless Chromium
(tests/chromium.py) several times from file:// and reports the median times the page
itself measures: its script done (data inflated, grid and filters built) and the
first frame after that (layout and paint of the 2000 cells).
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import tempfile
import time
from pathlib import Path

from farm.report.aggregate import aggregate, load_matrix
from farm.store import LocalStore
from tests.chromium import Chromium
from tests.synthetic import Shape, write_runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50)
    parser.add_argument("--columns", type=int, default=40)
    parser.add_argument("--nights", type=int, default=3, help="runs of the job, for history and changes")
    parser.add_argument("--loads", type=int, default=7, help="page loads to take the median of")
    parser.add_argument("--screenshot", type=Path, help="write a screenshot of the page with a regressed cell open")
    parser.add_argument("--store", type=Path, help="keep the synthetic store here (default: a temporary directory)")
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args()

    root = args.store or Path(tempfile.mkdtemp(prefix="farm-bench-page-"))
    store = LocalStore(root)
    last = write_runs(store, Shape(args.rows, args.columns, args.nights))[-1]
    started = time.perf_counter()
    aggregate(store, last)  # again, timed: what the driver does at the end of a run
    aggregate_s = time.perf_counter() - started
    matrix = load_matrix(store)
    page = store.get("index.html")
    print(f"matrix {len(matrix.rows)} × {len(matrix.columns)} = {len(matrix.cells)} cells, {args.nights} runs of history")
    print(f"aggregate (read {len(matrix.cells)} results, history, write matrix + page): {aggregate_s:.2f} s")
    print(f"page: {len(page) / 1024:.0f} KB ({len(gzip.compress(page)) / 1024:.0f} KB gzipped); "
          f"matrix.json beside it: {len(store.get(matrix.matrix_key)) / 1024:.0f} KB")

    with Chromium(width=args.width, height=args.height) as browser:
        script, painted = [], []
        for _ in range(args.loads):
            browser.open((root / "index.html").as_uri())
            browser.wait_for("window.farm.paintedMs")
            done, frame = browser.eval("[window.farm.renderMs, window.farm.paintedMs]")
            script.append(done)
            painted.append(frame)
        print(f"render in Chromium (median of {args.loads} loads from file://): script done {statistics.median(script):.0f} ms, "
              f"first frame after it {statistics.median(painted):.0f} ms after navigation start")
        if args.screenshot:
            regressed = next((c.cell_id for c in (matrix.changes.regressions if matrix.changes else [])
                              if c.after == "fail" and c.after_signature), None) or matrix.cells[0].cell_id
            browser.click(f'#grid td[data-id="{regressed}"]')
            browser.wait_for('!document.querySelector("#detail").hidden')
            browser.eval('document.querySelector("#grid-wrap").scrollTo(0, 0)')
            time.sleep(0.3)
            browser.screenshot(args.screenshot)
            print(f"screenshot: {args.screenshot}")
    print(f"store: {root}")


if __name__ == "__main__":
    main()
