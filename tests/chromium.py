"""
Headless Chromium driven through the DevTools protocol, for tests that
measure what a browser really lays out.

L{HeadlessChromium} starts C{/usr/bin/chromium} (Debian's C{chromium}) with
C{--remote-debugging-port=0}, reads the port it chose from
C{DevToolsActivePort} in its profile directory, and talks to one page over
a WebSocket (the C{websockets} test dependency).  L{chromiumOrSkip} says
whether a test may run: without Chromium it is skipped, except in CI
(C{CI=true}), where a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from typing import Any

from twisted.trial.unittest import SkipTest
from websockets.sync.client import ClientConnection, connect

CHROMIUM = "/usr/bin/chromium"


def chromiumOrSkip() -> str:
    """
    @return: The path of Chromium.
    @raise SkipTest: If it is not installed and this is not CI.
    @raise AssertionError: If it is not installed and C{CI=true}.
    """
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    reason = f"{CHROMIUM} is missing (Debian package chromium; .ci/run installs it)"
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        raise AssertionError(f"CI=true but {reason}")
    raise SkipTest(reason)


class HeadlessChromium:
    """
    A headless Chromium with one page, controlled through DevTools.
    """

    def __init__(self, timeout: float = 30.0) -> None:
        """
        Start Chromium and connect to its first page.

        @param timeout: How long to wait for it to start, and for each
            command.
        """
        self._timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="lbtwist-chromium-")
        self._process = subprocess.Popen(
            [
                chromiumOrSkip(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
                f"--user-data-dir={self._profile}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._next = 0
        self._connections = ExitStack()
        self._socket: ClientConnection | None = None
        try:
            port = self._port()
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/json/list", timeout=timeout
            ) as response:
                targets = json.load(response)
            [page] = [t for t in targets if t.get("type") == "page"][:1]
            self._socket = self._connections.enter_context(
                connect(
                    page["webSocketDebuggerUrl"], open_timeout=timeout, max_size=None
                )
            )
            self.command("Page.enable")
            self.command("Runtime.enable")
        except BaseException:
            self.close()
            raise

    def _port(self) -> int:
        """
        @return: The DevTools port Chromium chose, from C{DevToolsActivePort}.
        """
        path = os.path.join(self._profile, "DevToolsActivePort")
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise AssertionError(
                    f"chromium exited with status {self._process.returncode}"
                )
            try:
                with open(path) as f:
                    first = f.readline().strip()
                if first:
                    return int(first)
            except FileNotFoundError:
                pass
            time.sleep(0.05)
        raise AssertionError("chromium did not write DevToolsActivePort")

    def command(self, method: str, **params: Any) -> dict[str, Any]:
        """
        Send one DevTools command and wait for its result, skipping events.

        @param method: E.g. C{"Page.navigate"}.
        @param params: Its parameters.
        @return: Its result.
        """
        assert self._socket is not None
        self._next += 1
        number = self._next
        self._socket.send(json.dumps({"id": number, "method": method, "params": params}))
        deadline = time.monotonic() + self._timeout
        while True:
            message = json.loads(
                self._socket.recv(timeout=max(0.0, deadline - time.monotonic()))
            )
            if message.get("id") == number:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    def waitFor(self, event: str) -> dict[str, Any]:
        """
        Wait for a DevTools event.

        @param event: E.g. C{"Page.loadEventFired"}.
        @return: Its parameters.
        """
        assert self._socket is not None
        deadline = time.monotonic() + self._timeout
        while True:
            message = json.loads(
                self._socket.recv(timeout=max(0.0, deadline - time.monotonic()))
            )
            if message.get("method") == event:
                params: dict[str, Any] = message.get("params", {})
                return params

    def open(self, url: str, width: int, height: int) -> None:
        """
        Load a page in a window of the given size and wait until it loaded.

        @param url: The page.
        @param width: The viewport's width in CSS pixels.
        @param height: Its height.
        """
        self.command(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.command("Page.navigate", url=url)
        self.waitFor("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """
        Evaluate JavaScript in the page.

        @param expression: An expression; its value must be JSON.
        @return: Its value.
        """
        result = self.command(
            "Runtime.evaluate", expression=expression, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"JavaScript failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: str) -> None:
        """
        Save a PNG of the viewport.

        @param path: Where.
        """
        import base64

        data = self.command("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self) -> None:
        """
        Close the connection, stop Chromium and remove its profile.
        """
        self._connections.close()
        self._socket = None
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        shutil.rmtree(self._profile, ignore_errors=True)
