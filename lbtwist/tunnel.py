# -*- test-case-name: tests.test_tunnel -*-
"""
The byte pump between a client connection and a backend connection, shared
by TCP mode (L{lbtwist.tcp}) and HTTP upgrade tunnels (WebSocket).

The mechanics are those of C{twisted.protocols.portforward}, completed:

  - each transport is registered as the other's streaming producer, so a
    side that stops reading pauses the reading of the other side and memory
    stays bounded (the transports' own write buffers);
  - half-close goes through both ways: end-of-file from one side becomes
    C{loseWriteConnection()} on the other while the other direction keeps
    flowing; when both directions have ended, both connections are closed;
  - a side that is lost closes the other with C{loseConnection()}, so what
    is already buffered for it is still delivered;
  - an idle timeout, reset by bytes in either direction, closes both sides;
    a side that still has not closed after a grace period (a peer that does
    not read what is left for it) is aborted.

A producer registered on a transport keeps C{loseConnection} and
C{loseWriteConnection} from completing while it is paused, so every close
unregisters the producer first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import frozen
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    INegotiated,
    IReactorTime,
    ISSLTransport,
)
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["Tunnel", "TunnelTotals"]


@frozen
class TunnelTotals:
    """
    What went through a tunnel, reported when both of its sides are closed.

    @ivar fromClient: Bytes relayed from the client to the backend.
    @ivar toClient: Bytes relayed from the backend to the client.
    @ivar duration: Seconds from L{Tunnel.start} until both sides closed.
    @ivar reason: Why it closed: C{"closed"} (both sides ended their
        direction), C{"client closed"} or C{"backend closed"} (that side
        closed its connection first), C{"client aborted"} or
        C{"backend aborted"} (that side's connection was lost with an
        error, e.g. a reset), C{"idle timeout"}, or the reason given to
        L{Tunnel.close} or L{Tunnel.abort}.
    """

    fromClient: int
    toClient: int
    duration: float
    reason: str


@implementer(IHalfCloseableProtocol)
class _Side(Protocol):
    """
    The protocol of one side of a L{Tunnel}: it hands every event to the
    tunnel.  Events before L{Tunnel.start} are kept and replayed by it.

    @ivar name: C{"client"} or C{"backend"}.
    @ivar peer: The other side.
    @ivar readDone: This side's peer sent end-of-file.
    @ivar lost: This side's connection is closed.
    @ivar registered: The tunnel registered a producer on this side's
        transport and has not unregistered it.
    """

    transport: Any

    def __init__(self, tunnel: Tunnel, name: str) -> None:
        """
        @param tunnel: The tunnel this side belongs to.
        @param name: C{"client"} or C{"backend"}.
        """
        self._tunnel: Tunnel | None = tunnel
        self.name = name
        self.peer: _Side | None = None
        self.readDone = False
        self.lost = False
        self.registered = False
        self.early: list[bytes] = []
        self.earlyEOF = False
        self.earlyLost: Failure | None = None

    def __repr__(self) -> str:
        return f"<Tunnel {self.name} side>"

    def makeConnection(self, transport: Any) -> None:
        """
        Remember the transport, as L{Tunnel.start} would.

        @param transport: This side's transport.
        """
        self.transport = transport
        self.connected = 1

    def dataReceived(self, data: bytes) -> None:
        """
        Relay bytes to the other side.

        @param data: The bytes this side's transport received.
        """
        if self._tunnel is not None:
            self._tunnel._received(self, data)

    def readConnectionLost(self) -> None:
        """
        End-of-file: end the other side's writing.
        """
        if self._tunnel is not None:
            self._tunnel._readLost(self)

    def writeConnectionLost(self) -> None:
        """
        The half-close requested on this side's transport is done.
        """

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        """
        This side is closed: close the other one, flushing what it holds.

        @param reason: Why.
        """
        self.connected = 0
        if self._tunnel is not None:
            self._tunnel._lost(self, reason)

    def unregister(self) -> None:
        """
        Unregister the producer the tunnel registered on this side's
        transport, if it still is.
        """
        if self.registered:
            self.registered = False
            if not self.lost:
                self.transport.unregisterProducer()

    def detach(self) -> None:
        """
        Forget the tunnel, the peer and the transport.
        """
        self._tunnel = None
        self.peer = None
        self.transport = None
        self.early = []


def _isTLS(transport: Any) -> bool:
    """
    Is there TLS in this transport or under the protocol wrappers it is
    made of?  (A L{ProtocolWrapper} copies its transport's interfaces
    unreliably, so the wrappers are looked through.)

    @param transport: A transport.
    @return: Whether the connection is TLS.
    """
    while True:
        # TLSMemoryBIOProtocol implements INegotiated; a transport started
        # with startTLS directly provides ISSLTransport.
        if ISSLTransport.providedBy(transport) or INegotiated.providedBy(transport):
            return True
        if not isinstance(transport, ProtocolWrapper):
            return False
        transport = transport.transport


def _halfClose(transport: Any) -> None:
    """
    End writing on a transport once its buffer is flushed; close it where it
    cannot half-close (TLS, which Twisted cannot half-close, and transports
    without C{loseWriteConnection}).

    @param transport: A transport with no producer registered.
    """
    loseWriteConnection = getattr(transport, "loseWriteConnection", None)
    if loseWriteConnection is not None and not _isTLS(transport):
        loseWriteConnection()
    else:
        transport.loseConnection()


class Tunnel:
    """
    Joins a client-side transport and a backend-side transport byte for
    byte, with backpressure, half-close both ways and an idle timeout.

    Connect L{Tunnel.client} and L{Tunnel.backend} to the two transports
    (make them the transports' protocols, or forward every protocol event
    to them), then call L{Tunnel.start}.  Events that reach them before
    C{start} are kept and handled by it.

    Once closing has begun (one side is closed, or L{Tunnel.close}), the
    sides left are aborted if they have not closed within the idle timeout
    (L{Tunnel.abortGrace} after an idle timeout or a L{Tunnel.close}).

    @ivar client: The protocol for the client-side transport.
    @ivar backend: The protocol for the backend-side transport.
    @ivar fromClient: Bytes relayed from the client so far.
    @ivar toClient: Bytes relayed to the client so far.
    @ivar abortGrace: Seconds both sides are given to close after an idle
        timeout or L{Tunnel.close} before they are aborted.
    """

    abortGrace = 5.0

    def __init__(
        self,
        clock: IReactorTime,
        idleTimeout: float | None,
        onClose: Callable[[TunnelTotals], object],
    ) -> None:
        """
        @param clock: The reactor's time.
        @param idleTimeout: Seconds without bytes in either direction after
            which both sides are closed, or L{None} (or 0) for none.
        @param onClose: Called once, when both sides are closed.
        """
        self._clock = clock
        self._idleTimeout = idleTimeout or None
        self._onClose: Callable[[TunnelTotals], object] | None = onClose
        self.client = _Side(self, "client")
        self.backend = _Side(self, "backend")
        self.client.peer, self.backend.peer = self.backend, self.client
        self.fromClient = 0
        self.toClient = 0
        self._started: float | None = None
        self._lastActivity = 0.0
        self._timer: IDelayedCall | None = None
        self._reason: str | None = None
        self._abortAt: float | None = None
        self._finished = False

    def start(
        self,
        clientTransport: Any,
        backendTransport: Any,
        pendingToBackend: bytes = b"",
        pendingToClient: bytes = b"",
    ) -> None:
        """
        Start relaying between two connected transports.

        The transports become L{Tunnel.client}'s and L{Tunnel.backend}'s
        (their C{makeConnection} need not have been called; C{connectionMade}
        is not called); each is registered as the other's streaming producer
        (so neither may have a producer registered), both are resumed, the
        pending bytes are written, then the idle timer starts.

        @param clientTransport: The client-side transport, e.g. paused since
            the client connected.
        @param backendTransport: The backend-side transport.
        @param pendingToBackend: Bytes the client already sent, written to
            the backend first (counted in L{TunnelTotals.fromClient}).
        @param pendingToClient: Bytes the backend already sent, written to
            the client first (counted in L{TunnelTotals.toClient}).
        @raise RuntimeError: If the tunnel was already started.
        """
        if self._started is not None:
            raise RuntimeError("tunnel already started")
        client, backend = self.client, self.backend
        client.makeConnection(clientTransport)
        backend.makeConnection(backendTransport)
        self._started = self._lastActivity = self._clock.seconds()
        clientTransport.registerProducer(backendTransport, True)
        client.registered = True
        backendTransport.registerProducer(clientTransport, True)
        backend.registered = True
        clientTransport.resumeProducing()
        backendTransport.resumeProducing()
        if self._idleTimeout is not None:
            self._timer = self._clock.callLater(self._idleTimeout, self._checkIdle)
        for side, pending in ((client, pendingToBackend), (backend, pendingToClient)):
            early, side.early = side.early, []
            for data in [pending, *early]:
                if data:
                    self._received(side, data)
        for side in (client, backend):
            lost, side.earlyLost = side.earlyLost, None
            if side.earlyEOF:
                self._readLost(side)
            if lost is not None:
                self._lost(side, lost)

    def close(self, reason: str = "closed") -> None:
        """
        Close both sides once what is buffered for them is written.

        @param reason: The reason reported in L{TunnelTotals}, unless one was
            already set.
        """
        self._closeSides(reason, self.abortGrace)

    def abort(self, reason: str = "aborted") -> None:
        """
        Abort both sides at once, dropping what is buffered.

        @param reason: The reason reported in L{TunnelTotals}, unless one was
            already set.
        """
        if self._started is None or self._finished:
            return
        self._setReason(reason)
        self._closing(0.0)
        for side in (self.client, self.backend):
            if not side.lost:
                side.transport.abortConnection()

    def _closeSides(self, reason: str, abortAfter: float | None) -> None:
        """
        Close both sides once what is buffered for them is written.

        @param reason: The reason reported in L{TunnelTotals}, unless one was
            already set.
        @param abortAfter: Seconds after which the sides still open are
            aborted.
        """
        if self._started is None or self._finished:
            return
        self._setReason(reason)
        self._closing(abortAfter)
        for side in (self.client, self.backend):
            # Each close may lose the other side synchronously.
            if not side.lost:
                side.unregister()
                side.transport.loseConnection()

    def _setReason(self, reason: str) -> None:
        """
        Record why the tunnel closes, if no reason was recorded yet.

        @param reason: The reason.
        """
        if self._reason is None:
            self._reason = reason

    def _closing(self, abortAfter: float | None) -> None:
        """
        Closing has begun: from now on, the idle timer aborts what is left.

        @param abortAfter: Seconds from now after which to abort, or L{None}
            for the idle timeout; an earlier deadline already set is kept.
        """
        if abortAfter is None:
            abortAfter = self._idleTimeout
        if abortAfter is None:
            return
        abortAt = self._clock.seconds() + abortAfter
        if self._abortAt is None or abortAt < self._abortAt:
            self._abortAt = abortAt
            self._schedule(abortAfter)

    def _schedule(self, delay: float) -> None:
        """
        (Re)start the timer.

        @param delay: Seconds from now.
        """
        if self._timer is not None and self._timer.active():
            self._timer.reset(delay)
        else:
            self._timer = self._clock.callLater(delay, self._checkIdle)

    def _received(self, side: _Side, data: bytes) -> None:
        """
        Relay bytes from one side to the other.

        @param side: The side that received them.
        @param data: The bytes.
        """
        if self._started is None:
            side.early.append(data)
            return
        peer = side.peer
        if peer is None or peer.lost or side.readDone:
            return
        if side is self.client:
            self.fromClient += len(data)
        else:
            self.toClient += len(data)
        self._lastActivity = self._clock.seconds()
        peer.transport.write(data)

    def _readLost(self, side: _Side) -> None:
        """
        One side sent end-of-file: end writing on the other side, or close
        both if the other direction has ended too.

        @param side: The side that sent it.
        """
        if self._started is None:
            side.earlyEOF = True
            return
        peer = side.peer
        if side.readDone or side.lost or peer is None:
            return
        side.readDone = True
        if peer.lost:
            return
        # This side's transport was the peer's producer: it has nothing more
        # to produce, and must not be resumed (it would read end-of-file
        # again).
        peer.unregister()
        if peer.readDone:
            self._closeSides("closed", None)
        else:
            _halfClose(peer.transport)

    def _lost(self, side: _Side, reason: Failure) -> None:
        """
        One side's connection is closed: close the other, flushing what is
        buffered for it; when both are closed, report the totals.

        @param side: The side that is closed.
        @param reason: Why.
        """
        if self._started is None:
            side.earlyLost = reason
            return
        if side.lost:
            return
        side.lost = True
        side.registered = False
        how = "closed" if reason.check(ConnectionDone) else "aborted"
        self._setReason(f"{side.name} {how}")
        peer = side.peer
        if peer is not None and not peer.lost:
            self._closing(None)
            peer.unregister()
            peer.transport.loseConnection()
        if self.client.lost and self.backend.lost:
            self._finish()

    def _checkIdle(self) -> None:
        """
        The timer fired: close both sides if nothing moved for the idle
        timeout, abort what is left once closing took too long; otherwise
        wait for the rest of the time.
        """
        self._timer = None
        if self._finished:
            return
        now = self._clock.seconds()
        if self._abortAt is not None:
            if now < self._abortAt:
                self._schedule(self._abortAt - now)
            else:
                self.abort(self._reason or "idle timeout")
            return
        assert self._idleTimeout is not None
        remaining = self._lastActivity + self._idleTimeout - now
        if remaining > 0:
            self._schedule(remaining)
        else:
            self.close("idle timeout")

    def _finish(self) -> None:
        """
        Both sides are closed: stop the timer, drop references, report.
        """
        if self._finished:
            return
        self._finished = True
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        assert self._started is not None
        totals = TunnelTotals(
            fromClient=self.fromClient,
            toClient=self.toClient,
            duration=self._clock.seconds() - self._started,
            reason=self._reason or "closed",
        )
        self.client.detach()
        self.backend.detach()
        onClose, self._onClose = self._onClose, None
        if onClose is not None:
            onClose(totals)
