# -*- test-case-name: tests.test_upgrade -*-
"""
HTTP Upgrade (WebSocket) tunnels on HTTP frontends.

An HTTP/1.1 request with C{Connection: upgrade} and an C{Upgrade} field
(other than C{h2c}, which is stripped like any hop-by-hop field) is not sent
through the agent: L{UpgradeAttempts} opens a connection of its own to a
backend chosen by the pool, writes the request with C{Connection: Upgrade}
and the client's C{Upgrade}, and reads the response head:

  - C{101 Switching Protocols}: the 101 goes to the client and from then on
    the two connections are a raw L{Tunnel} with backpressure both ways and
    the pool's C{idle_timeout}; bytes the client sent right after its
    request reach the backend after the handshake;
  - anything else: an ordinary response, parsed and relayed like any other
    (L{lbtwist.web.relayResponse}), and no tunnel.

A backend that cannot be reached is replaced by another, up to the pool's
C{retries}; the handshake has no body, so nothing is lost. Tunnels count as
active requests of their backend (least-connections, draining) until they
close.
"""

from __future__ import annotations

from typing import Any, Callable, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableProtocol,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web._newclient import Request as ClientRequest
from twisted.web._newclient import TransportProxyProducer
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from twisted.web.client import URI
from zope.interface import implementer

from lbtwist.backend import Backend, logStateChange
from lbtwist.channel import connectionTokens
from lbtwist.pool import BackendPool
from lbtwist.tls import BackendTLS
from lbtwist.tunnel import Tunnel, TunnelTotals
from lbtwist.upstream import (
    RESPONSE_HOP_BY_HOP,
    BackendEndpoints,
    _StrictResponseParser,
)
from lbtwist.web import (
    ProxyRequest,
    UpstreamAttemptFailed,
    classifyFailure,
    relayResponse,
    respondWithError,
    upstreamHeaders,
)

_log = Logger()

_MAX_HEAD = 65536


def upgradeProtocols(request: ProxyRequest) -> list[bytes]:
    """
    The protocols a request asks to upgrade to, if it is an upgrade request
    lbtwist tunnels: HTTP/1.1, C{upgrade} among the C{Connection} options,
    no body, and not C{h2c}.

    @param request: The client's request.
    @return: The C{Upgrade} tokens as sent, or C{[]} for an ordinary
        request.
    """
    headers = request.requestHeaders
    if request.clientproto != b"HTTP/1.1":
        return []
    if b"upgrade" not in connectionTokens(headers):
        return []
    protocols = [
        token.strip()
        for line in headers.getRawHeaders(b"upgrade", ())
        for token in line.split(b",")
        if token.strip()
    ]
    if not protocols or any(p.lower().startswith(b"h2c") for p in protocols):
        return []
    if headers.hasHeader(b"content-length") or headers.hasHeader(b"transfer-encoding"):
        content = request.content
        if content is not None and content.seek(0, 2) > 0:
            return []
    return protocols


@implementer(IHalfCloseableProtocol)
class _BackendConnection(Protocol):
    """
    The connection to the backend during the handshake; afterwards it hands
    every event to the tunnel's backend side.
    """

    def __init__(self, attempt: UpgradeAttempts, backend: Backend) -> None:
        self._attempt = attempt
        self.backend = backend
        self._head = b""
        self._parser: _StrictResponseParser | None = None
        self.tunnelled: Any = None

    def connectionMade(self) -> None:
        self._attempt.connected(self)

    def dataReceived(self, data: bytes) -> None:
        if self.tunnelled is not None:
            self.tunnelled.dataReceived(data)
            return
        if self._parser is not None:
            self._parser.dataReceived(data)
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end == -1:
            if len(self._head) > _MAX_HEAD:
                self._attempt.invalid(self, "response head too long")
            return
        head, rest = self._head[: end + 4], self._head[end + 4 :]
        self._head = b""
        status = head.split(b"\r\n", 1)[0].split(b" ", 2)
        if len(status) >= 2 and status[1] == b"101":
            self._attempt.switch(self, head, rest)
        else:
            self._relay(head + rest)

    def _relay(self, data: bytes) -> None:
        assert self.transport is not None
        request = ClientRequest(
            self._attempt.method, b"/", Headers(), None, persistent=False
        )
        parser = self._parser = _StrictResponseParser(request, self._finished)
        parser.makeConnection(TransportProxyProducer(self.transport))
        parser._responseDeferred.addCallback(self._attempt.respond, self)
        try:
            parser.dataReceived(data)
        except Exception:
            self._attempt.invalid(self, "invalid response")

    def _finished(self, rest: bytes) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def readConnectionLost(self) -> None:
        if self.tunnelled is not None:
            self.tunnelled.readConnectionLost()
        elif self.transport is not None:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        if self.tunnelled is not None:
            self.tunnelled.writeConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.tunnelled is not None:
            self.tunnelled.connectionLost(reason)
        elif self._parser is not None:
            self._parser.connectionLost(reason)
        else:
            self._attempt.lost(self, reason)


