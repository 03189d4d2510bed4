# -*- test-case-name: tests.test_hashkey -*-
"""
Tests for L{lbtwist.hashkey}.
"""

from __future__ import annotations

from typing import Sequence

from attrs import frozen
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.trial.unittest import SynchronousTestCase

from lbtwist.hashkey import keyReader


@frozen
class FakeRequest:
    """
    Just what a key is read from.
    """

    target: bytes = b"/"
    headers: Sequence[tuple[bytes, bytes]] = ()
    clientAddress: object = IPv4Address("TCP", "10.1.2.3", 5555)


class KeyReaderTests(SynchronousTestCase):
    """
    Tests for L{keyReader}.
    """

    def test_clientIP(self) -> None:
        """
        C{client_ip} is the client's address without the port, IPv6 too.
        """
        read = keyReader("client_ip")
        self.assertEqual(read(FakeRequest()), b"10.1.2.3")
        self.assertEqual(
            read(FakeRequest(clientAddress=IPv6Address("TCP", "::1", 5))), b"::1"
        )
        self.assertIsNone(read(FakeRequest(clientAddress=None)))

    def test_path(self) -> None:
        """
        C{path} is the target without its query.
        """
        read = keyReader("path")
        self.assertEqual(read(FakeRequest(target=b"/a/b?x=1")), b"/a/b")
        self.assertEqual(read(FakeRequest(target=b"/a/b")), b"/a/b")

    def test_header(self) -> None:
        """
        C{header:NAME} matches the name in any case and joins repeated lines;
        a missing header gives L{None}.
        """
        read = keyReader("header:X-User")
        request = FakeRequest(headers=[(b"x-user", b"ann"), (b"X-USER", b"bob")])
        self.assertEqual(read(request), b"ann, bob")
        self.assertIsNone(read(FakeRequest(headers=[(b"Host", b"a")])))

    def test_cookie(self) -> None:
        """
        C{cookie:NAME} finds the cookie in any C{Cookie} line, exactly by
        name.
        """
        read = keyReader("cookie:sid")
        request = FakeRequest(
            headers=[(b"Cookie", b"a=1; xsid=2"), (b"cookie", b"b=3;sid=abc; c=4")]
        )
        self.assertEqual(read(request), b"abc")
        self.assertIsNone(read(FakeRequest(headers=[(b"Cookie", b"sidx=1; sid")])))

    def test_query(self) -> None:
        """
        C{query:NAME} finds the first parameter of that name, decoded.
        """
        read = keyReader("query:user")
        self.assertEqual(read(FakeRequest(target=b"/p?a=1&us%65r=J%C3%B6+e&user=x")), "Jö e".encode())
        self.assertEqual(read(FakeRequest(target=b"/p?user")), b"")
        self.assertIsNone(read(FakeRequest(target=b"/p?users=1")))
        self.assertIsNone(read(FakeRequest(target=b"/p")))

    def test_unknown(self) -> None:
        """
        An unknown spec is a programming error.
        """
        self.assertRaises(ValueError, keyReader, "host")
        self.assertRaises(ValueError, keyReader, "header:")
