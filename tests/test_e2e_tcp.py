# -*- test-case-name: tests.test_e2e_tcp -*-
"""
End-to-end: TCP mode (proxy-rules.md, "TCP mode"; issue 5) through a real
C{twistd -n lbtwist} on loopback: byte-exact relaying both ways, backends
that speak first, half-close both ways, retries on connect failure, idle
timeout, least-connections, bounded memory with a client that stops
reading, file descriptors after 1,000 connections, the PROXY protocol out
(v1, v2) and in (C{accept_proxy}), and the access log.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.harness import (
    jsonLogRecords,
    Lbtwist,
    MiB,
    ScriptedBackend,
    closedPort,
    exchange,
    parseResponse,
    request,
)
from tests.tcpharness import (
    LISTEN,
    TCPBackend,
    configWith,
    connect,
    fdCount,
    parseProxyHeader,
    proxyV1,
    raiseFileLimit,
    readExactly,
    readLine,
    readUntilEOF,
    sha256,
    tcpFrontend,
    transfer,
    waitUntil,
)

SIZES = [0, 1, 64 * 1024, 10 * MiB, 40 * MiB]


def _start(owner: type, *backends: TCPBackend | ScriptedBackend) -> None:
    for backend in backends:
        owner.addClassCleanup(backend.close)  # type: ignore[attr-defined]


class RelayTests(SynchronousTestCase):
    """
    Bytes are relayed exactly, whoever speaks first, and half-close is
    propagated both ways.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.echo = TCPBackend("echo", "echo")
        cls.sink = TCPBackend("sink", "sink")
        cls.source = TCPBackend("source", "source")
        cls.banner = TCPBackend("banner", "banner")
        cls.eofThenTalk = TCPBackend("eof-then-talk", "eof-then-talk")
        cls.talkThenEOF = TCPBackend("talk-then-eof", "talk-then-eof")
        backends = [
            cls.echo,
            cls.sink,
            cls.source,
            cls.banner,
            cls.eofThenTalk,
            cls.talkThenEOF,
        ]
        _start(cls, *backends)
        cls.lb = Lbtwist(
            cls, configWith(*(tcpFrontend(b.label, [b]) for b in backends))
        )

    def test_echoIsByteExact(self) -> None:
        """
        Random payloads of 0 B to 40 MiB come back from an echo backend
        byte for byte, then EOF.
        """
        for size in SIZES:
            payload = os.urandom(size)
            start = time.monotonic()
            received, ending = transfer(self.lb.ports["echo"], payload, timeout=30)
            elapsed = time.monotonic() - start
            self.assertEqual(
                (len(received), sha256(received), ending),
                (size, sha256(payload), "eof"),
                f"size {size}",
            )
            if size >= 10 * MiB:
                print(
                    f"\n[tcp] echo {size // MiB} MiB both ways: {elapsed:.2f}s "
                    f"({2 * size / MiB / elapsed:.0f} MiB/s total)"
                )

    def test_clientToBackendIsByteExact(self) -> None:
        """
        The backend receives exactly the random payload the client sent
        (checked by the backend's SHA-256 and count).
        """
        for size in SIZES:
            payload = os.urandom(size)
            received, ending = transfer(self.lb.ports["sink"], payload, timeout=30)
            self.assertEqual(
                received, b"%s %d\n" % (sha256(payload).encode(), size), f"size {size}"
            )
            self.assertEqual(ending, "eof")

    def test_backendToClientIsByteExact(self) -> None:
        """
        The client receives exactly the random bytes the backend sent.
        """
        for size in SIZES:
            number = self.source.accepted + 1
            received, ending = transfer(
                self.lb.ports["source"], b"%d\n" % (size,), timeout=30
            )
            sent = self.source.finished(number).notes
            self.assertEqual(
                (len(received), sha256(received), ending),
                (sent["count"], sent["sha256"], "eof"),
                f"size {size}",
            )

    def test_backendSpeaksFirst(self) -> None:
        """
        A backend that sends a banner before reading anything is heard by a
        client that sends nothing; the conversation then goes on.
        """
        with connect(self.lb.ports["banner"]) as sock:
            self.assertEqual(readLine(sock, timeout=3), b"220 banner ready\r\n")
            sock.sendall(b"EHLO client\r\n")
            self.assertEqual(readExactly(sock, 13, timeout=3), b"EHLO client\r\n")

    def test_clientHalfClose(self) -> None:
        """
        A client's C{shutdown(SHUT_WR)} reaches the backend as EOF, and what
        the backend sends after that EOF still reaches the client.
        """
        number = self.eofThenTalk.accepted + 1
        with connect(self.lb.ports["eof-then-talk"]) as sock:
            sock.sendall(b"request")
            sock.shutdown(socket.SHUT_WR)
            received, ending = readUntilEOF(sock, timeout=5)
        self.assertEqual(
            (received, ending),
            (b"got request; more after EOF; and the last words", "eof"),
        )
        connection = self.eofThenTalk.finished(number)
        self.assertTrue(connection.sawEOF)
        self.assertEqual(connection.received, b"request")

    def test_backendHalfClose(self) -> None:
        """
        A backend's C{shutdown(SHUT_WR)} reaches the client as EOF, and the
        client can still send: the backend receives it.
        """
        number = self.talkThenEOF.accepted + 1
        with connect(self.lb.ports["talk-then-eof"]) as sock:
            self.assertEqual(
                readLine(sock, timeout=3), b"backend done talking, still listening\n"
            )
            self.assertEqual(readUntilEOF(sock, timeout=3), (b"", "eof"))
            time.sleep(0.1)
            sock.sendall(b"client still talking")
            time.sleep(0.1)
            sock.sendall(b", and more")
            sock.shutdown(socket.SHUT_WR)
            connection = self.talkThenEOF.finished(number)
            self.assertEqual(connection.received, b"client still talking, and more")
            # Both directions are done: lbtwist closes the client too.
            self.assertEqual(readUntilEOF(sock, timeout=3)[1], "eof")


