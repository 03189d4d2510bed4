# -*- test-case-name: tests.test_proxyheader -*-
"""
Tests for L{lbtwist.proxyheader}: the headers written are read back by
Twisted's own PROXY protocol support (through its public
L{proxyEndpoint}), and the parser and the wrapping factory are tested on
whole, split, and malformed headers.
"""

from __future__ import annotations

import ipaddress
import struct

from zope.interface import implementer

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import (
    EventLoggingObserver,
    MemoryReactorClock,
    StringTransport,
)
from twisted.logger import globalLogPublisher
from twisted.protocols.haproxy import proxyEndpoint
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from lbtwist.proxyheader import (
    InvalidProxyHeader,
    ProxyHeaderProtocolWrapper,
    ProxyHeaderWrappingFactory,
    ProxyInfo,
    parseProxyHeader,
    proxyHeader,
    proxyHeaderV1,
    proxyHeaderV2,
)

CLIENT4 = IPv4Address("TCP", "192.0.2.7", 51000)
FRONTEND4 = IPv4Address("TCP", "198.51.100.1", 5433)
CLIENT6 = IPv6Address("TCP", "2001:db8::7", 51000)
FRONTEND6 = IPv6Address("TCP", "2001:db8::1", 5433)


# The real addresses of a connection that carries a PROXY header.
BALANCER = IPv4Address("TCP", "10.0.0.2", 40000)
LISTENER = IPv4Address("TCP", "10.0.0.1", 443)

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


@implementer(IStreamServerEndpoint)
class _Endpoint:
    """
    A listening endpoint that keeps the factory it is given.

    @ivar factory: The factory passed to L{listen}.
    """

    factory: IProtocolFactory | None = None

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        """
        Keep C{factory}.

        @return: A L{Deferred} that never fires: nobody waits for it.
        """
        self.factory = factory
        return Deferred()


