"""
Tests for L{lbtwist._http.server}.
"""

from __future__ import annotations

from typing import Callable

from hypothesis import given, settings, strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from lbtwist._http.errors import errorResponse
from lbtwist._http.interfaces import IBodyReceiver, IClientRequest, IRequestBody
from lbtwist._http.server import (
    HTTPServerChannel,
    IServerFrontend,
    ServerRequest,
    ServerSettings,
)
from lbtwist.proxyheader import proxyHeaderV1
from lbtwist.stats import FrontendStats

SETTINGS = ServerSettings(
    headerTimeout=10.0,
    idleTimeout=60.0,
    bodyTimeout=30.0,
    minBodyRate=0,
    maxHeaderSize=8192,
    maxTargetLength=1024,
    maxBodySize=1000,
    secure=False,
    acceptProxy=False,
)

GET = b"GET /p?q HTTP/1.1\r\nHost: a.example\r\n\r\n"
UPGRADE_POST = (
    b"POST /u HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Content-Length: 5\r\n\r\n"
)
OK_EMPTY = (
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
)


@implementer(IBodyReceiver)
class Receiver:
    """
    Records a body as it arrives.
    """

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.ended = False
        self.failed: str | None = None
        self.onEnd: Callable[[], None] | None = None

    def bodyData(self, data: bytes) -> None:
        self.data.append(data)

    def bodyEnd(self) -> None:
        self.ended = True
        if self.onEnd is not None:
            self.onEnd()

    def bodyFailed(self, reason: str) -> None:
        self.failed = reason


def echo(request: IClientRequest) -> None:
    """
    Answer 200 with the method, target and body once the body is complete.
    """

    def answer(body: bytes = b"") -> None:
        content = b"%s %s %s" % (request.method, request.target, body)
        request.respond(200, b"OK", [(b"X-Host", request.host or b"-")], len(content))
        request.write(content)
        request.finish()

    if request.body is None:
        answer()
        return
    receiver = Receiver()
    receiver.onEnd = lambda: answer(b"".join(receiver.data))
    request.body.deliver(receiver)


