# -*- test-case-name: tests.test_e2e_requests -*-
"""
End-to-end: what lbtwist accepts from clients and what it refuses
(proxy-rules.md, "Requests from clients"), with real bytes against a real
C{twistd -n lbtwist}.
"""

from __future__ import annotations

import socket
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.harness import (
    Client,
    Lbtwist,
    Response,
    ScriptedBackend,
    exchange,
    parseResponses,
    request,
    simpleConfig,
)


class RequestRejectionTests(SynchronousTestCase):
    """
    Malformed and smuggling requests get 400 (or 413/414/431), the connection
    is closed and nothing reaches the backend.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.backend = ScriptedBackend("b1")
        cls.addClassCleanup(cls.backend.close)
        cls.lb = Lbtwist(
            cls, simpleConfig([cls.backend], pool={"max_body_size": 1000, "retries": 0})
        )

    def setUp(self) -> None:
        self.backend.clear()

    def assertRejected(
        self, data: bytes, status: int = 400, timeout: float = 3.0
    ) -> Response:
        """
        Send C{data}; assert one C{status} response, a closed connection and an
        untouched backend.
        """
        received, ending = exchange(self.lb.port, data, timeout=timeout)
        responses = parseResponses(received)
        self.assertEqual([r.status for r in responses], [status], received)
        self.assertIn(ending, ("eof", "reset"), "connection left open after the error")
        response = responses[0]
        self.assertTrue(
            response.header(b"content-type").startswith(b"text/plain"), response.headers
        )
        time.sleep(0.05)
        self.assertEqual(self.backend.received, [])
        return response

    def test_rejectsContentLengthWithTransferEncoding(self) -> None:
        """
        C{Content-Length} together with C{Transfer-Encoding} is refused with 400
        and the smuggled request never reaches the backend.
        """
        self.assertRejected(
            b"POST /a HTTP/1.1\r\nHost: lb.example\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: lb.example\r\n\r\n"
        )

    def test_rejectsPlusSignContentLength(self) -> None:
        """
        C{Content-Length: +3} is refused with 400.
        """
        self.assertRejected(request("POST", "/a", [("Content-Length", "+3")], b"abc"))

    def test_rejectsHexContentLength(self) -> None:
        """
        C{Content-Length: 0x3} is refused with 400.
        """
        self.assertRejected(request("POST", "/a", [("Content-Length", "0x3")], b"abc"))

    def test_rejectsListContentLength(self) -> None:
        """
        C{Content-Length: 3, 4} is refused with 400.
        """
        self.assertRejected(
            request("POST", "/a", [("Content-Length", "3, 4")], b"abcd")
        )

    def test_rejectsDifferingContentLengths(self) -> None:
        """
        Two differing C{Content-Length} lines are refused with 400.
        """
        self.assertRejected(
            request(
                "POST",
                "/a",
                [("Content-Length", "3"), ("Content-Length", "4")],
                b"abcd",
            )
        )

    def test_rejectsEmptyContentLength(self) -> None:
        """
        An empty C{Content-Length} is refused with 400.
        """
        self.assertRejected(request("POST", "/a", [("Content-Length", "")], b"abc"))

    def test_rejectsNegativeContentLength(self) -> None:
        """
        C{Content-Length: -1} is refused with 400.
        """
        self.assertRejected(request("POST", "/a", [("Content-Length", "-1")], b"abc"))

    def test_rejectsHugeContentLength(self) -> None:
        """
        A C{Content-Length} of 30 digits is refused (400 or 413), never a
        crash or a hang.
        """
        received, ending = exchange(
            self.lb.port,
            request("POST", "/a", [("Content-Length", "9" * 30)], b"abc"),
            timeout=3,
        )
        self.assertIn(
            [r.status for r in parseResponses(received)], ([400], [413]), received
        )
        self.assertIn(ending, ("eof", "reset"))
        self.assertEqual(self.backend.received, [])

    def test_rejectsIdentityTransferEncoding(self) -> None:
        """
        C{Transfer-Encoding: identity} is refused with 400.
        """
        self.assertRejected(
            request("POST", "/a", [("Transfer-Encoding", "identity")], b"abc")
        )

    def test_rejectsGzipTransferEncoding(self) -> None:
        """
        C{Transfer-Encoding: gzip} alone is refused with 400.
        """
        self.assertRejected(
            request("POST", "/a", [("Transfer-Encoding", "gzip")], b"abc")
        )

    def test_rejectsDoubleChunked(self) -> None:
        """
        C{Transfer-Encoding: chunked, chunked} is refused with 400.
        """
        self.assertRejected(
            request(
                "POST",
                "/a",
                [("Transfer-Encoding", "chunked, chunked")],
                b"3\r\nabc\r\n0\r\n\r\n",
            )
        )

    def test_rejectsChunkedNotLast(self) -> None:
        """
        C{Transfer-Encoding: chunked, gzip} (chunked not final) is refused with 400.
        """
        self.assertRejected(
            request(
                "POST",
                "/a",
                [("Transfer-Encoding", "chunked, gzip")],
                b"3\r\nabc\r\n0\r\n\r\n",
            )
        )

    def test_rejectsTransferEncodingLinesEndingWithIdentity(self) -> None:
        """
        C{Transfer-Encoding: chunked} then C{Transfer-Encoding: identity} on a
        second line (final coding not chunked) is refused with 400.
        """
        self.assertRejected(
            request(
                "POST",
                "/a",
                [("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "identity")],
                b"3\r\nabc\r\n0\r\n\r\n",
            )
        )

    def test_rejectsUnknownTransferCodingLookalike(self) -> None:
        """
        C{Transfer-Encoding: xchunked} is refused with 400.
        """
        self.assertRejected(
            request(
                "POST",
                "/a",
                [("Transfer-Encoding", "xchunked")],
                b"3\r\nabc\r\n0\r\n\r\n",
            )
        )

    def test_rejectsTransferEncodingInHTTP10(self) -> None:
        """
        C{Transfer-Encoding} in an HTTP/1.0 request is refused with 400.
        """
        self.assertRejected(
            request(
                "POST",
                "/a",
                [("Transfer-Encoding", "chunked")],
                b"3\r\nabc\r\n0\r\n\r\n",
                version=b"HTTP/1.0",
            )
        )

    def test_rejectsNulInHeaderValue(self) -> None:
        """
        A NUL byte inside a header value is refused with 400.
        """
        self.assertRejected(request("GET", "/a", [("X-Bad", b"a\x00b")]))

    def test_rejectsBareCRInHeaderValue(self) -> None:
        """
        A bare CR inside a header value is refused with 400.
        """
        self.assertRejected(request("GET", "/a", [("X-Bad", b"a\rb")]))

    def test_rejectsBareLFInHeaderValue(self) -> None:
        """
        A bare LF inside a header value is refused with 400.
        """
        self.assertRejected(request("GET", "/a", [("X-Bad", b"a\nb")]))

    def test_rejectsWhitespaceBeforeColon(self) -> None:
        """
        C{Host : x} (whitespace before the colon) is refused with 400.
        """
        self.assertRejected(b"GET /a HTTP/1.1\r\nHost : lb.example\r\n\r\n")

    def test_rejectsWhitespaceBeforeColonInOtherField(self) -> None:
        """
        C{Content-Length : 3} is refused with 400 rather than ignored.
        """
        self.assertRejected(
            b"POST /a HTTP/1.1\r\nHost: lb.example\r\nContent-Length : 3\r\n\r\nabc"
        )

    def test_rejectsInvalidHeaderNameCharacter(self) -> None:
        """
        A header name with a character outside tchar is refused with 400.
        """
        self.assertRejected(request("GET", "/a", [("Bad@Name", "1")]))

    def test_rejectsObsoleteLineFolding(self) -> None:
        """
        Obsolete line folding in a header is refused with 400.
        """
        self.assertRejected(
            b"GET /a HTTP/1.1\r\nHost: lb.example\r\nX-Folded: a\r\n b\r\n\r\n"
        )

    def test_rejectsBadChunkSize(self) -> None:
        """
        A chunk size that is not hex is refused with 400.
        """
        self.assertRejected(
            request(
                "POST",
                "/a",
                [("Transfer-Encoding", "chunked")],
                b"zz\r\nabc\r\n0\r\n\r\n",
            )
        )

    def test_rejectsSignedChunkSize(self) -> None:
        """
        A chunk size with a sign (C{+3}) is refused with 400.
        """
        self.assertRejected(
            request(
                "POST",
                "/a",
                [("Transfer-Encoding", "chunked")],
                b"+3\r\nabc\r\n0\r\n\r\n",
            )
        )

    def test_rejectsBadChunkExtension(self) -> None:
        """
        A malformed chunk extension (a space inside it) is refused with 400.
        (llhttp accepts an empty name or value, C{3;=x}; extensions are never
        forwarded, the body is re-framed.)
        """
        self.assertRejected(
            request(
                "POST",
                "/a",
                [("Transfer-Encoding", "chunked")],
                b"3;a b\r\nabc\r\n0\r\n\r\n",
            )
        )

    def test_rejectsChunkDataWithoutCRLF(self) -> None:
        """
        Chunk data not followed by CRLF is refused with 400.
        """
        self.assertRejected(
            request(
                "POST", "/a", [("Transfer-Encoding", "chunked")], b"3\r\nabcXY0\r\n\r\n"
            )
        )

    def test_rejectsHugeChunkSize(self) -> None:
        """
        A chunk size beyond any sane integer is refused (400 or 413), never a
        crash or a hang.
        """
        received, ending = exchange(
            self.lb.port,
            request(
                "POST",
                "/a",
                [("Transfer-Encoding", "chunked")],
                b"ffffffffffffffffffffffff\r\nabc",
            ),
            timeout=3,
        )
        self.assertIn(
            [r.status for r in parseResponses(received)], ([400], [413]), received
        )
        self.assertIn(ending, ("eof", "reset"))
        self.assertEqual(self.backend.received, [])

    def test_rejectsNulInChunkExtension(self) -> None:
        """
        A control byte inside a chunk extension is refused with 400.
        """
        self.assertRejected(
            request(
                "POST",
                "/a",
                [("Transfer-Encoding", "chunked")],
                b"3;a\x00b\r\nabc\r\n0\r\n\r\n",
            )
        )

    def test_rejectsMissingHost(self) -> None:
        """
        An HTTP/1.1 request without C{Host} is refused with 400.
        """
        self.assertRejected(request("GET", "/a", host=None))

    def test_rejectsTwoHostLines(self) -> None:
        """
        Two C{Host} lines are refused with 400.
        """
        self.assertRejected(request("GET", "/a", [("Host", "other.example")]))

    def test_rejectsHostWithSpace(self) -> None:
        """
        C{Host: a b} is refused with 400.
        """
        self.assertRejected(request("GET", "/a", host="a b"))

    def test_rejectsHostWithSlash(self) -> None:
        """
        C{Host: a/b} is refused with 400.
        """
        self.assertRejected(request("GET", "/a", host="a/b"))

    def test_rejectsHostWithBadPort(self) -> None:
        """
        C{Host: a.example:80x} is refused with 400.
        """
        self.assertRejected(request("GET", "/a", host="a.example:80x"))

    def test_rejectsHostWithUserinfo(self) -> None:
        """
        C{Host: user@a.example} is refused with 400.
        """
        self.assertRejected(request("GET", "/a", host="user@a.example"))

    def test_rejectsTargetWithControlByte(self) -> None:
        """
        A request target with a control byte is refused with 400.
        """
        self.assertRejected(b"GET /a\x01b HTTP/1.1\r\nHost: lb.example\r\n\r\n")

    def test_rejectsTargetWithNonAscii(self) -> None:
        """
        A request target with non-ASCII bytes is refused with 400, never 500.
        """
        self.assertRejected(b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: lb.example\r\n\r\n")

    def test_rejectsTargetWithSpace(self) -> None:
        """
        A request target with a space is refused with 400.
        """
        self.assertRejected(b"GET /a b HTTP/1.1\r\nHost: lb.example\r\n\r\n")

    def test_rejectsConnectMethod(self) -> None:
        """
        lbtwist is no forward proxy: C{CONNECT} never reaches a backend.
        """
        received, _ = exchange(
            self.lb.port,
            b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
            timeout=3,
        )
        [response] = parseResponses(received)
        self.assertGreaterEqual(response.status, 400)
        self.assertLess(response.status, 500)
        self.assertEqual(self.backend.received, [])

    def test_rejectsTooLongTarget(self) -> None:
        """
        A request target over 8192 bytes gets 414.
        """
        self.assertRejected(request("GET", "/" + "a" * 9000), status=414)

    def test_rejectsTooLargeHeaderSection(self) -> None:
        """
        A header section over 16384 bytes gets 431.
        """
        headers = [(f"X-Filler-{i}", "v" * 100) for i in range(170)]
        self.assertRejected(request("GET", "/a", headers), status=431)

    def test_rejectsTooLargeBodyBeforeReadingIt(self) -> None:
        """
        A C{Content-Length} over C{max_body_size} gets 413 before any body byte
        is sent, and the backend gets nothing.
        """
        self.assertRejected(
            b"POST /a HTTP/1.1\r\nHost: lb.example\r\nContent-Length: 5000\r\n\r\n",
            status=413,
        )

    def test_rejectsTooLargeBodyWithoutSendingContinue(self) -> None:
        """
        With C{Expect: 100-continue} and a C{Content-Length} over the limit the
        client gets 413 and never a C{100 Continue}.
        """
        self.assertRejected(
            b"POST /a HTTP/1.1\r\nHost: lb.example\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n",
            status=413,
        )

    def test_rejectsTooLargeChunkedBody(self) -> None:
        """
        A chunked body that grows over C{max_body_size} gets 413.
        """
        chunk = b"%x\r\n%s\r\n" % (600, b"x" * 600)
        self.assertRejected(
            request(
                "POST",
                "/a",
                [("Transfer-Encoding", "chunked")],
                chunk * 3 + b"0\r\n\r\n",
            ),
            status=413,
        )


class RequestHandlingTests(SynchronousTestCase):
    """
    Valid requests: absolute form, Connection tokens, pipelining.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.backend = ScriptedBackend("b1")
        cls.addClassCleanup(cls.backend.close)
        cls.lb = Lbtwist(cls, simpleConfig([cls.backend], pool={"retries": 0}))

    def setUp(self) -> None:
        self.backend.clear()

    def test_acceptsAbsoluteFormTarget(self) -> None:
        """
        C{GET http://a.example/p} reaches the backend as C{GET /p} with
        C{Host: a.example}.
        """
        data, _ = exchange(
            self.lb.port,
            b"GET http://a.example/p?q=1 HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
            3,
        )
        [response] = parseResponses(data)
        self.assertEqual(response.status, 200)
        [received] = self.backend.received
        self.assertEqual((received.method, received.target), (b"GET", b"/p?q=1"))
        self.assertEqual(received.headerValues(b"host"), [b"a.example"])

    def test_absoluteFormAuthorityOverridesHost(self) -> None:
        """
        With an absolute-form target the target's authority replaces the
        C{Host} field (RFC 9112 section 3.2.2).
        """
        data, _ = exchange(
            self.lb.port,
            b"GET http://a.example/p HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
            3,
        )
        [response] = parseResponses(data)
        self.assertEqual(response.status, 200)
        [received] = self.backend.received
        self.assertEqual(received.target, b"/p")
        self.assertEqual(received.headerValues(b"host"), [b"a.example"])

    def test_acceptsTargetBelowLimit(self) -> None:
        """
        A 8000-byte target is under the 8192-byte limit and is proxied.
        """
        target = "/" + "t" * 7999
        data, _ = exchange(self.lb.port, request("GET", target, close=True), 3)
        self.assertEqual(parseResponses(data)[0].status, 200)
        self.assertEqual(self.backend.received[0].target, target.encode())

    def test_acceptsHeadersBelowLimit(self) -> None:
        """
        A 12 KiB header section is under the 16 KiB limit and arrives whole.
        """
        headers = [(f"X-Filler-{i}", "v" * 100) for i in range(110)]
        data, _ = exchange(
            self.lb.port, request("GET", "/big-head", headers, close=True), 3
        )
        self.assertEqual(parseResponses(data)[0].status, 200)
        self.assertEqual(len(self.backend.received[0].headerValues(b"x-filler-109")), 1)

    def test_closesHTTP10ConnectionByDefault(self) -> None:
        """
        An HTTP/1.0 request without keep-alive gets its response and the
        connection closes; a pipelined second request is not processed.
        """
        data, ending = exchange(
            self.lb.port,
            request("GET", "/old", version=b"HTTP/1.0")
            + request("GET", "/old-second", version=b"HTTP/1.0"),
            timeout=3,
        )
        self.assertEqual([r.status for r in parseResponses(data)], [200])
        self.assertIn(ending, ("eof", "reset"))
        self.assertEqual([r.target for r in self.backend.received], [b"/old"])

    def test_answersPipelinedRequestsWithBodiesInOrder(self) -> None:
        """
        Pipelined POST, GET, chunked POST are answered in order and each body
        reaches the backend intact.
        """
        data, _ = exchange(
            self.lb.port,
            request("POST", "/p1", body=b"first body")
            + request("GET", "/g2")
            + request(
                "POST",
                "/p3",
                [("Transfer-Encoding", "chunked")],
                b"5\r\nthird\r\n0\r\n\r\n",
                close=True,
            ),
            timeout=5,
        )
        self.assertEqual(
            [r.body for r in parseResponses(data)],
            [b"b1 POST /p1", b"b1 GET /g2", b"b1 POST /p3"],
        )
        self.assertEqual(
            [(r.target, r.body) for r in self.backend.received],
            [(b"/p1", b"first body"), (b"/g2", b""), (b"/p3", b"third")],
        )

    def test_closesOnCloseTokenInList(self) -> None:
        """
        C{Connection: foo,close} closes after the response and a pipelined
        second request is not processed.
        """
        data, ending = exchange(
            self.lb.port,
            request("GET", "/first", [("Connection", "foo,close")])
            + request("GET", "/second"),
            timeout=3,
        )
        responses = parseResponses(data)
        self.assertEqual([r.body for r in responses], [b"b1 GET /first"])
        self.assertIn(b"close", responses[0].connectionTokens())
        self.assertIn(ending, ("eof", "reset"))
        self.assertEqual([r.target for r in self.backend.received], [b"/first"])

    def test_closesOnCloseTokenOnSecondLine(self) -> None:
        """
        C{Connection: foo} then C{Connection: close} on a second line closes too.
        """
        data, ending = exchange(
            self.lb.port,
            request("GET", "/first", [("Connection", "foo"), ("Connection", "close")])
            + request("GET", "/second"),
            timeout=3,
        )
        responses = parseResponses(data)
        self.assertEqual([r.body for r in responses], [b"b1 GET /first"])
        self.assertIn(b"close", responses[0].connectionTokens())
        self.assertIn(ending, ("eof", "reset"))
        self.assertEqual([r.target for r in self.backend.received], [b"/first"])

    def test_closeTokenIsCaseInsensitive(self) -> None:
        """
        C{Connection: Keep-Alive, CLOSE} closes after the response.
        """
        data, ending = exchange(
            self.lb.port,
            request("GET", "/first", [("Connection", "Keep-Alive, CLOSE")])
            + request("GET", "/second"),
            timeout=3,
        )
        self.assertEqual([r.body for r in parseResponses(data)], [b"b1 GET /first"])
        self.assertIn(ending, ("eof", "reset"))

    def test_keepsHTTP11ConnectionOpen(self) -> None:
        """
        An HTTP/1.1 request without C{Connection: close} leaves the client
        connection usable for another request.
        """
        client = Client(self.lb.port, timeout=3)
        self.addCleanup(client.close)
        first = client.request("/one")
        self.assertNotIn(b"close", first.connectionTokens())
        self.assertEqual(client.request("/two").body, b"b1 GET /two")

    def test_answersPipelinedRequestsInOrder(self) -> None:
        """
        Three pipelined requests, the first slow, are answered strictly in order.
        """
        data, _ = exchange(
            self.lb.port,
            request("GET", "/script/slow?s=0.4")
            + request("GET", "/second")
            + request("GET", "/third", close=True),
            timeout=5,
        )
        responses = parseResponses(data)
        self.assertEqual(
            [r.body for r in responses],
            [b"b1 GET /script/slow?s=0.4", b"b1 GET /second", b"b1 GET /third"],
        )

    def test_pipelinedHeadAndGet(self) -> None:
        """
        Pipelined HEAD and GET come back in order with a body only for GET.
        """
        client = Client(self.lb.port, timeout=3)
        self.addCleanup(client.close)
        client.send(request("HEAD", "/script/head") + request("GET", "/after"))
        head = client.readResponse(b"HEAD")
        self.assertEqual((head.status, head.body), (200, b""))
        self.assertEqual(client.readResponse().body, b"b1 GET /after")


