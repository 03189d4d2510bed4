# -*- test-case-name: tests.test_e2e_responses -*-
"""
End-to-end: what lbtwist sends back to clients (proxy-rules.md, "What comes
back"), with raw, often broken, backend responses.
"""

from __future__ import annotations

import time

from twisted.trial.unittest import SynchronousTestCase

from tests.harness import (
    Client,
    Lbtwist,
    Response,
    ScriptedBackend,
    exchange,
    parseResponse,
    parseResponses,
    request,
    simpleConfig,
)


class ResponseTests(SynchronousTestCase):
    """
    One backend, no retries: each test asks it for one canned response.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.backend = ScriptedBackend("b1")
        cls.addClassCleanup(cls.backend.close)
        cls.lb = Lbtwist(
            cls, simpleConfig([cls.backend], pool={"retries": 0, "max_body_size": 1000})
        )

    def setUp(self) -> None:
        self.backend.clear()

    def get(
        self, target: str, method: str = "GET", timeout: float = 3.0
    ) -> tuple[Response, str]:
        """
        Send one request with C{Connection: close}; return the one response
        and how the connection ended.
        """
        data, ending = exchange(
            self.lb.port, request(method, target, close=True), timeout=timeout
        )
        response, rest = parseResponse(data, method.encode())
        self.assertEqual(rest, b"", "more than one response")
        return response, ending

    def assertNewBackendConnection(self, scriptTarget: bytes) -> None:
        """
        Assert that a fresh request after C{scriptTarget} works and reached the
        backend on another connection than C{scriptTarget} did.
        """
        response, _ = self.get("/after")
        self.assertEqual((response.status, response.body), (200, b"b1 GET /after"))
        [broken] = self.backend.requestsFor(scriptTarget)
        [after] = self.backend.requestsFor(b"/after")
        self.assertNotEqual(
            broken.connection, after.connection, "broken backend connection was reused"
        )

    def test_removesHopByHopFieldsFromResponse(self) -> None:
        """
        C{Connection} and what it names, C{Keep-Alive}, C{Upgrade} and
        C{Proxy-Connection} from the backend are removed; C{X-Kept} stays.
        """
        client = Client(self.lb.port, timeout=3)
        self.addCleanup(client.close)
        response = client.request("/script/hop-by-hop")
        self.assertEqual((response.status, response.body), (200, b"hop"))
        names = {name.lower() for name, _ in response.headers}
        for name in (b"x-private", b"keep-alive", b"upgrade", b"proxy-connection"):
            self.assertNotIn(name, names)
        self.assertEqual(response.headerValues(b"x-kept"), [b"yes"])

    def test_clientPersistenceIsLbtwistsDecision(self) -> None:
        """
        A backend's C{Connection: close} does not close the client's
        keep-alive connection.
        """
        client = Client(self.lb.port, timeout=3)
        self.addCleanup(client.close)
        response = client.request("/script/hop-by-hop")
        self.assertNotIn(b"close", response.connectionTokens())
        self.assertEqual(client.request("/next").body, b"b1 GET /next")

    def test_keepsSetCookieLinesSeparate(self) -> None:
        """
        Two C{Set-Cookie} lines (one with a comma in its date) are never joined.
        """
        response, _ = self.get("/script/set-cookie")
        self.assertEqual(
            response.headerValues(b"set-cookie"),
            [b"a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Path=/", b"b=2; HttpOnly"],
        )

    def test_forwardsChunkedResponse(self) -> None:
        """
        A chunked backend response arrives complete and intact.
        """
        response, _ = self.get("/script/chunked")
        self.assertEqual(
            (response.status, response.body, response.complete),
            (200, b"hello world", True),
        )

    def test_forwardsCloseDelimitedResponse(self) -> None:
        """
        A backend response without a length (ended by close) arrives whole and
        correctly framed to the client.
        """
        client = Client(self.lb.port, timeout=3)
        self.addCleanup(client.close)
        response = client.request("/script/no-length")
        self.assertEqual(
            (response.status, response.body, response.complete),
            (200, b"close-delimited body", True),
        )

    def test_rejectsResponseWithContentLengthAndTransferEncoding(self) -> None:
        """
        A response with both C{Content-Length} and C{Transfer-Encoding} gives
        502 and that backend connection is not reused.
        """
        response, _ = self.get("/script/cl-and-te")
        self.assertEqual(response.status, 502)
        self.assertNewBackendConnection(b"/script/cl-and-te")

    def test_rejectsResponseWithDifferingContentLengths(self) -> None:
        """
        A response with two differing C{Content-Length}s gives 502 and that
        backend connection is not reused.
        """
        response, _ = self.get("/script/double-cl")
        self.assertEqual(response.status, 502)
        self.assertNewBackendConnection(b"/script/double-cl")

    def test_rejectsGarbageStatusLine(self) -> None:
        """
        A garbage status line gives 502 and that backend connection is not reused.
        """
        response, _ = self.get("/script/garbage-status")
        self.assertEqual(response.status, 502)
        self.assertNewBackendConnection(b"/script/garbage-status")

    def test_forwardsNoBodyForHead(self) -> None:
        """
        A HEAD response has no body and the next request on the same client
        connection is answered correctly.
        """
        client = Client(self.lb.port, timeout=3)
        self.addCleanup(client.close)
        client.send(request("HEAD", "/script/head") + request("GET", "/after-head"))
        head = client.readResponse(b"HEAD")
        self.assertEqual((head.status, head.body), (200, b""))
        self.assertEqual(client.readResponse().body, b"b1 GET /after-head")

    def test_forwardsNoBodyFor204(self) -> None:
        """
        A 204 response has no body and the client connection stays usable.
        """
        client = Client(self.lb.port, timeout=3)
        self.addCleanup(client.close)
        client.send(request("GET", "/script/204") + request("GET", "/after-204"))
        response = client.readResponse()
        self.assertEqual(response.status, 204)
        self.assertEqual(response.headerValues(b"transfer-encoding"), [])
        self.assertEqual(client.readResponse().body, b"b1 GET /after-204")

    def test_forwardsNoBodyFor304(self) -> None:
        """
        A 304 response has no body and the client connection stays usable.
        """
        client = Client(self.lb.port, timeout=3)
        self.addCleanup(client.close)
        client.send(request("GET", "/script/304") + request("GET", "/after-304"))
        response = client.readResponse()
        self.assertEqual(response.status, 304)
        self.assertEqual(response.headerValues(b"transfer-encoding"), [])
        self.assertEqual(client.readResponse().body, b"b1 GET /after-304")

    def test_discardsStrayBytesAfterResponse(self) -> None:
        """
        Bytes after a complete response are not forwarded and that backend
        connection is not reused for the next request.
        """
        data, _ = exchange(
            self.lb.port, request("GET", "/script/stray-bytes", close=True), timeout=3
        )
        responses = parseResponses(data)
        self.assertEqual([(r.status, r.body) for r in responses], [(200, b"hello")])
        time.sleep(0.1)
        self.assertNewBackendConnection(b"/script/stray-bytes")

    def test_strayBytesNeverReachAKeepAliveClient(self) -> None:
        """
        On a keep-alive client connection, the request after one answered with
        stray bytes gets its own answer, not the stray response.
        """
        client = Client(self.lb.port, timeout=3)
        self.addCleanup(client.close)
        self.assertEqual(client.request("/script/stray-bytes").body, b"hello")
        time.sleep(0.1)
        self.assertEqual(client.request("/after-stray").body, b"b1 GET /after-stray")

    def test_abortsClientOnTruncatedContentLength(self) -> None:
        """
        A backend that sends 10 of 100 announced bytes and closes: the client
        gets the 10 bytes and then the connection ends (no clean finish, no
        reuse).
        """
        client = Client(self.lb.port, timeout=3)
        self.addCleanup(client.close)
        client.send(request("GET", "/script/truncated-cl"))
        rest, ending = client.readUntilClosed(3)
        self.assertIn(
            ending, ("eof", "reset"), f"client connection left open: {rest!r}"
        )
        response, extra = parseResponse(rest)
        self.assertEqual(response.status, 200)
        self.assertFalse(
            response.complete, f"truncated response looks complete: {rest!r}"
        )
        self.assertEqual(response.body, b"0123456789")
        self.assertEqual(extra, b"")

    def test_abortsClientOnTruncatedChunked(self) -> None:
        """
        A chunked backend response without its last chunk: the client gets what
        arrived and then the connection ends without a last chunk.
        """
        client = Client(self.lb.port, timeout=3)
        self.addCleanup(client.close)
        client.send(request("GET", "/script/truncated-chunked"))
        rest, ending = client.readUntilClosed(3)
        self.assertIn(
            ending, ("eof", "reset"), f"client connection left open: {rest!r}"
        )
        response, extra = parseResponse(rest)
        self.assertEqual(response.status, 200)
        self.assertFalse(
            response.complete, f"truncated response looks complete: {rest!r}"
        )
        self.assertEqual(response.body, b"hello world")

    def test_truncatedResponseDoesNotAnswerPipelinedRequest(self) -> None:
        """
        After a truncated response, a pipelined request on the same client
        connection is not answered (the connection is not reused).
        """
        client = Client(self.lb.port, timeout=3)
        self.addCleanup(client.close)
        client.send(
            request("GET", "/script/truncated-cl") + request("GET", "/pipelined")
        )
        rest, ending = client.readUntilClosed(3)
        self.assertIn(ending, ("eof", "reset"))
        response, extra = parseResponse(rest)
        self.assertFalse(response.complete)
        self.assertEqual(extra, b"")

    def test_backendErrorStatusPassesThrough(self) -> None:
        """
        A backend's own 500 is forwarded as is (it is a response, not a failure).
        """
        response, _ = self.get("/script/status?code=500")
        self.assertEqual((response.status, response.body), (500, b"status 500 from b1"))


class ErrorPageTests(SynchronousTestCase):
    """
    lbtwist's own error pages are short plain text that never echo request data.
    """

    SCRIPT = b"<script>alert(1)</script>"

    @classmethod
    def setUpClass(cls) -> None:
        cls.backend = ScriptedBackend("b1")
        cls.addClassCleanup(cls.backend.close)
        cls.lb = Lbtwist(
            cls, simpleConfig([cls.backend], pool={"retries": 0, "max_body_size": 1000})
        )

    def assertPlainErrorPage(self, data: bytes, status: int) -> None:
        """
        Send C{data}; assert a short C{text/plain} C{status} page without the
        script.
        """
        received, _ = exchange(self.lb.port, data, timeout=3)
        response, _ = parseResponse(received)
        self.assertEqual(response.status, status, received)
        self.assertTrue(
            response.header(b"content-type").startswith(b"text/plain"), response.headers
        )
        self.assertLess(len(response.body), 512)
        self.assertNotIn(b"<script", received.lower())
        self.assertNotIn(b"alert", received)

    def test_400DoesNotEchoHost(self) -> None:
        """
        The 400 for an invalid C{Host} does not echo it.
        """
        self.assertPlainErrorPage(request("GET", "/x", host=self.SCRIPT), 400)

    def test_400DoesNotEchoTarget(self) -> None:
        """
        The 400 for a bad target does not echo it.
        """
        self.assertPlainErrorPage(
            b"GET /" + self.SCRIPT + b"\x01 HTTP/1.1\r\nHost: lb.example\r\n\r\n", 400
        )

    def test_413DoesNotEchoTarget(self) -> None:
        """
        The 413 for a large body does not echo the target.
        """
        self.assertPlainErrorPage(
            b"POST /?q="
            + self.SCRIPT
            + b" HTTP/1.1\r\nHost: lb.example\r\nContent-Length: 5000\r\n\r\n",
            413,
        )

    def test_414DoesNotEchoTarget(self) -> None:
        """
        The 414 for a long target does not echo it.
        """
        self.assertPlainErrorPage(request("GET", b"/?q=" + self.SCRIPT * 400), 414)

    def test_431DoesNotEchoHeaders(self) -> None:
        """
        The 431 for large headers does not echo them.
        """
        self.assertPlainErrorPage(
            request("GET", "/", [(f"X-{i}", self.SCRIPT * 4) for i in range(200)]), 431
        )

    def test_502DoesNotEchoTarget(self) -> None:
        """
        The 502 for a backend that closes without answering does not echo the
        target.
        """
        self.assertPlainErrorPage(
            request("GET", b"/script/close?q=" + self.SCRIPT, close=True), 502
        )