def twistedReads(header: bytes) -> tuple[IAddress, IAddress]:
    """
    Read a header with Twisted's own PROXY support, through its public
    L{proxyEndpoint}, on a connection from L{BALANCER} to L{LISTENER}.

    @param header: A whole PROXY header.
    @return: What Twisted's wrapper then says the peer and host are.
    """
    endpoint = _Endpoint()
    proxyEndpoint(endpoint).listen(Factory.forProtocol(Protocol))
    assert endpoint.factory is not None
    protocol = endpoint.factory.buildProtocol(BALANCER)
    assert protocol is not None
    transport = StringTransport(hostAddress=LISTENER, peerAddress=BALANCER)
    protocol.makeConnection(transport)
    protocol.dataReceived(header)
    assert not transport.disconnecting, header
    peer: IAddress = protocol.getPeer()  # type: ignore[attr-defined]
    host: IAddress = protocol.getHost()  # type: ignore[attr-defined]
    return peer, host


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
        source, destination = twistedReads(header)
        self.assertIsInstance(source, IPv4Address)
        self.assertEqual(hostAndPort(source), ("192.0.2.7", 51000))
        self.assertEqual(hostAndPort(destination), ("198.51.100.1", 5433))

    def test_ipv6(self) -> None:
        """
        TCP over IPv6 gives a C{TCP6} line.
        """
        header = proxyHeaderV1(CLIENT6, FRONTEND6)
        self.assertTrue(header.startswith(b"PROXY TCP6 "))
        source, destination = twistedReads(header)
        self.assertIsInstance(source, IPv6Address)
        self.assertEqual(hostAndPort(source), ("2001:db8::7", 51000))
        self.assertEqual(hostAndPort(destination), ("2001:db8::1", 5433))

    def test_mixedFamilies(self) -> None:
        """
        An IPv4 client on an IPv6 frontend is written as IPv4-mapped IPv6.
        """
        header = proxyHeaderV1(CLIENT4, FRONTEND6)
        source, destination = twistedReads(header)
        self.assertEqual(hostAndPort(source), ("::ffff:c000:207", 51000))
        self.assertEqual(hostAndPort(destination), ("2001:db8::1", 5433))

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
        source, destination = twistedReads(header)
        self.assertIsInstance(source, IPv4Address)
        assert isinstance(source, IPv4Address)
        self.assertEqual(source.type, "TCP")
        self.assertEqual(hostAndPort(source), ("192.0.2.7", 51000))
        self.assertEqual(hostAndPort(destination), ("198.51.100.1", 5433))

    def test_ipv6(self) -> None:
        """
        TCP over IPv6 gives a C{PROXY} command with 16-byte addresses.
        """
        header = proxyHeaderV2(CLIENT6, FRONTEND6)
        self.assertEqual(len(header), 16 + 36)
        source, destination = twistedReads(header)
        self.assertIsInstance(source, IPv6Address)
        self.assertEqual(hostAndPort(source), ("2001:db8::7", 51000))
        self.assertEqual(hostAndPort(destination), ("2001:db8::1", 5433))

    def test_unknown(self) -> None:
        """
        Addresses that are not TCP over IP give a C{LOCAL} command without
        addresses.
        """
        header = proxyHeaderV2(UNIXAddress(b"/tmp/s"), FRONTEND4)
        self.assertEqual(header[12:], b"\x20\x00\x00\x00")
        # Without an address, the connection's own addresses are used.
        self.assertEqual(twistedReads(header), (BALANCER, LISTENER))


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

    def test_invalidV1(self) -> None:
        """
        A v1 line is refused unless it has exactly the announced family's
        addresses and decimal ports, separated by single spaces.
        """
        for line in (
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3",
            b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2",
            b"PROXY TCP4 1.2.3 5.6.7.8 1 2",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 -2",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \xd9\xa1",
            b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2",
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2",
            b"PROXY TCP6 fe80::1%eth0 ::1 1 2",
            b"PROXY TCP6 \xff::1 ::1 1 2",
            b"PROXY TCP4",
            b"PROXY ",
            b"PROXY UNKNOWNX",
            b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2",
            b"proxy TCP4 1.2.3.4 5.6.7.8 1 2",
        ):
            self.assertRaises(InvalidProxyHeader, parseProxyHeader, line + b"\r\n")

    def test_v1BareLineFeed(self) -> None:
        """
        A LF without its CR is refused at once, without waiting for the
        longest line.
        """
        self.assertRaises(
            InvalidProxyHeader, parseProxyHeader, b"PROXY TCP4 1.2.3.4\n"
        )

    def test_v1LongestLine(self) -> None:
        """
        A line of 107 bytes (its CRLF included) is read; without a CRLF in
        its first 107 bytes, a line is refused.
        """
        line = b"PROXY UNKNOWN " + b"f" * (107 - 16) + b"\r\n"
        self.assertEqual(len(line), 107)
        parsed = parseProxyHeader(line + b"x")
        assert parsed is not None
        self.assertEqual(parsed[0], ProxyInfo(line[:-2], None, None))
        self.assertEqual(parsed[1], b"x")
        self.assertIsNone(parseProxyHeader(line[:-1]))
        self.assertRaises(
            InvalidProxyHeader, parseProxyHeader, line[:-2] + b"f\r\n"
        )
        self.assertRaises(InvalidProxyHeader, parseProxyHeader, line[:-2] + b"ff")

    def test_v1IPv4MappedIPv6(self) -> None:
        """
        An IPv4-mapped address is a valid C{TCP6} address, in its short
        form.
        """
        parsed = parseProxyHeader(b"PROXY TCP6 ::ffff:192.0.2.7 ::1 0 65535\r\n")
        assert parsed is not None
        self.assertEqual(parsed[0].source, IPv6Address("TCP", "::ffff:c000:207", 0))
        self.assertEqual(parsed[0].destination, IPv6Address("TCP", "::1", 65535))

    def test_invalidV2(self) -> None:
        """
        A v2 header is refused for another version, an unknown command, an
        unknown family or transport, or an address block too short for its
        family.
        """
        addresses4 = bytes(12)
        for fixed, block in (
            (b"\x11\x11\x00\x0c", addresses4),  # Version 1.
            (b"\x31\x11\x00\x0c", addresses4),  # Version 3.
            (b"\x22\x11\x00\x0c", addresses4),  # Command 2.
            (b"\x21\x13\x00\x0c", addresses4),  # Transport 3.
            (b"\x21\x41\x00\x0c", addresses4),  # Family 4.
            (b"\x21\x01\x00\x0c", addresses4),  # No family, stream.
            (b"\x21\x11\x00\x0b", addresses4[:11]),  # Short IPv4.
            (b"\x21\x21\x00\x0c", addresses4),  # Short IPv6.
            (b"\x21\x31\x00\x24", bytes(36)),  # Short UNIX.
        ):
            self.assertRaises(
                InvalidProxyHeader, parseProxyHeader, V2_SIGNATURE + fixed + block
            )

    def test_invalidV2Early(self) -> None:
        """
        A wrong signature, or a wrong version, is refused before the rest of
        the header arrives.
        """
        self.assertRaises(InvalidProxyHeader, parseProxyHeader, b"\r\n\r\n\x00\r\nX")
        self.assertRaises(
            InvalidProxyHeader, parseProxyHeader, V2_SIGNATURE + b"\x11\x11\xff\xff"
        )

    def test_v2TLVsSkipped(self) -> None:
        """
        TLVs after the addresses are part of the header and skipped.
        """
        header = proxyHeaderV2(CLIENT4, FRONTEND4)
        tlvs = b"\x01\x00\x02h2" + b"\x04\x00\x03\x00\x00\x00"
        length = struct.unpack("!H", header[14:16])[0] + len(tlvs)
        header = header[:14] + struct.pack("!H", length) + header[16:] + tlvs
        parsed = parseProxyHeader(header + b"rest")
        self.assertEqual(parsed, (ProxyInfo(header, CLIENT4, FRONTEND4), b"rest"))

    def test_v2WithoutTCPAddress(self) -> None:
        """
        C{LOCAL} (even with addresses), and families other than TCP over
        IPv4 or IPv6, carry no address.
        """
        for fixed, block in (
            (b"\x20\x11\x00\x0c", bytes(12)),  # LOCAL, addresses ignored.
            (b"\x20\x00\x00\x00", b""),  # LOCAL, no family.
            (b"\x21\x00\x00\x00", b""),  # PROXY, no family.
            (b"\x21\x12\x00\x0c", bytes(12)),  # UDP over IPv4.
            (b"\x21\x22\x00\x24", bytes(36)),  # UDP over IPv6.
            (b"\x21\x31\x00\xd8", bytes(216)),  # UNIX stream.
            (b"\x21\x32\x00\xd8", bytes(216)),  # UNIX datagram.
        ):
            header = V2_SIGNATURE + fixed + block
            self.assertEqual(
                parseProxyHeader(header + b"x"),
                (ProxyInfo(header, None, None), b"x"),
                fixed,
            )

    def test_byteByByte(self) -> None:
        """
        A header and the bytes after it, arriving one byte at a time, are
        read as soon as the header is complete, exactly as when they arrive
        at once.
        """
        tlvHeader = proxyHeaderV2(CLIENT6, FRONTEND6)
        tlvHeader = (
            tlvHeader[:14]
            + struct.pack("!H", 36 + 5)
            + tlvHeader[16:]
            + b"\x04\x00\x02\x00\x00"
        )
        for header in (
            proxyHeaderV1(CLIENT4, FRONTEND4),
            proxyHeaderV1(CLIENT6, FRONTEND6),
            b"PROXY UNKNOWN\r\n",
            proxyHeaderV2(CLIENT4, FRONTEND4),
            tlvHeader,
            proxyHeaderV2(UNIXAddress(b"/tmp/s"), FRONTEND4),
        ):
            whole = parseProxyHeader(header + b"GET /")
            assert whole is not None
            received = b""
            for byte in header[:-1]:
                received += bytes([byte])
                self.assertIsNone(parseProxyHeader(received), received)
            received += header[-1:]
            self.assertEqual(parseProxyHeader(received), (whole[0], b""))
            self.assertEqual(parseProxyHeader(received + b"GET /"), whole)


