# -*- test-case-name: tests.test_e2e_websocket -*-
"""
End-to-end: WebSocket and other HTTP Upgrade tunnels on HTTP frontends
(issue 5), through a real C{twistd -n lbtwist} on loopback, with a real
WebSocket server and client (the C{websockets} library).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import time
import urllib.request
from contextlib import ExitStack
from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as wsConnect

from tests.harness import (
    Client,
    Lbtwist,
    MiB,
    ScriptedBackend,
    exchange,
    parseResponse,
    request,
)
from tests.tcpharness import (
    LISTEN,
    WebSocketEchoServer,
    configWith,
    connect,
    readExactly,
    waitUntil,
)

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _httpPool(
    name: str, backends: list[tuple[str, str]], **pool: object
) -> dict[str, object]:
    table: dict[str, object] = {
        "name": name,
        "connect_timeout": 1.0,
        "response_timeout": 10.0,
        "health": {"check": "none"},
        "backends": [{"url": url, "name": label} for label, url in backends],
    }
    table.update(pool)
    return table


def _open(port: int, path: str) -> ClientConnection:
    return wsConnect(
        f"ws://127.0.0.1:{port}{path}",
        max_size=None,
        compression=None,
        open_timeout=5,
        close_timeout=5,
        ping_interval=None,
    )


def _session(server: WebSocketEchoServer, path: str, closed: bool = False) -> Any:
    def find() -> Any:
        for session in server.sessions:
            if session.path == path and (session.closed or not closed):
                return session
        return None

    waitUntil(lambda: find() is not None, timeout=5, message=f"session {path}")
    return find()


def _upgradeHeaders(
    key: bytes = b"dGhlIHNhbXBsZSBub25jZQ==",
) -> list[tuple[str, bytes]]:
    return [
        ("Connection", b"Upgrade"),
        ("Upgrade", b"websocket"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", b"13"),
    ]


def _maskedFrame(opcode: int, payload: bytes) -> bytes:
    """
    A single final client frame (masked, as clients must), payload < 126.
    """
    assert len(payload) < 126
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def _readFrame(sock: socket.socket) -> tuple[int, bytes]:
    """
    Read one unmasked server frame.

    @return: its opcode and payload.
    """
    first, second = readExactly(sock, 2, timeout=5)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", readExactly(sock, 2, timeout=5))
    elif length == 127:
        (length,) = struct.unpack("!Q", readExactly(sock, 8, timeout=5))
    assert not second & 0x80, "server frames are not masked"
    return first & 0x0F, readExactly(sock, length, timeout=5)


class WebSocketTunnelTests(SynchronousTestCase):
    """
    A WebSocket application behind lbtwist just works; upgrades that are not
    accepted, HTTP/1.0 upgrades and C{h2c} are not tunnelled.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.ws = WebSocketEchoServer("ws1")
        cls.addClassCleanup(cls.ws.close)
        cls.http = ScriptedBackend("http")
        cls.addClassCleanup(cls.http.close)
        cls.lb = Lbtwist(
            cls,
            configWith(
                (
                    {"name": "ws", "listen": LISTEN, "pool": "ws"},
                    _httpPool("ws", [("ws1", cls.ws.url)]),
                ),
                (
                    {"name": "plain", "listen": LISTEN, "pool": "plain"},
                    _httpPool("plain", [("http", cls.http.url)]),
                ),
            ),
        )

    def test_echoesLargeMessages(self) -> None:
        """
        1 MiB binary and text messages come back intact through the tunnel;
        the backend saw a WebSocket handshake with the upgrade headers and
        lbtwist's C{X-Forwarded-For}.
        """
        binary = os.urandom(MiB)
        text = base64.b64encode(os.urandom(3 * MiB // 4)).decode()
        self.assertEqual(len(text), MiB)
        with _open(self.lb.ports["ws"], "/echo") as ws:
            for _ in range(3):
                start = time.monotonic()
                ws.send(binary)
                self.assertEqual(
                    hashlib.sha256(ws.recv(timeout=10)).digest(),
                    hashlib.sha256(binary).digest(),
                )
                ws.send(text)
                echoed = ws.recv(timeout=10)
                self.assertIsInstance(echoed, str)
                self.assertEqual(echoed, text)
                elapsed = time.monotonic() - start
            print(
                f"\n[ws] 2 x 1 MiB round trip through lbtwist: {elapsed * 1000:.0f} ms"
            )
        session = _session(self.ws, "/echo")
        headers = {k.lower(): v for k, v in session.headers}
        self.assertEqual(headers.get("upgrade", "").lower(), "websocket")
        self.assertIn("upgrade", headers.get("connection", "").lower())
        self.assertEqual(headers.get("x-forwarded-for"), "127.0.0.1")

    def test_pingPong(self) -> None:
        """
        A ping from the client is answered with a pong through the tunnel.
        """
        with _open(self.lb.ports["ws"], "/ping") as ws:
            for i in range(3):
                pong = ws.ping(b"ping %d" % (i,))
                self.assertTrue(pong.wait(5), "no pong")

    def test_serverCloseCodeReachesClient(self) -> None:
        """
        The server's close frame, code 4001 with its reason, reaches the
        client; the connection then ends.
        """
        with _open(self.lb.ports["ws"], "/server-close") as ws:
            ws.send("close-4001")
            with self.assertRaises(ConnectionClosed) as caught:
                ws.recv(timeout=5)
        received = caught.exception.rcvd
        self.assertIsNotNone(received)
        self.assertEqual((received.code, received.reason), (4001, "server says bye"))
        session = _session(self.ws, "/server-close", closed=True)
        self.assertEqual(session.closeCode, 4001)

    def test_clientCloseCodeReachesServer(self) -> None:
        """
        The client's close frame, code 4002 with its reason, reaches the
        server.
        """
        with _open(self.lb.ports["ws"], "/client-close") as ws:
            ws.send("hello")
            self.assertEqual(ws.recv(timeout=5), "hello")
            ws.close(4002, "client says bye")
        session = _session(self.ws, "/client-close", closed=True)
        self.assertEqual(
            (session.closeCode, session.closeReason), (4002, "client says bye")
        )

    def test_bytesRightAfterHandshake(self) -> None:
        """
        A WebSocket frame sent in the same packet as the handshake request
        reaches the backend after the handshake, and its echo comes back
        after the 101.
        """
        key = base64.b64encode(os.urandom(16))
        handshake = request(
            "GET",
            "/early",
            _upgradeHeaders(key),
            host=f"127.0.0.1:{self.lb.ports['ws']}",
        )
        frame = _maskedFrame(0x1, b"early bird")
        with connect(self.lb.ports["ws"]) as sock:
            sock.sendall(handshake + frame)
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                head += readExactly(sock, 1, timeout=5)
            response, _ = parseResponse(head)
            self.assertEqual(response.status, 101, head)
            accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
            self.assertEqual(response.header(b"sec-websocket-accept"), accept)
            self.assertEqual((response.header(b"upgrade") or b"").lower(), b"websocket")
            self.assertEqual(_readFrame(sock), (0x1, b"early bird"))
            sock.sendall(_maskedFrame(0x8, struct.pack("!H", 1000)))
            opcode, payload = _readFrame(sock)
            self.assertEqual((opcode, payload[:2]), (0x8, struct.pack("!H", 1000)))

    def test_non101IsRelayedWithoutTunnel(self) -> None:
        """
        An upgrade request whose backend answers 200 gets that response, the
        backend having seen the upgrade headers; the connection is not a
        tunnel: a next request on it (if lbtwist keeps it open) is proxied
        as HTTP.
        """
        client = Client(self.lb.ports["plain"])
        self.addCleanup(client.close)
        response = client.request("/script/echo?upgrade=1", _upgradeHeaders())
        self.assertEqual(response.status, 200, response.raw[:300])
        [seen] = self.http.requestsFor(b"/script/echo?upgrade=1")
        self.assertEqual((seen.header(b"upgrade") or b"").lower(), b"websocket")
        self.assertIn(b"sec-websocket-key: ", response.body.lower())
        try:
            after = client.request("/after-upgrade")
        except (EOFError, ConnectionError):
            return  # lbtwist closed the connection: no tunnel either.
        self.assertEqual(after.status, 200)
        self.assertEqual(after.body, b"http GET /after-upgrade")
        [second] = self.http.requestsFor(b"/after-upgrade")
        self.assertIsNotNone(second.header(b"via"), "second request was not proxied")

    def test_http10UpgradeIgnored(self) -> None:
        """
        C{Upgrade} in an HTTP/1.0 request is not forwarded and nothing is
        tunnelled.
        """
        data, _ = exchange(
            self.lb.ports["plain"],
            request(
                "GET", "/script/echo?v10=1", _upgradeHeaders(), version=b"HTTP/1.0"
            ),
        )
        response, _ = parseResponse(data)
        self.assertEqual(response.status, 200, data[:300])
        [seen] = self.http.requestsFor(b"/script/echo?v10=1")
        self.assertIsNone(seen.header(b"upgrade"), seen.head)

    def test_h2cStripped(self) -> None:
        """
        C{Upgrade: h2c} is stripped (with C{HTTP2-Settings}), never
        tunnelled: the backend sees an ordinary request.
        """
        data, _ = exchange(
            self.lb.ports["plain"],
            request(
                "GET",
                "/script/echo?h2c=1",
                [
                    ("Connection", "Upgrade, HTTP2-Settings"),
                    ("Upgrade", "h2c"),
                    ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
                ],
                close=True,
            ),
        )
        response, _ = parseResponse(data)
        self.assertEqual(response.status, 200, data[:300])
        [seen] = self.http.requestsFor(b"/script/echo?h2c=1")
        self.assertIsNone(seen.header(b"upgrade"), seen.head)
        self.assertIsNone(seen.header(b"http2-settings"), seen.head)


class TunnelAccountingTests(SynchronousTestCase):
    """
    Tunnels count as active connections of their backend, and draining a
    backend lets its open tunnels live while new upgrades go elsewhere.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.servers = {
            "ws1": WebSocketEchoServer("ws1"),
            "ws2": WebSocketEchoServer("ws2"),
        }
        for server in cls.servers.values():
            cls.addClassCleanup(server.close)
        cls.lb = Lbtwist(
            cls,
            configWith(
                (
                    {"name": "ws", "listen": LISTEN, "pool": "ws"},
                    _httpPool(
                        "ws",
                        [(label, s.url) for label, s in cls.servers.items()],
                        strategy="least-connections",
                    ),
                ),
                admin=True,
            ),
        )

    def _admin(self, method: str, path: str) -> Any:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.lb.ports['admin']}{path}", method=method
        )
        with urllib.request.urlopen(req, timeout=5) as response:
            return json.loads(response.read())

    def _active(self) -> dict[str, int]:
        pool = self._admin("GET", "/api/pools/ws")
        return {b["name"]: b["active"] for b in pool["backends"]}

    def _waitActive(self, expected: dict[str, int]) -> None:
        waitUntil(
            lambda: self._active() == expected,
            timeout=3,
            interval=0.05,
            message=lambda: f"active {expected} (now {self._active()})",
        )

    def test_activeAndDraining(self) -> None:
        """
        An open WebSocket counts 1 active on its backend and 0 after close;
        draining that backend keeps the tunnel working while new upgrades
        go to the other backend.
        """
        port = self.lb.ports["ws"]
        stack = ExitStack()
        self.addCleanup(stack.close)
        first = stack.enter_context(_open(port, "/first"))
        first.send("whoami")
        label = first.recv(timeout=5)
        other = "ws2" if label == "ws1" else "ws1"
        self._waitActive({label: 1, other: 0})

        drained = self._admin("POST", f"/api/pools/ws/backends/{label}/drain")
        self.assertEqual(drained["state"], "draining")
        self.assertEqual(drained["active"], 1)

        later = []
        for i in range(3):
            ws = stack.enter_context(_open(port, f"/later/{i}"))
            ws.send("whoami")
            later.append(ws.recv(timeout=5))
        self.assertEqual(later, [other] * 3)
        self._waitActive({label: 1, other: 3})

        # The drained backend's tunnel still works.
        payload = os.urandom(256 * 1024)
        first.send(payload)
        self.assertEqual(first.recv(timeout=5), payload)

        first.close()
        self._waitActive({label: 0, other: 3})
        self.assertEqual(self.servers[label].open, 0)
