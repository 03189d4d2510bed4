# -*- test-case-name: tests.test_tcp_sni -*-
"""
Tests for SNI routing in L{lbtwist.tcp} (TLS passthrough): a TCP frontend
with C{[[frontend.route]]}s on a L{MemoryReactorClock}, fed real
ClientHellos, with the backend connections completed by hand.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from twisted.internet import error as ierror
from twisted.internet.address import IPv4Address
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from lbtwist.accesslog import AccessLog
from lbtwist.config import (
    ConfigError,
    FrontendConfig,
    HealthCheckConfig,
    PoolConfig,
    RouteConfig,
    loadConfig,
    parseConfig,
)
from lbtwist.pool import BackendPool
from lbtwist.proxyheader import proxyHeaderV1, proxyHeaderV2
from lbtwist.service import LoadBalancer
from lbtwist.stats import FrontendStats
from lbtwist.tcp import TCPProxyFactory
from tests.test_clienthello import realHello, refragment
from tests.test_tcp import CLIENT, FRONTEND, backendConfig
from tests.test_tunnel import FakeTCPTransport

ROUTES = (
    RouteConfig(sni=("a.example", "*.b.example"), pool="a"),
    RouteConfig(sni=("*.b.example", "c.example"), pool="c"),
)


def frontendConfig(
    pool: str | None = "default",
    routes: tuple[RouteConfig, ...] = ROUTES,
    **options: Any,
) -> FrontendConfig:
    """
    @return: A TCP frontend with SNI routes.
    """
    return FrontendConfig(
        name="tls-front",
        listen=("tcp:8443",),
        pool=pool,
        mode="tcp",
        routes=routes,
        **options,
    )


class SNIFixture:
    """
    A TCP frontend with SNI routes to pools C{a} (port 7001, 7011),
    C{c} (7003) and C{default} (7009), on a memory reactor with a JSON
    access log.
    """

    def __init__(
        self,
        frontend: FrontendConfig | None = None,
        **poolOptions: Any,
    ) -> None:
        self.reactor = MemoryReactorClock()
        self.pools = {
            name: BackendPool(
                PoolConfig(
                    name=name,
                    backends=tuple(backendConfig(port) for port in ports),
                    health=HealthCheckConfig(check="none"),
                    **poolOptions.get(name, {}),
                )
            )
            for name, ports in [
                ("a", (7001, 7011)),
                ("c", (7003,)),
                ("default", (7009,)),
                ("unused", (7010,)),
            ]
        }
        self.frontend = frontend or frontendConfig()
        self.stats = FrontendStats()
        self.lines: list[str] = []
        self.factory = TCPProxyFactory(
            self.reactor,
            self.frontend,
            self.pools,
            self.stats,
            AccessLog(self.lines.append, "json"),
        )

    def connectClient(self, peer: Any = CLIENT) -> FakeTCPTransport:
        """
        A client connects.
        """
        transport = FakeTCPTransport(peer, FRONTEND)
        transport.connect(self.factory.buildProtocol(peer))
        return transport

    def ports(self) -> list[int]:
        """
        @return: The ports of the backend connection attempts so far.
        """
        return [port for _, port, _, _, _ in self.reactor.tcpClients]

    def completeBackend(self, index: int = -1) -> FakeTCPTransport:
        """
        A connection attempt to a backend succeeds.
        """
        host, port, factory, _, _ = self.reactor.tcpClients[index]
        transport = FakeTCPTransport(
            peer=IPv4Address("TCP", host, port),
            host=IPv4Address("TCP", "127.0.0.1", 40000),
        )
        transport.connect(factory.buildProtocol(None))
        return transport

    def records(self) -> list[dict[str, Any]]:
        """
        @return: The access log's records.
        """
        return [json.loads(line) for line in self.lines]


def closeBoth(client: FakeTCPTransport, backend: FakeTCPTransport) -> None:
    """
    The client closes; the tunnel closes the backend too.
    """
    client.lose()
    backend.drain()


class RoutingTests(SynchronousTestCase):
    """
    The pool is chosen by the ClientHello's server name.
    """

    def test_routesByServerName(self) -> None:
        """
        The ClientHello is read (the client is not paused meanwhile), the
        routed pool's backend is connected, and it receives every byte as
        the client sent it; the access log names the routed pool.
        """
        f = SNIFixture()
        client = f.connectClient()
        self.assertTrue(client.reading)
        self.assertEqual(f.ports(), [])
        hello = realHello("a.example")
        client.receive(hello)
        self.assertFalse(client.reading)
        self.assertEqual(f.ports(), [7001])
        backend = f.completeBackend()
        self.assertTrue(client.reading)
        client.receive(b"\x17\x03\x03\x00\x01x")
        backend.receive(b"server flight")
        self.assertEqual(bytes(backend.written), hello + b"\x17\x03\x03\x00\x01x")
        self.assertEqual(bytes(client.written), b"server flight")
        closeBoth(client, backend)
        [record] = f.records()
        self.assertEqual(
            (record["pool"], record["backend"], record["outcome"]),
            ("a", "127.0.0.1:7001", "client closed"),
        )
        self.assertEqual(record["from_client"], len(hello) + 6)

    def test_patterns(self) -> None:
        """
        Names match exactly or by a one-label wildcard, case-insensitively;
        the first matching route wins; anything else goes to the default
        pool.
        """
        cases = [
            ("a.example", 7001),
            ("A.Example", 7001),
            ("x.b.example", 7001),  # first route wins over the second's *.b.example
            ("c.example", 7003),
            ("b.example", 7009),  # *.b.example needs one more label
            ("y.x.b.example", 7009),  # ... exactly one
            ("www.a.example", 7009),
            ("unknown.example", 7009),
        ]
        for name, port in cases:
            f = SNIFixture()
            f.connectClient().receive(realHello(name))
            self.assertEqual(f.ports(), [port], name)

    def test_noServerName(self) -> None:
        """
        A ClientHello without SNI goes to the default pool.
        """
        f = SNIFixture()
        f.connectClient().receive(realHello(None))
        self.assertEqual(f.ports(), [7009])

    def test_noMatchNoDefault(self) -> None:
        """
        Without a default pool, a name no route matches, or no name, closes
        the connection without connecting anywhere, with a log event and an
        access log line saying why.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        for name, outcome in [
            ("unknown.example", 'no route for SNI "unknown.example"'),
            (None, "no SNI"),
        ]:
            f = SNIFixture(frontendConfig(pool=None))
            client = f.connectClient()
            client.receive(realHello(name))
            self.assertTrue(client.disconnecting)
            self.assertEqual(f.ports(), [])
            client.drain()
            [record] = f.records()
            self.assertEqual(
                (record["pool"], record["backend"], record["outcome"]),
                (None, None, outcome),
            )
            self.assertEqual(f.stats.connectionsOpen, 0)
            self.assertEqual(f.reactor.getDelayedCalls(), [])
        messages = [formatEvent(event) for event in observer]
        self.assertIn(
            "tls-front: closing connection from 192.0.2.7: no route for SNI "
            '"unknown.example"',
            messages,
        )
        self.assertIn("tls-front: closing connection from 192.0.2.7: no SNI", messages)

    def test_splitHello(self) -> None:
        """
        A ClientHello in many records, arriving in small pieces, is routed
        once complete and forwarded exactly as it arrived.
        """
        f = SNIFixture()
        client = f.connectClient()
        data = refragment(realHello("c.example"), [7, 100, 1, 300])
        for offset in range(0, len(data), 13):
            self.assertEqual(f.ports(), [])
            client.receive(data[offset : offset + 13])
        self.assertEqual(f.ports(), [7003])
        backend = f.completeBackend()
        self.assertEqual(bytes(backend.written), data)

    def test_bytesWhileConnecting(self) -> None:
        """
        Bytes after the ClientHello, in its segment or arriving while the
        backend connects, follow it in order.
        """
        f = SNIFixture()
        client = f.connectClient()
        hello = realHello("a.example")
        client.receive(hello + b"\x14\x03\x03\x00\x01\x01")
        client.protocol.dataReceived(b"late")
        backend = f.completeBackend()
        self.assertEqual(
            bytes(backend.written), hello + b"\x14\x03\x03\x00\x01\x01late"
        )

    def test_reconfigure(self) -> None:
        """
        After a reload, new connections follow the new routes.
        """
        f = SNIFixture()
        f.factory.reconfigure(
            frontendConfig(routes=(RouteConfig(sni=("a.example",), pool="unused"),)),
            f.pools,
        )
        f.connectClient().receive(realHello("a.example"))
        self.assertEqual(f.ports(), [7010])


