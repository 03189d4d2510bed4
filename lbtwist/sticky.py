# -*- test-case-name: tests.test_sticky -*-
"""
Sticky sessions by cookie (C{sticky_cookie = "NAME"} in a C{[[pool]]}).

The first response to a client sets a cookie naming the backend that served
it, signed with HMAC-SHA256 so that a client cannot steer itself to a
backend of its choosing; later requests carrying a valid cookie go to that
backend while it is available.  A cookie that is forged, stale (naming a
backend that no longer exists) or malformed is ignored, never an error.

Nothing here touches the network: cookie values in, names out.
"""

from __future__ import annotations

import base64
import hmac
import os
from hashlib import sha256
from typing import Sequence

__all__ = ["StickyCookie", "loadOrCreateSecret", "SECRET_BYTES"]

SECRET_BYTES = 32
"""The length of a generated secret."""

_VERSION = b"1"
_MAC_BYTES = 16


def _encode(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _decode(data: bytes) -> bytes:
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))


class StickyCookie:
    """
    Issues and reads one pool's sticky cookie.

    @ivar name: The cookie's name.
    """

    def __init__(self, name: str, pool: str, secret: bytes) -> None:
        """
        @param name: The cookie's name (C{sticky_cookie}).
        @param pool: The pool's name: a cookie of one pool is not valid for
            another.
        @param secret: The signing key.
        """
        self.name = name
        self._encodedName = name.encode("ascii")
        self._key = hmac.new(secret, b"sticky " + pool.encode("utf-8"), sha256).digest()

    def _mac(self, payload: bytes) -> bytes:
        return _encode(hmac.new(self._key, payload, sha256).digest()[:_MAC_BYTES])

    def value(self, backend: str) -> bytes:
        """
        @param backend: The name of the backend to stick to.
        @return: The cookie's value: C{1.<name>.<signature>}, base64url.
        """
        payload = _VERSION + b"." + _encode(backend.encode("utf-8"))
        return payload + b"." + self._mac(payload)

    def setCookie(self, backend: str, secure: bool) -> bytes:
        """
        @param backend: The name of the backend to stick to.
        @param secure: Whether the client came over TLS (adds C{Secure}).
        @return: The C{Set-Cookie} field value: a session cookie for the
            whole site, C{HttpOnly} and C{SameSite=Lax}.
        """
        attributes = b"; Path=/; HttpOnly; SameSite=Lax"
        if secure:
            attributes += b"; Secure"
        return self._encodedName + b"=" + self.value(backend) + attributes

    def backendOf(self, value: bytes) -> str | None:
        """
        @param value: A cookie value a client sent.
        @return: The backend name it carries if its signature is valid,
            else L{None}.
        """
        parts = value.split(b".")
        if len(parts) != 3 or parts[0] != _VERSION:
            return None
        payload = parts[0] + b"." + parts[1]
        if not hmac.compare_digest(parts[2], self._mac(payload)):
            return None
        try:
            return _decode(parts[1]).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None

    def read(self, headers: Sequence[tuple[bytes, bytes]]) -> str | None:
        """
        @param headers: A request's field lines.
        @return: The backend named by the first validly signed cookie of
            this name, or L{None}.
        """
        for field, line in headers:
            if field.lower() != b"cookie":
                continue
            for pair in line.split(b";"):
                key, equals, value = pair.strip().partition(b"=")
                if equals and key == self._encodedName:
                    backend = self.backendOf(value.strip(b'"'))
                    if backend is not None:
                        return backend
        return None


def loadOrCreateSecret(path: str) -> bytes:
    """
    Read the secret kept in C{path}, creating it (random, mode 0600) if it
    does not exist, so that cookies stay valid across restarts.

    @param path: The secret's file, next to the state file.
    @return: The secret.
    @raise OSError: If the file cannot be read or created.
    @raise ValueError: If the file exists but holds no secret.
    """
    try:
        with open(path, "rb") as existing:
            secret = existing.read().strip()
    except FileNotFoundError:
        secret = _encode(os.urandom(SECRET_BYTES))
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            # Another process created it first: use that one.
            return loadOrCreateSecret(path)
        with os.fdopen(descriptor, "wb") as created:
            created.write(secret + b"\n")
        return secret
    if len(secret) < 16:
        raise ValueError(f"{path}: the secret must be at least 16 bytes")
    return secret
