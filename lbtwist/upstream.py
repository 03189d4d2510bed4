# -*- test-case-name: tests.test_upstream -*-
"""
The upstream (backend-facing) HTTP/1.1 client: Twisted's L{Agent} and
L{HTTPConnectionPool}, made strict enough for a proxy.

Twisted's response parser is lenient where a proxy must not be: it lets
chunked win over a conflicting C{Content-Length}, joins obsolete line
folding, keeps a connection whose response was followed by stray bytes, and
does not honour the fields a backend's C{Connection} header names.
L{UpstreamConnectionPool} builds connections whose parser refuses such
responses (the request fails, the connection is closed, the client gets 502)
and which are never reused after stray bytes.

This module reaches into C{twisted.web._newclient}; lbtwist requires the
Twisted version it was tested with (see C{setup.py}).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from attrs import field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
)
from twisted.internet.interfaces import IStreamClientEndpoint, IConsumer
from twisted.web._newclient import (
    HTTP11ClientProtocol,
    HTTPClientParser,
    ParseError,
)
from twisted.web.client import HTTPConnectionPool, URI, _HTTP11ClientFactory
from twisted.web.iweb import IBodyProducer, IAgentEndpointFactory
from zope.interface import implementer

from lbtwist.channel import connectionTokens
from lbtwist.tls import BackendTLS

# Response fields that are about one connection, never forwarded (RFC 9110
# section 7.6.1), besides those named by the Connection field.
RESPONSE_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

# Fields a Connection option can never remove.
_PROTECTED = frozenset({b"content-length", b"transfer-encoding", b"host"})


class InvalidResponse(ParseError):
    """
    The backend's response head is malformed or ambiguous.
    """


class _StrictResponseParser(HTTPClientParser):
    """
    An L{HTTPClientParser} that refuses ambiguous framing and strips the
    fields named by the response's C{Connection} header.
    """

    def statusReceived(self, status: bytes) -> None:
        parts = status.split(b" ", 2)
        if len(parts) < 2 or len(parts[1]) != 3 or not parts[1].isdigit():
            raise InvalidResponse("bad status line", status)
        super().statusReceived(status)

    def lineReceived(self, line: bytes) -> None:
        if self.state == "HEADER" and line[:1] in (b" ", b"\t"):
            raise InvalidResponse("obsolete line folding", line)
        super().lineReceived(line)

    def headerReceived(self, name: bytes, value: bytes) -> None:
        if not name or name != name.strip() or b" " in name or b"\t" in name:
            raise InvalidResponse("bad field name", name)
        if b"\x00" in value or b"\r" in value:
            raise InvalidResponse("bad field value", name)
        super().headerReceived(name, value)

    def allHeadersReceived(self) -> None:
        conn = self.connHeaders
        codings = conn.getRawHeaders(b"transfer-encoding")
        lengths = conn.getRawHeaders(b"content-length")
        if codings is not None:
            if lengths is not None:
                raise InvalidResponse("Content-Length with Transfer-Encoding", b"")
            if b",".join(codings).strip().lower() != b"chunked":
                raise InvalidResponse("unsupported transfer coding", codings[0])
        if lengths is not None:
            values = {v.strip() for line in lengths for v in line.split(b",")}
            if len(values) != 1 or not next(iter(values)).isdigit():
                raise InvalidResponse("bad Content-Length", b",".join(lengths))
            # HEAD and 304 responses describe a body they do not carry; keep
            # their Content-Length for the client.
            if self.request.method == b"HEAD" or self.response.code == 304:
                self.headers.setRawHeaders(b"content-length", [lengths[0].strip()])
        for token in connectionTokens(conn):
            if token not in _PROTECTED:
                self.headers.removeHeader(token)
        super().allHeadersReceived()


class _UpstreamProtocol(HTTP11ClientProtocol):
    """
    An L{HTTP11ClientProtocol} with the strict parser, never reused after a
    response followed by stray bytes.
    """

    def request(self, request: Any) -> Deferred[Any]:
        result: Deferred[Any] = super().request(request)
        parser = self._parser
        if parser is not None and type(parser) is HTTPClientParser:
            # The parser is created inside request(); give it the stricter
            # behaviour before any byte of the response arrives.
            parser.__class__ = _StrictResponseParser
        return result

    def _finishResponse_WAITING(self, rest: bytes) -> None:
        if rest and self._currentRequest is not None:
            # Bytes after a complete response: the connection's framing
            # cannot be trusted any more.
            self._currentRequest.persistent = False
        super()._finishResponse_WAITING(rest)

    _finishResponse_TRANSMITTING = _finishResponse_WAITING


class _UpstreamProtocolFactory(_HTTP11ClientFactory):
    """
    Builds L{_UpstreamProtocol}s for L{UpstreamConnectionPool}.
    """

    noisy = False

    def buildProtocol(self, addr: Any) -> _UpstreamProtocol:
        return _UpstreamProtocol(self._quiescentCallback)


class UpstreamConnectionPool(HTTPConnectionPool):
    """
    A persistent pool of strict upstream connections.

    @param reactor: The reactor.
    @param maxIdle: Idle connections kept per backend.
    @param idleTimeout: Seconds an idle connection is kept.
    """

    _factory = _UpstreamProtocolFactory

    def __init__(self, reactor: Any, maxIdle: int, idleTimeout: float) -> None:
        super().__init__(reactor, persistent=maxIdle > 0)
        self.maxPersistentPerHost = maxIdle
        # Twisted annotates this as int; reactor.callLater takes a float.
        self.cachedConnectionTimeout = idleTimeout  # type: ignore[assignment]


@implementer(IAgentEndpointFactory)
@frozen
class BackendEndpoints:
    """
    Client endpoints for backend URLs: IP literals are connected to directly,
    names are resolved by L{HostnameEndpoint}; C{https} URLs get TLS on top.

    @ivar reactor: The reactor.
    @ivar connectTimeout: Seconds allowed to establish a connection.
    @ivar tls: How to talk TLS to C{https} URLs; by default verified against
        the system trust store.
    """

    reactor: Any
    connectTimeout: float
    tls: BackendTLS = field(factory=BackendTLS, eq=False)

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        """
        @param uri: The backend URI.
        @return: An endpoint connecting to its host and port, over TLS
            (verified, with SNI) for an C{https} URI.
        """
        endpoint = self._tcpEndpoint(uri)
        if uri.scheme == b"https":
            return self.tls.wrap(endpoint, uri.host.decode("ascii"))
        return endpoint

    def _tcpEndpoint(self, uri: URI) -> IStreamClientEndpoint:
        host = uri.host.decode("ascii")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return HostnameEndpoint(
                self.reactor, uri.host, uri.port, timeout=self.connectTimeout
            )
        if address.version == 6:
            return TCP6ClientEndpoint(
                self.reactor, host, uri.port, timeout=self.connectTimeout
            )
        return TCP4ClientEndpoint(
            self.reactor, host, uri.port, timeout=self.connectTimeout
        )


@implementer(IBodyProducer)
class SpooledBody:
    """
    A request body already received from the client (in memory or spooled
    to disk by twisted.web), streamed upstream with backpressure and
    replayable for a retry.

    @ivar length: The body's size in bytes.
    """

    readSize = 65536

    def __init__(self, content: Any, length: int) -> None:
        """
        @param content: A seekable binary file holding the body.
        @param length: The body's size in bytes.
        """
        self._content = content
        self.length = length
        self._consumer: IConsumer | None = None
        self._done: Deferred[None] | None = None
        self._paused = False

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        """
        Write the whole body to C{consumer}, from its beginning.
        """
        self._content.seek(0)
        self._consumer = consumer
        self._paused = False
        self._done = Deferred()
        done = self._done
        self._pump()
        return done

    def _pump(self) -> None:
        while not self._paused and self._done is not None:
            chunk = self._content.read(self.readSize)
            if not chunk:
                done, self._done = self._done, None
                done.callback(None)
                return
            assert self._consumer is not None
            self._consumer.write(chunk)

    def pauseProducing(self) -> None:
        """
        Stop writing until resumed.
        """
        self._paused = True

    def resumeProducing(self) -> None:
        """
        Go on writing.
        """
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:
        """
        Stop for good; the L{Deferred} from L{startProducing} never fires.
        """
        self._done = None
