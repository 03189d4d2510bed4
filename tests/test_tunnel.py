# -*- test-case-name: tests.test_tunnel -*-
"""
Tests for L{lbtwist.tunnel}.

L{FakeTCPTransport} behaves like Twisted's TCP transport where the tunnel
depends on it: a write buffer that pauses the registered producer when it
is full and resumes it when drained, half-close, a close that waits for the
buffer (and is held up by a paused producer), and C{connectionLost} that
stops the producer.  Pairs of protocols are joined with
C{twisted.test.iosim} for byte-exactness.
"""

from __future__ import annotations

import gc
import hashlib
import os
import weakref
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableDescriptor,
    INegotiated,
    IPushProducer,
    ISSLTransport,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import alsoProvides, implementer

from lbtwist.tunnel import Tunnel, TunnelTotals


@implementer(ITransport, IConsumer, IPushProducer, IHalfCloseableDescriptor)
class FakeTCPTransport:
    """
    A transport double with the producer, buffer and close behaviour of
    C{twisted.internet.abstract.FileDescriptor}.

    @ivar written: Every byte written, in order (delivered or not).
    @ivar pending: Bytes written and not yet drained.
    @ivar reading: Whether the transport reads (not paused).
    @ivar writeClosed: Half-close completed.
    @ivar aborted: C{abortConnection} was called.
    """

    def __init__(
        self,
        peer: Any = None,
        host: Any = None,
        bufferSize: int = 65536,
    ) -> None:
        self.protocol: Any = None
        self.peer = peer or IPv4Address("TCP", "192.0.2.7", 51000)
        self.host = host or IPv4Address("TCP", "127.0.0.1", 5433)
        self.bufferSize = bufferSize
        self.written = bytearray()
        self.pending = 0
        self.reading = True
        self.producer: Any = None
        self.streaming = False
        self.producerPaused = False
        self.connected = True
        self.disconnecting = False
        self.disconnected = False
        self.writeDisconnecting = False
        self.writeClosed = False
        self.aborted = False

    def connect(self, protocol: Any) -> None:
        """
        Make this the transport of a protocol.
        """
        self.protocol = protocol
        protocol.makeConnection(self)

    # What the network does.

    def drain(self) -> None:
        """
        The buffer was written out: resume a paused producer, else finish a
        requested close or half-close (as C{FileDescriptor.doWrite}).
        """
        if self.disconnected:
            return
        self.pending = 0
        if self.producer is not None and (not self.streaming or self.producerPaused):
            self.producerPaused = False
            self.producer.resumeProducing()
        elif self.disconnecting:
            self.lose()
        elif self.writeDisconnecting and not self.writeClosed:
            self.writeClosed = True
            self.protocol.writeConnectionLost()

    def receive(self, data: bytes) -> None:
        """
        Bytes arrive from the peer.
        """
        assert self.reading, "bytes delivered to a paused transport"
        self.protocol.dataReceived(data)

    def eof(self) -> None:
        """
        The peer sent end-of-file.
        """
        self.reading = False
        self.protocol.readConnectionLost()

    def lose(self, reason: type[Exception] = ConnectionDone) -> None:
        """
        The connection is closed (as C{FileDescriptor.connectionLost}).
        """
        if self.disconnected:
            return
        self.disconnected, self.connected, self.reading = True, False, False
        producer, self.producer = self.producer, None
        if producer is not None:
            producer.stopProducing()
        self.protocol.connectionLost(Failure(reason()))

    # ITransport, IConsumer, IPushProducer.

    def write(self, data: bytes) -> None:
        if not self.connected or self.writeDisconnecting:
            return
        self.written += data
        self.pending += len(data)
        if (
            self.producer is not None
            and self.streaming
            and self.pending > self.bufferSize
        ):
            self.producerPaused = True
            self.producer.pauseProducing()

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        if not self.connected or self.disconnecting:
            return
        self.reading = False
        if self.writeClosed:
            self.lose()
        else:
            self.disconnecting = True

    def loseWriteConnection(self) -> None:
        self.writeDisconnecting = True

    def abortConnection(self) -> None:
        self.aborted = True
        self.reading = False

    def getPeer(self) -> Any:
        return self.peer

    def getHost(self) -> Any:
        return self.host

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if self.producer is not None:
            raise RuntimeError("producer already registered")
        if self.disconnected:
            producer.stopProducing()
            return
        self.producer, self.streaming = producer, streaming

    def unregisterProducer(self) -> None:
        self.producer = None

    def pauseProducing(self) -> None:
        self.reading = False

    def resumeProducing(self) -> None:
        if self.connected and not self.disconnecting:
            self.reading = True

    def stopProducing(self) -> None:
        self.loseConnection()


