"""
End-to-end tests of graceful shutdown: SIGTERM to a real C{twistd -n
lbtwist} lets in-flight requests finish and closes idle connections.
"""

from __future__ import annotations

import re
import signal
import socket
import time

from twisted.trial.unittest import SynchronousTestCase

from .harness import Lbtwist, ScriptedBackend, parseResponses, request, webConfig
from .tcpharness import TCPBackend, configWith, readLine, tcpFrontend
from .tcpharness import connect as tcpConnect


# twistd stops cleanly on SIGTERM, then re-raises the signal so that its exit
# status says why it stopped (systemd counts that as a clean stop).
CLEAN_EXIT = (0, -signal.SIGTERM)


def configText(backend: ScriptedBackend, grace: float) -> str:
    return webConfig([backend]) + f"""
[settings]
grace_period = {grace}
"""


def readAll(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """
    Read until EOF; return the bytes and when EOF came.
    """
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return data, time.monotonic()


class GracefulShutdownTests(SynchronousTestCase):
    """
    SIGTERM drains before exiting.
    """

    def setUp(self) -> None:
        self.backend = ScriptedBackend("b1")
        self.addCleanup(self.backend.close)

    def connect(self, lb: Lbtwist) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", lb.port), timeout=5)
        self.addCleanup(sock.close)
        return sock

    def test_inFlightRequestCompletes(self) -> None:
        """
        A 3-second request in flight during SIGTERM completes with 200 and
        C{Connection: close}; an idle keep-alive connection is closed at
        once; no new connection is accepted; lbtwist exits cleanly.
        """
        lb = Lbtwist(self, configText(self.backend, 10.0))
        idle = self.connect(lb)
        idle.sendall(request("GET", "/first"))
        idle.settimeout(5)
        self.assertIn(b"200", idle.recv(65536))
        slow = self.connect(lb)
        slow.sendall(request("GET", "/script/slow?s=3"))
        time.sleep(0.5)
        signalled = time.monotonic()
        lb.process.send_signal(signal.SIGTERM)
        data, idleClosed = readAll(idle, 5)
        self.assertEqual(data, b"")
        self.assertLess(idleClosed - signalled, 1.5)
        time.sleep(0.3)
        self.assertRaises(
            OSError, socket.create_connection, ("127.0.0.1", lb.port), 2
        )
        data, _ = readAll(slow, 10)
        [response] = parseResponses(data)
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, b"b1 GET /script/slow?s=3")
        self.assertIn(b"close", response.connectionTokens())
        self.assertIn(lb.process.wait(timeout=10), CLEAN_EXIT)
        self.assertLess(time.monotonic() - signalled, 6)
        lb.waitForLine(re.compile(r"stopping: 1 request\(s\) in flight"), 5)

    def test_gracePeriodCutsOff(self) -> None:
        """
        What is still in flight when the grace period ends is aborted, and
        lbtwist exits.
        """
        lb = Lbtwist(self, configText(self.backend, 1.0))
        slow = self.connect(lb)
        slow.sendall(request("GET", "/script/slow?s=20"))
        time.sleep(0.3)
        signalled = time.monotonic()
        lb.process.send_signal(signal.SIGTERM)
        data, closed = readAll(slow, 10)
        self.assertEqual(data, b"")
        self.assertLess(closed - signalled, 3)
        self.assertIn(lb.process.wait(timeout=10), CLEAN_EXIT)
        lb.waitForLine(re.compile("grace period over"), 5)


class TCPGracefulShutdownTests(SynchronousTestCase):
    """
    SIGTERM with an open TCP-mode connection.
    """

    def test_tunnelKeepsGoingUntilGracePeriodEnds(self) -> None:
        """
        An open TCP connection keeps relaying during the grace period, is
        cut off when it ends, and lbtwist exits.
        """
        backend = TCPBackend("echo", "echo")
        backend.start()
        self.addCleanup(backend.close)
        lb = Lbtwist(
            self, configWith(tcpFrontend("pg", [backend]), settings={"grace_period": 1.5})
        )
        sock = tcpConnect(lb.port)
        self.addCleanup(sock.close)
        sock.sendall(b"before\n")
        self.assertEqual(readLine(sock), b"before\n")
        signalled = time.monotonic()
        lb.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        sock.sendall(b"during\n")
        self.assertEqual(readLine(sock), b"during\n")
        data, closed = readAll(sock, 10)
        self.assertEqual(data, b"")
        self.assertGreater(closed - signalled, 1.2)
        self.assertLess(closed - signalled, 4)
        self.assertIn(lb.process.wait(timeout=10), CLEAN_EXIT)
