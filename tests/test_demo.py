# -*- test-case-name: tests.test_demo -*-
"""
Tests for L{lbtwist.demo}.
"""

from __future__ import annotations

from treq.testing import StubTreq
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from lbtwist.config import ConfigError
from lbtwist.demo import DemoBackend, demoConfig, demoServices
from lbtwist.listener import Listener


class DemoBackendTests(SynchronousTestCase):
    """
    Tests for L{DemoBackend}, rendered through L{StubTreq}.
    """

    def setUp(self) -> None:
        self.treq = StubTreq(DemoBackend("demo-2"))

    def request(
        self, method: str, url: str
    ) -> tuple[int, dict[bytes, list[bytes]], bytes]:
        """
        Make a request and return its status, headers and body.
        """
        response = self.successResultOf(self.treq.request(method, url))
        body = self.successResultOf(response.content())
        headers = dict(response.headers.getAllRawHeaders())
        return response.code, headers, body

    def test_saysWhoServed(self) -> None:
        """
        Any path gets 200, plain text, an C{X-Served-By} header and a body
        naming the backend, the method and the path.
        """
        code, headers, body = self.request("GET", "http://127.0.0.1:9002/some/path")
        self.assertEqual(code, 200)
        self.assertEqual(headers[b"Content-Type"], [b"text/plain"])
        self.assertEqual(headers[b"X-Served-By"], [b"demo-2"])
        self.assertEqual(body, b"Hello from demo-2 (GET /some/path)\n")

    def test_anyMethod(self) -> None:
        """
        Methods other than GET are answered the same way.
        """
        code, headers, body = self.request("DELETE", "http://127.0.0.1:9002/")
        self.assertEqual(code, 200)
        self.assertEqual(body, b"Hello from demo-2 (DELETE /)\n")

    def test_queryNotInPath(self) -> None:
        """
        The body names the path without the query string.
        """
        code, headers, body = self.request("GET", "http://127.0.0.1:9002/a?b=c")
        self.assertEqual(body, b"Hello from demo-2 (GET /a)\n")

    def test_head(self) -> None:
        """
        HEAD gets the headers of GET, including its length, and no body.
        """
        code, headers, body = self.request("HEAD", "http://127.0.0.1:9002/x")
        self.assertEqual(code, 200)
        self.assertEqual(headers[b"X-Served-By"], [b"demo-2"])
        self.assertEqual(
            headers[b"Content-Length"],
            [b"%d" % (len(b"Hello from demo-2 (HEAD /x)\n"),)],
        )
        self.assertEqual(body, b"")

    def test_healthz(self) -> None:
        """
        C{/healthz} answers C{ok}.
        """
        code, headers, body = self.request("GET", "http://127.0.0.1:9002/healthz")
        self.assertEqual(code, 200)
        self.assertEqual(headers[b"X-Served-By"], [b"demo-2"])
        self.assertEqual(body, b"ok\n")


class DemoServicesTests(SynchronousTestCase):
    """
    Tests for L{demoServices}.
    """

    def test_listens(self) -> None:
        """
        One service per port listens on the interface and serves a
        L{DemoBackend} named after its position.
        """
        reactor = MemoryReactorClock()
        services = demoServices(reactor, ports=(9101, 9102, 9103), interface="::1")
        self.assertEqual(
            [(s.label, s.description) for s in services],  # type: ignore[attr-defined]
            [
                ("demo backend demo-1", "tcp:9101"),
                ("demo backend demo-2", "tcp:9102"),
                ("demo backend demo-3", "tcp:9103"),
            ],
        )
        for service in services:
            self.assertIsInstance(service, Listener)
            service.startService()
            self.addCleanup(service.stopService)
        listening = [
            (port, interface, factory.resource.name)
            for port, factory, backlog, interface in reactor.tcpServers
            if isinstance(factory, Site)
        ]
        self.assertEqual(
            listening,
            [(9101, "::1", "demo-1"), (9102, "::1", "demo-2"), (9103, "::1", "demo-3")],
        )

    def test_defaults(self) -> None:
        """
        By default three backends listen on 127.0.0.1:9001-9003.
        """
        reactor = MemoryReactorClock()
        for service in demoServices(reactor):
            service.startService()
            self.addCleanup(service.stopService)
        self.assertEqual(
            [(port, interface) for port, _, _, interface in reactor.tcpServers],
            [(9001, "127.0.0.1"), (9002, "127.0.0.1"), (9003, "127.0.0.1")],
        )


class DemoConfigTests(SynchronousTestCase):
    """
    Tests for L{demoConfig}.
    """

    def test_default(self) -> None:
        """
        The default demo config balances round-robin across the three demo
        backends with HTTP checks of C{/healthz}, behind a frontend on
        127.0.0.1:8080.
        """
        config = demoConfig()
        [frontend] = config.frontends
        self.assertEqual(frontend.name, "demo")
        self.assertEqual(frontend.listen, ("tcp:8080:interface=127.0.0.1",))
        self.assertEqual(frontend.pool, "demo")
        pool = config.pool("demo")
        self.assertEqual(pool.strategy, "round-robin")
        self.assertEqual(
            (pool.health.check, pool.health.path, pool.health.interval),
            ("http", "/healthz", 2.0),
        )
        self.assertEqual(
            [(b.name, b.address) for b in pool.backends],
            [
                ("demo-1", "127.0.0.1:9001"),
                ("demo-2", "127.0.0.1:9002"),
                ("demo-3", "127.0.0.1:9003"),
            ],
        )

    def test_custom(self) -> None:
        """
        Listen descriptions and ports can be chosen.
        """
        config = demoConfig(listen=("tcp:0", "tcp6:0"), ports=(7001, 7002))
        self.assertEqual(config.frontends[0].listen, ("tcp:0", "tcp6:0"))
        self.assertEqual(
            [b.address for b in config.pool("demo").backends],
            ["127.0.0.1:7001", "127.0.0.1:7002"],
        )

    def test_validated(self) -> None:
        """
        The config goes through validation: no ports means no backends, an
        error.
        """
        self.assertRaises(ConfigError, demoConfig, ports=())