class RefusedTests(SynchronousTestCase):
    """
    Connections closed before any backend is chosen.
    """

    def assertClosed(
        self, f: SNIFixture, client: FakeTCPTransport, outcome: str
    ) -> None:
        """
        The client is closed without a backend connection, with C{outcome}
        in the access log, and no timer left.
        """
        self.assertTrue(client.disconnecting or client.disconnected)
        self.assertEqual(f.ports(), [])
        client.drain()
        [record] = f.records()
        self.assertEqual((record["pool"], record["outcome"]), (None, outcome))
        self.assertEqual(f.reactor.getDelayedCalls(), [])

    def test_notTLS(self) -> None:
        """
        A client that does not start with a TLS handshake record is closed
        on its first byte.
        """
        f = SNIFixture()
        client = f.connectClient()
        client.receive(b"G")
        self.assertClosed(f, client, "not TLS")

    def test_malformed(self) -> None:
        """
        A malformed ClientHello closes the connection, saying what is
        wrong.
        """
        f = SNIFixture()
        client = f.connectClient()
        client.receive(b"\x16\x03\x01\x00\x04\x02\x00\x00\x00")
        self.assertClosed(
            f,
            client,
            "bad ClientHello: first handshake message has type 2, not ClientHello",
        )

    def test_tooLarge(self) -> None:
        """
        A ClientHello larger than 16 KiB is refused as soon as its header
        says so.
        """
        f = SNIFixture()
        client = f.connectClient()
        client.receive(b"\x16\x03\x01\x00\x04\x01\x00\x40\x00")
        self.assertClosed(
            f, client, "bad ClientHello: ClientHello longer than 16384 bytes"
        )

    def test_timeout(self) -> None:
        """
        A ClientHello not complete within the frontend's C{header_timeout}
        closes the connection.
        """
        f = SNIFixture(frontendConfig(header_timeout=3.0))
        client = f.connectClient()
        client.receive(realHello("a.example")[:100])
        f.reactor.advance(2.9)
        self.assertFalse(client.disconnecting)
        f.reactor.advance(0.1)
        self.assertClosed(f, client, "client hello timeout")

    def test_clientCloses(self) -> None:
        """
        A client that closes before its ClientHello is complete is logged
        as such, without a backend connection.
        """
        f = SNIFixture()
        client = f.connectClient()
        client.receive(realHello("a.example")[:10])
        client.eof()
        self.assertClosed(f, client, "client closed")

    def test_clientAborts(self) -> None:
        """
        A client whose connection drops mid-ClientHello leaves no timer.
        """
        f = SNIFixture()
        client = f.connectClient()
        client.receive(realHello("a.example")[:10])
        client.lose(ierror.ConnectionLost)
        self.assertClosed(f, client, "client aborted")


