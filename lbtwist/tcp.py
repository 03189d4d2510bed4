# -*- test-case-name: tests.test_tcp -*-
"""
TCP (L4) mode: each client connection is relayed byte for byte to one
backend of the frontend's pool.

The client is not read from until a backend is connected (the client
transport is paused as soon as it connects, as in
C{twisted.protocols.portforward}).  A backend that refuses the connection or
does not accept it within the pool's C{connect_timeout} counts as a failure
toward its passive health, and the next available backend is tried, up to
the pool's C{retries}; then the client is closed.  While every available
backend is at its C{max_connections}, the connection waits in the pool's
queue, at most the pool's C{queue_timeout}; then, or when the queue is
full, it is closed.  A waiting client is read from (up to 64 KiB, kept for
the backend), so that one that goes away leaves the queue at once.  Once connected, a
L{lbtwist.tunnel.Tunnel} relays the bytes with backpressure, half-close and
the pool's C{idle_timeout}; the backend counts the connection in C{active}
(for least-connections and draining) until it closes.

With the pool's C{send_proxy}, a PROXY header carrying the client's address
(source) and the frontend's address (destination) is written to the backend
before any byte of the client's.  With the frontend's C{accept_proxy}, the
connection must start with a PROXY header (v1 or v2, within the frontend's
C{header_timeout}) from a trusted balancer in front; the client address it
carries is the one logged and sent on.  L{TCPProxyFactory} reads that header
itself, so a TCP frontend must not be wrapped in Twisted's
C{HAProxyWrappingFactory} (whose wrapper would hide half-close and would be
paused before the header could be read).

With C{[[frontend.route]]}s (C{sni} and C{pool}; TLS passthrough), the
connection is read until its TLS ClientHello is complete (at most
L{lbtwist.clienthello.MAX_CLIENT_HELLO} bytes, within the frontend's
C{header_timeout}, counted from the connection together with a PROXY
header), the pool of the first route whose C{sni} matches the server name
is chosen (else the frontend's C{pool}, else the connection is closed), and
every byte read is then relayed as it came, TLS untouched.  A connection
that does not start with a TLS handshake record, or whose ClientHello is
malformed, is closed.  Frontends without routes read nothing before
connecting.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from lbtwist.accesslog import AccessLog, ConnectionRecord
from lbtwist.attempts import Attempts, Lease
from lbtwist.backend import Backend
from lbtwist.clienthello import ClientHelloReader, InvalidClientHello, NotTLS
from lbtwist.config import FrontendConfig
from lbtwist.endpoints import backendEndpoint
from lbtwist.failures import classifyConnectFailure
from lbtwist.pool import BackendPool
from lbtwist.proxyheader import InvalidProxyHeader, parseProxyHeader, proxyHeader
from lbtwist.stats import FrontendStats
from lbtwist.strategies import Choice
from lbtwist.tls import matchesServerName
from lbtwist.tunnel import Tunnel, TunnelTotals

__all__ = ["TCPProxyFactory"]

_QUEUED_READ_LIMIT = 65536
"""
Bytes of a client's data kept while its connection waits in the queue;
then it is not read from until a backend is connected.
"""

_log = Logger()


def _host(address: IAddress | None) -> str:
    """
    @param address: An address from C{getPeer}, or L{None}.
    @return: Its host for logs, e.g. C{"192.0.2.7"}, or C{"-"}.
    """
    if address is None:
        return "-"
    return str(getattr(address, "host", address))


@implementer(IHalfCloseableProtocol)
class _BackendConnection(Protocol):
    """
    The protocol of a connection to a backend: it forwards every event to
    the tunnel's backend side once attached (and keeps what comes before).
    """

    transport: Any

    def __init__(self) -> None:
        self._side: Any = None
        self._early: list[bytes] = []
        self._eof = False
        self._lost: Failure | None = None

    def attach(self, side: Any) -> None:
        """
        Forward this connection's events to a tunnel side from now on.

        @param side: L{Tunnel.backend}.
        """
        self._side = side
        early, self._early = self._early, []
        for data in early:
            side.dataReceived(data)
        if self._eof:
            side.readConnectionLost()
        if self._lost is not None:
            side.connectionLost(self._lost)

    def dataReceived(self, data: bytes) -> None:
        if self._side is None:
            self._early.append(data)
        else:
            self._side.dataReceived(data)

    def readConnectionLost(self) -> None:
        if self._side is None:
            self._eof = True
        else:
            self._side.readConnectionLost()

    def writeConnectionLost(self) -> None:
        if self._side is not None:
            self._side.writeConnectionLost()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        side, self._side = self._side, None
        if side is None:
            self._lost = reason
        else:
            side.connectionLost(reason)


class _BackendConnectionFactory(Factory):
    """
    Builds a L{_BackendConnection} for each connection an endpoint makes.
    """

    noisy = False

    def buildProtocol(self, addr: IAddress | None) -> _BackendConnection:
        return _BackendConnection()


@implementer(IHalfCloseableProtocol)
class _ClientConnection(Protocol):
    """
    One client connection of a TCP frontend: reads the PROXY header if the
    frontend expects one and the ClientHello if it routes by SNI, connects
    to a backend (retrying on others), then forwards every event to a
    L{Tunnel}.
    """

    transport: Any

    def __init__(self, factory: TCPProxyFactory) -> None:
        """
        @param factory: The frontend's factory.
        """
        self._factory = factory
        self._clock = factory.reactor
        self._pool: BackendPool | None = None
        self._attempts: Attempts | None = None
        self._opened = 0.0
        self._source: IAddress | None = None
        self._destination: IAddress | None = None
        self._header: bytes | None = None
        self._hello: ClientHelloReader | None = None
        self._headerTimer: IDelayedCall | None = None
        self._early: list[bytes] = []
        self._earlyEOF = False
        self._earlySize = 0
        if not factory.routes:
            assert factory.pool is not None
            self._use(factory.pool)
        self._pending: Deferred[Any] | None = None
        self._lease: Lease | None = None
        self._connectedOnce = False
        self._tunnel: Tunnel | None = None
        self._clientGone = False
        self._outcome: str | None = None
        self._fromClient = 0
        self._toClient = 0
        self._recorded = False

    def _use(self, pool: BackendPool) -> None:
        """
        Serve this connection from C{pool}.

        @param pool: The frontend's pool, or the one its SNI routes chose.
        """
        self._pool = pool
        self._attempts = Attempts(
            self._clock,
            self._choose,
            pool.config.retries,
            self._factory.frontend.name,
            pool,
        )

    def _routed(self) -> tuple[BackendPool, Attempts]:
        """
        @return: The pool serving this connection and the attempts on its
            backends (once it is known: always without routes).
        """
        assert self._pool is not None and self._attempts is not None
        return self._pool, self._attempts

    # Events from the client's transport.

    def connectionMade(self) -> None:
        """
        Count the connection; read the PROXY header if one is expected, or
        the ClientHello if the frontend routes by SNI, else stop reading
        and connect to a backend.
        """
        factory = self._factory
        factory.stats.connectionOpened()
        factory.connections.add(self)
        self._opened = self._clock.seconds()
        self._source = self.transport.getPeer()
        self._destination = self.transport.getHost()
        if factory.frontend.accept_proxy or factory.routes:
            self._headerTimer = self._clock.callLater(
                factory.frontend.header_timeout, self._headerTimedOut
            )
            if factory.frontend.accept_proxy:
                self._header = b""
            else:
                self._hello = ClientHelloReader()
            return
        self._proceed()

    def _proceed(self) -> None:
        """
        Stop reading from the client and connect to a backend of the pool
        (once its first health checks allow).
        """
        _, attempts = self._routed()
        self.transport.pauseProducing()
        attempts.whenReady(self._connect)

    def dataReceived(self, data: bytes) -> None:
        """
        Relay bytes through the tunnel, or read the PROXY header, or keep
        them until the backend is connected.

        @param data: Bytes from the client.
        """
        if self._tunnel is not None:
            self._tunnel.client.dataReceived(data)
        elif self._header is not None:
            self._headerReceived(data)
        elif self._hello is not None:
            self._helloReceived(data)
        elif self._outcome is None:
            self._early.append(data)
            self._earlySize += len(data)
            if self._earlySize > _QUEUED_READ_LIMIT:
                self.transport.pauseProducing()

    def readConnectionLost(self) -> None:
        """
        The client sent end-of-file.
        """
        if self._tunnel is not None:
            self._tunnel.client.readConnectionLost()
        elif self._header is not None or self._hello is not None:
            self._close("client closed")
        else:
            self._earlyEOF = True

    def writeConnectionLost(self) -> None:
        """
        Writing to the client has ended.
        """
        if self._tunnel is not None:
            self._tunnel.client.writeConnectionLost()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        """
        The client connection is closed: tell the tunnel, or stop connecting
        and write the log line.

        @param reason: Why.
        """
        if self._tunnel is not None:
            self._tunnel.client.connectionLost(reason)
            return
        self._clientGone = True
        self._stopHeaderTimer()
        if self._attempts is not None:
            self._attempts.cancel()
        if self._outcome is None:
            how = "closed" if reason.check(ConnectionDone) else "aborted"
            self._outcome = f"client {how}"
        pending, self._pending = self._pending, None
        if pending is not None:
            assert self._attempts is not None
            backend = self._attempts.tried[-1]
            _log.info(
                "{frontend}: client {client} went away while connecting to "
                "{label}; cancelling",
                frontend=self._factory.frontend.name,
                client=_host(self._source),
                **backend.logFields,
            )
            pending.cancel()
        self._record()

    # The PROXY header (accept_proxy).

    def _headerReceived(self, data: bytes) -> None:
        """
        Add bytes to the PROXY header; once it is complete, stop reading and
        connect.

        @param data: Bytes from the client.
        """
        assert self._header is not None
        self._header += data
        try:
            parsed = parseProxyHeader(self._header)
        except InvalidProxyHeader:
            _log.warn(
                "{frontend}: closing connection from {client}: invalid PROXY header",
                frontend=self._factory.frontend.name,
                client=_host(self._source),
            )
            self._close("invalid proxy header")
            return
        if parsed is None:
            return
        info, rest = parsed
        self._header = None
        if info.source is not None and info.destination is not None:
            self._source, self._destination = info.source, info.destination
        if self._factory.routes:
            self._hello = ClientHelloReader()
            if rest:
                self._helloReceived(rest)
            return
        self._stopHeaderTimer()
        if rest:
            self._early.append(rest)
            self._earlySize += len(rest)
        self._proceed()

    def _headerTimedOut(self) -> None:
        """
        No complete PROXY header (or ClientHello) in time: close the client.
        """
        self._headerTimer = None
        what, outcome = "PROXY header", "proxy header timeout"
        if self._hello is not None:
            what, outcome = "TLS ClientHello", "client hello timeout"
        _log.info(
            "{frontend}: closing connection from {client}: no {what} "
            "within {timeout} seconds",
            frontend=self._factory.frontend.name,
            client=_host(self._source),
            what=what,
            timeout=self._factory.frontend.header_timeout,
        )
        self._close(outcome)

    def _stopHeaderTimer(self) -> None:
        timer, self._headerTimer = self._headerTimer, None
        if timer is not None and timer.active():
            timer.cancel()

    # The ClientHello (SNI routes).

    def _helloReceived(self, data: bytes) -> None:
        """
        Keep bytes for the backend and read the ClientHello in them; once it
        is complete, choose the pool by its server name and connect.

        @param data: Bytes from the client.
        """
        assert self._hello is not None
        self._early.append(data)
        self._earlySize += len(data)
        factory = self._factory
        try:
            hello = self._hello.feed(data)
        except InvalidClientHello as e:
            outcome = "not TLS"
            if not isinstance(e, NotTLS):
                outcome = f"bad ClientHello: {e.reason}"
            _log.info(
                "{frontend}: closing connection from {client}: {why}",
                frontend=factory.frontend.name,
                client=_host(self._source),
                why=outcome,
            )
            self._close(outcome)
            return
        if hello is None:
            return
        self._hello = None
        self._stopHeaderTimer()
        name = hello.serverName
        pool = factory.route(name)
        if pool is None:
            outcome = "no SNI" if name is None else f'no route for SNI "{name}"'
            _log.info(
                "{frontend}: closing connection from {client}: {why}",
                frontend=factory.frontend.name,
                client=_host(self._source),
                serverName=name,
                why=outcome,
            )
            self._close(outcome)
            return
        self._use(pool)
        self._proceed()

    # Connecting to a backend.

    def _choose(self, now: float, tried: Collection[Backend]) -> Choice | None:
        pool, _ = self._routed()
        key = None
        if pool.config.strategy == "consistent-hash" and self._source:
            key = _host(self._source).encode("ascii", "replace")
        return pool.choose(now, tried, key)

    def _connect(self) -> None:
        """
        Connect to the next available backend not tried yet, or close the
        client if there is none.
        """
        if self._clientGone:
            return
        pool, attempts = self._routed()
        lease = attempts.next()
        if lease is None:
            if not attempts.wait(self._connect):
                self._giveUp()
            elif attempts.waiting and self._earlySize <= _QUEUED_READ_LIMIT:
                # Read while waiting, so that a client that goes away leaves
                # the queue at once; what it sends is kept, up to a limit.
                self.transport.resumeProducing()
            return
        self.transport.pauseProducing()
        self._lease = lease
        d = self._factory.endpointFor(lease.backend, pool).connect(
            _BackendConnectionFactory()
        )
        d.addTimeout(pool.config.connect_timeout, self._clock)
        self._pending = d
        d.addCallbacks(
            self._connected,
            self._connectFailed,
            callbackArgs=(lease,),
            errbackArgs=(lease,),
        )

    def _connectFailed(self, failure: Failure, lease: Lease) -> None:
        """
        A connection attempt failed: count it against the backend, then try
        another one or give up.

        @param failure: Why.
        @param lease: The attempt's lease.
        """
        self._pending = None
        if self._clientGone:
            # Cancelled because the client went away: not the backend's fault.
            lease.release()
            return
        _, attempts = self._routed()
        if attempts.failed(lease, classifyConnectFailure(failure)):
            self._connect()
        else:
            self._giveUp()

    def _giveUp(self) -> None:
        """
        No backend could be connected: close the client.
        """
        factory = self._factory
        pool, attempts = self._routed()
        if not attempts.tried or attempts.queueProblem is not None:
            _log.warn(
                "{frontend}: closing connection from {client}: {why}",
                frontend=factory.frontend.name,
                pool=pool.name,
                client=_host(self._source),
                why=attempts.giveUpReason(),
            )
            self._close(attempts.queueProblem or "no backend available")
            return
        _log.warn(
            "{frontend}: closing connection from {client} after {attempts} "
            "failed attempt(s): {reasons}",
            frontend=factory.frontend.name,
            pool=pool.name,
            client=_host(self._source),
            attempts=len(attempts.tried),
            reasons="; ".join(attempts.retryReasons),
        )
        self._close("connect failed")

    def _connected(self, protocol: _BackendConnection, lease: Lease) -> None:
        """
        The backend is connected: write the PROXY header if the pool sends
        one, then relay through a tunnel.

        @param protocol: The backend connection's protocol.
        @param lease: The attempt's lease, held until the tunnel closes.
        """
        self._pending = None
        if self._clientGone:
            lease.release()
            protocol.transport.loseConnection()
            return
        pool, attempts = self._routed()
        config = pool.config
        self._connectedOnce = True
        attempts.succeeded(lease)
        backendTransport = protocol.transport
        if config.send_proxy != "none":
            assert self._source is not None and self._destination is not None
            backendTransport.write(
                proxyHeader(config.send_proxy, self._source, self._destination)
            )
        tunnel = Tunnel(self._clock, config.idle_timeout, self._tunnelClosed)
        self._tunnel = tunnel
        early, self._early = b"".join(self._early), []
        if self._earlyEOF:
            tunnel.client.readConnectionLost()
        protocol.attach(tunnel.backend)
        tunnel.start(self.transport, backendTransport, pendingToBackend=early)

    def _tunnelClosed(self, totals: TunnelTotals) -> None:
        """
        Both connections are closed: release the backend, count, log.

        @param totals: What went through.
        """
        self._tunnel = None
        lease = self._lease
        assert lease is not None
        lease.release()
        backend = lease.backend
        stats = self._factory.stats
        stats.received(totals.fromClient)
        stats.sent(totals.toClient)
        self._fromClient, self._toClient = totals.fromClient, totals.toClient
        self._outcome = totals.reason
        if totals.reason == "idle timeout":
            _log.info(
                "{frontend}: closed idle connection from {client} to {label} "
                "after {timeout} seconds without traffic",
                frontend=self._factory.frontend.name,
                client=_host(self._source),
                timeout=self._routed()[0].config.idle_timeout,
                **backend.logFields,
            )
        self._record()

    # Closing.

    def _close(self, outcome: str) -> None:
        """
        Close the client before any tunnel: the log line is written when
        the connection is lost.

        @param outcome: How the connection ended, for the log.
        """
        self._stopHeaderTimer()
        if self._outcome is None:
            self._outcome = outcome
        self._header = None
        self._hello = None
        self._early = []
        self.transport.loseConnection()

    def abort(self) -> None:
        """
        Cut this connection off now (graceful shutdown is over).
        """
        if self._tunnel is not None:
            self._tunnel.abort("shutdown")
        elif self.transport is not None:
            self.transport.abortConnection()

    def _record(self) -> None:
        """
        Count the connection as closed and write its access log line, once.
        """
        if self._recorded:
            return
        self._recorded = True
        factory = self._factory
        factory.stats.connectionClosed()
        factory.connections.discard(self)
        if factory.accessLog is None:
            return
        now = self._clock.seconds()
        lease = self._lease
        backend = lease.backend if lease is not None and self._connectedOnce else None
        pool, attempts = self._pool, self._attempts
        factory.accessLog.logConnection(
            ConnectionRecord(
                timestamp=now,
                client=_host(self._source),
                frontend=factory.frontend.name,
                pool=pool.name if pool is not None else None,
                backend=backend.name if backend is not None else None,
                attempts=len(attempts.tried) if attempts is not None else 0,
                retryReasons=(
                    tuple(attempts.retryReasons) if attempts is not None else ()
                ),
                fromClient=self._fromClient,
                toClient=self._toClient,
                duration=now - self._opened,
                outcome=self._outcome or "closed",
                strategy=pool.config.strategy if pool is not None else None,
                choice=(
                    attempts.choices[-1].why
                    if attempts is not None and attempts.choices
                    else None
                ),
            )
        )


class TCPProxyFactory(Factory):
    """
    The factory of a TCP-mode frontend: each connection is relayed to a
    backend of the pool, or of the pool its SNI routes choose (see the
    module docstring).

    @ivar reactor: The reactor (L{IReactorTCP} and L{IReactorTime}).
    @ivar frontend: The frontend's configuration.
    @ivar pool: The pool that serves what no route matches, or L{None}
        (only with routes: such connections are closed).
    @ivar routes: The frontend's SNI routes, in order: the server name
        patterns of each and the pool they send to.
    @ivar stats: The frontend's statistics.
    @ivar accessLog: Where one line per connection goes, or L{None}.
    @ivar backendEndpoint: Returns the endpoint to connect to a backend, or
        L{None} for L{lbtwist.endpoints.backendEndpoint} with the backend's
        pool's C{connect_timeout}.
    """

    noisy = False

    def __init__(
        self,
        reactor: Any,
        frontend: FrontendConfig,
        pools: Mapping[str, BackendPool],
        stats: FrontendStats,
        accessLog: AccessLog | None,
        backendEndpoint: Callable[[Backend], IStreamClientEndpoint] | None = None,
    ) -> None:
        """
        @param reactor: The reactor (L{IReactorTCP} and L{IReactorTime}).
        @param frontend: The frontend's configuration.
        @param pools: The pools by name; those the frontend names (its
            C{pool}, its routes') are used, and must be TCP pools.
        @param stats: The frontend's statistics.
        @param accessLog: Where one line per connection goes, or L{None}.
        @param backendEndpoint: Returns the endpoint to connect to a
            backend; by default L{lbtwist.endpoints.backendEndpoint} with
            its pool's C{connect_timeout}.
        """
        self.reactor = reactor
        self.stats = stats
        self.accessLog = accessLog
        self.connections: set[_ClientConnection] = set()
        self.backendEndpoint = backendEndpoint
        self.reconfigure(frontend, pools)

    def endpointFor(self, backend: Backend, pool: BackendPool) -> IStreamClientEndpoint:
        """
        @param backend: A backend of C{pool}.
        @param pool: The pool a connection is served from (it may have
            left the configuration since, with a reload).
        @return: The endpoint that connects to C{backend}.
        """
        if self.backendEndpoint is not None:
            return self.backendEndpoint(backend)
        return backendEndpoint(
            self.reactor, backend.config, pool.config.connect_timeout
        )

    def reconfigure(
        self, frontend: FrontendConfig, pools: Mapping[str, BackendPool]
    ) -> None:
        """
        Apply new settings (after a reload): new connections follow them;
        open ones carry on as they started.

        @param frontend: The frontend's configuration.
        @param pools: The pools by name.
        """
        self.frontend = frontend
        self.pool = None if frontend.pool is None else pools[frontend.pool]
        self.routes = tuple(
            (route.sni, pools[route.pool])
            for route in frontend.routes
            if route.pool is not None
        )

    def route(self, serverName: str | None) -> BackendPool | None:
        """
        Choose the pool for a TLS connection.

        @param serverName: The server name of its ClientHello (lower case),
            or L{None} if it sent none.
        @return: The pool of the first route with a pattern matching
            C{serverName} (C{*.example.org} matches one label), else the
            frontend's C{pool}, which may be L{None}.
        """
        if serverName is not None:
            for patterns, pool in self.routes:
                for pattern in patterns:
                    if matchesServerName(pattern, serverName):
                        return pool
        return self.pool

    def drain(self) -> None:
        """
        Nothing to do: a TCP connection has no idle state between requests;
        open connections go on until they close or the grace period ends.
        """

    def openConnections(self) -> int:
        """
        @return: How many client connections are open.
        """
        return len(self.connections)

    def abortConnections(self) -> None:
        """
        Abort every client connection still open.
        """
        for connection in list(self.connections):
            connection.abort()

    def buildProtocol(self, addr: IAddress | None) -> _ClientConnection:
        """
        @param addr: The client's address.
        @return: The protocol for the client's connection.
        """
        return _ClientConnection(self)
