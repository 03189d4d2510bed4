"""
Tests for L{lbtwist.upstream}: the strict response parser, connection reuse
and the request body producer.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web._newclient import Request, ResponseFailed
from twisted.web.http_headers import Headers

from lbtwist.upstream import SpooledBody, _UpstreamProtocol


class StrictParserTests(SynchronousTestCase):
    """
    Responses a proxy must refuse, and ones it must accept.
    """

    def exchange(
        self, response: bytes, method: bytes = b"GET"
    ) -> tuple[Any, StringTransport, list[Any]]:
        reused: list[Any] = []
        protocol = _UpstreamProtocol(reused.append)
        transport = StringTransport()
        protocol.makeConnection(transport)
        d = protocol.request(
            Request(method, b"/", Headers({b"host": [b"a"]}), None, persistent=True)
        )
        protocol.dataReceived(response)
        return d, transport, reused

    def assertRefused(self, response: bytes) -> None:
        d, transport, reused = self.exchange(response)
        self.failureResultOf(d, ResponseFailed)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(reused, [])

    def test_contentLengthWithTransferEncoding(self) -> None:
        """
        A response with both framings is refused.
        """
        self.assertRefused(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\n"
        )

    def test_differingContentLengths(self) -> None:
        """
        Two different C{Content-Length} values are refused.
        """
        self.assertRefused(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
        )

    def test_malformedContentLength(self) -> None:
        """
        A signed C{Content-Length} is refused.
        """
        self.assertRefused(b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello")

    def test_unknownTransferCoding(self) -> None:
        """
        A transfer coding other than chunked is refused.
        """
        self.assertRefused(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx")

    def test_garbageStatusLine(self) -> None:
        """
        A status line without a three-digit code is refused.
        """
        self.assertRefused(b"HTTP/1.1 abc\r\n\r\n")
        self.assertRefused(b"garbage\r\n\r\n")

    def test_obsoleteLineFolding(self) -> None:
        """
        A folded response field is refused.
        """
        self.assertRefused(
            b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n"
        )

    def test_connectionOptionsRemoved(self) -> None:
        """
        Fields named by the response's C{Connection} are removed, but not the
        framing.
        """
        d, transport, reused = self.exchange(
            b"HTTP/1.1 200 OK\r\nConnection: X-Private, Content-Length\r\n"
            b"X-Private: s\r\nX-Kept: k\r\nContent-Length: 2\r\n\r\nok"
        )
        response = self.successResultOf(d)
        self.assertFalse(response.headers.hasHeader(b"x-private"))
        self.assertEqual(response.headers.getRawHeaders(b"x-kept"), [b"k"])
        self.assertEqual(response.length, 2)

    def test_headKeepsContentLength(self) -> None:
        """
        A HEAD response's C{Content-Length} is kept for the client.
        """
        d, transport, reused = self.exchange(
            b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", method=b"HEAD"
        )
        response = self.successResultOf(d)
        self.assertEqual(response.headers.getRawHeaders(b"content-length"), [b"50"])

    def test_connectionReused(self) -> None:
        """
        A cleanly framed response returns the connection to the pool.
        """
        d, transport, reused = self.exchange(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        )
        self.successResultOf(d)
        self.assertEqual(len(reused), 1)
        self.assertFalse(transport.disconnecting)

    def test_strayBytesPreventReuse(self) -> None:
        """
        Bytes after a complete response close the connection instead of
        returning it to the pool.
        """
        d, transport, reused = self.exchange(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n"
        )
        self.successResultOf(d)
        self.assertEqual(reused, [])
        self.assertTrue(transport.disconnecting)


class SpooledBodyTests(SynchronousTestCase):
    """
    The replayable request body.
    """

    def test_replayable(self) -> None:
        """
        The body can be produced twice, whole each time.
        """
        body = SpooledBody(BytesIO(b"x" * 200000), 200000)
        for _ in range(2):
            consumer = StringTransport()
            d = body.startProducing(consumer)
            self.successResultOf(d)
            self.assertEqual(consumer.value(), b"x" * 200000)

    def test_pauseAndResume(self) -> None:
        """
        A paused body writes nothing more until resumed.
        """
        body = SpooledBody(BytesIO(b"x" * 200000), 200000)

        class Pausing(StringTransport):
            def write(self, data: bytes) -> None:
                super().write(data)
                body.pauseProducing()

        consumer = Pausing()
        d = body.startProducing(consumer)
        self.assertEqual(len(consumer.value()), SpooledBody.readSize)
        self.assertNoResult(d)
        body.resumeProducing()
        self.assertEqual(len(consumer.value()), 2 * SpooledBody.readSize)
        body.stopProducing()
        body.resumeProducing()
        self.assertNoResult(d)
