# -*- test-case-name: tests.test_harness -*-
"""
Black-box end-to-end harness: scripted raw-socket backends, a real
C{twistd -n lbtwist} subprocess, and a tiny HTTP/1.1 client and response
parser that see every byte.

Nothing here imports lbtwist: the tests drive the program from the outside,
as its users do.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "ScriptedBackend",
    "ReceivedRequest",
    "Response",
    "Lbtwist",
    "Client",
    "closedPort",
    "rawExchange",
    "exchange",
    "parseResponses",
    "parseResponse",
    "configText",
    "MiB",
    "simpleConfig",
    "request",
]

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB = 1024 * 1024
_LISTENING = re.compile(r"frontend (\S+) listening on (\S+):(\d+)")


# --------------------------------------------------------------------------
# Values


def _headerValues(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """
    Values of every header line called C{name} (case-insensitive), in order.
    """
    lowered = name.lower()
    return [value for key, value in headers if key.lower() == lowered]


@dataclass
class ReceivedRequest:
    """
    One request exactly as a L{ScriptedBackend} received it.

    @ivar head: the raw request line and header section, including the final
        empty line.
    @ivar body: the decoded body (chunked framing removed).
    @ivar rawBody: the body bytes exactly as they arrived on the wire.
    @ivar connection: the backend's number for the connection it came on
        (1 for the first accepted connection).
    """

    head: bytes
    body: bytes
    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    rawBody: bytes = b""
    connection: int = 0

    def headerValues(self, name: bytes) -> list[bytes]:
        """
        @return: the values of every C{name} line, in order.
        """
        return _headerValues(self.headers, name)

    def header(self, name: bytes) -> bytes | None:
        """
        @return: the single value of C{name}, or L{None} if absent; raises
            L{AssertionError} if the field appears more than once.
        """
        values = self.headerValues(name)
        if not values:
            return None
        if len(values) > 1:
            raise AssertionError(f"{name!r} appears {len(values)} times: {values!r}")
        return values[0]


@dataclass
class Response:
    """
    One parsed HTTP/1.x response.

    @ivar complete: C{False} if the connection ended before the framing said
        the body was complete.
    """

    version: bytes
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    complete: bool = True
    chunked: bool = False
    raw: bytes = b""

    def headerValues(self, name: bytes) -> list[bytes]:
        """
        @return: the values of every C{name} line, in order.
        """
        return _headerValues(self.headers, name)

    def header(self, name: bytes) -> bytes | None:
        """
        @return: the value of C{name} (several lines joined with C{", "}) or
            L{None} if absent.
        """
        values = self.headerValues(name)
        return b", ".join(values) if values else None

    def connectionTokens(self) -> set[bytes]:
        """
        @return: the lower-cased tokens of every C{Connection} line.
        """
        return {
            token.strip().lower()
            for value in self.headerValues(b"connection")
            for token in value.split(b",")
            if token.strip()
        }


# --------------------------------------------------------------------------
# HTTP/1.1 response parser


class _NeedMore(Exception):
    """
    The buffer does not hold a complete response yet.
    """


def _decodeChunked(data: bytes, eof: bool) -> tuple[bytes, int, bool]:
    """
    Decode a chunked body at the start of C{data}.

    @return: C{(body, consumed, complete)}; raises L{_NeedMore} if C{data} is
        incomplete and C{eof} is false, L{ValueError} on bad framing.
    """
    body = bytearray()
    position = 0
    while True:
        end = data.find(b"\r\n", position)
        if end < 0:
            if eof:
                return bytes(body), len(data), False
            raise _NeedMore()
        sizeField = data[position:end].split(b";", 1)[0].strip()
        if not sizeField or not all(c in b"0123456789abcdefABCDEF" for c in sizeField):
            raise ValueError(f"bad chunk size line {data[position:end]!r}")
        size = int(sizeField, 16)
        position = end + 2
        if size == 0:
            # Trailer section up to an empty line.
            while True:
                end = data.find(b"\r\n", position)
                if end < 0:
                    if eof:
                        return bytes(body), len(data), False
                    raise _NeedMore()
                line = data[position:end]
                position = end + 2
                if not line:
                    return bytes(body), position, True
        if len(data) < position + size + 2:
            if eof:
                body += data[position : position + size]
                return bytes(body), len(data), False
            raise _NeedMore()
        body += data[position : position + size]
        if data[position + size : position + size + 2] != b"\r\n":
            raise ValueError("chunk data not followed by CRLF")
        position += size + 2


def _parseHead(head: bytes) -> tuple[bytes, int, bytes, list[tuple[bytes, bytes]]]:
    """
    Parse a status line and header section (without the final empty line).
    """
    lines = head.split(b"\r\n")
    statusLine = lines[0]
    parts = statusLine.split(b" ", 2)
    if (
        len(parts) < 2
        or not parts[0].startswith(b"HTTP/")
        or len(parts[1]) != 3
        or not parts[1].isdigit()
    ):
        raise ValueError(f"bad status line {statusLine!r}")
    reason = parts[2] if len(parts) > 2 else b""
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise ValueError(f"bad header line {line!r}")
        headers.append((name, value.strip(b" \t")))
    return parts[0], int(parts[1]), reason, headers


def _parseOne(data: bytes, method: bytes, eof: bool) -> tuple[Response, int]:
    """
    Parse the response at the start of C{data}.

    @return: the response and the number of bytes it used; raises
        L{_NeedMore} when more bytes are needed (never when C{eof}).
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if eof and data:
            raise ValueError(f"incomplete response head {data[:200]!r}")
        raise _NeedMore()
    version, status, reason, headers = _parseHead(data[:end])
    position = end + 4
    response = Response(version, status, reason, headers)
    if method.upper() == b"HEAD" or status in (204, 304) or 100 <= status < 200:
        response.raw = data[:position]
        return response, position
    rest = data[position:]
    transferCodings = [
        token.strip().lower()
        for value in response.headerValues(b"transfer-encoding")
        for token in value.split(b",")
    ]
    lengths = response.headerValues(b"content-length")
    if transferCodings:
        if transferCodings[-1] != b"chunked":
            raise ValueError(f"unexpected transfer coding {transferCodings!r}")
        body, used, complete = _decodeChunked(rest, eof)
        response.body, response.complete, response.chunked = body, complete, True
        position += used
    elif lengths:
        if len(set(lengths)) != 1 or not lengths[0].isdigit():
            raise ValueError(f"bad Content-Length {lengths!r}")
        length = int(lengths[0])
        if len(rest) >= length:
            response.body = rest[:length]
            position += length
        elif eof:
            response.body, response.complete = rest, False
            position += len(rest)
        else:
            raise _NeedMore()
    else:
        if not eof:
            raise _NeedMore()
        response.body = rest
        position += len(rest)
    response.raw = data[:position]
    return response, position


