# -*- test-case-name: tests.test_ratelimit -*-
"""
Tests for L{lbtwist.ratelimit}, the C{[frontend.rate_limit]} settings, the
client address behind trusted proxies
(L{lbtwist._http.headers.ForwardingPolicy.clientIP}), and the 429 an
L{lbtwist.frontend.HTTPFrontend} answers, in memory.
"""

from __future__ import annotations

from typing import Any

from attrs import evolve, frozen
from twisted.internet.address import IPv4Address
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from lbtwist._http.headers import ForwardingPolicy
from lbtwist.accesslog import AccessRecord, formatCombined, formatJSON, parseFormat
from lbtwist.config import ConfigError, RateLimitConfig, parseConfig
from lbtwist.ratelimit import RateLimit, Refusal, TokenBuckets, retryAfter

from .doubles import makeConfig
from .test_web import GET, OK, ProxyMixin, parseResponse, post, values


class TokenBucketsTests(SynchronousTestCase):
    """
    L{TokenBuckets}: a token bucket per key, with the time passed in.
    """

    def test_burstThenRefused(self) -> None:
        """
        A new key may make C{burst} requests at once; the next is refused
        with the seconds until one token is back.
        """
        buckets = TokenBuckets(rate=5.0, burst=2, maxKeys=10)
        self.assertEqual(buckets.take("a", 100.0), 0.0)
        self.assertEqual(buckets.take("a", 100.0), 0.0)
        self.assertAlmostEqual(buckets.take("a", 100.0), 0.2)

    def test_refill(self) -> None:
        """
        Tokens come back at C{rate} per second: after 0.1 s at 5 per second
        the wait is halved, after 0.2 s one request passes, never more than
        C{burst} after a long pause.
        """
        buckets = TokenBuckets(rate=5.0, burst=2, maxKeys=10)
        buckets.take("a", 0.0)
        buckets.take("a", 0.0)
        self.assertAlmostEqual(buckets.take("a", 0.1), 0.1)
        self.assertEqual(buckets.take("a", 0.2), 0.0)
        self.assertGreater(buckets.take("a", 0.2), 0.0)
        # A long pause fills the bucket to burst, not beyond.
        self.assertEqual(buckets.take("a", 1000.0), 0.0)
        self.assertEqual(buckets.take("a", 1000.0), 0.0)
        self.assertGreater(buckets.take("a", 1000.0), 0.0)

    def test_refusedTakesNothing(self) -> None:
        """
        A refused request does not use up a token: a client retrying too
        early is not pushed further back.
        """
        buckets = TokenBuckets(rate=1.0, burst=1, maxKeys=10)
        buckets.take("a", 0.0)
        for now in (0.1, 0.2, 0.5, 0.9):
            self.assertAlmostEqual(buckets.take("a", now), 1.0 - now)
        self.assertEqual(buckets.take("a", 1.0), 0.0)

    def test_keysAreSeparate(self) -> None:
        """
        Each key has its own bucket.
        """
        buckets = TokenBuckets(rate=1.0, burst=1, maxKeys=10)
        self.assertEqual(buckets.take("a", 0.0), 0.0)
        self.assertGreater(buckets.take("a", 0.0), 0.0)
        self.assertEqual(buckets.take("b", 0.0), 0.0)
        self.assertEqual(buckets.take(b"a", 0.0), 0.0)

    def test_clockBackwards(self) -> None:
        """
        A clock that steps back adds no tokens and takes none away.
        """
        buckets = TokenBuckets(rate=1.0, burst=1, maxKeys=10)
        buckets.take("a", 100.0)
        self.assertAlmostEqual(buckets.take("a", 50.0), 1.0)
        self.assertEqual(buckets.take("a", 51.0), 0.0)

    def test_idleKeysForgotten(self) -> None:
        """
        A key not seen for C{burst / rate} seconds (its bucket is full
        again) is forgotten by later requests, at most two per request.
        """
        buckets = TokenBuckets(rate=2.0, burst=4, maxKeys=100)
        for key in "abcde":
            buckets.take(key, 0.0)
        self.assertEqual(len(buckets), 5)
        buckets.take("a", 1.9)
        self.assertEqual(len(buckets), 5)
        # 2 s after b..e were seen; a was seen at 1.9.
        buckets.take("x", 2.0)
        self.assertEqual(len(buckets), 4)  # b and c forgotten, x added
        buckets.take("x", 2.0)
        self.assertEqual(len(buckets), 2)  # d and e forgotten
        buckets.take("x", 2.0)
        self.assertEqual(len(buckets), 2)  # a is not idle long enough

    def test_forgettingChangesNothing(self) -> None:
        """
        A forgotten key comes back with a full bucket, as it would have had.
        """
        buckets = TokenBuckets(rate=1.0, burst=2, maxKeys=100)
        buckets.take("a", 0.0)
        buckets.take("a", 0.0)
        buckets.take("b", 2.0)
        buckets.take("b", 2.0)
        self.assertEqual(len(buckets), 1)
        self.assertEqual(buckets.take("a", 2.0), 0.0)
        self.assertEqual(buckets.take("a", 2.0), 0.0)
        self.assertGreater(buckets.take("a", 2.0), 0.0)

    def test_maxKeysEvictsLeastRecentlyUsed(self) -> None:
        """
        With C{maxKeys} keys kept, a new key makes the least recently used
        one be forgotten; it then starts again with a full bucket.
        """
        buckets = TokenBuckets(rate=0.001, burst=1, maxKeys=3)
        for key in "abc":
            buckets.take(key, 0.0)
        buckets.take("a", 1.0)  # refused, but a is now the most recent
        buckets.take("d", 1.0)
        self.assertEqual(len(buckets), 3)
        self.assertEqual(buckets.evictions, 1)
        self.assertGreater(buckets.take("a", 1.0), 0.0)
        self.assertGreater(buckets.take("c", 1.0), 0.0)
        self.assertEqual(buckets.take("b", 1.0), 0.0)  # b had been forgotten
        self.assertEqual(len(buckets), 3)

    def test_onFullOnce(self) -> None:
        """
        C{onFull} is called when the first key is evicted, and only then.
        """
        calls: list[None] = []
        buckets = TokenBuckets(1.0, 1, 2, lambda: calls.append(None))
        buckets.take("a", 0.0)
        buckets.take("b", 0.0)
        self.assertEqual(calls, [])
        for key in "cdef":
            buckets.take(key, 0.0)
        self.assertEqual((len(calls), buckets.evictions), (1, 4))

    def test_retryAfter(self) -> None:
        """
        C{Retry-After} is the wait in whole seconds, rounded up, at least 1.
        """
        self.assertEqual(
            [retryAfter(w) for w in (0.001, 0.2, 1.0, 1.01, 2.5, 10.0)],
            [1, 1, 1, 2, 3, 10],
        )


