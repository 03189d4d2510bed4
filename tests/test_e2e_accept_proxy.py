"""
End-to-end tests of C{accept_proxy} on HTTP frontends, plain and behind
TLS: the PROXY header's source is the client everywhere after it.
"""

from __future__ import annotations

import socket
import ssl

from twisted.trial.unittest import SynchronousTestCase

from tests.harness import Lbtwist, ScriptedBackend, exchange, parseResponses, request
from tests.test_tls import Certificates

_HEADER = b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 8443\r\n"


class AcceptProxyHTTPTests(SynchronousTestCase):
    """
    An HTTP frontend with C{accept_proxy}, without and with TLS.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.certs = Certificates()
        cls.addClassCleanup(cls.certs.cleanUp)
        cls.backend = ScriptedBackend("app")
        cls.addClassCleanup(cls.backend.stop)
        config = f"""
[[frontend]]
name = "plain"
listen = "tcp:0:interface=127.0.0.1"
pool = "app"
accept_proxy = true
header_timeout = 1.0

[[frontend]]
name = "tls"
listen = "tcp:0:interface=127.0.0.1"
pool = "app"
accept_proxy = true
header_timeout = 1.0
[frontend.tls]
certificates = ["{cls.certs.aPath}"]

[[pool]]
name = "app"
[pool.health]
check = "none"
[[pool.backend]]
url = "{cls.backend.url}"
"""
        cls.lb = Lbtwist(cls, config)

    def test_plain(self) -> None:
        """
        Over plain HTTP, the backend sees the header's source in
        C{X-Forwarded-For}.
        """
        data, _ = exchange(
            self.lb.ports["plain"], _HEADER + request("GET", "/plain", close=True)
        )
        self.assertEqual([r.status for r in parseResponses(data)], [200])
        received = self.backend.requestsFor(b"/plain")[-1]
        self.assertEqual(received.header(b"x-forwarded-for"), b"203.0.113.9")

    def test_tls(self) -> None:
        """
        Over TLS the header comes first, in clear, then the handshake; the
        backend sees the header's source and C{X-Forwarded-Proto: https}.
        """
        context = ssl.create_default_context(cafile=self.certs.caPath)
        with socket.create_connection(("127.0.0.1", self.lb.ports["tls"]), timeout=5) as raw:
            raw.sendall(_HEADER)
            with context.wrap_socket(raw, server_hostname="a.example") as sock:
                sock.sendall(request("GET", "/tls", host="a.example", close=True))
                received = b""
                while chunk := sock.recv(65536):
                    received += chunk
        self.assertEqual([r.status for r in parseResponses(received)], [200])
        forwarded = self.backend.requestsFor(b"/tls")[-1]
        self.assertEqual(forwarded.header(b"x-forwarded-for"), b"203.0.113.9")
        self.assertEqual(forwarded.header(b"x-forwarded-proto"), b"https")

    def test_missingHeaderClosed(self) -> None:
        """
        A connection without a PROXY header is closed, nothing forwarded.
        """
        before = len(self.backend.received)
        data, ending = exchange(
            self.lb.ports["plain"], request("GET", "/nohdr", close=True), timeout=3
        )
        self.assertIn(ending, ("eof", "reset"))
        self.assertEqual(parseResponses(data), [])
        self.assertEqual(len(self.backend.received), before)