def parseResponse(data: bytes, method: bytes = b"GET") -> tuple[Response, bytes]:
    """
    Parse one complete-or-truncated response from bytes that end at EOF.

    @return: the response and any bytes left after it.
    """
    response, used = _parseOne(data, method, eof=True)
    return response, data[used:]


def parseResponses(data: bytes, methods: Sequence[bytes] = ()) -> list[Response]:
    """
    Parse every response in C{data} (bytes read up to EOF).

    @param methods: the request method for each response, in order, when it
        matters (C{HEAD}); missing entries mean C{GET}.
    @raise ValueError: if bytes are left that are not a response.
    """
    responses = []
    index = 0
    while data:
        method = methods[index] if index < len(methods) else b"GET"
        response, used = _parseOne(data, method, eof=True)
        responses.append(response)
        data = data[used:]
        if not 100 <= response.status < 200:
            index += 1
    return responses


# --------------------------------------------------------------------------
# Clients


def exchange(
    port: int, data: bytes, timeout: float = 5.0, shutdownWrite: bool = False
) -> tuple[bytes, str]:
    """
    Connect to 127.0.0.1:C{port}, send C{data} and read until the server
    closes or C{timeout} seconds have passed in total.

    @return: the bytes read and how it ended: C{"eof"}, C{"reset"} or
        C{"timeout"}.
    """
    deadline = time.monotonic() + timeout
    received = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if shutdownWrite:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return bytes(received), "timeout"
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                return bytes(received), "timeout"
            except ConnectionResetError:
                return bytes(received), "reset"
            if not chunk:
                return bytes(received), "eof"
            received += chunk