@frozen
class FakeRequest:
    """
    What a rate limit key is read from.
    """

    clientAddress: Any
    headers: list[tuple[bytes, bytes]]
    target: bytes = b"/"


def peer(host: str) -> IPv4Address:
    """
    @return: A client address.
    """
    return IPv4Address("TCP", host, 40000)


class ClientIPTests(SynchronousTestCase):
    """
    L{ForwardingPolicy.clientIP}: the client's address behind trusted
    proxies.
    """

    policy = ForwardingPolicy.fromConfig(["10.0.0.0/8", "2001:db8::/32"], False)

    def test_untrustedPeer(self) -> None:
        """
        From a peer that is not trusted, C{X-Forwarded-For} is ignored.
        """
        headers = [(b"X-Forwarded-For", b"198.51.100.9")]
        self.assertEqual(self.policy.clientIP("192.0.2.7", headers), "192.0.2.7")
        self.assertEqual(
            ForwardingPolicy().clientIP("10.0.0.1", headers), "10.0.0.1"
        )

    def test_lastUntrustedAddress(self) -> None:
        """
        From a trusted peer, the client is the last address of
        C{X-Forwarded-For} that is not trusted: what the client itself wrote
        before it does not count.
        """
        headers = [(b"X-Forwarded-For", b"203.0.113.66, 192.0.2.7, 10.1.1.1")]
        self.assertEqual(self.policy.clientIP("10.0.0.1", headers), "192.0.2.7")

    def test_severalLines(self) -> None:
        """
        Several C{X-Forwarded-For} lines are one list, in order.
        """
        headers = [
            (b"x-forwarded-for", b"203.0.113.66"),
            (b"Host", b"a.example"),
            (b"X-Forwarded-For", b"192.0.2.7 ,10.2.2.2"),
        ]
        self.assertEqual(self.policy.clientIP("10.0.0.1", headers), "192.0.2.7")

    def test_allTrusted(self) -> None:
        """
        If every address is trusted, the first one is the client.
        """
        headers = [(b"X-Forwarded-For", b"10.9.9.9, 10.1.1.1")]
        self.assertEqual(self.policy.clientIP("10.0.0.1", headers), "10.9.9.9")

    def test_noHeader(self) -> None:
        """
        A trusted peer without C{X-Forwarded-For} is the client.
        """
        self.assertEqual(self.policy.clientIP("10.0.0.1", []), "10.0.0.1")

    def test_notAnAddress(self) -> None:
        """
        An entry that is not an IP address ends the walk at the proxy that
        sent it.
        """
        headers = [(b"X-Forwarded-For", b"192.0.2.7, unknown, 10.1.1.1")]
        self.assertEqual(self.policy.clientIP("10.0.0.1", headers), "10.1.1.1")
        headers = [(b"X-Forwarded-For", b"")]
        self.assertEqual(self.policy.clientIP("10.0.0.1", headers), "10.0.0.1")

    def test_portsAndIPv6(self) -> None:
        """
        Entries with a port, and IPv6 addresses (bracketed or not) are
        read, and normalised.
        """
        for entry, expected in [
            (b"192.0.2.7:5555", "192.0.2.7"),
            (b"[2001:DB9::0001]:443", "2001:db9::1"),
            (b"2001:db9:0::1", "2001:db9::1"),
            (b"[2001:db8::5], 10.1.1.1", "2001:db8::5"),
        ]:
            headers = [(b"X-Forwarded-For", entry)]
            self.assertEqual(
                self.policy.clientIP("10.0.0.1", headers), expected, entry
            )

    def test_trustIsRemembered(self) -> None:
        """
        Whether an address is trusted is computed once, then remembered (a
        bounded number of addresses).
        """
        policy = ForwardingPolicy.fromConfig(["10.0.0.0/8"], False)
        self.assertTrue(policy.trusts("10.0.0.1"))
        self.assertFalse(policy.trusts("192.0.2.1"))
        self.assertFalse(policy.trusts("not an address"))
        self.assertEqual(
            policy._trusted,
            {"10.0.0.1": True, "192.0.2.1": False, "not an address": False},
        )
        for n in range(5000):
            policy.trusts(f"10.0.{n // 256}.{n % 256}")
        self.assertLessEqual(len(policy._trusted), 4096)
        self.assertEqual(policy, ForwardingPolicy.fromConfig(["10.0.0.0/8"], False))

    def test_entriesRemembered(self) -> None:
        """
        The address each C{X-Forwarded-For} entry names is parsed once, then
        remembered; an entry too long to be an address is not kept.
        """
        policy = ForwardingPolicy.fromConfig(["10.0.0.0/8"], False)
        long = b"1" * 200
        headers = [(b"X-Forwarded-For", b"192.0.2.7, " + long + b", 10.1.1.1")]
        self.assertEqual(policy.clientIP("10.0.0.1", headers), "10.1.1.1")
        self.assertEqual(policy._entries, {b" 10.1.1.1": "10.1.1.1"})
        headers = [(b"X-Forwarded-For", b"192.0.2.7, 10.1.1.1")]
        self.assertEqual(policy.clientIP("10.0.0.1", headers), "192.0.2.7")
        self.assertEqual(
            policy._entries, {b" 10.1.1.1": "10.1.1.1", b"192.0.2.7": "192.0.2.7"}
        )