class ClientTimeoutTests(SynchronousTestCase):
    """
    The header-completion deadline and idle timeouts cut slow clients off.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.backend = ScriptedBackend("b1")
        cls.addClassCleanup(cls.backend.close)
        cls.lb = Lbtwist(
            cls,
            simpleConfig(
                [cls.backend],
                frontend={
                    "header_timeout": 1.0,
                    "idle_timeout": 1.0,
                    "body_timeout": 1.0,
                },
                pool={"retries": 0},
            ),
        )

    def test_cutsOffSlowlorisAtHeaderDeadline(self) -> None:
        """
        A client sending one header byte every 0.3 s is cut off (408 or close)
        at the 1 s header deadline, not kept alive by its trickle.
        """
        data = request("GET", "/slowloris", [("X-Filler", "y" * 40)])
        start = time.monotonic()
        received = b""
        ended = False
        with socket.create_connection(("127.0.0.1", self.lb.port), timeout=3) as sock:
            for byte in data:
                try:
                    sock.sendall(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    ended = True
                    break
                sock.settimeout(0.3)
                try:
                    chunk = sock.recv(4096)
                except socket.timeout:
                    chunk = None
                except ConnectionResetError:
                    ended = True
                    break
                if chunk == b"":
                    ended = True
                    break
                if chunk:
                    received += chunk
                if time.monotonic() - start > 4:
                    break
        elapsed = time.monotonic() - start
        self.assertTrue(
            ended, f"connection still open after {elapsed:.1f}s, got {received!r}"
        )
        self.assertLess(elapsed, 2.5)
        if received:
            self.assertEqual(parseResponses(received)[0].status, 408)
        self.assertEqual(self.backend.requestsFor(b"/slowloris"), [])

    def test_cutsOffStalledBody(self) -> None:
        """
        A client that stops sending in the middle of a body is cut off
        (408 or close) by the body timeout, and the backend never sees a
        complete request.
        """
        start = time.monotonic()
        data, ending = exchange(
            self.lb.port,
            b"POST /stalled HTTP/1.1\r\nHost: lb.example\r\nContent-Length: 100\r\n\r\nonly ten b",
            timeout=6,
        )
        elapsed = time.monotonic() - start
        self.assertIn(ending, ("eof", "reset"))
        self.assertLess(elapsed, 4)
        if data:
            self.assertEqual(parseResponses(data)[0].status, 408)
        self.assertEqual(self.backend.requestsFor(b"/stalled"), [])

    def test_closesIdleKeepAliveConnection(self) -> None:
        """
        A keep-alive client connection idle longer than C{idle_timeout} is closed.
        """
        client = Client(self.lb.port, timeout=3)
        self.addCleanup(client.close)
        self.assertEqual(client.request("/idle").status, 200)
        start = time.monotonic()
        _, ending = client.readUntilClosed(5)
        self.assertIn(ending, ("eof", "reset"))
        self.assertLess(time.monotonic() - start, 4)