class PoolBehaviourTests(SynchronousTestCase):
    """
    The routed pool's own settings apply.
    """

    def test_retriesAndTimeoutOfRoutedPool(self) -> None:
        """
        The routed pool's C{connect_timeout} and C{retries} apply: a refused
        backend is replaced by the pool's other one.
        """
        f = SNIFixture(
            a={"connect_timeout": 1.25, "retries": 1, "strategy": "round-robin"}
        )
        f.connectClient().receive(realHello("a.example"))
        self.assertEqual(f.reactor.tcpClients[0][3], 1.25)
        factory = f.reactor.tcpClients[0][2]
        factory.clientConnectionFailed(
            f.reactor.connectors[0], Failure(ierror.ConnectionRefusedError())
        )
        self.assertEqual(f.ports(), [7001, 7011])

    def test_consistentHashByClientIP(self) -> None:
        """
        A C{consistent-hash} routed pool hashes the client's IP address:
        connections from one address go to one backend.
        """
        f = SNIFixture(a={"strategy": "consistent-hash"})

        def connectFrom(host: str) -> int:
            client = f.connectClient(IPv4Address("TCP", host, 50000))
            client.receive(realHello("a.example"))
            client.lose()
            return f.ports()[-1]

        self.assertEqual(
            {connectFrom("198.51.100.23") for _ in range(5)},
            {connectFrom("198.51.100.23")},
        )
        self.assertEqual(
            {connectFrom(f"198.51.100.{last}") for last in range(1, 60)}, {7001, 7011}
        )

    def test_proxyHeaders(self) -> None:
        """
        With C{accept_proxy}, the PROXY header is read first (the ClientHello
        may follow in the same segment) and its address is the client's;
        the routed pool's C{send_proxy} header goes before the ClientHello.
        """
        f = SNIFixture(frontendConfig(accept_proxy=True), c={"send_proxy": "v1"})
        original = IPv4Address("TCP", "203.0.113.9", 40000)
        header = proxyHeaderV2(original, FRONTEND)
        hello = realHello("c.example")
        client = f.connectClient()
        client.receive(header + hello[:50])
        self.assertEqual(f.ports(), [])
        client.receive(hello[50:])
        backend = f.completeBackend()
        self.assertEqual(
            bytes(backend.written), proxyHeaderV1(original, FRONTEND) + hello
        )
        closeBoth(client, backend)
        self.assertEqual(f.records()[0]["client"], "203.0.113.9")

    def test_oneDeadlineForProxyHeaderAndHello(self) -> None:
        """
        The PROXY header and the ClientHello share one C{header_timeout},
        counted from the connection.
        """
        f = SNIFixture(frontendConfig(accept_proxy=True, header_timeout=2.0))
        client = f.connectClient()
        f.reactor.advance(1.5)
        client.receive(proxyHeaderV1(CLIENT, FRONTEND))
        f.reactor.advance(0.5)
        self.assertTrue(client.disconnecting)
        client.drain()
        self.assertEqual(f.records()[0]["outcome"], "client hello timeout")

    def test_withoutRoutesNothingIsRead(self) -> None:
        """
        A TCP frontend without routes reads nothing and sets no timer: the
        client is paused and the backend connected at once.
        """
        f = SNIFixture(frontendConfig(routes=()))
        client = f.connectClient()
        self.assertFalse(client.reading)
        self.assertEqual(f.ports(), [7009])
        [connectTimeout] = f.reactor.getDelayedCalls()
        self.assertEqual(connectTimeout.getTime(), 3.0)
        self.assertIs(f.factory.route("a.example"), f.pools["default"])


