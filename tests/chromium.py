"""Headless Chromium driven over the DevTools protocol, for the page's tests and benchmark.

The protocol runs over a pipe (``--remote-debugging-pipe``: file descriptors 3 and 4 of
the browser), not a port: nothing listens, nothing to pick or leak, and no dependency
beyond the standard library and Debian's ``chromium``. Clicks and typing are real input
events dispatched by the browser (``Input.*``), not ``element.click()`` from script.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic", "--disable-extensions",
    "--disable-default-apps", "--mute-audio", "--hide-scrollbars", "--font-render-hinting=none",
    # Container /dev/shm is often tiny; Chromium then crashes tabs on large pages.
    "--disable-dev-shm-usage",
    # Tests open pages from file://; the page never fetches from there, but links must resolve.
    "--allow-file-access-from-files",
]


class ChromiumError(RuntimeError):
    pass


def chromium_path() -> str | None:
    return os.environ.get("FARM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


class Chromium:
    """One headless browser with one page. ``with Chromium() as browser: browser.open(url) …``."""

    def __init__(self, *, width: int = 1440, height: int = 900, timeout: float = 60) -> None:
        binary = chromium_path()
        if not binary:
            raise ChromiumError("chromium not found: apt-get install -y chromium (make test installs it as root), "
                                "or point FARM_CHROMIUM at a Chromium binary")
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="farm-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_fds() -> None:  # in the child: the browser reads commands on fd 3, writes replies on fd 4
            # Moved above 10 first, so that placing one end on 3 or 4 cannot close the other.
            high = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            for fd, target in zip(high, (3, 4), strict=True):
                os.dup2(fd, target, inheritable=True)

        # close_fds=False: the descriptors placed in wire_fds must survive; Python's own are close-on-exec anyway.
        self.proc = subprocess.Popen(
            [binary, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={self.profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=wire_fds, close_fds=False,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 0
        self._replies: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        self.dialogs: list[str] = []
        self.console: list[str] = []
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=True)
        self.viewport(width, height)

    def viewport(self, width: int, height: int) -> None:
        self.send("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    # ---- protocol ----
    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_browser, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                for waiting in list(self._replies.values()):
                    waiting.put({"error": {"message": "browser closed the pipe"}})
                return
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "id" in message:
                    waiting = self._replies.get(message["id"])
                    if waiting:
                        waiting.put(message)
                else:
                    self._on_event(message)

    def _on_event(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        self.events.append(message)
        if method == "Page.javascriptDialogOpening":
            self.dialogs.append(params.get("message", ""))
            threading.Thread(target=self.send, args=("Page.handleJavaScriptDialog",),
                             kwargs={"session": True, "accept": True}, daemon=True).start()
        elif method == "Runtime.consoleAPICalled":
            self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            description = details.get("exception", {}).get("description", details.get("text"))
            self.console.append(f"exception: {description}")

    def send(self, method: str, *, session: bool = False, **params: Any) -> dict[str, Any]:
        with self._lock:
            self._next_id += 1
            message_id = self._next_id
            self._replies[message_id] = queue.Queue()
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        try:
            reply = self._replies[message_id].get(timeout=self.timeout)
        except queue.Empty:
            raise ChromiumError(f"{method}: no reply within {self.timeout:.0f}s") from None
        finally:
            self._replies.pop(message_id, None)
        if "error" in reply:
            raise ChromiumError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    # ---- page ----
    def open(self, url: str, *, ready: str = "window.farm && window.farm.ready") -> None:
        """Navigate and wait until ``ready`` (a JS expression) is true."""
        self.send("Page.navigate", session=True, url=url)
        self.wait_for(ready)

    def eval(self, expression: str) -> Any:
        reply = self.send("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                          awaitPromise=True)
        if "exceptionDetails" in reply:
            description = reply["exceptionDetails"].get("exception", {}).get("description")
            raise ChromiumError(f"{expression[:80]}: {description}")
        return reply.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float | None = None) -> Any:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                value = self.eval(f"(() => {{ try {{ return {expression}; }} catch (e) {{ return null; }} }})()")
            except ChromiumError:
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise ChromiumError(f"timed out waiting for {expression}; console: {self.console[-5:]}")
            time.sleep(0.05)

    def text(self, selector: str) -> str:
        return self.eval(f"(document.querySelector({json.dumps(selector)}) || {{}}).textContent || ''")

    def count(self, selector: str, *, visible: bool = False) -> int:
        check = ".filter(e => e.offsetParent !== null || e.getClientRects().length)" if visible else ""
        return self.eval(f"[...document.querySelectorAll({json.dumps(selector)})]{check}.length")

    def rect(self, selector: str) -> dict[str, float]:
        return self.eval(f"""(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();
                              return {{x: r.x, y: r.y, width: r.width, height: r.height}}; }})()""")

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element, scrolled into view first."""
        found = self.eval(f"""(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return false;
                              e.scrollIntoView({{block: "center", inline: "center"}}); return true; }})()""")
        if not found:
            raise ChromiumError(f"no element matches {selector}")
        box = self.rect(selector)
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        on_top = self.eval(f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
                               const hit = document.elementFromPoint({x}, {y});
                               return !!hit && (hit === e || e.contains(hit)); }})()""")
        if not on_top:  # a person could not click it either: covered, or outside the viewport
            raise ChromiumError(f"{selector} is not the topmost element at ({x:.0f}, {y:.0f}); covered or out of view")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", session=True, type=kind, x=x, y=y, button="left", clickCount=1)

    def type(self, selector: str, text: str, *, replace: bool = False) -> None:
        """Focus by clicking, then type as a keyboard would (one input event per character).

        With ``replace``, first select what the field holds (Ctrl+A), so the typing replaces it.
        """
        self.click(selector)
        if replace:
            self.send("Input.dispatchKeyEvent", session=True, type="keyDown", key="a", code="KeyA", modifiers=2,
                      windowsVirtualKeyCode=65, commands=["selectAll"])
            self.send("Input.dispatchKeyEvent", session=True, type="keyUp", key="a", code="KeyA", modifiers=2)
        for char in text:
            self.send("Input.dispatchKeyEvent", session=True, type="keyDown", text=char, key=char)
            self.send("Input.dispatchKeyEvent", session=True, type="keyUp", key=char)

    def key(self, key: str, code: str | None = None, key_code: int = 0) -> None:
        for kind in ("keyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", session=True, type=kind, key=key, code=code or key,
                      windowsVirtualKeyCode=key_code)

    def scroll(self, selector: str, *, left: int = 0, top: int = 0) -> None:
        self.eval(f"document.querySelector({json.dumps(selector)}).scrollTo({left}, {top})")

    def screenshot(self, path: Path | str, *, full_page: bool = False) -> None:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
        data = self.send("Page.captureScreenshot", session=True, **params)["data"]
        Path(path).write_bytes(base64.b64decode(data))

    def close(self) -> None:
        with contextlib.suppress(ChromiumError):
            self.send("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
