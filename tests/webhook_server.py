"""A tiny chat-webhook server on 127.0.0.1 that records what it is sent (Slack's incoming-webhook contract)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookServer:
    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.status = 200  # what it answers; a test sets 500 to play a chat outage
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.posts.append({"path": self.path, "content_type": self.headers.get("Content-Type"),
                                     "json": json.loads(body)})
                self.send_response(server.status)
                self.end_headers()
                self.wfile.write(b"ok")  # what Slack answers

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/services/T0/B0/secret"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> WebhookServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