class RateLimitKeyTests(SynchronousTestCase):
    """
    L{RateLimit}: which key a request is counted under.
    """

    def limit(self, key: str, trusted: tuple[str, ...] = ()) -> RateLimit:
        """
        @return: A limit of one request per second and key.
        """
        return RateLimit(
            RateLimitConfig(requests_per_second=1.0, burst=1, key=key),
            ForwardingPolicy.fromConfig(trusted, False),
            "web",
        )

    def test_clientIP(self) -> None:
        """
        C{client_ip} counts by the client's address, which behind a trusted
        proxy is the one it forwarded for.
        """
        limit = self.limit("client_ip", ("10.0.0.0/8",))
        forwarded = [(b"X-Forwarded-For", b"192.0.2.7")]
        self.assertEqual(
            limit.keyOf(FakeRequest(peer("10.0.0.1"), forwarded)), "192.0.2.7"
        )
        self.assertEqual(
            limit.keyOf(FakeRequest(peer("198.51.100.3"), forwarded)), "198.51.100.3"
        )
        self.assertIsNone(limit.check(FakeRequest(peer("10.0.0.1"), forwarded), 0.0))
        self.assertEqual(
            limit.check(FakeRequest(peer("10.0.0.1"), forwarded), 0.5),
            Refusal(1, "rate limited: client_ip 192.0.2.7"),
        )

    def test_trustedProxyClientsSeparate(self) -> None:
        """
        Two clients behind one trusted proxy have a bucket each.
        """
        limit = self.limit("client_ip", ("10.0.0.0/8",))
        one = FakeRequest(peer("10.0.0.1"), [(b"X-Forwarded-For", b"192.0.2.1")])
        two = FakeRequest(peer("10.0.0.1"), [(b"X-Forwarded-For", b"192.0.2.2")])
        self.assertIsNone(limit.check(one, 0.0))
        self.assertIsNotNone(limit.check(one, 0.0))
        self.assertIsNone(limit.check(two, 0.0))

    def test_header(self) -> None:
        """
        C{header:NAME} counts by the header's value (its name in any case),
        several lines joined.
        """
        limit = self.limit("header:X-Api-Key")
        request = FakeRequest(peer("192.0.2.7"), [(b"x-api-key", b"k1")])
        self.assertEqual(limit.keyOf(request), b"k1")
        twice = FakeRequest(
            peer("192.0.2.7"), [(b"X-API-KEY", b"k1"), (b"X-Api-Key", b"k2")]
        )
        self.assertEqual(limit.keyOf(twice), b"k1, k2")
        self.assertIsNone(limit.check(request, 0.0))
        self.assertEqual(
            limit.check(request, 0.0), Refusal(1, "rate limited: header X-Api-Key")
        )

    def test_headerMissing(self) -> None:
        """
        A request without the header, or with an empty one, is counted
        under its client's address (a str, never equal to a header's
        value).
        """
        limit = self.limit("header:X-Api-Key")
        request = FakeRequest(peer("192.0.2.7"), [(b"Host", b"a.example")])
        self.assertEqual(limit.keyOf(request), "192.0.2.7")
        self.assertIsNone(limit.check(request, 0.0))
        self.assertEqual(
            limit.check(request, 0.0),
            Refusal(1, "rate limited: client_ip 192.0.2.7 (no X-Api-Key)"),
        )
        empty = FakeRequest(peer("192.0.2.7"), [(b"X-Api-Key", b"")])
        self.assertEqual(limit.keyOf(empty), "192.0.2.7")
        spoof = FakeRequest(peer("198.51.100.1"), [(b"X-Api-Key", b"192.0.2.7")])
        self.assertNotEqual(limit.keyOf(spoof), limit.keyOf(request))

    def test_longHeaderDigested(self) -> None:
        """
        A long header value is kept as a 16-byte digest, so that a key's
        memory is bounded; different values stay different.
        """
        limit = self.limit("header:X-Api-Key")
        client = peer("192.0.2.7")
        first = limit.keyOf(FakeRequest(client, [(b"X-Api-Key", b"a" * 8000)]))
        second = limit.keyOf(FakeRequest(client, [(b"X-Api-Key", b"b" * 8000)]))
        self.assertEqual((len(first), len(second)), (16, 16))  # type: ignore[arg-type]
        self.assertNotEqual(first, second)

    def test_noAddress(self) -> None:
        """
        A client without an IP address (a UNIX socket) counts as
        C{unknown}.
        """
        limit = self.limit("client_ip")
        self.assertEqual(limit.keyOf(FakeRequest(object(), [])), "unknown")


