# -*- test-case-name: tests.test_proxyheader -*-
"""
Tests for L{lbtwist.proxyheader}: the headers are parsed back with
Twisted's own PROXY protocol parsers.
"""

from __future__ import annotations

import ipaddress

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.trial.unittest import SynchronousTestCase

from lbtwist.proxyheader import (
    InvalidProxyHeader,
    parseProxyHeader,
    proxyHeader,
    proxyHeaderV1,
    proxyHeaderV2,
)

CLIENT4 = IPv4Address("TCP", "192.0.2.7", 51000)
FRONTEND4 = IPv4Address("TCP", "198.51.100.1", 5433)
CLIENT6 = IPv6Address("TCP", "2001:db8::7", 51000)
FRONTEND6 = IPv6Address("TCP", "2001:db8::1", 5433)


def hostAndPort(address: object) -> tuple[str, int]:
    """
    @param address: An L{IPv4Address} or L{IPv6Address}.
    @return: Its host (in short form) and port.
    """
    assert isinstance(address, (IPv4Address, IPv6Address))
    return ipaddress.ip_address(address.host).compressed, address.port


class ProxyHeaderV1Tests(SynchronousTestCase):
    """
    Tests for L{proxyHeaderV1}.
    """

    def test_ipv4(self) -> None:
        """
        TCP over IPv4 gives a C{TCP4} line with the client as the source and
        the frontend as the destination.
        """
        header = proxyHeaderV1(CLIENT4, FRONTEND4)
        self.assertEqual(header, b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 5433\r\n")
        info = V1Parser.parse(header[:-2])
        self.assertIsInstance(info.source, IPv4Address)
        self.assertEqual(hostAndPort(info.source), ("192.0.2.7", 51000))
        self.assertEqual(hostAndPort(info.destination), ("198.51.100.1", 5433))

    def test_ipv6(self) -> None:
        """
        TCP over IPv6 gives a C{TCP6} line.
        """
        header = proxyHeaderV1(CLIENT6, FRONTEND6)
        self.assertTrue(header.startswith(b"PROXY TCP6 "))
        info = V1Parser.parse(header[:-2])
        self.assertIsInstance(info.source, IPv6Address)
        self.assertEqual(hostAndPort(info.source), ("2001:db8::7", 51000))
        self.assertEqual(hostAndPort(info.destination), ("2001:db8::1", 5433))

    def test_mixedFamilies(self) -> None:
        """
        An IPv4 client on an IPv6 frontend is written as IPv4-mapped IPv6.
        """
        header = proxyHeaderV1(CLIENT4, FRONTEND6)
        info = V1Parser.parse(header[:-2])
        self.assertEqual(hostAndPort(info.source), ("::ffff:c000:207", 51000))
        self.assertEqual(hostAndPort(info.destination), ("2001:db8::1", 5433))

    def test_zoneIndexDropped(self) -> None:
        """
        An IPv6 zone index (C{%eth0}) is not part of the header.
        """
        header = proxyHeaderV1(IPv6Address("TCP", "fe80::1%eth0", 1), FRONTEND6)
        self.assertEqual(header, b"PROXY TCP6 fe80::1 2001:db8::1 1 5433\r\n")

    def test_unknown(self) -> None:
        """
        Addresses that are not TCP over IP give C{PROXY UNKNOWN}.
        """
        self.assertEqual(
            proxyHeaderV1(UNIXAddress(b"/tmp/s"), FRONTEND4), b"PROXY UNKNOWN\r\n"
        )
        self.assertEqual(
            proxyHeaderV1(IPv4Address("UDP", "192.0.2.7", 1), FRONTEND4),
            b"PROXY UNKNOWN\r\n",
        )


class ProxyHeaderV2Tests(SynchronousTestCase):
    """
    Tests for L{proxyHeaderV2}.
    """

    def test_ipv4(self) -> None:
        """
        TCP over IPv4 gives a C{PROXY} command with the addresses.
        """
        header = proxyHeaderV2(CLIENT4, FRONTEND4)
        self.assertEqual(len(header), 16 + 12)
        info = V2Parser.parse(header)
        self.assertIsInstance(info.source, IPv4Address)
        self.assertEqual(info.source.type, "TCP")
        self.assertEqual(hostAndPort(info.source), ("192.0.2.7", 51000))
        self.assertEqual(hostAndPort(info.destination), ("198.51.100.1", 5433))

    def test_ipv6(self) -> None:
        """
        TCP over IPv6 gives a C{PROXY} command with 16-byte addresses.
        """
        header = proxyHeaderV2(CLIENT6, FRONTEND6)
        self.assertEqual(len(header), 16 + 36)
        info = V2Parser.parse(header)
        self.assertIsInstance(info.source, IPv6Address)
        self.assertEqual(hostAndPort(info.source), ("2001:db8::7", 51000))
        self.assertEqual(hostAndPort(info.destination), ("2001:db8::1", 5433))

    def test_unknown(self) -> None:
        """
        Addresses that are not TCP over IP give a C{LOCAL} command without
        addresses.
        """
        header = proxyHeaderV2(UNIXAddress(b"/tmp/s"), FRONTEND4)
        self.assertEqual(header[12:], b"\x20\x00\x00\x00")
        info = V2Parser.parse(header)
        self.assertIsNone(info.source)
        self.assertIsNone(info.destination)


class ProxyHeaderTests(SynchronousTestCase):
    """
    Tests for L{proxyHeader}.
    """

    def test_versions(self) -> None:
        """
        C{"v1"} and C{"v2"} choose the version.
        """
        self.assertEqual(
            proxyHeader("v1", CLIENT4, FRONTEND4), proxyHeaderV1(CLIENT4, FRONTEND4)
        )
        self.assertEqual(
            proxyHeader("v2", CLIENT4, FRONTEND4), proxyHeaderV2(CLIENT4, FRONTEND4)
        )

    def test_unknownVersion(self) -> None:
        """
        Any other version is a L{ValueError}.
        """
        self.assertRaises(ValueError, proxyHeader, "none", CLIENT4, FRONTEND4)


class ParseProxyHeaderTests(SynchronousTestCase):
    """
    Tests for L{parseProxyHeader}.
    """

    def test_roundTrip(self) -> None:
        """
        Both versions, both families, are read back with the bytes after the
        header.
        """
        for make in (proxyHeaderV1, proxyHeaderV2):
            for client, frontend in ((CLIENT4, FRONTEND4), (CLIENT6, FRONTEND6)):
                parsed = parseProxyHeader(make(client, frontend) + b"rest")
                assert parsed is not None
                info, rest = parsed
                self.assertEqual(rest, b"rest")
                self.assertEqual(info.source, client)
                self.assertEqual(info.destination, frontend)

    def test_incomplete(self) -> None:
        """
        Every proper prefix of a header asks for more bytes.
        """
        for make in (proxyHeaderV1, proxyHeaderV2):
            header = make(CLIENT6, FRONTEND6)
            for end in range(len(header)):
                self.assertIsNone(parseProxyHeader(header[:end]), (make, end))

    def test_unknown(self) -> None:
        """
        C{PROXY UNKNOWN} (with or without addresses) and C{LOCAL} carry no
        address.
        """
        for header in (
            b"PROXY UNKNOWN\r\n",
            b"PROXY UNKNOWN ff::1 ff::2 1 2\r\n",
            proxyHeaderV2(UNIXAddress(b"/tmp/s"), FRONTEND4),
        ):
            parsed = parseProxyHeader(header + b"x")
            assert parsed is not None
            self.assertEqual((parsed[0].source, parsed[0].destination), (None, None))
            self.assertEqual(parsed[1], b"x")

    def test_invalid(self) -> None:
        """
        Bytes that cannot start a valid header are refused.
        """
        for data in (
            b"GET / HTTP/1.1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 a.b.c.d 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 ::1 ::2 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 x 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 70000\r\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY " + b"1" * 200,
            b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x00",
            b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x04abcd",
        ):
            self.assertRaises(InvalidProxyHeader, parseProxyHeader, data)