@implementer(IServerFrontend)
class Frontend:
    """
    A frontend that records what its channel does, and answers requests
    with C{handler} (if any).
    """

    def __init__(
        self,
        settings: ServerSettings = SETTINGS,
        handler: Callable[[IClientRequest], None] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = Clock()
        self.stats = FrontendStats()
        self.draining = False
        self.handler = handler
        self.routeHead: Callable[[ServerRequest], int | None] | None = None
        self.requests: list[ServerRequest] = []
        self.refusals: list[tuple[int, int, IAddress]] = []
        self.opened: list[HTTPServerChannel] = []
        self.closed: list[HTTPServerChannel] = []

    def dispatch(self, request: IClientRequest) -> None:
        assert isinstance(request, ServerRequest)
        self.requests.append(request)
        if self.handler is not None:
            self.handler(request)

    def channelOpened(self, channel: HTTPServerChannel) -> None:
        self.opened.append(channel)

    def channelClosed(self, channel: HTTPServerChannel) -> None:
        self.closed.append(channel)

    def refused(self, code: int, sentBytes: int, clientAddress: IAddress) -> None:
        self.refusals.append((code, sentBytes, clientAddress))


PEER = IPv4Address("TCP", "192.0.2.7", 51000)
HOST = IPv4Address("TCP", "198.51.100.1", 80)


def connect(
    frontend: Frontend | None = None, **kw: object
) -> tuple[Frontend, HTTPServerChannel, StringTransport]:
    """
    A channel connected to a L{StringTransport}.
    """
    if frontend is None:
        frontend = Frontend(**kw)  # type: ignore[arg-type]
    channel = HTTPServerChannel(frontend)
    transport = StringTransport(hostAddress=HOST, peerAddress=PEER)
    channel.makeConnection(transport)
    return frontend, channel, transport


class ServerTestsMixin:
    """
    Helpers.
    """

    def assertRefused(
        self: SynchronousTestCase, data: bytes | list[bytes], code: int
    ) -> tuple[Frontend, HTTPServerChannel, StringTransport]:
        frontend, channel, transport = connect(handler=echo)
        for piece in [data] if isinstance(data, bytes) else data:
            channel.dataReceived(piece)
        self.assertEqual(transport.value(), errorResponse(code))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(frontend.requests, [])
        self.assertEqual(
            frontend.refusals, [(code, len(errorResponse(code)), PEER)]
        )
        return frontend, channel, transport


class ParsingTests(ServerTestsMixin, SynchronousTestCase):
    """
    Requests are parsed, checked and dispatched.
    """

    def test_interfaces(self) -> None:
        """
        The request and its body provide the interfaces the proxy uses.
        """
        frontend, channel, transport = connect()
        channel.dataReceived(
            b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab"
        )
        [request] = frontend.requests
        self.assertTrue(verifyObject(IClientRequest, request))
        self.assertTrue(verifyObject(IRequestBody, request.body))
        self.assertTrue(IHalfCloseableProtocol.providedBy(channel))
        self.assertEqual(frontend.opened, [channel])

    def test_simpleGet(self) -> None:
        """
        A GET request is dispatched with its method, target, version, fields
        and addresses, and the connection stays open after the response.
        """
        frontend, channel, transport = connect()
        channel.dataReceived(
            b"GET /p?q HTTP/1.1\r\nHost: a.example\r\nX-A:  1 \r\nx-a: 2\r\n\r\n"
        )
        [request] = frontend.requests
        self.assertEqual(request.method, b"GET")
        self.assertEqual(request.target, b"/p?q")
        self.assertEqual(request.version, b"HTTP/1.1")
        self.assertEqual(
            request.headers,
            [(b"Host", b"a.example"), (b"X-A", b"1"), (b"x-a", b"2")],
        )
        self.assertEqual(request.host, b"a.example")
        self.assertEqual(request.clientAddress, PEER)
        self.assertEqual(request.serverAddress, HOST)
        self.assertFalse(request.secure)
        self.assertIsNone(request.body)
        self.assertEqual(request.started, frontend.clock.seconds())
        request.respond(200, b"OK", [(b"X", b"y")], 2)
        request.write(b"hi")
        request.finish()
        self.assertEqual(
            transport.value(), b"HTTP/1.1 200 OK\r\nX: y\r\nContent-Length: 2\r\n\r\nhi"
        )
        self.assertEqual((request.status, request.sentBytes), (200, 2))
        self.assertTrue(request.done)
        self.assertFalse(transport.disconnecting)
        channel.dataReceived(GET)
        self.assertEqual(len(frontend.requests), 2)

    def test_llhttpRefusals(self) -> None:
        """
        What llhttp refuses is answered with 400 and the connection closed.
        """
        cases = [
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHo(st: a\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nx\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\n",
            b"FOO / HTTP/1.1\r\nHost: a\r\n\r\n",
        ]
        for data in cases:
            with self.subTest(data=data):
                frontend, channel, transport = self.assertRefused(data, 400)
                channel.dataReceived(GET)
                self.assertEqual(frontend.requests, [])

    def test_transferEncodingRules(self) -> None:
        """
        C{Transfer-Encoding} must be one C{chunked} line in HTTP/1.1.
        """
        for line in [
            b"Transfer-Encoding: gzip",
            b"Transfer-Encoding: chunked, gzip",
            b"Transfer-Encoding: identity",
            b"Transfer-Encoding: gzip, chunked",
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
        ]:
            with self.subTest(line=line):
                self.assertRefused(
                    b"POST / HTTP/1.1\r\nHost: a\r\n" + line + b"\r\n\r\n0\r\n\r\n", 400
                )
        self.assertRefused(
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400
        )
        frontend, channel, transport = connect()
        channel.dataReceived(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \tChunked \r\n\r\n"
        )
        [request] = frontend.requests
        self.assertIsNone(request.body.length)

    def test_hostRules(self) -> None:
        """
        HTTP/1.1 needs exactly one valid C{Host} line; HTTP/1.0 may go
        without.
        """
        for data in [
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: \r\n\r\n",
        ]:
            with self.subTest(data=data):
                self.assertRefused(data, 400)
        frontend, channel, transport = connect()
        channel.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
        self.assertIsNone(frontend.requests[0].host)

    def test_absoluteForm(self) -> None:
        """
        An absolute-form target becomes origin-form, its authority replacing
        the C{Host} line.
        """
        frontend, channel, transport = connect(handler=echo)
        channel.dataReceived(
            b"GET http://b.example:8080/p?q HTTP/1.1\r\nhost: a\r\nX: 1\r\n\r\n"
            b"GET HTTPS://c.example HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET http://d.example/ HTTP/1.0\r\n\r\n"
        )
        first, second, third = frontend.requests
        self.assertEqual(first.target, b"/p?q")
        self.assertEqual(first.host, b"b.example:8080")
        self.assertEqual(first.headers, [(b"host", b"b.example:8080"), (b"X", b"1")])
        self.assertEqual((second.target, second.host), (b"/", b"c.example"))
        self.assertEqual(third.headers, [(b"Host", b"d.example")])

    def test_badTargets(self) -> None:
        """
        A target that is not origin-form, absolute-form with a valid
        authority, or C{*} for OPTIONS, is refused with 400.
        """
        for target in [
            b"http://u@a/",
            b"http://a b/",
            b"ftp://a/",
            b"a.example",
            b"*",
            b"/\x80\xb0",
            b"/a\x01",
            b"/a\x7f",
        ]:
            with self.subTest(target=target):
                self.assertRefused(b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % target, 400)
        frontend, channel, transport = connect()
        channel.dataReceived(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(frontend.requests[0].target, b"*")

    def test_connect(self) -> None:
        """
        CONNECT is refused with 405: lbtwist is no forward proxy.
        """
        self.assertRefused(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405)

    def test_headerValueControls(self) -> None:
        """
        Control bytes other than HTAB in a field value are refused with 400.
        """
        for byte in [b"\x01", b"\x08", b"\x0b", b"\x1f", b"\x7f"]:
            with self.subTest(byte=byte):
                self.assertRefused(
                    b"GET / HTTP/1.1\r\nHost: a\r\nX: a%sb\r\n\r\n" % byte, 400
                )
        frontend, channel, transport = connect()
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\tb\x80\r\n\r\n")
        self.assertEqual(frontend.requests[0].headers[1], (b"X", b"a\tb\x80"))

    def test_versions(self) -> None:
        """
        HTTP/1.2 is taken as HTTP/1.1; other major versions get 505.
        """
        frontend, channel, transport = connect()
        channel.dataReceived(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n")
        self.assertEqual(frontend.requests[0].version, b"HTTP/1.1")
        for version in [b"HTTP/2.0", b"HTTP/0.9", b"HTTP/3.1"]:
            with self.subTest(version=version):
                self.assertRefused(b"GET / %s\r\nHost: a\r\n\r\n" % version, 505)
        self.assertRefused(b"GET / HTTP/12.1\r\nHost: a\r\n\r\n", 400)

    def test_chunkExtensions(self) -> None:
        """
        Valid chunk extensions, quoted strings with escapes included, are
        accepted; trailers are dropped.
        """
        frontend, channel, transport = connect(handler=echo)
        channel.dataReceived(
            b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'5;a="q\\\\";b=c\r\nhello\r\n0\r\nHost: evil\r\n\r\n'
        )
        self.assertIn(b"POST /u hello", transport.value())
        self.assertEqual(frontend.requests[0].headers[0], (b"Host", b"a"))

    def test_targetTooLong(self) -> None:
        """
        A target over the limit is refused with 414, as soon as it is too
        long.
        """
        frontend, channel, transport = self.assertRefused(
            [b"GET /" + b"a" * 1024, b"b" * 100], 414
        )

    def test_headTooLarge(self) -> None:
        """
        A request line and header section over the limit are refused with
        431.
        """
        self.assertRefused(
            b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: %s\r\n" % (b"v" * 100,) * 90 + b"\r\n",
            431,
        )

    def test_hugeHeaderStopsEarly(self) -> None:
        """
        A 4 MiB header line is refused with 431 long before it all arrived,
        and never held in memory whole, also when it comes in one piece.
        """
        frontend, channel, transport = connect()
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nX: ")
        sent = 0
        while not transport.disconnecting:
            channel.dataReceived(b"v" * 4096)
            sent += 4096
        self.assertLessEqual(sent, 8192 + 4096)
        self.assertEqual(transport.value(), errorResponse(431))
        self.assertRefused(
            b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * (4 << 20) + b"\r\n\r\n", 431
        )

    def test_contentLengthTooLarge(self) -> None:
        """
        A C{Content-Length} over the body limit is refused with 413 before
        the body is read, without C{100 Continue}.
        """
        self.assertRefused(
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
            b"Content-Length: 1001\r\n\r\n",
            413,
        )

    def test_chunkedTooLarge(self) -> None:
        """
        A chunked body going over the limit gets 413 while the response has
        not started; the receiver is told.
        """
        frontend, channel, transport = connect()
        channel.dataReceived(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        [request] = frontend.requests
        receiver = Receiver()
        request.body.deliver(receiver)
        channel.dataReceived(b"3e8\r\n" + b"x" * 1000 + b"\r\n")
        self.assertEqual(transport.value(), b"")
        channel.dataReceived(b"1\r\nx\r\n0\r\n\r\n")
        self.assertEqual(transport.value(), errorResponse(413))
        self.assertEqual(receiver.failed, "the body is over the limit")
        self.assertTrue(transport.disconnecting)
        self.assertEqual((request.status, request.done), (413, True))

    def test_routedBodyLimit(self) -> None:
        """
        The frontend's C{routeHead} sees each request when its head is
        complete, before its body, and the limit it returns applies to that
        request: 413 before the body for a C{Content-Length} over it, and
        for a chunked body going over it; L{None} keeps the channel's.
        """
        frontend, channel, transport = connect()
        seen: list[bytes] = []

        def routeHead(request: ServerRequest) -> int | None:
            seen.append(request.target)
            request.routed = "decided"
            return 10 if request.target == b"/small" else None

        frontend.routeHead = routeHead
        channel.dataReceived(b"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n")
        [request] = frontend.requests
        self.assertEqual((seen, request.routed, request.body.limit), ([b"/big"], "decided", 1000))
        frontend, channel, transport = connect()
        frontend.routeHead = routeHead
        channel.dataReceived(b"POST /small HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n")
        self.assertEqual(transport.value(), errorResponse(413))
        self.assertEqual(frontend.requests, [])
        frontend, channel, transport = connect()
        frontend.routeHead = routeHead
        channel.dataReceived(
            b"POST /small HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        [request] = frontend.requests
        request.body.deliver(Receiver())
        channel.dataReceived(b"b\r\n" + b"x" * 11 + b"\r\n0\r\n\r\n")
        self.assertEqual(transport.value(), errorResponse(413))

    def test_chunkedTooLargeAfterHead(self) -> None:
        """
        A chunked body going over the limit after the response head was sent
        aborts the connection.
        """
        frontend, channel, transport = connect()
        channel.dataReceived(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        [request] = frontend.requests
        request.respond(200, b"OK", [], None)
        channel.dataReceived(b"3e9\r\n" + b"x" * 1001 + b"\r\n")
        self.assertTrue(transport.disconnected)
        self.assertTrue(request.done)

    def test_malformedChunkAfterDispatch(self) -> None:
        """
        A malformed chunk of a dispatched request fails its body and is
        answered with 400.
        """
        frontend, channel, transport = connect()
        channel.dataReceived(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        [request] = frontend.requests
        receiver = Receiver()
        request.body.deliver(receiver)
        channel.dataReceived(b"zz\r\n")
        self.assertEqual(receiver.failed, "malformed request body")
        self.assertEqual(transport.value(), errorResponse(400))
        self.assertEqual(frontend.refusals, [])


class TimeoutTests(ServerTestsMixin, SynchronousTestCase):
    """
    Deadlines and timeouts.
    """

    def test_headerTimeout(self) -> None:
        """
        A head not complete within C{headerTimeout} of its first byte gets
        408, even if bytes keep trickling in.
        """
        frontend, channel, transport = connect()
        clock = frontend.clock
        channel.dataReceived(b"G")
        for byte in b"ET / HTTP/1.1\r\n":
            clock.advance(0.5)
            channel.dataReceived(bytes([byte]))
        clock.advance(10 - 0.5 * 15 - 0.01)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.02)
        self.assertEqual(transport.value(), errorResponse(408))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(frontend.refusals[0][0], 408)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_headCompleteInTime(self) -> None:
        """
        A head completed in time cancels the deadline.
        """
        frontend, channel, transport = connect()
        channel.dataReceived(GET[:10])
        frontend.clock.advance(9)
        channel.dataReceived(GET[10:])
        frontend.clock.advance(5)
        self.assertEqual(len(frontend.requests), 1)
        self.assertFalse(transport.disconnecting)

    def test_idleTimeout(self) -> None:
        """
        A connection without a request in progress closes quietly after
        C{idleTimeout}, counted from the end of the last response.
        """
        frontend, channel, transport = connect(handler=echo)
        clock = frontend.clock
        clock.advance(50)
        channel.dataReceived(GET)
        transport.clear()
        clock.advance(59)
        self.assertFalse(transport.disconnecting)
        clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_noIdleTimeoutDuringRequest(self) -> None:
        """
        The idle timeout does not apply while a request is answered.
        """
        frontend, channel, transport = connect()
        channel.dataReceived(GET)
        frontend.clock.advance(120)
        self.assertFalse(transport.disconnecting)
        frontend.requests[0].respondError(502)
        frontend.clock.advance(60)
        self.assertTrue(transport.disconnecting)

    def test_bodyTimeout(self) -> None:
        """
        A body that stops arriving for C{bodyTimeout} gets 408 while the
        response has not started.
        """
        frontend, channel, transport = connect()
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        [request] = frontend.requests
        receiver = Receiver()
        request.body.deliver(receiver)
        frontend.clock.advance(20)
        channel.dataReceived(b"d")
        frontend.clock.advance(29)
        self.assertFalse(transport.disconnecting)
        frontend.clock.advance(1)
        self.assertEqual(transport.value(), errorResponse(408))
        self.assertEqual(receiver.failed, "no body bytes within 30.0s")
        self.assertTrue(request.done)
        self.assertEqual(frontend.clock.getDelayedCalls(), [])

    def test_bodyTimeoutAfterHead(self) -> None:
        """
        A body that stops arriving after the response head was sent aborts
        the connection.
        """
        frontend, channel, transport = connect()
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n")
        frontend.requests[0].respond(200, b"OK", [], None)
        frontend.clock.advance(30)
        self.assertTrue(transport.disconnected)

    def test_minBodyRate(self) -> None:
        """
        A body arriving slower than C{minBodyRate} over a 10 s window is cut
        off.
        """
        frontend = Frontend(SETTINGS.__class__(**{**_asdict(SETTINGS), "minBodyRate": 10}))
        frontend, channel, transport = connect(frontend)
        channel.dataReceived(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 900\r\n\r\n"
        )
        for i in range(5):
            frontend.clock.advance(2)
            channel.dataReceived(b"x" * 25)
        self.assertFalse(transport.disconnecting)
        for i in range(5):
            frontend.clock.advance(2)
            channel.dataReceived(b"x" * 5)
        self.assertEqual(transport.value(), errorResponse(408))

    def test_pausedBodyHasNoDeadline(self) -> None:
        """
        While the proxy pauses the body, no body deadline runs and the
        client's transport is paused.
        """
        frontend, channel, transport = connect()
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n")
        body = frontend.requests[0].body
        body.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        frontend.clock.advance(100)
        self.assertFalse(transport.disconnecting)
        body.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        frontend.clock.advance(29)
        self.assertFalse(transport.disconnecting)
        frontend.clock.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_connectionLostCancelsTimers(self) -> None:
        """
        Every timer is cancelled when the connection is lost.
        """
        for data in [b"", b"GET", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n"]:
            frontend, channel, transport = connect()
            channel.dataReceived(data)
            channel.connectionLost(Failure(Exception("gone")))
            self.assertEqual(frontend.clock.getDelayedCalls(), [])
            self.assertEqual(frontend.closed, [channel])


def _asdict(settings: ServerSettings) -> dict[str, object]:
    from attrs import asdict

    return asdict(settings)


class ConnectionTests(ServerTestsMixin, SynchronousTestCase):
    """
    Persistence, pipelining, C{100 Continue}, upgrades, PROXY headers.
    """

    def test_connectionTokens(self) -> None:
        """
        C{Connection} options are comma-separated tokens over every line;
        C{close} ends the connection after the response, and what follows is
        not processed.
        """
        frontend, channel, transport = connect(handler=echo)
        channel.dataReceived(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo\r\nConnection: x ,Close\r\n\r\n"
            + GET
        )
        [request] = frontend.requests
        self.assertEqual(request.connectionTokens, frozenset([b"foo", b"x", b"close"]))
        self.assertIn(b"Connection: close\r\n", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_http10Persistence(self) -> None:
        """
        HTTP/1.0 persists only with C{keep-alive}, announced in the answer.
        """
        frontend, channel, transport = connect(handler=echo)
        channel.dataReceived(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
        self.assertIn(b"Connection: keep-alive\r\n", transport.value())
        self.assertFalse(transport.disconnecting)
        channel.dataReceived(b"GET / HTTP/1.0\r\n\r\n" + GET)
        self.assertIn(b"Connection: close\r\n", transport.value())
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(frontend.requests), 2)

    def test_expectContinue(self) -> None:
        """
        C{100 Continue} is sent when the body is delivered before any of it
        arrived, and not otherwise.
        """
        head = b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n"
        frontend, channel, transport = connect()
        channel.dataReceived(head)
        self.assertEqual(transport.value(), b"")
        frontend.requests[0].body.deliver(Receiver())
        self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        frontend, channel, transport = connect()
        channel.dataReceived(head + b"a")
        frontend.requests[0].body.deliver(Receiver())
        self.assertEqual(transport.value(), b"")

    def test_pipelining(self) -> None:
        """
        Pipelined requests are dispatched one at a time and answered in
        order; reading is paused while requests wait.
        """
        frontend, channel, transport = connect()
        channel.dataReceived(
            b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        self.assertEqual([r.target for r in frontend.requests], [b"/1"])
        self.assertEqual(transport.producerState, "paused")
        frontend.requests[0].respond(200, b"OK", [], 0)
        frontend.requests[0].finish()
        self.assertEqual([r.target for r in frontend.requests], [b"/1", b"/2"])
        receiver = Receiver()
        frontend.requests[1].body.deliver(receiver)
        self.assertEqual((receiver.data, receiver.ended), ([b"abc"], True))
        frontend.requests[1].respond(201, b"Created", [], 0)
        frontend.requests[1].finish()
        self.assertEqual(transport.producerState, "producing")
        frontend.requests[2].respond(202, b"Accepted", [], 0)
        frontend.requests[2].finish()
        self.assertEqual(
            transport.value(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
            b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
            b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
        )

    def test_pipelinedRefusalAfterResponse(self) -> None:
        """
        A bad request pipelined after a good one is refused after the good
        one is answered.
        """
        frontend, channel, transport = connect()
        channel.dataReceived(GET + b"GET / HTTP/1.1\r\n\r\n")
        self.assertEqual(transport.value(), b"")
        frontend.requests[0].respond(200, b"OK", [], 0)
        frontend.requests[0].finish()
        self.assertEqual(transport.value(), OK_EMPTY + errorResponse(400))
        self.assertTrue(transport.disconnecting)

    def test_responseBeforeBody(self) -> None:
        """
        A response finished before the request body arrived closes the
        connection.
        """
        frontend, channel, transport = connect()
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab")
        request = frontend.requests[0]
        request.respond(200, b"OK", [], 0)
        request.finish()
        self.assertEqual(
            transport.value(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        self.assertTrue(transport.disconnecting)

    def test_upgrade(self) -> None:
        """
        An upgrade request can switch protocols: the channel hands over the
        transport and the bytes after the request, then every event.
        """
        events: list[object] = []

        @implementer(IHalfCloseableProtocol)
        class Tunnel(Protocol):
            def dataReceived(self, data: bytes) -> None:
                events.append(data)

            def readConnectionLost(self) -> None:
                events.append("read lost")

            def writeConnectionLost(self) -> None:
                events.append("write lost")

            def connectionLost(self, reason: Failure) -> None:
                events.append("lost")

        frontend, channel, transport = connect()
        channel.dataReceived(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nhello"
        )
        channel.dataReceived(b" there")
        [request] = frontend.requests
        done: list[bool] = []
        request.notifyDone(lambda: done.append(True))
        request.respond(101, b"Switching Protocols", [(b"Upgrade", b"websocket")], None)
        self.assertEqual(
            transport.value(),
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        )
        tunnel = Tunnel()
        self.assertEqual(request.switchProtocols(tunnel), (transport, b"hello there"))
        self.assertEqual(done, [True])
        self.assertEqual(transport.producerState, "producing")
        channel.dataReceived(b"more")
        channel.readConnectionLost()
        channel.writeConnectionLost()
        self.assertEqual(frontend.closed, [])
        channel.connectionLost(Failure(Exception("bye")))
        self.assertEqual(events, [b"more", "read lost", "write lost", "lost"])
        self.assertEqual(frontend.closed, [channel])
        self.assertEqual(frontend.clock.getDelayedCalls(), [])

    def test_upgradeAnsweredNormally(self) -> None:
        """
        An upgrade request answered with an ordinary response closes the
        connection after it.
        """
        frontend, channel, transport = connect(handler=echo)
        channel.dataReceived(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n" + GET
        )
        self.assertIn(b"Connection: close\r\n", transport.value())
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(frontend.requests), 1)
        self.assertIsNone(ServerRequest.switchProtocols(frontend.requests[0], Protocol()))

    def test_upgradeWithBody(self) -> None:
        """
        An upgrade request with a C{Content-Length} body is an ordinary
        request: its whole body is delivered (llhttp skips it), the
        connection persists and a pipelined request is answered next.
        """
        frontend, channel, transport = connect(handler=echo)
        channel.dataReceived(UPGRADE_POST + b"hello" + GET)
        self.assertEqual(
            [(r.method, r.target) for r in frontend.requests],
            [(b"POST", b"/u"), (b"GET", b"/p?q")],
        )
        upgrade = frontend.requests[0]
        self.assertIn(b"upgrade", upgrade.connectionTokens)
        self.assertEqual(upgrade.body.length, 5)
        self.assertIsNone(upgrade.switchProtocols(Protocol()))
        self.assertEqual(
            transport.value(),
            b"HTTP/1.1 200 OK\r\nX-Host: a\r\nContent-Length: 13\r\n\r\n"
            b"POST /u hello"
            b"HTTP/1.1 200 OK\r\nX-Host: a.example\r\nContent-Length: 9\r\n\r\n"
            b"GET /p?q ",
        )
        self.assertFalse(transport.disconnecting)
        self.assertEqual(transport.producerState, "producing")
        channel.dataReceived(UPGRADE_POST + b"again")
        self.assertTrue(transport.value().endswith(b"POST /u again"))
        self.assertFalse(transport.disconnecting)

    def test_upgradeWithBodyStreamed(self) -> None:
        """
        The body of an upgrade request arriving in pieces streams like any
        body: C{100 Continue}, backpressure, then the pipelined request.
        """
        frontend, channel, transport = connect()
        head = UPGRADE_POST.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n")
        channel.dataReceived(head[:-1])
        channel.dataReceived(head[-1:])
        [request] = frontend.requests
        receiver = Receiver()
        request.body.deliver(receiver)
        self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        channel.dataReceived(b"he")
        request.body.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        request.body.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        channel.dataReceived(b"l")
        self.assertEqual((receiver.data, receiver.ended), ([b"he", b"l"], False))
        channel.dataReceived(b"lo" + GET[:10])
        self.assertEqual((receiver.data, receiver.ended), ([b"he", b"l", b"lo"], True))
        self.assertEqual(request.body.received, 5)
        request.respond(200, b"OK", [], 0)
        request.finish()
        channel.dataReceived(GET[10:])
        self.assertEqual([r.target for r in frontend.requests], [b"/u", b"/p?q"])
        self.assertFalse(transport.disconnecting)

    def test_upgradeWithBodyTimeout(self) -> None:
        """
        The body deadline applies to the body of an upgrade request.
        """
        frontend, channel, transport = connect()
        channel.dataReceived(UPGRADE_POST + b"he")
        [request] = frontend.requests
        receiver = Receiver()
        request.body.deliver(receiver)
        frontend.clock.advance(30)
        self.assertEqual(transport.value(), errorResponse(408))
        self.assertEqual(receiver.failed, "no body bytes within 30.0s")
        channel.dataReceived(b"llo" + GET)
        self.assertEqual(len(frontend.requests), 1)

    def test_upgradeWithBodyTooLarge(self) -> None:
        """
        An upgrade request whose C{Content-Length} is over the body limit is
        refused with 413 before its body is read.
        """
        self.assertRefused(
            UPGRADE_POST.replace(b"Length: 5", b"Length: 1001") + b"x" * 1001 + GET, 413
        )

    def test_upgradeChunked(self) -> None:
        """
        An upgrade request with a chunked body is refused with 400 (llhttp
        does not read it and the channel reads only Content-Length bodies).
        """
        self.assertRefused(
            UPGRADE_POST.replace(b"Content-Length: 5", b"Transfer-Encoding: chunked")
            + b"5\r\nhello\r\n0\r\n\r\n",
            400,
        )

    def test_upgradeWithBodyClose(self) -> None:
        """
        An upgrade request with a body and C{Connection: close} ends the
        connection after its response; what follows is not processed.
        """
        frontend, channel, transport = connect(handler=echo)
        channel.dataReceived(
            UPGRADE_POST.replace(b"Upgrade\r\n", b"Upgrade, close\r\n") + b"hello" + GET
        )
        self.assertEqual(len(frontend.requests), 1)
        self.assertIn(b"Connection: close\r\n", transport.value())
        self.assertTrue(transport.value().endswith(b"POST /u hello"))
        self.assertTrue(transport.disconnecting)

    def test_acceptProxy(self) -> None:
        """
        With C{acceptProxy}, the connection starts with a PROXY header whose
        source becomes the client's address.
        """
        settings = ServerSettings(**{**_asdict(SETTINGS), "acceptProxy": True})  # type: ignore[arg-type]
        source = IPv4Address("TCP", "203.0.113.9", 4000)
        header = proxyHeaderV1(source, HOST)
        frontend, channel, transport = connect(Frontend(settings))
        channel.dataReceived(header[:7])
        channel.dataReceived(header[7:] + GET)
        self.assertEqual(frontend.requests[0].clientAddress, source)
        frontend, channel, transport = connect(Frontend(settings))
        channel.dataReceived(GET)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(frontend.requests, [])
        frontend, channel, transport = connect(Frontend(settings))
        channel.dataReceived(b"PROXY TCP4")
        frontend.clock.advance(10)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_halfClose(self) -> None:
        """
        A client that half-closes after a complete request still gets its
        answer, then the connection closes.
        """
        frontend, channel, transport = connect()
        channel.dataReceived(GET)
        channel.readConnectionLost()
        self.assertFalse(transport.disconnecting)
        frontend.requests[0].respondError(503)
        self.assertIn(b"Connection: close", transport.value())
        self.assertTrue(transport.disconnecting)


class ResponseTests(SynchronousTestCase):
    """
    The response side of L{ServerRequest}.
    """

    def request(
        self, data: bytes = GET
    ) -> tuple[Frontend, ServerRequest, StringTransport]:
        frontend, channel, transport = connect()
        channel.dataReceived(data)
        return frontend, frontend.requests[-1], transport

    def test_chunked(self) -> None:
        """
        A response of unknown length is chunked to an HTTP/1.1 client.
        """
        frontend, request, transport = self.request()
        request.respond(200, b"OK", [], None)
        request.write(b"abc")
        request.write(b"")
        request.finish()
        self.assertEqual(
            transport.value(),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        )
        self.assertEqual(frontend.stats.bytesOut, len(transport.value()))
        self.assertEqual(frontend.stats.bytesIn, len(GET))

    def test_http10UnknownLength(self) -> None:
        """
        A response of unknown length to HTTP/1.0 is delimited by closing.
        """
        frontend, request, transport = self.request(
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        )
        request.respond(200, b"OK", [], None)
        request.write(b"abc")
        request.finish()
        self.assertEqual(
            transport.value(), b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc"
        )
        self.assertTrue(transport.disconnecting)

    def test_noBodyResponses(self) -> None:
        """
        HEAD, 204 and 304 responses carry no body; Content-Length is sent
        for HEAD and 304 but not for 204.
        """
        frontend, request, transport = self.request(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
        request.respond(200, b"OK", [], 5)
        request.write(b"hello")
        request.finish()
        self.assertEqual(transport.value(), b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        frontend, request, transport = self.request()
        request.respond(204, b"No Content", [], 0)
        request.finish()
        self.assertEqual(transport.value(), b"HTTP/1.1 204 No Content\r\n\r\n")
        frontend, request, transport = self.request()
        request.respond(304, b"Not Modified", [], 7)
        request.write(b"x")
        request.finish()
        self.assertEqual(
            transport.value(), b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n"
        )
        frontend, request, transport = self.request(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
        request.respond(200, b"OK", [], None)
        request.finish()
        self.assertEqual(transport.value(), b"HTTP/1.1 200 OK\r\n\r\n")
        self.assertFalse(transport.disconnecting)

    def test_draining(self) -> None:
        """
        While the frontend drains, responses announce and do close; an idle
        connection closes on L{HTTPServerChannel.drain}.
        """
        frontend, request, transport = self.request()
        frontend.draining = True
        request.respondError(503)
        self.assertEqual(transport.value(), errorResponse(503))
        self.assertTrue(transport.disconnecting)
        frontend, channel, transport = connect()
        channel.drain()
        self.assertTrue(transport.disconnecting)
        frontend, channel, transport = connect()
        channel.dataReceived(GET)
        channel.drain()
        self.assertFalse(transport.disconnecting)
        frontend.requests[0].respond(200, b"OK", [], 0)
        frontend.requests[0].finish()
        self.assertIn(b"Connection: close", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_respondErrorPersistent(self) -> None:
        """
        L{ServerRequest.respondError} keeps a persistent connection open.
        """
        frontend, request, transport = self.request()
        request.respondError(502)
        self.assertEqual(transport.value(), errorResponse(502, close=False))
        self.assertFalse(transport.disconnecting)
        self.assertEqual((request.status, request.done), (502, True))
        request.respondError(503)
        self.assertEqual(transport.value(), errorResponse(502, close=False))

    def test_abort(self) -> None:
        """
        L{ServerRequest.abort} aborts the connection and ends the request.
        """
        frontend, request, transport = self.request()
        done: list[bool] = []
        request.notifyDone(lambda: done.append(request.headSent))
        request.respond(200, b"OK", [], 10)
        request.abort()
        self.assertTrue(transport.disconnected)
        self.assertEqual(done, [True])
        request.notifyDone(lambda: done.append(False))
        self.assertEqual(done, [True, False])

    def test_producer(self) -> None:
        """
        A producer registered by the proxy is registered on the client's
        transport, and unregistered by L{ServerRequest.finish} if forgotten.
        """
        frontend, request, transport = self.request()
        producer = object()
        request.registerProducer(producer)
        self.assertEqual((transport.producer, transport.streaming), (producer, True))
        request.unregisterProducer()
        self.assertIsNone(transport.producer)
        request.registerProducer(producer)
        request.respondError(502)
        self.assertIsNone(transport.producer)

    def test_clientGone(self) -> None:
        """
        When the client goes away during a request, the body receiver is
        told and notifyDone callbacks fire once.
        """
        frontend, channel, transport = connect()
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab")
        [request] = frontend.requests
        receiver = Receiver()
        request.body.deliver(receiver)
        done: list[bool] = []
        request.notifyDone(lambda: done.append(True))
        channel.connectionLost(Failure(Exception("gone")))
        self.assertEqual(receiver.failed, "client closed the connection")
        self.assertEqual(done, [True])
        self.assertTrue(request.done)
        request.respondError(502)
        self.assertEqual(transport.value(), b"")

    def test_dispatchRaises(self) -> None:
        """
        An exception from the frontend's dispatch is logged and answered
        with 502.
        """

        def broken(request: IClientRequest) -> None:
            raise RuntimeError("oops")

        frontend, channel, transport = connect(handler=broken)
        channel.dataReceived(GET)
        self.assertEqual(transport.value(), errorResponse(502, close=False))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class BodyTests(SynchronousTestCase):
    """
    L{RequestBody}.
    """

    def test_noBody(self) -> None:
        """
        A request with neither Content-Length nor Transfer-Encoding has no
        body; Content-Length: 0 gives an empty, complete body.
        """
        frontend, channel, transport = connect()
        channel.dataReceived(GET + b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
        self.assertIsNone(frontend.requests[0].body)
        frontend.requests[0].respondError(404)
        body = frontend.requests[1].body
        self.assertEqual(body.length, 0)
        receiver = Receiver()
        body.deliver(receiver)
        self.assertEqual((receiver.data, receiver.ended), ([], True))

    def test_deliverStreams(self) -> None:
        """
        What arrived is delivered at once, the rest as it arrives.
        """
        frontend, channel, transport = connect()
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nab")
        channel.dataReceived(b"cd")
        body = frontend.requests[0].body
        receiver = Receiver()
        body.deliver(receiver)
        self.assertEqual(receiver.data, [b"abcd"])
        channel.dataReceived(b"ef")
        self.assertEqual((receiver.data, receiver.ended), ([b"abcd", b"ef"], True))

    def test_stopProducing(self) -> None:
        """
        After stopProducing, body bytes are read and dropped.
        """
        frontend, channel, transport = connect()
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nab")
        body = frontend.requests[0].body
        receiver = Receiver()
        body.deliver(receiver)
        body.pauseProducing()
        body.stopProducing()
        self.assertEqual(transport.producerState, "producing")
        channel.dataReceived(b"cdef")
        self.assertEqual((receiver.data, receiver.ended), ([b"ab"], False))


# The property test: the same bytes split anywhere give the same outcome.

VALID = [
    GET,
    b"GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b'3;x="a\\"b"\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\n',
    b"GET http://b.example/abs HTTP/1.1\r\nHost: a\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    UPGRADE_POST + b"hello",
    UPGRADE_POST.replace(b"Length: 5", b"Length: 1000") + b"u" * 1000,
]
INVALID = [
    UPGRADE_POST.replace(b"Content-Length: 5", b"Transfer-Encoding: chunked")
    + b"0\r\n\r\n",
    UPGRADE_POST.replace(b"Length: 5", b"Length: 1001") + b"u" * 1001,
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    b"GET /\x80 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 9000 + b"\r\n\r\n",
    b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3e9\r\n"
    + b"x" * 1001
    + b"\r\n0\r\n\r\n",
]


def run(pieces: list[bytes]) -> tuple[bytes, list[tuple[bytes, bytes]], bool]:
    """
    Feed C{pieces} to a channel answering with L{echo}.

    @return: What was written (refusals included: a request refused before
        or after it was dispatched gets the same answer), the requests
        answered, and whether the connection is closing.
    """
    frontend, channel, transport = connect(handler=echo)
    for piece in pieces:
        if transport.disconnecting:
            break
        channel.dataReceived(piece)
    return (
        transport.value(),
        [(r.method, r.target) for r in frontend.requests if r.status == 200],
        transport.disconnecting,
    )


@st.composite
def splitRequests(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    requests = draw(
        st.lists(st.sampled_from(VALID), max_size=3)
        .flatmap(lambda valid: st.tuples(st.just(valid), st.sampled_from([None] + INVALID)))
    )
    valid, invalid = requests
    data = b"".join(valid) + (invalid or b"")
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    pieces = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
    return data, [p for p in pieces if p]


class SplitTests(SynchronousTestCase):
    """
    Parsing does not depend on how the bytes are split.
    """

    @settings(max_examples=300, deadline=None)
    @given(splitRequests())
    def test_splitAnywhere(self, case: tuple[bytes, list[bytes]]) -> None:
        """
        Bytes split at random boundaries give the same responses,
        dispatched requests and refusals as the same bytes at once.
        """
        data, pieces = case
        self.assertEqual(run(pieces), run([data]))


class MemoryTests(SynchronousTestCase):
    """
    A closed connection lets go of everything at once.
    """

    def test_closedChannelFreedWithoutGarbageCollector(self) -> None:
        """
        Once a connection with a request in progress is lost and the
        frontend forgets it, reference counting alone frees the channel (no
        cycle waits for the garbage collector, keeping buffers alive).
        """
        import gc
        import weakref

        from twisted.internet.error import ConnectionLost

        gc.collect()
        gc.disable()
        self.addCleanup(gc.enable)
        frontend, channel, transport = connect()
        channel.dataReceived(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        [request] = frontend.requests
        request.respond(200, b"OK", [], None)
        request.write(b"x" * 1000)
        channel.connectionLost(Failure(ConnectionLost()))
        alive = weakref.ref(channel)
        del channel, request, transport
        frontend.requests.clear()
        frontend.opened.clear()
        frontend.closed.clear()
        self.assertIsNone(alive())
