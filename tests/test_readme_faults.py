"""The docs (docs/results.md, job-spec.md, faults.md) document every status, exit code, fault and isolation knob
a user meets."""

from __future__ import annotations

import re

from farm.cell.fault_injection import FAULTS
from farm.cli import app as cli
from farm.model.results import CellStatus
from farm.model.spec import Resources, Retries

from .conftest import docs_text

# faults.md last: the faults are looked for after its "The fault-injection engine (".
README = docs_text("results.md", "job-spec.md", "faults.md")


def test_every_final_status_is_in_the_results_table():
    for status in CellStatus:
        if status.is_terminal():
            assert re.search(rf"^\| `{status.value}` \|", README, re.M), status.value


def test_every_exit_code_is_in_the_table():
    for code in (0, cli.EXIT_FARM_ERROR, cli.EXIT_CELLS_NOT_RUN, cli.EXIT_SPOOLED, 130):
        assert re.search(rf"^\| {code} \|", README, re.M), code


def test_resources_retries_and_faults_are_documented():
    for field in [*Resources.model_fields, *Retries.model_fields, "start_timeout_s", "timeout_s"]:
        assert f"`{field}`" in README, field
    for fault in FAULTS:
        assert fault in README.split("The fault-injection engine (")[-1], fault