class TunnelFixture:
    """
    A tunnel between two L{FakeTCPTransport}s, with a clock.
    """

    def __init__(self, idleTimeout: float | None = 60.0, start: bool = True) -> None:
        self.clock = Clock()
        self.totals: list[TunnelTotals] = []
        self.tunnel = Tunnel(self.clock, idleTimeout, self.totals.append)
        self.client = FakeTCPTransport()
        self.backend = FakeTCPTransport()
        self.client.connect(self.tunnel.client)
        self.backend.connect(self.tunnel.backend)
        if start:
            self.tunnel.start(self.client, self.backend)


class TunnelRelayTests(SynchronousTestCase):
    """
    Relaying bytes and backpressure.
    """

    def test_relaysBothWays(self) -> None:
        """
        Bytes from each side are written to the other, and counted.
        """
        f = TunnelFixture()
        f.client.receive(b"from client")
        f.backend.receive(b"from backend")
        f.client.receive(b"!")
        self.assertEqual(bytes(f.backend.written), b"from client!")
        self.assertEqual(bytes(f.client.written), b"from backend")
        self.assertEqual((f.tunnel.fromClient, f.tunnel.toClient), (12, 12))

    def test_startRegistersProducersAndResumes(self) -> None:
        """
        Each transport becomes the other's streaming producer, and both read
        again (the client was paused while the backend was connected).
        """
        f = TunnelFixture(start=False)
        f.client.pauseProducing()
        f.tunnel.start(f.client, f.backend)
        self.assertIs(f.client.producer, f.backend)
        self.assertIs(f.backend.producer, f.client)
        self.assertTrue(f.client.streaming and f.backend.streaming)
        self.assertTrue(f.client.reading and f.backend.reading)

    def test_startTwice(self) -> None:
        """
        A tunnel starts once.
        """
        f = TunnelFixture()
        self.assertRaises(RuntimeError, f.tunnel.start, f.client, f.backend)

    def test_pendingBytesFirst(self) -> None:
        """
        Pending bytes are written before anything received later, and
        counted.
        """
        f = TunnelFixture(start=False)
        f.tunnel.start(f.client, f.backend, b"request", b"greeting")
        f.client.receive(b" more")
        self.assertEqual(bytes(f.backend.written), b"request more")
        self.assertEqual(bytes(f.client.written), b"greeting")
        self.assertEqual((f.tunnel.fromClient, f.tunnel.toClient), (12, 8))

    def test_eventsBeforeStart(self) -> None:
        """
        Bytes and end-of-file that reach a side before C{start} are handled
        by it, after the pending bytes.
        """
        f = TunnelFixture(start=False)
        f.tunnel.backend.dataReceived(b"hello")
        f.tunnel.backend.readConnectionLost()
        self.assertEqual(bytes(f.client.written), b"")
        f.tunnel.start(f.client, f.backend, pendingToClient=b"101 ")
        self.assertEqual(bytes(f.client.written), b"101 hello")
        self.assertTrue(f.client.writeDisconnecting)

    def test_lostBeforeStart(self) -> None:
        """
        A side lost before C{start} closes the other one at C{start}.
        """
        f = TunnelFixture(start=False)
        f.backend.disconnected = True
        f.tunnel.backend.connectionLost(Failure(ConnectionLost()))
        f.tunnel.start(f.client, f.backend, pendingToClient=b"last words")
        self.assertEqual(bytes(f.client.written), b"last words")
        self.assertTrue(f.client.disconnecting)
        f.client.drain()
        self.assertEqual(f.totals[0].reason, "backend aborted")

    def test_backpressureToBackend(self) -> None:
        """
        A client whose buffer is full pauses reading from the backend until
        it drains.
        """
        f = TunnelFixture()
        f.client.bufferSize = 100
        f.backend.receive(b"x" * 60)
        self.assertTrue(f.backend.reading)
        f.backend.receive(b"x" * 60)
        self.assertFalse(f.backend.reading)
        f.client.drain()
        self.assertTrue(f.backend.reading)

    def test_backpressureToClient(self) -> None:
        """
        A backend whose buffer is full pauses reading from the client until
        it drains.
        """
        f = TunnelFixture()
        f.backend.bufferSize = 100
        f.client.receive(b"x" * 101)
        self.assertFalse(f.client.reading)
        self.assertTrue(f.backend.reading)
        f.backend.drain()
        self.assertTrue(f.client.reading)