SNI_CONFIG = """
[[frontend]]
name = "tls"
mode = "tcp"
listen = "tcp:8443"

[[frontend.route]]
sni = ["A.Example", "*.b.example"]
pool = "a"

[[pool]]
name = "a"
[[pool.backend]]
url = "tcp://127.0.0.1:7001"
"""


class SNIConfigTests(SynchronousTestCase):
    """
    The configuration of SNI routes as a TCP frontend uses it.
    """

    def test_parsed(self) -> None:
        """
        Patterns are lower-cased; a frontend with routes needs no pool, and
        its factory routes what matches and closes the rest.
        """
        [frontend] = parseConfig(tomllib.loads(SNI_CONFIG)).frontends
        self.assertEqual(
            frontend.routes, (RouteConfig(sni=("a.example", "*.b.example"), pool="a"),)
        )
        f = SNIFixture(frontend)
        self.assertIs(f.factory.route("a.example"), f.pools["a"])
        self.assertIs(f.factory.route("x.b.example"), f.pools["a"])
        self.assertIsNone(f.factory.route("b.example"))
        self.assertIsNone(f.factory.route(None))

    def test_errors(self) -> None:
        """
        SNI routes need a frontend without C{tls} (they pass TLS through),
        and an IP address is no server name.
        """
        for old, new, message in [
            (
                'listen = "tcp:8443"\n',
                'listen = "tcp:8443"\n[frontend.tls]\ncertificates = ["x.pem"]\n',
                'frontend "tls": sni routes pass TLS through untouched; they need '
                "a frontend without tls",
            ),
            (
                '"*.b.example"',
                '"192.0.2.1"',
                'frontend "tls" route 1: sni "192.0.2.1" is an IP address; TLS '
                "clients send only host names as SNI",
            ),
        ]:
            self.assertIn(old, SNI_CONFIG)
            with self.assertRaises(ConfigError) as caught:
                parseConfig(tomllib.loads(SNI_CONFIG.replace(old, new)))
            self.assertEqual(str(caught.exception), message)


class SNIServiceTests(SynchronousTestCase):
    """
    L{LoadBalancer} builds a TCP frontend with SNI routes, and a reload
    gives the running frontend its new routes and pools.
    """

    def test_builtAndReloaded(self) -> None:
        """
        The frontend's factory routes to the balancer's pools; after a
        reload that points the route at another pool (and drops the
        default), the same listener routes to the new one.
        """
        path = self.mktemp() + ".toml"
        second = (
            '\n[[pool]]\nname = "b"\n[[pool.backend]]\nurl = "tcp://127.0.0.1:7002"\n'
        )
        Path(path).write_text(
            SNI_CONFIG.replace(
                'listen = "tcp:8443"\n', 'listen = "tcp:8443"\npool = "a"\n'
            )
            + second
        )
        reactor = MemoryReactorClock()
        lb = LoadBalancer(loadConfig(path), reactor)
        lb.privilegedStartService()
        lb.startService()
        self.addCleanup(lb.stopService)
        [(port, factory, _, _)] = reactor.tcpServers
        self.assertEqual(port, 8443)
        self.assertIsInstance(factory, TCPProxyFactory)
        self.assertIs(factory.route("x.b.example"), lb.balancer.pools["a"])
        self.assertIs(factory.route("other.example"), lb.balancer.pools["a"])
        Path(path).write_text(
            SNI_CONFIG.replace('pool = "a"\n\n[[pool]]', 'pool = "b"\n\n[[pool]]')
            + second
        )
        self.successResultOf(lb.reload())
        self.assertEqual(len(reactor.tcpServers), 1)
        self.assertIs(factory.route("x.b.example"), lb.balancer.pools["b"])
        self.assertIsNone(factory.route("other.example"))
