# -*- test-case-name: tests.test_e2e_tcp -*-
"""
Black-box helpers for the TCP-mode and WebSocket end-to-end tests: raw TCP
backends with scripted behaviour, a C{websockets} echo server running in a
thread, PROXY protocol helpers (parsed with Twisted's own parsers), socket
clients that send and receive at the same time, and configuration text for
TCP frontends.

Like L{tests.harness}, nothing here imports lbtwist.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import resource
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from twisted.protocols.haproxy._info import ProxyInfo
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser

from tests.harness import MiB, configText

__all__ = [
    "BackendConnection",
    "TCPBackend",
    "WebSocketEchoServer",
    "PROXY_V2_SIGNATURE",
    "configWith",
    "connect",
    "fdCount",
    "parseProxyHeader",
    "proxyV1",
    "raiseFileLimit",
    "readExactly",
    "readUntilEOF",
    "sha256",
    "tcpFrontend",
    "transfer",
    "waitUntil",
]

PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
LISTEN = "tcp:0:interface=127.0.0.1:backlog=1024"


# --------------------------------------------------------------------------
# Small things


def sha256(data: bytes | bytearray | memoryview) -> str:
    """
    @return: the hex SHA-256 of C{data}.
    """
    return hashlib.sha256(data).hexdigest()


def waitUntil(
    predicate: Callable[[], object],
    timeout: float = 5.0,
    interval: float = 0.02,
    message: str | Callable[[], str] = "condition",
) -> float:
    """
    Poll C{predicate} until it is true.

    @return: the seconds it took.
    @raise AssertionError: if it is still false after C{timeout} seconds.
    """
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout}s waiting for {text}")
        time.sleep(interval)


def fdCount(pid: int) -> int:
    """
    @return: the number of open file descriptors of process C{pid}.
    """
    return len(os.listdir(f"/proc/{pid}/fd"))


def raiseFileLimit(wanted: int) -> int:
    """
    Raise this process's soft C{RLIMIT_NOFILE} towards its hard limit so
    that at least C{wanted} descriptors can be open (processes started later
    inherit it).

    @return: the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        target = hard if hard == resource.RLIM_INFINITY else max(soft, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


# --------------------------------------------------------------------------
# PROXY protocol


def proxyV1(
    source: str, sourcePort: int, destination: str, destinationPort: int
) -> bytes:
    """
    @return: a PROXY protocol v1 header line (IPv4), as a balancer in front
        of lbtwist would send it.
    """
    return b"PROXY TCP4 %s %s %d %d\r\n" % (
        source.encode(),
        destination.encode(),
        sourcePort,
        destinationPort,
    )


def proxyHeaderLength(data: bytes) -> int | None:
    """
    @return: the length of the PROXY header (v1 or v2) at the start of
        C{data}, or L{None} if C{data} does not hold all of it yet.
    @raise ValueError: if C{data} does not start like a PROXY header.
    """
    if data.startswith(PROXY_V2_SIGNATURE[: len(data)]) and len(data) < 16:
        return None
    if data.startswith(PROXY_V2_SIGNATURE):
        (length,) = struct.unpack("!H", data[14:16])
        return 16 + length if len(data) >= 16 + length else None
    if b"PROXY "[: len(data)] == data[:6]:
        end = data.find(b"\r\n")
        if end < 0:
            if len(data) > 107:
                raise ValueError(f"v1 PROXY line too long: {data[:120]!r}")
            return None
        return end + 2
    raise ValueError(f"no PROXY header: {data[:64]!r}")


def parseProxyHeader(header: bytes) -> ProxyInfo:
    """
    Parse a complete PROXY header with Twisted's own parsers.

    @param header: a v1 line (with its CRLF) or a whole v2 header.
    """
    if header.startswith(PROXY_V2_SIGNATURE):
        return V2Parser.parse(header)
    assert header.endswith(b"\r\n"), header
    return V1Parser.parse(header[:-2])


# --------------------------------------------------------------------------
# Socket clients


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    """
    @return: a socket connected to 127.0.0.1:C{port}.
    """
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def readUntilEOF(
    sock: socket.socket, timeout: float = 5.0, limit: int | None = None
) -> tuple[bytes, str]:
    """
    Read until the peer closes (or resets) its side, or C{timeout} seconds.

    @param limit: stop once this many bytes have been read.
    @return: the bytes and how it ended: C{"eof"}, C{"reset"}, C{"timeout"}
        or C{"limit"}.
    """
    deadline = time.monotonic() + timeout
    received = bytearray()
    while True:
        if limit is not None and len(received) >= limit:
            return bytes(received), "limit"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bytes(received), "timeout"
        sock.settimeout(remaining)
        size = 1 << 20 if limit is None else min(1 << 20, limit - len(received))
        try:
            chunk = sock.recv(size)
        except socket.timeout:
            return bytes(received), "timeout"
        except ConnectionResetError:
            return bytes(received), "reset"
        if not chunk:
            return bytes(received), "eof"
        received += chunk


def readExactly(sock: socket.socket, size: int, timeout: float = 5.0) -> bytes:
    """
    @return: exactly C{size} bytes.
    @raise AssertionError: if the connection ends or times out first.
    """
    data, ending = readUntilEOF(sock, timeout, limit=size)
    if len(data) < size:
        raise AssertionError(
            f"wanted {size} bytes, got {len(data)} then {ending}: {data[:200]!r}"
        )
    if len(data) > size:
        raise AssertionError(f"wanted {size} bytes, got more: {data[:200]!r}")
    return data


def readLine(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """
    Read one byte at a time up to and including a LF.
    """
    deadline = time.monotonic() + timeout
    line = bytearray()
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no line within {timeout}s: {bytes(line)!r}")
        sock.settimeout(remaining)
        byte = sock.recv(1)
        if not byte:
            raise AssertionError(f"EOF before a full line: {bytes(line)!r}")
        line += byte
    return bytes(line)


def transfer(
    port: int, payload: bytes, timeout: float = 30.0, shutdownWrite: bool = True
) -> tuple[bytes, str]:
    """
    Connect, send C{payload} from a thread (then C{shutdown(SHUT_WR)}) while
    reading everything until the connection ends.

    @return: the bytes read and how it ended (see L{readUntilEOF}).
    """
    sock = connect(port, timeout)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            view = memoryview(payload)
            for start in range(0, len(view), MiB):
                sock.sendall(view[start : start + MiB])
            if shutdownWrite:
                sock.shutdown(socket.SHUT_WR)
        except BaseException as e:
            errors.append(e)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        received, ending = readUntilEOF(sock, timeout)
    finally:
        sender.join(timeout)
        sock.close()
    if errors:
        raise AssertionError(f"sending failed: {errors[0]!r}") from errors[0]
    return received, ending


# --------------------------------------------------------------------------
# Raw TCP backends


@dataclass
class BackendConnection:
    """
    One connection a L{TCPBackend} accepted.

    @ivar number: 1 for the first accepted connection.
    @ivar peer: the (host, port) lbtwist connected from.
    @ivar received: what the behaviour recorded as received.
    @ivar header: a PROXY header read first, if the behaviour reads one.
    @ivar sawEOF: whether the behaviour read an EOF from lbtwist.
    @ivar closed: whether the connection is over on the backend's side.
    @ivar notes: anything else a behaviour records.
    """

    number: int
    peer: tuple[str, int]
    sock: socket.socket
    received: bytes = b""
    header: bytes = b""
    sawEOF: bool = False
    closed: bool = False
    notes: dict[str, Any] = field(default_factory=dict)


class TCPBackend:
    """
    A raw TCP server on 127.0.0.1, one thread per connection, running one of
    the C{_behave_<name>} methods for every connection it accepts.

    Behaviours:
      - C{echo}: send back everything; after EOF, shut down writing.
      - C{banner}: send C{"220 <label> ready\\r\\n"} at once, then C{echo}.
      - C{sink}: read to EOF, then answer C{"<sha256> <count>\\n"} and close.
      - C{source}: read a line C{"<count>\\n"}, send that many random bytes
        (their hash is recorded in C{notes["sha256"]}), close.
      - C{eof-then-talk}: read to EOF, then send C{"got <data>"} and two
        more pieces a little later, then close.
      - C{talk-then-eof}: send a line, shut down writing, read to EOF,
        close.
      - C{flood}: send C{floodSize} bytes at once (a 1 MiB pattern
        repeated), counting them in L{sent}, then close.
      - C{proxy}: read a PROXY header (v1 or v2), then read up to a LF or
        EOF and answer C{"ok <count>\\n"} (the bytes after the header so
        far), then read to EOF.

    @ivar open: connections currently open.
    @ivar accepted: connections accepted so far.
    @ivar connections: every accepted connection, in order.
    @ivar sent: bytes sent by C{flood} so far (all connections).
    """

    def __init__(
        self,
        label: str = "tcp",
        behaviour: str = "echo",
        port: int = 0,
        floodSize: int = 0,
    ) -> None:
        self.label = label
        self.behaviour = behaviour
        self.floodSize = floodSize
        self.port = port
        self.open = 0
        self.accepted = 0
        self.sent = 0
        self.connections: list[BackendConnection] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._handler: Callable[[BackendConnection], None] = getattr(
            self, "_behave_" + behaviour.replace("-", "_")
        )
        self.start()

    @property
    def url(self) -> str:
        """
        C{tcp://127.0.0.1:PORT}.
        """
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        """
        C{127.0.0.1:PORT}.
        """
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """
        Listen on C{self.port} (again).
        """
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(1024)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._acceptLoop, args=(listener,), daemon=True).start()

    def close(self) -> None:
        """
        Stop listening and close every open connection.
        """
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self._lock:
            connections = [c for c in self.connections if not c.closed]
        for connection in connections:
            try:
                connection.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def connection(self, number: int, timeout: float = 5.0) -> BackendConnection:
        """
        @return: accepted connection number C{number} (1-based), waiting for
            it to be accepted.
        """
        waitUntil(
            lambda: self.accepted >= number,
            timeout,
            message=f"{self.label} to accept connection {number}",
        )
        with self._lock:
            return self.connections[number - 1]

    def finished(self, number: int, timeout: float = 5.0) -> BackendConnection:
        """
        @return: connection number C{number}, once it is closed on the
            backend's side.
        """
        connection = self.connection(number, timeout)
        waitUntil(
            lambda: connection.closed,
            timeout,
            message=f"{self.label} connection {number} to finish",
        )
        return connection

    def _acceptLoop(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, peer = listener.accept()
            except OSError:
                return
            if self._listener is not listener:
                sock.close()
                return
            with self._lock:
                self.accepted += 1
                self.open += 1
                connection = BackendConnection(self.accepted, peer, sock)
                self.connections.append(connection)
            sock.settimeout(120)
            threading.Thread(
                target=self._serve, args=(connection,), daemon=True
            ).start()

    def _serve(self, connection: BackendConnection) -> None:
        try:
            self._handler(connection)
        except OSError as e:
            connection.notes["error"] = repr(e)
        finally:
            try:
                connection.sock.close()
            except OSError:
                pass
            with self._lock:
                self.open -= 1
                connection.closed = True

    @staticmethod
    def _recv(connection: BackendConnection, size: int = 1 << 18) -> bytes:
        data = connection.sock.recv(size)
        if not data:
            connection.sawEOF = True
        return data

    def _readToEOF(self, connection: BackendConnection) -> bytes:
        parts: list[bytes] = []
        while True:
            data = self._recv(connection)
            if not data:
                return b"".join(parts)
            parts.append(data)

    # Behaviours -------------------------------------------------------------

    def _behave_echo(self, connection: BackendConnection) -> None:
        count = 0
        while True:
            data = self._recv(connection)
            if not data:
                break
            count += len(data)
            connection.sock.sendall(data)
        connection.notes["count"] = count
        connection.sock.shutdown(socket.SHUT_WR)

    def _behave_banner(self, connection: BackendConnection) -> None:
        connection.sock.sendall(b"220 " + self.label.encode() + b" ready\r\n")
        self._behave_echo(connection)

    def _behave_sink(self, connection: BackendConnection) -> None:
        digest = hashlib.sha256()
        count = 0
        while True:
            data = self._recv(connection)
            if not data:
                break
            digest.update(data)
            count += len(data)
        connection.notes.update(sha256=digest.hexdigest(), count=count)
        connection.sock.sendall(b"%s %d\n" % (digest.hexdigest().encode(), count))

    def _behave_source(self, connection: BackendConnection) -> None:
        line = b""
        while not line.endswith(b"\n"):
            data = self._recv(connection, 1)
            if not data:
                return
            line += data
        size = int(line)
        digest = hashlib.sha256()
        remaining = size
        while remaining:
            block = os.urandom(min(remaining, MiB))
            digest.update(block)
            connection.sock.sendall(block)
            remaining -= len(block)
        connection.notes.update(sha256=digest.hexdigest(), count=size)
        connection.sock.shutdown(socket.SHUT_WR)
        # Wait for the other side to finish, so that closing cannot reset.
        connection.received = self._readToEOF(connection)

    def _behave_eof_then_talk(self, connection: BackendConnection) -> None:
        connection.received = self._readToEOF(connection)
        connection.sock.sendall(b"got " + connection.received)
        time.sleep(0.1)
        connection.sock.sendall(b"; more after EOF")
        time.sleep(0.1)
        connection.sock.sendall(b"; and the last words")

    def _behave_talk_then_eof(self, connection: BackendConnection) -> None:
        connection.sock.sendall(b"backend done talking, still listening\n")
        connection.sock.shutdown(socket.SHUT_WR)
        connection.received = self._readToEOF(connection)

    def _behave_flood(self, connection: BackendConnection) -> None:
        block = (bytes(range(256)) * 4096)[:MiB]
        remaining = self.floodSize
        view = memoryview(block)
        while remaining:
            piece = view[: min(remaining, len(block))]
            connection.sock.sendall(piece)
            remaining -= len(piece)
            with self._lock:
                self.sent += len(piece)
        connection.sock.shutdown(socket.SHUT_WR)
        connection.received = self._readToEOF(connection)

    def _behave_proxy(self, connection: BackendConnection) -> None:
        data = b""
        while True:
            length = proxyHeaderLength(data)
            if length is not None:
                break
            chunk = self._recv(connection, 4096)
            if not chunk:
                connection.notes["error"] = f"EOF inside the header: {data!r}"
                return
            data += chunk
        connection.header, rest = data[:length], data[length:]
        while b"\n" not in rest:
            chunk = self._recv(connection)
            if not chunk:
                break
            rest += chunk
        connection.sock.sendall(b"ok %d\n" % (len(rest),))
        if not connection.sawEOF:
            rest += self._readToEOF(connection)
        connection.received = rest


# --------------------------------------------------------------------------
# WebSocket echo server


@dataclass
class WebSocketSession:
    """
    One WebSocket connection a L{WebSocketEchoServer} accepted.

    @ivar headers: the handshake request's header lines.
    @ivar closeCode: the close code the client sent (or echoed), once closed.
    @ivar closeReason: the reason that came with it.
    @ivar messages: how many messages were received.
    """

    path: str
    headers: list[tuple[str, str]]
    closeCode: int | None = None
    closeReason: str | None = None
    messages: int = 0
    closed: bool = False


class WebSocketEchoServer:
    """
    A C{websockets} server on 127.0.0.1, running its own asyncio loop in a
    thread. It echoes every message, answers the text C{"whoami"} with its
    label, and closes with code 4001 and reason C{"server says bye"} when it
    receives the text C{"close-4001"}.

    @ivar sessions: every WebSocket connection, in order.
    """

    def __init__(self, label: str = "ws") -> None:
        import websockets.asyncio.server

        self.label = label
        self.sessions: list[WebSocketSession] = []
        self._serve = websockets.asyncio.server.serve
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> None:
        self._server = await self._serve(
            self._handle,
            "127.0.0.1",
            0,
            max_size=None,
            ping_interval=None,
            compression=None,
        )
        self.port: int = next(iter(self._server.sockets)).getsockname()[1]

    @property
    def url(self) -> str:
        """
        C{http://127.0.0.1:PORT}, for a pool's backend.
        """
        return f"http://127.0.0.1:{self.port}"

    @property
    def open(self) -> int:
        """
        WebSocket connections not closed yet.
        """
        return sum(not s.closed for s in self.sessions)

    async def _handle(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        session = WebSocketSession(
            ws.request.path, [(k, v) for k, v in ws.request.headers.raw_items()]
        )
        self.sessions.append(session)
        try:
            async for message in ws:
                session.messages += 1
                if message == "whoami":
                    await ws.send(self.label)
                elif message == "close-4001":
                    await ws.close(4001, "server says bye")
                else:
                    await ws.send(message)
        except ConnectionClosed:
            pass
        finally:
            try:
                await asyncio.wait_for(ws.wait_closed(), 5)
            except asyncio.TimeoutError:
                pass
            session.closeCode = ws.close_code
            session.closeReason = ws.close_reason
            session.closed = True

    def close(self) -> None:
        """
        Stop the server and its loop.
        """

        async def stop() -> None:
            self._server.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), 5)
            except asyncio.TimeoutError:
                pass

        try:
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)