def frontendWith(rateLimit: dict[str, Any], **frontend: Any) -> Any:
    """
    @return: A configuration whose frontend has C{rate_limit = rateLimit}.
    """
    return parseConfig(
        {
            "frontend": [
                {"name": "web", "listen": "tcp:8080", "pool": "app", **frontend}
                | ({"rate_limit": rateLimit} if rateLimit else {})
            ],
            "pool": [
                {
                    "name": "app",
                    "backend": [
                        {
                            "url": "tcp://127.0.0.1:9001"
                            if frontend.get("mode") == "tcp"
                            else "http://127.0.0.1:9001"
                        }
                    ],
                }
            ],
        }
    )


class RateLimitConfigTests(SynchronousTestCase):
    """
    C{[frontend.rate_limit]} is read into a L{RateLimitConfig}.
    """

    def test_defaults(self) -> None:
        """
        Without C{rate_limit} there is none; with only
        C{requests_per_second}, the burst is one second's worth (rounded
        up), the key C{client_ip} and at most 100000 keys.
        """
        self.assertIsNone(frontendWith({}).frontends[0].rate_limit)
        self.assertEqual(
            frontendWith({"requests_per_second": 2.5}).frontends[0].rate_limit,
            RateLimitConfig(2.5, 3, "client_ip", 100000),
        )
        self.assertEqual(
            frontendWith({"requests_per_second": 0.1}).frontends[0].rate_limit,
            RateLimitConfig(0.1, 1),
        )

    def test_allKeys(self) -> None:
        """
        Every key is read.
        """
        config = frontendWith(
            {
                "requests_per_second": 10,
                "burst": 20,
                "key": "header:X-Api-Key",
                "max_keys": 50,
            }
        )
        self.assertEqual(
            config.frontends[0].rate_limit,
            RateLimitConfig(10.0, 20, "header:X-Api-Key", 50),
        )

    def assertRefused(self, message: str, rateLimit: Any, **frontend: Any) -> None:
        with self.assertRaises(ConfigError) as caught:
            frontendWith(rateLimit, **frontend)
        self.assertEqual(str(caught.exception), message)

    def test_errorsNameTheKey(self) -> None:
        """
        Bad values are refused with a message naming the frontend and key.
        """
        where = 'frontend "web" rate_limit: '
        for rateLimit, message in [
            (
                {"requests_per_second": 0},
                "requests_per_second must be a number greater than 0",
            ),
            (
                {"requests_per_second": "fast"},
                "requests_per_second must be a number greater than 0",
            ),
            (
                {"requests_per_second": 1, "burst": 0},
                "burst must be a positive integer",
            ),
            (
                {"requests_per_second": 1, "burst": 1.5},
                "burst must be a positive integer",
            ),
            (
                {"requests_per_second": 1, "max_keys": 0},
                "max_keys must be a positive integer",
            ),
            (
                {"requests_per_second": 1, "key": "cookie:a"},
                'key "cookie:a" is not "client_ip" or "header:NAME"',
            ),
            (
                {"requests_per_second": 1, "key": "header:X Y"},
                'key "X Y" is not a header name',
            ),
            ({"burst": 3}, 'missing required key "requests_per_second"'),
            ({"requests_per_second": 1, "rate": 1}, 'unknown key "rate"'),
        ]:
            self.assertRefused(where + message, rateLimit)

    def test_notATable(self) -> None:
        """
        C{rate_limit} must be a table.
        """
        self.assertRefused(
            'frontend "web": rate_limit must be a table, written '
            "[frontend.rate_limit]",
            5,
        )

    def test_tcpFrontend(self) -> None:
        """
        A TCP frontend cannot have a rate limit.
        """
        self.assertRefused(
            'frontend "web" rate_limit: needs mode "http" (TCP connections are '
            "not rate limited)",
            {"requests_per_second": 1},
            mode="tcp",
        )