def rawExchange(
    port: int, data: bytes, timeout: float = 5.0, shutdownWrite: bool = False
) -> bytes:
    """
    Like L{exchange} but return only the bytes read.
    """
    return exchange(port, data, timeout, shutdownWrite)[0]


def request(
    method: str | bytes = "GET",
    target: str | bytes = "/",
    headers: Iterable[tuple[str | bytes, str | bytes]] | None = None,
    body: bytes | None = None,
    host: str | bytes | None = "lb.example",
    close: bool = False,
    version: bytes = b"HTTP/1.1",
) -> bytes:
    """
    Serialize a request. C{Content-Length} is added for a body unless the
    headers already frame it; C{Host} comes first unless C{host} is L{None}.
    """

    def b(value: str | bytes) -> bytes:
        return value.encode("latin-1") if isinstance(value, str) else value

    lines = [b(method) + b" " + b(target) + b" " + version]
    allHeaders = [(b(k), b(v)) for k, v in (headers or ())]
    if host is not None:
        lines.append(b"Host: " + b(host))
    for key, value in allHeaders:
        lines.append(key + b": " + value)
    names = {key.lower() for key, _ in allHeaders}
    if (
        body is not None
        and b"content-length" not in names
        and b"transfer-encoding" not in names
    ):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


class Client:
    """
    One client connection that can send raw bytes and read responses one at a
    time (keep-alive and pipelining aware).
    """

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""
        self.eof = False
        self.ending: str | None = None

    def send(self, data: bytes) -> None:
        """
        Send raw bytes.
        """
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("timed out reading a response")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
            self.ending = "reset"
        if not chunk:
            self.eof = True
            self.ending = self.ending or "eof"
        self.buffer += chunk

    def readResponse(
        self, method: bytes = b"GET", timeout: float | None = None
    ) -> Response:
        """
        Read one response (skipping C{1xx} interim responses).

        @raise EOFError: if the connection ends before a status line.
        @raise socket.timeout: if nothing complete arrives in time.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if self.eof and not self.buffer:
                raise EOFError(f"connection closed ({self.ending}) before a response")
            try:
                response, used = _parseOne(self.buffer, method, self.eof)
            except _NeedMore:
                self._fill(deadline)
                continue
            self.buffer = self.buffer[used:]
            if 100 <= response.status < 200:
                continue
            return response

    def request(
        self, *args: object, method: str | bytes = "GET", **kwargs: object
    ) -> Response:
        """
        Send a request built by L{request} and read its response.
        """
        self.send(request(method, *args, **kwargs))  # type: ignore[arg-type]
        m = method.encode() if isinstance(method, str) else method
        return self.readResponse(m)

    def readUntilClosed(self, timeout: float = 5.0) -> tuple[bytes, str]:
        """
        Read until the server closes the connection.

        @return: the bytes read beyond already-parsed responses and how the
            connection ended (C{"eof"}, C{"reset"} or C{"timeout"}).
        """
        deadline = time.monotonic() + timeout
        while not self.eof:
            try:
                self._fill(deadline)
            except socket.timeout:
                return self.buffer, "timeout"
        return self.buffer, self.ending or "eof"

    def close(self) -> None:
        """
        Close the connection.
        """
        self.sock.close()


# --------------------------------------------------------------------------
# Scripted backend


_REASONS = {
    200: b"OK",
    204: b"No Content",
    304: b"Not Modified",
    404: b"Not Found",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}


class _Closed(Exception):
    """
    The peer closed the connection.
    """


class _Connection:
    """
    A buffered reader over one accepted socket.
    """

    def __init__(self, sock: socket.socket, number: int) -> None:
        self.sock = sock
        self.number = number
        self.buffer = b""

    def _recv(self) -> None:
        chunk = self.sock.recv(262144)
        if not chunk:
            raise _Closed()
        self.buffer += chunk

    def readUntil(self, marker: bytes, limit: int = MiB) -> bytes:
        while True:
            index = self.buffer.find(marker)
            if index >= 0:
                data, self.buffer = (
                    self.buffer[: index + len(marker)],
                    self.buffer[index + len(marker) :],
                )
                return data
            if len(self.buffer) > limit:
                raise ValueError("line too long")
            self._recv()

    def readExactly(self, size: int) -> bytes:
        parts = []
        if self.buffer:
            taken = self.buffer[:size]
            self.buffer = self.buffer[size:]
            parts.append(taken)
            size -= len(taken)
        while size > 0:
            chunk = self.sock.recv(min(size, 1 << 20))
            if not chunk:
                raise _Closed()
            parts.append(chunk)
            size -= len(chunk)
        return b"".join(parts)


class ScriptedBackend:
    """
    A raw HTTP/1.1 server on 127.0.0.1 that records every request it receives
    and answers C{/script/<name>[?query]} with canned (often broken)
    behaviour, C{/healthz} with 200, and anything else with 200 and the body
    C{"<label> <method> <target>"}.

    @ivar received: every request received, in order.
    @ivar connections: how many connections were accepted.
    @ivar behaviour: if set, the script name used for every request except
        C{/healthz}, whatever its path.
    """

    def __init__(
        self, label: str = "backend", port: int = 0, behaviour: str | None = None
    ) -> None:
        self.label = label
        self.behaviour = behaviour
        self.received: list[ReceivedRequest] = []
        self.connections = 0
        self.healthChecks = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.port = port
        self.start()

    @property
    def url(self) -> str:
        """
        The backend's URL, C{http://127.0.0.1:PORT}.
        """
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        """
        C{127.0.0.1:PORT}.
        """
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """
        Listen (again) on C{self.port}; does nothing if already listening.
        """
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._acceptLoop, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """
        Close the listening socket and every open connection, like a process
        that died. L{start} brings the backend back on the same port.
        """
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self._lock:
            connections = list(self._open)
            self._open.clear()
        for sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    close = stop

    def clear(self) -> None:
        """
        Forget the requests received so far.
        """
        with self._lock:
            self.received.clear()

    def requestsFor(self, pathPrefix: bytes) -> list[ReceivedRequest]:
        """
        @return: the received requests whose target starts with C{pathPrefix}.
        """
        with self._lock:
            return [r for r in self.received if r.target.startswith(pathPrefix)]

    def _acceptLoop(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            if self._listener is not listener:
                sock.close()
                return
            with self._lock:
                self.connections += 1
                number = self.connections
                self._open.add(sock)
            sock.settimeout(60)
            threading.Thread(
                target=self._serve, args=(sock, number), daemon=True
            ).start()

    def _serve(self, sock: socket.socket, number: int) -> None:
        connection = _Connection(sock, number)
        try:
            while True:
                received = self._readRequest(connection)
                if received is None:
                    return
                if not self._respond(connection, received):
                    return
        except (_Closed, OSError, ValueError):
            return
        finally:
            with self._lock:
                self._open.discard(sock)
            try:
                sock.close()
            except OSError:
                pass

    def _readRequest(self, connection: _Connection) -> ReceivedRequest | None:
        try:
            head = connection.readUntil(b"\r\n\r\n")
        except _Closed:
            return None
        lines = head[:-4].split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            raise ValueError(f"bad request line {lines[0]!r}")
        method, target, version = parts
        headers = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                raise ValueError(f"bad header line {line!r}")
            headers.append((name, value.strip(b" \t")))
        codings = [
            t.strip().lower()
            for _, v in headers
            if _.lower() == b"transfer-encoding"
            for t in v.split(b",")
        ]
        lengths = [v for k, v in headers if k.lower() == b"content-length"]
        raw = bytearray()
        body = bytearray()
        if codings and codings[-1] == b"chunked":
            while True:
                sizeLine = connection.readUntil(b"\r\n")
                raw += sizeLine
                size = int(sizeLine[:-2].split(b";")[0].strip(), 16)
                if size == 0:
                    while True:
                        line = connection.readUntil(b"\r\n")
                        raw += line
                        if line == b"\r\n":
                            break
                    break
                data = connection.readExactly(size + 2)
                raw += data
                body += data[:-2]
        elif lengths:
            data = connection.readExactly(int(lengths[0]))
            raw += data
            body += data
        received = ReceivedRequest(
            head=head,
            body=bytes(body),
            method=method,
            target=target,
            version=version,
            headers=headers,
            rawBody=bytes(raw),
            connection=connection.number,
        )
        with self._lock:
            if target == b"/healthz":
                self.healthChecks += 1
            else:
                self.received.append(received)
        return received

    def _send(self, connection: _Connection, data: bytes) -> None:
        connection.sock.sendall(data)

    def _simple(
        self,
        status: int,
        body: bytes,
        headers: Sequence[tuple[bytes, bytes]] = (),
        close: bool = False,
    ) -> bytes:
        lines = [b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"Whatever"))]
        lines.append(b"Content-Type: text/plain")
        lines.append(b"Content-Length: %d" % (len(body),))
        lines.append(b"X-Backend: " + self.label.encode())
        lines.extend(k + b": " + v for k, v in headers)
        if close:
            lines.append(b"Connection: close")
        head = b"\r\n".join(lines) + b"\r\n\r\n"
        return head if getattr(self._local, "head", False) else head + body

    def _respond(self, connection: _Connection, received: ReceivedRequest) -> bool:
        """
        Answer one request.

        @return: whether to keep reading requests on this connection.
        """
        tokens = {
            t.strip().lower()
            for v in received.headerValues(b"connection")
            for t in v.split(b",")
        }
        self._local.head = received.method == b"HEAD"
        close = b"close" in tokens or (
            received.version == b"HTTP/1.0" and b"keep-alive" not in tokens
        )
        split = urlsplit(received.target.decode("latin-1"))
        path = split.path
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        if path == "/healthz":
            self._send(connection, self._simple(200, b"ok", close=close))
            return not close
        name = self.behaviour
        if name is None and path.startswith("/script/"):
            name = path[len("/script/") :]
        if name is None:
            body = self.label.encode() + b" " + received.method + b" " + received.target
            self._send(connection, self._simple(200, body, close=close))
            return not close
        handler = getattr(self, "_script_" + name.replace("-", "_"), None)
        if handler is None:
            self._send(
                connection,
                self._simple(404, b"no script " + name.encode(), close=close),
            )
            return not close
        keep = handler(connection, received, query)
        return bool(keep) and not close

    # Canned behaviours: each returns whether the connection may be reused.

    def _script_echo(
        self, c: _Connection, r: ReceivedRequest, q: Mapping[str, str]
    ) -> bool:
        self._send(
            c,
            self._simple(
                200,
                r.head + r.rawBody,
                [(b"Content-Type", b"application/octet-stream")],
            ),
        )
        return True

    def _script_sha256(
        self, c: _Connection, r: ReceivedRequest, q: Mapping[str, str]
    ) -> bool:
        digest = hashlib.sha256(r.body).hexdigest().encode()
        self._send(c, self._simple(200, digest + b" %d" % (len(r.body),)))
        return True

    def _script_status(
        self, c: _Connection, r: ReceivedRequest, q: Mapping[str, str]
    ) -> bool:
        code = int(q.get("code", "500"))
        self._send(
            c, self._simple(code, b"status %d from %s" % (code, self.label.encode()))
        )
        return True

    def _script_chunked(
        self, c: _Connection, r: ReceivedRequest, q: Mapping[str, str]
    ) -> bool:
        self._send(
            c,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
            b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n",
        )
        return True

    def _script_truncated_cl(
        self, c: _Connection, r: ReceivedRequest, q: Mapping[str, str]
    ) -> bool:
        self._send(
            c,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n0123456789",
        )
        time.sleep(0.1)
        return False

    def _script_truncated_chunked(
        self, c: _Connection, r: ReceivedRequest, q: Mapping[str, str]
    ) -> bool:
        self._send(
            c,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n",
        )
        time.sleep(0.1)
        return False

    def _script_cl_and_te(
        self, c: _Connection, r: ReceivedRequest, q: Mapping[str, str]
    ) -> bool:
        self._send(
            c,
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n",
        )
        return True

    def _script_double_cl(
        self, c: _Connection, r: ReceivedRequest, q: Mapping[str, str]
    ) -> bool:
        self._send(
            c,
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        )
        return True

    def _script_garbage_status(
        self, c: _Connection, r: ReceivedRequest, q: Mapping[str, str]
    ) -> bool:
        self._send(c, b"HTTP/1.1 abc\r\nContent-Length: 2\r\n\r\nok")
        return True

    def _script_stray_bytes(
        self, c: _Connection, r: ReceivedRequest, q: Mapping[str, str]
    ) -> bool:
        self._send(
            c,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nstray",
        )
        return True

    def _script_set_cookie(
        self, c: _Connection, r: ReceivedRequest, q: Mapping[str, str]
    ) -> bool:
        self._send(
            c,
            self._simple(
                200,
                b"cookies",
                [
                    (
                        b"Set-Cookie",
                        b"a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Path=/",
                    ),
                    (b"Set-Cookie", b"b=2; HttpOnly"),
                ],
            ),
        )
        return True

    def _script_hop_by_hop(
        self, c: _Connection, r: ReceivedRequest, q: Mapping[str, str]
    ) -> bool:
        self._send(
            c,
            b"HTTP/1.1 200 OK\r\n"
            b"Content-Type: text/plain\r\n"
            b"Content-Length: 3\r\n"
            b"Connection: close, X-Private\r\n"
            b"X-Private: secret\r\n"
            b"Keep-Alive: timeout=5\r\n"
            b"Proxy-Connection: keep-alive\r\n"
            b"Upgrade: foo\r\n"
            b"X-Kept: yes\r\n"
            b"\r\n"
            b"hop",
        )
        return False

    def _script_204(
        self, c: _Connection, r: ReceivedRequest, q: Mapping[str, str]
    ) -> bool:
        self._send(
            c,
            b"HTTP/1.1 204 No Content\r\nX-Backend: "
            + self.label.encode()
            + b"\r\n\r\n",
        )
        return True

    def _script_304(
        self, c: _Connection, r: ReceivedRequest, q: Mapping[str, str]
    ) -> bool:
        self._send(
            c, b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 50\r\n\r\n'
        )
        return True

    def _script_head(
        self, c: _Connection, r: ReceivedRequest, q: Mapping[str, str]
    ) -> bool:
        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 50\r\n\r\n"
        )
        self._send(c, head if r.method == b"HEAD" else head + b"x" * 50)
        return True

    def _script_slow(
        self, c: _Connection, r: ReceivedRequest, q: Mapping[str, str]
    ) -> bool:
        time.sleep(float(q.get("s", "1")))
        body = self.label.encode() + b" " + r.method + b" " + r.target
        self._send(c, self._simple(200, body))
        return True

    def _script_close(
        self, c: _Connection, r: ReceivedRequest, q: Mapping[str, str]
    ) -> bool:
        return False

    def _script_reset(
        self, c: _Connection, r: ReceivedRequest, q: Mapping[str, str]
    ) -> bool:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return False

    def _script_big(
        self, c: _Connection, r: ReceivedRequest, q: Mapping[str, str]
    ) -> bool:
        size = int(float(q.get("mb", "1")) * MiB)
        self._send(
            c,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
            % (size,),
        )
        block = bytes(range(256)) * 256  # 64 KiB
        remaining = size
        while remaining > 0:
            piece = block if remaining >= len(block) else block[:remaining]
            c.sock.sendall(piece)
            remaining -= len(piece)
        return True

    def _script_no_length(
        self, c: _Connection, r: ReceivedRequest, q: Mapping[str, str]
    ) -> bool:
        self._send(c, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        self._send(c, b"close-delimited body")
        return False


def closedPort() -> int:
    """
    @return: a port on 127.0.0.1 where nothing listens (bound, then closed).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------