class ConnectFailureTests(SynchronousTestCase):
    """
    A backend that refuses connections makes lbtwist try the next one; when
    all refuse, the client is closed at once.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.live = TCPBackend("live", "banner")
        _start(cls, cls.live)
        cls.dead = closedPort()
        cls.lb = Lbtwist(
            cls,
            configWith(
                tcpFrontend(
                    "retry",
                    [cls.dead, cls.live],
                    health={"check": "none", "passive_fall": 2},
                    strategy="round-robin",
                    retries=2,
                    passive_cooldown=30.0,
                ),
                tcpFrontend(
                    "nowhere",
                    [closedPort(), closedPort()],
                    health={"check": "none", "passive_fall": 100},
                    retries=2,
                ),
            ),
        )

    def test_retriesOnNextBackend(self) -> None:
        """
        With a refusing backend first in the pool, every connection reaches
        the live backend, and the refusals count as passive failures: the
        log says the refusing backend is down.
        """
        for i in range(8):
            with connect(self.lb.ports["retry"]) as sock:
                self.assertEqual(readLine(sock, timeout=3), b"220 live ready\r\n", i)
                sock.sendall(b"%d" % (i,))
                self.assertEqual(readExactly(sock, 1, timeout=3), b"%d" % (i,))
        self.lb.waitForLine(
            re.escape(f"backend retry/127.0.0.1:{self.dead} is down"), timeout=3
        )

    def test_allRefusedClosesClient(self) -> None:
        """
        When every backend refuses, the client is closed promptly and gets
        no data.
        """
        for _ in range(3):
            start = time.monotonic()
            with connect(self.lb.ports["nowhere"]) as sock:
                try:
                    sock.sendall(b"hello?")
                except OSError:
                    pass
                received, ending = readUntilEOF(sock, timeout=5)
            elapsed = time.monotonic() - start
            self.assertEqual(received, b"")
            self.assertIn(ending, ("eof", "reset"))
            self.assertLess(elapsed, 1.5)


class IdleTimeoutTests(SynchronousTestCase):
    """
    The pool's C{idle_timeout} closes connections without traffic, and only
    those.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.echo = TCPBackend("echo", "echo")
        _start(cls, cls.echo)
        cls.lb = Lbtwist(
            cls, configWith(tcpFrontend("idle", [cls.echo], idle_timeout=1.0))
        )

    def test_idleConnectionIsClosed(self) -> None:
        """
        A connection idle for C{idle_timeout} (1 s) is closed by lbtwist on
        both sides within about 1-2.5 s.
        """
        number = self.echo.accepted + 1
        with connect(self.lb.ports["idle"]) as sock:
            sock.sendall(b"ping")
            self.assertEqual(readExactly(sock, 4, timeout=3), b"ping")
            start = time.monotonic()
            received, ending = readUntilEOF(sock, timeout=5)
            elapsed = time.monotonic() - start
        self.assertEqual(received, b"")
        self.assertIn(ending, ("eof", "reset"))
        self.assertGreater(elapsed, 0.7)
        self.assertLess(elapsed, 2.5)
        self.echo.finished(number, timeout=2)

    def test_busyConnectionIsKept(self) -> None:
        """
        A connection that sends something every 0.3 s for 3 s is not closed.
        """
        with connect(self.lb.ports["idle"]) as sock:
            for i in range(10):
                message = b"tick %d;" % (i,)
                sock.sendall(message)
                self.assertEqual(readExactly(sock, len(message), timeout=2), message)
                time.sleep(0.3)
            sock.shutdown(socket.SHUT_WR)
            self.assertEqual(readUntilEOF(sock, timeout=3), (b"", "eof"))