class AccessRecordReasonTests(SynchronousTestCase):
    """
    The access log shows why lbtwist answered a request itself.
    """

    record = AccessRecord(
        timestamp=0.0,
        client="192.0.2.7",
        method="GET",
        target="/",
        version="HTTP/1.1",
        status=429,
        bytes=41,
        duration=0.0,
        frontend="web",
        pool="app",
        backend=None,
        attempts=0,
        retryReasons=(),
        referer=None,
        userAgent=None,
        reason="rate limited: client_ip 192.0.2.7",
    )

    def test_combined(self) -> None:
        """
        The combined format adds C{reason="..."}.
        """
        self.assertIn(
            ' 429 41 "-" "-" pool=app backend=- attempts=0 duration_ms=0.000 '
            'reason="rate limited: client_ip 192.0.2.7"',
            formatCombined(self.record),
        )

    def test_json(self) -> None:
        """
        The JSON format has a C{reason} key, only when there is a reason.
        """
        self.assertIn(
            '"reason":"rate limited: client_ip 192.0.2.7"', formatJSON(self.record)
        )
        self.assertNotIn('"reason"', formatJSON(evolve(self.record, reason=None)))

    def test_formatField(self) -> None:
        """
        C{{reason}} is a format string field.
        """
        self.assertEqual(parseFormat("{status} {reason}")[1], (" ", "reason"))