class UpgradeAttempts:
    """
    Forwards one upgrade request: picks backends, performs the handshake,
    and either tunnels or relays the response.
    """

    def __init__(
        self,
        reactor: Any,
        request: ProxyRequest,
        pool: BackendPool,
        endpointFor: Callable[[Backend], IStreamClientEndpoint],
        protocols: list[bytes],
    ) -> None:
        """
        @param reactor: The reactor (clock for timeouts).
        @param request: The client's upgrade request.
        @param pool: The pool to choose backends from.
        @param endpointFor: The client endpoint reaching a backend.
        @param protocols: The requested protocols (L{upgradeProtocols}).
        """
        self._reactor = reactor
        self._request = request
        self._pool = pool
        self._endpointFor = endpointFor
        self._protocols = protocols
        self.method = request.method
        self._tried: list[Backend] = []
        self._lastFailure: UpstreamAttemptFailed | None = None
        self._pending: Deferred[Any] | None = None
        self._timeout: Any = None
        self._connection: _BackendConnection | None = None
        self._clientGone = False
        self._done = False
        self._started = 0.0
        site = request.channel.site
        self._site = site
        headers = upstreamHeaders(request, site.frontend, site.trustedNetworks, None)
        headers.setRawHeaders(b"connection", [b"Upgrade"])
        headers.setRawHeaders(b"upgrade", [b", ".join(protocols)])
        self._headers = headers
        request.notifyFinish().addErrback(self._clientLost)

    def start(self) -> None:
        """
        Connect to the next backend, or answer with an error when none is
        left.
        """
        if self._clientGone:
            return
        backend = self._pool.choose(self._reactor.seconds(), exclude=self._tried)
        if backend is None:
            last = self._lastFailure
            code = 503 if last is None else (504 if last.timedOut else 502)
            respondWithError(self._request, code)
            return
        self._tried.append(backend)
        backend.active += 1
        backend.requests += 1
        self._started = self._reactor.seconds()
        connection = _BackendConnection(self, backend)
        self._connection = connection
        d = self._endpointFor(backend).connect(Factory.forProtocol(lambda: connection))
        self._pending = d
        d.addErrback(self._connectFailed, backend)
        self._timeout = self._reactor.callLater(
            self._pool.config.response_timeout, self._timedOut, connection
        )

    def _cancelTimeout(self) -> None:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None

    def _fail(self, backend: Backend, problem: UpstreamAttemptFailed) -> None:
        self._cancelTimeout()
        backend.active -= 1
        if self._clientGone or self._done:
            return
        self._lastFailure = problem
        now = self._reactor.seconds()
        backend.stats.recordFailure(problem.kind, now - self._started, now)
        change = backend.requestFailed(problem.reason, now)
        if change is not None:
            logStateChange(change)
        if not problem.sent and len(self._tried) <= self._pool.config.retries:
            _log.info(
                "retrying upgrade {target} after {backend}: {reason}",
                target=self._request.uri.decode("ascii", "replace"),
                backend=backend.address,
                reason=problem.reason,
            )
            self.start()
        else:
            self._done = True
            respondWithError(self._request, 504 if problem.timedOut else 502)

    def _connectFailed(self, failure: Failure, backend: Backend) -> None:
        self._pending = None
        self._fail(backend, classifyFailure(failure))

    def connected(self, connection: _BackendConnection) -> None:
        """
        The backend accepted the connection: send the handshake request.
        """
        self._pending = None
        request = self._request
        headers = self._headers
        if self._pool.config.rewrite_host:
            headers = headers.copy()
            headers.setRawHeaders(b"host", [connection.backend.address.encode("ascii")])
        lines = [b"%s %s HTTP/1.1\r\n" % (request.method, request.uri)]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                lines.append(b"%s: %s\r\n" % (name, value))
        lines.append(b"\r\n")
        assert connection.transport is not None
        connection.transport.write(b"".join(lines))

    def _timedOut(self, connection: _BackendConnection) -> None:
        self._timeout = None
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.cancel()
            return
        if connection.transport is not None:
            connection.transport.abortConnection()  # type: ignore[attr-defined]
        self._fail(
            connection.backend,
            UpstreamAttemptFailed("response_timeout", "response timeout"),
        )

    def invalid(self, connection: _BackendConnection, reason: str) -> None:
        """
        The backend's answer cannot be parsed: 502.
        """
        if connection.transport is not None:
            connection.transport.abortConnection()  # type: ignore[attr-defined]
        self._fail(
            connection.backend,
            UpstreamAttemptFailed("invalid_response", "invalid response: " + reason),
        )

    def lost(self, connection: _BackendConnection, reason: Failure) -> None:
        """
        The backend closed before answering: 502 (the request was sent, so
        it is not retried).
        """
        if self._done or self._timeout is None:
            return
        self._fail(
            connection.backend,
            UpstreamAttemptFailed(
                "connection_lost", "connection lost before the response"
            ),
        )

    def respond(self, response: IResponse, connection: _BackendConnection) -> None:
        """
        The backend answered without switching protocols: relay the
        response like any other.
        """
        self._cancelTimeout()
        self._done = True
        backend = connection.backend
        status = response.code
        started = self._started
        if self._clientGone:
            backend.active -= 1
            if connection.transport is not None:
                connection.transport.loseConnection()
            return

        def finished(reason: Failure | None) -> None:
            backend.active -= 1
            now = self._reactor.seconds()
            if reason is None:
                backend.stats.recordResponse(status, now - started, now)
            else:
                backend.stats.recordFailure("truncated", now - started, now)

        self._request.channel.persistent = False
        relayResponse(self._request, response, backend.address, finished)

    def switch(self, connection: _BackendConnection, head: bytes, rest: bytes) -> None:
        """
        The backend switched protocols: send its 101 to the client and join
        the two connections.
        """
        self._cancelTimeout()
        self._done = True
        backend = connection.backend
        request = self._request
        now = self._reactor.seconds()
        backend.stats.recordResponse(101, now - self._started, now)
        change = backend.requestSucceeded(now)
        if change is not None:
            logStateChange(change)
        if self._clientGone:
            backend.active -= 1
            if connection.transport is not None:
                connection.transport.loseConnection()
            return
        channel = request.channel
        clientTransport = channel.transport
        assert clientTransport is not None and connection.transport is not None
        clientTransport.write(_switchingHead(head))
        self._site.stats.recordResponse(101)
        request.code = 101
        pending = b"".join(channel._dataBuffer)
        channel._dataBuffer = []
        # HTTPChannel registered itself as the transport's producer; the
        # tunnel registers the backend connection instead.
        cast(IConsumer, clientTransport).unregisterProducer()
        tunnel = Tunnel(
            self._reactor,
            self._pool.config.idle_timeout,
            lambda totals: self._closed(backend, totals),
        )
        channel.switchProtocols(tunnel.client)
        connection.tunnelled = tunnel.backend
        tunnel.start(clientTransport, connection.transport, pending, rest)

    def _closed(self, backend: Backend, totals: TunnelTotals) -> None:
        backend.active -= 1
        site = self._site
        site.stats.received(totals.fromClient)
        site.stats.sent(totals.toClient)
        self._request.sentLength = totals.toClient
        site.logRequest(self._request, backend, len(self._tried), ())

    def _clientLost(self, failure: Failure) -> None:
        self._clientGone = True
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.cancel()
        connection = self._connection
        if not self._done and connection is not None and connection.transport:
            connection.transport.loseConnection()