# Configuration text


def _tomlValue(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_tomlValue(v) for v in value) + "]"
    raise TypeError(value)


def jsonLogRecords(path: str) -> list[Any]:
    """
    The records of a JSON access log written so far: only the complete
    lines (the last one may still be being written when lbtwist is
    running).

    @param path: The log file.
    @return: Its complete lines, parsed; none if it does not exist yet.
    """
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return []
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def configText(
    frontends: Sequence[Mapping[str, object]], pools: Sequence[Mapping[str, object]]
) -> str:
    """
    Serialize frontends and pools as lbtwist TOML. A pool mapping may hold
    C{"health"} (a mapping) and C{"backends"} (URLs or mappings).
    """
    out = []
    for frontend in frontends:
        out.append("[[frontend]]")
        out.extend(f"{k} = {_tomlValue(v)}" for k, v in frontend.items())
        out.append("")
    for pool in pools:
        out.append("[[pool]]")
        out.extend(
            f"{k} = {_tomlValue(v)}"
            for k, v in pool.items()
            if k not in ("health", "backends")
        )
        out.append("")
        health = pool.get("health")
        if isinstance(health, Mapping) and health:
            out.append("[pool.health]")
            out.extend(f"{k} = {_tomlValue(v)}" for k, v in health.items())
            out.append("")
        backends = pool.get("backends", ())
        assert isinstance(backends, (list, tuple))
        for backend in backends:
            out.append("[[pool.backend]]")
            table = {"url": backend} if isinstance(backend, str) else backend
            out.extend(f"{k} = {_tomlValue(v)}" for k, v in table.items())
            out.append("")
    return "\n".join(out)