class FrontendRateLimitTests(ProxyMixin, SynchronousTestCase):
    """
    An L{lbtwist.frontend.HTTPFrontend} with a rate limit answers 429 before
    any backend is chosen.
    """

    def setUp(self) -> None:
        self.build(
            frontend={"rate_limit": {"requests_per_second": 5, "burst": 2}}
        )

    def build(self, **poolOptions: Any) -> None:
        super().build(**poolOptions)
        # The backend connections made so far, reused by later requests.
        self.upstream: list[tuple[Any, Any]] = []

    def get(self) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
        """
        Send one GET on a new connection; answer it from a backend if it
        reached one.

        @return: The status line, fields and body the client received.
        """
        upstream = self.upstream
        client = self.client()
        client.send(GET)
        for endpoint in self.endpoints:
            for pending in endpoint.pending():
                upstream.append(pending.succeed())
        for connection, transport in upstream:
            if transport.value():
                transport.clear()
                connection.dataReceived(OK)
        return parseResponse(client.received())

    def test_overTheLimit(self) -> None:
        """
        Beyond the burst, a request is answered 429 with C{Retry-After} and
        a short body, no backend is tried, the access log says why and the
        frontend counts it.
        """
        self.assertTrue(self.get()[0].startswith(b"HTTP/1.1 200"))
        self.assertTrue(self.get()[0].startswith(b"HTTP/1.1 200"))
        attempts = self.attemptCount(0) + self.attemptCount(1)
        status, headers, body = self.get()
        self.assertEqual(status, b"HTTP/1.1 429 Too Many Requests")
        self.assertEqual(values(headers, b"retry-after"), [b"1"])
        self.assertEqual(body, b"429 Too Many Requests\nretry after 1 s\n")
        self.assertEqual(self.attemptCount(0) + self.attemptCount(1), attempts)
        record = self.accessLog.records[-1]
        self.assertEqual(
            (record.status, record.backend, record.attempts, record.reason),
            (429, None, 0, "rate limited: client_ip 192.0.2.7"),
        )
        self.assertEqual(record.bytes, len(body))
        self.assertEqual(self.frontend.stats.rateLimited, 1)
        self.assertEqual(self.frontend.stats.responses["4xx"], 1)

    def test_recovers(self) -> None:
        """
        Once a token is back, requests pass again.
        """
        self.get()
        self.get()
        self.assertTrue(self.get()[0].startswith(b"HTTP/1.1 429"))
        self.reactor.advance(0.2)
        self.assertTrue(self.get()[0].startswith(b"HTTP/1.1 200"))
        self.assertTrue(self.get()[0].startswith(b"HTTP/1.1 429"))

    def test_retryAfterRoundsUp(self) -> None:
        """
        C{Retry-After} is the seconds until a token, rounded up.
        """
        self.build(frontend={"rate_limit": {"requests_per_second": 0.4, "burst": 1}})
        self.get()
        self.assertEqual(values(self.get()[1], b"retry-after"), [b"3"])
        self.reactor.advance(1.5)
        self.assertEqual(values(self.get()[1], b"retry-after"), [b"1"])

    def test_keepAlive(self) -> None:
        """
        A 429 leaves a keep-alive connection open for the next request.
        """
        self.build(frontend={"rate_limit": {"requests_per_second": 1, "burst": 1}})
        client = self.client()
        client.send(GET)
        connection, _ = self.connectBackend(0)
        connection.dataReceived(OK)
        client.send(GET)
        self.assertTrue(client.received().endswith(b"retry after 1 s\n"))
        self.assertFalse(client.transport.disconnecting)
        self.assertNotIn(b"Connection: close", client.received())

    def test_requestBody(self) -> None:
        """
        A refused request's body is not forwarded: read whole, it is
        skipped and the connection goes on; still arriving, the connection
        is closed after the 429.
        """
        self.build(frontend={"rate_limit": {"requests_per_second": 1, "burst": 1}})
        self.get()
        client = self.client()
        client.send(post(b"abc") + GET)
        self.assertEqual(client.received().count(b"HTTP/1.1 429 "), 2)
        self.assertFalse(client.transport.disconnecting)
        slow = self.client()
        slow.send(post(b"abcdef")[:-3])
        self.assertIn(b"Connection: close\r\n", slow.received())
        self.assertTrue(slow.transport.disconnecting)
        for _, transport in self.upstream:
            self.assertEqual(transport.value(), b"")

    def test_reloadKeepsBuckets(self) -> None:
        """
        A reload with the same rate limit keeps the buckets; another rate
        limit starts afresh; none removes the check.
        """
        self.get()
        self.get()
        rateLimit = self.frontend.rateLimit
        same = makeConfig(
            frontend={
                "rate_limit": {"requests_per_second": 5, "burst": 2},
                "trusted_proxies": ["10.0.0.0/8"],
            },
        )
        self.frontend.reconfigure(same.frontends[0], 1000)
        self.assertIs(self.frontend.rateLimit, rateLimit)
        assert rateLimit is not None
        self.assertIs(rateLimit.policy, self.frontend.policy)
        self.assertTrue(self.get()[0].startswith(b"HTTP/1.1 429"))
        other = makeConfig(
            frontend={"rate_limit": {"requests_per_second": 5, "burst": 3}}
        )
        self.frontend.reconfigure(other.frontends[0], 1000)
        self.assertIsNot(self.frontend.rateLimit, rateLimit)
        self.assertTrue(self.get()[0].startswith(b"HTTP/1.1 200"))
        self.frontend.reconfigure(makeConfig().frontends[0], 1000)
        self.assertIsNone(self.frontend.rateLimit)
        for _ in range(5):
            self.assertTrue(self.get()[0].startswith(b"HTTP/1.1 200"))

    def test_fullTableLogged(self) -> None:
        """
        The first time C{max_keys} is reached, a warning names the frontend.
        """
        self.build(
            frontend={"rate_limit": {"requests_per_second": 1, "max_keys": 1}}
        )
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.get()
        rateLimit = self.frontend.rateLimit
        assert rateLimit is not None
        rateLimit.check(FakeRequest(peer("192.0.2.99"), []), 0.0)
        rateLimit.check(FakeRequest(peer("192.0.2.98"), []), 0.0)
        warnings = [e for e in events if e.get("frontend") == "web"]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["maxKeys"], 1)
