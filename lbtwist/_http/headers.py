# -*- test-case-name: tests.test_http_headers -*-
"""
The header policy of one hop, both ways, in one place (proxy-rules.md,
"What goes upstream" and "What comes back"):

  - hop-by-hop fields, and every field a C{Connection} line names, are
    removed (a C{Connection} option can never remove C{Host} or the
    framing);
  - the body is re-framed once per hop: C{Content-Length} when known,
    otherwise chunked (the caller says which);
  - repeated fields keep their order and all their values;
  - C{X-Forwarded-For}, C{X-Forwarded-Proto}, C{X-Forwarded-Host}, C{Via}
    and optionally C{Forwarded} (RFC 7239) are added; client-sent
    forwarding fields are kept only from trusted proxies;
  - only a GET WebSocket handshake keeps C{Upgrade} (L{websocketUpgrade}).

Everything works on lists of C{(name, value)} byte pairs and produces the
request head as one list of byte strings, ready for C{writeSequence}.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Iterable, Sequence

from attrs import field, frozen

__all__ = [
    "ForwardingPolicy",
    "IDEMPOTENT_METHODS",
    "REQUEST_HOP_BY_HOP",
    "RESPONSE_HOP_BY_HOP",
    "VIA",
    "connectionTokens",
    "requestHead",
    "responseHeaders",
    "websocketUpgrade",
]

VIA = b"1.1 lbtwist"

IDEMPOTENT_METHODS = frozenset(
    {b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"}
)
"""Methods a request may be replayed with on another backend (RFC 9110 9.2.2)."""

REQUEST_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy",
        b"trailer",
        b"expect",
        b"content-length",
    }
)
"""Request fields never copied upstream (the framing is written anew)."""

RESPONSE_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
    }
)
"""Response fields never copied to the client (the channel frames the body)."""

_RESPONSE_HOP_BY_HOP_LENGTHS = frozenset(len(name) for name in RESPONSE_HOP_BY_HOP)

_PROTECTED = frozenset({b"host", b"content-length", b"transfer-encoding"})
_FORWARDING = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"}
)
_WEBSOCKET = b"websocket"
_VIA_FIELD = (b"Via", VIA)
_VIA_LINE = b"Via: " + VIA + b"\r\n"
_NOTHING: frozenset[bytes] = frozenset()
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
_HOST, _XFF, _XFP, _XFH = range(4)
_SPECIAL = {
    b"host": _HOST,
    b"x-forwarded-for": _XFF,
    b"x-forwarded-proto": _XFP,
    b"x-forwarded-host": _XFH,
}


_TRUST_CACHE_SIZE = 4096
_LONGEST_ENTRY = 100
"""Longer C{X-Forwarded-For} entries name no address (and are not cached)."""


def connectionTokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """
    The lower-cased options of every C{Connection} field line.

    @param headers: Field lines.
    @return: E.g. C{frozenset({b"close", b"x-foo"})}.
    """
    tokens: set[bytes] = set()
    for name, value in headers:
        if len(name) == 10 and name.lower() == b"connection":
            for token in value.split(b","):
                token = token.strip(b" \t").lower()
                if token:
                    tokens.add(token)
    return frozenset(tokens)


@frozen
class ForwardingPolicy:
    """
    How one frontend adds forwarding fields.

    @ivar trustedNetworks: Networks whose own forwarding fields are kept
        (the client address is appended to their C{X-Forwarded-For}).
    @ivar addForwarded: Whether to add an RFC 7239 C{Forwarded} element.
    """

    trustedNetworks: tuple[Any, ...] = ()
    addForwarded: bool = False
    # Whether each address seen lately is trusted, and the address each
    # X-Forwarded-For entry names: parsing an address and testing it
    # against networks costs microseconds on every request.
    _trusted: dict[str, bool] = field(init=False, factory=dict, eq=False, repr=False)
    _entries: dict[bytes, str | None] = field(
        init=False, factory=dict, eq=False, repr=False
    )

    @classmethod
    def fromConfig(
        cls, trustedProxies: Sequence[str], addForwarded: bool
    ) -> ForwardingPolicy:
        """
        @param trustedProxies: Addresses or networks, e.g. C{"10.0.0.0/8"}.
        @param addForwarded: Whether to add C{Forwarded}.
        """
        return cls(
            tuple(ipaddress.ip_network(n, strict=False) for n in trustedProxies),
            addForwarded,
        )

    def trusts(self, address: str) -> bool:
        """
        @return: Whether C{address} is in a trusted network.
        """
        if not self.trustedNetworks:
            return False
        cache = self._trusted
        trusted = cache.get(address)
        if trusted is None:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                trusted = False
            else:
                trusted = any(ip in network for network in self.trustedNetworks)
            if len(cache) >= _TRUST_CACHE_SIZE:
                cache.clear()
            cache[address] = trusted
        return trusted

    def clientIP(self, peer: str, headers: Sequence[tuple[bytes, bytes]]) -> str:
        """
        The address of the client a request comes from: the connection's
        peer, unless it is a trusted proxy; then, walking
        C{X-Forwarded-For} from its last address back, the first address
        that is not trusted (nginx's C{real_ip_recursive}).  An entry that
        is not an IP address ends the walk at the proxy that sent it; if
        every address is trusted, the first one is the client.

        @param peer: The connection's peer address.
        @param headers: The request's field lines.
        @return: An IP address (as C{ipaddress} writes it, when it came
            from C{X-Forwarded-For}), or C{peer} as it is.
        """
        if not self.trustedNetworks or not self.trusts(peer):
            return peer
        entries = [
            entry
            for name, value in headers
            if len(name) == 15 and name.lower() == b"x-forwarded-for"
            for entry in value.split(b",")
        ]
        client = peer
        cache = self._entries
        for entry in reversed(entries):
            if entry in cache:
                address = cache[entry]
            elif len(entry) > _LONGEST_ENTRY:
                address = None
            else:
                address = _forwardedAddress(entry)
                if len(cache) >= _TRUST_CACHE_SIZE:
                    cache.clear()
                cache[entry] = address
            if address is None:
                break
            client = address
            if not self.trusts(address):
                break
        return client


def _forwardedAddress(entry: bytes) -> str | None:
    """
    @param entry: One element of C{X-Forwarded-For}: C{192.0.2.1},
        C{2001:db8::1}, or with a port, C{192.0.2.1:443} or
        C{[2001:db8::1]:443}.
    @return: The address it names, normalised, or L{None} if it names none.
    """
    text = entry.strip(b" \t").decode("latin-1")
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def websocketUpgrade(
    method: bytes,
    version: bytes,
    tokens: frozenset[bytes],
    headers: Sequence[tuple[bytes, bytes]],
    hasBody: bool,
) -> bytes | None:
    """
    Whether a request is a WebSocket handshake lbtwist tunnels: a GET in
    HTTP/1.1 without a body, C{upgrade} among its C{Connection} options and
    C{websocket} as its only C{Upgrade} protocol.

    @return: The C{Upgrade} value as sent, or L{None} for any other request
        (whose C{Upgrade} is then removed like any hop-by-hop field).
    """
    if method != b"GET" or version != b"HTTP/1.1" or hasBody or b"upgrade" not in tokens:
        return None
    values = [value for name, value in headers if name.lower() == b"upgrade"]
    if len(values) != 1 or values[0].strip().lower() != _WEBSOCKET:
        return None
    return values[0].strip()


def requestHead(
    method: bytes,
    target: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    tokens: frozenset[bytes],
    clientIP: str,
    secure: bool,
    policy: ForwardingPolicy,
    bodyLength: int | None,
    hasBody: bool,
    upgrade: bytes | None = None,
    hostOverride: bytes | None = None,
    rules: tuple[frozenset[bytes], Sequence[tuple[bytes, bytes]]] | None = None,
) -> list[bytes]:
    """
    The request head sent upstream.

    @param method: The method.
    @param target: The origin-form target (or C{*}).
    @param headers: The client's field lines.
    @param tokens: The client's C{Connection} options.
    @param clientIP: The client's address.
    @param secure: Whether the client came over TLS.
    @param policy: The frontend's forwarding policy.
    @param bodyLength: The body's length, or L{None} for chunked.
    @param hasBody: Whether the request has a body at all.
    @param upgrade: The C{Upgrade} value of a WebSocket handshake to pass
        on, if any.
    @param hostOverride: A C{Host} to send instead of the client's.
    @param rules: Header rules (see L{lbtwist.headerrules}), applied after
        this policy: the lower-case names whose lines are removed (the
        client's and lbtwist's own forwarding fields alike; never framing,
        which is written after), and the lines then added.
    @return: The head's parts (request line, field lines, empty line).
    """
    drop = REQUEST_HOP_BY_HOP
    if tokens:
        drop = drop | (tokens - _PROTECTED)
    ruleDrop = _NOTHING
    if rules is not None:
        ruleDrop = rules[0]
        if ruleDrop:
            drop = drop | (ruleDrop - _FRAMING)
    trusted = policy.trusts(clientIP)
    if not trusted:
        drop = drop | _FORWARDING
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    host = b""
    forwardedFor: list[bytes] = []
    proto: bytes | None = None
    forwardedHost: bytes | None = None
    special = _SPECIAL
    for name, value in headers:
        lowered = name.lower()
        if lowered in drop:
            continue
        kind = special.get(lowered)
        if kind is not None:
            if kind == _HOST:
                host = value
                if hostOverride is not None:
                    value = hostOverride
            elif kind == _XFF:
                forwardedFor.append(value)
                continue
            elif kind == _XFP:
                proto = value
            else:
                forwardedHost = value
        parts += (name, b": ", value, b"\r\n")
    if b"host" in ruleDrop:
        host = next((v for n, v in headers if n.lower() == b"host"), b"")
    append = parts.append
    client = clientIP.encode("ascii", "replace")
    scheme = b"https" if secure else b"http"
    if b"x-forwarded-for" not in ruleDrop:
        forwardedFor.append(client)
        parts += (b"X-Forwarded-For: ", b", ".join(forwardedFor), b"\r\n")
    if proto is None and b"x-forwarded-proto" not in ruleDrop:
        parts += (b"X-Forwarded-Proto: ", scheme, b"\r\n")
    if forwardedHost is None and host and b"x-forwarded-host" not in ruleDrop:
        parts += (b"X-Forwarded-Host: ", host, b"\r\n")
    if policy.addForwarded and b"forwarded" not in ruleDrop:
        node = b'"[%s]"' % (client,) if b":" in client else client
        append(b"Forwarded: for=%s;proto=%s" % (node, scheme))
        if host:
            append(b';host="%s"' % (host,))
        append(b"\r\n")
    if b"via" not in ruleDrop:
        append(_VIA_LINE)
    if rules is not None:
        for name, value in rules[1]:
            parts += (name, b": ", value, b"\r\n")
    if upgrade is not None:
        append(b"Connection: Upgrade\r\nUpgrade: ")
        append(upgrade)
        append(b"\r\n")
    if hasBody:
        if bodyLength is None:
            append(b"Transfer-Encoding: chunked\r\n")
        else:
            append(b"Content-Length: %d\r\n" % (bodyLength,))
    append(b"\r\n")
    return parts


def responseHeaders(
    headers: Sequence[tuple[bytes, bytes]],
) -> list[tuple[bytes, bytes]]:
    """
    The response fields passed to the client: hop-by-hop fields, the fields
    the backend's C{Connection} names and the framing removed, C{Via}
    added.  C{Set-Cookie} lines stay separate.

    @param headers: The backend's field lines.
    """
    kept = []
    named: set[bytes] | None = None
    hopByHop = RESPONSE_HOP_BY_HOP
    lengths = _RESPONSE_HOP_BY_HOP_LENGTHS
    for field in headers:
        name = field[0]
        if len(name) not in lengths:
            # Most fields: no hop-by-hop name is this long.
            kept.append(field)
            continue
        lowered = name.lower()
        if lowered in hopByHop:
            if lowered == b"connection":
                for token in field[1].split(b","):
                    token = token.strip(b" \t").lower()
                    if token and token not in hopByHop:
                        if named is None:
                            named = set()
                        named.add(token)
            continue
        kept.append(field)
    if named:
        kept = [field for field in kept if field[0].lower() not in named]
    kept.append(_VIA_FIELD)
    return kept