class TunnelHalfCloseTests(SynchronousTestCase):
    """
    End-of-file in either direction, and closing.
    """

    def test_clientEOF(self) -> None:
        """
        End-of-file from the client ends writing to the backend (once its
        buffer is written); the backend's bytes still reach the client.
        """
        f = TunnelFixture()
        f.client.receive(b"query")
        f.client.eof()
        self.assertTrue(f.backend.writeDisconnecting)
        self.assertIsNone(f.backend.producer)
        self.assertFalse(f.backend.disconnecting)
        f.backend.drain()
        self.assertTrue(f.backend.writeClosed)
        self.assertEqual(bytes(f.backend.written), b"query")
        f.backend.receive(b"answer")
        self.assertEqual(bytes(f.client.written), b"answer")
        self.assertFalse(f.client.disconnecting)
        self.assertEqual(f.totals, [])

    def test_backendEOF(self) -> None:
        """
        End-of-file from the backend ends writing to the client; the
        client's bytes still reach the backend.
        """
        f = TunnelFixture()
        f.backend.receive(b"bye")
        f.backend.eof()
        self.assertTrue(f.client.writeDisconnecting)
        self.assertIsNone(f.client.producer)
        f.client.receive(b"ack")
        self.assertEqual(bytes(f.backend.written), b"ack")
        self.assertFalse(f.backend.disconnecting)

    def test_halfCloseNotHeldByPausedProducer(self) -> None:
        """
        A half-close completes even if the side that ended was paused by a
        full buffer (its producer is unregistered first).
        """
        f = TunnelFixture()
        f.backend.bufferSize = 10
        f.client.receive(b"x" * 20)
        self.assertFalse(f.client.reading)
        f.client.eof()
        f.backend.drain()
        self.assertTrue(f.backend.writeClosed)

    def test_bothEOF(self) -> None:
        """
        When both directions have ended, both connections are closed once
        their buffers are written, and the totals are reported once.
        """
        f = TunnelFixture()
        f.client.receive(b"q")
        f.client.eof()
        f.backend.drain()
        f.backend.receive(b"a")
        f.backend.eof()
        self.assertTrue(f.client.disconnecting)
        self.assertFalse(f.client.aborted or f.backend.aborted)
        # The backend's write side was closed already: it closes at once.
        self.assertTrue(f.backend.disconnected)
        self.assertEqual(f.totals, [])
        f.client.drain()
        self.assertEqual(
            f.totals,
            [TunnelTotals(fromClient=1, toClient=1, duration=0.0, reason="closed")],
        )

    def test_TLSCannotHalfClose(self) -> None:
        """
        A TLS transport (C{startTLS}: L{ISSLTransport}; a TLS wrapper:
        L{INegotiated}) is closed instead of half-closed.
        """
        for interface in (ISSLTransport, INegotiated):
            f = TunnelFixture(start=False)
            alsoProvides(f.client, interface)
            f.tunnel.start(f.client, f.backend)
            f.backend.eof()
            self.assertFalse(f.client.writeDisconnecting)
            self.assertTrue(f.client.disconnecting)

    def test_TLSUnderProtocolWrapper(self) -> None:
        """
        TLS under a protocol wrapper (e.g. the PROXY protocol's) is found.
        """
        f = TunnelFixture(start=False)
        alsoProvides(f.client, INegotiated)
        wrapper = ProtocolWrapper(WrappingFactory(Factory()), Protocol())
        wrapper.transport = f.client
        f.tunnel.start(wrapper, f.backend)
        f.backend.eof()
        self.assertFalse(f.client.writeDisconnecting)
        self.assertTrue(f.client.disconnecting)

    def test_wrapperHalfCloses(self) -> None:
        """
        A protocol wrapper over plain TCP half-closes its transport.
        """
        f = TunnelFixture(start=False)
        wrapper = ProtocolWrapper(WrappingFactory(Factory()), Protocol())
        wrapper.transport = f.client
        f.tunnel.start(wrapper, f.backend)
        f.backend.eof()
        self.assertTrue(f.client.writeDisconnecting)
        self.assertFalse(f.client.disconnecting)

    def test_noLoseWriteConnection(self) -> None:
        """
        A transport that cannot half-close is closed.
        """
        f = TunnelFixture(start=False)
        client = StringTransport()
        f.tunnel.start(client, f.backend)
        f.backend.receive(b"bye")
        f.backend.eof()
        self.assertEqual(client.value(), b"bye")
        self.assertTrue(client.disconnecting)


