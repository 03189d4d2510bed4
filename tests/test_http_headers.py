"""
Tests for L{lbtwist._http.headers}: the header policy of one hop.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from lbtwist._http.headers import (
    ForwardingPolicy,
    connectionTokens,
    requestHead,
    responseHeaders,
    websocketUpgrade,
)


def head(
    headers: list[tuple[bytes, bytes]],
    clientIP: str = "192.0.2.7",
    policy: ForwardingPolicy = ForwardingPolicy(),
    bodyLength: int | None = None,
    hasBody: bool = False,
    **kwargs: object,
) -> list[tuple[bytes, bytes]]:
    """
    The field lines of the head L{requestHead} builds for a GET.
    """
    raw = b"".join(
        requestHead(
            b"GET",
            b"/p",
            headers,
            connectionTokens(headers),
            clientIP,
            False,
            policy,
            bodyLength,
            hasBody,
            **kwargs,  # type: ignore[arg-type]
        )
    )
    lines = raw.split(b"\r\n")
    assert lines[0] == b"GET /p HTTP/1.1", lines[0]
    assert raw.endswith(b"\r\n\r\n")
    fields = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(b": ")
            fields.append((name, value))
    return fields


def values(fields: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [v for n, v in fields if n.lower() == name]


class ConnectionTokensTests(SynchronousTestCase):
    """
    Tests for L{connectionTokens}.
    """

    def test_everyLineCommaSeparatedCaseInsensitive(self) -> None:
        """
        Tokens of every C{Connection} line are collected, lower-cased.
        """
        tokens = connectionTokens(
            [(b"Connection", b"Foo, close"), (b"connection", b" X-Bar ,,")]
        )
        self.assertEqual(tokens, {b"foo", b"close", b"x-bar"})


class RequestHeadTests(SynchronousTestCase):
    """
    Tests for L{requestHead}.
    """

    def test_hopByHopRemoved(self) -> None:
        """
        Hop-by-hop fields and the fields C{Connection} names are removed,
        but C{Connection: Host} cannot remove C{Host}.
        """
        fields = head(
            [
                (b"Host", b"a"),
                (b"Connection", b"x-secret, host, content-length"),
                (b"X-Secret", b"1"),
                (b"Keep-Alive", b"timeout=5"),
                (b"TE", b"trailers"),
                (b"Proxy-Authorization", b"Basic x"),
                (b"Upgrade", b"websocket"),
                (b"Expect", b"100-continue"),
                (b"Accept", b"*/*"),
            ]
        )
        names = {n.lower() for n, _ in fields}
        self.assertIn(b"host", names)
        self.assertIn(b"accept", names)
        for dropped in (b"connection", b"x-secret", b"keep-alive", b"te", b"upgrade"):
            self.assertNotIn(dropped, names)
        self.assertNotIn(b"proxy-authorization", names)
        self.assertNotIn(b"expect", names)

    def test_repeatedFieldsKeepOrder(self) -> None:
        """
        Repeated fields keep all their values in order; C{Cookie} lines stay
        as sent.
        """
        fields = head(
            [(b"Host", b"a"), (b"Cookie", b"a=1"), (b"X-A", b"1"), (b"Cookie", b"b=2")]
        )
        self.assertEqual(values(fields, b"cookie"), [b"a=1", b"b=2"])

    def test_forwardingFieldsReplacedFromUntrusted(self) -> None:
        """
        An untrusted client's forwarding fields are replaced by lbtwist's.
        """
        fields = head(
            [
                (b"Host", b"a.example"),
                (b"X-Forwarded-For", b"6.6.6.6"),
                (b"X-Forwarded-Proto", b"https"),
                (b"X-Forwarded-Host", b"evil"),
                (b"Forwarded", b"for=6.6.6.6"),
            ]
        )
        self.assertEqual(values(fields, b"x-forwarded-for"), [b"192.0.2.7"])
        self.assertEqual(values(fields, b"x-forwarded-proto"), [b"http"])
        self.assertEqual(values(fields, b"x-forwarded-host"), [b"a.example"])
        self.assertEqual(values(fields, b"forwarded"), [])
        self.assertEqual(values(fields, b"via"), [b"1.1 lbtwist"])

    def test_forwardingFieldsKeptFromTrusted(self) -> None:
        """
        A trusted proxy's C{X-Forwarded-For} gets the client appended, its
        other forwarding fields are kept.
        """
        policy = ForwardingPolicy.fromConfig(["192.0.2.0/24"], False)
        fields = head(
            [
                (b"Host", b"a"),
                (b"X-Forwarded-For", b"1.1.1.1"),
                (b"X-Forwarded-For", b"2.2.2.2"),
                (b"X-Forwarded-Proto", b"https"),
            ],
            policy=policy,
        )
        self.assertEqual(
            values(fields, b"x-forwarded-for"), [b"1.1.1.1, 2.2.2.2, 192.0.2.7"]
        )
        self.assertEqual(values(fields, b"x-forwarded-proto"), [b"https"])

    def test_forwarded(self) -> None:
        """
        With C{add_forwarded}, an RFC 7239 element is added; IPv6 quoted.
        """
        policy = ForwardingPolicy.fromConfig([], True)
        fields = head([(b"Host", b"a")], clientIP="::1", policy=policy)
        self.assertEqual(
            values(fields, b"forwarded"), [b'for="[::1]";proto=http;host="a"']
        )

    def test_framing(self) -> None:
        """
        The body is framed anew: C{Content-Length} when known, chunked
        otherwise, nothing without a body; the client's framing never
        passes.
        """
        sent = [(b"Host", b"a"), (b"Content-Length", b"99"), (b"Transfer-Encoding", b"x")]
        self.assertEqual(values(head(sent, bodyLength=3, hasBody=True), b"content-length"), [b"3"])
        chunked = head(sent, bodyLength=None, hasBody=True)
        self.assertEqual(values(chunked, b"transfer-encoding"), [b"chunked"])
        self.assertEqual(values(chunked, b"content-length"), [])
        none = head(sent)
        self.assertEqual(values(none, b"transfer-encoding") + values(none, b"content-length"), [])

    def test_hostOverride(self) -> None:
        """
        A host override replaces C{Host}; C{X-Forwarded-Host} keeps the
        client's.
        """
        fields = head([(b"Host", b"a.example")], hostOverride=b"10.0.0.1:80")
        self.assertEqual(values(fields, b"host"), [b"10.0.0.1:80"])
        self.assertEqual(values(fields, b"x-forwarded-host"), [b"a.example"])

    def test_upgrade(self) -> None:
        """
        A WebSocket upgrade is passed on with C{Connection: Upgrade}.
        """
        fields = head([(b"Host", b"a")], upgrade=b"websocket")
        self.assertEqual(values(fields, b"connection"), [b"Upgrade"])
        self.assertEqual(values(fields, b"upgrade"), [b"websocket"])


class WebSocketUpgradeTests(SynchronousTestCase):
    """
    Tests for L{websocketUpgrade}: only a GET WebSocket handshake tunnels.
    """

    def upgrade(
        self,
        method: bytes = b"GET",
        version: bytes = b"HTTP/1.1",
        upgrade: bytes = b"websocket",
        connection: bytes = b"keep-alive, Upgrade",
        hasBody: bool = False,
    ) -> bytes | None:
        headers = [(b"Connection", connection), (b"Upgrade", upgrade)]
        return websocketUpgrade(
            method, version, connectionTokens(headers), headers, hasBody
        )

    def test_websocket(self) -> None:
        """
        A GET with C{Connection: upgrade} and C{Upgrade: websocket} tunnels.
        """
        self.assertEqual(self.upgrade(upgrade=b"WebSocket"), b"WebSocket")

    def test_others(self) -> None:
        """
        Other methods, protocols, versions, or a body: no tunnel.
        """
        self.assertIsNone(self.upgrade(method=b"HEAD"))
        self.assertIsNone(self.upgrade(method=b"POST"))
        self.assertIsNone(self.upgrade(upgrade=b"h2c"))
        self.assertIsNone(self.upgrade(upgrade=b"foo"))
        self.assertIsNone(self.upgrade(upgrade=b"websocket, foo"))
        self.assertIsNone(self.upgrade(version=b"HTTP/1.0"))
        self.assertIsNone(self.upgrade(connection=b"keep-alive"))
        self.assertIsNone(self.upgrade(hasBody=True))


class ResponseHeadersTests(SynchronousTestCase):
    """
    Tests for L{responseHeaders}.
    """

    def test_policy(self) -> None:
        """
        Hop-by-hop and framing fields and those C{Connection} names are
        removed; C{Set-Cookie} lines stay separate; C{Via} is added.
        """
        kept = responseHeaders(
            [
                (b"Content-Length", b"3"),
                (b"Connection", b"x-hop, close"),
                (b"X-Hop", b"1"),
                (b"Keep-Alive", b"timeout=5"),
                (b"Set-Cookie", b"a=1"),
                (b"Set-Cookie", b"b=2"),
                (b"Transfer-Encoding", b"chunked"),
            ]
        )
        self.assertEqual(
            kept, [(b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2"), (b"Via", b"1.1 lbtwist")]
        )
