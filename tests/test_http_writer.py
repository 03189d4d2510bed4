"""
Tests for L{lbtwist._http.writer.SocketWriter}.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.internet.tcp import Connection
from twisted.trial.unittest import SynchronousTestCase

from lbtwist._http.writer import SocketWriter, WriteBatch


class _Recording(Connection):
    """
    A TCP connection that records what goes through C{transport.write}.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock, None, MemoryReactor())  # type: ignore[no-untyped-call]
        self.written: list[bytes] = []

    def write(self, data: Any) -> None:
        self.written.append(data)


class _Sockets(SynchronousTestCase):
    """
    A connected pair of TCP sockets on loopback.
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


class SocketWriterTests(_Sockets):
    """
    Direct writes to a plain TCP connection, and the fall back to the
    transport.
    """

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


class _Closing(_Recording):
    """
    A TCP connection that records, instead of doing, closing and aborting,
    and what the peer had received by then.
    """

    def __init__(self, sock: socket.socket, peer: socket.socket) -> None:
        super().__init__(sock)
        self.peer = peer
        self.closed: list[tuple[str, bytes]] = []

    def _received(self) -> bytes:
        self.peer.setblocking(False)
        try:
            return self.peer.recv(1000)
        except BlockingIOError:
            return b""

    def loseConnection(self) -> None:  # type: ignore[override]
        self.closed.append(("lose", self._received()))

    def abortConnection(self) -> None:
        self.closed.append(("abort", self._received()))


class WriteBatchTests(_Sockets):
    """
    With a L{WriteBatch}, while rounds of the reactor's events bring several
    writes, writes wait until the end of their round and each writer sends
    what it holds in one C{send}; while they bring one, writes go at once.
    """

    def holdingBatch(self, clock: Clock) -> WriteBatch:
        """
        A batch after a round of two writes: the next round's wait.
        """
        batch = WriteBatch(clock)
        batch.sendNow()
        batch.sendNow()
        clock.advance(0)
        self.assertTrue(batch.holding)
        return batch

    def test_heldUntilTheRoundEnds(self) -> None:
        """
        After a round of several writes, nothing is sent until the clock
        runs the end of the next round; then each writer's writes arrive
        together, in order.  After a round of one write, writes go at once
        again.
        """
        clock = Clock()
        batch = WriteBatch(clock)
        server1, client1 = self.pair()
        server2, client2 = self.pair()
        first = SocketWriter(_Recording(server1), batch)
        second = SocketWriter(_Recording(server2), batch)
        # The first round: at once.
        first.write(b"one")
        second.write(b"two")
        self.assertEqual(client1.recv(100), b"one")
        self.assertEqual(client2.recv(100), b"two")
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(0)
        self.assertTrue(batch.holding)
        # The next round: held until its end.
        first.write(b"head")
        second.write(b"other")
        first.write(b"body")
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        client1.setblocking(False)
        self.assertRaises(BlockingIOError, client1.recv, 100)
        clock.advance(0)
        client1.setblocking(True)
        self.assertEqual(client1.recv(100), b"headbody")
        self.assertEqual(client2.recv(100), b"other")
        self.assertEqual(clock.getDelayedCalls(), [])
        # A round of one write: held, and the next round's writes go at once.
        first.write(b"alone")
        clock.advance(0)
        self.assertEqual(client1.recv(100), b"alone")
        self.assertFalse(batch.holding)
        first.write(b"at once")
        self.assertEqual(client1.recv(100), b"at once")

    def test_closingSendsWhatIsHeld(self) -> None:
        """
        Closing or aborting through the writer sends what it holds first.
        """
        for how in ("lose", "abort"):
            clock = Clock()
            server, client = self.pair()
            transport = _Closing(server, client)
            writer = SocketWriter(transport, self.holdingBatch(clock))
            writer.write(b"last words")
            if how == "lose":
                writer.loseConnection()
            else:
                writer.abortConnection()
            self.assertEqual(transport.closed, [(how, b"last words")])
            # The batch's call finds nothing left to send.
            clock.advance(0)
            self.assertEqual(transport.written, [])

    def test_handOver(self) -> None:
        """
        Handing the connection over sends what is held, and every later
        write goes through the transport at once.
        """
        clock = Clock()
        server, client = self.pair()
        transport = _Recording(server)
        writer = SocketWriter(transport, self.holdingBatch(clock))
        writer.write(b"101 head")
        writer.handOver()
        self.assertFalse(writer.direct)
        self.assertEqual(client.recv(100), b"101 head")
        writer.write(b"tunnelled")
        self.assertEqual(transport.written, [b"tunnelled"])

    def test_otherTransportsAtOnce(self) -> None:
        """
        A transport that is not written to directly gets writes at once,
        batch or not.
        """
        clock = Clock()
        transport = StringTransport()
        writer = SocketWriter(transport, WriteBatch(clock))
        writer.write(b"data")
        self.assertEqual(transport.value(), b"data")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_onePerClock(self) -> None:
        """
        L{WriteBatch.forClock} gives every writer of one reactor the same
        batch.
        """
        one, other = Clock(), Clock()
        self.assertIs(WriteBatch.forClock(one), WriteBatch.forClock(one))
        self.assertIsNot(WriteBatch.forClock(one), WriteBatch.forClock(other))
