# -*- test-case-name: tests.test_clienthello -*-
"""
Reading the server name (SNI) of a TLS ClientHello without terminating TLS,
for routing TCP connections by name (TLS passthrough).

L{ClientHelloReader} is fed the bytes a client sends, in whatever pieces
they arrive, and answers once the first handshake message, a ClientHello,
is complete: a L{ClientHello} with the host name of its C{server_name}
extension (RFC 6066, section 3), or L{None} for the name if there is none.
The ClientHello may be split across several TLS records (RFC 8446, section
5.1) and the records across TCP segments.  It reads at most C{limit} bytes
(record headers included) before the ClientHello must be complete.

Anything else raises L{InvalidClientHello} (L{NotTLS} when the first byte
is not that of a handshake record), and nothing else: a record that is not
a handshake before the ClientHello is complete, a handshake message that is
not a ClientHello, a length that does not add up, a duplicated extension,
a C{server_name} extension that is not exactly one C{host_name}, or a host
name that is not made of letters, digits, C{-}, C{_} and dots.

The module is pure: no I/O, no reactor.
"""

from __future__ import annotations

import re

from attrs import frozen

__all__ = [
    "ClientHello",
    "ClientHelloReader",
    "InvalidClientHello",
    "MAX_CLIENT_HELLO",
    "NotTLS",
]

MAX_CLIENT_HELLO = 16384
"""How many bytes are read, at most, for a complete ClientHello."""

_HANDSHAKE_RECORD = 22
_CLIENT_HELLO = 1
_SERVER_NAME = 0
_HOST_NAME = 0
_MAX_FRAGMENT = 2**14
_HOST = re.compile(rb"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?")


