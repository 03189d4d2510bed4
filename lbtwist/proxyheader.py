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

Parsing is Twisted's own (C{twisted.protocols.haproxy}); L{parseProxyHeader}
adds the framing: it finds where the header ends in a stream of bytes, and
accepts it arriving in pieces of any size.  Nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
import struct

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._info import ProxyInfo
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser

__all__ = [
    "PROXY_VERSIONS",
    "InvalidProxyHeader",
    "ProxyInfo",
    "parseProxyHeader",
    "proxyHeader",
    "proxyHeaderV1",
    "proxyHeaderV2",
]

PROXY_VERSIONS = ("v1", "v2")
"""The header versions L{proxyHeader} writes."""

_V2_SIGNATURE = V2Parser.PREFIX
_V2_PROXY = 0x21  # Version 2, PROXY command.
_V2_LOCAL = 0x20  # Version 2, LOCAL command.
_V2_TCP4 = 0x11  # AF_INET, SOCK_STREAM.
_V2_TCP6 = 0x21  # AF_INET6, SOCK_STREAM.
_V2_UNSPEC = 0x00
_V1_MAX_LENGTH = 107  # The longest v1 line, CRLF included.
_V1_PREFIX = b"PROXY "
_V1_UNKNOWN = b"PROXY UNKNOWN"

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


def _normalized(info: ProxyInfo) -> ProxyInfo:
    """
    Check the addresses Twisted's parsers return (its v1 parser takes any
    text for an address) and write them in their usual short form (its v2
    parser writes IPv6 addresses in full).

    @param info: A parsed header.
    @return: The same information with normalised addresses.
    @raise InvalidProxyHeader: If an address is not an IP address of the
        announced family, or a port is out of range.
    """
    addresses: list[IAddress | None] = []
    for address in (info.source, info.destination):
        if not isinstance(address, (IPv4Address, IPv6Address)):
            addresses.append(address)
            continue
        try:
            ip = ipaddress.ip_address(address.host)
        except ValueError:
            raise InvalidProxyHeader() from None
        wanted = 4 if isinstance(address, IPv4Address) else 6
        if ip.version != wanted or not 0 <= address.port <= 0xFFFF:
            raise InvalidProxyHeader()
        addresses.append(type(address)(address.type, ip.compressed, address.port))
    return ProxyInfo(info.header, addresses[0], addresses[1])


def parseProxyHeader(data: bytes) -> tuple[ProxyInfo, bytes] | None:
    """
    Parse a PROXY header (v1 or v2) at the start of a connection.

    @param data: Everything received on the connection so far.
    @return: The header's information (its C{source} and C{destination} are
        L{None} for C{UNKNOWN} and C{LOCAL} headers) and the bytes after
        it; or L{None} if more bytes are needed.
    @raise InvalidProxyHeader: If the bytes cannot be the start of a valid
        header.
    """
    if data[: len(_V2_SIGNATURE)] == _V2_SIGNATURE[: len(data)]:
        if len(data) < 16:
            return None
        size = 16 + struct.unpack("!H", data[14:16])[0]
        if len(data) < size:
            return None
        try:
            info = _normalized(V2Parser.parse(data[:size]))
        except (KeyError, ValueError, struct.error):
            raise InvalidProxyHeader() from None
        return info, data[size:]
    if data[: len(_V1_PREFIX)] != _V1_PREFIX[: len(data)]:
        raise InvalidProxyHeader()
    end = data.find(b"\r\n", 0, _V1_MAX_LENGTH)
    if end < 0:
        if len(data) >= _V1_MAX_LENGTH:
            raise InvalidProxyHeader()
        return None
    line = data[:end]
    if line == _V1_UNKNOWN:
        # Valid (the addresses may be omitted), but Twisted's parser wants them.
        return ProxyInfo(line, None, None), data[end + 2 :]
    try:
        info = _normalized(V1Parser.parse(line))
    except (ValueError, UnicodeDecodeError):
        raise InvalidProxyHeader() from None
    return info, data[end + 2 :]
