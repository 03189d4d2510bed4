"""
End-to-end tests of a reload as a transaction through a real
C{twistd -n lbtwist}: a reload that fails before the switch leaves the
running configuration serving.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from typing import Callable

from twisted.trial.unittest import SynchronousTestCase

from .harness import Lbtwist, ScriptedBackend, parseResponses, request, webConfig
from .test_e2e_reload import LoadLoop

CHECKED = 'check = "http"\ninterval = 0.2\ntimeout = 1.0'


def checkedConfig(backends: list[ScriptedBackend]) -> str:
    """
    L{webConfig} with HTTP health checks every 0.2 s.
    """
    return webConfig(backends).replace('check = "none"', CHECKED)


def writeAtomically(path: str, text: str) -> None:
    """
    Replace the file at C{path} in one step, so a reload never reads half
    of it.
    """
    with open(path + ".new", "w") as f:
        f.write(text)
    os.replace(path + ".new", path)


def fdCount(pid: int) -> int:
    """
    How many file descriptors process C{pid} has open.
    """
    return len(os.listdir(f"/proc/{pid}/fd"))


def waitFor(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """
    Poll C{predicate} every 50 ms until it is true, failing after
    C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)


def serves(port: int, labels: set[bytes]) -> bool:
    """
    Whether a GET to C{port} is answered 200 by one of C{labels}.
    """
    try:
        return get(port) in labels
    except (AssertionError, OSError):
        return False


def get(port: int) -> bytes:
    """
    One GET to C{127.0.0.1:port}; the label of the backend that answered.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        sock.sendall(request("GET", "/x", [("Connection", "close")]))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    finally:
        sock.close()
    response = parseResponses(data)[0]
    assert response.status == 200, response.status
    return response.body.split(b" ")[0]


class ReloadTransactionTests(SynchronousTestCase):
    """
    A reload whose new frontend cannot bind changes nothing.
    """

    def setUp(self) -> None:
        self.old = [ScriptedBackend("a1")]
        self.new = [ScriptedBackend("b1")]
        for backend in self.old + self.new:
            self.addCleanup(backend.close)
        self.lb = Lbtwist(self, webConfig(self.old))

    def reload(self, text: str) -> int:
        mark = self.lb.mark()
        with open(self.lb.configPath, "w") as f:
            f.write(text)
        self.lb.process.send_signal(signal.SIGHUP)
        self.lb.waitForLine(
            re.compile("configuration reloaded|reload failed"), 10, since=mark
        )
        return mark

    def test_portTakenKeepsServing(self) -> None:
        """
        A reload moving the frontend to a port already taken fails naming the
        port, the old frontend and backends keep serving, and a following
        good reload (once the port is free) works.
        """
        blocker = socket.socket()
        self.addCleanup(blocker.close)
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        taken = blocker.getsockname()[1]
        moved = webConfig(self.new).replace(
            "tcp:0:interface=127.0.0.1", f"tcp:{taken}:interface=127.0.0.1"
        )
        mark = self.reload(moved)
        self.lb.waitForLine(
            re.compile(
                r"reload failed, the running configuration keeps serving: "
                rf'frontend "web": cannot listen on tcp:{taken}:interface=127\.0\.0\.1'
            ),
            5,
            since=mark,
        )
        self.assertNotIn("configuration reloaded", "\n".join(self.lb.lines[mark:]))
        self.assertEqual({get(self.lb.port) for _ in range(4)}, {b"a1"})

        blocker.close()
        mark = self.reload(moved)
        self.lb.waitForLine(re.compile("configuration reloaded"), 5, since=mark)
        self.assertEqual({get(taken) for _ in range(4)}, {b"b1"})
        self.assertRaises(OSError, socket.create_connection, ("127.0.0.1", self.lb.port), 2)


class ReloadUnderLoadTests(SynchronousTestCase):
    """
    Reloads that replace every backend of a pool, with health checks on,
    fail no request of a keep-alive GET loop.
    """

    def setUp(self) -> None:
        self.sets = [
            [ScriptedBackend("a1"), ScriptedBackend("a2")],
            [ScriptedBackend("b1"), ScriptedBackend("b2")],
        ]
        for backends in self.sets:
            for backend in backends:
                self.addCleanup(backend.close)
        self.labels = [{b.label.encode() for b in backends} for backends in self.sets]
        self.lb = Lbtwist(self, checkedConfig(self.sets[0]))
        # With checks on, backends start down until their first check.
        waitFor(lambda: serves(self.lb.port, self.labels[0]), 5, "a1/a2 serve")

    def test_replaceEveryBackendWithChecks(self) -> None:
        """
        A reload replacing every backend of a checked pool fails no request:
        the new backends passed their first check before the switch.
        """
        loop = LoadLoop(self.lb.port)
        try:
            time.sleep(0.3)
            mark = self.lb.mark()
            writeAtomically(self.lb.configPath, checkedConfig(self.sets[1]))
            self.lb.process.send_signal(signal.SIGHUP)
            self.lb.waitForLine(re.compile("configuration reloaded"), 5, since=mark)
            time.sleep(0.5)
        finally:
            loop.stop()
        self.assertEqual(loop.errors, [])
        self.assertEqual(set(loop.statuses), {200})
        self.assertTrue(set(loop.labels[-3:]) <= self.labels[1], loop.labels[-3:])

    def test_reloadStorm(self) -> None:
        """
        Twenty SIGHUPs in about a second, alternating two backend sets, fail
        no request; the last file written is the configuration in force;
        the descriptor count comes back to its baseline.
        """
        warmUp = LoadLoop(self.lb.port)
        time.sleep(0.3)
        warmUp.stop()
        time.sleep(0.3)
        pid = self.lb.process.pid
        baseline = fdCount(pid)
        loop = LoadLoop(self.lb.port)
        try:
            for number in range(20):
                writeAtomically(
                    self.lb.configPath, checkedConfig(self.sets[(number + 1) % 2])
                )
                self.lb.process.send_signal(signal.SIGHUP)
                time.sleep(0.05)
            # The last file written uses the first set again.
            final = self.labels[0]
            waitFor(
                lambda: set(loop.labels[-5:]) <= final and len(loop.labels) > 5,
                5,
                "the last configuration serves",
            )
            time.sleep(0.5)
        finally:
            loop.stop()
        self.assertEqual(loop.errors, [])
        self.assertEqual(set(loop.statuses), {200})
        self.assertTrue(set(loop.labels[-10:]) <= final, loop.labels[-10:])
        self.assertTrue({get(self.lb.port) for _ in range(4)} <= final)
        waitFor(
            lambda: fdCount(pid) <= baseline,
            5,
            f"descriptors back to {baseline} (now {fdCount(pid)})",
        )