def simpleConfig(
    backends: Sequence[str | int | ScriptedBackend],
    frontend: Mapping[str, object] | None = None,
    pool: Mapping[str, object] | None = None,
    health: Mapping[str, object] | None = None,
) -> str:
    """
    One frontend C{web} on an OS-chosen loopback port in front of one pool
    C{app} of the given backends (URLs, ports or L{ScriptedBackend}s); health
    checks off unless C{health} says otherwise.
    """
    urls = []
    for backend in backends:
        if isinstance(backend, ScriptedBackend):
            urls.append(backend.url)
        elif isinstance(backend, int):
            urls.append(f"http://127.0.0.1:{backend}")
        else:
            urls.append(backend)
    frontendTable: dict[str, object] = {
        "name": "web",
        "listen": "tcp:0:interface=127.0.0.1",
        "pool": "app",
    }
    frontendTable.update(frontend or {})
    poolTable: dict[str, object] = {
        "name": "app",
        "connect_timeout": 1.0,
        "response_timeout": 10.0,
    }
    poolTable.update(pool or {})
    poolTable["health"] = dict(health) if health is not None else {"check": "none"}
    poolTable["backends"] = urls
    return configText([frontendTable], [poolTable])


# --------------------------------------------------------------------------
# The lbtwist process


_running: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _killLeftovers() -> None:
    for process in list(_running):
        if process.poll() is None:
            process.kill()


