"""
Tests for L{lbtwist.web}: the HTTP proxy resources on lbtwist's own channel
(L{lbtwist.frontend.HTTPFrontend}) and in a stock twisted.web C{Site}, in
memory: clients and backends are L{StringTransport}s, backend connections
come from fake endpoints whose connection attempts the tests complete.
"""

from __future__ import annotations

import gc

from typing import Any

from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import (
    ConnectionAborted,
    ConnectionDone,
    ConnectionRefusedError,
)
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.testing import (
    EventLoggingObserver,
    MemoryReactorClock,
    StringTransport,
)
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site
from zope.interface import implementer

from lbtwist import web
from lbtwist._http.client import ConnectionPool, UpstreamConnection
from lbtwist._http.server import HTTPServerChannel, ServerRequest
from lbtwist.backend import Backend, BackendState
from lbtwist.frontend import HTTPFrontend
from lbtwist.pool import BackendPool
from lbtwist.web import PoolResource, RoutedResource

from .doubles import makeConfig

PEER = IPv4Address("TCP", "192.0.2.7", 51000)
FRONT = IPv4Address("TCP", "198.51.100.1", 8080)
B1 = "127.0.0.1:9001"
B2 = "127.0.0.1:9002"

GET = b"GET /p HTTP/1.1\r\nHost: a.example\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
WEBSOCKET = (
    b"GET /chat HTTP/1.1\r\n"
    b"Host: a.example\r\n"
    b"Connection: Upgrade\r\n"
    b"Upgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)
SWITCHING = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    b"\r\n"
)


def post(body: bytes, method: bytes = b"POST", target: bytes = b"/p") -> bytes:
    """
    A request with a C{Content-Length} body.
    """
    return (
        b"%s %s HTTP/1.1\r\nHost: a.example\r\nContent-Length: %d\r\n\r\n%s"
        % (method, target, len(body), body)
    )


def parseResponse(data: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    """
    Split one response into its status line, field lines and the rest.
    """
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b": ")
        headers.append((name, value))
    return lines[0], headers, rest


def values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """
    The values of every field line called C{name} (case-insensitive).
    """
    return [v for n, v in headers if n.lower() == name.lower()]


class Transport(StringTransport):
    """
    A L{StringTransport} that behaves like a TCP transport where the proxy
    can tell: it records C{abortConnection}, half-closes, tolerates
    unregistering no producer, and delivers C{connectionLost} (stopping its
    producer first) only when the test says the reactor would.

    @ivar aborted: Whether C{abortConnection} was called.
    @ivar writeClosed: Whether C{loseWriteConnection} was called.
    @ivar protocol: The protocol told about the end of the connection.
    """

    aborted = False
    writeClosed = False

    def __init__(self, peerAddress: Any = None, hostAddress: Any = None) -> None:
        super().__init__(hostAddress=hostAddress, peerAddress=peerAddress, lenient=True)
        self.protocol: Any = None
        self.lost = False

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()

    def loseWriteConnection(self) -> None:
        self.writeClosed = True

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if self.lost:
            producer.stopProducing()
            return
        super().registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.producer = None
        self.streaming = None

    def write(self, data: bytes) -> None:
        if not self.lost:
            super().write(data)

    def writeSequence(self, data: Any) -> None:
        if not self.lost:
            super().writeSequence(data)

    def deliverLoss(self, reason: Failure | None = None) -> None:
        """
        Tell the protocol its connection is closed, as the reactor does
        after a close, an abort or the peer's close.
        """
        if self.lost:
            return
        self.lost = True
        self.connected = False
        if reason is None:
            reason = Failure(ConnectionAborted() if self.aborted else ConnectionDone())
        producer, self.producer = self.producer, None
        if producer is not None:
            producer.stopProducing()
        self.protocol.connectionLost(reason)


class PendingConnect:
    """
    One connection attempt of a L{FakeEndpoint}, completed by the test.

    @ivar cancelled: Whether the attempt's L{Deferred} was cancelled.
    """

    def __init__(self, factory: IProtocolFactory) -> None:
        self.factory = factory
        self.cancelled = False
        self.deferred: Deferred[Any] = Deferred(self._cancel)

    def _cancel(self, d: Deferred[Any]) -> None:
        self.cancelled = True

    def succeed(self) -> tuple[UpstreamConnection, Transport]:
        """
        Connect: the protocol gets a fresh transport, then the attempt fires.
        """
        protocol = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 9000))
        assert isinstance(protocol, UpstreamConnection)
        transport = Transport(peerAddress=IPv4Address("TCP", "127.0.0.1", 9000))
        transport.protocol = protocol
        protocol.makeConnection(transport)
        self.deferred.callback(protocol)
        return protocol, transport

    def refuse(self) -> None:
        """
        Fail the attempt with a refused connection.
        """
        self.deferred.errback(ConnectionRefusedError())


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """
    A backend's endpoint: its connection attempts wait for the test.
    """

    def __init__(self) -> None:
        self.attempts: list[PendingConnect] = []

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        attempt = PendingConnect(factory)
        self.attempts.append(attempt)
        return attempt.deferred

    def pending(self) -> list[PendingConnect]:
        """
        The attempts that have not fired yet.
        """
        return [a for a in self.attempts if not a.deferred.called]


class FakeAccessLog:
    """
    Collects access log records.

    @ivar headers: The header fields records keep (none).
    """

    headers: tuple[bytes, ...] = ()

    def __init__(self) -> None:
        self.records: list[Any] = []

    def log(self, record: Any) -> None:
        self.records.append(record)


class Client:
    """
    A client connection to the frontend.
    """

    def __init__(self, protocol: Any, transport: Transport) -> None:
        self.protocol = protocol
        self.transport = transport

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def received(self) -> bytes:
        data: bytes = self.transport.value()
        return data

    def close(self) -> None:
        self.transport.deliverLoss()