class LeastConnectionsTests(SynchronousTestCase):
    """
    C{least-connections} counts open TCP connections.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.a = TCPBackend("a", "banner")
        cls.b = TCPBackend("b", "banner")
        _start(cls, cls.a, cls.b)
        cls.lb = Lbtwist(
            cls,
            configWith(tcpFrontend("lc", [cls.a, cls.b], strategy="least-connections")),
        )

    def _open(self, count: int) -> list[tuple[socket.socket, bytes]]:
        opened = []
        for _ in range(count):
            sock = connect(self.lb.ports["lc"])
            self.addCleanup(sock.close)
            banner = readLine(sock, timeout=3)
            opened.append((sock, banner.split()[1]))
        return opened

    def test_splitsByOpenConnections(self) -> None:
        """
        Ten long-lived connections split 5/5; after three of one backend's
        close, the next three all go to that backend.
        """
        opened = self._open(10)
        labels = [label for _, label in opened]
        self.assertEqual((labels.count(b"a"), labels.count(b"b")), (5, 5), labels)
        self.assertEqual((self.a.open, self.b.open), (5, 5))
        onA = [sock for sock, label in opened if label == b"a"]
        for sock in onA[:3]:
            sock.close()
        waitUntil(lambda: self.a.open == 2, timeout=3, message="a to see 3 closes")
        time.sleep(0.3)
        labels = [label for _, label in self._open(3)]
        self.assertEqual(labels, [b"a", b"a", b"a"])
        self.assertEqual((self.a.open, self.b.open), (5, 5))


def _readAll(sock: socket.socket, buffer: memoryview) -> tuple[int, float]:
    """
    Read everything until EOF into a reused buffer, then close C{sock}.

    @return: the byte count and the seconds it took.
    """
    count = 0
    start = time.monotonic()
    with sock:
        sock.settimeout(30)
        while True:
            n = sock.recv_into(buffer)
            if not n:
                break
            count += n
    return count, time.monotonic() - start


class SlowReaderTests(SynchronousTestCase):
    """
    A client that stops reading while the backend sends 1 GiB leaves
    lbtwist's memory bounded; then every byte arrives.
    """

    SIZE = 1024 * MiB

    @classmethod
    def setUpClass(cls) -> None:
        cls.flood = TCPBackend("flood", "flood", floodSize=cls.SIZE)
        _start(cls, cls.flood)
        cls.lb = Lbtwist(cls, configWith(tcpFrontend("flood", [cls.flood])))

    def test_memoryBoundedThenEverythingArrives(self) -> None:
        """
        While the client reads nothing for 3 s, lbtwist's RSS stays below
        its baseline + 64 MiB and the backend is held back; then reading
        fast gets exactly 1 GiB.
        """
        time.sleep(0.3)
        baseline = self.lb.rss()
        peak = baseline
        samples = []
        sock = connect(self.lb.ports["flood"], timeout=30)
        self.addCleanup(sock.close)
        stalled = time.monotonic() + 3
        while time.monotonic() < stalled:
            rss = self.lb.rss()
            peak = max(peak, rss)
            samples.append((rss, self.flood.sent))
            time.sleep(0.1)
        sentWhileStalled = self.flood.sent
        peakStalled = peak
        # Backpressure: the backend is not allowed to send the whole 1 GiB,
        # and it is held still (only kernel buffers fill).
        self.assertLess(sentWhileStalled, 256 * MiB)
        self.assertEqual(samples[-10][1], sentWhileStalled, "backend still sending")

        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                try:
                    peak = max(peak, self.lb.rss())
                except (OSError, AssertionError):
                    return
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        view = memoryview(bytearray(4 * MiB))
        count, elapsed = _readAll(sock, view)
        stop.set()
        sampler.join(2)
        print(
            f"\n[tcp] slow reader, {self.SIZE // MiB} MiB from the backend: "
            f"RSS baseline {baseline / 1024:.1f} MiB, peak while stalled "
            f"{peakStalled / 1024:.1f} MiB (+{(peakStalled - baseline) / 1024:.1f}), "
            f"peak overall {peak / 1024:.1f} MiB (+{(peak - baseline) / 1024:.1f}); "
            f"backend sent {sentWhileStalled / MiB:.1f} MiB while the client "
            f"read nothing; then {count / MiB:.0f} MiB read in {elapsed:.2f}s "
            f"({count / MiB / elapsed:.0f} MiB/s through lbtwist)"
        )
        self.assertEqual(count, self.SIZE)
        self.assertLess(peak, baseline + 64 * 1024)
        direct = _readAll(connect(self.flood.port, timeout=30), view)
        print(
            f"[tcp] the same {direct[0] / MiB:.0f} MiB read directly from the "
            f"backend: {direct[0] / MiB / direct[1]:.0f} MiB/s"
        )


class FileDescriptorTests(SynchronousTestCase):
    """
    File descriptors return to their baseline after 1,000 concurrent
    connections close.
    """

    COUNT = 1000

    @classmethod
    def setUpClass(cls) -> None:
        raiseFileLimit(4 * cls.COUNT + 200)
        cls.echo = TCPBackend("echo", "echo")
        _start(cls, cls.echo)
        cls.lb = Lbtwist(cls, configWith(tcpFrontend("many", [cls.echo])))

    def test_fdsReturnToBaseline(self) -> None:
        """
        Open 1,000 connections through lbtwist at once, echo a byte on each,
        close them all: lbtwist's descriptors come back to baseline +/- 2.
        """
        port = self.lb.ports["many"]
        self.assertEqual(transfer(port, b"warm-up", timeout=5), (b"warm-up", "eof"))
        waitUntil(lambda: self.echo.open == 0, timeout=3)
        time.sleep(0.3)
        pid = self.lb.process.pid
        baseline = fdCount(pid)
        socks = []
        try:
            for _ in range(self.COUNT):
                socks.append(connect(port, timeout=10))
            for sock in socks:
                sock.sendall(b"x")
            for i, sock in enumerate(socks):
                self.assertEqual(readExactly(sock, 1, timeout=10), b"x", i)
            waitUntil(lambda: self.echo.open == self.COUNT, timeout=10)
            peak = fdCount(pid)
        finally:
            for sock in socks:
                sock.close()
        took = waitUntil(
            lambda: fdCount(pid) <= baseline + 2,
            timeout=10,
            message=lambda: f"fds back to {baseline} (now {fdCount(pid)})",
        )
        waitUntil(lambda: self.echo.open == 0, timeout=5)
        final = fdCount(pid)
        print(
            f"\n[tcp] fds: baseline {baseline}, with {self.COUNT} connections "
            f"{peak}, after closing {final} (back in {took:.2f}s)"
        )
        self.assertGreaterEqual(peak, baseline + 2 * self.COUNT - 2)
        self.assertLessEqual(abs(final - baseline), 2)


class ProxyProtocolTests(SynchronousTestCase):
    """
    C{send_proxy} writes a PROXY v1 or v2 header that Twisted's parsers
    read back; C{accept_proxy} makes the address in an incoming header the
    client's.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.v1 = TCPBackend("v1", "proxy")
        cls.v2 = TCPBackend("v2", "proxy")
        cls.behind = TCPBackend("behind", "proxy")
        cls.http = ScriptedBackend("http")
        _start(cls, cls.v1, cls.v2, cls.behind, cls.http)
        cls.lb = Lbtwist(
            cls,
            configWith(
                tcpFrontend("v1", [cls.v1], send_proxy="v1"),
                tcpFrontend("v2", [cls.v2], send_proxy="v2"),
                tcpFrontend(
                    "behind",
                    [cls.behind],
                    frontend={"accept_proxy": True},
                    send_proxy="v2",
                ),
                (
                    {
                        "name": "web",
                        "listen": LISTEN,
                        "pool": "app",
                        "accept_proxy": True,
                    },
                    {
                        "name": "app",
                        "connect_timeout": 1.0,
                        "health": {"check": "none"},
                        "backends": [cls.http.url],
                    },
                ),
            ),
        )

    def _sendThrough(
        self, frontend: str, backend: TCPBackend, data: bytes, first: bytes = b""
    ) -> tuple[tuple[str, int], bytes, bytes]:
        """
        Send C{first + data} (C{data} ending with a LF), read the backend's
        answer, close.

        @return: the client's local address, the PROXY header the backend
            read and what it received after it.
        """
        number = backend.accepted + 1
        with connect(self.lb.ports[frontend]) as sock:
            local = sock.getsockname()
            sock.sendall(first + data)
            self.assertEqual(readLine(sock, timeout=5), b"ok %d\n" % (len(data),))
        connection = backend.finished(number)
        self.assertEqual(connection.received, data)
        return local, connection.header, connection.received

    def _checkClientHeader(
        self, frontend: str, backend: TCPBackend, prefix: bytes
    ) -> None:
        local, header, _ = self._sendThrough(frontend, backend, b"client bytes\n")
        self.assertTrue(header.startswith(prefix), header)
        info = parseProxyHeader(header)
        self.assertEqual(
            (info.source.host, info.source.port),  # type: ignore[union-attr]
            ("127.0.0.1", local[1]),
        )
        self.assertEqual(
            (info.destination.host, info.destination.port),  # type: ignore[union-attr]
            ("127.0.0.1", self.lb.ports[frontend]),
        )

    def test_sendProxyV1(self) -> None:
        """
        With C{send_proxy = "v1"} the backend first receives a v1 line with
        the client's address and port as source and the frontend's as
        destination, then the client's bytes.
        """
        self._checkClientHeader("v1", self.v1, b"PROXY TCP4 ")

    def test_sendProxyV2(self) -> None:
        """
        With C{send_proxy = "v2"} the backend first receives a binary v2
        header with the client's address and the frontend's, then the
        client's bytes.
        """
        self._checkClientHeader("v2", self.v2, b"\r\n\r\n\x00\r\nQUIT\n")

    def test_acceptProxyIsPassedOn(self) -> None:
        """
        A client behind a trusted balancer (a PROXY v1 header claiming
        203.0.113.7:4444) is 203.0.113.7:4444 in the v2 header lbtwist sends;
        the incoming header is not relayed.
        """
        port = self.lb.ports["behind"]
        first = proxyV1("203.0.113.7", 4444, "127.0.0.1", port)
        _, header, received = self._sendThrough(
            "behind", self.behind, b"after the header\n", first
        )
        info = parseProxyHeader(header)
        self.assertEqual(
            (info.source.host, info.source.port),  # type: ignore[union-attr]
            ("203.0.113.7", 4444),
        )

    def test_acceptProxyKeepsHalfClose(self) -> None:
        """
        On an C{accept_proxy} TCP frontend too, a client's
        C{shutdown(SHUT_WR)} reaches the backend as EOF and the backend's
        answer still reaches the client.
        """
        port = self.lb.ports["behind"]
        number = self.behind.accepted + 1
        with connect(port) as sock:
            sock.sendall(proxyV1("203.0.113.7", 4444, "127.0.0.1", port) + b"no LF")
            sock.shutdown(socket.SHUT_WR)
            received = readUntilEOF(sock, timeout=5)
        self.assertEqual(received, (b"ok 5\n", "eof"))
        connection = self.behind.finished(number)
        self.assertEqual((connection.received, connection.sawEOF), (b"no LF", True))

    def test_acceptProxyWithoutHeaderIsRefused(self) -> None:
        """
        On an C{accept_proxy} frontend, a connection that does not start with
        a PROXY header is closed and reaches no backend.
        """
        before = self.behind.accepted
        with connect(self.lb.ports["behind"]) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            received, ending = readUntilEOF(sock, timeout=3)
        self.assertIn(ending, ("eof", "reset"))
        self.assertEqual(received, b"")
        time.sleep(0.2)
        self.assertEqual(self.behind.accepted, before)

    def test_acceptProxyOnHTTPFrontend(self) -> None:
        """
        On an HTTP frontend with C{accept_proxy}, the address from the PROXY
        header is the one in C{X-Forwarded-For}.
        """
        port = self.lb.ports["web"]
        data, _ = exchange(
            port,
            proxyV1("203.0.113.7", 4444, "127.0.0.1", port)
            + request("GET", "/script/echo?proxy=1", close=True),
        )
        response, _ = parseResponse(data)
        self.assertEqual(response.status, 200, data[:300])
        [received] = self.http.requestsFor(b"/script/echo?proxy=1")
        self.assertEqual(received.header(b"x-forwarded-for"), b"203.0.113.7")