class TunnelCloseTests(SynchronousTestCase):
    """
    One side closing or failing.
    """

    def test_clientLostFlushesBackend(self) -> None:
        """
        A client that goes away closes the backend connection after what is
        buffered for it, not by aborting.
        """
        f = TunnelFixture()
        f.backend.bufferSize = 10
        f.client.receive(b"last bytes for the backend")
        f.client.lose()
        self.assertTrue(f.backend.disconnecting)
        self.assertFalse(f.backend.aborted)
        self.assertEqual(bytes(f.backend.written), b"last bytes for the backend")
        self.assertEqual(f.totals, [])
        f.backend.drain()
        self.assertTrue(f.backend.disconnected)
        self.assertEqual(f.totals[0].reason, "client closed")

    def test_closeNotHeldByPausedProducer(self) -> None:
        """
        The close of the client completes even though it paused the backend
        (a dead producer) when its buffer filled.
        """
        f = TunnelFixture()
        f.client.bufferSize = 10
        f.backend.receive(b"x" * 20)
        self.assertFalse(f.backend.reading)
        f.backend.lose(ConnectionLost)
        self.assertTrue(f.client.disconnecting)
        f.client.drain()
        self.assertTrue(f.client.disconnected)
        self.assertEqual(f.totals[0].reason, "backend aborted")

    def test_reasons(self) -> None:
        """
        The side that closed first, and how, is the reason.
        """
        for side, failure, reason in [
            ("client", ConnectionDone, "client closed"),
            ("client", ConnectionLost, "client aborted"),
            ("backend", ConnectionDone, "backend closed"),
            ("backend", ConnectionAborted, "backend aborted"),
        ]:
            f = TunnelFixture()
            first = getattr(f, side)
            other = f.backend if first is f.client else f.client
            first.lose(failure)
            other.drain()
            self.assertEqual([t.reason for t in f.totals], [reason])

    def test_onCloseOnce(self) -> None:
        """
        The totals are reported once, whatever arrives after.
        """
        f = TunnelFixture()
        f.client.lose()
        f.backend.lose()
        f.tunnel.client.connectionLost(Failure(ConnectionDone()))
        f.tunnel.backend.readConnectionLost()
        f.tunnel.backend.dataReceived(b"late")
        f.tunnel.close()
        f.tunnel.abort()
        self.assertEqual(len(f.totals), 1)

    def test_duration(self) -> None:
        """
        The duration runs from C{start} to the last close.
        """
        f = TunnelFixture()
        f.clock.advance(2.5)
        f.client.lose()
        f.clock.advance(0.5)
        f.backend.drain()
        self.assertEqual(f.totals[0].duration, 3.0)

    def test_close(self) -> None:
        """
        L{Tunnel.close} closes both sides after their buffers.
        """
        f = TunnelFixture()
        f.tunnel.close("shutting down")
        self.assertTrue(f.client.disconnecting and f.backend.disconnecting)
        f.client.drain()
        f.backend.drain()
        self.assertEqual(f.totals[0].reason, "shutting down")

    def test_abort(self) -> None:
        """
        L{Tunnel.abort} aborts both sides.
        """
        f = TunnelFixture()
        f.tunnel.abort("shutting down")
        self.assertTrue(f.client.aborted and f.backend.aborted)
        f.client.lose(ConnectionAborted)
        f.backend.lose(ConnectionAborted)
        self.assertEqual(f.totals[0].reason, "shutting down")

    def test_noReferencesKept(self) -> None:
        """
        Once closed, nothing in the tunnel refers to the transports, and
        they are freed without the cycle collector.
        """
        gc.disable()
        self.addCleanup(gc.enable)
        f = TunnelFixture()
        f.client.receive(b"x")
        f.client.lose()
        f.backend.drain()
        self.assertIsNone(f.tunnel.client.transport)
        self.assertIsNone(f.tunnel.backend.transport)
        client, backend = weakref.ref(f.client), weakref.ref(f.backend)
        f.client.protocol = f.backend.protocol = None
        del f
        self.assertIsNone(client())
        self.assertIsNone(backend())


