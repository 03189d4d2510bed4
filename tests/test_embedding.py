# -*- test-case-name: tests.test_embedding -*-
"""
End-to-end: the embedding example (C{docs/embed_example.py}), a stock
twisted.web C{Site} with a L{lbtwist.web.PoolResource} at C{/api/}, run as
a real process in front of a real backend.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.harness import (
    PROJECT_ROOT,
    ScriptedBackend,
    exchange,
    parseResponse,
    request,
)

EXAMPLE = os.path.join(PROJECT_ROOT, "docs", "embed_example.py")
_LISTENING = re.compile(r"^listening on 127\.0\.0\.1:(\d+)$")


class EmbeddedExample:
    """
    C{docs/embed_example.py} running in a subprocess, its output collected.
    """

    def __init__(self, owner: SynchronousTestCase, urls: list[str]) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = PROJECT_ROOT + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
        )
        env["PYTHONUNBUFFERED"] = "1"
        self.lines: list[str] = []
        self._condition = threading.Condition()
        self.process = subprocess.Popen(
            [sys.executable, EXAMPLE, *urls],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        owner.addCleanup(self.stop)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = self._waitForPort(10.0)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            with self._condition:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._condition.notify_all()
        with self._condition:
            self._condition.notify_all()

    def output(self) -> str:
        with self._condition:
            return "\n".join(self.lines)

    def _waitForPort(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        with self._condition:
            while True:
                for line in self.lines:
                    found = _LISTENING.match(line)
                    if found:
                        return int(found.group(1))
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._reader.is_alive():
                    break
                self._condition.wait(min(remaining, 0.2))
        self.stop()
        raise AssertionError(
            "the example did not say where it listens:\n" + self.output()
        )

    def stop(self) -> None:
        """
        Kill the example (it has no state worth a graceful exit).
        """
        process = self.process
        if process.poll() is None:
            process.kill()
        process.wait(10)
        self._reader.join(5)
        if process.stdout is not None:
            process.stdout.close()


class EmbeddingExampleTests(SynchronousTestCase):
    """
    The example proxies C{/api/...} to its pool with lbtwist's forwarding
    rules and serves C{/} itself.
    """

    def setUp(self) -> None:
        self.backend = ScriptedBackend("b1")
        self.addCleanup(self.backend.close)
        self.example = EmbeddedExample(self, [self.backend.url])

    def test_getForwarded(self) -> None:
        """
        A GET under C{/api/} reaches the backend with its full target and
        the forwarding fields, and the client gets the backend's answer.
        """
        received, ending = exchange(
            self.example.port, request("GET", "/api/x?y=1", close=True)
        )
        response, rest = parseResponse(received)
        self.assertEqual(response.status, 200, self.example.output())
        self.assertEqual(ending, "eof")
        self.assertEqual(response.body, b"b1 GET /api/x?y=1")
        self.assertEqual(response.header(b"x-backend"), b"b1")
        self.assertEqual(rest, b"")
        [seen] = self.backend.received
        self.assertEqual((seen.method, seen.target), (b"GET", b"/api/x?y=1"))
        self.assertEqual(seen.header(b"host"), b"lb.example")
        self.assertEqual(seen.header(b"x-forwarded-for"), b"127.0.0.1")
        self.assertEqual(seen.header(b"x-forwarded-proto"), b"http")
        self.assertEqual(seen.body, b"")

    def test_postBody(self) -> None:
        """
        A POST's body reaches the backend whole, with its length, and the
        client gets the backend's answer.
        """
        body = b"name=lbtwist&" + b"x" * 5000
        received, ending = exchange(
            self.example.port,
            request(
                "POST",
                "/api/items",
                headers=[("Content-Type", "application/x-www-form-urlencoded")],
                body=body,
                close=True,
            ),
        )
        response, rest = parseResponse(received, b"POST")
        self.assertEqual(response.status, 200, self.example.output())
        self.assertEqual(ending, "eof")
        self.assertEqual(response.body, b"b1 POST /api/items")
        [seen] = self.backend.received
        self.assertEqual((seen.method, seen.target), (b"POST", b"/api/items"))
        self.assertEqual(seen.body, body)
        self.assertEqual(seen.header(b"content-length"), b"%d" % (len(body),))
        self.assertEqual(
            seen.header(b"content-type"), b"application/x-www-form-urlencoded"
        )
        self.assertEqual(seen.header(b"x-forwarded-for"), b"127.0.0.1")

    def test_rootServedByTheApplication(self) -> None:
        """
        C{/} is the application's own resource: no backend is involved.
        """
        received, ending = exchange(self.example.port, request("GET", "/", close=True))
        response, rest = parseResponse(received)
        self.assertEqual(response.status, 200, self.example.output())
        self.assertEqual(ending, "eof")
        self.assertEqual(response.body, b"Hello from the application.\n")
        self.assertIsNone(response.header(b"x-backend"))
        self.assertEqual(self.backend.received, [])