class InvalidClientHello(Exception):
    """
    The bytes are not the start of a TLS connection with a well-formed
    ClientHello (or it is larger than allowed).

    @ivar reason: What is wrong, for logs, e.g. C{"truncated extensions"}.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotTLS(InvalidClientHello):
    """
    The first byte is not that of a TLS handshake record: the client does
    not speak TLS at all.
    """


@frozen
class ClientHello:
    """
    What routing needs from a ClientHello.

    @ivar serverName: The host name of its C{server_name} extension, lower
        case, without a trailing dot; or L{None} if it has none.
    """

    serverName: str | None


class _Cursor:
    """
    Reads the fields of a ClientHello body in order, raising
    L{InvalidClientHello} (naming the field) on a short read.
    """

    __slots__ = ("_data", "_offset")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    def done(self) -> bool:
        """
        @return: Whether every byte was read.
        """
        return self._offset == len(self._data)

    def take(self, size: int, what: str) -> bytes:
        """
        @return: The next C{size} bytes.
        @raise InvalidClientHello: If fewer are left.
        """
        end = self._offset + size
        if end > len(self._data):
            raise InvalidClientHello(f"truncated {what}")
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def number(self, size: int, what: str) -> int:
        """
        @return: The next C{size} bytes as a big-endian unsigned integer.
        """
        return int.from_bytes(self.take(size, what), "big")

    def vector(self, lengthSize: int, what: str) -> bytes:
        """
        @return: A variable-length vector: its length in C{lengthSize}
            bytes, then that many bytes.
        """
        return self.take(self.number(lengthSize, what), what)


def _serverName(data: bytes) -> str:
    """
    Parse the data of a ClientHello's C{server_name} extension, as strictly
    as OpenSSL does: a list holding exactly one C{host_name}.

    @return: The host name, lower case, without a trailing dot.
    """
    extension = _Cursor(data)
    names = _Cursor(extension.vector(2, "server_name list"))
    if not extension.done():
        raise InvalidClientHello("bytes after the server_name list")
    if names.number(1, "server_name type") != _HOST_NAME:
        raise InvalidClientHello("server_name is not a host_name")
    host = names.vector(2, "host_name")
    if not names.done():
        raise InvalidClientHello("more than one server_name")
    if not host or len(host) > 255 or not _HOST.fullmatch(host):
        raise InvalidClientHello("server_name is not a host name")
    return host.decode("ascii").lower().rstrip(".")


def parseClientHelloBody(body: bytes) -> ClientHello:
    """
    Parse the body of a ClientHello handshake message (RFC 8446, section
    4.1.2; RFC 5246, section 7.4.1.2).

    @param body: The message without its 4-byte handshake header.
    @return: What routing needs from it.
    @raise InvalidClientHello: If it is malformed.
    """
    hello = _Cursor(body)
    if hello.take(2, "legacy_version")[0] != 3:
        raise InvalidClientHello("legacy_version is not TLS")
    hello.take(32, "random")
    if len(hello.vector(1, "legacy_session_id")) > 32:
        raise InvalidClientHello("legacy_session_id longer than 32 bytes")
    suites = hello.vector(2, "cipher_suites")
    if not suites or len(suites) % 2:
        raise InvalidClientHello("bad cipher_suites length")
    if not hello.vector(1, "legacy_compression_methods"):
        raise InvalidClientHello("no legacy_compression_methods")
    if hello.done():
        return ClientHello(serverName=None)
    extensions = _Cursor(hello.vector(2, "extensions"))
    if not hello.done():
        raise InvalidClientHello("bytes after the extensions")
    seen: set[int] = set()
    serverName = None
    while not extensions.done():
        kind = extensions.number(2, "extension type")
        data = extensions.vector(2, "extension")
        if kind in seen:
            raise InvalidClientHello(f"extension {kind} twice")
        seen.add(kind)
        if kind == _SERVER_NAME:
            serverName = _serverName(data)
    return ClientHello(serverName=serverName)


class ClientHelloReader:
    """
    Reads a client's first bytes until its ClientHello is complete (see the
    module docstring).  Feeding it costs time proportional to the bytes
    fed, however they are split.
    """

    def __init__(self, limit: int = MAX_CLIENT_HELLO) -> None:
        """
        @param limit: How many bytes may be read, record headers included,
            before the ClientHello must be complete.
        """
        self._limit = limit
        self._pending = bytearray()
        self._records = 0
        self._handshake = bytearray()
        self._messageLength: int | None = None

    def feed(self, data: bytes) -> ClientHello | None:
        """
        Read more bytes from the client.  Once a L{ClientHello} was
        returned, it must not be fed again.

        @param data: The next bytes the client sent.
        @return: The ClientHello once it is complete, else L{None} (more
            bytes are needed).
        @raise InvalidClientHello: If the bytes cannot be the beginning of
            a TLS connection with a valid ClientHello within the limit.
        """
        if not self._records and not self._pending and data:
            if data[0] != _HANDSHAKE_RECORD:
                raise NotTLS("not TLS")
        self._pending += data
        while len(self._pending) >= 5:
            pending = self._pending
            if pending[0] != _HANDSHAKE_RECORD:
                raise InvalidClientHello(
                    f"record of type {pending[0]} before the ClientHello is complete"
                )
            if pending[1] != 3:
                raise InvalidClientHello("record version is not TLS")
            length = int.from_bytes(pending[3:5], "big")
            if not 0 < length <= _MAX_FRAGMENT:
                raise InvalidClientHello(f"bad record length {length}")
            if self._records + 5 + length > self._limit:
                raise InvalidClientHello(f"ClientHello longer than {self._limit} bytes")
            if len(pending) < 5 + length:
                return None
            self._handshake += pending[5 : 5 + length]
            del pending[: 5 + length]
            self._records += 5 + length
            hello = self._message()
            if hello is not None:
                return hello
        return None

    def _message(self) -> ClientHello | None:
        """
        @return: The ClientHello if the handshake bytes read so far hold
            all of it, else L{None}.
        """
        handshake = self._handshake
        if self._messageLength is None:
            if len(handshake) < 4:
                return None
            if handshake[0] != _CLIENT_HELLO:
                raise InvalidClientHello(
                    f"first handshake message has type {handshake[0]}, not ClientHello"
                )
            self._messageLength = int.from_bytes(handshake[1:4], "big")
            if 4 + self._messageLength + 5 > self._limit:
                raise InvalidClientHello(f"ClientHello longer than {self._limit} bytes")
        if len(handshake) < 4 + self._messageLength:
            return None
        return parseClientHelloBody(bytes(handshake[4 : 4 + self._messageLength]))
