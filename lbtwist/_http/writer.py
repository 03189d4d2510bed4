# -*- test-case-name: tests.test_http_writer -*-
"""
Writing to a plain TCP connection without a round trip through the reactor,
once per turn of the reactor's loop.

C{transport.write} always buffers and asks the reactor to watch the socket
for writability (an C{epoll_ctl} call), sends on the next turn of the loop
(another dispatch), then stops watching (one more C{epoll_ctl}).  For a small
response the kernel's send buffer nearly always has room: L{SocketWriter}
sends it itself on the transport's socket (C{ITCPTransport.getHandle}).
The first time the kernel does not take everything, the rest goes to
C{transport.write} and from then on every write goes through the
transport, so bytes are never reordered and Twisted's flow control (a
registered producer is paused while its buffer is full) works as usual.

With a L{WriteBatch}, while the reactor's rounds of events (the events
that arrived together, dispatched one after the other) bring several
writes, what the writers are given during a round is sent at the end of it,
each writer's bytes in one C{send}.  On loopback and in virtual machines a
C{send} that wakes a sleeping reader on another CPU costs several times the
copying it does; sending a round's responses together wakes each reader
once, and measured on lbtwist's benchmark this cut the kernel time per
proxied request by about a quarter.  Nothing waits for new events, and
while rounds bring a single write (one client at a time) writes go at
once: holding them would only add the rest of the round to their latency.

Only a plain C{twisted.internet.tcp.Connection} is written to directly;
TLS and wrapped transports always go through C{transport.write}, at once.
Close or hand over the connection through the writer (L{loseConnection},
L{abortConnection}, L{handOver}), so that what it holds goes first.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

from twisted.internet.interfaces import IReactorTime, ISSLTransport
from twisted.internet.tcp import Connection

__all__ = ["SocketWriter", "WriteBatch"]


class WriteBatch:
    """
    The round of events a reactor is dispatching, for the writers of its
    connections: while rounds bring several writes, what each writer is
    given waits until the end of the round; while they bring one at most
    (a single client, say), writes go at once, since nothing could be sent
    with them and waiting would only delay them.
    """

    _batches: weakref.WeakKeyDictionary[IReactorTime, WriteBatch] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, clock: IReactorTime) -> None:
        """
        @param clock: The reactor: C{callLater(0, ...)} runs once the events
            being dispatched are.
        """
        self._clock = clock
        self._writers: list[SocketWriter] = []
        self._writes = 0
        self._scheduled = False
        self.holding = False

    @classmethod
    def forClock(cls, clock: IReactorTime) -> WriteBatch:
        """
        The batch every writer of C{clock}'s connections shares (one flush
        per round for all of them).

        @param clock: The reactor.
        """
        batch = cls._batches.get(clock)
        if batch is None:
            batch = cls._batches[clock] = cls(clock)
        return batch

    def sendNow(self) -> bool:
        """
        Count a write of this round.

        @return: Whether to send it at once (else hold it and L{add} the
            writer).
        """
        self._writes += 1
        if not self._scheduled:
            self._scheduled = True
            self._clock.callLater(0, self.flush)
        return not self.holding

    def add(self, writer: SocketWriter) -> None:
        """
        Send what C{writer} holds at the end of this round.
        """
        self._writers.append(writer)

    def flush(self) -> None:
        """
        The round is over: send what every writer holds, and decide whether
        the next round's writes wait for its end.
        """
        self._scheduled = False
        self.holding = self._writes > 1
        self._writes = 0
        writers, self._writers = self._writers, []
        for writer in writers:
            writer.flush()


class SocketWriter:
    """
    Writes to one transport: directly to its socket while nothing is
    buffered by the transport, at the end of the round if it has a
    L{WriteBatch}.
    """

    __slots__ = ("_transport", "_send", "_batch", "_pending")

    def __init__(self, transport: Any, batch: WriteBatch | None = None) -> None:
        """
        @param transport: The connection's transport.
        @param batch: Where to wait until the end of the round, or L{None} to
            send at once.
        """
        self._transport = transport
        self._send: Callable[[bytes], int] | None = None
        self._batch = batch
        self._pending: list[bytes] = []
        if isinstance(transport, Connection) and not ISSLTransport.providedBy(
            transport
        ):
            self._send = transport.getHandle().send
            # Several small writes per message (a head, then a body) must
            # not wait for each other's acknowledgement (Nagle).
            transport.setTcpNoDelay(True)

    @property
    def direct(self) -> bool:
        """
        Whether writes still go straight to the socket.
        """
        return self._send is not None

    def write(self, data: bytes) -> None:
        """
        Send C{data}: at the end of the round, or at once, directly if the
        kernel takes it all, else (the rest) through the transport, as
        every later write.
        """
        if self._send is None:
            self._transport.write(data)
            return
        batch = self._batch
        if batch is None or batch.sendNow():
            self._sendNow(data)
            return
        pending = self._pending
        if not pending:
            batch.add(self)
        pending.append(data)

    def writeSequence(self, data: list[bytes]) -> None:
        """
        Send several pieces as one write.
        """
        self.write(b"".join(data))

    def flush(self) -> None:
        """
        Send what is held now.
        """
        pending = self._pending
        if pending:
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            pending.clear()
            self._sendNow(data)

    def handOver(self) -> None:
        """
        Send what is held, then stop writing directly: from now on every
        write goes through the transport (which another protocol may be
        writing to as well).
        """
        self.flush()
        self._send = None

    def loseConnection(self) -> None:
        """
        Close the connection once what is held and buffered is sent.
        """
        self.flush()
        self._transport.loseConnection()

    def abortConnection(self) -> None:
        """
        Send what is held (if the kernel takes it), then abort the
        connection.
        """
        self.flush()
        self._transport.abortConnection()

    def _sendNow(self, data: bytes) -> None:
        send = self._send
        if send is not None:
            try:
                sent = send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                # The transport finds the error and closes the connection
                # the usual way.
                sent = 0
            if sent == len(data):
                return
            self._send = None
            data = data[sent:]
        self._transport.write(data)
