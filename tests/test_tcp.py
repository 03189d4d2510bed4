# -*- test-case-name: tests.test_tcp -*-
"""
Tests for L{lbtwist.tcp}: a TCP frontend's connections on a
L{MemoryReactorClock}, with the backend connections completed (or failed)
by hand and L{FakeTCPTransport}s on both sides.
"""

from __future__ import annotations

import json
from typing import Any

from attrs import evolve
from twisted.internet import error as ierror
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
)
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from lbtwist.accesslog import AccessLog
from lbtwist.backend import BackendState
from lbtwist.config import BackendConfig, FrontendConfig, HealthCheckConfig, PoolConfig
from lbtwist.pool import BackendPool
from lbtwist.proxyheader import proxyHeaderV1, proxyHeaderV2
from lbtwist.stats import FrontendStats
from lbtwist.endpoints import backendEndpoint
from lbtwist.failures import classifyConnectFailure
from lbtwist.tcp import TCPProxyFactory
from tests.test_tunnel import FakeTCPTransport

CLIENT = IPv4Address("TCP", "192.0.2.7", 51000)
FRONTEND = IPv4Address("TCP", "127.0.0.1", 5433)


def backendConfig(port: int, host: str = "127.0.0.1") -> BackendConfig:
    """
    @return: The configuration of a C{tcp://} backend.
    """
    shown = f"[{host}]" if ":" in host else host
    return BackendConfig(
        url=f"tcp://{shown}:{port}", scheme="tcp", host=host, port=port
    )


class TCPFixture:
    """
    A TCP frontend on a memory reactor, with a JSON access log.
    """

    def __init__(
        self,
        ports: tuple[int, ...] = (5432,),
        health: HealthCheckConfig = HealthCheckConfig(check="none"),
        frontend: FrontendConfig | None = None,
        **poolOptions: Any,
    ) -> None:
        self.reactor = MemoryReactorClock()
        self.poolConfig = PoolConfig(
            name="pg",
            backends=tuple(backendConfig(port) for port in ports),
            health=health,
            **poolOptions,
        )
        self.pool = BackendPool(self.poolConfig)
        self.frontend = frontend or FrontendConfig(
            name="pg-front", listen=("tcp:5433",), pool="pg", mode="tcp"
        )
        self.stats = FrontendStats()
        self.lines: list[str] = []
        self.factory = TCPProxyFactory(
            self.reactor,
            self.frontend,
            {"pg": self.pool},
            self.stats,
            AccessLog(self.lines.append, "json"),
        )

    def connectClient(
        self, peer: Any = CLIENT, host: Any = FRONTEND
    ) -> FakeTCPTransport:
        """
        A client connects.
        """
        transport = FakeTCPTransport(peer, host)
        transport.connect(self.factory.buildProtocol(peer))
        return transport

    def attempt(self, index: int = -1) -> tuple[str, int, float]:
        """
        @return: The host, port and timeout of a connection attempt.
        """
        host, port, _, timeout, _ = self.reactor.tcpClients[index]
        return host, port, timeout

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

    def failBackend(
        self, index: int = -1, reason: Exception = ierror.ConnectionRefusedError()
    ) -> None:
        """
        A connection attempt to a backend fails.
        """
        factory = self.reactor.tcpClients[index][2]
        factory.clientConnectionFailed(self.reactor.connectors[index], Failure(reason))

    def records(self) -> list[dict[str, Any]]:
        """
        @return: The access log's records.
        """
        return [json.loads(line) for line in self.lines]