class TunnelIdleTimeoutTests(SynchronousTestCase):
    """
    The idle timeout.
    """

    def test_idleTimeout(self) -> None:
        """
        With no bytes either way for the idle timeout, both sides are closed.
        """
        f = TunnelFixture(idleTimeout=10.0)
        f.clock.advance(9.9)
        self.assertFalse(f.client.disconnecting)
        f.clock.advance(0.1)
        self.assertTrue(f.client.disconnecting and f.backend.disconnecting)
        f.client.drain()
        f.backend.drain()
        self.assertEqual(f.totals[0].reason, "idle timeout")
        self.assertEqual(f.clock.getDelayedCalls(), [])

    def test_bytesEitherWayReset(self) -> None:
        """
        Bytes in either direction restart the idle timeout.
        """
        f = TunnelFixture(idleTimeout=10.0)
        for transport in (f.client, f.backend, f.client):
            f.clock.advance(8)
            transport.receive(b"x")
        f.clock.advance(9.9)
        self.assertFalse(f.client.disconnecting)
        f.clock.advance(0.1)
        self.assertTrue(f.client.disconnecting)

    def test_halfClosedIdle(self) -> None:
        """
        A half-closed tunnel with no traffic is closed by the idle timeout.
        """
        f = TunnelFixture(idleTimeout=10.0)
        f.client.eof()
        f.clock.advance(10)
        self.assertTrue(f.client.disconnecting and f.backend.disconnecting)

    def test_abortAfterGrace(self) -> None:
        """
        Sides that do not close within the grace after an idle timeout (a
        peer that reads nothing) are aborted.
        """
        f = TunnelFixture(idleTimeout=10.0)
        f.client.bufferSize = 10
        f.backend.receive(b"x" * 20)
        f.clock.advance(10)
        f.backend.drain()
        self.assertFalse(f.client.aborted)
        f.clock.advance(f.tunnel.abortGrace)
        self.assertTrue(f.client.aborted)
        f.client.lose(ConnectionAborted)
        self.assertEqual(f.totals[0].reason, "idle timeout")

    def test_closingBoundedByIdleTimeout(self) -> None:
        """
        A side left to flush after the other closed is aborted if it has not
        closed within the idle timeout.
        """
        f = TunnelFixture(idleTimeout=10.0)
        f.clock.advance(9)
        f.client.lose()
        f.clock.advance(9.9)
        self.assertFalse(f.backend.aborted)
        f.clock.advance(0.1)
        self.assertTrue(f.backend.aborted)

    def test_noIdleTimeout(self) -> None:
        """
        Without an idle timeout no timer is set.
        """
        f = TunnelFixture(idleTimeout=None)
        self.assertEqual(f.clock.getDelayedCalls(), [])


