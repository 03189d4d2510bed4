# -*- test-case-name: tests.test_harness -*-
"""
Tests for the end-to-end harness itself, against L{ScriptedBackend} directly
(no lbtwist involved).
"""

import hashlib
import socket
import tomllib

from twisted.trial.unittest import SynchronousTestCase

from tests.harness import (
    Client,
    ScriptedBackend,
    closedPort,
    exchange,
    parseResponses,
    request,
    simpleConfig,
)


class ScriptedBackendTests(SynchronousTestCase):
    """
    L{ScriptedBackend} records requests and answers scripts as documented.
    """

    def setUp(self) -> None:
        self.backend = ScriptedBackend("b1")
        self.addCleanup(self.backend.close)

    def get(self, target: str, method: str = "GET") -> tuple[list, str]:
        data, ending = exchange(
            self.backend.port, request(method, target, close=True), timeout=3
        )
        return parseResponses(data, [method.encode()]), ending

    def test_defaultAnswerNamesLabelMethodAndTarget(self) -> None:
        """
        A path without a script gets 200 with C{"<label> <method> <target>"}.
        """
        [response], ending = self.get("/hello?x=1")
        self.assertEqual((response.status, response.body), (200, b"b1 GET /hello?x=1"))
        self.assertEqual(ending, "eof")

    def test_headGetsNoBody(self) -> None:
        """
        The default answer to HEAD has the headers but no body.
        """
        [response], _ = self.get("/x", "HEAD")
        self.assertEqual((response.status, response.body), (200, b""))
        self.assertEqual(response.header(b"content-length"), b"10")

    def test_keepAliveRequestsShareOneConnection(self) -> None:
        """
        Several requests on one client connection are answered in order and
        counted as one connection.
        """
        client = Client(self.backend.port)
        self.addCleanup(client.close)
        self.assertEqual(client.request("/a").body, b"b1 GET /a")
        self.assertEqual(
            client.request("/b", method="POST", body=b"xyz").body, b"b1 POST /b"
        )
        self.assertEqual(self.backend.connections, 1)
        self.assertEqual([r.connection for r in self.backend.received], [1, 1])
        self.assertEqual(self.backend.received[1].body, b"xyz")

    def test_echoReturnsRawHeadAndBody(self) -> None:
        """
        C{echo} answers with the exact bytes received, chunked framing included.
        """
        raw = request(
            "POST",
            "/script/echo",
            [("Transfer-Encoding", "chunked")],
            b"3\r\nabc\r\n0\r\n\r\n",
            close=True,
        )
        [response] = parseResponses(exchange(self.backend.port, raw, timeout=3)[0])
        self.assertEqual(response.body, raw)
        self.assertEqual(self.backend.received[0].body, b"abc")
        self.assertEqual(
            self.backend.received[0].headerValues(b"host"), [b"lb.example"]
        )

    def test_sha256(self) -> None:
        """
        C{sha256} answers with the body's hash and length.
        """
        body = b"x" * 100000
        data, _ = exchange(
            self.backend.port,
            request("POST", "/script/sha256", body=body, close=True),
            timeout=3,
        )
        [response] = parseResponses(data)
        self.assertEqual(
            response.body, hashlib.sha256(body).hexdigest().encode() + b" 100000"
        )

    def test_chunked(self) -> None:
        """
        C{chunked} is a complete chunked response.
        """
        [response], _ = self.get("/script/chunked")
        self.assertEqual(
            (response.body, response.complete, response.chunked),
            (b"hello world", True, True),
        )

    def test_truncatedContentLength(self) -> None:
        """
        C{truncated-cl} parses as an incomplete response.
        """
        [response], ending = self.get("/script/truncated-cl")
        self.assertEqual(
            (response.body, response.complete, ending), (b"0123456789", False, "eof")
        )

    def test_truncatedChunked(self) -> None:
        """
        C{truncated-chunked} parses as an incomplete response.
        """
        [response], ending = self.get("/script/truncated-chunked")
        self.assertEqual((response.body, response.complete), (b"hello world", False))

    def test_brokenFramingIsRejectedByTheParser(self) -> None:
        """
        C{double-cl} and C{garbage-status} are not valid responses.
        """
        for name in ("double-cl", "garbage-status"):
            data, _ = exchange(
                self.backend.port,
                request("GET", "/script/" + name, close=True),
                timeout=3,
            )
            self.assertRaises(ValueError, parseResponses, data)

    def test_clAndTe(self) -> None:
        """
        C{cl-and-te} sends both framing headers.
        """
        data, _ = exchange(
            self.backend.port,
            request("GET", "/script/cl-and-te", close=True),
            timeout=3,
        )
        self.assertIn(b"Content-Length: 5\r\nTransfer-Encoding: chunked", data)

    def test_strayBytes(self) -> None:
        """
        C{stray-bytes} writes a second, unrequested response.
        """
        [first, second], _ = self.get("/script/stray-bytes")
        self.assertEqual((first.body, second.body), (b"hello", b"stray"))

    def test_noBodyResponses(self) -> None:
        """
        HEAD, 204 and 304 responses carry no body.
        """
        data, _ = exchange(
            self.backend.port,
            request("HEAD", "/script/head")
            + request("GET", "/script/204")
            + request("GET", "/script/304")
            + request("GET", "/script/head", close=True),
            timeout=3,
        )
        responses = parseResponses(data, [b"HEAD", b"GET", b"GET", b"GET"])
        self.assertEqual([r.status for r in responses], [200, 204, 304, 200])
        self.assertEqual([len(r.body) for r in responses], [0, 0, 0, 50])

    def test_hopByHopAndSetCookie(self) -> None:
        """
        C{hop-by-hop} and C{set-cookie} send the documented fields.
        """
        [response], _ = self.get("/script/hop-by-hop")
        self.assertEqual(response.header(b"x-private"), b"secret")
        [response], _ = self.get("/script/set-cookie")
        self.assertEqual(len(response.headerValues(b"set-cookie")), 2)

    def test_closeAndReset(self) -> None:
        """
        C{close} closes without answering; C{reset} resets the connection.
        """
        self.assertEqual(
            exchange(self.backend.port, request("GET", "/script/close"), timeout=3),
            (b"", "eof"),
        )
        self.assertEqual(
            exchange(self.backend.port, request("GET", "/script/reset"), timeout=3),
            (b"", "reset"),
        )

    def test_noLengthAndBig(self) -> None:
        """
        C{no-length} is close-delimited; C{big} sends N MiB.
        """
        [response], _ = self.get("/script/no-length")
        self.assertEqual(response.body, b"close-delimited body")
        [response], _ = self.get("/script/big?mb=2")
        self.assertEqual(len(response.body), 2 * 1024 * 1024)

    def test_slow(self) -> None:
        """
        C{slow} answers after the delay.
        """
        [response], _ = self.get("/script/slow?s=0.2")
        self.assertEqual(response.status, 200)

    def test_stopAndRestartOnSamePort(self) -> None:
        """
        A stopped backend refuses connections and drops open ones; a restart
        uses the same port.
        """
        client = Client(self.backend.port)
        self.addCleanup(client.close)
        client.request("/a")
        port = self.backend.port
        self.backend.stop()
        self.assertEqual(client.readUntilClosed(2)[1], "eof")
        self.assertRaises(
            ConnectionRefusedError, socket.create_connection, ("127.0.0.1", port)
        )
        self.backend.start()
        self.assertEqual(self.backend.port, port)
        [response], _ = self.get("/again")
        self.assertEqual(response.status, 200)

    def test_forcedBehaviour(self) -> None:
        """
        A backend built with a behaviour uses it for every path but /healthz.
        """
        backend = ScriptedBackend("bad", behaviour="reset")
        self.addCleanup(backend.close)
        self.assertEqual(
            exchange(backend.port, request("GET", "/x"), timeout=3)[1], "reset"
        )
        data, _ = exchange(
            backend.port, request("GET", "/healthz", close=True), timeout=3
        )
        self.assertEqual(parseResponses(data)[0].status, 200)


class HelpersTests(SynchronousTestCase):
    """
    The small helpers behave.
    """

    def test_closedPortRefuses(self) -> None:
        """
        Nothing listens on L{closedPort}.
        """
        self.assertRaises(
            ConnectionRefusedError,
            socket.create_connection,
            ("127.0.0.1", closedPort()),
        )

    def test_simpleConfigIsValidToml(self) -> None:
        """
        L{simpleConfig} produces the documented TOML layout.
        """
        document = tomllib.loads(
            simpleConfig(
                [9001, "http://127.0.0.1:9002"],
                {"trusted_proxies": ["127.0.0.1"]},
                {"retries": 1},
                {"check": "tcp", "interval": 0.2},
            )
        )
        self.assertEqual(document["frontend"][0]["trusted_proxies"], ["127.0.0.1"])
        self.assertEqual(document["pool"][0]["health"]["interval"], 0.2)
        self.assertEqual(
            [b["url"] for b in document["pool"][0]["backend"]],
            ["http://127.0.0.1:9001", "http://127.0.0.1:9002"],
        )
