# -*- test-case-name: tests.test_e2e_upstream -*-
"""
End-to-end: exactly what lbtwist sends to a backend (proxy-rules.md, "What
goes upstream"), checked on the bytes a raw backend received.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.harness import (
    Lbtwist,
    ReceivedRequest,
    ScriptedBackend,
    configText,
    exchange,
    parseResponses,
    request,
    simpleConfig,
)

HOP_BY_HOP = (
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"transfer-encoding",
    b"upgrade",
    b"proxy-authorization",
    b"proxy",
)


class _UpstreamCase(SynchronousTestCase):
    """
    Helpers shared by the classes below.
    """

    backend: ScriptedBackend
    lb: Lbtwist

    def setUp(self) -> None:
        self.backend.clear()

    def forward(self, data: bytes, port: int | None = None) -> ReceivedRequest:
        """
        Send one request (with C{Connection: close}) and return what the
        backend received for it, after checking the client got a 200.
        """
        received, _ = exchange(self.lb.port if port is None else port, data, timeout=3)
        responses = parseResponses(received)
        self.assertEqual([r.status for r in responses], [200], received)
        self.assertEqual(len(self.backend.received), 1, self.backend.received)
        return self.backend.received[0]

    def assertNoHopByHop(
        self, received: ReceivedRequest, extra: tuple[bytes, ...] = ()
    ) -> None:
        """
        Assert none of the hop-by-hop fields (nor C{extra}) arrived.
        """
        names = {name.lower() for name, _ in received.headers}
        self.assertEqual(names & set(HOP_BY_HOP + extra), set(), received.head)


class UpstreamHeaderTests(_UpstreamCase):
    """
    Default frontend and pool: hop-by-hop removal, framing, repeated fields,
    forwarding headers, Host.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.backend = ScriptedBackend("b1")
        cls.addClassCleanup(cls.backend.close)
        cls.lb = Lbtwist(cls, simpleConfig([cls.backend], pool={"retries": 0}))

    def test_removesHopByHopFields(self) -> None:
        """
        C{Connection} and the fields it names, C{Keep-Alive},
        C{Proxy-Connection}, C{TE}, C{Upgrade}, C{Proxy-Authorization} and
        C{Proxy} never reach the backend; other fields do.
        """
        received = self.forward(
            request(
                "GET",
                "/hop",
                [
                    ("Connection", "X-Foo, close"),
                    ("X-Foo", "1"),
                    ("Keep-Alive", "timeout=5"),
                    ("Proxy-Connection", "keep-alive"),
                    ("TE", "trailers"),
                    ("Upgrade", "h2c"),
                    ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
                    ("Proxy", "http://evil.example"),
                    ("X-End-To-End", "kept"),
                ],
            )
        )
        self.assertNoHopByHop(received, (b"x-foo",))
        self.assertEqual(received.headerValues(b"x-end-to-end"), [b"kept"])

    def test_removesFieldsNamedOnEveryConnectionLine(self) -> None:
        """
        Fields named on a second C{Connection} line, in any case, are removed too.
        """
        received = self.forward(
            request(
                "GET",
                "/hop2",
                [
                    ("Connection", "x-one"),
                    ("Connection", "X-TWO, close"),
                    ("X-One", "1"),
                    ("x-two", "2"),
                    ("X-Three", "3"),
                ],
            )
        )
        self.assertNoHopByHop(received, (b"x-one", b"x-two"))
        self.assertEqual(received.headerValues(b"x-three"), [b"3"])

    def test_connectionCannotRemoveHostOrFraming(self) -> None:
        """
        C{Connection: Host, Content-Length} removes neither C{Host} nor the
        body's framing.
        """
        received = self.forward(
            request(
                "POST",
                "/framing",
                [("Connection", "Host, Content-Length, close")],
                b"hello",
            )
        )
        self.assertEqual(received.headerValues(b"host"), [b"lb.example"])
        self.assertEqual(received.headerValues(b"content-length"), [b"5"])
        self.assertEqual(received.body, b"hello")

    def test_reframesChunkedBodyOnce(self) -> None:
        """
        A chunked request body streams upstream re-framed once: chunked
        again (its length is unknown until it ends), its chunk extensions
        dropped, the decoded bytes exact.
        """
        received = self.forward(
            request(
                "POST",
                "/chunked",
                [("Transfer-Encoding", "chunked"), ("Connection", "close")],
                b"5\r\nhello\r\n1;name=value\r\n \r\n5\r\nworld\r\n0\r\n\r\n",
            )
        )
        self.assertEqual(received.headerValues(b"transfer-encoding"), [b"chunked"])
        self.assertEqual(received.headerValues(b"content-length"), [])
        self.assertEqual(received.body, b"hello world")
        self.assertNotIn(b"name=value", received.rawBody)

    def test_forwardsContentLengthBody(self) -> None:
        """
        A C{Content-Length} body arrives byte-exact with the same length.
        """
        body = bytes(range(256)) * 40
        received = self.forward(request("PUT", "/put", [("Connection", "close")], body))
        self.assertEqual(
            received.headerValues(b"content-length"), [str(len(body)).encode()]
        )
        self.assertEqual(received.rawBody, body)

    def test_trailersNeverActAsFraming(self) -> None:
        """
        Trailer fields never reach the backend: C{Host} and C{Authorization}
        in the trailer section are dropped, and framing fields there
        (C{Content-Length}, C{Transfer-Encoding}) make the request invalid:
        400, nothing forwarded.
        """
        received = self.forward(
            request(
                "POST",
                "/trailers",
                [("Transfer-Encoding", "chunked"), ("Connection", "close")],
                b"3\r\nabc\r\n0\r\n"
                b"Host: evil.example\r\nAuthorization: Basic ZXZpbA==\r\n\r\n",
            )
        )
        self.assertEqual(received.headerValues(b"host"), [b"lb.example"])
        self.assertEqual(received.headerValues(b"authorization"), [])
        self.assertEqual(received.body, b"abc")
        self.assertNotIn(b"evil", received.rawBody)
        before = len(self.backend.received)
        data, _ = exchange(
            self.lb.port,
            request(
                "POST",
                "/trailers-framing",
                [("Transfer-Encoding", "chunked"), ("Connection", "close")],
                b"3\r\nabc\r\n0\r\nContent-Length: 999\r\n"
                b"Transfer-Encoding: gzip\r\n\r\n",
            ),
            timeout=3,
        )
        self.assertEqual([r.status for r in parseResponses(data)], [400])
        self.assertEqual(len(self.backend.received), before)

    def test_keepsRepeatedFieldsInOrder(self) -> None:
        """
        C{X-Dup: 1} and C{X-Dup: 2} both arrive, in order (never last-one-wins).
        """
        received = self.forward(
            request(
                "GET",
                "/dup",
                [
                    ("X-Dup", "1"),
                    ("X-Other", "z"),
                    ("X-Dup", "2"),
                    ("Connection", "close"),
                ],
            )
        )
        self.assertEqual(b", ".join(received.headerValues(b"x-dup")), b"1, 2")

    def test_keepsCookieLinesAsSent(self) -> None:
        """
        Two C{Cookie} lines arrive as two lines, exactly as sent.
        """
        received = self.forward(
            request(
                "GET",
                "/cookie",
                [("Cookie", "a=1; b=2"), ("Cookie", "c=3"), ("Connection", "close")],
            )
        )
        self.assertEqual(received.headerValues(b"cookie"), [b"a=1; b=2", b"c=3"])

    def test_setsForwardedForToClientAddress(self) -> None:
        """
        C{X-Forwarded-For} is the client's address.
        """
        received = self.forward(request("GET", "/xff", close=True))
        self.assertEqual(received.headerValues(b"x-forwarded-for"), [b"127.0.0.1"])

    def test_replacesUntrustedForwardedFor(self) -> None:
        """
        A client-sent C{X-Forwarded-For} from an untrusted peer is replaced.
        """
        received = self.forward(
            request(
                "GET",
                "/xff",
                [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "7.7.7.7")],
                close=True,
            )
        )
        self.assertEqual(received.headerValues(b"x-forwarded-for"), [b"127.0.0.1"])

    def test_replacesClientForwardedHost(self) -> None:
        """
        A client-sent C{X-Forwarded-Host} is replaced by the client's C{Host}.
        """
        received = self.forward(
            request(
                "GET",
                "/xfh",
                [("X-Forwarded-Host", "evil.example")],
                host="shop.example",
                close=True,
            )
        )
        self.assertEqual(received.headerValues(b"x-forwarded-host"), [b"shop.example"])

    def test_setsForwardedProto(self) -> None:
        """
        C{X-Forwarded-Proto} is C{http}, whatever the client claimed.
        """
        received = self.forward(
            request("GET", "/xfp", [("X-Forwarded-Proto", "https")], close=True)
        )
        self.assertEqual(received.headerValues(b"x-forwarded-proto"), [b"http"])

    def test_setsForwardedHost(self) -> None:
        """
        C{X-Forwarded-Host} is the client's C{Host}.
        """
        received = self.forward(
            request("GET", "/xfh", host="shop.example:8080", close=True)
        )
        self.assertEqual(
            received.headerValues(b"x-forwarded-host"), [b"shop.example:8080"]
        )

    def test_addsVia(self) -> None:
        """
        C{Via: 1.1 lbtwist} is added.
        """
        received = self.forward(request("GET", "/via", close=True))
        self.assertEqual(received.headerValues(b"via"), [b"1.1 lbtwist"])

    def test_appendsToClientVia(self) -> None:
        """
        An existing C{Via} is kept and C{1.1 lbtwist} comes last.
        """
        received = self.forward(
            request("GET", "/via", [("Via", "1.0 fred")], close=True)
        )
        self.assertEqual(
            b", ".join(received.headerValues(b"via")), b"1.0 fred, 1.1 lbtwist"
        )

    def test_passesHostUnchanged(self) -> None:
        """
        C{Host} reaches the backend exactly as the client sent it.
        """
        received = self.forward(
            request("GET", "/host", host="Shop.Example:8443", close=True)
        )
        self.assertEqual(received.headerValues(b"host"), [b"Shop.Example:8443"])

    def test_sendsOriginFormTarget(self) -> None:
        """
        The target with its query reaches the backend unchanged, in origin form.
        """
        received = self.forward(request("GET", "/a/%2e%2e/b?x=1&y=%20", close=True))
        self.assertEqual(
            (received.method, received.target, received.version),
            (b"GET", b"/a/%2e%2e/b?x=1&y=%20", b"HTTP/1.1"),
        )


