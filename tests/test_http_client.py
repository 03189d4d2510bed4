"""
Tests for L{lbtwist._http.client}: the upstream connections and their
keep-alive pool, on in-memory transports.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from lbtwist._http.client import MAX_HEAD_SIZE, ConnectionPool, UpstreamConnection
from lbtwist._http.interfaces import IResponseReceiver, ResponseHead
from lbtwist.failures import UpstreamFailure

REQUEST = [b"GET / HTTP/1.1\r\n", b"Host: backend\r\n", b"\r\n"]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """
    A client endpoint whose connection attempts the test completes.

    @ivar attempts: The pending attempts: (factory, deferred).
    @ivar auto: Whether attempts succeed at once.
    """

    def __init__(self, auto: bool = True) -> None:
        self.auto = auto
        self.attempts: list[tuple[IProtocolFactory, Deferred[Any]]] = []
        self.transports: list[StringTransport] = []

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.attempts.append((factory, d))
        if self.auto:
            self.succeed()
        return d

    def succeed(self) -> StringTransport:
        factory, d = self.attempts.pop(0)
        protocol = factory.buildProtocol(IPv4Address("TCP", "10.0.0.2", 80))
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.transports.append(transport)
        d.callback(protocol)
        return transport

    def fail(self, failure: Failure) -> None:
        factory, d = self.attempts.pop(0)
        d.errback(failure)


@implementer(IResponseReceiver)
class Receiver:
    """
    Records what an upstream connection tells about a response.
    """

    def __init__(self) -> None:
        self.head: ResponseHead | None = None
        self.data: list[bytes] = []
        self.ended = False
        self.failure: UpstreamFailure | None = None
        self.events: list[str] = []
        self.waiting = 0

    def responseHead(self, head: ResponseHead) -> None:
        self.events.append("head")
        self.head = head

    def responseData(self, data: bytes) -> None:
        self.events.append("data")
        self.data.append(data)

    def responseWaiting(self) -> None:
        self.waiting += 1

    def responseEnd(self) -> None:
        self.events.append("end")
        self.ended = True

    def responseFailed(self, failure: object) -> None:
        self.events.append("failed")
        assert isinstance(failure, UpstreamFailure)
        self.failure = failure

    @property
    def body(self) -> bytes:
        return b"".join(self.data)


class Tunnel(Protocol):
    """
    A protocol taking a connection over after a 101, recording events.
    """

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.lost = reason


@implementer(IHalfCloseableProtocol)
class HalfCloseTunnel(Tunnel):
    """
    A L{Tunnel} told about half-closes.
    """

    readLost = False
    writeLost = False

    def readConnectionLost(self) -> None:
        self.readLost = True

    def writeConnectionLost(self) -> None:
        self.writeLost = True


class ClientTestsMixin:
    """
    Helpers: a pool on a fake endpoint and a task clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoint = FakeEndpoint()
        self.pool = self.makePool()

    def makePool(self, maxIdle: int = 4, idleTimeout: float = 60.0) -> ConnectionPool:
        return ConnectionPool(self.clock, self.endpoint, maxIdle, idleTimeout, 5.0)

    def connect(self, fresh: bool = False) -> UpstreamConnection:
        results: list[Any] = []
        self.pool.connect(fresh).addBoth(results.append)
        [connection] = results
        assert isinstance(connection, UpstreamConnection), connection
        return connection

    def send(
        self,
        connection: UpstreamConnection,
        method: bytes = b"GET",
        chunked: bool = False,
        endBody: bool = True,
        responseTimeout: float = 30.0,
        readTimeout: float = 10.0,
    ) -> Receiver:
        receiver = Receiver()
        head = [b"%s / HTTP/1.1\r\n" % (method,), b"Host: backend\r\n", b"\r\n"]
        connection.request(
            head, method, chunked, receiver, responseTimeout, readTimeout
        )
        if endBody:
            connection.endBody()
        return receiver

    def exchange(
        self, response: bytes, method: bytes = b"GET", **kwargs: Any
    ) -> tuple[UpstreamConnection, Receiver]:
        connection = self.connect()
        receiver = self.send(connection, method, **kwargs)
        connection.dataReceived(response)
        return connection, receiver


