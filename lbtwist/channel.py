# -*- test-case-name: tests.test_channel -*-
"""
The downstream (client-facing) HTTP/1.1 connection.

Twisted's L{HTTPChannel} parses requests but leaves several decisions to the
application; a proxy must make them before anything goes upstream
(RFC 9112).  L{ProxyChannel} adds:

  - a header-completion deadline (slowloris defence: Twisted's own idle
    timeout is reset by every byte), answered with 408;
  - 414 for a request target over the limit and 431 for a header section
    over the limit (Twisted answers 400 or drops the connection);
  - rejection of obsolete line folding, whitespace before the colon,
    C{Transfer-Encoding} other than a single final C{chunked} (Twisted
    silently accepts C{identity}) and C{Transfer-Encoding} in HTTP/1.0;
  - C{Host} validation (missing in HTTP/1.1, repeated, malformed: 400);
  - absolute-form targets rewritten to origin-form with the target's
    authority as C{Host}; C{CONNECT} refused (lbtwist is no forward proxy);
  - a request body limit, answered with 413 before the body is read;
  - C{Connection} parsed as comma-separated tokens over every line.

Every refusal is a short C{text/plain} response followed by closing the
connection, and nothing is processed after it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Iterable

from twisted.internet.interfaces import IDelayedCall, IProtocol
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import (
    HTTPChannel,
    Request,
    _ChunkedTransferDecoder,
    _MalformedChunkedDataError,
)
from twisted.web.http_headers import Headers

if TYPE_CHECKING:
    from lbtwist.web import ProxySite

_log = Logger()

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")

# RFC 9110 section 7.2 / RFC 3986: uri-host [ ":" port ]; reg-name characters
# or an IP literal in brackets.
_HOST = re.compile(
    rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]+)(?::[0-9]{0,5})?\Z"
)

# RFC 9112 section 7.1.1: chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] )
_TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_CHUNK_EXTENSIONS = re.compile(
    rb'(?:[ \t]*;[ \t]*%s+(?:[ \t]*=[ \t]*(?:%s+|"(?:[^"\\]|\\.)*"))?)*[ \t]*\Z'
    % (_TCHAR, _TCHAR)
)

_ABSOLUTE_FORM = re.compile(rb"(?i)https?://([^/?#]*)([^#]*)\Z")

_PHRASES = {
    400: b"Bad Request",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


def errorResponse(code: int, close: bool = True) -> bytes:
    """
    Build a complete, short C{text/plain} HTTP/1.1 error response.

    The body names the status only; request data is never echoed.

    @param code: One of the status codes lbtwist answers by itself.
    @param close: Whether to announce C{Connection: close}.
    @return: The response bytes.
    """
    phrase = _PHRASES[code]
    body = b"%d %s\n" % (code, phrase)
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (code, phrase),
            b"Content-Type: text/plain; charset=utf-8\r\n",
            b"Content-Length: %d\r\n" % (len(body),),
            b"Connection: close\r\n" if close else b"",
            b"\r\n",
            body,
        ]
    )


def errorBody(code: int) -> tuple[bytes, bytes]:
    """
    The reason phrase and body of one of lbtwist's own error responses.

    @param code: The status code.
    @return: C{(phrase, body)}.
    """
    phrase = _PHRASES[code]
    return phrase, b"%d %s\n" % (code, phrase)


def connectionTokens(headers: Headers) -> set[bytes]:
    """
    The lower-cased options of every C{Connection} field line.

    @param headers: Request or response headers.
    @return: The set of tokens, e.g. C{{b"close", b"x-foo"}}.
    """
    tokens: set[bytes] = set()
    for line in headers.getRawHeaders(b"connection", ()):
        for token in line.split(b","):
            token = token.strip(b" \t").lower()
            if token:
                tokens.add(token)
    return tokens


def validHost(value: bytes) -> bool:
    """
    Whether C{value} is a syntactically valid C{Host} field value.

    @param value: The field value.
    """
    return _HOST.match(value) is not None


class _StrictChunkedDecoder(_ChunkedTransferDecoder):
    """
    Twisted's chunked decoder, also refusing malformed chunk extensions
    (Twisted only checks their characters) and answering 413 as soon as a
    chunk size announces more than the body limit allows.
    """

    def __init__(
        self,
        dataCallback: Any,
        finishCallback: Any,
        tooLarge: Any,
    ) -> None:
        """
        @param dataCallback: Called with body bytes.
        @param finishCallback: Called with the bytes after the body.
        @param tooLarge: Called with a chunk's size; returns C{True} (after
            refusing the request) if the body would exceed the limit.
        """
        super().__init__(dataCallback, finishCallback)
        self._tooLarge = tooLarge

    def _dataReceived_CHUNK_LENGTH(self) -> bool:
        end = self._buffer.find(b"\r\n", self._start)
        if end != -1:
            semicolon = self._buffer.find(b";", 0, end)
            if semicolon != -1 and not _CHUNK_EXTENSIONS.match(
                bytes(self._buffer[semicolon:end])
            ):
                raise _MalformedChunkedDataError("malformed chunk extension")
        done: bool = super()._dataReceived_CHUNK_LENGTH()
        if done and self._tooLarge(self.length):
            raise _MalformedChunkedDataError("chunk over the body limit")
        return done


class ProxyChannel(HTTPChannel):
    """
    An L{HTTPChannel} hardened to sit in front of backends.

    Limits come from the L{ProxySite} that built the channel.

    @ivar site: The site (a L{ProxySite}) that built this channel.
    """

    site: ProxySite
    _rejected = False
    _expectRequestLine = True
    _awaitingHead = True
    _headDeadline: IDelayedCall | None = None
    _bodyLimit: int | None = None
    _bodyReceived = 0

    def __init__(
        self,
        headerTimeout: float,
        maxHeaderSize: int,
        maxTargetLength: int,
        maxBodySize: int,
    ) -> None:
        """
        @param headerTimeout: Seconds from the first byte of a request head
            until the head must be complete.
        @param maxHeaderSize: Bytes allowed for the request line and header
            section together.
        @param maxTargetLength: Bytes allowed for the request target.
        @param maxBodySize: Bytes allowed for a request body.
        """
        super().__init__()
        self.headerTimeout = headerTimeout
        self.totalHeadersSize = maxHeaderSize
        # A single line longer than the whole allowance cannot be valid.
        self.MAX_LENGTH = maxHeaderSize
        self.maxTargetLength = maxTargetLength
        self.maxBodySize = maxBodySize

    # Refusals

    def respondAndDisconnect(self, code: int) -> None:
        """
        Answer with one of lbtwist's error responses and close the connection;
        nothing more from this connection is processed.

        @param code: The status code (400, 405, 408, 413, 414 or 431).
        """
        if self._rejected:
            return
        self._rejected = True
        self._cancelHeadDeadline()
        self.persistent = False
        response = errorResponse(code)
        if self.transport is not None:
            self.transport.write(response)
        self.site.refused(self, code, len(response))
        self.loseConnection()

    def _respondToBadRequestAndDisconnect(self) -> None:
        """
        Twisted's own parser refusals get lbtwist's error page too.
        """
        self.respondAndDisconnect(400)

    # The header-completion deadline

    def _startHeadDeadline(self) -> None:
        if self._headDeadline is None and self._awaitingHead and not self._rejected:
            self._headDeadline = self.callLater(self.headerTimeout, self._headTimedOut)

    def _cancelHeadDeadline(self) -> None:
        if self._headDeadline is not None:
            if self._headDeadline.active():
                self._headDeadline.cancel()
            self._headDeadline = None

    def _headTimedOut(self) -> None:
        self._headDeadline = None
        _log.info(
            "client {peer} did not complete its request head within {timeout}s",
            peer=str(self.transport.getPeer()) if self.transport else "?",
            timeout=self.headerTimeout,
        )
        self.respondAndDisconnect(408)

    # Parsing

    # Counting connections and bytes for the frontend's statistics

    def connectionMade(self) -> None:
        """
        Count the connection.
        """
        self.site.stats.connectionOpened()
        super().connectionMade()

    def writeHeaders(
        self, version: bytes, code: bytes, reason: bytes, headers: Headers
    ) -> None:
        """
        Write a response head, counting its bytes.
        """
        head = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                head.extend((name, b": ", value, b"\r\n"))
        head.append(b"\r\n")
        self.site.stats.sent(sum(map(len, head)))
        assert self.transport is not None
        self.transport.writeSequence(head)

    def write(self, data: bytes) -> None:
        """
        Write response bytes, counting them.
        """
        self.site.stats.sent(len(data))
        assert self.transport is not None
        self.transport.write(data)

    def writeSequence(self, iovec: list[bytes]) -> None:
        """
        Write response bytes, counting them.
        """
        self.site.stats.sent(sum(map(len, iovec)))
        assert self.transport is not None
        self.transport.writeSequence(iovec)

    def dataReceived(self, data: bytes) -> None:
        """
        Drop everything after a refusal; start the head deadline at the first
        byte of a request head.
        """
        self.site.stats.received(len(data))
        if self._rejected:
            return
        if self._awaitingHead and not self._handlingRequest:
            self._startHeadDeadline()
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        """
        Check the request line and each header line before Twisted parses it.
        """
        if self._rejected:
            return
        self._startHeadDeadline()
        if self._expectRequestLine:
            if not line or not self.persistent:
                # Twisted eats one empty line before a request, and drops
                # anything after a non-persistent request.
                super().lineReceived(line)
                return
            self._expectRequestLine = False
            target = line.split(b" ")[1:2]
            if target and len(target[0]) > self.maxTargetLength:
                self.respondAndDisconnect(414)
                return
            if len(line) > self.totalHeadersSize:
                self.respondAndDisconnect(414)
                return
        elif line[:1] in (b" ", b"\t"):
            # Obsolete line folding (RFC 9112 section 5.2).
            self.respondAndDisconnect(400)
            return
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self.respondAndDisconnect(431)
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        A line longer than the header allowance: 414 for the request line,
        431 for a header line.
        """
        self.respondAndDisconnect(414 if self._expectRequestLine else 431)

    def headerReceived(self, line: bytes) -> bool:
        """
        Refuse malformed field names and transfer codings Twisted would let
        through, then let Twisted store the field.
        """
        if self._rejected:
            return False
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN.match(name) is None:
            self.respondAndDisconnect(400)
            return False
        if name.lower() == b"transfer-encoding":
            if (
                self._version != b"HTTP/1.1"
                or value.strip(b" \t").lower() != b"chunked"
            ):
                self.respondAndDisconnect(400)
                return False
        ok: bool = super().headerReceived(line)
        return ok

    def _maybeChooseTransferDecoder(self, header: bytes, data: bytes) -> bool:
        """
        Decode chunked bodies with L{_StrictChunkedDecoder}.
        """
        ok: bool = super()._maybeChooseTransferDecoder(header, data)
        if ok and type(self._transferDecoder) is _ChunkedTransferDecoder:
            self._transferDecoder = _StrictChunkedDecoder(
                self.requests[-1].handleContentChunk,
                self._finishRequestBody,
                self._chunkTooLarge,
            )
        return ok

    def allHeadersReceived(self) -> None:
        """
        Validate the request as a whole (target form, C{Host}, body size)
        before Twisted sends C{100 Continue} or reads a body.
        """
        self._cancelHeadDeadline()
        self._awaitingHead = False
        self._expectRequestLine = True
        request = self.requests[-1]
        code = self._checkRequest(request)
        if code is not None:
            self.respondAndDisconnect(code)
            return
        self._bodyReceived = 0
        self._bodyLimit = self.maxBodySize
        super().allHeadersReceived()

    def _checkRequest(self, request: Request) -> int | None:
        """
        @return: The status code refusing C{request}, or L{None} if it may
            proceed.
        """
        if self._command == b"CONNECT":
            return 405
        headers = request.requestHeaders
        target = self._path
        if not target.startswith(b"/"):
            match = _ABSOLUTE_FORM.match(target)
            if match is not None:
                authority, rest = match.groups()
                if not validHost(authority) or b"@" in authority:
                    return 400
                headers.setRawHeaders(b"host", [authority])
                self._path = rest if rest.startswith(b"/") else b"/" + rest
            elif not (target == b"*" and self._command == b"OPTIONS"):
                return 400
        hosts = headers.getRawHeaders(b"host")
        if hosts is None:
            if self._version == b"HTTP/1.1":
                return 400
        elif len(hosts) != 1 or not validHost(hosts[0]):
            return 400
        if self.length is not None and self.length > self.maxBodySize:
            return 413
        return None

    def _chunkTooLarge(self, size: int) -> bool:
        if self._bodyLimit is not None and self._bodyReceived + size > self._bodyLimit:
            self.respondAndDisconnect(413)
            return True
        return False

    def bodyChunkReceived(self, size: int) -> bool:
        """
        Account for C{size} more bytes of request body.

        @return: C{False} (after answering 413) if the body is now over the
            limit.
        """
        self._bodyReceived += size
        if self._bodyLimit is not None and self._bodyReceived > self._bodyLimit:
            self.respondAndDisconnect(413)
            return False
        return True

    def allContentReceived(self) -> None:
        """
        Process the request unless it was refused.
        """
        if self._rejected:
            return
        super().allContentReceived()

    def checkPersistence(self, request: Request, version: bytes) -> bool:
        """
        Decide persistence from every C{Connection} line's comma-separated
        tokens, case-insensitively.
        """
        if version == b"HTTP/1.1" and b"close" not in connectionTokens(
            request.requestHeaders
        ):
            return True
        request.responseHeaders.setRawHeaders(b"connection", [b"close"])
        return False

    def requestDone(self, request: Request) -> None:
        """
        Get ready for the next request head.
        """
        self._awaitingHead = True
        super().requestDone(request)

    def switchProtocols(self, protocol: IProtocol) -> None:
        """
        Hand this connection's incoming bytes and its end to C{protocol}
        (after a C{101 Switching Protocols}), as Twisted's own websocket
        support does; the connection still counts as this frontend's until
        it closes.

        @param protocol: The protocol taking over; its C{makeConnection} is
            the caller's business.
        """
        self._cancelHeadDeadline()
        self.setTimeout(None)

        def connectionLost(reason: Failure = connectionDone) -> None:
            protocol.connectionLost(reason)
            self._forget()

        self.dataReceived = protocol.dataReceived  # type: ignore[method-assign]
        self.connectionLost = connectionLost  # type: ignore[method-assign]

    def _forget(self) -> None:
        self.site.stats.connectionClosed()
        self.site.channels.discard(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Stop the head deadline; count the connection as closed.
        """
        self._cancelHeadDeadline()
        self._forget()
        super().connectionLost(reason)


def iterHeaderLines(headers: Headers) -> Iterable[tuple[bytes, bytes]]:
    """
    Every field line of C{headers}, names lower-cased, in order per name.

    @param headers: The headers.
    """
    for name, values in headers.getAllRawHeaders():
        lowered = name.lower()
        for value in values:
            yield lowered, value
