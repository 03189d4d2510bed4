"""
Tests for L{lbtwist._http.writer.SocketWriter}.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.internet.tcp import Connection
from twisted.trial.unittest import SynchronousTestCase

from lbtwist._http.writer import SocketWriter


class _Recording(Connection):
    """
    A TCP connection that records what goes through C{transport.write}.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock, None, MemoryReactor())  # type: ignore[no-untyped-call]
        self.written: list[bytes] = []

    def write(self, data: Any) -> None:
        self.written.append(data)


class SocketWriterTests(SynchronousTestCase):
    """
    Direct writes to a plain TCP connection, and the fall back to the
    transport.
    """

    def pair(self) -> tuple[socket.socket, socket.socket]:
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)
        client = socket.create_connection(listener.getsockname(), timeout=5)
        self.addCleanup(client.close)
        server, _ = listener.accept()
        self.addCleanup(server.close)
        server.setblocking(False)
        client.settimeout(5)
        return server, client

    def test_directAndNoDelay(self) -> None:
        """
        A plain TCP connection is written to at once, with Nagle's algorithm
        off (a head and a body written apart must not wait for each other's
        acknowledgement).
        """
        server, client = self.pair()
        transport = _Recording(server)
        writer = SocketWriter(transport)
        self.assertTrue(writer.direct)
        self.assertTrue(server.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.write(b"head")
        writer.write(b"body")
        self.assertEqual(transport.written, [])
        self.assertEqual(client.recv(100), b"headbody")

    def test_fallsBackForGood(self) -> None:
        """
        Once the kernel does not take everything, the rest and every later
        write go through the transport, in order.
        """
        server, client = self.pair()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        transport = _Recording(server)
        writer = SocketWriter(transport)
        big = b"x" * (8 * 1024 * 1024)
        writer.write(big)
        self.assertFalse(writer.direct)
        self.assertEqual(len(transport.written), 1)
        self.assertTrue(big.endswith(transport.written[0]))
        writer.write(b"after")
        self.assertEqual(transport.written[-1], b"after")

    def test_otherTransports(self) -> None:
        """
        Anything but a plain TCP connection (TLS, wrappers, test doubles) is
        written to through C{transport.write}.
        """
        transport = StringTransport()
        writer = SocketWriter(transport)
        self.assertFalse(writer.direct)
        writer.write(b"data")
        self.assertEqual(transport.value(), b"data")