def _dieWithParent() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(
            1, signal.SIGKILL
        )  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _register(owner: object, cleanup: Callable[[], None]) -> None:
    if isinstance(owner, type) and issubclass(owner, unittest.TestCase):
        owner.addClassCleanup(cleanup)
    else:
        owner.addCleanup(cleanup)  # type: ignore[attr-defined]


class Lbtwist:
    """
    A running C{twistd -n lbtwist --config FILE} with its log lines.

    @ivar port: the port of the first frontend that said it listens.
    @ivar ports: frontend name -> port.
    @ivar lines: every line lbtwist wrote to stdout or stderr so far.
    """

    def __init__(
        self,
        owner: object,
        config: str,
        timeout: float = 20.0,
        files: Mapping[str, str] | None = None,
    ) -> None:
        """
        Start lbtwist and wait until every frontend listens; stopping is
        registered as a cleanup of C{owner} (a test case, or a test case
        class from C{setUpClass}). C{files} maps paths relative to the
        configuration file's directory to contents written there first.
        """
        self.directory = tempfile.mkdtemp(prefix="lbtwist-e2e-")
        _register(owner, lambda: shutil.rmtree(self.directory, ignore_errors=True))
        self.configPath = os.path.join(self.directory, "lbtwist.toml")
        with open(self.configPath, "w") as f:
            f.write(config)
        for name, content in (files or {}).items():
            path = os.path.join(self.directory, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(content)
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        env = dict(os.environ)
        env["PYTHONPATH"] = PROJECT_ROOT + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
        )
        env["PYTHONUNBUFFERED"] = "1"
        self.lines: list[str] = []
        self._condition = threading.Condition()
        self.process = subprocess.Popen(
            [
                twistd,
                "-n",
                "--pidfile=",
                "--logfile=-",
                "lbtwist",
                "--config",
                self.configPath,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
            env=env,
            preexec_fn=_dieWithParent,
        )
        _running.add(self.process)
        _register(owner, self.stop)
        self._reader = threading.Thread(target=self._readLines, daemon=True)
        self._reader.start()
        expected = max(1, config.count("[[frontend]]")) + config.count("[admin]")
        self.ports: dict[str, int] = {}
        deadline = time.monotonic() + timeout
        start = 0
        while len(self.ports) < expected:
            match = self.waitForLine(
                _LISTENING, deadline - time.monotonic(), since=start, allowMissing=True
            )
            if match is None:
                self.stop()
                raise AssertionError(
                    "lbtwist did not start listening:\n" + self.output()
                )
            index, found = match
            self.ports.setdefault(found.group(1), int(found.group(3)))
            start = index + 1
        self.port = next(iter(self.ports.values()))

    def _readLines(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            with self._condition:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._condition.notify_all()
        with self._condition:
            self._condition.notify_all()

    def output(self) -> str:
        """
        @return: the log so far, as one string.
        """
        with self._condition:
            return "\n".join(self.lines)

    def mark(self) -> int:
        """
        @return: the number of log lines so far, for C{waitForLine(since=)}.
        """
        with self._condition:
            return len(self.lines)

    def waitForLine(
        self,
        pattern: str | re.Pattern[str],
        timeout: float = 5.0,
        since: int = 0,
        allowMissing: bool = False,
    ) -> tuple[int, re.Match[str]] | None:
        """
        Wait until a log line (from index C{since} on) matches C{pattern}.

        @return: the line's index and the match; L{None} on timeout if
            C{allowMissing}, else L{AssertionError}.
        """
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        index = since
        with self._condition:
            while True:
                while index < len(self.lines):
                    found = regex.search(self.lines[index])
                    if found:
                        return index, found
                    index += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (
                    self.process.poll() is not None and index >= len(self.lines)
                ):
                    if remaining > 0:
                        # The process exited; give the reader thread a moment.
                        self._condition.wait(0.2)
                        if index < len(self.lines):
                            continue
                    if allowMissing:
                        return None
                    raise AssertionError(
                        f"no log line matching {regex.pattern!r} within {timeout}s:\n"
                        + "\n".join(self.lines[-60:])
                    )
                self._condition.wait(min(remaining, 0.2))

    def rss(self) -> int:
        """
        @return: lbtwist's resident set size in KiB.
        """
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def stop(self) -> None:
        """
        SIGTERM, up to 10 s to exit, then SIGKILL.
        """
        process = self.process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        _running.discard(process)
        self._reader.join(5)
        if process.stdout is not None and not self._reader.is_alive():
            try:
                process.stdout.close()
            except OSError:
                pass


def webConfig(backends: Sequence[ScriptedBackend], weight: int = 1) -> str:
    """
    Configuration text for one HTTP frontend C{web} on an OS-chosen loopback
    port in front of a pool C{app} of C{backends} (named by their labels),
    without health checks; callers append further sections.

    @param backends: The pool's backends.
    @param weight: Every backend's weight.
    """
    text = (
        '\n[[frontend]]\nname = "web"\nlisten = "tcp:0:interface=127.0.0.1"\n'
        'pool = "app"\n\n[[pool]]\nname = "app"\n[pool.health]\ncheck = "none"\n'
    )
    for backend in backends:
        text += (
            f'[[pool.backend]]\nurl = "{backend.url}"\nname = "{backend.label}"\n'
            f"weight = {weight}\n"
        )
    return text