class ConnectTests(SynchronousTestCase):
    """
    Connecting a client to a backend.
    """

    def test_pausesClientAndConnects(self) -> None:
        """
        The client is not read from while the backend is connected, with the
        pool's connect timeout.
        """
        f = TCPFixture(connect_timeout=1.5)
        client = f.connectClient()
        self.assertFalse(client.reading)
        self.assertEqual(f.attempt(), ("127.0.0.1", 5432, 1.5))
        self.assertEqual((f.stats.connectionsTotal, f.stats.connectionsOpen), (1, 1))

    def test_relays(self) -> None:
        """
        Once the backend is connected, the client is read again and bytes go
        both ways.
        """
        f = TCPFixture()
        client = f.connectClient()
        backend = f.completeBackend()
        self.assertTrue(client.reading)
        client.receive(b"SELECT 1;")
        backend.receive(b"1")
        self.assertEqual(bytes(backend.written), b"SELECT 1;")
        self.assertEqual(bytes(client.written), b"1")

    def test_backendSpeaksFirst(self) -> None:
        """
        The backend's greeting reaches a client that sent nothing.
        """
        f = TCPFixture()
        client = f.connectClient()
        backend = f.completeBackend()
        backend.receive(b"220 ready\r\n")
        self.assertEqual(bytes(client.written), b"220 ready\r\n")

    def test_bytesBeforeConnectFirst(self) -> None:
        """
        Bytes that arrived before the backend was connected are sent first.
        """
        f = TCPFixture()
        client = f.connectClient()
        client.protocol.dataReceived(b"early ")
        backend = f.completeBackend()
        client.receive(b"late")
        self.assertEqual(bytes(backend.written), b"early late")

    def test_activeCount(self) -> None:
        """
        The backend counts the connection as active from the connection
        attempt until it is closed, once.
        """
        f = TCPFixture()
        backendState = f.pool.backends[0]
        client = f.connectClient()
        self.assertEqual((backendState.active, backendState.requests), (1, 1))
        backend = f.completeBackend()
        self.assertEqual((backendState.active, backendState.requests), (1, 1))
        client.lose()
        self.assertEqual(backendState.active, 1)
        backend.drain()
        self.assertEqual(backendState.active, 0)
        client.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(backendState.active, 0)

    def test_leastConnections(self) -> None:
        """
        least-connections sends a new client to the backend with fewer open
        connections.
        """
        f = TCPFixture(ports=(5432, 5433), strategy="least-connections")
        f.connectClient()
        f.completeBackend()
        f.connectClient()
        self.assertEqual(f.attempt()[1], 5433)

    def test_halfClose(self) -> None:
        """
        The client's end-of-file reaches the backend; the backend's answer
        still reaches the client.
        """
        f = TCPFixture()
        client = f.connectClient()
        backend = f.completeBackend()
        client.receive(b"request")
        client.eof()
        self.assertTrue(backend.writeDisconnecting)
        backend.receive(b"response")
        self.assertEqual(bytes(client.written), b"response")

    def test_earlyEOF(self) -> None:
        """
        An end-of-file before the backend is connected reaches it after the
        client's bytes.
        """
        f = TCPFixture()
        client = f.connectClient()
        client.protocol.dataReceived(b"request")
        client.protocol.readConnectionLost()
        backend = f.completeBackend()
        self.assertEqual(bytes(backend.written), b"request")
        self.assertTrue(backend.writeDisconnecting)

    def test_idleTimeout(self) -> None:
        """
        The pool's idle timeout closes both sides, and is logged.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        f = TCPFixture(idle_timeout=30.0)
        client = f.connectClient()
        backend = f.completeBackend()
        f.reactor.advance(30)
        self.assertTrue(client.disconnecting and backend.disconnecting)
        client.drain()
        backend.drain()
        self.assertEqual(f.records()[0]["outcome"], "idle timeout")
        self.assertTrue(
            any(e.get("timeout") == 30.0 and "idle" in e["log_format"] for e in events)
        )


class RetryTests(SynchronousTestCase):
    """
    Failed connection attempts.
    """

    def test_refusedTriesNext(self) -> None:
        """
        A refused connection counts against the backend and the next one is
        tried.
        """
        f = TCPFixture(ports=(5432, 5434))
        client = f.connectClient()
        f.failBackend()
        first = f.pool.backends[0]
        self.assertEqual(first.failures, 1)
        self.assertEqual(first.stats.failures["connect_refused"], 1)
        self.assertEqual(f.attempt()[1], 5434)
        self.assertFalse(client.disconnecting)
        f.completeBackend()
        self.assertEqual(first.active, 0)
        self.assertEqual(f.pool.backends[1].active, 1)

    def test_timeoutTriesNext(self) -> None:
        """
        A backend that does not accept within the connect timeout counts as
        a timeout and the next one is tried.
        """
        f = TCPFixture(ports=(5432, 5434), connect_timeout=2.0)
        f.connectClient()
        f.reactor.advance(2.0)
        self.assertTrue(f.reactor.connectors[0].stoppedConnecting)
        self.assertEqual(f.pool.backends[0].stats.failures["connect_timeout"], 1)
        self.assertEqual(f.attempt()[1], 5434)

    def test_givesUpAfterRetries(self) -> None:
        """
        After C{retries} more attempts the client is closed and the log line
        tells why.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        f = TCPFixture(ports=(5432, 5434, 5436), retries=1)
        client = f.connectClient()
        f.failBackend()
        f.failBackend()
        self.assertEqual(len(f.reactor.tcpClients), 2)
        self.assertTrue(client.disconnecting)
        client.drain()
        [record] = f.records()
        self.assertEqual(record["outcome"], "connect failed")
        self.assertEqual(record["attempts"], 2)
        self.assertIsNone(record["backend"])
        self.assertEqual(
            record["retry_reasons"],
            [
                "127.0.0.1:5432: connection refused",
                "127.0.0.1:5434: connection refused",
            ],
        )
        self.assertEqual(f.stats.connectionsOpen, 0)
        self.assertEqual(sum(e.get("attempts") == 2 for e in events), 1)
        self.assertEqual(
            sum(e.get("reason") == "connection refused" for e in events), 1
        )

    def test_noBackendAvailable(self) -> None:
        """
        With every backend down (after their first checks) the client is
        closed at once, and the log line names the pool, how many backends
        are down and why.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        f = TCPFixture(health=HealthCheckConfig(check="tcp"))
        [backend] = f.pool.backends
        backend.checkResult(False, "connection refused", 0.0)
        client = f.connectClient()
        self.assertEqual(f.reactor.tcpClients, [])
        self.assertTrue(client.disconnecting)
        client.drain()
        self.assertEqual(f.records()[0]["outcome"], "no backend available")
        [event] = [e for e in events if "why" in e]
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertEqual(
            formatEvent(event),
            "pg-front: closing connection from 192.0.2.7: no backend available "
            'in pool "pg": 1 of 1 down (127.0.0.1:5432: connection refused)',
        )

    def test_waitsForTheFirstRoundOfChecks(self) -> None:
        """
        A client that connects before the pool's first checks have a result
        waits for them instead of being closed: it is connected as soon as
        a first check brings a backend up.
        """
        f = TCPFixture(ports=(5432, 5434), health=HealthCheckConfig(check="tcp"))
        first, second = f.pool.backends
        client = f.connectClient()
        f.reactor.advance(0.2)
        self.assertEqual(f.reactor.tcpClients, [])
        self.assertFalse(client.disconnecting)
        first.checkResult(False, "connection refused", f.reactor.seconds())
        f.reactor.advance(0)
        self.assertEqual(f.reactor.tcpClients, [])
        second.checkResult(True, "connected", f.reactor.seconds())
        # Not while the result is recorded, but right after.
        self.assertEqual(f.reactor.tcpClients, [])
        f.reactor.advance(0)
        self.assertEqual(f.attempt()[:2], ("127.0.0.1", 5434))
        self.assertFalse(client.disconnecting)

    def test_firstRoundWaitEndsAtTheCheckTimeout(self) -> None:
        """
        The wait is bounded by the check C{timeout}: if no check result
        comes, the client is closed then, and nothing is left scheduled.
        """
        f = TCPFixture(health=HealthCheckConfig(check="tcp", timeout=1.5))
        client = f.connectClient()
        f.reactor.advance(1.4)
        self.assertFalse(client.disconnecting)
        f.reactor.advance(0.1)
        self.assertTrue(client.disconnecting)
        self.assertEqual(f.reactor.tcpClients, [])
        self.assertEqual(f.reactor.getDelayedCalls(), [])

    def test_clientGoneWhileWaiting(self) -> None:
        """
        A client that goes away while waiting for the first checks cancels
        the wait: no timer is left and no backend is tried later.
        """
        f = TCPFixture(health=HealthCheckConfig(check="tcp"))
        [backend] = f.pool.backends
        client = f.connectClient()
        client.loseConnection()
        client.drain()
        self.assertEqual(f.reactor.getDelayedCalls(), [])
        backend.checkResult(True, "connected", 0.0)
        f.reactor.advance(2)
        self.assertEqual(f.reactor.tcpClients, [])
        self.assertEqual(f.records()[0]["outcome"], "client closed")

    def test_passiveHealth(self) -> None:
        """
        Connection failures count toward C{passive_fall}.
        """
        f = TCPFixture(
            ports=(5432, 5434), health=HealthCheckConfig(check="none", passive_fall=2)
        )
        for _ in range(2):
            f.connectClient()
            f.failBackend(len(f.reactor.tcpClients) - 1)
            if f.attempt()[1] == 5434:
                f.completeBackend()
        self.assertIs(f.pool.backends[0].state, BackendState.DOWN)

    def test_clientGoneWhileConnecting(self) -> None:
        """
        A client that goes away while the backend is connected cancels the
        attempt, which does not count against the backend.
        """
        f = TCPFixture()
        client = f.connectClient()
        client.lose(ConnectionLost)
        self.assertTrue(f.reactor.connectors[0].stoppedConnecting)
        backend = f.pool.backends[0]
        self.assertEqual((backend.failures, backend.active), (0, 0))
        self.assertEqual(f.records()[0]["outcome"], "client aborted")
        self.assertEqual(f.stats.connectionsOpen, 0)


class ProxyProtocolTests(SynchronousTestCase):
    """
    C{send_proxy} and C{accept_proxy}.
    """

    def test_sendProxyV1(self) -> None:
        """
        A v1 header with the client as source and the frontend as
        destination goes to the backend before any client byte.
        """
        f = TCPFixture(send_proxy="v1")
        client = f.connectClient()
        client.protocol.dataReceived(b"early")
        backend = f.completeBackend()
        header, rest = bytes(backend.written).split(b"\r\n", 1)
        info = V1Parser.parse(header)
        self.assertEqual(info.source, CLIENT)
        self.assertEqual(info.destination, FRONTEND)
        self.assertEqual(rest, b"early")

    def test_sendProxyV2IPv6(self) -> None:
        """
        A v2 header carries IPv6 addresses.
        """
        f = TCPFixture(send_proxy="v2")
        peer = IPv6Address("TCP", "2001:db8::7", 51000)
        host = IPv6Address("TCP", "2001:db8::1", 5433)
        f.connectClient(peer, host)
        backend = f.completeBackend()
        info = V2Parser.parse(bytes(backend.written))
        self.assertEqual(
            (info.source.host, info.source.port), ("2001:db8:0:0:0:0:0:7", 51000)
        )
        self.assertEqual(
            (info.destination.host, info.destination.port),
            ("2001:db8:0:0:0:0:0:1", 5433),
        )

    def test_noSendProxy(self) -> None:
        """
        Without C{send_proxy}, nothing is written before the client's bytes.
        """
        f = TCPFixture()
        f.connectClient()
        backend = f.completeBackend()
        self.assertEqual(bytes(backend.written), b"")

    def acceptProxyFixture(self, **poolOptions: Any) -> TCPFixture:
        frontend = FrontendConfig(
            name="pg-front",
            listen=("tcp:5433",),
            pool="pg",
            mode="tcp",
            accept_proxy=True,
            header_timeout=5.0,
        )
        return TCPFixture(frontend=frontend, **poolOptions)

    def test_acceptProxy(self) -> None:
        """
        The PROXY header from a balancer in front is read (in pieces) before
        the backend is connected; its client address is logged and sent on;
        the bytes after it are relayed.
        """
        f = self.acceptProxyFixture(send_proxy="v1")
        original = IPv4Address("TCP", "203.0.113.9", 40000)
        target = IPv4Address("TCP", "198.51.100.1", 5432)
        header = proxyHeaderV2(original, target)
        client = f.connectClient()
        self.assertTrue(client.reading)
        client.receive(header[:10])
        self.assertEqual(f.reactor.tcpClients, [])
        client.receive(header[10:] + b"hello")
        self.assertFalse(client.reading)
        backend = f.completeBackend()
        self.assertEqual(
            bytes(backend.written), proxyHeaderV1(original, target) + b"hello"
        )
        client.lose()
        backend.drain()
        self.assertEqual(f.records()[0]["client"], "203.0.113.9")

    def test_acceptProxyUnknown(self) -> None:
        """
        A C{PROXY UNKNOWN} header keeps the connection's own addresses.
        """
        f = self.acceptProxyFixture(send_proxy="v1")
        client = f.connectClient()
        client.receive(b"PROXY UNKNOWN\r\n")
        backend = f.completeBackend()
        self.assertEqual(bytes(backend.written), proxyHeaderV1(CLIENT, FRONTEND))

    def test_acceptProxyInvalid(self) -> None:
        """
        A connection that does not start with a PROXY header is closed
        without connecting to a backend.
        """
        f = self.acceptProxyFixture()
        client = f.connectClient()
        client.receive(b"GET / HTTP/1.1\r\n")
        self.assertTrue(client.disconnecting)
        self.assertEqual(f.reactor.tcpClients, [])
        client.drain()
        self.assertEqual(f.records()[0]["outcome"], "invalid proxy header")

    def test_acceptProxyTimeout(self) -> None:
        """
        A connection without a complete PROXY header within the frontend's
        header timeout is closed.
        """
        f = self.acceptProxyFixture()
        client = f.connectClient()
        client.receive(b"PROXY TCP4 ")
        f.reactor.advance(5.0)
        self.assertTrue(client.disconnecting)
        client.drain()
        self.assertEqual(f.records()[0]["outcome"], "proxy header timeout")
        self.assertEqual(f.reactor.getDelayedCalls(), [])


class AccountingTests(SynchronousTestCase):
    """
    Frontend statistics and the access log.
    """

    def test_accessLogAndStats(self) -> None:
        """
        One access log line per connection, at close, with the byte counts;
        the frontend's statistics count the connection and its bytes.
        """
        f = TCPFixture()
        client = f.connectClient()
        f.reactor.advance(0.25)
        backend = f.completeBackend()
        client.receive(b"12345")
        backend.receive(b"123")
        self.assertEqual(f.lines, [])
        client.eof()
        backend.eof()
        client.drain()
        backend.drain()
        [record] = f.records()
        self.assertEqual(
            {k: v for k, v in record.items() if k != "time"},
            {
                "client": "192.0.2.7",
                "frontend": "pg-front",
                "pool": "pg",
                "backend": "127.0.0.1:5432",
                "attempts": 1,
                "retry_reasons": [],
                "strategy": "round-robin",
                "choice": "round robin: 127.0.0.1:5432",
                "from_client": 5,
                "to_client": 3,
                "duration_ms": 250.0,
                "outcome": "closed",
            },
        )
        self.assertEqual((f.stats.bytesIn, f.stats.bytesOut), (5, 3))
        self.assertEqual((f.stats.connectionsTotal, f.stats.connectionsOpen), (1, 0))

    def test_noAccessLog(self) -> None:
        """
        Without an access log, connections are still counted.
        """
        f = TCPFixture()
        f.factory.accessLog = None
        client = f.connectClient()
        client.lose()
        self.assertEqual(f.stats.connectionsOpen, 0)


class ClassifyConnectFailureTests(SynchronousTestCase):
    """
    Tests for L{lbtwist.failures.classifyConnectFailure}.
    """

    def test_kinds(self) -> None:
        """
        Refusals, timeouts and other errors are told apart.
        """
        cases = [
            (ierror.ConnectionRefusedError(), "connect_refused"),
            (ierror.TimeoutError(), "connect_timeout"),
            (ierror.TCPTimedOutError(), "connect_timeout"),
            (DeferredTimeoutError(), "connect_timeout"),
            (CancelledError(), "connect_timeout"),
            (ierror.ConnectingCancelledError(None), "connect_timeout"),
            (ierror.NoRouteError(), "connect_error"),
            (ierror.DNSLookupError("x"), "connect_error"),
        ]
        for exception, kind in cases:
            self.assertEqual(classifyConnectFailure(Failure(exception)).kind, kind)
        self.assertEqual(
            classifyConnectFailure(Failure(ierror.ConnectionRefusedError())).reason,
            "connection refused",
        )


class BackendEndpointTests(SynchronousTestCase):
    """
    Tests for L{lbtwist.endpoints.backendEndpoint}.
    """

    def test_endpoints(self) -> None:
        """
        IP literals are connected to directly, names are resolved.
        """
        reactor = MemoryReactorClock()
        self.assertIsInstance(
            backendEndpoint(reactor, backendConfig(1, "127.0.0.1"), 1.0),
            TCP4ClientEndpoint,
        )
        self.assertIsInstance(
            backendEndpoint(reactor, backendConfig(1, "::1"), 1.0), TCP6ClientEndpoint
        )
        self.assertIsInstance(
            backendEndpoint(reactor, backendConfig(1, "db.example"), 1.0),
            HostnameEndpoint,
        )

    def test_injected(self) -> None:
        """
        A factory may be given its own way to reach backends.
        """
        f = TCPFixture()
        seen = []

        def endpoint(backend: Any) -> Any:
            seen.append(backend)
            return backendEndpoint(f.reactor, evolve(backend.config, port=6000), 1.0)

        f.factory.backendEndpoint = endpoint
        f.connectClient()
        self.assertEqual(seen, f.pool.backends)
        self.assertEqual(f.attempt()[1], 6000)
