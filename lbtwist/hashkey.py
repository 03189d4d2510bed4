# -*- test-case-name: tests.test_hashkey -*-
"""
The key a C{consistent-hash} pool places a request by, read from the
request as the pool's C{hash_key} says: C{client_ip}, C{path},
C{header:NAME}, C{cookie:NAME} or C{query:NAME}.

A request without the key (no such header, cookie or parameter) has key
L{None}, and the strategy places it as C{random-two} would.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence
from urllib.parse import unquote_to_bytes

__all__ = ["KeyedRequest", "KeyReader", "keyReader"]


class KeyedRequest(Protocol):
    """
    What a key is read from: lbtwist's request, or a simulated one.
    """

    @property
    def clientAddress(self) -> object:
        """The client's address; its C{host} attribute is the IP address."""

    @property
    def target(self) -> bytes:
        """The request target in origin form, C{b"/path?query"}."""

    @property
    def headers(self) -> Sequence[tuple[bytes, bytes]]:
        """The field lines, in order."""


KeyReader = Callable[[KeyedRequest], "bytes | None"]


def _clientIP(request: KeyedRequest) -> bytes | None:
    host = getattr(request.clientAddress, "host", None)
    return host.encode("ascii", "replace") if isinstance(host, str) else None


def _path(request: KeyedRequest) -> bytes | None:
    return request.target.partition(b"?")[0]


def _header(name: bytes) -> KeyReader:
    def read(request: KeyedRequest) -> bytes | None:
        values = [value for field, value in request.headers if field.lower() == name]
        return b", ".join(values) if values else None

    return read


def _cookie(name: bytes) -> KeyReader:
    def read(request: KeyedRequest) -> bytes | None:
        for field, value in request.headers:
            if field.lower() != b"cookie":
                continue
            for pair in value.split(b";"):
                key, equals, found = pair.strip().partition(b"=")
                if equals and key == name:
                    return found
        return None

    return read


def _query(name: bytes) -> KeyReader:
    def read(request: KeyedRequest) -> bytes | None:
        query = request.target.partition(b"?")[2]
        for parameter in query.split(b"&"):
            key, _, value = parameter.partition(b"=")
            if key and unquote_to_bytes(key.replace(b"+", b" ")) == name:
                return unquote_to_bytes(value.replace(b"+", b" "))
        return None

    return read


def keyReader(spec: str) -> KeyReader:
    """
    Make the function that reads a request's key.

    @param spec: A checked C{hash_key} (see L{lbtwist.config.PoolConfig}).
    @return: A function of a request giving its key, or L{None} when the
        request lacks it.
    @raise ValueError: On an unknown C{spec}.
    """
    if spec == "client_ip":
        return _clientIP
    if spec == "path":
        return _path
    kind, _, name = spec.partition(":")
    if kind == "header" and name:
        return _header(name.lower().encode("ascii"))
    if kind == "cookie" and name:
        return _cookie(name.encode("utf-8"))
    if kind == "query" and name:
        return _query(name.encode("utf-8"))
    raise ValueError(f"unknown hash_key {spec!r}")