class _Recorder(Protocol):
    """
    Records what happens to it, and what its transport says then.

    @ivar events: What happened, in order.
    @ivar data: All the bytes received.
    @ivar peerWhenMade: C{transport.getPeer()} in C{connectionMade}.
    @ivar hostWhenMade: C{transport.getHost()} in C{connectionMade}.
    """

    def __init__(self) -> None:
        self.events: list[str] = []
        self.data = b""
        self.peerWhenMade: IAddress | None = None
        self.hostWhenMade: IAddress | None = None

    def connectionMade(self) -> None:
        """
        Record it, with the addresses.
        """
        self.events.append("connectionMade")
        assert self.transport is not None
        self.peerWhenMade = self.transport.getPeer()
        self.hostWhenMade = self.transport.getHost()

    def dataReceived(self, data: bytes) -> None:
        """
        Record it.
        """
        self.events.append("dataReceived")
        self.data += data

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:
        """
        Record it.
        """
        self.events.append("connectionLost")


@implementer(IHalfCloseableProtocol)
class _HalfCloseableRecorder(_Recorder):
    """
    A L{_Recorder} that handles a half-closed connection.
    """

    def readConnectionLost(self) -> None:
        """
        Record it.
        """
        self.events.append("readConnectionLost")

    def writeConnectionLost(self) -> None:
        """
        Record it.
        """
        self.events.append("writeConnectionLost")


