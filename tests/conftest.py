"""Shared fixtures. Every server a test starts binds 127.0.0.1."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Before anything imports Ray: with this, a local Ray (and ray.cluster_utils.Cluster) binds
# only 127.0.0.1 instead of also the machine's other addresses and 0.0.0.0.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.pop("RAY_ADDRESS", None)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def farm_cli(tmp_path):
    """Run the real `farm` command in a subprocess; returns (exit code, stdout, stderr)."""
    import subprocess

    def run(*args: str, timeout: float = 900, env: dict[str, str] | None = None):
        proc = subprocess.run(
            [sys.executable, "-m", "farm", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=tmp_path,
            env={**os.environ, **(env or {})},
        )
        return proc.returncode, proc.stdout, proc.stderr

    return run


@pytest.fixture
def write_job(tmp_path):
    """Write a job spec (a YAML string) to a file and return its path."""

    def write(text: str, name: str = "job.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium for the session (Debian's `chromium`, driven over the DevTools pipe)."""
    from .chromium import Chromium

    with Chromium() as browser:
        yield browser


@pytest.fixture
def browser(chromium):
    """The session's browser, with the dialogs and console messages of earlier tests forgotten."""
    chromium.dialogs.clear()
    chromium.console.clear()
    yield chromium
    assert not [line for line in chromium.console if line.startswith("exception")], chromium.console


@pytest.fixture(scope="session")
def large_store(tmp_path_factory):
    """Three synthetic nightly runs of a 50 × 40 matrix (2000 cells each), aggregated into a local store."""
    from farm.store import LocalStore

    from .synthetic import Shape, write_runs

    store = LocalStore(tmp_path_factory.mktemp("large"))
    write_runs(store, Shape(rows=50, columns=40, nights=3))
    return store