class ProxyMixin:
    """
    A frontend whose root is a L{PoolResource} over two backends whose
    connections come from L{FakeEndpoint}s.
    """

    def setUp(self) -> None:
        self.build()

    def build(self, **poolOptions: Any) -> None:
        self.reactor = MemoryReactorClock()
        config = makeConfig(**poolOptions)
        poolConfig = config.pools[0]
        self.pool = BackendPool(poolConfig)
        self.backends = self.pool.backends
        self.endpoints = [FakeEndpoint(), FakeEndpoint()]
        self.connectionPools: dict[str, ConnectionPool] = {}

        def connectionsFor(backend: Backend) -> ConnectionPool:
            connections = self.connectionPools.get(backend.name)
            if connections is None:
                endpoint = self.endpoints[self.backends.index(backend)]
                connections = self.connectionPools[backend.name] = ConnectionPool(
                    self.reactor,
                    endpoint,
                    poolConfig.max_idle_connections,
                    poolConfig.idle_connection_timeout,
                    poolConfig.connect_timeout,
                )
            return connections

        self.connectionsFor = connectionsFor
        self.frontend = HTTPFrontend(
            self.reactor, config.frontends[0], poolConfig.max_body_size
        )
        self.accessLog = FakeAccessLog()
        self.frontend.accessLog = self.accessLog  # type: ignore[assignment]
        self.resource = PoolResource(
            self.reactor,
            self.pool,
            connectionsFor,
            self.frontend.policy,
            self.frontend.record,
        )
        frontend = config.frontends[0]
        if frontend.routes or frontend.request_id or frontend.request_headers:
            self.frontend.resource = RoutedResource(
                self.reactor, frontend, {"app": self.resource}, self.frontend.record
            )
        else:
            self.frontend.resource = self.resource

    def client(self) -> Client:
        channel = self.frontend.buildProtocol(PEER)
        transport = Transport(peerAddress=PEER, hostAddress=FRONT)
        transport.protocol = channel
        channel.makeConnection(transport)
        return Client(channel, transport)

    def connectBackend(self, index: int) -> tuple[UpstreamConnection, Transport]:
        """
        Complete the oldest pending connection attempt to backend C{index}.
        """
        pending = self.endpoints[index].pending()
        assert pending, f"no connection attempt to backend {index}"
        return pending[0].succeed()

    def attemptCount(self, index: int) -> int:
        return len(self.endpoints[index].attempts)

    def active(self) -> list[int]:
        return [b.active for b in self.backends]

    def record(self) -> Any:
        [record] = self.accessLog.records
        return record

    def assertNoCyclicGarbage(self) -> None:
        """
        Send 20 keep-alive GETs over two backend connections and assert
        that they leave nothing for the garbage collector.
        """
        client = self.client()
        client.send(GET)
        first, _ = self.connectBackend(0)
        first.dataReceived(OK)
        client.send(GET)
        second, _ = self.connectBackend(1)
        second.dataReceived(OK)
        gc.collect()
        gc.disable()
        self.addCleanup(gc.enable)  # type: ignore[attr-defined]
        for index in range(20):
            client.send(GET)
            (first if index % 2 == 0 else second).dataReceived(OK)
        self.assertEqual(len(self.accessLog.records), 22)  # type: ignore[attr-defined]
        self.assertEqual(gc.collect(), 0)  # type: ignore[attr-defined]


