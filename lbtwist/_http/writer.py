# -*- test-case-name: tests.test_http_writer -*-
"""
Writing to a plain TCP connection without a round trip through the reactor.

C{transport.write} always buffers and asks the reactor to watch the socket
for writability (an C{epoll_ctl} call), sends on the next turn of the loop
(another dispatch), then stops watching (one more C{epoll_ctl}).  For a small
response the kernel's send buffer nearly always has room: L{SocketWriter}
sends it at once on the transport's socket (C{ITCPTransport.getHandle}).
The first time the kernel does not take everything, the rest goes to
C{transport.write} and from then on every write goes through the
transport, so bytes are never reordered and Twisted's flow control (a
registered producer is paused while its buffer is full) works as usual.

Only a plain C{twisted.internet.tcp.Connection} is written to directly;
TLS and wrapped transports always go through C{transport.write}.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.interfaces import ISSLTransport
from twisted.internet.tcp import Connection

__all__ = ["SocketWriter"]


class SocketWriter:
    """
    Writes to one transport, directly to its socket while nothing is
    buffered by the transport.
    """

    __slots__ = ("_transport", "_send")

    def __init__(self, transport: Any) -> None:
        """
        @param transport: The connection's transport.
        """
        self._transport = transport
        self._send: Callable[[bytes], int] | None = None
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
        Send C{data}: at once if the kernel takes it all, else (the rest)
        through the transport, as every later write.
        """
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

    def writeSequence(self, data: list[bytes]) -> None:
        """
        Send several pieces as one write.
        """
        self.write(b"".join(data))

    def buffered(self) -> None:
        """
        Stop writing directly: from now on every write goes through the
        transport (e.g. once it is closing).
        """
        self._send = None