# --------------------------------------------------------------------------
# Configuration text


def tcpFrontend(
    name: str,
    backends: Sequence[TCPBackend | int | str],
    frontend: Mapping[str, object] | None = None,
    health: Mapping[str, object] | None = None,
    **pool: object,
) -> tuple[dict[str, object], dict[str, object]]:
    """
    A TCP frontend C{name} listening on an OS-chosen loopback port (backlog
    1024) in front of a pool also called C{name}.

    @param backends: L{TCPBackend}s, ports on 127.0.0.1, or URLs.
    @param health: the pool's health check; C{check = "none"} by default.
    @param pool: more pool keys (C{retries}, C{idle_timeout}...).
    @return: the frontend table and the pool table, for L{configWith}.
    """
    urls = []
    for backend in backends:
        if isinstance(backend, TCPBackend):
            urls.append(backend.url)
        elif isinstance(backend, int):
            urls.append(f"tcp://127.0.0.1:{backend}")
        else:
            urls.append(backend)
    frontendTable: dict[str, object] = {
        "name": name,
        "listen": LISTEN,
        "mode": "tcp",
        "pool": name,
    }
    frontendTable.update(frontend or {})
    poolTable: dict[str, object] = {"name": name, "connect_timeout": 1.0}
    poolTable.update(pool)
    poolTable["health"] = dict(health) if health is not None else {"check": "none"}
    poolTable["backends"] = urls
    return frontendTable, poolTable


def configWith(
    *sections: tuple[Mapping[str, object], Mapping[str, object]],
    settings: Mapping[str, object] | None = None,
    admin: bool = False,
) -> str:
    """
    Configuration text for frontend/pool pairs (from L{tcpFrontend} or built
    by hand), with optional C{[settings]} and an C{[admin]} listener on an
    OS-chosen loopback port.
    """
    text = configText([f for f, _ in sections], [p for _, p in sections])
    if settings:
        text += "\n[settings]\n" + "".join(
            f"{k} = {_toml(v)}\n" for k, v in settings.items()
        )
    if admin:
        text += '\n[admin]\nlisten = "tcp:0:interface=127.0.0.1"\n'
    return text


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    assert isinstance(value, str), value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
