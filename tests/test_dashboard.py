"""The real `farm dashboard` command: serves the store on 127.0.0.1, re-renders as results arrive, live page."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from farm.store import LocalStore

from .synthetic import START, Shape, write_runs


@contextlib.contextmanager
def farm_dashboard(*store_args: str, cwd: Path) -> Iterator[int]:
    """The real `farm dashboard` on a free port, stopped with Ctrl-C; yields the port."""
    # stderr to a file, not a pipe nobody reads: a full pipe would block the server's last words.
    with open(cwd / "dashboard.err", "w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "farm", "dashboard", *store_args, "--port", "0", "--interval", "0.3"],
            stdout=subprocess.PIPE, stderr=err, text=True, cwd=cwd,
            # Ctrl-C must reach it however the suite was started: a shell's background job (`make test &`)
            # ignores SIGINT, and children inherit that, so Python would install no handler for it.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            line = proc.stdout.readline()
            match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
            assert match, line + (cwd / "dashboard.err").read_text()
            yield int(match.group(1))
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                code = proc.wait(timeout=30)
                assert code == 130, (code, (cwd / "dashboard.err").read_text()[-2000:])  # Ctrl-C: "farm: interrupted"
            finally:
                if proc.poll() is None:
                    proc.kill()
                    pytest.fail("farm dashboard did not stop on Ctrl-C within 30 s; its stderr: "
                                + (cwd / "dashboard.err").read_text()[-2000:])


@pytest.fixture
def dashboard(tmp_path):
    """A store with one finished run, and `farm dashboard` serving it; yields (store, port)."""
    store = LocalStore(tmp_path / "store")
    write_runs(store, Shape(rows=3, columns=4, nights=1))
    with farm_dashboard("--store", str(store.root), cwd=tmp_path) as port:
        yield store, port


def get(port: int, path: str, method: str = "GET", host: str | None = None) -> tuple[int, str, bytes]:
    return request(port, path, method, host)[:3]  # type: ignore[return-value]


def request(port: int, path: str, method: str = "GET", host: str | None = None) -> tuple[int, str, bytes, dict[str, str]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    # Sent as is: http.client does not normalise "..", as a hostile client would not; a given Host replaces its own.
    connection.request(method, path, headers={"Host": host} if host else {})
    response = connection.getresponse()
    return response.status, response.getheader("Content-Type") or "", response.read(), dict(response.getheaders())


def wait_until(check, timeout: float = 30):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
    return value


def test_serves_the_store_on_localhost_only(dashboard):
    store, port = dashboard
    status, kind, body = get(port, "/")
    assert status == 200 and kind.startswith("text/html") and body == store.get("index.html")
    status, kind, body = get(port, "/matrix/latest.json")
    assert status == 200 and kind == "application/json" and json.loads(body)["run_id"]
    result = store.list("runs/")[-1]
    assert get(port, "/" + result)[0] == 200
    status, _, body = get(port, "/", method="HEAD")
    assert status == 200 and body == b""
    listening = subprocess.run(["ss", "-Htln", f"sport = :{port}"], capture_output=True, text=True).stdout.split()
    assert f"127.0.0.1:{port}" in listening and f"0.0.0.0:{port}" not in listening and f"*:{port}" not in listening


@pytest.mark.parametrize("path", ["/../../etc/passwd", "/runs/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/matrix//latest.json",
                                  "/history/.hidden", "/runs/..%5c..%5cx", "/no-such-key.json"])
def test_nothing_outside_the_store(dashboard, path):
    _, port = dashboard
    status, _, _ = get(port, path)
    assert status == 404


def test_only_loopback_host_names_are_answered(dashboard):
    # DNS rebinding: a page on attacker.example whose name now resolves to 127.0.0.1 asks with its own Host.
    store, port = dashboard
    for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.1.attacker.example", "10.0.0.5"):
        status, _, body = get(port, "/matrix/latest.json", host=host)
        assert status == 421 and b"--allow-host" in body and b"run_id" not in body, host
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}"):
        assert get(port, "/matrix/latest.json", host=host)[0] == 200, host


def test_responses_carry_a_content_security_policy(dashboard):
    store, port = dashboard
    *_, headers = request(port, "/")
    page = store.get("index.html").decode()
    assert f'content="{headers["Content-Security-Policy"]}"' in page and "script-src 'sha256-" in headers["Content-Security-Policy"]
    for path in ("/matrix/latest.json", "/" + store.list("runs/")[-1]):
        assert request(port, path)[3]["Content-Security-Policy"] == "default-src 'none'; sandbox"


def test_an_allowed_host_name_is_answered(tmp_path):
    store = LocalStore(tmp_path / "store")
    write_runs(store, Shape(rows=2, columns=2, nights=1))
    with farm_dashboard("--store", str(store.root), "--allow-host", "farm.internal", cwd=tmp_path) as port:
        assert get(port, "/", host=f"farm.internal:{port}")[0] == 200
        assert get(port, "/", host="other.internal")[0] == 421


def test_rerenders_when_new_results_arrive_and_the_page_follows(dashboard, browser):
    store, port = dashboard
    first = json.loads(get(port, "/matrix/latest.json")[2])["run_id"]
    version = get(port, "/_farm/version")[2]
    browser.open(f"http://127.0.0.1:{port}/")
    assert first in browser.text("#meta")
    # the next night's results land in the store, with no aggregation: the dashboard must notice
    (second,) = write_runs(store, Shape(rows=3, columns=4, nights=1), start=START + timedelta(days=1),
                           aggregate_runs=False)
    wait_until(lambda: get(port, "/_farm/version")[2] != version)
    latest = json.loads(get(port, "/matrix/latest.json")[2])
    assert latest["run_id"] == second and [r["run_id"] for r in latest["history"]["runs"]] == [first, second]
    # reloaded by itself, and rendered (the meta line also names the run before the script runs)
    browser.wait_for(f'window.farm && window.farm.ready && document.title.includes("{second}")')
    assert browser.eval("window.farm.cells") == 12


def test_serves_an_s3_store_through_the_store_interface(moto_server, tmp_path):
    from farm.store import open_store

    from .s3_servers import BUCKET

    url = f"s3://{BUCKET}/dashboard-{os.getpid()}"
    store = open_store(url, s3_endpoint=moto_server.endpoint)
    (first,) = write_runs(store, Shape(rows=2, columns=3, nights=1))
    with farm_dashboard("--store", url, "--s3-endpoint", moto_server.endpoint, cwd=tmp_path) as port:
        status, kind, body = get(port, "/")
        assert status == 200 and body == store.get("index.html")
        version = get(port, "/_farm/version")[2]
        (second,) = write_runs(store, Shape(rows=2, columns=3, nights=1), start=START + timedelta(days=1),
                               aggregate_runs=False)
        wait_until(lambda: get(port, "/_farm/version")[2] != version)
        assert json.loads(get(port, "/matrix/latest.json")[2])["run_id"] == second != first


def test_an_empty_store_says_what_to_do(tmp_path):
    (tmp_path / "empty").mkdir()
    with farm_dashboard("--store", str(tmp_path / "empty"), cwd=tmp_path) as port:
        status, _, body = get(port, "/")
    assert status == 404 and b"farm run JOB --store" in body


def test_a_taken_port_is_one_line(farm_cli, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = farm_cli("dashboard", "--store", str(tmp_path), "--port", str(port), timeout=60)
    assert code == 1 and err.startswith(f"farm: error: cannot listen on 127.0.0.1:{port}") and "--port" in err


def test_the_readme_documents_the_command_and_shows_the_page():
    from farm.cli import build_parser as _parser

    from .conftest import REPO, docs_text

    readme = docs_text("page.md")
    usage = next(line for line in readme.splitlines() if line.startswith("farm dashboard ["))
    dashboard = _parser()._subparsers._group_actions[0].choices["dashboard"]  # type: ignore[union-attr]
    for action in dashboard._actions:
        for flag in action.option_strings:
            assert flag in ("-h", "--help") or flag in usage, f"farm dashboard {flag} is not in the README"
    assert "](docs/matrix.png)" in readme and (REPO / "docs" / "matrix.png").stat().st_size > 10_000
