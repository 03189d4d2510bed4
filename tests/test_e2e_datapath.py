# -*- test-case-name: tests.test_e2e_datapath -*-
"""
End-to-end: the HTTP data path seen from outside (proxy-rules.md): truncated
backend responses, stalled backends, leaks of backend slots on refused and
upgrade requests, C{OPTIONS *}, control bytes, version and chunk-extension
parsing, slow request bodies, streaming request bodies with a bounded replay
buffer, and bounded memory for 1 GiB transfers, through a real
C{twistd -n lbtwist} on loopback.
"""

from __future__ import annotations

import json
import os
import socket
import shutil
import subprocess
import unittest
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable

from twisted.trial.unittest import SynchronousTestCase

from tests.test_e2e_streaming import _RSSSampler
from tests.harness import (
    PROJECT_ROOT,
    Client,
    Lbtwist,
    MiB,
    Response,
    ScriptedBackend,
    exchange,
    parseResponse,
    parseResponses,
    request,
    simpleConfig,
)

TOKEN = "e2e-datapath-token"

# Allowed growth of lbtwist's RSS over its warmed-up baseline, in KiB.
RSS_BUDGET_KIB = 64 * 1024

# Size of the big transfers of MemoryTests (LBTWIST_E2E_BIG_MIB to shrink it).
BIG_MIB = int(os.environ.get("LBTWIST_E2E_BIG_MIB", "1024"))