def _switchingHead(head: bytes) -> bytes:
    """
    The 101 response head for the client: the backend's fields less the
    hop-by-hop ones, then C{Connection: Upgrade}, its C{Upgrade} and C{Via}.
    """
    lines = head.split(b"\r\n")
    kept = [b"HTTP/1.1 101 Switching Protocols"]
    upgrade = None
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(b":")
        lowered = name.strip().lower()
        if lowered == b"upgrade":
            upgrade = value.strip()
        elif lowered not in RESPONSE_HOP_BY_HOP:
            kept.append(line)
    kept.append(b"Connection: Upgrade")
    if upgrade is not None:
        kept.append(b"Upgrade: " + upgrade)
    kept.append(b"Via: 1.1 lbtwist")
    return b"\r\n".join(kept) + b"\r\n\r\n"


def upgradeHandler(reactor: Any) -> Callable[[ProxyRequest, BackendPool], bool]:
    """
    The function a L{lbtwist.web.PoolResource} calls for each request to
    take over upgrade requests.

    @param reactor: The reactor (connections and timeouts).
    @return: A function returning C{True} if it took the request.
    """

    def handle(request: ProxyRequest, pool: BackendPool) -> bool:
        protocols = upgradeProtocols(request)
        if not protocols:
            return False
        endpoints = BackendEndpoints(
            reactor, pool.config.connect_timeout, BackendTLS.forPool(pool.config)
        )

        def endpointFor(backend: Backend) -> IStreamClientEndpoint:
            base = f"{backend.config.scheme}://{backend.address}"
            return endpoints.endpointForURI(URI.fromBytes(base.encode("ascii")))

        UpgradeAttempts(reactor, request, pool, endpointFor, protocols).start()
        return True

    return handle


__all__ = ["UpgradeAttempts", "upgradeHandler", "upgradeProtocols"]
