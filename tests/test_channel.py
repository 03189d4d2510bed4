"""
Tests for L{lbtwist.channel}: the hardened client-side HTTP/1.1 parser.
"""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from lbtwist.channel import connectionTokens, errorResponse, validHost
from lbtwist.web import ProxySite
from twisted.web.http_headers import Headers

from .doubles import StaticResource, connect, makeConfig


class ChannelTestsMixin:
    """
    Helpers: a L{ProxySite} over a L{StaticResource}.
    """

    def site(
        self, **frontend: object
    ) -> tuple[ProxySite, StaticResource, MemoryReactorClock]:
        reactor = MemoryReactorClock()
        config = makeConfig(frontend=frontend, max_body_size=100)
        resource = StaticResource()
        site = ProxySite(resource, config.frontends[0], 100, reactor)
        return site, resource, reactor

    def exchange(
        self, data: bytes, **frontend: object
    ) -> tuple[bytes, StaticResource, bool]:
        site, resource, reactor = self.site(**frontend)
        channel, transport = connect(site, reactor)
        channel.dataReceived(data)
        return transport.value(), resource, transport.disconnecting


class RefusalTests(ChannelTestsMixin, SynchronousTestCase):
    """
    Requests that must be refused before anything is processed.
    """

    def assertRefused(self, data: bytes, code: int, **frontend: object) -> None:
        response, resource, closing = self.exchange(data, **frontend)
        self.assertTrue(response.startswith(b"HTTP/1.1 %d " % (code,)), response[:80])
        self.assertIn(b"Content-Type: text/plain", response)
        self.assertTrue(closing)
        self.assertEqual(resource.requests, [])

    def test_contentLengthWithTransferEncoding(self) -> None:
        """
        C{Content-Length} together with C{Transfer-Encoding} is a 400.
        """
        self.assertRefused(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        )

    def test_transferEncodingThenContentLength(self) -> None:
        """
        The same in the other order is a 400 too.
        """
        self.assertRefused(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Length: 5\r\n\r\n0\r\n\r\n",
            400,
        )

    def test_malformedContentLength(self) -> None:
        """
        C{+3}, C{0x3}, C{3, 4} and two differing values are each a 400.
        """
        for value in [
            b"Content-Length: +3",
            b"Content-Length: 0x3",
            b"Content-Length: 3, 4",
            b"Content-Length: 3\r\nContent-Length: 4",
        ]:
            self.assertRefused(
                b"POST / HTTP/1.1\r\nHost: a\r\n" + value + b"\r\n\r\nabcd", 400
            )

    def test_transferCodingsOtherThanChunked(self) -> None:
        """
        C{identity}, C{gzip} and C{chunked, chunked} are each a 400.
        """
        for value in [b"identity", b"gzip", b"chunked, chunked", b"gzip, chunked"]:
            self.assertRefused(
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
                + value
                + b"\r\n\r\n0\r\n\r\n",
                400,
            )

    def test_transferEncodingInHTTP10(self) -> None:
        """
        C{Transfer-Encoding} in an HTTP/1.0 request is a 400.
        """
        self.assertRefused(
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400
        )

    def test_controlBytesInValue(self) -> None:
        """
        NUL or a bare CR inside a header value is a 400.
        """
        self.assertRefused(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400)
        self.assertRefused(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400)

    def test_whitespaceBeforeColon(self) -> None:
        """
        Whitespace between a field name and its colon is a 400.
        """
        self.assertRefused(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400)

    def test_invalidNameCharacter(self) -> None:
        """
        A field name with a character outside the token set is a 400.
        """
        self.assertRefused(b"GET / HTTP/1.1\r\nHost: a\r\nX(y): 1\r\n\r\n", 400)

    def test_obsoleteLineFolding(self) -> None:
        """
        A continuation line is a 400.
        """
        self.assertRefused(b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n", 400)

    def test_badChunkSize(self) -> None:
        """
        A chunk size that is not hexadecimal is a 400.
        """
        self.assertRefused(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"zz\r\nhello\r\n0\r\n\r\n",
            400,
        )

    def test_hostMissingRepeatedOrInvalid(self) -> None:
        """
        HTTP/1.1 without C{Host}, with two, or with an invalid one is a 400.
        """
        self.assertRefused(b"GET / HTTP/1.1\r\n\r\n", 400)
        self.assertRefused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400)
        for host in [b"a b", b"a/b", b"a@b", b""]:
            self.assertRefused(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n", 400)

    def test_targetWithControlOrNonASCII(self) -> None:
        """
        A target with a control byte or a non-ASCII byte is a 400.
        """
        self.assertRefused(b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400)
        self.assertRefused(b"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400)
        self.assertRefused(b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400)

    def test_targetTooLong(self) -> None:
        """
        A target over C{max_target_length} is a 414.
        """
        self.assertRefused(
            b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
            414,
            max_target_length=100,
        )

    def test_headersTooLarge(self) -> None:
        """
        A header section over C{max_header_size} is a 431, whether in one
        line or many.
        """
        self.assertRefused(
            b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 2000 + b"\r\n\r\n",
            431,
            max_header_size=1024,
        )
        self.assertRefused(
            b"GET / HTTP/1.1\r\nHost: a\r\n"
            + b"X: aaaaaaaaaaaaaaaa\r\n" * 100
            + b"\r\n",
            431,
            max_header_size=1024,
        )

    def test_bodyTooLargeByContentLength(self) -> None:
        """
        A C{Content-Length} over the body limit is a 413 without reading the
        body, and no C{100 Continue} is sent.
        """
        response, resource, closing = self.exchange(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        self.assertTrue(response.startswith(b"HTTP/1.1 413 "))
        self.assertNotIn(b"100 Continue", response)
        self.assertTrue(closing)

    def test_chunkedBodyTooLarge(self) -> None:
        """
        A chunked body that grows over the limit is a 413.
        """
        self.assertRefused(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"64\r\n" + b"a" * 100 + b"\r\n1\r\na\r\n0\r\n\r\n",
            413,
        )

    def test_connect(self) -> None:
        """
        C{CONNECT} is refused: lbtwist is not a forward proxy.
        """
        self.assertRefused(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405)

    def test_errorPagesDoNotEchoRequestData(self) -> None:
        """
        Error pages name the status only.
        """
        response, _, _ = self.exchange(
            b"GET /<script>alert(1)</script> HTTP/1.1\r\nHost: a b\r\n\r\n"
        )
        self.assertNotIn(b"<script>", response)


class AcceptedRequestTests(ChannelTestsMixin, SynchronousTestCase):
    """
    Requests that are processed, and how.
    """

    def test_absoluteFormBecomesOriginForm(self) -> None:
        """
        An absolute-form target is processed as origin-form with the target's
        authority as C{Host}.
        """
        response, resource, _ = self.exchange(
            b"GET http://a.example/p?q=1 HTTP/1.1\r\nHost: other\r\n\r\n"
        )
        [request] = resource.requests
        self.assertEqual(request.uri, b"/p?q=1")
        self.assertEqual(request.requestHeaders.getRawHeaders(b"host"), [b"a.example"])

    def test_connectionCloseAmongTokens(self) -> None:
        """
        C{Connection: foo,close} closes after the response and a pipelined
        request after it is not processed.
        """
        response, resource, closing = self.exchange(
            b"GET /1 HTTP/1.1\r\nHost: a\r\nConnection: foo,close\r\n\r\n"
            b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        self.assertEqual([r.uri for r in resource.requests], [b"/1"])
        self.assertEqual(response.count(b"HTTP/1.1 200"), 1)
        self.assertIn(b"Connection: close", response)
        self.assertTrue(closing)

    def test_connectionCloseOnSecondLine(self) -> None:
        """
        C{close} on a second C{Connection} line counts too.
        """
        response, resource, closing = self.exchange(
            b"GET /1 HTTP/1.1\r\nHost: a\r\nConnection: foo\r\nConnection: Close\r\n\r\n"
        )
        self.assertTrue(closing)

    def test_pipelinedInOrder(self) -> None:
        """
        Pipelined requests are processed in order.
        """
        response, resource, closing = self.exchange(
            b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        self.assertEqual([r.uri for r in resource.requests], [b"/1", b"/2", b"/3"])
        self.assertFalse(closing)

    def test_http10WithoutHost(self) -> None:
        """
        HTTP/1.0 needs no C{Host}.
        """
        response, resource, _ = self.exchange(b"GET / HTTP/1.0\r\n\r\n")
        self.assertEqual(len(resource.requests), 1)


class DeadlineTests(ChannelTestsMixin, SynchronousTestCase):
    """
    The header-completion deadline.
    """

    def test_slowHeadIsCutOff(self) -> None:
        """
        A client trickling its head gets 408 at the deadline even though
        every byte resets the idle timeout.
        """
        site, resource, reactor = self.site(header_timeout=2.0, idle_timeout=60.0)
        channel, transport = connect(site, reactor)
        for byte in b"GET / HTTP/1.1\r\nHost: a\r\n":
            channel.dataReceived(bytes([byte]))
            reactor.advance(0.25)
            if transport.disconnecting:
                break
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "))
        self.assertTrue(transport.disconnecting)
        self.assertLessEqual(reactor.seconds(), 2.25)

    def test_idleConnectionGetsNoDeadline(self) -> None:
        """
        A connection that sends nothing is left to the idle timeout, and a
        complete head in time cancels the deadline.
        """
        site, resource, reactor = self.site(header_timeout=2.0, idle_timeout=60.0)
        channel, transport = connect(site, reactor)
        reactor.advance(10)
        self.assertFalse(transport.disconnecting)
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        reactor.advance(10)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200"), 1)
        self.assertFalse(transport.disconnecting)
        reactor.advance(60)
        self.assertTrue(transport.disconnecting)


class HelperTests(SynchronousTestCase):
    """
    The small parsing helpers.
    """

    def test_connectionTokens(self) -> None:
        """
        Tokens come from every line, split on commas, lower-cased.
        """
        headers = Headers({b"Connection": [b"Foo, close", b" X-Bar ,,"]})
        self.assertEqual(connectionTokens(headers), {b"foo", b"close", b"x-bar"})

    def test_validHost(self) -> None:
        """
        Names, IPv4, bracketed IPv6 and ports are valid; spaces and slashes
        are not.
        """
        for good in [b"a.example", b"a.example:8080", b"127.0.0.1", b"[::1]:80"]:
            self.assertTrue(validHost(good), good)
        for bad in [b"a b", b"a/b", b"", b"[::1", b"a:port"]:
            self.assertFalse(validHost(bad), bad)

    def test_errorResponse(self) -> None:
        """
        Error responses are complete, plain text and close the connection.
        """
        self.assertEqual(
            errorResponse(400),
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: 16\r\nConnection: close\r\n\r\n400 Bad Request\n",
        )


class ChunkExtensionTests(ChannelTestsMixin, SynchronousTestCase):
    """
    Chunk extensions are checked for syntax, not only characters.
    """

    def body(self, sizeLine: bytes) -> bytes:
        return (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            + sizeLine + b"\r\nabc\r\n0\r\n\r\n"
        )

    def test_wellFormedExtensionsAccepted(self) -> None:
        """
        Named extensions with token or quoted values are accepted.
        """
        for line in [b"3;a", b"3;a=b", b'3;a="x y"', b"3; a = b", b"3;a;b=c"]:
            response, resource, _ = self.exchange(self.body(line))
            self.assertEqual(len(resource.requests), 1, line)

    def test_hugeChunkSizeRefusedAtOnce(self) -> None:
        """
        A chunk size over the body limit is a 413 before its data arrives.
        """
        response, resource, closing = self.exchange(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"ffffffffffffffffffffffff\r\nabc"
        )
        self.assertTrue(response.startswith(b"HTTP/1.1 413 "), response)
        self.assertTrue(closing)

    def test_malformedExtensionsRefused(self) -> None:
        """
        An extension without a name, with an empty value or with a stray
        word is a 400.
        """
        for line in [b"3;=x", b"3;a=", b"3;a b"]:
            response, resource, closing = self.exchange(self.body(line))
            self.assertTrue(response.startswith(b"HTTP/1.1 400 "), line)
            self.assertEqual(resource.requests, [])
