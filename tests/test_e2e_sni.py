# -*- test-case-name: tests.test_e2e_sni -*-
"""
End-to-end SNI routing in TCP mode (TLS passthrough) through C{twistd -n
lbtwist}: two real TLS backends, each with its own certificate made at test
time, behind one TCP frontend with two SNI routes; the client's TLS session
is with the backend itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable

from cryptography.hazmat.primitives import serialization
from twisted.trial.unittest import SynchronousTestCase

from tests.harness import Lbtwist, exchange, jsonLogRecords, parseResponse, request
from tests.tcpharness import readUntilEOF, waitUntil
from tests.test_tls import Certificates, Issued, makeLeaf, serverPEM, writeFile


class TLSEchoBackend:
    """
    A TLS server on 127.0.0.1 (Python's C{ssl}, one thread a connection)
    that answers each connection with C{"<label> heard: "} and then echoes
    what it reads.

    @ivar fingerprint: The SHA-256 of its certificate (DER).
    @ivar serverNames: The SNI each connection's handshake carried.
    """

    def __init__(
        self,
        addCleanup: Callable[[Callable[[], object]], object],
        label: str,
        pemPath: str,
        der: bytes,
    ) -> None:
        self.label = label
        self.fingerprint = hashlib.sha256(der).hexdigest()
        self.serverNames: list[str | None] = []
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(pemPath)
        self.context.sni_callback = self._serverName
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        addCleanup(self.listener.close)
        threading.Thread(target=self._accept, daemon=True).start()

    def _serverName(self, sock: object, name: str | None, context: object) -> None:
        self.serverNames.append(name)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        try:
            with self.context.wrap_socket(raw, server_side=True) as sock:
                sock.sendall(f"{self.label} heard: ".encode())
                while chunk := sock.recv(65536):
                    sock.sendall(chunk)
        except (OSError, ssl.SSLError):
            pass
        finally:
            raw.close()


def _der(leaf: Issued) -> bytes:
    """
    @return: A certificate in DER, as a TLS client receives it.
    """
    return leaf.cert.public_bytes(serialization.Encoding.DER)


def tlsTalk(
    port: int, serverName: str | None, caFile: str, payload: bytes
) -> tuple[str, bytes]:
    """
    Connect through lbtwist with Python's C{ssl} client verifying the
    certificate for C{serverName} against C{caFile}, send C{payload}, half
    close, read until the backend closes.

    @return: The SHA-256 of the certificate the client got, and what it
        read.
    """
    context = ssl.create_default_context(cafile=caFile)
    if serverName is None:
        context.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=serverName) as sock:
            der = sock.getpeercert(binary_form=True)
            assert der is not None
            sock.sendall(payload)
            received = b""
            deadline = time.monotonic() + 5
            while not received.endswith(payload) and time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
    return hashlib.sha256(der).hexdigest(), received


class SNIPassthroughTests(SynchronousTestCase):
    """
    A TCP frontend routing TLS connections by SNI to two TLS backends (and
    a default one), and one without a default pool.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.certs = Certificates()
        cls.addClassCleanup(cls.certs.cleanUp)
        fallback = makeLeaf(cls.certs.ca, ["fallback.example"], addresses=["127.0.0.1"])
        fallbackPath = writeFile(
            cls.certs.directory, "fallback.pem", serverPEM(fallback)
        )
        cls.a = TLSEchoBackend(
            cls.addClassCleanup, "A", cls.certs.aPath, _der(cls.certs.a)
        )
        cls.b = TLSEchoBackend(
            cls.addClassCleanup, "B", cls.certs.bPath, _der(cls.certs.b)
        )
        cls.fallback = TLSEchoBackend(
            cls.addClassCleanup, "F", fallbackPath, _der(fallback)
        )
        cls.logPath = os.path.join(cls.certs.directory, "access.log")
        pools = "".join(f"""
[[pool]]
name = "{name}"
[pool.health]
check = "none"
[[pool.backend]]
url = "tcp://127.0.0.1:{backend.port}"
""" for name, backend in [("a", cls.a), ("b", cls.b), ("fallback", cls.fallback)])
        config = f"""
[[frontend]]
name = "sni"
mode = "tcp"
listen = "tcp:0:interface=127.0.0.1"
pool = "fallback"
header_timeout = 1.0

[[frontend.route]]
sni = ["a.example", "www.a.example"]
pool = "a"

[[frontend.route]]
sni = ["*.b.example"]
pool = "b"

[[frontend]]
name = "strict"
mode = "tcp"
listen = "tcp:0:interface=127.0.0.1"

[[frontend.route]]
sni = ["a.example"]
pool = "a"
{pools}
[settings]
access_log = "{cls.logPath}"
access_log_format = "json"

[admin]
listen = "tcp:0:interface=127.0.0.1"
"""
        cls.lb = Lbtwist(cls, config)

    def logLines(self) -> list[dict[str, object]]:
        """
        @return: The access log's lines so far.
        """
        return jsonLogRecords(self.logPath)

    def waitForLog(self, count: int) -> list[dict[str, object]]:
        """
        @return: The access log's lines once there are C{count} more than
            when this test started.
        """
        waitUntil(lambda: len(self.logLines()) >= count, message=f"{count} log lines")
        return self.logLines()

    def test_routesToEachBackend(self) -> None:
        """
        C{a.example} reaches backend A and C{shop.b.example} backend B
        (names match case-insensitively): the client verifies the backend's
        own certificate (the same bytes), the backend sees the client's SNI
        exactly as sent, and the data goes both ways.
        """
        before = len(self.logLines())
        for name, backend in [
            ("a.example", self.a),
            ("www.a.example", self.a),
            ("shop.b.example", self.b),
            ("SHOP.B.EXAMPLE", self.b),
        ]:
            payload = os.urandom(3000)
            fingerprint, received = tlsTalk(
                self.lb.ports["sni"], name, self.certs.caPath, payload
            )
            self.assertEqual(fingerprint, backend.fingerprint, name)
            self.assertEqual(
                received, f"{backend.label} heard: ".encode() + payload, name
            )
            self.assertEqual(backend.serverNames[-1], name, name)  # as sent
        lines = self.waitForLog(before + 4)[before:]
        self.assertEqual(
            [(line["frontend"], line["pool"]) for line in lines],
            [("sni", "a"), ("sni", "a"), ("sni", "b"), ("sni", "b")],
        )

    def test_unknownNameToDefaultPool(self) -> None:
        """
        A name no route matches, or no name at all, goes to the frontend's
        default pool.
        """
        for name in ("fallback.example", None):
            fingerprint, received = tlsTalk(
                self.lb.ports["sni"], name, self.certs.caPath, b"ping"
            )
            self.assertEqual(fingerprint, self.fallback.fingerprint)
            self.assertEqual(received, b"F heard: ping")

    def test_unknownNameClosedWithoutDefault(self) -> None:
        """
        Without a default pool, a name no route matches gets the connection
        closed (the handshake fails), logged with the name; a matching one
        still gets through.
        """
        before = len(self.logLines())
        with self.assertRaises((ssl.SSLError, OSError)):
            tlsTalk(self.lb.ports["strict"], "nope.example", self.certs.caPath, b"x")
        fingerprint, _ = tlsTalk(
            self.lb.ports["strict"], "a.example", self.certs.caPath, b"x"
        )
        self.assertEqual(fingerprint, self.a.fingerprint)
        lines = self.waitForLog(before + 2)[before:]
        refused = [line for line in lines if line["outcome"] != "closed"]
        self.assertIn(
            ("strict", None, None, 'no route for SNI "nope.example"'),
            [(l["frontend"], l["pool"], l["backend"], l["outcome"]) for l in refused],
        )
        self.lb.waitForLine(
            r'strict: closing connection from 127\.0\.0\.1: no route for SNI "nope\.example"',
            5,
        )

    def test_notTLSClosed(self) -> None:
        """
        A client speaking something else than TLS is closed without a
        byte.
        """
        before = len(self.logLines())
        with socket.create_connection(
            ("127.0.0.1", self.lb.ports["sni"]), timeout=5
        ) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
            received, ending = readUntilEOF(sock, timeout=5)
        self.assertEqual((received, ending), (b"", "eof"))
        lines = self.waitForLog(before + 1)[before:]
        self.assertEqual(lines[0]["outcome"], "not TLS")

    def test_silentClientTimesOut(self) -> None:
        """
        A client that sends part of a ClientHello and stops is closed after
        the frontend's C{header_timeout}.
        """
        with socket.create_connection(
            ("127.0.0.1", self.lb.ports["sni"]), timeout=5
        ) as sock:
            sock.sendall(b"\x16\x03\x01\x02\x00\x01")
            started = time.monotonic()
            received, ending = readUntilEOF(sock, timeout=5)
            elapsed = time.monotonic() - started
        self.assertEqual((received, ending), (b"", "eof"))
        self.assertGreater(elapsed, 0.8)
        self.assertLess(elapsed, 3.0)

    def test_adminShowsRoutedPools(self) -> None:
        """
        The admin page lists a frontend without a default pool by its
        routes' pools.
        """
        data, _ = exchange(self.lb.ports["admin"], request("GET", "/", close=True))
        response, _ = parseResponse(data)
        self.assertEqual(response.status, 200)
        self.assertIn(b"fallback<br>a<br>b", response.body)
