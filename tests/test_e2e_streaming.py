# -*- test-case-name: tests.test_e2e_streaming -*-
"""
End-to-end: streaming with backpressure keeps lbtwist's memory bounded
(proxy-rules.md, "Memory and connections"): a big download to a slow
reader, big request bodies upstream.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.harness import (
    Client,
    Lbtwist,
    MiB,
    ScriptedBackend,
    parseResponse,
    request,
    simpleConfig,
)

# Allowed growth of lbtwist's RSS over its warmed-up baseline, in KiB.
RSS_BUDGET_KIB = 64 * 1024


class _RSSSampler:
    """
    Sample a process's RSS in a thread until stopped; keep the peak.
    """

    def __init__(self, lb: Lbtwist, interval: float = 0.05) -> None:
        self.lb = lb
        self.interval = interval
        self.peak = lb.rss()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self.peak = max(self.peak, self.lb.rss())
            except OSError:
                return
            self._stopped.wait(self.interval)

    def stop(self) -> int:
        """
        Stop sampling and return the peak RSS in KiB.
        """
        self._stopped.set()
        self._thread.join(2)
        self.peak = max(self.peak, self.lb.rss())
        return self.peak


class StreamingTests(SynchronousTestCase):
    """
    One lbtwist with a large C{max_body_size} in front of one backend.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.backend = ScriptedBackend("b1")
        cls.addClassCleanup(cls.backend.close)
        cls.lb = Lbtwist(
            cls,
            simpleConfig(
                [cls.backend],
                pool={
                    "retries": 0,
                    "max_body_size": 200 * MiB,
                    "response_timeout": 30.0,
                },
            ),
        )

    def setUp(self) -> None:
        self.backend.clear()

    def baseline(self) -> int:
        """
        Warm lbtwist up with a few small requests and a 1 MiB download; return
        its RSS in KiB.
        """
        client = Client(self.lb.port, timeout=10)
        self.addCleanup(client.close)
        for i in range(5):
            client.request(f"/warm/{i}")
        client.request("/script/big?mb=1")
        client.request("/script/sha256", method="POST", body=b"w" * MiB)
        time.sleep(0.2)
        return self.lb.rss()

    def test_slowReaderKeepsMemoryBounded(self) -> None:
        """
        A 256 MiB download to a client that reads 64 KiB every 10 ms, then
        fast, arrives whole while lbtwist's RSS stays below baseline + 64 MiB.
        """
        size = 256 * MiB
        baseline = self.baseline()
        sampler = _RSSSampler(self.lb)
        sock = socket.create_connection(("127.0.0.1", self.lb.port), timeout=10)
        self.addCleanup(sock.close)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(request("GET", "/script/big?mb=256", close=True))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            self.assertTrue(chunk, "connection closed before the response head")
            head += chunk
        headEnd = head.index(b"\r\n\r\n") + 4
        response, _ = parseResponse(head[:headEnd], b"HEAD")
        self.assertEqual(response.status, 200)
        received = len(head) - headEnd
        hasher = hashlib.sha256(head[headEnd:])
        slowUntil = time.monotonic() + 4.0
        while time.monotonic() < slowUntil:
            chunk = sock.recv(65536)
            if not chunk:
                break
            hasher.update(chunk)
            received += len(chunk)
            time.sleep(0.01)
        slowPeak = sampler.peak
        slowReceived = received
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            hasher.update(chunk)
            received += len(chunk)
        peak = sampler.stop()
        print(
            f"\n[rss] slow-reader download of 256 MiB: baseline {baseline} KiB, "
            f"peak during slow phase {slowPeak} KiB (+{slowPeak - baseline} KiB after {slowReceived // MiB} MiB read), "
            f"peak overall {peak} KiB (+{peak - baseline} KiB)"
        )
        self.assertEqual(received, size)
        expected = hashlib.sha256()
        block = bytes(range(256)) * 256
        for _ in range(size // len(block)):
            expected.update(block)
        self.assertEqual(hasher.hexdigest(), expected.hexdigest())
        self.assertLess(slowPeak - baseline, RSS_BUDGET_KIB)
        self.assertLess(peak - baseline, RSS_BUDGET_KIB)

    def _upload(self, framing: str) -> None:
        """
        Send a 50 MiB body with C{framing} (C{"length"} or C{"chunked"}) and
        check it arrives byte-exact with bounded RSS.
        """
        size = 50 * MiB
        baseline = self.baseline()
        block = hashlib.sha256(framing.encode()).digest() * 2048  # 64 KiB
        expected = hashlib.sha256()
        for _ in range(size // len(block)):
            expected.update(block)
        sampler = _RSSSampler(self.lb)
        sock = socket.create_connection(("127.0.0.1", self.lb.port), timeout=30)
        self.addCleanup(sock.close)
        if framing == "length":
            sock.sendall(
                request(
                    "POST",
                    "/script/sha256",
                    [("Content-Length", str(size))],
                    b"",
                    close=True,
                )
            )
            for _ in range(size // len(block)):
                sock.sendall(block)
        else:
            sock.sendall(
                request(
                    "POST",
                    "/script/sha256",
                    [("Transfer-Encoding", "chunked")],
                    b"",
                    close=True,
                )
            )
            chunk = b"%x\r\n" % (len(block),) + block + b"\r\n"
            for _ in range(size // len(block)):
                sock.sendall(chunk)
            sock.sendall(b"0\r\n\r\n")
        data = b""
        while True:
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
        peak = sampler.stop()
        print(
            f"\n[rss] 50 MiB upload ({framing}): baseline {baseline} KiB, peak {peak} KiB (+{peak - baseline} KiB)"
        )
        response, _ = parseResponse(data)
        self.assertEqual(response.status, 200, data[:500])
        self.assertEqual(
            response.body, expected.hexdigest().encode() + b" %d" % (size,)
        )
        upstream = [
            r
            for r in self.backend.requestsFor(b"/script/sha256")
            if len(r.body) == size
        ][-1]
        if framing == "chunked":
            # Streamed as it arrives: chunked again upstream, length unknown.
            self.assertEqual(upstream.headerValues(b"transfer-encoding"), [b"chunked"])
            self.assertEqual(upstream.headerValues(b"content-length"), [])
        else:
            self.assertEqual(upstream.headerValues(b"transfer-encoding"), [])
            self.assertEqual(
                upstream.headerValues(b"content-length"), [str(size).encode()]
            )
        self.assertLess(peak - baseline, RSS_BUDGET_KIB)

    def test_bigContentLengthBodyArrivesExactWithBoundedMemory(self) -> None:
        """
        A 50 MiB C{Content-Length} POST body arrives upstream byte-exact and
        lbtwist's RSS stays below baseline + 64 MiB.
        """
        self._upload("length")

    def test_bigChunkedBodyArrivesExactWithBoundedMemory(self) -> None:
        """
        A 50 MiB chunked POST body arrives upstream byte-exact, streamed
        chunked, and lbtwist's RSS stays below baseline + 64 MiB.
        """
        self._upload("chunked")


class ConnectionTests(SynchronousTestCase):
    """
    Backend keep-alive reuse and freeing connections after client aborts.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.backend = ScriptedBackend("b1")
        cls.addClassCleanup(cls.backend.close)
        cls.lb = Lbtwist(cls, simpleConfig([cls.backend], pool={"retries": 0}))

    def fds(self) -> int:
        """
        @return: how many file descriptors lbtwist has open.
        """
        return len(os.listdir(f"/proc/{self.lb.process.pid}/fd"))

    def test_reusesBackendConnections(self) -> None:
        """
        40 sequential requests over fresh client connections use only a couple
        of backend connections.
        """
        before = self.backend.connections
        for i in range(40):
            client = Client(self.lb.port, timeout=3)
            try:
                self.assertEqual(client.request(f"/reuse/{i}").status, 200)
            finally:
                client.close()
        self.assertLessEqual(self.backend.connections - before, 2)

    def test_clientAbortsFreeConnections(self) -> None:
        """
        Clients that abort big downloads midway leave lbtwist with no more file
        descriptors than before.
        """
        client = Client(self.lb.port, timeout=3)
        client.request("/warm")
        client.close()
        time.sleep(0.2)
        baseline = self.fds()
        for i in range(5):
            sock = socket.create_connection(("127.0.0.1", self.lb.port), timeout=5)
            sock.sendall(request("GET", f"/script/big?mb=64&abort={i}"))
            got = 0
            while got < MiB:
                chunk = sock.recv(65536)
                self.assertTrue(chunk)
                got += len(chunk)
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            sock.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self.fds() > baseline + 1:
            time.sleep(0.1)
        print(
            f"\n[fds] lbtwist fds: baseline {baseline}, after 5 aborted downloads {self.fds()}"
        )
        self.assertLessEqual(self.fds(), baseline + 1)
        after = Client(self.lb.port, timeout=3)
        self.addCleanup(after.close)
        self.assertEqual(after.request("/after-aborts").status, 200)