_WEBSOCKET_HEADERS = [
    ("Connection", "Upgrade"),
    ("Upgrade", "websocket"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
]


# --------------------------------------------------------------------------
# Helpers


def withAdmin(config: str) -> str:
    """
    @return: C{config} with an admin listener on an OS-chosen loopback port.
    """
    return config + (
        f'\n[admin]\nlisten = "tcp:0:interface=127.0.0.1"\ntoken = "{TOKEN}"\n'
    )


def adminBackends(lb: Lbtwist) -> list[dict[str, Any]]:
    """
    @return: every backend of every pool, from the admin JSON API.
    """
    req = urllib.request.Request(f"http://127.0.0.1:{lb.ports['admin']}/api/pools")
    req.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(req, timeout=5) as response:
        pools = json.loads(response.read())["pools"]
    return [backend for pool in pools for backend in pool["backends"]]


def waitUntilIdle(lb: Lbtwist, timeout: float = 3.0) -> list[tuple[str, int]]:
    """
    Poll the admin API until every backend's C{active} count is 0 or
    C{timeout} passes.

    @return: the last C{(name, active)} of every backend.
    """
    deadline = time.monotonic() + timeout
    while True:
        counts = [(b["name"], b["active"]) for b in adminBackends(lb)]
        if all(active == 0 for _, active in counts) or time.monotonic() > deadline:
            return counts
        time.sleep(0.05)


def waitFor(predicate: Callable[[], bool], timeout: float) -> bool:
    """
    Poll C{predicate} every 10 ms for up to C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def readUntilEnd(sock: socket.socket, timeout: float) -> tuple[bytes, str]:
    """
    Read from C{sock} until EOF, reset or C{timeout} seconds in total.

    @return: the bytes and C{"eof"}, C{"reset"} or C{"timeout"}.
    """
    deadline = time.monotonic() + timeout
    data = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bytes(data), "timeout"
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return bytes(data), "timeout"
        except ConnectionResetError:
            return bytes(data), "reset"
        if not chunk:
            return bytes(data), "eof"
        data += chunk


class DatapathBackend(ScriptedBackend):
    """
    A L{ScriptedBackend} with the broken behaviours these tests need.
    """

    def _script_short_cl(self, c: Any, r: Any, q: Any) -> bool:
        self._send(
            c,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 100\r\n\r\nhello",
        )
        time.sleep(0.05)
        return False

    def _script_short_chunked(self, c: Any, r: Any, q: Any) -> bool:
        self._send(
            c,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )
        time.sleep(0.05)
        return False

    def _script_stall(self, c: Any, r: Any, q: Any) -> bool:
        # The head and 10 of 1000 body bytes, then silence until lbtwist hangs
        # up (or 15 s pass).
        self._send(
            c,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 1000\r\n\r\n0123456789",
        )
        c.sock.settimeout(15)
        try:
            while c.sock.recv(65536):
                pass
        except OSError:
            pass
        return False


class SinkBackend:
    """
    A raw HTTP/1.1 backend that reads request bodies as they arrive, counting
    them (C{bodyBytes}), and answers 200 C{"<label> <method> <target>
    <size>"} once a body is complete.

    @ivar cutAfter: if set, close every connection (without answering) once
        the head and C{cutAfter} body bytes (or the whole body, if shorter)
        have been read.
    @ivar heads: the C{(method, target)} of every request head read.
    @ivar completed: C{(method, target, size)} of every request answered.
    """

    def __init__(self, label: str, cutAfter: int | None = None) -> None:
        self.label = label
        self.cutAfter = cutAfter
        self.bodyBytes = 0
        self.heads: list[tuple[bytes, bytes]] = []
        self.completed: list[tuple[bytes, bytes, int]] = []
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            socks = list(self._open)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._open.add(sock)
            sock.settimeout(60)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        buffer = bytearray()

        def fill() -> None:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise EOFError()
            buffer.extend(chunk)

        def line() -> bytes:
            while b"\r\n" not in buffer:
                fill()
            end = buffer.index(b"\r\n")
            data = bytes(buffer[:end])
            del buffer[: end + 2]
            return data

        def consume(size: int, limit: int | None) -> int:
            """
            Read and discard up to C{size} bytes, stopping at C{limit} total
            body bytes; return how many were read.
            """
            done = 0
            while done < size:
                if limit is not None and counted[0] >= limit:
                    return done
                if not buffer:
                    fill()
                take = min(len(buffer), size - done)
                del buffer[:take]
                done += take
                counted[0] += take
                with self._lock:
                    self.bodyBytes += take
            return done

        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    fill()
                end = buffer.index(b"\r\n\r\n")
                head = bytes(buffer[:end])
                del buffer[: end + 4]
                lines = head.split(b"\r\n")
                method, target, _ = lines[0].split(b" ", 2)
                headers = {}
                for headerLine in lines[1:]:
                    name, _, value = headerLine.partition(b":")
                    headers[name.strip().lower()] = value.strip()
                with self._lock:
                    self.heads.append((method, target))
                counted = [0]
                limit = self.cutAfter
                if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                    while True:
                        size = int(line().split(b";")[0], 16)
                        if size == 0:
                            while line():
                                pass
                            break
                        if consume(size, limit) < size:
                            break
                        line()
                else:
                    consume(int(headers.get(b"content-length", b"0")), limit)
                if limit is not None:
                    time.sleep(0.05)
                    return
                body = b"%s %s %s %d" % (
                    self.label.encode(),
                    method,
                    target,
                    counted[0],
                )
                with self._lock:
                    self.completed.append((method, target, counted[0]))
                sock.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    b"Content-Length: %d\r\n\r\n" % (len(body),) + body
                )
        except (EOFError, OSError, ValueError):
            return
        finally:
            with self._lock:
                self._open.discard(sock)
            sock.close()


# --------------------------------------------------------------------------
# Client-side requests that must be refused or handled without leaking


class _TwoBackends(SynchronousTestCase):
    """
    Base: a fresh lbtwist with two backends and an admin listener per class.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.b1 = DatapathBackend("b1")
        cls.addClassCleanup(cls.b1.close)
        cls.b2 = DatapathBackend("b2")
        cls.addClassCleanup(cls.b2.close)
        cls.lb = Lbtwist(
            cls, withAdmin(simpleConfig([cls.b1, cls.b2], pool={"retries": 1}))
        )

    def setUp(self) -> None:
        self.b1.clear()
        self.b2.clear()

    def received(self) -> list[Any]:
        return self.b1.received + self.b2.received

    def assertHealthy(self) -> None:
        """
        Every backend is up with no active request, and a plain GET gets 200.
        """
        counts = waitUntilIdle(self.lb)
        self.assertEqual([active for _, active in counts], [0, 0], counts)
        self.assertEqual(
            [b["state"] for b in adminBackends(self.lb)], ["up", "up"]
        )
        data, _ = exchange(self.lb.port, request("GET", "/after", close=True), 3)
        self.assertEqual(parseResponse(data)[0].status, 200, data)


class ClientRequestTests(_TwoBackends):
    """
    Two backends behind one frontend with an admin listener: refused
    requests, C{OPTIONS *} and upgrade requests.
    """

    def assertRejected(self, data: bytes, status: int = 400) -> Response:
        """
        Send C{data}; assert one C{status} response, a closed connection and
        no request at either backend.
        """
        received, ending = exchange(self.lb.port, data, timeout=3)
        responses = parseResponses(received)
        self.assertEqual([r.status for r in responses], [status], (data, received))
        self.assertIn(ending, ("eof", "reset"), "connection left open after error")
        time.sleep(0.02)
        self.assertEqual(self.received(), [], data)
        return responses[0]

    def test_nonAsciiTargetIs400AndLeaksNothing(self) -> None:
        """
        C{GET /\\x80\\xb0}, 20 times, is 400 each time with nothing sent upstream,
        and leaves every backend up with no active request.
        """
        for _ in range(20):
            self.assertRejected(
                b"GET /\x80\xb0 HTTP/1.1\r\nHost: lb.example\r\n\r\n"
            )
        self.assertHealthy()

    def test_highAndDeleteTargetBytesAre400(self) -> None:
        """
        A target holding any byte from 0x7F to 0xB0 is 400 with nothing sent
        upstream and no backend slot left active.
        """
        for byte in list(range(0x7F, 0xB1, 5)) + [0xB0]:
            self.assertRejected(
                b"GET /a" + bytes([byte]) + b"b HTTP/1.1\r\nHost: lb.example\r\n\r\n"
            )
        self.assertHealthy()

    def test_controlBytesInHeaderValuesAre400(self) -> None:
        """
        A header value holding \\x01, \\x0b, \\x0c, \\x1b or \\x7f is 400 and
        nothing reaches a backend.
        """
        for byte in (b"\x01", b"\x0b", b"\x0c", b"\x1b", b"\x7f"):
            self.assertRejected(
                b"GET /ctl HTTP/1.1\r\nHost: lb.example\r\nX-Value: a"
                + byte
                + b"b\r\n\r\n"
            )
        self.assertHealthy()

    def test_absoluteFormWithTwoHostLinesIs400(self) -> None:
        """
        An absolute-form target with two C{Host} lines is 400.
        """
        self.assertRejected(
            b"GET http://a.example/p HTTP/1.1\r\nHost: a.example\r\n"
            b"Host: a.example\r\n\r\n"
        )

    def test_nonWebSocketUpgradeIsForwardedAsPlainRequest(self) -> None:
        """
        C{Connection: Upgrade} with C{Upgrade: foo} on a GET reaches the
        backend as an ordinary request with no C{Upgrade} and no C{upgrade}
        connection option.
        """
        data, _ = exchange(
            self.lb.port,
            request(
                "GET",
                "/upgrade-foo",
                [("Connection", "Upgrade"), ("Upgrade", "foo")],
                close=True,
            ),
            timeout=3,
        )
        response = parseResponse(data)[0]
        self.assertEqual(response.status, 200, data)
        self.assertTrue(response.body.endswith(b" GET /upgrade-foo"), data)
        [forwarded] = self.received()
        self.assertEqual(forwarded.headerValues(b"upgrade"), [])
        tokens = {
            t.strip().lower()
            for v in forwarded.headerValues(b"connection")
            for t in v.split(b",")
        }
        self.assertNotIn(b"upgrade", tokens)

    def test_webSocketUpgradeOnHeadOrPostIsNotAnUpgrade(self) -> None:
        """
        C{Upgrade: websocket} on HEAD or POST is forwarded as an ordinary
        request, without C{Upgrade} or a C{upgrade} connection option.
        """
        for method, body in (("HEAD", None), ("POST", b"data")):
            self.b1.clear()
            self.b2.clear()
            data, _ = exchange(
                self.lb.port,
                request(method, f"/ws-{method}", _WEBSOCKET_HEADERS, body, close=True),
                timeout=3,
            )
            response = parseResponse(data, method.encode())[0]
            self.assertEqual(response.status, 200, (method, data))
            [forwarded] = self.received()
            self.assertEqual(forwarded.method, method.encode())
            self.assertEqual(forwarded.body, body or b"")
            self.assertEqual(forwarded.headerValues(b"upgrade"), [], method)
            tokens = {
                t.strip().lower()
                for v in forwarded.headerValues(b"connection")
                for t in v.split(b",")
            }
            self.assertNotIn(b"upgrade", tokens, method)

    def test_upgradeRequestsAreChecked(self) -> None:
        """
        A WebSocket upgrade request with a control byte in a header value or
        a non-ASCII target is 400, and nothing reaches a backend.
        """
        self.assertRejected(
            request("GET", "/ws-ctl", _WEBSOCKET_HEADERS + [("X-Bad", "a\x01b")])
        )
        self.assertRejected(request("GET", b"/ws-\x80", _WEBSOCKET_HEADERS))
        self.assertHealthy()

    def test_http12IsAnsweredAsHTTP11(self) -> None:
        """
        C{GET / HTTP/1.2} is proxied and answered 200 as HTTP/1.1.
        """
        data, _ = exchange(
            self.lb.port,
            b"GET /v12 HTTP/1.2\r\nHost: lb.example\r\nConnection: close\r\n\r\n",
            timeout=3,
        )
        response = parseResponse(data)[0]
        self.assertEqual((response.version, response.status), (b"HTTP/1.1", 200))
        [forwarded] = self.received()
        self.assertEqual((forwarded.target, forwarded.version), (b"/v12", b"HTTP/1.1"))

    def test_quotedChunkExtensionIsAccepted(self) -> None:
        """
        A chunk extension with a quoted-string value holding a quoted-pair
        (C{5;a="q\\\\"}) is accepted and the decoded body reaches the backend.
        """
        data, _ = exchange(
            self.lb.port,
            b"POST /quoted-ext HTTP/1.1\r\nHost: lb.example\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            b'5;a="q\\\\"\r\nhello\r\n0\r\n\r\n',
            timeout=3,
        )
        self.assertEqual(parseResponse(data)[0].status, 200, data)
        [forwarded] = self.received()
        self.assertEqual(forwarded.body, b"hello")


class UpgradeLeakTests(_TwoBackends):
    """
    Upgrade requests that the backend does not upgrade release their backend.
    """

    def test_upgradeAnsweredWith200ReleasesTheBackend(self) -> None:
        """
        A WebSocket upgrade the backend answers with 200 (not 101) reaches the
        client; once the client goes, no backend slot stays active and the
        next request gets 200.
        """
        client = Client(self.lb.port, timeout=3)
        try:
            client.send(request("GET", "/ws-not-101", _WEBSOCKET_HEADERS))
            try:
                response = client.readResponse()
            except (socket.timeout, EOFError) as e:
                self.fail(f"no response to the upgrade request: {e!r}")
            self.assertEqual(response.status, 200)
        finally:
            client.close()
        self.assertHealthy()

    def test_upgradeAnsweredWith200ClientGoneEarly(self) -> None:
        """
        A WebSocket upgrade answered with 200 whose client disconnects without
        reading leaves no backend slot active.
        """
        sock = socket.create_connection(("127.0.0.1", self.lb.port), timeout=3)
        sock.sendall(request("GET", "/ws-gone", _WEBSOCKET_HEADERS))
        waitFor(lambda: bool(self.received()), 2)
        sock.close()
        self.assertHealthy()


class OptionsAsteriskTests(_TwoBackends):
    """
    C{OPTIONS *} is answered and never counts against a backend.
    """

    def test_optionsAsteriskNeverFails(self) -> None:
        """
        C{OPTIONS *} gets a 2xx (from lbtwist or forwarded as C{OPTIONS *}),
        never a 502, and six a second for 2 s take no backend down.
        """
        start = time.monotonic()
        statuses = []
        for i in range(12):
            data, _ = exchange(
                self.lb.port,
                b"OPTIONS * HTTP/1.1\r\nHost: lb.example\r\nConnection: close\r\n\r\n",
                timeout=3,
            )
            response = parseResponse(data, b"OPTIONS")[0]
            statuses.append(response.status)
            time.sleep(max(0.0, start + (i + 1) / 6 - time.monotonic()))
        self.assertTrue(all(200 <= s < 300 for s in statuses), statuses)
        for forwarded in self.received():
            self.assertEqual((forwarded.method, forwarded.target), (b"OPTIONS", b"*"))
        self.assertHealthy()


# --------------------------------------------------------------------------
# Backends that die or stall mid-body


class TruncatedResponseTests(SynchronousTestCase):
    """
    A backend that dies in the middle of a response body.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.backend = DatapathBackend("b1")
        cls.addClassCleanup(cls.backend.close)
        cls.lb = Lbtwist(
            cls,
            withAdmin(
                simpleConfig(
                    [cls.backend],
                    pool={"retries": 0},
                    health={"check": "none", "passive_fall": 100},
                )
            ),
        )

    def assertTruncated(self, path: str) -> None:
        client = Client(self.lb.port, timeout=3)
        self.addCleanup(client.close)
        client.send(request("GET", path))
        response = client.readResponse()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, b"hello")
        self.assertFalse(response.complete, "a truncated body ended cleanly")
        _, ending = client.readUntilClosed(3)
        self.assertIn(ending, ("eof", "reset"), "client connection kept open")
        self.assertEqual([a for _, a in waitUntilIdle(self.lb)], [0])

    def test_truncatedContentLengthBodyAbortsTheClient(self) -> None:
        """
        Content-Length 100 with 5 bytes then close: the client gets the head
        and the 5 bytes, then the connection ends without a complete response.
        """
        self.assertTruncated("/script/short_cl")

    def test_truncatedChunkedBodyAbortsTheClient(self) -> None:
        """
        A chunked body without its last chunk: the client gets the 5 bytes,
        then the connection ends without a complete response.
        """
        self.assertTruncated("/script/short_chunked")


class StalledBackendTests(SynchronousTestCase):
    """
    A backend that stalls in the middle of a body with C{read_timeout = 1}.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.backend = DatapathBackend("b1")
        cls.addClassCleanup(cls.backend.close)
        cls.lb = Lbtwist(
            cls,
            withAdmin(
                simpleConfig(
                    [cls.backend],
                    pool={"retries": 0, "read_timeout": 1.0},
                    health={"check": "none", "passive_fall": 100},
                )
            ),
        )

    def test_stalledBodyAbortsClientAfterReadTimeout(self) -> None:
        """
        The head and 10 of 1000 body bytes then silence: the client connection
        is aborted 1 to 3 s later and the backend slot is released.
        """
        client = Client(self.lb.port, timeout=5)
        self.addCleanup(client.close)
        client.send(request("GET", "/script/stall"))
        while b"\r\n\r\n" not in client.buffer:
            client._fill(time.monotonic() + 3)
        start = time.monotonic()
        _, ending = client.readUntilClosed(5)
        elapsed = time.monotonic() - start
        self.assertIn(ending, ("eof", "reset"), f"still open after {elapsed:.1f}s")
        self.assertLess(elapsed, 3.0)
        self.assertGreater(elapsed, 0.5)
        response, _ = parseResponse(client.buffer)
        self.assertFalse(response.complete)
        self.assertEqual([a for _, a in waitUntilIdle(self.lb)], [0])


# --------------------------------------------------------------------------
# Slow request bodies


def _trickle(
    port: int, head: bytes, pieces: list[bytes], interval: float, limit: float
) -> tuple[bytes, str, float]:
    """
    Send C{head}, then one piece every C{interval} seconds until the server
    ends the connection or C{limit} seconds pass.

    @return: what was read, how it ended and after how many seconds.
    """
    start = time.monotonic()
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(head)
        for piece in pieces:
            if time.monotonic() - start > limit:
                break
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                return received, "reset", time.monotonic() - start
            sock.settimeout(interval)
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                return received, "reset", time.monotonic() - start
            if not chunk:
                return received, "eof", time.monotonic() - start
            received += chunk
        data, ending = readUntilEnd(sock, max(0.1, limit - (time.monotonic() - start)))
        return received + data, ending, time.monotonic() - start


class SlowBodyTests(SynchronousTestCase):
    """
    C{body_timeout} and C{min_body_rate} cut off clients that send a body too
    slowly.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.backend = ScriptedBackend("b1")
        cls.addClassCleanup(cls.backend.close)
        cls.lb = Lbtwist(
            cls,
            simpleConfig(
                [cls.backend],
                frontend={"body_timeout": 2.0, "min_body_rate": 0, "idle_timeout": 30.0},
                pool={"retries": 0},
            ),
        )
        cls.rateLb = Lbtwist(
            cls,
            simpleConfig(
                [cls.backend],
                frontend={
                    "body_timeout": 2.0,
                    "min_body_rate": 100,
                    "idle_timeout": 30.0,
                },
                pool={"retries": 0},
            ),
        )

    def assertCutOff(self, data: bytes, ending: str, elapsed: float, bound: float) -> None:
        self.assertIn(ending, ("eof", "reset"), f"open after {elapsed:.1f}s")
        self.assertLess(elapsed, bound)
        if data:
            self.assertEqual(parseResponses(data)[0].status, 408, data)

    def test_pauseLongerThanBodyTimeoutIsCutOff(self) -> None:
        """
        With C{min_body_rate = 0}, a client that sends 10 of 1000 body bytes
        and pauses is cut off (408 or close) after C{body_timeout} (2 s),
        well before the 30 s idle timeout.
        """
        head = (
            b"POST /paused HTTP/1.1\r\nHost: lb.example\r\nContent-Length: 1000\r\n\r\n"
        )
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.lb.port), timeout=3) as sock:
            sock.sendall(head + b"0123456789")
            data, ending = readUntilEnd(sock, 6)
        elapsed = time.monotonic() - start
        self.assertCutOff(data, ending, elapsed, 4.5)
        self.assertGreater(elapsed, 1.5)
        self.assertEqual(self.backend.requestsFor(b"/paused"), [])

    def test_tricklingBodyIsCutOff(self) -> None:
        """
        A 1000-byte body sent one byte every 0.5 s (2 bytes/s, never a 2 s
        pause, but under C{min_body_rate = 100}, which is checked over 10 s
        windows) is cut off (408 or close) within about 10 s.
        """
        head = (
            b"POST /trickle HTTP/1.1\r\nHost: lb.example\r\nContent-Length: 1000\r\n\r\n"
        )
        data, ending, elapsed = _trickle(
            self.rateLb.port, head, [b"x"] * 1000, 0.5, 14.0
        )
        self.assertCutOff(data, ending, elapsed, 12.5)
        self.assertEqual(self.backend.requestsFor(b"/trickle"), [])


# --------------------------------------------------------------------------
# Streaming request bodies and the replay buffer


class StreamingBodyTests(SynchronousTestCase):
    """
    Request bodies stream upstream as they arrive.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.sink = SinkBackend("sink")
        cls.addClassCleanup(cls.sink.close)
        cls.lb = Lbtwist(
            cls,
            simpleConfig(
                [cls.sink.url], pool={"retries": 0, "max_body_size": 64 * MiB}
            ),
        )

    def test_bodyStreamsBeforeTheClientFinishes(self) -> None:
        """
        The backend receives body bytes of a 2 MiB POST while the client has
        sent only the first half, and the response arrives after the rest.
        """
        size = 2 * MiB
        half = b"a" * (size // 2)
        before = self.sink.bodyBytes
        with socket.create_connection(("127.0.0.1", self.lb.port), timeout=5) as sock:
            sock.sendall(
                request("POST", "/stream", [("Content-Length", str(size))], b"",
                        close=True)
                + half
            )
            streamed = waitFor(lambda: self.sink.bodyBytes > before, 3)
            sock.sendall(half)
            data, _ = readUntilEnd(sock, 5)
        response = parseResponse(data)[0]
        self.assertEqual(
            (response.status, response.body), (200, b"sink POST /stream %d" % size)
        )
        self.assertTrue(
            streamed, "no body byte reached the backend before the client finished"
        )


class ReplayBufferTests(SynchronousTestCase):
    """
    With C{retry_buffer = 1024}, a backend that closes after reading part of
    the body: bodies over the buffer are not replayed, small ones are.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.cutter = SinkBackend("cutter", cutAfter=2048)
        cls.addClassCleanup(cls.cutter.close)
        cls.good = SinkBackend("good")
        cls.addClassCleanup(cls.good.close)
        cls.lb = Lbtwist(
            cls,
            simpleConfig(
                [cls.cutter.url, cls.good.url],
                pool={"retries": 1, "retry_buffer": 1024, "strategy": "round-robin"},
                health={"check": "none", "passive_fall": 100},
            ),
        )

    def send(self, method: str, target: str, body: bytes | None) -> Response:
        """
        Send one request with C{Connection: close} while reading, and parse
        its response.
        """
        sock = socket.create_connection(("127.0.0.1", self.lb.port), timeout=5)
        self.addCleanup(sock.close)
        data = request(method, target, body=body, close=True)
        sender = threading.Thread(target=lambda: _sendQuietly(sock, data), daemon=True)
        sender.start()
        received, ending = readUntilEnd(sock, 5)
        sender.join(5)
        self.assertNotEqual(ending, "timeout", (target, received))
        return parseResponse(received, method.encode())[0]

    def test_largeBodyIsNotReplayed(self) -> None:
        """
        A PUT with a 64 KiB body (over C{retry_buffer}) whose backend closes
        after 2 KiB gets 502 and is not replayed on the other backend.
        """
        body = b"p" * 65536
        for i in range(4):
            target = f"/big-put/{i}"
            response = self.send("PUT", target, body)
            if (b"PUT", target.encode()) in self.cutter.heads:
                self.assertEqual(response.status, 502, target)
                self.assertNotIn(
                    target.encode(), [t for _, t, _ in self.good.completed]
                )
            else:
                self.assertEqual(response.status, 200, target)
        self.assertTrue(
            any(t.startswith(b"/big-put/") for _, t in self.cutter.heads),
            "the cutting backend never got a large PUT",
        )

    def test_smallBodiesAreReplayed(self) -> None:
        """
        GETs and PUTs with a 100-byte body (under C{retry_buffer}) whose first
        backend closes the connection get 200 from the other backend.
        """
        for i in range(3):
            for method, body in (("GET", None), ("PUT", b"s" * 100)):
                target = f"/small-{method}/{i}"
                response = self.send(method, target, body)
                self.assertEqual(
                    (response.status, response.body),
                    (200, b"good %s %s %d" % (method.encode(), target.encode(),
                                              len(body or b""))),
                )
        self.assertTrue(
            any(t.startswith(b"/small-") for _, t in self.cutter.heads),
            "the cutting backend never got a small request",
        )


def _sendQuietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass


# --------------------------------------------------------------------------
# Configuration


class BacklogConfigTests(SynchronousTestCase):
    """
    The frontend C{backlog} key.
    """

    def check(self, frontend: dict[str, object]) -> subprocess.CompletedProcess[str]:
        directory = tempfile.mkdtemp(prefix="lbtwist-backlog-")
        path = os.path.join(directory, "lbtwist.toml")
        with open(path, "w") as f:
            f.write(simpleConfig(["http://127.0.0.1:9"], frontend=frontend))
        env = dict(os.environ)
        env["PYTHONPATH"] = PROJECT_ROOT + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
        )
        return subprocess.run(
            [sys.executable, "-m", "lbtwist", "check", path],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )

    def test_backlogIsAccepted(self) -> None:
        """
        C{python -m lbtwist check} accepts a frontend with C{backlog = 2048}.
        """
        result = self.check({"backlog": 2048})
        self.assertEqual(result.returncode, 0, result.stderr)

    def listenQueue(self, frontend: dict[str, object]) -> int:
        """
        Start lbtwist with C{frontend} settings and read its listening
        socket's queue length from the kernel (C{/proc/net/tcp} does not
        show it; C{ss} does, as the Send-Q of a listening socket).
        """
        if shutil.which("ss") is None:
            raise unittest.SkipTest("ss (iproute2) is not installed")
        lb = Lbtwist(self, simpleConfig(["http://127.0.0.1:9"], frontend=frontend))
        out = subprocess.run(
            ["ss", "-ltnH", f"sport = :{lb.port}"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        self.assertTrue(out.strip(), "listening socket not found")
        return int(out.split()[2])

    def test_defaultBacklog(self) -> None:
        """
        A frontend listens with a queue of 1024 by default (Twisted's own
        default is 50).
        """
        self.assertEqual(self.listenQueue({}), 1024)

    def test_configuredBacklog(self) -> None:
        """
        C{backlog = 2048} reaches the listening socket.
        """
        self.assertEqual(self.listenQueue({"backlog": 2048}), 2048)


# --------------------------------------------------------------------------
# Memory


class MemoryTests(SynchronousTestCase):
    """
    1 GiB in either direction keeps lbtwist's RSS within 64 MiB of its
    baseline.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.backend = ScriptedBackend("b1")
        cls.addClassCleanup(cls.backend.close)
        cls.sink = SinkBackend("sink")
        cls.addClassCleanup(cls.sink.close)
        cls.lb = Lbtwist(
            cls,
            simpleConfig(
                [cls.backend],
                pool={"retries": 0, "response_timeout": 30.0},
            ),
        )
        cls.sinkLb = Lbtwist(
            cls,
            simpleConfig(
                [cls.sink.url],
                pool={
                    "retries": 0,
                    "response_timeout": 60.0,
                    "max_body_size": 2 * BIG_MIB * MiB,
                },
            ),
        )

    def baseline(self, lb: Lbtwist, path: str) -> int:
        client = Client(lb.port, timeout=10)
        self.addCleanup(client.close)
        for i in range(3):
            client.request(path)
        client.request(path, method="POST", body=b"w" * MiB)
        time.sleep(0.2)
        return lb.rss()

    def test_bigDownloadToSlowReader(self) -> None:
        """
        A 1 GiB download read slowly for 2 s and then fast arrives whole while
        lbtwist's RSS stays within 64 MiB of its baseline.
        """
        size = BIG_MIB * MiB
        baseline = self.baseline(self.lb, "/warm")
        sampler = _RSSSampler(self.lb)
        sock = socket.create_connection(("127.0.0.1", self.lb.port), timeout=10)
        self.addCleanup(sock.close)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(request("GET", f"/script/big?mb={BIG_MIB}", close=True))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            self.assertTrue(chunk, "closed before the response head")
            head += chunk
        headEnd = head.index(b"\r\n\r\n") + 4
        self.assertEqual(parseResponse(head[:headEnd], b"HEAD")[0].status, 200)
        received = len(head) - headEnd
        slowUntil = time.monotonic() + 2.0
        while time.monotonic() < slowUntil:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += len(chunk)
            time.sleep(0.01)
        slowPeak = sampler.peak
        view = bytearray(4 * MiB)
        while True:
            n = sock.recv_into(view)
            if not n:
                break
            received += n
        peak = sampler.stop()
        time.sleep(0.2)
        after = self.lb.rss()
        print(
            f"\n[rss] {BIG_MIB} MiB download, slow reader: before {baseline} KiB, "
            f"peak {peak} KiB (+{peak - baseline}; slow phase +{slowPeak - baseline}), "
            f"after {after} KiB"
        )
        self.assertEqual(received, size)
        self.assertLess(peak - baseline, RSS_BUDGET_KIB)

    def test_bigUpload(self) -> None:
        """
        A 1 GiB Content-Length upload to a backend that counts and discards it
        arrives whole while lbtwist's RSS stays within 64 MiB of its baseline.
        """
        size = BIG_MIB * MiB
        baseline = self.baseline(self.sinkLb, "/warm")
        sampler = _RSSSampler(self.sinkLb)
        sock = socket.create_connection(("127.0.0.1", self.sinkLb.port), timeout=30)
        self.addCleanup(sock.close)
        sock.sendall(
            request("POST", "/upload", [("Content-Length", str(size))], b"", close=True)
        )
        block = b"u" * MiB
        for _ in range(size // MiB):
            sock.sendall(block)
        data, ending = readUntilEnd(sock, 30)
        peak = sampler.stop()
        time.sleep(0.2)
        after = self.sinkLb.rss()
        print(
            f"\n[rss] {BIG_MIB} MiB upload: before {baseline} KiB, peak {peak} KiB "
            f"(+{peak - baseline}), after {after} KiB"
        )
        response = parseResponse(data)[0]
        self.assertEqual(
            (response.status, response.body), (200, b"sink POST /upload %d" % size)
        )
        self.assertLess(peak - baseline, RSS_BUDGET_KIB)
