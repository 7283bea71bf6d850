"""The rendered page as a file: self-contained, carrying matrix.json, light, and inert to hostile results.

What the page does in a browser is in test_page_browser.py.
"""

from __future__ import annotations

import base64
import hashlib
import re

from farm.report.aggregate import load_matrix
from farm.report.render import embedded_matrix
from farm.store import LocalStore

from .synthetic import HOSTILE, Shape, write_runs

PAGE_BUDGET_KB = 400  # a 50 × 40 matrix with three nights of history


def test_page_carries_matrix_json(large_store):
    page = large_store.get("index.html").decode()
    assert embedded_matrix(page) == load_matrix(large_store)


def test_page_is_self_contained(large_store):
    page = large_store.get("index.html").decode()
    assert not re.search(r"<(link|img|iframe)\b", page), "no external stylesheet, image or frame"
    assert not re.search(r"<script[^>]*\bsrc=", page), "no external script"
    assert not re.search(r"(src|href)=\"(https?:)?//", page), "no absolute URL to another host (no CDN)"
    assert "@import" not in page and "url(" not in page


def test_only_the_page_own_script_may_run(large_store):
    page = large_store.get("index.html").decode()
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy and "unsafe-inline" not in policy.split("style-src")[0]


def test_page_weight_for_50_by_40(large_store):
    matrix = load_matrix(large_store)
    assert (len(matrix.rows), len(matrix.columns), len(matrix.cells)) == (50, 40, 2000)
    kb = len(large_store.get("index.html")) / 1024
    json_kb = len(large_store.get(matrix.matrix_key)) / 1024
    print(f"\npage for 50 × 40: {kb:.0f} KB (matrix.json beside it: {json_kb:.0f} KB)")
    assert kb < PAGE_BUDGET_KB


def test_hostile_results_never_reach_the_markup(tmp_path):
    store = LocalStore(tmp_path)
    write_runs(store, Shape(rows=3, columns=12, nights=2), hostile=True, job_name="<script>alert(1)</script>")
    page = store.get("index.html").decode()
    carried = embedded_matrix(page).model_dump_json()
    assert "window.__pwned" in carried, "the hostile strings are in the data"
    for hostile in HOSTILE:
        assert hostile not in page
    assert "<script>alert(1)" not in page and "<img" not in page and "<svg" not in page
    assert "<title>farm · &lt;script&gt;alert(1)&lt;/script&gt;&#34;&gt;&lt;img src=x onerror=" in page
