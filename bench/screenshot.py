"""A picture of a rendered page (docs/matrix.png), a cell's detail open if asked.

    python -m bench.screenshot merged.html docs/matrix.png --cell CELL_ID [--width 1440 --height 900]

docs/matrix.png is the CPU smoke run and the H200 run merged (docs/page.md says how it was made).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tests.chromium import Chromium


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path, help="a page farm wrote (index.html, or `farm matrix … --html FILE`)")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--cell", help="open this cell's detail first")
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args()
    with Chromium(width=args.width, height=args.height) as browser:
        browser.open(args.page.resolve().as_uri())
        browser.wait_for("window.farm.paintedMs")
        if args.cell:
            browser.click(f'#grid td[data-id="{args.cell}"]')
            browser.wait_for('!document.querySelector("#detail").hidden')
        time.sleep(0.3)
        browser.screenshot(args.out)
    print(f"screenshot: {args.out}")


if __name__ == "__main__":
    main()