class RoutingTests(ProxyMixin, SynchronousTestCase):
    """
    Which backend gets a request, and how connections are reused.
    """

    def test_roundRobinOverBothBackends(self) -> None:
        """
        Successive requests go to the two backends in turn.
        """
        first = self.client()
        first.send(GET)
        self.assertEqual((self.attemptCount(0), self.attemptCount(1)), (1, 0))
        connection1, _ = self.connectBackend(0)
        connection1.dataReceived(OK)
        second = self.client()
        second.send(GET)
        self.assertEqual((self.attemptCount(0), self.attemptCount(1)), (1, 1))
        connection2, _ = self.connectBackend(1)
        connection2.dataReceived(OK)
        for client in (self.client(), self.client()):
            client.send(GET)
        self.assertEqual(
            [b.requests for b in self.backends], [2, 2], "four requests, two each"
        )
        self.assertEqual([r.backend for r in self.accessLog.records], [B1, B2])

    def test_keepAliveConnectionReused(self) -> None:
        """
        After a complete keep-alive response the backend connection is idle
        and the next request to that backend is sent on it.
        """
        client = self.client()
        client.send(GET)
        connection, upstream = self.connectBackend(0)
        connection.dataReceived(OK)
        self.assertEqual(self.connectionsFor(self.backends[0]).idleCount(), 1)
        client.send(GET)
        other, _ = self.connectBackend(1)
        other.dataReceived(OK)
        client.send(b"GET /third HTTP/1.1\r\nHost: a.example\r\n\r\n")
        self.assertEqual(self.attemptCount(0), 1)
        self.assertEqual(upstream.value().count(b" HTTP/1.1\r\n"), 2)
        self.assertIn(b"GET /third HTTP/1.1\r\n", upstream.value())
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nnum")
        self.assertTrue(client.received().endswith(b"num"))
        self.assertFalse(upstream.disconnecting)
        self.assertEqual(self.active(), [0, 0])
        self.assertEqual(self.connectionsFor(self.backends[0]).idleCount(), 1)

    def test_noCyclicGarbage(self) -> None:
        """
        A proxied request leaves no reference cycle behind: everything it
        made is freed by reference counting, without the garbage collector
        (cycles cost a collection pass on the request path).
        """
        self.assertNoCyclicGarbage()

    def test_noBackendUpAnswers503AtOnce(self) -> None:
        """
        With no backend available the client gets 503 at once and no
        connection is attempted.
        """
        for backend in self.backends:
            backend.setState(BackendState.DOWN, "test", self.reactor.seconds())
        client = self.client()
        client.send(GET)
        status, _, body = parseResponse(client.received())
        self.assertEqual(status, b"HTTP/1.1 503 Service Unavailable")
        self.assertEqual((self.attemptCount(0), self.attemptCount(1)), (0, 0))
        record = self.record()
        self.assertEqual(
            (record.status, record.backend, record.attempts), (503, None, 0)
        )

    def test_503SaysWhy(self) -> None:
        """
        The 503 page and the log line name the pool, how many backends are
        down, and the first one's reason.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.build(health={"check": "http", "path": "/healthz"})
        for backend in self.backends:
            backend.checkResult(
                False, "HTTP 404 on GET /healthz (expected 200-399)", 0.0
            )
        client = self.client()
        client.send(GET)
        status, _, body = parseResponse(client.received())
        self.assertEqual(status, b"HTTP/1.1 503 Service Unavailable")
        why = (
            'no backend available in pool "app": 2 of 2 down (127.0.0.1:9001: '
            "HTTP 404 on GET /healthz (expected 200-399))"
        )
        self.assertEqual(body, b"503 Service Unavailable\n" + why.encode() + b"\n")
        [event] = [e for e in events if e.get("code") == 503]
        self.assertEqual(event["why"], why)
        self.assertEqual(event["pool"], "app")
        self.assertIn(why, formatEvent(event))

    def test_waitsForTheFirstRoundOfChecks(self) -> None:
        """
        A request that arrives before the pool's first health checks have a
        result waits for them, and is forwarded once one brings a backend up.
        """
        self.build(health={"check": "tcp"})
        client = self.client()
        client.send(GET)
        self.reactor.advance(0.3)
        self.assertEqual(client.received(), b"")
        self.assertEqual((self.attemptCount(0), self.attemptCount(1)), (0, 0))
        self.backends[1].checkResult(True, "connected", self.reactor.seconds())
        self.reactor.advance(0)
        self.assertEqual((self.attemptCount(0), self.attemptCount(1)), (0, 1))
        connection, upstream = self.connectBackend(1)
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        status, _, body = parseResponse(client.received())
        self.assertEqual((status, body), (b"HTTP/1.1 200 OK", b"ok"))

    def test_firstRoundWaitIsBounded(self) -> None:
        """
        Without any check result the request gets its 503 once the check
        C{timeout} has passed.
        """
        self.build(health={"check": "tcp", "timeout": 2.0})
        client = self.client()
        client.send(GET)
        self.reactor.advance(1.9)
        self.assertEqual(client.received(), b"")
        self.reactor.advance(0.1)
        status, _, body = parseResponse(client.received())
        self.assertEqual(status, b"HTTP/1.1 503 Service Unavailable")
        self.assertIn(b"waiting for first health check", body)

    def test_nothingToWaitForWithInitialStateUp(self) -> None:
        """
        With C{initial_state = "up"} a request is forwarded at once.
        """
        self.build(health={"check": "tcp", "initial_state": "up"})
        client = self.client()
        client.send(GET)
        self.assertEqual(self.attemptCount(0) + self.attemptCount(1), 1)

    def test_clientGoneWhileWaiting(self) -> None:
        """
        A client that goes away while its request waits for the first
        checks cancels the wait: no backend is tried afterwards.
        """
        self.build(health={"check": "tcp"})
        client = self.client()
        client.send(GET)
        client.close()
        self.backends[0].checkResult(True, "connected", self.reactor.seconds())
        self.reactor.advance(5)
        self.assertEqual((self.attemptCount(0), self.attemptCount(1)), (0, 0))
        self.assertEqual(self.active(), [0, 0])

    def test_optionsStarAnsweredByLbtwist(self) -> None:
        """
        C{OPTIONS *} is answered 200 by lbtwist itself; no backend is
        touched.
        """
        client = self.client()
        client.send(b"OPTIONS * HTTP/1.1\r\nHost: a.example\r\n\r\n")
        status, headers, body = parseResponse(client.received())
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        self.assertEqual(
            values(headers, b"Allow"), [b"GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH"]
        )
        self.assertEqual(body, b"")
        self.assertEqual((self.attemptCount(0), self.attemptCount(1)), (0, 0))
        self.assertEqual([b.requests for b in self.backends], [0, 0])
        self.assertEqual(self.record().status, 200)

    def test_nonASCIITargetRefusedWithoutBackend(self) -> None:
        """
        A target with bytes outside ASCII is answered 400 by the channel;
        no connection is attempted and nothing is in flight.
        """
        client = self.client()
        client.send(b"GET /\x80\xb0 HTTP/1.1\r\nHost: a.example\r\n\r\n")
        status, _, _ = parseResponse(client.received())
        self.assertEqual(status, b"HTTP/1.1 400 Bad Request")
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual((self.attemptCount(0), self.attemptCount(1)), (0, 0))
        self.assertEqual(self.active(), [0, 0])
        self.assertEqual(self.record().status, 400)


class HeaderTests(ProxyMixin, SynchronousTestCase):
    """
    What goes upstream and what comes back.
    """

    def test_requestHeadUpstream(self) -> None:
        """
        The request goes upstream in origin form without hop-by-hop fields
        (nor those C{Connection} names), with C{X-Forwarded-*} and C{Via}
        added and an untrusted client's C{X-Forwarded-For} replaced.
        """
        client = self.client()
        client.send(
            b"GET http://a.example/p?q=1 HTTP/1.1\r\n"
            b"Host: a.example\r\n"
            b"Connection: keep-alive, X-Hop\r\n"
            b"Keep-Alive: timeout=5\r\n"
            b"X-Hop: secret\r\n"
            b"TE: trailers\r\n"
            b"Proxy-Connection: keep-alive\r\n"
            b"X-Forwarded-For: 203.0.113.9\r\n"
            b"User-Agent: t/1\r\n"
            b"\r\n"
        )
        _, upstream = self.connectBackend(0)
        self.assertEqual(
            upstream.value(),
            b"GET /p?q=1 HTTP/1.1\r\n"
            b"Host: a.example\r\n"
            b"User-Agent: t/1\r\n"
            b"X-Forwarded-For: 192.0.2.7\r\n"
            b"X-Forwarded-Proto: http\r\n"
            b"X-Forwarded-Host: a.example\r\n"
            b"Via: 1.1 lbtwist\r\n"
            b"\r\n",
        )

    def test_responseRelayedWithViaAndLength(self) -> None:
        """
        The response comes back with its end-to-end fields in order,
        hop-by-hop ones (and those its C{Connection} names) removed, C{Via}
        added and its C{Content-Length} framing.
        """
        client = self.client()
        client.send(GET)
        connection, _ = self.connectBackend(0)
        connection.dataReceived(
            b"HTTP/1.1 200 OK\r\n"
            b"Content-Length: 5\r\n"
            b"Connection: keep-alive, X-Secret\r\n"
            b"Keep-Alive: timeout=5\r\n"
            b"X-Secret: s\r\n"
            b"X-App: 1\r\n"
            b"Set-Cookie: a=1\r\n"
            b"Set-Cookie: b=2\r\n"
            b"\r\n"
            b"hello"
        )
        self.assertEqual(
            client.received(),
            b"HTTP/1.1 200 OK\r\n"
            b"X-App: 1\r\n"
            b"Set-Cookie: a=1\r\n"
            b"Set-Cookie: b=2\r\n"
            b"Via: 1.1 lbtwist\r\n"
            b"Content-Length: 5\r\n"
            b"\r\n"
            b"hello",
        )
        self.assertFalse(client.transport.disconnecting)

    def test_chunkedResponseRelayedChunked(self) -> None:
        """
        A chunked response is relayed chunked, ending with the last chunk.
        """
        client = self.client()
        client.send(GET)
        connection, _ = self.connectBackend(0)
        connection.dataReceived(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        status, headers, body = parseResponse(client.received())
        self.assertEqual(values(headers, b"Transfer-Encoding"), [b"chunked"])
        self.assertEqual(body, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        self.assertEqual(self.active(), [0, 0])

    def test_closeDelimitedResponseReframedChunked(self) -> None:
        """
        A response delimited by the end of the backend connection is sent
        chunked to an HTTP/1.1 client, whose connection stays open.
        """
        client = self.client()
        client.send(GET)
        connection, upstream = self.connectBackend(0)
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc")
        self.assertEqual(self.active(), [1, 0])
        upstream.deliverLoss()
        status, headers, body = parseResponse(client.received())
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        self.assertEqual(values(headers, b"Connection"), [])
        self.assertEqual(body, b"3\r\nabc\r\n0\r\n\r\n")
        self.assertFalse(client.transport.disconnecting)
        self.assertEqual(self.active(), [0, 0])

    def test_headResponseKeepsConnections(self) -> None:
        """
        The response to HEAD keeps its C{Content-Length}, carries no body,
        and both connections stay open for the next request.
        """
        client = self.client()
        client.send(b"HEAD /p HTTP/1.1\r\nHost: a.example\r\n\r\n")
        connection, upstream = self.connectBackend(0)
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        status, headers, body = parseResponse(client.received())
        self.assertEqual(values(headers, b"Content-Length"), [b"100"])
        self.assertEqual(body, b"")
        self.assertFalse(client.transport.disconnecting)
        self.assertFalse(upstream.disconnecting)
        self.assertEqual(self.connectionsFor(self.backends[0]).idleCount(), 1)
        self.assertEqual(self.active(), [0, 0])


class RetryTests(ProxyMixin, SynchronousTestCase):
    """
    Which failed attempts are made again on the other backend.
    """

    def test_refusedConnectionRetriedForPOST(self) -> None:
        """
        A refused connection is retried on the other backend even for POST,
        which gets the body there.
        """
        client = self.client()
        client.send(post(b"abc"))
        self.endpoints[0].pending()[0].refuse()
        connection, upstream = self.connectBackend(1)
        self.assertTrue(upstream.value().startswith(b"POST /p HTTP/1.1\r\n"))
        self.assertTrue(upstream.value().endswith(b"Content-Length: 3\r\n\r\nabc"))
        connection.dataReceived(OK)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertEqual(self.active(), [0, 0])

    def test_lostAfterSendingRetriedForGET(self) -> None:
        """
        A GET whose backend closed before answering is sent again to the
        other backend.
        """
        client = self.client()
        client.send(GET)
        _, first = self.connectBackend(0)
        first.deliverLoss(Failure(ConnectionDone()))
        connection, second = self.connectBackend(1)
        self.assertEqual(second.value(), first.value())
        connection.dataReceived(OK)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 200 OK\r\n"))
        record = self.record()
        self.assertEqual((record.backend, record.attempts), (B2, 2))
        self.assertEqual(
            record.retryReasons, (f"{B1}: connection lost before the response",)
        )

    def test_lostAfterSendingAnswers502ForPOST(self) -> None:
        """
        A POST whose backend closed before answering is not sent again: the
        client gets 502 and the access log says why it was not retried.
        """
        client = self.client()
        client.send(post(b"abc"))
        _, first = self.connectBackend(0)
        first.deliverLoss(Failure(ConnectionDone()))
        status, _, _ = parseResponse(client.received())
        self.assertEqual(status, b"HTTP/1.1 502 Bad Gateway")
        self.assertEqual(self.attemptCount(1), 0)
        self.assertEqual(self.active(), [0, 0])
        record = self.record()
        self.assertEqual((record.status, record.backend, record.attempts), (502, B1, 1))
        self.assertEqual(
            record.retryReasons,
            (
                f"{B1}: connection lost before the response; "
                "not retried: POST is not idempotent",
            ),
        )

    def test_bodyOverRetryBufferNotReplayed(self) -> None:
        """
        A PUT whose body is larger than C{retry_buffer} is answered 502 when
        its backend is lost, not sent again.
        """
        self.build(retry_buffer=4)
        client = self.client()
        client.send(post(b"0123456789", b"PUT"))
        _, first = self.connectBackend(0)
        self.assertTrue(first.value().endswith(b"\r\n\r\n0123456789"))
        first.deliverLoss(Failure(ConnectionDone()))
        status, _, _ = parseResponse(client.received())
        self.assertEqual(status, b"HTTP/1.1 502 Bad Gateway")
        self.assertEqual(self.attemptCount(1), 0)
        self.assertEqual(
            self.record().retryReasons,
            (
                f"{B1}: connection lost before the response; "
                "not retried: body larger than retry_buffer (4 bytes)",
            ),
        )

    def test_smallBodyReplayedByteExact(self) -> None:
        """
        A PUT body within C{retry_buffer} is sent again byte for byte to the
        other backend, what had arrived first and the rest after; reading
        the client waits while no backend is connected.
        """
        body = bytes(range(256)) + b"\r\n0\r\n\r\n"
        request = post(body, b"PUT")
        split = len(request) - len(body) + 100
        client = self.client()
        client.send(request[:split])
        _, first = self.connectBackend(0)
        self.assertTrue(first.value().endswith(body[:100]))
        first.deliverLoss(Failure(ConnectionDone()))
        self.assertEqual(client.transport.producerState, "paused")
        _, second = self.connectBackend(1)
        self.assertEqual(client.transport.producerState, "producing")
        client.send(request[split:])
        head, _, sent = second.value().partition(b"\r\n\r\n")
        self.assertIn(b"Content-Length: %d\r\n" % (len(body),), head + b"\r\n")
        self.assertEqual(sent, body)

    def test_connectTimeoutRetriedThen504(self) -> None:
        """
        A connection attempt that takes longer than C{connect_timeout} is
        cancelled and made on the other backend; when both time out the
        client gets 504.
        """
        self.build(connect_timeout=2)
        client = self.client()
        client.send(GET)
        self.reactor.advance(2)
        self.assertTrue(self.endpoints[0].attempts[0].cancelled)
        self.assertEqual(self.attemptCount(1), 1)
        self.reactor.advance(2)
        status, _, _ = parseResponse(client.received())
        self.assertEqual(status, b"HTTP/1.1 504 Gateway Timeout")
        self.assertEqual(self.active(), [0, 0])

    def test_overflowedBodyNotReplayedAfterUnsentFailure(self) -> None:
        """
        A body that went over C{retry_buffer} is never sent again, even
        after a failure that says the request did not reach the backend (a
        failed TLS handshake, noticed once the body was being sent).
        """
        self.build(retry_buffer=4)
        client = self.client()
        client.send(post(b"0123456789", b"PUT"))
        _, first = self.connectBackend(0)
        first.deliverLoss(
            Failure(SSL.Error([("SSL routines", "", "certificate verify failed")]))
        )
        # Either the client gets 502, or the other backend gets the whole
        # body: never a head announcing 10 bytes and no body.
        if self.endpoints[1].pending():
            _, second = self.connectBackend(1)
            self.assertTrue(
                second.value().endswith(b"\r\n\r\n0123456789"),
                f"the body is lost on the retry: {second.value()!r}",
            )
        else:
            status, _, _ = parseResponse(client.received())
            self.assertEqual(status, b"HTTP/1.1 502 Bad Gateway")


class FailureTests(ProxyMixin, SynchronousTestCase):
    """
    Timeouts and responses cut short.
    """

    def test_responseTimeoutAnswers504(self) -> None:
        """
        A backend that sends no response head within C{response_timeout}
        is cut off and the client gets 504.
        """
        self.build(response_timeout=5, retries=0)
        client = self.client()
        client.send(GET)
        _, upstream = self.connectBackend(0)
        self.reactor.advance(4.9)
        self.assertEqual(client.received(), b"")
        self.reactor.advance(0.1)
        status, _, _ = parseResponse(client.received())
        self.assertEqual(status, b"HTTP/1.1 504 Gateway Timeout")
        self.assertTrue(upstream.aborted)
        self.assertEqual(self.active(), [0, 0])

    def test_truncatedLengthResponseAbortsClient(self) -> None:
        """
        A backend that closes after 5 of 100 promised bytes: the client gets
        the head and those bytes, then its connection is aborted.
        """
        client = self.client()
        client.send(GET)
        connection, upstream = self.connectBackend(0)
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello")
        self.assertEqual(self.active(), [1, 0])
        upstream.deliverLoss(Failure(ConnectionDone()))
        status, headers, body = parseResponse(client.received())
        self.assertEqual(values(headers, b"Content-Length"), [b"100"])
        self.assertEqual(body, b"hello")
        self.assertTrue(client.transport.aborted)
        self.assertEqual(self.active(), [0, 0])
        client.close()
        self.assertEqual(self.active(), [0, 0])
        self.assertEqual(self.record().status, 200)

    def test_truncatedChunkedResponseAbortsClient(self) -> None:
        """
        A chunked response cut before its last chunk: the client gets the
        chunks so far, never a last chunk, and its connection is aborted.
        """
        client = self.client()
        client.send(GET)
        connection, upstream = self.connectBackend(0)
        connection.dataReceived(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        upstream.deliverLoss(Failure(ConnectionDone()))
        _, _, body = parseResponse(client.received())
        self.assertEqual(body, b"5\r\nhello\r\n")
        self.assertTrue(client.transport.aborted)
        self.assertEqual(self.active(), [0, 0])

    def test_stalledResponseAbortsClientAfterReadTimeout(self) -> None:
        """
        A backend that sends a head and then nothing for C{read_timeout}
        is aborted, and so is the client.
        """
        self.build(read_timeout=5)
        client = self.client()
        client.send(GET)
        connection, upstream = self.connectBackend(0)
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhel")
        self.reactor.advance(4)
        connection.dataReceived(b"l")
        self.reactor.advance(4)
        self.assertFalse(client.transport.aborted)
        self.reactor.advance(1)
        self.assertTrue(client.transport.aborted)
        self.assertTrue(upstream.aborted)
        self.assertEqual(self.active(), [0, 0])
        self.assertTrue(client.received().endswith(b"hell"))

    def test_exceptionBeforeHeadAnswers502(self) -> None:
        """
        An exception while relaying the response head is logged; the
        client gets 502, the backend connection is aborted and released.
        """

        def broken(headers: object) -> object:
            raise RuntimeError("broken header policy")

        self.patch(web, "responseHeaders", broken)
        client = self.client()
        client.send(GET)
        connection, upstream = self.connectBackend(0)
        connection.dataReceived(OK)
        status, _, _ = parseResponse(client.received())
        self.assertEqual(status, b"HTTP/1.1 502 Bad Gateway")
        self.assertTrue(upstream.aborted)
        self.assertEqual(self.active(), [0, 0])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.record().status, 502)

    def test_exceptionAfterHeadAbortsClient(self) -> None:
        """
        An exception while relaying body bytes, after the head was sent,
        is logged and aborts both connections.
        """
        original = ServerRequest.write

        def broken(request: ServerRequest, data: bytes) -> None:
            if data == b"boom":
                raise RuntimeError("broken write")
            original(request, data)

        self.patch(ServerRequest, "write", broken)
        client = self.client()
        client.send(GET)
        connection, upstream = self.connectBackend(0)
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n")
        connection.dataReceived(b"boom")
        self.assertTrue(client.transport.aborted)
        self.assertTrue(upstream.aborted)
        self.assertEqual(self.active(), [0, 0])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_failingRecorderReleasesBackend(self) -> None:
        """
        A recorder that raises is logged; the response is complete and the
        backend released all the same.
        """

        def broken(*args: object) -> None:
            raise RuntimeError("broken recorder")

        self.resource.record = broken  # type: ignore[assignment]
        client = self.client()
        client.send(GET)
        connection, _ = self.connectBackend(0)
        connection.dataReceived(OK)
        self.assertTrue(client.received().endswith(b"\r\n\r\nok"))
        self.assertEqual(self.active(), [0, 0])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class ClientGoneTests(ProxyMixin, SynchronousTestCase):
    """
    A client that goes away releases what its request held.
    """

    def test_clientGoneWhileConnecting(self) -> None:
        """
        A client that disconnects while its backend connection is being made
        cancels the attempt and releases the backend.
        """
        client = self.client()
        client.send(GET)
        self.assertEqual(self.active(), [1, 0])
        client.close()
        self.assertTrue(self.endpoints[0].attempts[0].cancelled)
        self.assertEqual(self.active(), [0, 0])
        self.assertEqual(self.attemptCount(1), 0)

    def test_clientGoneMidResponse(self) -> None:
        """
        A client that disconnects during the response aborts the backend
        connection and releases the backend.
        """
        client = self.client()
        client.send(GET)
        connection, upstream = self.connectBackend(0)
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        client.close()
        self.assertTrue(upstream.aborted)
        self.assertEqual(self.active(), [0, 0])
        self.assertEqual(self.connectionsFor(self.backends[0]).openCount(), 0)
        upstream.deliverLoss()
        self.assertEqual(self.active(), [0, 0])

    def test_clientGoneWhileWaitingForHead(self) -> None:
        """
        A client that disconnects before the response head aborts the
        backend connection; nothing is retried.
        """
        client = self.client()
        client.send(GET)
        _, upstream = self.connectBackend(0)
        client.close()
        self.assertTrue(upstream.aborted)
        upstream.deliverLoss()
        self.assertEqual(self.active(), [0, 0])
        self.assertEqual(self.attemptCount(1), 0)


class StreamingTests(ProxyMixin, SynchronousTestCase):
    """
    Bodies stream both ways, with backpressure.
    """

    def test_requestBodyStreamsBeforeItIsComplete(self) -> None:
        """
        Request body bytes reach the backend before the client has sent the
        whole body.
        """
        request = post(b"0123456789")
        client = self.client()
        client.send(request[:-6])
        _, upstream = self.connectBackend(0)
        self.assertTrue(upstream.value().endswith(b"\r\n\r\n0123"))
        client.send(request[-6:-3])
        self.assertTrue(upstream.value().endswith(b"\r\n\r\n0123456"))
        client.send(request[-3:])
        self.assertTrue(upstream.value().endswith(b"\r\n\r\n0123456789"))

    def test_chunkedRequestBodyStreamsChunked(self) -> None:
        """
        A chunked request body goes upstream chunked, each piece as it
        arrives, then the last chunk.
        """
        client = self.client()
        client.send(
            b"POST /p HTTP/1.1\r\nHost: a.example\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
        )
        _, upstream = self.connectBackend(0)
        head, _, body = upstream.value().partition(b"\r\n\r\n")
        self.assertIn(b"\r\nTransfer-Encoding: chunked", head)
        self.assertEqual(body, b"3\r\nabc\r\n")
        client.send(b"2\r\nde\r\n0\r\n\r\n")
        _, _, body = upstream.value().partition(b"\r\n\r\n")
        self.assertEqual(body, b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")

    def test_slowClientPausesBackend(self) -> None:
        """
        A client transport that pauses its producer pauses reading from the
        backend, and resuming it resumes reading.
        """
        client = self.client()
        client.send(GET)
        connection, upstream = self.connectBackend(0)
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        producer = client.transport.producer
        assert producer is not None
        producer.pauseProducing()
        self.assertEqual(upstream.producerState, "paused")
        producer.resumeProducing()
        self.assertEqual(upstream.producerState, "producing")

    def test_noProducerForOneReadResponse(self) -> None:
        """
        A response complete in the read that brought its head never
        registers a producer on the client's connection: nothing of the
        backend's is left to pace.  One whose body goes on past that read
        registers the upstream connection once, until the response ends.
        """
        client = self.client()
        registered: list[object] = []
        register = client.transport.registerProducer

        def recordingRegister(producer: Any, streaming: bool) -> None:
            registered.append(producer)
            register(producer, streaming)

        client.transport.registerProducer = recordingRegister  # type: ignore[method-assign]
        client.send(GET)
        connection, _ = self.connectBackend(0)
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
        self.assertEqual(registered, [])
        self.assertTrue(client.received().endswith(b"\r\n\r\nabc"))

        client.send(GET)
        # Round robin: the second request goes to the other backend.
        again, _ = self.connectBackend(1)
        again.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc")
        self.assertEqual(len(registered), 1)
        self.assertIsNotNone(client.transport.producer)
        again.dataReceived(b"def")
        self.assertEqual(len(registered), 1)
        self.assertIsNone(client.transport.producer)
        self.assertTrue(client.received().endswith(b"abcdef"))

    def test_slowBackendPausesClient(self) -> None:
        """
        A backend transport that pauses its producer pauses reading the
        request body from the client.
        """
        request = post(b"0123456789")
        client = self.client()
        client.send(request[:-5])
        _, upstream = self.connectBackend(0)
        producer = upstream.producer
        assert producer is not None
        producer.pauseProducing()
        self.assertEqual(client.transport.producerState, "paused")
        producer.resumeProducing()
        self.assertEqual(client.transport.producerState, "producing")
        client.send(request[-5:])
        self.assertIsNone(upstream.producer)


    def test_earlyResponseWhileBodyStreams(self) -> None:
        """
        A backend that answers before the request body is complete: the
        response is relayed with C{Connection: close}, the rest of the body
        is dropped and the backend connection is not reused.
        """
        request = post(b"0123456789", b"PUT")
        client = self.client()
        client.send(request[:-5])
        connection, upstream = self.connectBackend(0)
        connection.dataReceived(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
        status, headers, _ = parseResponse(client.received())
        self.assertEqual(status, b"HTTP/1.1 413 Too Large")
        self.assertEqual(values(headers, b"Connection"), [b"close"])
        self.assertTrue(upstream.aborted)
        self.assertEqual(self.connectionsFor(self.backends[0]).idleCount(), 0)
        self.assertEqual(self.active(), [0, 0])

    def test_clientGoneMidUploadAbortsBackend(self) -> None:
        """
        A client that disconnects in the middle of its request body aborts
        the backend connection and releases the backend.
        """
        request = post(b"0123456789")
        client = self.client()
        client.send(request[:-5])
        _, upstream = self.connectBackend(0)
        client.close()
        self.assertTrue(upstream.aborted)
        self.assertEqual(self.active(), [0, 0])
        self.assertEqual(self.attemptCount(1), 0)

class WebSocketTests(ProxyMixin, SynchronousTestCase):
    """
    WebSocket handshakes: tunnelled after 101, an ordinary response
    otherwise.
    """

    def test_handshakeAnswered200(self) -> None:
        """
        A handshake the backend answers 200 is relayed as an ordinary
        response, after which the client connection closes.
        """
        client = self.client()
        client.send(WEBSOCKET)
        connection, upstream = self.connectBackend(0)
        self.assertIn(
            b"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n", upstream.value()
        )
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno")
        status, headers, body = parseResponse(client.received())
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        self.assertEqual(values(headers, b"Connection"), [b"close"])
        self.assertEqual(body, b"no")
        self.assertTrue(client.transport.disconnecting)
        client.close()
        self.assertEqual(self.active(), [0, 0])

    def test_handshakeAnswered101Tunnels(self) -> None:
        """
        A handshake the backend answers 101 sends the 101 head to the client
        and tunnels bytes both ways; the backend is in flight until both
        connections are closed.
        """
        client = self.client()
        client.send(WEBSOCKET + b"early")
        connection, upstream = self.connectBackend(0)
        self.assertTrue(upstream.value().endswith(b"\r\n\r\n"))
        requestHead = upstream.value()
        connection.dataReceived(SWITCHING + b"\x81\x02hi")
        self.assertEqual(
            client.received(),
            b"HTTP/1.1 101 Switching Protocols\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
            b"Connection: Upgrade\r\n"
            b"Upgrade: websocket\r\n"
            b"Via: 1.1 lbtwist\r\n"
            b"\r\n"
            b"\x81\x02hi",
        )
        self.assertEqual(upstream.value(), requestHead + b"early")
        client.send(b"\x81\x05hello")
        self.assertTrue(upstream.value().endswith(b"early\x81\x05hello"))
        connection.dataReceived(b"\x81\x03bye")
        self.assertTrue(client.received().endswith(b"\x81\x02hi\x81\x03bye"))
        self.assertEqual(self.active(), [1, 0])
        client.close()
        self.assertTrue(upstream.disconnecting)
        self.assertEqual(self.active(), [1, 0])
        upstream.deliverLoss()
        self.assertEqual(self.active(), [0, 0])
        record = self.record()
        self.assertEqual((record.status, record.backend), (101, B1))

    def test_handshakeUsesFreshConnection(self) -> None:
        """
        A handshake is never sent on an idle keep-alive connection.
        """
        client = self.client()
        client.send(GET)
        connection, _ = self.connectBackend(0)
        connection.dataReceived(OK)
        other = self.client()
        other.send(GET)
        self.connectBackend(1)[0].dataReceived(OK)
        self.assertEqual(self.connectionsFor(self.backends[0]).idleCount(), 1)
        websocket = self.client()
        websocket.send(WEBSOCKET)
        self.assertEqual(self.attemptCount(0), 2)


class AccessLogTests(ProxyMixin, SynchronousTestCase):
    """
    The record of each request.
    """

    def test_recordHasBackendAttemptsAndReasons(self) -> None:
        """
        The record names the backend that answered, how many were tried and
        why each retry was made.
        """
        client = self.client()
        client.send(post(b"abc"))
        self.endpoints[0].pending()[0].refuse()
        connection, _ = self.connectBackend(1)
        connection.dataReceived(OK)
        record = self.record()
        self.assertEqual(record.backend, B2)
        self.assertEqual(record.attempts, 2)
        self.assertEqual(record.retryReasons, (f"{B1}: connection refused",))
        self.assertEqual(record.status, 200)
        self.assertEqual((record.method, record.target), ("POST", "/p"))
        self.assertEqual(
            (record.client, record.frontend, record.pool), ("192.0.2.7", "web", "app")
        )

    def test_recordCountsBodyBytes(self) -> None:
        """
        The record's size is the response body bytes, as C{%b} in the
        combined log format (a 2-byte body counts 2).
        """
        client = self.client()
        client.send(GET)
        connection, _ = self.connectBackend(0)
        connection.dataReceived(OK)
        self.assertEqual(self.record().bytes, 2)


class EmbeddingTests(ProxyMixin, SynchronousTestCase):
    """
    A L{PoolResource} served by a stock twisted.web C{Site} (through
    L{lbtwist.web.StockRequest}).
    """

    def siteClient(self) -> Client:
        site = Site(self.resource, reactor=self.reactor)
        channel = site.buildProtocol(PEER)
        transport = Transport(peerAddress=PEER, hostAddress=FRONT)
        transport.protocol = channel
        channel.makeConnection(transport)
        return Client(channel, transport)

    def test_getForwardedAndRelayed(self) -> None:
        """
        A GET is forwarded with lbtwist's header policy and the response
        relayed.
        """
        client = self.siteClient()
        client.send(
            b"GET /p?q HTTP/1.1\r\nHost: a.example\r\n"
            b"Connection: x-hop\r\nX-Hop: 1\r\n\r\n"
        )
        connection, upstream = self.connectBackend(0)
        self.assertEqual(
            upstream.value(),
            b"GET /p?q HTTP/1.1\r\n"
            b"Host: a.example\r\n"
            b"X-Forwarded-For: 192.0.2.7\r\n"
            b"X-Forwarded-Proto: http\r\n"
            b"X-Forwarded-Host: a.example\r\n"
            b"Via: 1.1 lbtwist\r\n"
            b"\r\n",
        )
        connection.dataReceived(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-App: 1\r\n\r\nhello"
        )
        status, headers, body = parseResponse(client.received())
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        self.assertEqual(values(headers, b"X-App"), [b"1"])
        self.assertEqual(values(headers, b"Via"), [b"1.1 lbtwist"])
        self.assertEqual(values(headers, b"Content-Length"), [b"5"])
        self.assertEqual(body, b"hello")
        self.assertEqual(self.active(), [0, 0])

    def test_postBodyForwarded(self) -> None:
        """
        A POST's body (which twisted.web received whole) is forwarded with
        its length, and a chunked response relayed.
        """
        client = self.siteClient()
        client.send(post(b"abc"))
        connection, upstream = self.connectBackend(0)
        self.assertTrue(upstream.value().startswith(b"POST /p HTTP/1.1\r\n"))
        self.assertTrue(upstream.value().endswith(b"Content-Length: 3\r\n\r\nabc"))
        connection.dataReceived(
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4\r\ndone\r\n0\r\n\r\n"
        )
        status, headers, body = parseResponse(client.received())
        self.assertEqual(status, b"HTTP/1.1 201 Created")
        self.assertEqual(body, b"4\r\ndone\r\n0\r\n\r\n")
        self.assertEqual(self.active(), [0, 0])

    def test_backendDateAndServerNotDuplicated(self) -> None:
        """
        The backend's C{Date} and C{Server} are relayed once, not next to
        the ones twisted.web set before rendering.
        """
        client = self.siteClient()
        client.send(GET)
        connection, _ = self.connectBackend(0)
        connection.dataReceived(
            b"HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
            b"Server: app\r\nContent-Length: 2\r\n\r\nok"
        )
        _, headers, _ = parseResponse(client.received())
        self.assertEqual(values(headers, b"Date"), [b"Mon, 01 Jan 2024 00:00:00 GMT"])
        self.assertEqual(values(headers, b"Server"), [b"app"])

    def test_noContentTypeInvented(self) -> None:
        """
        A response without C{Content-Type} is relayed without one (as
        lbtwist's own channel does), not with twisted.web's default.
        """
        client = self.siteClient()
        client.send(GET)
        connection, _ = self.connectBackend(0)
        connection.dataReceived(OK)
        _, headers, _ = parseResponse(client.received())
        self.assertEqual(values(headers, b"Content-Type"), [])


_ROUTED = {
    "pool": None,
    "route": [{"path_prefix": "/p", "pool": "app"}],
    "request_id": True,
    "request_headers": {"set": {"X-Client": "{client_ip}"}, "remove": ["X-Forwarded-For"]},
    "response_headers": {"add": {"X-Seen": "{request_id}"}},
}


class RoutedResourceTests(ProxyMixin, SynchronousTestCase):
    """
    A frontend whose root is a L{RoutedResource}: routes, header rules and
    request IDs on lbtwist's own channel.
    """

    def setUp(self) -> None:
        self.build(frontend=_ROUTED)

    def test_noCyclicGarbage(self) -> None:
        """
        A routed request with header rules and a request ID leaves no
        reference cycle behind either.
        """
        self.assertNoCyclicGarbage()

    def test_rulesAndRequestId(self) -> None:
        """
        Request rules change what goes upstream (lbtwist's own
        C{X-Forwarded-For} too), response rules what comes back; the
        request ID goes upstream, comes back, and is logged with the pool.
        """
        client = self.client()
        client.send(GET)
        connection, upstream = self.connectBackend(0)
        head = upstream.value()
        self.assertIn(b"X-Client: 192.0.2.7\r\n", head)
        self.assertNotIn(b"X-Forwarded-For", head)
        requestId = [
            line.split(b": ")[1] for line in head.split(b"\r\n") if line.startswith(b"X-Request-ID")
        ]
        self.assertEqual(len(requestId), 1)
        connection.dataReceived(OK)
        _, headers, _ = parseResponse(client.received())
        self.assertEqual(values(headers, b"x-request-id"), requestId)
        self.assertEqual(values(headers, b"x-seen"), requestId)
        record = self.record()
        self.assertEqual((record.pool, record.requestId), ("app", requestId[0].decode()))

    def test_notFound(self) -> None:
        """
        Without a default pool, a request no route matches gets 404 with
        its request ID and the response rules, and no backend is tried.
        """
        client = self.client()
        client.send(b"GET /other HTTP/1.1\r\nHost: a.example\r\nX-Request-ID: abc\r\n\r\n")
        status, headers, _ = parseResponse(client.received())
        self.assertEqual(status, b"HTTP/1.1 404 Not Found")
        self.assertEqual(values(headers, b"x-request-id"), [b"abc"])
        self.assertEqual(values(headers, b"x-seen"), [b"abc"])
        self.assertEqual((self.attemptCount(0), self.attemptCount(1)), (0, 0))
        record = self.record()
        self.assertEqual((record.status, record.pool, record.requestId), (404, None, "abc"))

    def test_errorPageHasRules(self) -> None:
        """
        lbtwist's own 503 for a routed request carries the response rules
        and the request ID.
        """
        for backend in self.backends:
            backend.setState(BackendState.DOWN, "test", self.reactor.seconds())
        client = self.client()
        client.send(GET)
        status, headers, _ = parseResponse(client.received())
        self.assertEqual(status, b"HTTP/1.1 503 Service Unavailable")
        self.assertEqual(len(values(headers, b"x-request-id")), 1)
        self.assertEqual(values(headers, b"x-seen"), values(headers, b"x-request-id"))

    def test_stockRequest(self) -> None:
        """
        A L{RoutedResource} routes a stock twisted.web request too, in an
        ordinary C{Site}.
        """
        site = Site(self.frontend.resource)
        protocol = site.buildProtocol(PEER)
        transport = Transport(peerAddress=PEER, hostAddress=FRONT)
        protocol.makeConnection(transport)
        protocol.dataReceived(b"GET /nothing HTTP/1.1\r\nHost: a.example\r\n\r\n")
        self.assertIn(b"404 Not Found", transport.value())
        self.assertIn(b"X-Request-Id: ", transport.value())
