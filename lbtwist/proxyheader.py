# -*- test-case-name: tests.test_proxyheader -*-
"""
The PROXY protocol (HAProxy's C{proxy-protocol.txt}), versions 1 and 2: the
header lbtwist writes to a backend (C{send_proxy}) and the one it reads from
a trusted balancer in front (C{accept_proxy}).

A header carries the original client's address as the source and the
address the client connected to as the destination.  Version 1 is one line
of text (C{PROXY TCP4 192.0.2.7 198.51.100.1 51000 5432\\r\\n}); version 2
is binary.  Addresses that are not TCP over IPv4 or IPv6 become
C{PROXY UNKNOWN} (v1) or a C{LOCAL} command with no address (v2), which tell
the receiver to use the connection's own addresses.

L{parseProxyHeader} reads either version at the start of a stream of bytes,
arriving in pieces of any size; L{ProxyHeaderWrappingFactory} puts it in
front of any protocol (typically TLS then HTTP), so that the wrapped
protocol starts only once the header is read and sees the header's
addresses as its transport's C{getPeer} and C{getHost}.  Only public
Twisted API is used: Twisted's own parsers are private.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import cast

from attrs import frozen
from zope.interface import directlyProvides, implementer, providedBy

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger, LogLevel
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure

__all__ = [
    "PROXY_VERSIONS",
    "InvalidProxyHeader",
    "ProxyHeaderProtocolWrapper",
    "ProxyHeaderWrappingFactory",
    "ProxyInfo",
    "parseProxyHeader",
    "proxyHeader",
    "proxyHeaderV1",
    "proxyHeaderV2",
]

_log = Logger()

PROXY_VERSIONS = ("v1", "v2")
"""The header versions L{proxyHeader} writes."""

_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_FIXED_LENGTH = 16  # Signature, version and command, family, length.
_V2_PROXY = 0x21  # Version 2, PROXY command.
_V2_LOCAL = 0x20  # Version 2, LOCAL command.
_V2_TCP4 = 0x11  # AF_INET, SOCK_STREAM.
_V2_TCP6 = 0x21  # AF_INET6, SOCK_STREAM.
_V2_UNSPEC = 0x00
# Every family and transport a v2 header may announce, with the length of
# its address block; any other value is refused.
_V2_ADDRESS_LENGTHS = {
    0x00: 0,  # AF_UNSPEC.
    0x11: 12,  # AF_INET, SOCK_STREAM.
    0x12: 12,  # AF_INET, SOCK_DGRAM.
    0x21: 36,  # AF_INET6, SOCK_STREAM.
    0x22: 36,  # AF_INET6, SOCK_DGRAM.
    0x31: 216,  # AF_UNIX, SOCK_STREAM.
    0x32: 216,  # AF_UNIX, SOCK_DGRAM.
}
_V1_MAX_LENGTH = 107  # The longest v1 line, CRLF included.
_V1_PREFIX = b"PROXY "
_V1_UNKNOWN = b"UNKNOWN"
_V1_FAMILIES = {b"TCP4": 4, b"TCP6": 6}


class InvalidProxyHeader(Exception):
    """
    The bytes at the start of a connection are not a valid PROXY header.
    """


@frozen
class ProxyInfo:
    """
    What a PROXY header says about a connection.

    @ivar header: The header as received: a v1 line without its CRLF, or a
        whole v2 header.
    @ivar source: The original client's address, or L{None} if the header
        carries none (C{UNKNOWN}, C{LOCAL}, or a v2 family other than TCP
        over IPv4 or IPv6): use the connection's own peer then.
    @ivar destination: The address the client connected to, or L{None}
        likewise.
    """

    header: bytes
    source: IAddress | None
    destination: IAddress | None


_IPAndPort = tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]


def _ip(address: IAddress) -> _IPAndPort | None:
    """
    @param address: An address from a transport's C{getPeer} or C{getHost}.
    @return: Its IP address and port if it is a TCP address over IPv4 or
        IPv6 (an IPv6 zone index is dropped), else L{None}.
    """
    if not isinstance(address, (IPv4Address, IPv6Address)) or address.type != "TCP":
        return None
    try:
        ip = ipaddress.ip_address(address.host.split("%", 1)[0])
    except ValueError:
        return None
    if not 0 <= address.port <= 0xFFFF:
        return None
    return ip, address.port


def _pair(
    source: IAddress, destination: IAddress
) -> tuple[int, _IPAndPort, _IPAndPort] | None:
    """
    The two addresses in one family, as a PROXY header needs them.

    @param source: The client's address.
    @param destination: The address the client connected to.
    @return: C{(4 or 6, source, destination)}, with an IPv4 address written
        as IPv4-mapped IPv6 when the other one is IPv6; or L{None} if
        either is not TCP over IP.
    """
    src, dst = _ip(source), _ip(destination)
    if src is None or dst is None:
        return None
    if src[0].version == dst[0].version:
        return src[0].version, src, dst

    def mapped(pair: _IPAndPort) -> _IPAndPort:
        ip, port = pair
        if ip.version == 4:
            return ipaddress.IPv6Address(f"::ffff:{ip}"), port
        return pair

    return 6, mapped(src), mapped(dst)


def proxyHeaderV1(source: IAddress, destination: IAddress) -> bytes:
    """
    A version 1 (text) PROXY header.

    @param source: The client's address (C{clientTransport.getPeer()}).
    @param destination: The address it connected to
        (C{clientTransport.getHost()}).
    @return: C{b"PROXY TCP4 <src> <dst> <sport> <dport>\\r\\n"}, C{TCP6} for
        IPv6, or C{b"PROXY UNKNOWN\\r\\n"} if either address is not TCP
        over IP.
    """
    pair = _pair(source, destination)
    if pair is None:
        return b"PROXY UNKNOWN\r\n"
    version, (srcIP, srcPort), (dstIP, dstPort) = pair
    return b"PROXY TCP%d %s %s %d %d\r\n" % (
        version,
        srcIP.compressed.encode("ascii"),
        dstIP.compressed.encode("ascii"),
        srcPort,
        dstPort,
    )


def proxyHeaderV2(source: IAddress, destination: IAddress) -> bytes:
    """
    A version 2 (binary) PROXY header.

    @param source: The client's address (C{clientTransport.getPeer()}).
    @param destination: The address it connected to
        (C{clientTransport.getHost()}).
    @return: A C{PROXY} command for TCP over IPv4 or IPv6, or a C{LOCAL}
        command with an unspecified family and no address if either address
        is not TCP over IP.
    """
    pair = _pair(source, destination)
    if pair is None:
        return _V2_SIGNATURE + struct.pack("!BBH", _V2_LOCAL, _V2_UNSPEC, 0)
    version, (srcIP, srcPort), (dstIP, dstPort) = pair
    addresses = srcIP.packed + dstIP.packed + struct.pack("!HH", srcPort, dstPort)
    family = _V2_TCP4 if version == 4 else _V2_TCP6
    return (
        _V2_SIGNATURE
        + struct.pack("!BBH", _V2_PROXY, family, len(addresses))
        + addresses
    )


def proxyHeader(version: str, source: IAddress, destination: IAddress) -> bytes:
    """
    A PROXY header of either version.

    @param version: C{"v1"} or C{"v2"} (a pool's C{send_proxy}).
    @param source: The client's address.
    @param destination: The address it connected to.
    @return: The header.
    @raise ValueError: If C{version} is not one of L{PROXY_VERSIONS}.
    """
    if version == "v1":
        return proxyHeaderV1(source, destination)
    if version == "v2":
        return proxyHeaderV2(source, destination)
    raise ValueError(f"unknown PROXY protocol version: {version!r}")


def _v1Host(text: bytes, version: int) -> str:
    """
    @param text: An address field of a v1 line.
    @param version: The IP version the line announced (C{TCP4} or C{TCP6}).
    @return: The address in its short form.
    @raise InvalidProxyHeader: If C{text} is not an address of that version
        (IPv4 without leading zeroes; IPv6 without a zone index).
    """
    try:
        host = text.decode("ascii")
        if version == 4:
            return ipaddress.IPv4Address(host).compressed
        if "%" in host:
            raise ValueError(host)
        return ipaddress.IPv6Address(host).compressed
    except ValueError:  # UnicodeDecodeError included.
        raise InvalidProxyHeader(
            f"invalid IPv{version} address: {text!r}"
        ) from None


def _v1Port(text: bytes) -> int:
    """
    @param text: A port field of a v1 line.
    @return: The port.
    @raise InvalidProxyHeader: If C{text} is not a decimal number from 0 to
        65535 written with ASCII digits only and without leading zeroes.
    """
    if (
        not text.isdigit()
        or len(text) > 5
        or (text.startswith(b"0") and text != b"0")
        or int(text) > 0xFFFF
    ):
        raise InvalidProxyHeader(f"invalid port: {text!r}")
    return int(text)


def _parseV1Line(line: bytes) -> ProxyInfo:
    """
    @param line: A v1 line, without its CRLF, starting with C{PROXY }.
    @return: Its information.
    @raise InvalidProxyHeader: If the line is not C{PROXY UNKNOWN}
        (followed by anything) or C{PROXY TCP4|TCP6 <src> <dst> <sport>
        <dport>} with single spaces and valid addresses and ports.
    """
    fields = line.split(b" ")
    if fields[1] == _V1_UNKNOWN:
        return ProxyInfo(line, None, None)
    version = _V1_FAMILIES.get(fields[1])
    if version is None or len(fields) != 6:
        raise InvalidProxyHeader(f"invalid v1 header: {line!r}")
    address = IPv4Address if version == 4 else IPv6Address
    return ProxyInfo(
        line,
        address("TCP", _v1Host(fields[2], version), _v1Port(fields[4])),
        address("TCP", _v1Host(fields[3], version), _v1Port(fields[5])),
    )


def _parseV1(data: bytes) -> tuple[ProxyInfo, bytes] | int:
    """
    @param data: The start of a connection, a prefix of C{PROXY }
        or longer.
    @return: See L{_parse}.
    @raise InvalidProxyHeader: See L{_parse}.
    """
    end = data.find(b"\r\n", 0, _V1_MAX_LENGTH)
    if end < 0:
        # No CRLF can end the line any more if it is already too long or
        # holds a bare LF.
        if len(data) >= _V1_MAX_LENGTH or b"\n" in data:
            raise InvalidProxyHeader("v1 header too long or without CRLF")
        return len(data) + 1
    return _parseV1Line(data[:end]), data[end + 2 :]


def _v2Addresses(family: int, block: bytes) -> tuple[IAddress, IAddress] | None:
    """
    @param family: The family and transport byte of a v2 C{PROXY} header.
    @param block: Its address block (at least as long as the family needs).
    @return: The source and destination for TCP over IPv4 or IPv6, else
        L{None}.
    """
    address: type[IPv4Address] | type[IPv6Address]
    if family == _V2_TCP4:
        size, address = 4, IPv4Address
    elif family == _V2_TCP6:
        size, address = 16, IPv6Address
    else:
        return None
    src, dst = block[:size], block[size : 2 * size]
    srcPort: int
    dstPort: int
    srcPort, dstPort = struct.unpack("!HH", block[2 * size : 2 * size + 4])
    return (
        address("TCP", ipaddress.ip_address(src).compressed, srcPort),
        address("TCP", ipaddress.ip_address(dst).compressed, dstPort),
    )


def _parseV2(data: bytes) -> tuple[ProxyInfo, bytes] | int:
    """
    @param data: The start of a connection, a prefix of the v2 signature or
        longer.
    @return: See L{_parse}.
    @raise InvalidProxyHeader: See L{_parse}.
    """
    if len(data) < len(_V2_SIGNATURE):
        return len(data) + 1
    if len(data) < _V2_FIXED_LENGTH:
        return _V2_FIXED_LENGTH
    command: int
    family: int
    length: int
    command, family, length = struct.unpack("!BBH", data[12:_V2_FIXED_LENGTH])
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise InvalidProxyHeader(f"invalid v2 version and command: {command:#x}")
    if family not in _V2_ADDRESS_LENGTHS:
        raise InvalidProxyHeader(f"invalid v2 family and transport: {family:#x}")
    if command == _V2_PROXY and length < _V2_ADDRESS_LENGTHS[family]:
        raise InvalidProxyHeader(f"v2 address block too short: {length}")
    end = _V2_FIXED_LENGTH + length
    if len(data) < end:
        return end
    header = data[:end]
    # A LOCAL command's address block, and all TLVs, are ignored.
    addresses = None
    if command == _V2_PROXY:
        addresses = _v2Addresses(family, header[_V2_FIXED_LENGTH:])
    if addresses is None:
        return ProxyInfo(header, None, None), data[end:]
    return ProxyInfo(header, *addresses), data[end:]


def _parse(data: bytes) -> tuple[ProxyInfo, bytes] | int:
    """
    Parse a PROXY header, and say how much more to wait for if it is not
    complete.

    @param data: Everything received on the connection so far.
    @return: The header's information and the bytes after it; or, if more
        bytes are needed, how many bytes in all (more than C{len(data)}) are
        worth another try.
    @raise InvalidProxyHeader: If C{data} cannot be the start of a valid
        header.
    """
    if data[: len(_V2_SIGNATURE)] == _V2_SIGNATURE[: len(data)]:
        return _parseV2(data)
    if data[: len(_V1_PREFIX)] == _V1_PREFIX[: len(data)]:
        return _parseV1(data)
    raise InvalidProxyHeader("not a PROXY header")


def parseProxyHeader(data: bytes) -> tuple[ProxyInfo, bytes] | None:
    """
    Parse a PROXY header (v1 or v2) at the start of a connection.

    @param data: Everything received on the connection so far.
    @return: The header's information (its C{source} and C{destination} are
        L{None} for C{UNKNOWN} and C{LOCAL} headers, and for v2 families
        other than TCP over IPv4 or IPv6) and the bytes after it; or L{None}
        if more bytes are needed.
    @raise InvalidProxyHeader: If the bytes cannot be the start of a valid
        header.
    """
    parsed = _parse(data)
    if isinstance(parsed, int):
        return None
    return parsed


@implementer(IHalfCloseableProtocol, ITransport)
class ProxyHeaderProtocolWrapper(ProtocolWrapper):
    """
    Reads a PROXY header, then connects the wrapped protocol and steps
    aside.

    Until the header is complete, the wrapped protocol is not connected and
    sees nothing; the connection is closed if the header is invalid or not
    complete within the factory's timeout.  Then the wrapped protocol's
    C{makeConnection} is called with this wrapper as its transport, it
    receives the bytes after the header, and everything else passes through.

    @ivar info: The header once it is read, else L{None}.
    """

    factory: ProxyHeaderWrappingFactory

    def __init__(
        self, factory: ProxyHeaderWrappingFactory, wrappedProtocol: IProtocol
    ) -> None:
        """
        @param factory: The factory that built this wrapper.
        @param wrappedProtocol: The protocol to connect after the header.
        """
        super().__init__(factory, wrappedProtocol)
        self.info: ProxyInfo | None = None
        # The header's bytes so far, until it is read or refused.
        self._received: list[bytes] | None = []
        self._size = 0
        # How many bytes in all are worth another try at parsing.
        self._wanted = 1
        self._timer: IDelayedCall | None = None

    def makeConnection(self, transport: ITransport) -> None:
        """
        Start reading the header, with a deadline; the wrapped protocol is
        connected later, by L{dataReceived}.

        @param transport: The real transport.
        """
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        self._timer = self.factory.clock.callLater(
            self.factory.timeout, self._timedOut
        )

    def dataReceived(self, data: bytes) -> None:
        """
        Add bytes to the header, or pass them on once it has been read.

        @param data: Bytes from the peer.
        """
        if self.info is not None:
            self.wrappedProtocol.dataReceived(data)
            return
        if self._received is None:
            return  # Refused: closing.
        self._received.append(data)
        self._size += len(data)
        if self._size < self._wanted:
            return
        received = b"".join(self._received)
        self._received = [received]
        try:
            parsed = _parse(received)
        except InvalidProxyHeader as e:
            self._refuse(
                LogLevel.warn,
                "closing connection from {peer}: invalid PROXY header: {why}",
                why=str(e),
            )
            return
        if isinstance(parsed, int):
            self._wanted = parsed
            return
        self.info, rest = parsed
        self._received = None
        self._cancelTimer()
        self.wrappedProtocol.makeConnection(self)
        if rest and self.connected:
            self.wrappedProtocol.dataReceived(rest)

    def getPeer(self) -> IAddress:
        """
        @return: The header's source address if it has one, else the real
            peer.
        """
        if self.info is not None and self.info.source is not None:
            return self.info.source
        assert self.transport is not None
        return self.transport.getPeer()

    def getHost(self) -> IAddress:
        """
        @return: The header's destination address if it has one, else the
            real local address.
        """
        if self.info is not None and self.info.destination is not None:
            return self.info.destination
        assert self.transport is not None
        return self.transport.getHost()

    def readConnectionLost(self) -> None:
        """
        The peer will send no more: tell the wrapped protocol if it can
        handle a half-closed connection, else close.
        """
        if self.info is not None and IHalfCloseableProtocol.providedBy(
            self.wrappedProtocol
        ):
            cast(IHalfCloseableProtocol, self.wrappedProtocol).readConnectionLost()
        else:
            self.loseConnection()

    def writeConnectionLost(self) -> None:
        """
        Our side will send no more: tell the wrapped protocol if it can
        handle a half-closed connection.
        """
        if self.info is not None and IHalfCloseableProtocol.providedBy(
            self.wrappedProtocol
        ):
            cast(IHalfCloseableProtocol, self.wrappedProtocol).writeConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Stop waiting for the header; tell the wrapped protocol if it was
        connected.

        @param reason: Why the connection was lost.
        """
        self.connected = 0
        self._received = None
        self._cancelTimer()
        self.factory.unregisterProtocol(self)
        if self.info is not None:
            self.wrappedProtocol.connectionLost(reason)

    def _timedOut(self) -> None:
        """
        The header did not arrive in time: close.
        """
        self._timer = None
        self._refuse(
            LogLevel.info,
            "closing connection from {peer}: no PROXY header within "
            "{timeout} seconds",
            timeout=self.factory.timeout,
        )

    def _refuse(self, level: LogLevel, format: str, **fields: object) -> None:
        """
        Log why, once, and close the connection without ever connecting the
        wrapped protocol.

        @param level: The log event's level.
        @param format: The log event's format; C{{peer}} is the real peer.
        @param fields: Its other fields.
        """
        self._received = None
        self._cancelTimer()
        assert self.transport is not None
        _log.emit(level, format, peer=self.transport.getPeer(), **fields)
        self.loseConnection()

    def _cancelTimer(self) -> None:
        """
        Cancel the header's deadline if it is pending.
        """
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()


class ProxyHeaderWrappingFactory(WrappingFactory[ProxyHeaderProtocolWrapper]):
    """
    Wraps a factory so that each connection starts with a PROXY header
    (v1 or v2) that must be read before the wrapped protocol is connected;
    see L{ProxyHeaderProtocolWrapper}.

    Put it outermost, around a TLS factory if any: the header is sent in
    clear before the TLS handshake.

    @ivar clock: Times the header's deadline.
    @ivar timeout: Seconds from the connection to the end of the header
        before the connection is closed.
    """

    protocol = ProxyHeaderProtocolWrapper

    def __init__(
        self, wrappedFactory: IProtocolFactory, clock: IReactorTime, timeout: float
    ) -> None:
        """
        @param wrappedFactory: Builds the protocol for each connection.
        @param clock: Times the header's deadline.
        @param timeout: Seconds allowed for the header.
        """
        super().__init__(wrappedFactory)
        self.clock = clock
        self.timeout = timeout
