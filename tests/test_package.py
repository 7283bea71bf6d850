"""The package's public surface, and what a cell's actor process pays to import the farm."""

import subprocess
import sys

import pytest

import farm


@pytest.mark.parametrize("name", farm.__all__)
def test_public_names_resolve(name: str) -> None:
    assert getattr(farm, name) is not None


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        farm.nope  # noqa: B018


def test_cell_actor_imports_no_page_or_aggregation() -> None:
    # Every cell's process imports farm.cell.actor before its engine starts; the page's
    # templates and the aggregation are the driver's business (bench/RESULTS.md, cell overhead).
    code = ("import sys, farm.cell.actor; "
            "print(sorted(m for m in ('jinja2', 'farm.report.aggregate', 'farm.report.render', 'farm.report.history', 'farm.runner.scheduler') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_all_names_every_lazy_export() -> None:
    assert sorted(farm.__all__) == sorted([*farm._EXPORTS, "__version__"])