class AccessLogTests(SynchronousTestCase):
    """
    The access log has one line per TCP connection with its byte counts.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.directory = tempfile.mkdtemp(prefix="lbtwist-tcp-log-")
        cls.path = os.path.join(cls.directory, "access.log")
        cls.echo = TCPBackend("echo", "eof-then-talk")
        _start(cls, cls.echo)
        cls.lb = Lbtwist(
            cls,
            configWith(
                tcpFrontend("logged", [cls.echo]),
                settings={"access_log": cls.path, "access_log_format": "json"},
            ),
        )

    def _lines(self) -> list[dict[str, object]]:
        return jsonLogRecords(self.path)

    def test_oneLinePerConnection(self) -> None:
        """
        Three connections give three JSON lines with the client's address,
        the frontend, pool and backend, and the bytes each way.
        """
        expected = []
        for data in (b"a", b"hello" * 100, b"x" * 70000):
            received, ending = transfer(self.lb.ports["logged"], data, timeout=5)
            self.assertEqual(ending, "eof")
            expected.append((len(data), len(received)))
        waitUntil(lambda: len(self._lines()) >= 3, timeout=5, message="3 log lines")
        time.sleep(0.2)
        lines = self._lines()
        self.assertEqual(len(lines), 3, lines)
        for line, (fromClient, toClient) in zip(lines, expected):
            self.assertEqual(
                (line.get("from_client"), line.get("to_client")),
                (fromClient, toClient),
                line,
            )
            self.assertTrue(str(line.get("client")).startswith("127.0.0.1"), line)
            self.assertEqual(line.get("frontend"), "logged", line)
            self.assertEqual(line.get("pool"), "logged", line)
            self.assertEqual(line.get("backend"), self.echo.address, line)
