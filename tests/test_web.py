"""
Tests for L{lbtwist.web}: backend choice, retries, header policy and the
response relay, in memory with a fake agent.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web._newclient import ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

from lbtwist.backend import BackendState
from lbtwist.pool import BackendPool
from lbtwist.web import PoolResource, ProxySite

from .doubles import FakeAgent, FakeResponse, connect, makeConfig


class ProxyTestsMixin:
    """
    A L{ProxySite} over a L{PoolResource} of two backends and a
    L{FakeAgent}.
    """

    def build(self, **options: Any) -> None:
        self.reactor = MemoryReactorClock()
        config = makeConfig(**options)
        self.pool = BackendPool(config.pools[0])
        self.agent = FakeAgent()
        resource = PoolResource(self.reactor, self.pool, self.agent)
        self.site = ProxySite(
            resource, config.frontends[0], config.pools[0].max_body_size, self.reactor
        )
        self.channel, self.transport = connect(self.site, self.reactor)

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    def respond(
        self, index: int, response: FakeResponse, body: bytes = b""
    ) -> FakeResponse:
        self.agent.calls[index].deferred.callback(response)
        if body:
            response.send(body)
        return response


class RetryTests(ProxyTestsMixin, SynchronousTestCase):
    """
    Which failures are retried on another backend, and the final answers.
    """

    def test_refusedConnectionRetriedForPOST(self) -> None:
        """
        A refused connection is retried on the other backend for any method.
        """
        self.build()
        self.send(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
        self.agent.calls[0].deferred.errback(ConnectionRefusedError())
        self.assertEqual(len(self.agent.calls), 2)
        self.assertNotEqual(self.agent.calls[0].uri, self.agent.calls[1].uri)
        self.assertEqual(self.agent.calls[1].body, b"abc")
        self.respond(1, FakeResponse(length=2), b"ok").finish()
        self.assertIn(b"HTTP/1.1 200 OK", self.transport.value())

    def test_sentRequestRetriedOnlyIfIdempotent(self) -> None:
        """
        A request that reached a backend which then closed is retried for
        GET but answered 502 for POST.
        """
        self.build()
        self.send(b"GET /g HTTP/1.1\r\nHost: a\r\n\r\n")
        self.agent.calls[0].deferred.errback(
            ResponseNeverReceived([Failure(ConnectionDone())])
        )
        self.assertEqual(len(self.agent.calls), 2)
        self.respond(1, FakeResponse(length=2), b"ok").finish()

        self.build()
        self.send(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
        self.agent.calls[0].deferred.errback(
            ResponseNeverReceived([Failure(ConnectionDone())])
        )
        self.assertEqual(len(self.agent.calls), 1)
        self.assertTrue(self.transport.value().startswith(b"HTTP/1.1 502 "))

    def test_exhaustedRetriesGive502(self) -> None:
        """
        When every backend refuses, the answer is 502 after one attempt each.
        """
        self.build(retries=5)
        self.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        for call in list(self.agent.calls):
            call.deferred.errback(ConnectionRefusedError())
        self.agent.calls[1].deferred.errback(ConnectionRefusedError())
        self.assertEqual(len(self.agent.calls), 2)
        self.assertTrue(self.transport.value().startswith(b"HTTP/1.1 502 "))
        self.assertIn(b"text/plain", self.transport.value())

    def test_responseTimeoutGives504(self) -> None:
        """
        A backend that does not answer within C{response_timeout} is given
        up on; when retries run out the answer is 504.
        """
        self.build(response_timeout=1.5, retries=1)
        self.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.reactor.advance(1.5)
        self.assertEqual(len(self.agent.calls), 2)
        self.reactor.advance(1.5)
        self.assertTrue(self.transport.value().startswith(b"HTTP/1.1 504 "))

    def test_noBackendAvailableGives503(self) -> None:
        """
        With every backend down the answer is 503 at once.
        """
        self.build()
        for backend in self.pool.backends:
            backend.setState(BackendState.DOWN, "test", 0)
        self.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(self.agent.calls, [])
        self.assertTrue(self.transport.value().startswith(b"HTTP/1.1 503 "))

    def test_passiveFailuresMarkBackendDown(self) -> None:
        """
        Refused connections count toward C{fall}.
        """
        self.build(retries=0, health={"check": "none", "fall": 2})
        first = self.pool.backends[0]
        for i in range(4):
            self.send(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            call = self.agent.calls[-1]
            if call.uri.startswith(b"http://127.0.0.1:9001"):
                call.deferred.errback(ConnectionRefusedError())
            else:
                self.respond(len(self.agent.calls) - 1, FakeResponse(length=0)).finish()
            self.channel, self.transport = connect(self.site, self.reactor)
        self.assertEqual(first.state, BackendState.DOWN)
        self.assertEqual(first.failures, 2)


class HeaderPolicyTests(ProxyTestsMixin, SynchronousTestCase):
    """
    What goes upstream and what comes back.
    """

    def upstream(self, head: bytes, **options: Any) -> Headers:
        self.build(**options)
        self.send(head)
        return self.agent.calls[0].headers

    def test_hopByHopRemoved(self) -> None:
        """
        Hop-by-hop fields and the fields C{Connection} names are removed,
        but C{Connection} cannot remove C{Host}.
        """
        headers = self.upstream(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Foo, Host\r\nX-Foo: 1\r\n"
            b"Keep-Alive: 5\r\nProxy-Connection: x\r\nTE: trailers\r\nUpgrade: h2c\r\n"
            b"Proxy-Authorization: secret\r\nX-Kept: 1\r\n\r\n"
        )
        for name in [
            b"connection",
            b"x-foo",
            b"keep-alive",
            b"proxy-connection",
            b"te",
            b"upgrade",
            b"proxy-authorization",
        ]:
            self.assertFalse(headers.hasHeader(name), name)
        self.assertEqual(headers.getRawHeaders(b"host"), [b"a"])
        self.assertEqual(headers.getRawHeaders(b"x-kept"), [b"1"])

    def test_repeatedFieldsKeepAllValuesInOrder(self) -> None:
        """
        Repeated fields and C{Cookie} lines arrive as sent.
        """
        headers = self.upstream(
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Dup: 1\r\nCookie: a=1\r\nX-Dup: 2\r\n"
            b"Cookie: b=2\r\n\r\n"
        )
        self.assertEqual(headers.getRawHeaders(b"x-dup"), [b"1", b"2"])
        self.assertEqual(headers.getRawHeaders(b"cookie"), [b"a=1", b"b=2"])

    def test_forwardingFields(self) -> None:
        """
        X-Forwarded-For is replaced by the client address when the client is
        not trusted; X-Forwarded-Proto, X-Forwarded-Host and Via are set.
        """
        headers = self.upstream(
            b"GET / HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-For: 6.6.6.6\r\n"
            b"X-Forwarded-Host: evil\r\n\r\n"
        )
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-for"), [b"192.0.2.7"])
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-proto"), [b"http"])
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-host"), [b"a.example"])
        self.assertEqual(headers.getRawHeaders(b"via"), [b"1.1 lbtwist"])
        self.assertFalse(headers.hasHeader(b"forwarded"))

    def test_trustedProxyKeepsForwardedFor(self) -> None:
        """
        From a trusted proxy, X-Forwarded-For is kept and extended.
        """
        headers = self.upstream(
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
            frontend={"trusted_proxies": ["192.0.2.0/24"], "add_forwarded": True},
        )
        self.assertEqual(
            headers.getRawHeaders(b"x-forwarded-for"), [b"6.6.6.6, 192.0.2.7"]
        )
        self.assertEqual(
            headers.getRawHeaders(b"forwarded"), [b'for=192.0.2.7;proto=http;host="a"']
        )

    def test_rewriteHost(self) -> None:
        """
        C{rewrite_host} sends the backend's address as C{Host}.
        """
        headers = self.upstream(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", rewrite_host=True)
        self.assertEqual(headers.getRawHeaders(b"host"), [b"127.0.0.1:9001"])

    def test_chunkedBodyReframed(self) -> None:
        """
        A chunked request body goes upstream decoded, with its length known,
        and no C{Transfer-Encoding} field.
        """
        headers = self.upstream(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
        self.assertFalse(headers.hasHeader(b"transfer-encoding"))
        self.assertEqual(self.agent.calls[0].body, b"abcde")

    def test_responseHopByHopRemovedAndSetCookieKept(self) -> None:
        """
        Hop-by-hop fields of the response are removed; C{Set-Cookie} lines
        stay separate; the client connection stays open.
        """
        self.build()
        self.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        headers = Headers(
            {b"Set-Cookie": [b"a=1", b"b=2"], b"Keep-Alive": [b"5"], b"X-Kept": [b"y"]}
        )
        self.respond(0, FakeResponse(headers=headers, length=2), b"ok").finish()
        value = self.transport.value()
        self.assertIn(b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n", value)
        self.assertNotIn(b"Keep-Alive", value)
        self.assertIn(b"X-Kept: y", value)
        self.assertIn(b"Content-Length: 2\r\n", value)
        self.assertTrue(value.endswith(b"\r\n\r\nok"))
        self.assertFalse(self.transport.disconnecting)


class RelayTests(ProxyTestsMixin, SynchronousTestCase):
    """
    Relaying response bodies.
    """

    def test_truncatedBodyAbortsClient(self) -> None:
        """
        A body cut short by the backend aborts the client connection after
        what arrived; the response is never finished cleanly.
        """
        self.build()
        self.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        response = self.respond(0, FakeResponse(length=100), b"partial")
        response.finish(Failure(ResponseFailed([Failure(ConnectionDone())])))
        self.assertTrue(self.transport.value().endswith(b"partial"))
        self.assertTrue(self.transport.disconnected)

    def test_unknownLengthBodyClosedByBackendIsComplete(self) -> None:
        """
        A body without length that ends when the backend closes is relayed
        chunked and finished.
        """
        self.build()
        self.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        response = self.respond(0, FakeResponse(), b"abc")
        response.finish(Failure(PotentialDataLoss()))
        value = self.transport.value()
        self.assertIn(b"Transfer-Encoding: chunked", value)
        self.assertTrue(value.endswith(b"3\r\nabc\r\n0\r\n\r\n"))
        self.assertFalse(self.transport.disconnecting)

    def test_slowClientPausesBackend(self) -> None:
        """
        When the client's transport is full the backend body is paused, and
        resumed when it drains.
        """
        self.build()
        self.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        response = self.respond(0, FakeResponse(length=10), b"12345")
        self.channel.pauseProducing()
        self.assertEqual(response.transport.paused, 1)
        self.channel.resumeProducing()
        self.assertEqual(response.transport.paused, 0)

    def test_clientGoneStopsUpstream(self) -> None:
        """
        A client that disconnects mid-body stops the upstream transfer and
        the backend's active count returns to zero.
        """
        self.build()
        self.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        response = self.respond(0, FakeResponse(length=10), b"12345")
        backend = self.pool.backends[0]
        self.assertEqual(backend.active, 1)
        self.channel.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(response.transport.stopped)
        response.finish(Failure(ResponseFailed([Failure(ConnectionDone())])))
        self.assertEqual(backend.active, 0)

    def test_clientGoneCancelsPendingRequest(self) -> None:
        """
        A client that disconnects before the response head cancels the
        upstream request, which is not counted as a backend failure.
        """
        self.build()
        self.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.channel.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(self.agent.calls[0].deferred.called)
        self.assertEqual(self.pool.backends[0].failures, 0)
        self.assertEqual(self.pool.backends[0].active, 0)
        self.assertEqual(len(self.agent.calls), 1)