class ProxyHeaderWrappingFactoryTests(SynchronousTestCase):
    """
    Tests for L{ProxyHeaderWrappingFactory}.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.log = EventLoggingObserver()
        globalLogPublisher.addObserver(self.log)
        self.addCleanup(globalLogPublisher.removeObserver, self.log)

    def connect(
        self, recorder: type[_Recorder] = _Recorder
    ) -> tuple[ProxyHeaderProtocolWrapper, StringTransport, _Recorder]:
        """
        Connect a new wrapper, on a transport from L{BALANCER} to
        L{LISTENER}, with a header timeout of 5 seconds.

        @param recorder: The wrapped protocol's class.
        @return: The wrapper, its transport, and the wrapped protocol.
        """
        factory = ProxyHeaderWrappingFactory(
            Factory.forProtocol(recorder), self.clock, 5
        )
        wrapper = factory.buildProtocol(BALANCER)
        transport = StringTransport(hostAddress=LISTENER, peerAddress=BALANCER)
        wrapper.makeConnection(transport)
        wrapped = wrapper.wrappedProtocol
        assert isinstance(wrapped, _Recorder)
        return wrapper, transport, wrapped

    def test_headerInPiecesThenData(self) -> None:
        """
        The wrapped protocol is connected once the last piece of the header
        arrives, receives the bytes after it, then everything else; what it
        writes goes to the real transport.
        """
        wrapper, transport, wrapped = self.connect()
        header = proxyHeaderV1(CLIENT4, FRONTEND4)
        wrapper.dataReceived(header[:5])
        wrapper.dataReceived(header[5:30])
        wrapper.dataReceived(header[30:-1])
        self.assertEqual(wrapped.events, [])
        wrapper.dataReceived(header[-1:] + b"GET / HTTP/1.1\r\n")
        self.assertEqual(wrapped.events, ["connectionMade", "dataReceived"])
        self.assertEqual(wrapped.data, b"GET / HTTP/1.1\r\n")
        wrapper.dataReceived(b"Host: x\r\n")
        self.assertEqual(wrapped.data, b"GET / HTTP/1.1\r\nHost: x\r\n")
        assert wrapped.transport is not None
        wrapped.transport.write(b"HTTP/1.1 200 OK\r\n")
        self.assertEqual(transport.value(), b"HTTP/1.1 200 OK\r\n")
        self.assertFalse(transport.disconnecting)

    def test_headerAlone(self) -> None:
        """
        A header with nothing after it connects the wrapped protocol without
        giving it any data.
        """
        wrapper, transport, wrapped = self.connect()
        wrapper.dataReceived(proxyHeaderV1(CLIENT4, FRONTEND4))
        self.assertEqual(wrapped.events, ["connectionMade"])

    def test_v2(self) -> None:
        """
        A v2 header, at once or one byte at a time, is read the same way.
        """
        header = proxyHeaderV2(CLIENT6, FRONTEND6)
        for pieces in ([header + b"hello"], [bytes([b]) for b in header + b"hello"]):
            wrapper, transport, wrapped = self.connect()
            for piece in pieces:
                wrapper.dataReceived(piece)
            self.assertEqual(wrapped.data, b"hello")
            self.assertEqual(wrapped.events[0], "connectionMade")
            self.assertEqual(wrapper.getPeer(), CLIENT6)
            self.assertEqual(wrapper.getHost(), FRONTEND6)

    def test_connectionMadeOnlyAfterHeader(self) -> None:
        """
        Nothing of the wrapped protocol runs before the header is complete;
        when its C{connectionMade} runs, its transport already has the
        header's addresses.
        """
        wrapper, transport, wrapped = self.connect()
        self.assertIsNone(wrapped.transport)
        header = proxyHeaderV2(CLIENT4, FRONTEND4)
        wrapper.dataReceived(header[:-1])
        self.assertEqual(wrapped.events, [])
        self.assertIsNone(wrapped.transport)
        wrapper.dataReceived(header[-1:])
        self.assertEqual(wrapped.events, ["connectionMade"])
        self.assertIs(wrapped.transport, wrapper)
        self.assertEqual(wrapped.peerWhenMade, CLIENT4)
        self.assertEqual(wrapped.hostWhenMade, FRONTEND4)

    def test_addressesFromHeader(self) -> None:
        """
        C{getPeer} and C{getHost} are the header's source and destination;
        before the header, and for a header without addresses, they are the
        connection's own.
        """
        wrapper, transport, wrapped = self.connect()
        self.assertEqual((wrapper.getPeer(), wrapper.getHost()), (BALANCER, LISTENER))
        wrapper.dataReceived(proxyHeaderV1(CLIENT6, FRONTEND6))
        self.assertEqual((wrapper.getPeer(), wrapper.getHost()), (CLIENT6, FRONTEND6))
        for header in (
            b"PROXY UNKNOWN\r\n",
            proxyHeaderV2(UNIXAddress(b"/s"), CLIENT4),
        ):
            wrapper, transport, wrapped = self.connect()
            wrapper.dataReceived(header)
            self.assertEqual(wrapped.events, ["connectionMade"])
            self.assertEqual(
                (wrapper.getPeer(), wrapper.getHost()), (BALANCER, LISTENER)
            )

    def test_invalidHeaderCloses(self) -> None:
        """
        An invalid header closes the connection, is logged once with the
        real peer, and the wrapped protocol never runs, even if more bytes
        arrive.
        """
        wrapper, transport, wrapped = self.connect()
        wrapper.dataReceived(b"GET / HTTP/1.1\r\n")
        self.assertTrue(transport.disconnecting)
        wrapper.dataReceived(b"Host: x\r\n")
        wrapper.dataReceived(proxyHeaderV1(CLIENT4, FRONTEND4))
        self.assertEqual(wrapped.events, [])
        self.assertEqual(len(self.log), 1)
        self.assertEqual(self.log[0]["peer"], BALANCER)
        self.assertIn("invalid PROXY header", self.log[0]["log_format"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        wrapper.connectionLost(Failure(Exception("closed")))
        self.assertEqual(wrapped.events, [])

    def test_timeoutCloses(self) -> None:
        """
        Without a complete header within the timeout, the connection is
        closed and that is logged with the real peer.
        """
        wrapper, transport, wrapped = self.connect()
        wrapper.dataReceived(b"PROXY TCP4 ")
        self.clock.advance(4.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(wrapped.events, [])
        self.assertEqual(len(self.log), 1)
        self.assertEqual(self.log[0]["peer"], BALANCER)
        wrapper.dataReceived(b"1.2.3.4 5.6.7.8 1 2\r\n")
        self.assertEqual(wrapped.events, [])

    def test_noTimeoutAfterHeader(self) -> None:
        """
        Once the header is read, its deadline is cancelled.
        """
        wrapper, transport, wrapped = self.connect()
        wrapper.dataReceived(proxyHeaderV1(CLIENT4, FRONTEND4))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(60)
        self.assertFalse(transport.disconnecting)

    def test_lostBeforeHeader(self) -> None:
        """
        A connection lost before its header cancels the deadline and does
        not involve the wrapped protocol.
        """
        wrapper, transport, wrapped = self.connect()
        factory = wrapper.factory
        self.assertIn(wrapper, factory.protocols)
        wrapper.dataReceived(b"PROXY")
        wrapper.connectionLost(Failure(Exception("gone")))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(wrapped.events, [])
        self.assertNotIn(wrapper, factory.protocols)
        self.assertEqual(len(self.log), 0)

    def test_lostAfterHeader(self) -> None:
        """
        A connection lost after its header is lost for the wrapped protocol
        too.
        """
        wrapper, transport, wrapped = self.connect()
        wrapper.dataReceived(proxyHeaderV1(CLIENT4, FRONTEND4))
        wrapper.connectionLost(Failure(Exception("gone")))
        self.assertEqual(wrapped.events, ["connectionMade", "connectionLost"])

    def test_halfClose(self) -> None:
        """
        The wrapper handles half-closed connections, passing them to a
        wrapped protocol that handles them too.
        """
        wrapper, transport, wrapped = self.connect(_HalfCloseableRecorder)
        self.assertTrue(IHalfCloseableProtocol.providedBy(wrapper))
        wrapper.dataReceived(proxyHeaderV1(CLIENT4, FRONTEND4))
        wrapper.readConnectionLost()
        wrapper.writeConnectionLost()
        self.assertEqual(
            wrapped.events,
            ["connectionMade", "readConnectionLost", "writeConnectionLost"],
        )
        self.assertFalse(transport.disconnecting)

    def test_halfCloseNotHandled(self) -> None:
        """
        The end of the peer's data closes the connection if the wrapped
        protocol does not handle half-closed connections.
        """
        wrapper, transport, wrapped = self.connect()
        wrapper.dataReceived(proxyHeaderV1(CLIENT4, FRONTEND4))
        wrapper.writeConnectionLost()
        self.assertFalse(transport.disconnecting)
        wrapper.readConnectionLost()
        self.assertTrue(transport.disconnecting)
        self.assertEqual(wrapped.events, ["connectionMade"])

    def test_halfCloseBeforeHeader(self) -> None:
        """
        The end of the peer's data before the header is complete closes
        the connection.
        """
        wrapper, transport, wrapped = self.connect(_HalfCloseableRecorder)
        wrapper.dataReceived(b"PROXY TCP4")
        wrapper.readConnectionLost()
        self.assertTrue(transport.disconnecting)
        self.assertEqual(wrapped.events, [])
