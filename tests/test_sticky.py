# -*- test-case-name: tests.test_sticky -*-
"""
Tests for L{lbtwist.sticky}.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from lbtwist.sticky import StickyCookie, loadOrCreateSecret

SECRET = b"0123456789abcdef0123456789abcdef"


class StickyCookieTests(SynchronousTestCase):
    """
    Tests for L{StickyCookie}.
    """

    def test_roundTrip(self) -> None:
        """
        A value issued for a backend reads back as that backend, names with
        any characters included.
        """
        cookie = StickyCookie("lb", "app", SECRET)
        for name in ("app-1", "127.0.0.1:9001", "ünïcode/é"):
            with self.subTest(name=name):
                self.assertEqual(cookie.backendOf(cookie.value(name)), name)

    def test_setCookie(self) -> None:
        """
        The field is a site-wide session cookie, HttpOnly and SameSite=Lax,
        and Secure over TLS.
        """
        cookie = StickyCookie("lb", "app", SECRET)
        value = cookie.value("app-1")
        self.assertEqual(
            cookie.setCookie("app-1", secure=False),
            b"lb=" + value + b"; Path=/; HttpOnly; SameSite=Lax",
        )
        self.assertTrue(cookie.setCookie("app-1", secure=True).endswith(b"; Secure"))

    def test_forgedIgnored(self) -> None:
        """
        A changed name, a signature of another key or pool, and garbage all
        read as no backend.
        """
        cookie = StickyCookie("lb", "app", SECRET)
        value = cookie.value("app-1")
        version, name, mac = value.split(b".")
        other = StickyCookie("lb", "app", SECRET[::-1]).value("app-1")
        otherPool = StickyCookie("lb", "api", SECRET).value("app-1")
        forgedName = StickyCookie("lb", "app", SECRET).value("app-2").split(b".")[1]
        for bad in (
            version + b"." + forgedName + b"." + mac,
            other,
            otherPool,
            b"",
            b"app-1",
            b"1.." + mac,
            b"2." + name + b"." + mac,
            value + b".x",
            b"1.%%%." + mac,
        ):
            with self.subTest(bad=bad):
                self.assertIsNone(cookie.backendOf(bad))

    def test_readFromHeaders(self) -> None:
        """
        The cookie is found among others, in any C{Cookie} line, quoted or
        not; an invalid one is skipped for a later valid one.
        """
        cookie = StickyCookie("lb", "app", SECRET)
        value = cookie.value("app-2")
        headers = [
            (b"Host", b"x"),
            (b"Cookie", b"a=1; lb=garbage"),
            (b"cookie", b'b=2; lb="' + value + b'"'),
        ]
        self.assertEqual(cookie.read(headers), "app-2")
        self.assertIsNone(cookie.read([(b"Cookie", b"xlb=" + value)]))
        self.assertIsNone(cookie.read([]))


class SecretTests(SynchronousTestCase):
    """
    Tests for L{loadOrCreateSecret}.
    """

    def test_createdOnceThenKept(self) -> None:
        """
        The first call creates a private file; later calls read the same
        secret.
        """
        path = self.mktemp()
        first = loadOrCreateSecret(path)
        self.assertGreaterEqual(len(first), 32)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(loadOrCreateSecret(path), first)

    def test_tooShort(self) -> None:
        """
        A file holding too short a secret is refused.
        """
        path = self.mktemp()
        Path(path).write_bytes(b"short\n")
        self.assertRaises(ValueError, loadOrCreateSecret, path)