class Recorder(Protocol):
    """
    Records what it receives; optionally greets on connection.
    """

    def __init__(self, greeting: bytes = b"") -> None:
        self.greeting = greeting
        self.received = bytearray()
        self.reason: Failure | None = None

    def connectionMade(self) -> None:
        if self.greeting:
            self.transport.write(self.greeting)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.reason = reason


class IOSimTunnel:
    """
    A client and a backend protocol joined through a tunnel with
    C{twisted.test.iosim}.
    """

    def __init__(self, client: Protocol, backend: Protocol) -> None:
        self.clock = Clock()
        self.totals: list[TunnelTotals] = []
        self.tunnel = Tunnel(self.clock, 300.0, self.totals.append)
        self.clientIO = iosim.FakeTransport(client, isServer=False)
        self.clientSide = iosim.FakeTransport(self.tunnel.client, isServer=True)
        self.backendIO = iosim.FakeTransport(backend, isServer=True)
        self.backendSide = iosim.FakeTransport(self.tunnel.backend, isServer=False)
        self.front = iosim.connect(
            self.tunnel.client, self.clientSide, client, self.clientIO, greet=False
        )
        self.back = iosim.connect(
            backend, self.backendIO, self.tunnel.backend, self.backendSide, greet=False
        )
        self.tunnel.start(self.clientSide, self.backendSide)

    def flush(self) -> None:
        """
        Move bytes both ways until nothing moves.
        """
        while self.front.pump() | self.back.pump():
            pass


class TunnelIOSimTests(SynchronousTestCase):
    """
    Whole conversations through a tunnel.
    """

    def test_byteExact(self) -> None:
        """
        Megabytes of random bytes go through both ways unchanged.
        """
        client, backend = Recorder(), Recorder()
        sim = IOSimTunnel(client, backend)
        up, down = os.urandom(3 * 1024 * 1024 + 17), os.urandom(2 * 1024 * 1024 + 5)
        for offset in range(0, max(len(up), len(down)), 65536):
            sim.clientIO.write(up[offset : offset + 65536])
            sim.backendIO.write(down[offset : offset + 65536])
            sim.flush()
        self.assertEqual(
            hashlib.sha256(backend.received).digest(), hashlib.sha256(up).digest()
        )
        self.assertEqual(
            hashlib.sha256(client.received).digest(), hashlib.sha256(down).digest()
        )
        self.assertEqual(
            (sim.tunnel.fromClient, sim.tunnel.toClient), (len(up), len(down))
        )

    def test_backendSpeaksFirst(self) -> None:
        """
        A backend's greeting reaches a client that has sent nothing.
        """
        client, backend = Recorder(), Recorder(greeting=b"220 smtp.example ESMTP\r\n")
        sim = IOSimTunnel(client, backend)
        sim.flush()
        self.assertEqual(bytes(client.received), b"220 smtp.example ESMTP\r\n")

    def test_closeFlushes(self) -> None:
        """
        Bytes the backend wrote just before closing reach the client, then
        the client's connection is closed.
        """
        client, backend = Recorder(), Recorder()
        sim = IOSimTunnel(client, backend)
        sim.backendIO.write(b"final")
        sim.backendIO.loseConnection()
        sim.flush()
        self.assertEqual(bytes(client.received), b"final")
        self.assertIsNotNone(client.reason)
        self.assertEqual([t.reason for t in sim.totals], ["backend closed"])