class TrustedUpstreamTests(_UpstreamCase):
    """
    A frontend with C{trusted_proxies} and C{add_forwarded} before a pool with
    C{rewrite_host}.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.backend = ScriptedBackend("b1")
        cls.addClassCleanup(cls.backend.close)
        cls.lb = Lbtwist(
            cls,
            configText(
                [
                    {
                        "name": "trusted",
                        "listen": "tcp:0:interface=127.0.0.1",
                        "pool": "rewrite",
                        "trusted_proxies": ["127.0.0.1"],
                        "add_forwarded": True,
                    }
                ],
                [
                    {
                        "name": "rewrite",
                        "retries": 0,
                        "rewrite_host": True,
                        "health": {"check": "none"},
                        "backends": [cls.backend.url],
                    }
                ],
            ),
        )

    def test_appendsToTrustedForwardedFor(self) -> None:
        """
        From a trusted proxy, the client's C{X-Forwarded-For} is kept and the
        peer address appended.
        """
        received = self.forward(
            request("GET", "/xff", [("X-Forwarded-For", "6.6.6.6")], close=True)
        )
        self.assertEqual(
            b", ".join(received.headerValues(b"x-forwarded-for")), b"6.6.6.6, 127.0.0.1"
        )

    def test_appendsToSeveralTrustedForwardedForLines(self) -> None:
        """
        Several C{X-Forwarded-For} lines from a trusted proxy are kept in order
        and the peer address comes last.
        """
        received = self.forward(
            request(
                "GET",
                "/xff",
                [
                    ("X-Forwarded-For", "1.1.1.1"),
                    ("X-Forwarded-For", "2.2.2.2, 3.3.3.3"),
                ],
                close=True,
            )
        )
        self.assertEqual(
            b", ".join(received.headerValues(b"x-forwarded-for")),
            b"1.1.1.1, 2.2.2.2, 3.3.3.3, 127.0.0.1",
        )

    def test_addsForwarded(self) -> None:
        """
        With C{add_forwarded}, C{Forwarded: for=127.0.0.1;host=...;proto=http}
        is sent.
        """
        received = self.forward(request("GET", "/fwd", host="shop.example", close=True))
        [value] = received.headerValues(b"forwarded")
        elements = value.split(b",")
        last = dict(
            (
                pair.split(b"=", 1)[0].strip().lower(),
                pair.split(b"=", 1)[1].strip().strip(b'"'),
            )
            for pair in elements[-1].split(b";")
        )
        self.assertEqual(
            last, {b"for": b"127.0.0.1", b"host": b"shop.example", b"proto": b"http"}
        )

    def test_rewritesHostToBackend(self) -> None:
        """
        With C{rewrite_host}, C{Host} is the backend's address and the
        client's C{Host} goes to C{X-Forwarded-Host}.
        """
        received = self.forward(
            request("GET", "/host", host="shop.example", close=True)
        )
        self.assertEqual(
            received.headerValues(b"host"), [self.backend.address.encode()]
        )
        self.assertEqual(received.headerValues(b"x-forwarded-host"), [b"shop.example"])


class UntrustedForwardedTests(_UpstreamCase):
    """
    A frontend with C{add_forwarded} and no trusted proxies.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.backend = ScriptedBackend("b1")
        cls.addClassCleanup(cls.backend.close)
        cls.lb = Lbtwist(
            cls,
            simpleConfig(
                [cls.backend], frontend={"add_forwarded": True}, pool={"retries": 0}
            ),
        )

    def test_replacesUntrustedForwarded(self) -> None:
        """
        A client-sent C{Forwarded} from an untrusted peer is not passed on as
        if lbtwist had vouched for it: only lbtwist's own element remains.
        """
        received = self.forward(
            request(
                "GET",
                "/fwd",
                [("Forwarded", "for=6.6.6.6;proto=https")],
                host="shop.example",
                close=True,
            )
        )
        [value] = received.headerValues(b"forwarded")
        self.assertNotIn(b"6.6.6.6", value)
        self.assertIn(b"for=127.0.0.1", value.replace(b'"', b""))
