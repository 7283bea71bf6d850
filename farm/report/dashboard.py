"""`farm dashboard`: serve the store's page on 127.0.0.1 and re-render it when new results arrive.

The page is the same static ``index.html`` the driver writes into the store; this only
serves the store (any backend, through ``Store.get``) and keeps the page current while
a run is in flight: every ``interval`` seconds it lists ``runs/``, and when the newest
run (by its manifest's start) has new result keys, it re-aggregates that run, which
rewrites ``matrix/<run>.json``, ``matrix/latest.json`` and ``index.html``. The page
asks ``/_farm/version`` and reloads itself when the version moves; opened from a
bucket or a file, that request fails once and the page stays static.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from pydantic import ValidationError

from farm.errors import FarmError, PageError, StoreError, StoreUnavailable
from farm.model.results import RunManifest
from farm.report.aggregate import aggregate
from farm.store import Store
from farm.store.layout import PAGE_KEY, RUNS_PREFIX, manifest_key, parse_run_document

VERSION_PATH = "_farm/version"
_TYPES = {".json": "application/json", ".log": "text/plain; charset=utf-8", ".html": "text/html; charset=utf-8"}


class Watcher:
    """Re-aggregates the newest run whenever its set of result keys changes."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.version = "0"
        self.current: str | None = None  # the run the page shows
        self._seen: tuple[str, int, str] | None = None
        self._started: dict[str, datetime] = {}  # run → start, from its manifest (read once per run)

    def poll(self) -> bool:
        """Look at the store once; True when the page was re-rendered."""
        manifests: set[str] = set()
        cells: dict[str, list[str]] = {}
        for key in self.store.list(RUNS_PREFIX):
            parsed = parse_run_document(key)
            if not parsed:
                continue
            run_id, rest = parsed
            if rest == "manifest.json":
                manifests.add(run_id)
            else:
                cells.setdefault(run_id, []).append(key)
        for run_id in manifests - self._started.keys():
            try:
                manifest = RunManifest.model_validate_json(self.store.get(manifest_key(run_id)))
            except (StoreError, ValidationError):
                continue  # a manifest being written or damaged: try again next time
            self._started[run_id] = manifest.started_at
        known = [r for r in manifests if r in self._started]
        if not known:
            return False
        newest = max(known, key=lambda r: (self._started[r], r))
        keys = sorted(cells.get(newest, []))
        seen = (newest, len(keys), hashlib.sha256("\n".join(keys).encode()).hexdigest())
        if seen == self._seen:
            return False
        aggregate(self.store, newest, exports=False)  # the page only: exports are written at the end of a run
        self._seen, self.current = seen, newest
        self.version = seen[2][:16]
        return True


# The names a browser on this machine uses for a loopback server. A page elsewhere can make a browser send
# requests here under its own name (DNS rebinding: attacker.example resolving to 127.0.0.1), which then reads
# the store's results and logs as its own origin: such requests are refused by their Host header.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
# For everything but the page: nothing in a log or a JSON file runs when opened in a browser.
INERT_CSP = "default-src 'none'; sandbox"
_PAGE_CSP = re.compile(rb'<meta http-equiv="Content-Security-Policy" content="([^"]*)">')


def host_allowed(host: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether a request's Host header names this server (any port): a loopback name or one the user allowed.
    HTTP/1.0 clients send none; browsers always do."""
    if host is None:
        return True
    name = host.strip().lower()
    if not name.startswith("["):
        name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
    elif "]:" in name:
        name = name.rsplit(":", 1)[0]
    return name in allowed


def make_handler(store: Store, watcher: Watcher, allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "farm-dashboard"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._respond(body=True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._respond(body=False)

        def _respond(self, *, body: bool) -> None:
            if not host_allowed(self.headers.get("Host"), allowed_hosts):
                text = (f"farm dashboard answers only {', '.join(allowed_hosts)} as its Host; "
                        "add a name with --allow-host NAME\n")
                return self._send(HTTPStatus.MISDIRECTED_REQUEST, text.encode(), "text/plain; charset=utf-8", body)
            key = unquote(urlsplit(self.path).path).lstrip("/") or PAGE_KEY
            if key == VERSION_PATH:
                return self._send(HTTPStatus.OK, watcher.version.encode(), "text/plain; charset=utf-8", body)
            if not _safe_key(key):
                return self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8", body)
            try:
                data = store.get(key)
            except StoreUnavailable as exc:
                return self._send(HTTPStatus.SERVICE_UNAVAILABLE, f"{exc}\n".encode(), "text/plain; charset=utf-8", body)
            except StoreError:
                text = (f"no page yet: the store {store.url} has no run; start one with "
                        f"`farm run JOB --store {store.url}`\n") if key == PAGE_KEY else "not found\n"
                return self._send(HTTPStatus.NOT_FOUND, text.encode(), "text/plain; charset=utf-8", body)
            suffix = key[key.rfind("."):] if "." in key.rsplit("/", 1)[-1] else ""
            kind = _TYPES.get(suffix) or mimetypes.guess_type(key)[0] or "application/octet-stream"
            self._send(HTTPStatus.OK, data, kind, body)

        def _send(self, status: HTTPStatus, data: bytes, kind: str, body: bool) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")  # results change under a live run
            self.send_header("X-Content-Type-Options", "nosniff")  # a log is text, whatever it contains
            page_policy = _PAGE_CSP.search(data[:4096]) if kind.startswith("text/html") else None
            # The page's own policy (its script by hash) also as a header; anything else is inert.
            self.send_header("Content-Security-Policy", page_policy.group(1).decode() if page_policy else INERT_CSP)
            self.end_headers()
            if body:
                self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # a page polls every 2 s: request lines would drown the terminal

    return Handler


def _safe_key(key: str) -> bool:
    """A store key a browser may ask for: no parent, hidden (temp files of writes) or empty segments."""
    parts = key.split("/")
    return "\\" not in key and "\0" not in key and all(p and not p.startswith(".") for p in parts)


def _say(line: str) -> None:
    print(line, flush=True)


def serve(store: Store, *, port: int, interval: float = 2.0, say: Callable[[str], None] = _say,
          allow_hosts: tuple[str, ...] = ()) -> None:
    """Serve ``store`` on 127.0.0.1:``port`` (0: any free port) until interrupted, re-rendering as results arrive;
    requests must name a loopback host, or one of ``allow_hosts``."""
    watcher = Watcher(store)
    _poll(watcher)
    try:
        # 127.0.0.1 only: the page shows error messages and logs from the cluster; sharing it is the bucket's job.
        allowed = LOOPBACK_HOSTS + tuple(h.lower() for h in allow_hosts)
        server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(store, watcher, allowed))
    except OSError as exc:
        raise PageError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}; pick another port with --port "
                        "(0 picks a free one)") from exc
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="farm-dashboard", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    shows = f"run {watcher.current}" if watcher.current else "no run yet"
    say(f"farm dashboard: {url} (store {store.url}, {shows}); re-renders when new results arrive; Ctrl-C stops")
    try:
        while True:
            time.sleep(interval)
            if _poll(watcher):
                say(f"re-rendered run {watcher.current}")
    finally:
        server.shutdown()
        server.server_close()


def _poll(watcher: Watcher) -> bool:
    try:
        return watcher.poll()
    except (FarmError, ValidationError) as exc:  # an unreadable store or a damaged result: keep the last page
        print(f"farm dashboard: {str(exc).splitlines()[0]}", file=sys.stderr, flush=True)
        return False
