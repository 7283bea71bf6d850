"""The README and docs/store.md (with docs/cluster.md) document the store's commands, flags and layout, and the
examples run as written."""

from __future__ import annotations

import re
import subprocess
import sys

from farm.cli import build_parser as _parser
from farm.store import export_key, log_key, manifest_key, matrix_key, result_key

from .conftest import docs_text

README = docs_text("store.md", "cluster.md")


def test_every_option_of_run_status_and_matrix_is_documented():
    commands = _parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in ("run", "status", "matrix"):
        for action in commands[name]._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert flag in README, f"farm {name} {flag} is not in the README or docs/"


def test_the_layout_in_the_readme_is_the_one_the_store_writes():
    for key in (manifest_key("R"), result_key("R", "C", 1), log_key("R", "C", 1), matrix_key("R"), matrix_key(),
                export_key("R", "parquet"), export_key("R", "jsonl")):
        documented = key.replace("R", "<run_id>", 1).replace("/C/", "/<cell_id>/").replace("-1.", "-<n>.")
        assert documented in README, documented


def test_the_pyarrow_example_runs(tmp_path):
    from farm.report.aggregate import aggregate
    from farm.store import open_store, put_result, write_manifest

    from .test_store_contract import make_cell, make_manifest, make_result

    store = open_store(str(tmp_path / "farm-results"))
    cell = make_cell()
    write_manifest(store, make_manifest("r", [cell]), create=True)
    put_result(store, make_result("r", cell))
    aggregate(store, "r")
    example = re.search(r"^python -c \"(import pyarrow.+)\"$", README, re.M)
    assert example, "the pyarrow example is in docs/store.md"
    out = subprocess.run([sys.executable, "-c", example.group(1)], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "pass" in out.stdout