class ReuseTests(ClientTestsMixin, SynchronousTestCase):
    """
    When a connection goes back to the pool and when it does not.
    """

    def test_requestHeadWritten(self) -> None:
        """
        The request head is written as given.
        """
        connection = self.connect()
        self.send(connection)
        self.assertEqual(
            self.endpoint.transports[0].value(),
            b"GET / HTTP/1.1\r\nHost: backend\r\n\r\n",
        )

    def test_reuseAfterCleanResponse(self) -> None:
        """
        A connection is reused after a complete, clean keep-alive response.
        """
        connection, receiver = self.exchange(OK)
        self.assertEqual(receiver.events, ["head", "data", "end"])
        self.assertEqual(receiver.body, b"abc")
        self.assertEqual(self.pool.idleCount(), 1)
        self.assertFalse(connection.reused)
        again = self.connect()
        self.assertIs(again, connection)
        self.assertTrue(again.reused)
        self.assertEqual(self.pool.idleCount(), 0)
        self.assertEqual(self.pool.openCount(), 1)

    def test_successiveResponsesOfEveryFraming(self) -> None:
        """
        One connection carries responses framed every way in turn, each read
        whole and on its own: the parser a complete response leaves ready is
        used for the next, and a fresh one follows a HEAD, a 1xx or a 204.
        """
        responses: list[tuple[bytes, bytes, bytes, int | None]] = [
            (b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", b"abc", 3),
            (
                b"GET",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n",
                b"de",
                None,
            ),
            (b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", b"", 50),
            (b"GET", b"HTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nf", b"f", 1),
            (b"GET", b"HTTP/1.1 204 No Content\r\n\r\n", b"", None),
            (
                b"GET",
                b"HTTP/1.1 100 Continue\r\n\r\n"
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\ngh",
                b"gh",
                2,
            ),
            (
                b"GET",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"1\r\ni\r\n0\r\n\r\n",
                b"i",
                None,
            ),
            (b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"", 0),
        ]
        first = None
        for method, response, body, length in responses:
            connection = self.connect()
            if first is None:
                first = connection
            self.assertIs(connection, first)
            receiver = self.send(connection, method)
            connection.dataReceived(response)
            self.assertEqual(receiver.events[0], "head")
            self.assertEqual(receiver.events[-1], "end", (method, response))
            self.assertEqual(receiver.body, body)
            assert receiver.head is not None
            self.assertEqual(receiver.head.length, length)
            self.assertEqual(self.pool.idleCount(), 1)
        self.assertEqual(len(self.endpoint.transports), 1)

    def test_freshParserAfterHead(self) -> None:
        """
        After a HEAD request, a response that has a body is read whole: the
        parser made for the HEAD response is not used again.
        """
        connection, receiver = self.exchange(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", b"HEAD"
        )
        self.assertTrue(receiver.ended)
        again = self.connect()
        self.assertIs(again, connection)
        receiver = self.send(again)
        again.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        self.assertEqual(receiver.body, b"hello")
        self.assertTrue(receiver.ended)

    def test_idleBeforeResponseEnd(self) -> None:
        """
        The connection is idle in the pool when C{responseEnd} is called.
        """
        counts: list[int] = []
        connection = self.connect()
        receiver = self.send(connection)
        receiver.responseEnd = lambda: counts.append(self.pool.idleCount())  # type: ignore[method-assign]
        connection.dataReceived(OK)
        self.assertEqual(counts, [1])

    def test_responseHead(self) -> None:
        """
        The head has the status, reason, version, fields as sent (values
        stripped) and length.
        """
        connection, receiver = self.exchange(
            b"HTTP/1.1 201 Created Here\r\nX-A:  a b \r\nSet-Cookie: 1\r\n"
            b"set-cookie: 2\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertEqual(
            receiver.head,
            ResponseHead(
                201,
                b"Created Here",
                b"HTTP/1.1",
                [
                    (b"X-A", b"a b"),
                    (b"Set-Cookie", b"1"),
                    (b"set-cookie", b"2"),
                    (b"Content-Length", b"0"),
                ],
                0,
                True,
            ),
        )
        self.assertTrue(receiver.ended)

    def test_noReason(self) -> None:
        """
        A status line without a reason phrase gives an empty reason.
        """
        connection, receiver = self.exchange(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n")
        assert receiver.head is not None
        self.assertEqual(receiver.head.reason, b"")
        self.assertTrue(receiver.ended)

    def test_noReuseAfterStrayBytes(self) -> None:
        """
        Bytes after a complete response in the same read: the response ends,
        the connection is closed.
        """
        connection, receiver = self.exchange(OK + b"HTTP/1.1 200 OK\r\n")
        self.assertEqual(receiver.events, ["head", "data", "end"])
        self.assertEqual(self.pool.idleCount(), 0)
        self.assertTrue(self.endpoint.transports[0].disconnecting)

    def test_noReuseAfterStrayGarbage(self) -> None:
        """
        Garbage after a complete response: the response ends, the
        connection is closed.
        """
        connection, receiver = self.exchange(OK + b"garbage")
        self.assertEqual(receiver.events, ["head", "data", "end"])
        self.assertEqual(self.pool.idleCount(), 0)
        self.assertTrue(self.endpoint.transports[0].disconnecting)

    def test_noReuseAfterConnectionClose(self) -> None:
        """
        A response with C{Connection: close} is not reused.
        """
        connection, receiver = self.exchange(
            b"HTTP/1.1 200 OK\r\nConnection: foo, Close\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertTrue(receiver.ended)
        self.assertEqual(self.pool.idleCount(), 0)
        self.assertTrue(self.endpoint.transports[0].disconnecting)

    def test_noReuseAfterHTTP10(self) -> None:
        """
        An HTTP/1.0 response without keep-alive is not reused.
        """
        connection, receiver = self.exchange(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\na")
        self.assertTrue(receiver.ended)
        assert receiver.head is not None
        self.assertEqual(receiver.head.version, b"HTTP/1.0")
        self.assertEqual(self.pool.idleCount(), 0)

    def test_reuseAfterHTTP10KeepAlive(self) -> None:
        """
        An HTTP/1.0 response with C{Connection: keep-alive} is reused.
        """
        connection, receiver = self.exchange(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\na"
        )
        self.assertTrue(receiver.ended)
        self.assertEqual(self.pool.idleCount(), 1)

    def test_closeDelimited(self) -> None:
        """
        A body without framing ends with the connection, which is not
        reused.
        """
        connection, receiver = self.exchange(b"HTTP/1.1 200 OK\r\n\r\nabc")
        connection.dataReceived(b"def")
        self.assertEqual(receiver.events, ["head", "data", "data"])
        assert receiver.head is not None
        self.assertIsNone(receiver.head.length)
        self.assertTrue(receiver.head.bodyExpected)
        connection.readConnectionLost()
        self.assertTrue(self.endpoint.transports[0].disconnecting)
        connection.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(receiver.events, ["head", "data", "data", "end"])
        self.assertEqual(receiver.body, b"abcdef")
        self.assertEqual(self.pool.openCount(), 0)

    def test_closeDelimitedReset(self) -> None:
        """
        A body without framing cut by a connection reset is truncated.
        """
        connection, receiver = self.exchange(b"HTTP/1.1 200 OK\r\n\r\nabc")
        connection.connectionLost(Failure(ConnectionLost()))
        assert receiver.failure is not None
        self.assertEqual(receiver.failure.kind, "truncated")

    def test_noReuseBodyNotSent(self) -> None:
        """
        A connection whose request body was not completely sent is aborted
        after the response.
        """
        connection, receiver = self.exchange(OK, endBody=False)
        self.assertTrue(receiver.ended)
        self.assertEqual(self.pool.idleCount(), 0)
        self.assertTrue(self.endpoint.transports[0].disconnected)

    def test_freshConnection(self) -> None:
        """
        C{connect(fresh=True)} makes a new connection even when one is idle.
        """
        connection, receiver = self.exchange(OK)
        other = self.connect(fresh=True)
        self.assertIsNot(other, connection)
        self.assertEqual(self.pool.idleCount(), 1)
        self.assertEqual(self.pool.openCount(), 2)

    def test_lifo(self) -> None:
        """
        The most recently idled connection is reused first.
        """
        first = self.connect()
        second = self.connect()
        firstReceiver = self.send(first)
        secondReceiver = self.send(second)
        first.dataReceived(OK)
        second.dataReceived(OK)
        self.assertTrue(firstReceiver.ended and secondReceiver.ended)
        self.assertIs(self.connect(), second)
        self.assertIs(self.connect(), first)

    def test_maxIdleZero(self) -> None:
        """
        With C{maxIdle} 0 no connection is kept.
        """
        self.pool = self.makePool(maxIdle=0)
        connection, receiver = self.exchange(OK)
        self.assertTrue(receiver.ended)
        self.assertEqual(self.pool.idleCount(), 0)
        self.assertTrue(self.endpoint.transports[0].disconnecting)

    def test_idleLimit(self) -> None:
        """
        At most C{maxIdle} connections are kept; the oldest idle one is
        closed.
        """
        self.pool = self.makePool(maxIdle=1)
        first = self.connect()
        second = self.connect()
        self.send(first)
        self.send(second)
        first.dataReceived(OK)
        second.dataReceived(OK)
        self.assertEqual(self.pool.idleCount(), 1)
        self.assertTrue(self.endpoint.transports[0].disconnecting)
        self.assertFalse(self.endpoint.transports[1].disconnecting)
        self.assertIs(self.connect(), second)

    def test_idleExpiry(self) -> None:
        """
        An idle connection is closed after C{idleTimeout}.
        """
        self.pool = self.makePool(idleTimeout=30)
        self.exchange(OK)
        self.clock.advance(29)
        self.assertEqual(self.pool.idleCount(), 1)
        self.clock.advance(1)
        self.assertEqual(self.pool.idleCount(), 0)
        self.assertTrue(self.endpoint.transports[0].disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_idleExpiryAfterShortResponseTimeout(self) -> None:
        """
        The idle timeout counts from the end of the response, whatever the
        response timeout was.
        """
        self.pool = self.makePool(idleTimeout=60)
        connection, receiver = self.exchange(OK, responseTimeout=5)
        self.clock.advance(59)
        self.assertEqual(self.pool.idleCount(), 1)
        self.clock.advance(1)
        self.assertEqual(self.pool.idleCount(), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_handedOutNotExpired(self) -> None:
        """
        A connection taken from the idle list is not closed by the idle
        timeout before its request.
        """
        self.pool = self.makePool(idleTimeout=30)
        connection, receiver = self.exchange(OK)
        self.assertIs(self.connect(), connection)
        self.clock.advance(100)
        self.assertFalse(self.endpoint.transports[0].disconnecting)
        receiver = self.send(connection)
        connection.dataReceived(OK)
        self.assertTrue(receiver.ended)

    def test_idleTimerCancelledOnReuse(self) -> None:
        """
        A reused connection is not closed by its idle timer.
        """
        self.pool = self.makePool(idleTimeout=30)
        connection, receiver = self.exchange(OK)
        self.clock.advance(20)
        again = self.connect()
        self.send(again, responseTimeout=100)
        self.clock.advance(20)
        self.assertFalse(self.endpoint.transports[0].disconnecting)

    def test_backendClosesIdle(self) -> None:
        """
        An idle connection the backend closes leaves the pool.
        """
        connection, receiver = self.exchange(OK)
        connection.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.pool.idleCount(), 0)
        self.assertEqual(self.pool.openCount(), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_bytesWhileIdle(self) -> None:
        """
        An idle connection that receives a byte is closed and leaves the
        pool.
        """
        connection, receiver = self.exchange(OK)
        connection.dataReceived(b"\r\n")
        self.assertEqual(self.pool.idleCount(), 0)
        self.assertEqual(self.pool.openCount(), 0)
        self.assertTrue(self.endpoint.transports[0].disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lostBeforeRequest(self) -> None:
        """
        A request on a connection lost since it was handed out fails at
        once, as not started.
        """
        connection = self.connect()
        connection.connectionLost(Failure(ConnectionLost()))
        receiver = self.send(connection)
        assert receiver.failure is not None
        self.assertEqual(receiver.failure.kind, "connection_lost")
        self.assertFalse(receiver.failure.responseStarted)

    def test_closeIdle(self) -> None:
        """
        C{closeIdle} closes the idle connections and fires when they are
        closed.
        """
        connection, receiver = self.exchange(OK)
        results: list[Any] = []
        self.pool.closeIdle().addBoth(results.append)
        self.assertTrue(self.endpoint.transports[0].disconnecting)
        self.assertEqual(results, [])
        connection.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(results, [None])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_closeIdleDeadline(self) -> None:
        """
        C{closeIdle} aborts connections still open at its deadline, and
        fires.
        """
        self.exchange(OK)
        results: list[Any] = []
        self.pool.closeIdle().addBoth(results.append)
        self.clock.advance(ConnectionPool.closeTimeout)
        self.assertEqual(results, [None])
        self.assertTrue(self.endpoint.transports[0].disconnected)

    def test_closeNothingIdle(self) -> None:
        """
        C{closeIdle} without idle connections fires at once.
        """
        results: list[Any] = []
        self.pool.closeIdle().addBoth(results.append)
        self.assertEqual(results, [None])

    def test_closeInUse(self) -> None:
        """
        After C{close}, a connection in use closes after its response.
        """
        connection = self.connect()
        receiver = self.send(connection)
        self.pool.close()
        connection.dataReceived(OK)
        self.assertTrue(receiver.ended)
        self.assertEqual(self.pool.idleCount(), 0)
        self.assertTrue(self.endpoint.transports[0].disconnecting)


class ConnectTests(ClientTestsMixin, SynchronousTestCase):
    """
    New connections.
    """

    def setUp(self) -> None:
        super().setUp()
        self.endpoint.auto = False

    def test_connectTimeout(self) -> None:
        """
        A connection attempt that takes too long fails as C{connect_timeout}.
        """
        results: list[Any] = []
        self.pool.connect().addBoth(results.append)
        self.clock.advance(4.9)
        self.assertEqual(results, [])
        self.clock.advance(0.1)
        [failure] = results
        self.assertIsInstance(failure, Failure)
        self.assertEqual(failure.value.kind, "connect_timeout")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lateConnectionAborted(self) -> None:
        """
        A connection made after its attempt timed out is aborted.
        """
        results: list[Any] = []
        self.pool.connect().addBoth(results.append)
        self.clock.advance(5)
        transport = self.endpoint.succeed()
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.pool.openCount(), 0)

    def test_refused(self) -> None:
        """
        A refused connection fails as C{connect_refused}.
        """
        results: list[Any] = []
        self.pool.connect().addBoth(results.append)
        self.endpoint.fail(Failure(ConnectionRefusedError()))
        [failure] = results
        self.assertIsInstance(failure, Failure)
        self.assertIsInstance(failure.value, UpstreamFailure)
        self.assertEqual(failure.value.kind, "connect_refused")
        self.assertFalse(failure.value.sent)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_connected(self) -> None:
        """
        A new connection is handed out, counted open and not reused.
        """
        results: list[Any] = []
        self.pool.connect().addBoth(results.append)
        self.endpoint.succeed()
        [connection] = results
        self.assertIsInstance(connection, UpstreamConnection)
        self.assertFalse(connection.reused)
        self.assertEqual(self.pool.openCount(), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class StrictnessTests(ClientTestsMixin, SynchronousTestCase):
    """
    Invalid responses fail as C{invalid_response} and their connection is
    aborted.
    """

    def assertInvalid(self, response: bytes, what: str | None = None) -> Receiver:
        connection, receiver = self.exchange(response)
        assert receiver.failure is not None, receiver.events
        self.assertEqual(receiver.failure.kind, "invalid_response")
        self.assertTrue(receiver.failure.reason.startswith("invalid response: "))
        if what is not None:
            self.assertIn(what, receiver.failure.reason)
        self.assertNotIn("end", receiver.events)
        self.assertTrue(self.endpoint.transports[-1].disconnected)
        self.assertEqual(self.pool.idleCount(), 0)
        self.assertEqual(self.pool.openCount(), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        return receiver

    def test_contentLengthWithTransferEncoding(self) -> None:
        """
        C{Content-Length} with C{Transfer-Encoding} is invalid.
        """
        self.assertInvalid(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        self.assertInvalid(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Length: 3\r\n\r\n0\r\n\r\n"
        )

    def test_differingContentLengths(self) -> None:
        """
        Two differing C{Content-Length} fields are invalid.
        """
        self.assertInvalid(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
        )

    def test_contentLengthList(self) -> None:
        """
        A C{Content-Length} list is invalid.
        """
        self.assertInvalid(b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nabc")

    def test_contentLengthNotDigits(self) -> None:
        """
        A C{Content-Length} that is not digits is invalid.
        """
        for value in [b"+3", b"0x3", b"-1", b"", b"3 4"]:
            self.assertInvalid(b"HTTP/1.1 200 OK\r\nContent-Length: %s\r\n\r\nabc" % value)

    def test_garbageStatusLine(self) -> None:
        """
        A garbage status line is invalid.
        """
        self.assertInvalid(b"FOO BAR\r\n\r\n")
        self.assertInvalid(b"HTTP/1.1 abc OK\r\n\r\n")
        self.assertInvalid(b"http/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    def test_otherProtocol(self) -> None:
        """
        A status line of another protocol llhttp knows is invalid.
        """
        self.assertInvalid(b"RTSP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", "status line")
        self.assertInvalid(b"ICE/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", "status line")

    def test_statusLineSplit(self) -> None:
        """
        The C{HTTP/} check works on a status line split across reads.
        """
        connection = self.connect()
        receiver = self.send(connection)
        for byte in OK:
            connection.dataReceived(bytes([byte]))
        self.assertTrue(receiver.ended)
        self.assertEqual(receiver.body, b"abc")
        self.assertEqual(self.pool.idleCount(), 1)
        connection = self.connect()
        receiver = self.send(connection)
        connection.dataReceived(b"HTT")
        connection.dataReceived(b"Q/1.1 200 OK\r\n\r\n")
        assert receiver.failure is not None
        self.assertEqual(receiver.failure.kind, "invalid_response")

    def test_leadingEmptyLine(self) -> None:
        """
        An empty line before the status line is invalid.
        """
        self.assertInvalid(b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    def test_statusNotThreeDigits(self) -> None:
        """
        A status code that is not three digits is invalid.
        """
        self.assertInvalid(b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertInvalid(b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n")

    def test_unsupportedVersion(self) -> None:
        """
        Versions other than HTTP/1.0 and HTTP/1.1 are invalid.
        """
        for version in [b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.2"]:
            self.assertInvalid(version + b" 200 OK\r\nContent-Length: 0\r\n\r\n")

    def test_obsFold(self) -> None:
        """
        Obsolete line folding is invalid.
        """
        self.assertInvalid(b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n")

    def test_controlBytesInValue(self) -> None:
        """
        NUL, CR and other control bytes but HTAB in a field value are
        invalid.
        """
        for byte in list(range(0, 9)) + list(range(10, 32)) + [127]:
            self.assertInvalid(
                b"HTTP/1.1 200 OK\r\nX-A: a%sb\r\nContent-Length: 0\r\n\r\n"
                % (bytes([byte]),)
            )
        connection, receiver = self.exchange(
            b"HTTP/1.1 200 OK\r\nX-A: a\tb\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertTrue(receiver.ended)

    def test_whitespaceBeforeColon(self) -> None:
        """
        Whitespace between a field name and the colon is invalid.
        """
        self.assertInvalid(b"HTTP/1.1 200 OK\r\nX-A : a\r\nContent-Length: 0\r\n\r\n")
        self.assertInvalid(b"HTTP/1.1 200 OK\r\nX-A\t: a\r\nContent-Length: 0\r\n\r\n")

    def test_bareLineFeed(self) -> None:
        """
        Lines ending in a bare LF are invalid.
        """
        self.assertInvalid(b"HTTP/1.1 200 OK\nContent-Length: 0\n\n")

    def test_transferCodings(self) -> None:
        """
        Any C{Transfer-Encoding} other than exactly C{chunked} is invalid.
        """
        for codings in [
            [b"gzip"],
            [b"identity"],
            [b"gzip, chunked"],
            [b"chunked, chunked"],
            [b"chunked", b"chunked"],
        ]:
            fields = b"".join(b"Transfer-Encoding: %s\r\n" % (c,) for c in codings)
            self.assertInvalid(
                b"HTTP/1.1 200 OK\r\n" + fields + b"\r\n0\r\n\r\n",
                "transfer coding",
            )

    def test_headerSectionTooLarge(self) -> None:
        """
        A header section over 64 KiB is invalid, whether or not it is
        complete in the read that goes over.
        """
        field = b"X-A: " + b"a" * 1000 + b"\r\n"
        head = b"HTTP/1.1 200 OK\r\n" + field * 70
        self.assertInvalid(head, "too large")
        self.assertInvalid(head + b"Content-Length: 0\r\n\r\n", "too large")
        connection = self.connect()
        receiver = self.send(connection)
        for i in range(0, len(head), 1000):
            connection.dataReceived(head[i : i + 1000])
        assert receiver.failure is not None
        self.assertIn("too large", receiver.failure.reason)

    def test_headerSectionAtLimit(self) -> None:
        """
        A header section of exactly 64 KiB, with its body in the same read,
        is accepted.
        """
        start = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
        filler = MAX_HEAD_SIZE - len(start) - len(b"X-A: \r\n\r\n")
        head = start + b"X-A: " + b"a" * filler + b"\r\n\r\n"
        self.assertEqual(len(head), MAX_HEAD_SIZE)
        connection, receiver = self.exchange(head + b"abc")
        self.assertTrue(receiver.ended)
        head = start + b"X-A: " + b"a" * (filler + 1) + b"\r\n\r\n"
        connection, receiver = self.exchange(head + b"abc")
        assert receiver.failure is not None
        self.assertIn("too large", receiver.failure.reason)

    def test_badChunkSize(self) -> None:
        """
        A malformed chunk size is invalid, after the head.
        """
        receiver = self.assertInvalid(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n"
        )
        assert receiver.failure is not None
        self.assertTrue(receiver.failure.responseStarted)


class NoBodyTests(ClientTestsMixin, SynchronousTestCase):
    """
    Responses without a body: to HEAD, 204, 304, and interim responses.
    """

    def test_headWithContentLength(self) -> None:
        """
        A response to HEAD is complete at its head, whatever its
        C{Content-Length}, which is reported.
        """
        connection, receiver = self.exchange(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", method=b"HEAD"
        )
        self.assertEqual(receiver.events, ["head", "end"])
        assert receiver.head is not None
        self.assertEqual(receiver.head.length, 1000)
        self.assertFalse(receiver.head.bodyExpected)
        self.assertEqual(self.pool.idleCount(), 1)

    def test_headWithChunked(self) -> None:
        """
        A chunked response to HEAD is complete at its head.
        """
        connection, receiver = self.exchange(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", method=b"HEAD"
        )
        self.assertEqual(receiver.events, ["head", "end"])
        self.assertEqual(self.pool.idleCount(), 1)

    def test_headWithoutLength(self) -> None:
        """
        A response to HEAD without framing is complete at its head and
        reused.
        """
        connection, receiver = self.exchange(b"HTTP/1.1 200 OK\r\n\r\n", method=b"HEAD")
        self.assertEqual(receiver.events, ["head", "end"])
        self.assertEqual(self.pool.idleCount(), 1)

    def test_headWithStrayBody(self) -> None:
        """
        Body bytes after a response to HEAD are stray: the connection is
        closed.
        """
        connection, receiver = self.exchange(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", method=b"HEAD"
        )
        self.assertEqual(receiver.events, ["head", "end"])
        self.assertEqual(self.pool.idleCount(), 0)
        self.assertTrue(self.endpoint.transports[0].disconnecting)

    def test_headSplit(self) -> None:
        """
        A HEAD response whose empty line is split across reads completes.
        """
        connection = self.connect()
        receiver = self.send(connection, b"HEAD")
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r")
        connection.dataReceived(b"\n")
        self.assertEqual(receiver.events, ["head", "end"])
        self.assertEqual(self.pool.idleCount(), 1)

    def test_204and304(self) -> None:
        """
        204 and 304 responses are complete at their head; 304 keeps its
        C{Content-Length}.
        """
        for status in [b"204 No Content", b"304 Not Modified"]:
            connection, receiver = self.exchange(
                b"HTTP/1.1 " + status + b"\r\nContent-Length: 7\r\n\r\n"
            )
            self.assertEqual(receiver.events, ["head", "end"])
            assert receiver.head is not None
            self.assertFalse(receiver.head.bodyExpected)
            self.assertEqual(receiver.head.length, 7)
            self.assertEqual(self.pool.idleCount(), 1)
            self.connect()

    def test_204WithStrayBody(self) -> None:
        """
        A body after a 204 is stray: the connection is closed.
        """
        connection, receiver = self.exchange(
            b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\nabc"
        )
        self.assertEqual(receiver.events, ["head", "end"])
        self.assertEqual(self.pool.idleCount(), 0)

    def test_interimSkipped(self) -> None:
        """
        Interim 1xx responses are skipped, in the same read or not.
        """
        connection, receiver = self.exchange(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n" + OK
        )
        self.assertEqual(receiver.events, ["head", "data", "end"])
        assert receiver.head is not None
        self.assertEqual(receiver.head.status, 200)
        self.assertEqual(receiver.head.headers, [(b"Content-Length", b"3")])
        self.assertEqual(self.pool.idleCount(), 1)
        connection = self.connect()
        receiver = self.send(connection)
        connection.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertEqual(receiver.events, [])
        connection.dataReceived(OK)
        self.assertEqual(receiver.events, ["head", "data", "end"])

    def test_interimThenInvalid(self) -> None:
        """
        The response after an interim one is checked like any.
        """
        connection, receiver = self.exchange(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/2.0 200 OK\r\n\r\n")
        assert receiver.failure is not None
        self.assertEqual(receiver.failure.kind, "invalid_response")

    def test_switchingProtocols(self) -> None:
        """
        A 101 head is delivered without body; C{detach} hands over the
        transport and the bytes after the head, and forwards later events.
        """
        connection, receiver = self.exchange(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\n\r\nframe1"
        )
        self.assertEqual(receiver.events, ["head"])
        assert receiver.head is not None
        self.assertEqual(receiver.head.status, 101)
        self.assertFalse(receiver.head.bodyExpected)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        connection.dataReceived(b"frame2")
        tunnel = HalfCloseTunnel()
        transport, rest = connection.detach(tunnel)
        self.assertIs(transport, self.endpoint.transports[0])
        self.assertEqual(rest, b"frame1frame2")
        self.assertEqual(self.pool.openCount(), 0)
        connection.dataReceived(b"frame3")
        connection.readConnectionLost()
        connection.writeConnectionLost()
        connection.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(tunnel.received, [b"frame3"])
        self.assertTrue(tunnel.readLost)
        self.assertTrue(tunnel.writeLost)
        assert tunnel.lost is not None
        self.assertEqual(receiver.events, ["head"])

    def test_detachHalfCloseToPlainProtocol(self) -> None:
        """
        A half-close is a close for a protocol that is not half-closeable.
        """
        connection, receiver = self.exchange(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
        transport, rest = connection.detach(Tunnel())
        self.assertEqual(rest, b"")
        connection.readConnectionLost()
        self.assertTrue(self.endpoint.transports[0].disconnecting)

    def test_detachOnlyAfter101(self) -> None:
        """
        C{detach} is refused on a connection that did not switch protocols.
        """
        connection, receiver = self.exchange(OK)
        self.assertRaises(RuntimeError, connection.detach, Tunnel())


class BodyTests(ClientTestsMixin, SynchronousTestCase):
    """
    Response bodies, their truncation and the request body framing.
    """

    def test_contentLengthAcrossReads(self) -> None:
        """
        A body is delivered as it arrives and ends at its length.
        """
        connection, receiver = self.exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nab")
        self.assertEqual(receiver.events, ["head", "data"])
        connection.dataReceived(b"cd")
        connection.dataReceived(b"ef")
        self.assertEqual(receiver.events, ["head", "data", "data", "data", "end"])
        self.assertEqual(receiver.body, b"abcdef")
        assert receiver.head is not None
        self.assertEqual(receiver.head.length, 6)
        # Told after each read that left the body incomplete.
        self.assertEqual(receiver.waiting, 2)

    def test_trailersIgnored(self) -> None:
        """
        Trailer fields are dropped; a C{Content-Length} trailer is refused
        (by llhttp) after the head.
        """
        connection, receiver = self.exchange(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"1\r\na\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n"
        )
        self.assertTrue(receiver.ended)
        assert receiver.head is not None
        self.assertIsNone(receiver.head.length)
        self.assertEqual(receiver.head.headers, [(b"Transfer-Encoding", b"chunked")])
        self.assertEqual(self.pool.idleCount(), 1)
        connection, receiver = self.exchange(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"1\r\na\r\n0\r\nContent-Length: 100\r\n\r\n"
        )
        assert receiver.failure is not None
        self.assertEqual(receiver.failure.kind, "invalid_response")
        self.assertTrue(receiver.failure.responseStarted)

    def test_chunked(self) -> None:
        """
        A chunked body is decoded, extensions and trailers dropped.
        """
        connection, receiver = self.exchange(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2;x=y\r\nde\r\n"
        )
        assert receiver.head is not None
        self.assertIsNone(receiver.head.length)
        self.assertTrue(receiver.head.bodyExpected)
        self.assertEqual(receiver.body, b"abcde")
        self.assertFalse(receiver.ended)
        connection.dataReceived(b"0\r\nTrailer: v\r\n\r\n")
        self.assertTrue(receiver.ended)
        self.assertEqual(receiver.head.headers, [(b"Transfer-Encoding", b"chunked")])
        self.assertEqual(self.pool.idleCount(), 1)

    def test_truncatedContentLength(self) -> None:
        """
        A connection lost before the end of a C{Content-Length} body is a
        truncation.
        """
        connection, receiver = self.exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nab")
        connection.connectionLost(Failure(ConnectionDone()))
        assert receiver.failure is not None
        self.assertEqual(receiver.failure.kind, "truncated")
        self.assertTrue(receiver.failure.responseStarted)
        self.assertEqual(receiver.events, ["head", "data", "failed"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_truncatedChunked(self) -> None:
        """
        A chunked body lost before its last chunk is a truncation.
        """
        connection, receiver = self.exchange(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
        )
        connection.connectionLost(Failure(ConnectionDone()))
        assert receiver.failure is not None
        self.assertEqual(receiver.failure.kind, "truncated")
        self.assertEqual(receiver.events, ["head", "data", "failed"])

    def test_tlsHandshakeFailure(self) -> None:
        """
        A TLS handshake that fails after the connection was made is a
        C{connect_error}: the request was not sent.
        """
        from OpenSSL import SSL

        error = SSL.Error([("SSL routines", "", "certificate verify failed")])
        connection = self.connect()
        receiver = self.send(connection)
        connection.connectionLost(Failure(error))
        assert receiver.failure is not None
        self.assertEqual(receiver.failure.kind, "connect_error")
        self.assertFalse(receiver.failure.sent)
        connection = self.connect()
        connection.connectionLost(Failure(error))
        receiver = self.send(connection)
        assert receiver.failure is not None
        self.assertEqual(receiver.failure.kind, "connect_error")

    def test_lostBeforeHead(self) -> None:
        """
        A connection lost before the head is C{connection_lost}, not
        started.
        """
        connection, receiver = self.exchange(b"HTTP/1.1 200 OK\r\n")
        connection.connectionLost(Failure(ConnectionLost()))
        assert receiver.failure is not None
        self.assertEqual(receiver.failure.kind, "connection_lost")
        self.assertFalse(receiver.failure.responseStarted)
        self.assertEqual(self.pool.openCount(), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_chunkedRequestBody(self) -> None:
        """
        A chunked request body is framed as chunks and a last chunk; empty
        writes send nothing.
        """
        connection = self.connect()
        self.send(connection, b"POST", chunked=True, endBody=False)
        transport = self.endpoint.transports[0]
        transport.clear()
        connection.writeBody(b"hello")
        connection.writeBody(b"")
        connection.writeBody(b"x" * 26)
        connection.endBody()
        self.assertEqual(
            transport.value(), b"5\r\nhello\r\n1a\r\n" + b"x" * 26 + b"\r\n0\r\n\r\n"
        )

    def test_plainRequestBody(self) -> None:
        """
        A request body with a known length is written as it is.
        """
        connection = self.connect()
        self.send(connection, b"PUT", endBody=False)
        transport = self.endpoint.transports[0]
        transport.clear()
        connection.writeBody(b"hello")
        connection.endBody()
        self.assertEqual(transport.value(), b"hello")

    def test_bodyProducer(self) -> None:
        """
        The request body's producer is registered on the backend's
        transport, once.
        """
        connection = self.connect()
        self.send(connection, b"POST", endBody=False)
        transport = self.endpoint.transports[0]
        producer = Tunnel()
        connection.registerBodyProducer(producer)  # type: ignore[arg-type]
        connection.registerBodyProducer(producer)  # type: ignore[arg-type]
        self.assertIs(transport.producer, producer)
        self.assertTrue(transport.streaming)
        connection.unregisterBodyProducer()
        connection.unregisterBodyProducer()
        self.assertIsNone(transport.producer)


class TimeoutTests(ClientTestsMixin, SynchronousTestCase):
    """
    The response and read timeouts.
    """

    def test_responseTimeout(self) -> None:
        """
        No complete head within the response timeout: C{response_timeout},
        connection aborted.
        """
        connection = self.connect()
        receiver = self.send(connection, responseTimeout=30)
        connection.dataReceived(b"HTTP/1.1 200 OK\r\n")
        self.clock.advance(29)
        self.assertEqual(receiver.events, [])
        self.clock.advance(1)
        assert receiver.failure is not None
        self.assertEqual(receiver.failure.kind, "response_timeout")
        self.assertTrue(receiver.failure.timedOut)
        self.assertTrue(self.endpoint.transports[0].disconnected)
        self.assertEqual(self.pool.openCount(), 0)
        connection.dataReceived(b"Content-Length: 0\r\n\r\n")
        connection.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(receiver.events, ["failed"])

    def test_responseTimeoutCancelled(self) -> None:
        """
        The response timeout does not fire after the head.
        """
        connection, receiver = self.exchange(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", responseTimeout=5, readTimeout=50
        )
        self.clock.advance(10)
        self.assertEqual(receiver.events, ["head"])

    def test_readTimeout(self) -> None:
        """
        A body that stalls for the read timeout fails as C{read_timeout}.
        """
        connection, receiver = self.exchange(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab", readTimeout=10
        )
        self.clock.advance(8)
        connection.dataReceived(b"cd")
        self.clock.advance(8)
        self.assertEqual(receiver.events, ["head", "data", "data"])
        self.clock.advance(2)
        assert receiver.failure is not None
        self.assertEqual(receiver.failure.kind, "read_timeout")
        self.assertEqual(receiver.failure.reason, "backend sent nothing for 10 s in the body")
        self.assertTrue(receiver.failure.responseStarted)
        self.assertTrue(self.endpoint.transports[0].disconnected)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_readTimeoutSuspendedWhilePaused(self) -> None:
        """
        The read timeout does not run while reading is paused, and restarts
        on resume.
        """
        connection, receiver = self.exchange(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab", readTimeout=10
        )
        transport = self.endpoint.transports[0]
        connection.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        self.clock.advance(100)
        self.assertIsNone(receiver.failure)
        connection.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        self.clock.advance(9)
        self.assertIsNone(receiver.failure)
        self.clock.advance(1)
        assert receiver.failure is not None
        self.assertEqual(receiver.failure.kind, "read_timeout")

    def test_pausedAtEndResumed(self) -> None:
        """
        A connection paused when its response ends is resumed before it
        goes idle.
        """
        connection, receiver = self.exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
        connection.pauseProducing()
        connection.dataReceived(b"cd")
        self.assertTrue(receiver.ended)
        self.assertEqual(self.endpoint.transports[0].producerState, "producing")
        self.assertEqual(self.pool.idleCount(), 1)

    def test_oneTimerPerConnection(self) -> None:
        """
        A connection has one timer at most, whatever its state.
        """
        connection, receiver = self.exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        connection.dataReceived(b"cd")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertIs(self.connect(), connection)
        self.send(connection)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)


class AbortTests(ClientTestsMixin, SynchronousTestCase):
    """
    Abandoning a request.
    """

    def test_abort(self) -> None:
        """
        C{abort} aborts the connection; the receiver hears nothing more.
        """
        connection, receiver = self.exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nab")
        connection.abort()
        connection.dataReceived(b"cdef")
        connection.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(receiver.events, ["head", "data"])
        self.assertTrue(self.endpoint.transports[0].disconnected)
        self.assertEqual(self.pool.openCount(), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_abortInsideData(self) -> None:
        """
        A receiver may abort inside C{responseData}: no more data or end.
        """
        connection = self.connect()
        receiver = self.send(connection)

        def abortingData(data: bytes) -> None:
            receiver.events.append("data")
            connection.abort()

        receiver.responseData = abortingData  # type: ignore[method-assign]
        connection.dataReceived(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"1\r\na\r\n1\r\nb\r\n0\r\n\r\n"
        )
        self.assertEqual(receiver.events, ["head", "data"])
        self.assertEqual(self.pool.idleCount(), 0)
        self.assertTrue(self.endpoint.transports[0].disconnected)

    def test_abortInsideHead(self) -> None:
        """
        A receiver may abort inside C{responseHead}: no data or end.
        """
        for method in [b"GET", b"HEAD"]:
            connection = self.connect()
            receiver = self.send(connection, method)
            receiver.responseHead = lambda head: connection.abort()  # type: ignore[method-assign]
            connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            self.assertEqual(receiver.events, [])
            self.assertEqual(self.pool.idleCount(), 0)
            self.assertEqual(self.pool.openCount(), 0)
            self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_pauseInsideData(self) -> None:
        """
        A receiver may pause inside C{responseData}; the rest of the read is
        still delivered.
        """
        connection = self.connect()
        receiver = self.send(connection)

        def pausingData(data: bytes) -> None:
            receiver.data.append(data)
            connection.pauseProducing()

        receiver.responseData = pausingData  # type: ignore[method-assign]
        connection.dataReceived(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n1\r\nb\r\n"
        )
        self.assertEqual(receiver.body, b"ab")
        self.assertEqual(self.endpoint.transports[0].producerState, "paused")

    def test_abortAfterEnd(self) -> None:
        """
        C{abort} inside C{responseEnd} leaves the idle connection alone.
        """
        connection = self.connect()
        receiver = self.send(connection)
        receiver.responseEnd = connection.abort  # type: ignore[method-assign]
        connection.dataReceived(OK)
        self.assertEqual(self.pool.idleCount(), 1)
        self.assertFalse(self.endpoint.transports[0].disconnecting)

    def test_reuseInsideEnd(self) -> None:
        """
        The next request may take the connection inside C{responseEnd}.
        """
        connection = self.connect()
        receiver = self.send(connection)
        taken: list[UpstreamConnection] = []
        receiver.responseEnd = lambda: taken.append(self.connect())  # type: ignore[method-assign]
        connection.dataReceived(OK)
        self.assertEqual(taken, [connection])
        second = self.send(connection)
        connection.dataReceived(OK)
        self.assertTrue(second.ended)

    def test_stopProducing(self) -> None:
        """
        C{stopProducing} (the client went away) abandons the request.
        """
        connection, receiver = self.exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nab")
        connection.stopProducing()
        self.assertTrue(self.endpoint.transports[0].disconnected)
        connection.dataReceived(b"cdef")
        self.assertEqual(receiver.events, ["head", "data"])

    def test_receiverRaises(self) -> None:
        """
        A receiver raising inside a callback fails the response and aborts
        the connection; the error is logged.
        """
        connection = self.connect()
        receiver = self.send(connection)

        def broken(data: bytes) -> None:
            raise ZeroDivisionError()

        receiver.responseData = broken  # type: ignore[method-assign]
        connection.dataReceived(OK)
        assert receiver.failure is not None
        self.assertEqual(receiver.failure.kind, "invalid_response")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertTrue(self.endpoint.transports[0].disconnected)
