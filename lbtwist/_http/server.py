# -*- test-case-name: tests.test_http_server -*-
"""
The downstream (client-facing) HTTP/1.1 connection, on llhttp.

L{HTTPServerChannel} parses requests with C{httptools.HttpRequestParser}
and hands each complete request head to its frontend as a L{ServerRequest}
(an L{IClientRequest}), one at a time and answered strictly in order.
Before anything is dispatched it enforces what a proxy must (RFC 9112):

  - llhttp's own refusals (C{Content-Length} with C{Transfer-Encoding},
    malformed or repeated C{Content-Length}, bare CR or LF, NUL, obsolete
    line folding, whitespace before the colon, bad chunk sizes): 400;
  - C{Transfer-Encoding} other than one C{chunked} line, or in HTTP/1.0:
    400;
  - C{Host} missing (HTTP/1.1), repeated or invalid: 400;
  - the target in origin form, absolute form (rewritten to origin form,
    its authority becoming C{Host}) or C{*} for C{OPTIONS}; anything else,
    or bytes outside C{0x21-0x7E}: 400; C{CONNECT}: 405;
  - HTTP/1.x only (C{HTTP/1.2} is taken as HTTP/1.1): else 505;
  - the target limit (414), the head limit (431, counted as the head
    arrives), the body limit (413 before the body is read);
  - a header-completion deadline (408), an idle timeout between requests,
    a body deadline and a minimum body rate (408, or abort once the
    response has started).

Every refusal is one of lbtwist's short error pages followed by closing
the connection, and nothing after it is processed.

An upgrade request (C{Connection: upgrade}) without a body is dispatched
like any other; if the proxy switches protocols, the connection is handed
over.  If it answers with an ordinary response instead, the connection is
closed after that response.  An upgrade request with a C{Content-Length}
body is not a handshake the proxy tunnels: it is an ordinary request, whose
body the channel reads itself (llhttp stops after the head of any upgrade
request); one with a chunked body is refused with 400.
"""

from __future__ import annotations

import re
from collections import deque
from typing import (
    Callable,
    Iterable,
    NoReturn,
    Protocol as _TypingProtocol,
    Sequence,
    cast,
)

import httptools
from attrs import frozen
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IProtocol,
    IReactorTime,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from lbtwist._http.errors import errorBody, errorResponse
from lbtwist._http.writer import SocketWriter, WriteBatch
from lbtwist._http.interfaces import IBodyReceiver, IClientRequest, IRequestBody
from lbtwist import proxyheader
from lbtwist.stats import FrontendStats

__all__ = [
    "HTTPServerChannel",
    "IServerFrontend",
    "RequestBody",
    "ServerRequest",
    "ServerSettings",
]

_log = Logger()

# RFC 9110 section 7.2 / RFC 3986: uri-host [ ":" port ]; reg-name characters
# or an IP literal in brackets.
_HOST = re.compile(
    rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]+)(?::[0-9]{0,5})?\Z"
)
_ABSOLUTE_FORM = re.compile(rb"(?i)https?://([^/?#]*)([^#]*)\Z")
_BAD_TARGET_BYTE = re.compile(rb"[^\x21-\x7e]")

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_NO_TOKENS: frozenset[bytes] = frozenset()
_ERROR_TYPE = (b"Content-Type", b"text/plain; charset=utf-8")

# Bytes of the request line besides the method and the target:
# two spaces, "HTTP/1.1" and CRLF.
_REQUEST_LINE_OVERHEAD = 12

# Why reading from the client is paused.
_PAUSED_QUEUE = 1
_PAUSED_BODY = 2

_RATE_WINDOW = 10.0


def validHost(value: bytes) -> bool:
    """
    Whether C{value} is a syntactically valid C{Host} field value.

    @param value: The field value.
    """
    return _HOST.match(value) is not None


@frozen
class ServerSettings:
    """
    The limits and deadlines of a frontend's client connections.

    @ivar headerTimeout: Seconds from the first byte of a request head (or
        of the connection, for a PROXY header) until it must be complete.
    @ivar idleTimeout: Seconds a connection may wait for its next request.
    @ivar bodyTimeout: The longest wait for the next body bytes while the
        body is being read.
    @ivar minBodyRate: Bytes per second a body must arrive at, checked over
        each 10 s window of reading it (windows in which reading was paused
        do not count); 0 turns the check off.
    @ivar maxHeaderSize: Bytes allowed for the request line and header
        section together.
    @ivar maxTargetLength: Bytes allowed for the request target.
    @ivar maxBodySize: Bytes allowed for a request body.
    @ivar secure: Whether the connections come over TLS.
    @ivar acceptProxy: Whether each connection starts with a PROXY header.
    """

    headerTimeout: float
    idleTimeout: float
    bodyTimeout: float
    minBodyRate: int
    maxHeaderSize: int
    maxTargetLength: int
    maxBodySize: int
    secure: bool
    acceptProxy: bool


class IServerFrontend(Interface):
    """
    What an L{HTTPServerChannel} needs from the frontend that built it.
    """

    settings = Attribute("The connections' L{ServerSettings}.")
    clock = Attribute("An L{IReactorTime} for deadlines and timestamps.")
    stats = Attribute("The frontend's L{FrontendStats}.")
    draining = Attribute(
        "Whether the frontend is shutting down: new responses carry "
        "C{Connection: close} and connections close after them."
    )
    routeHead = Attribute(
        "None, or a callable given each L{ServerRequest} as soon as its head "
        "is complete and valid (before its body is read, and before it is "
        "dispatched: it may wait behind others): it decides where the "
        "request goes, keeping that in the request's C{routed}, and returns "
        "the body limit for it (None: C{settings.maxBodySize})."
    )

    def dispatch(request: IClientRequest) -> None:
        """
        Handle a request whose head is complete (its body may still be
        arriving).  May raise: the channel logs it and answers 502.
        """

    def channelOpened(channel: HTTPServerChannel) -> None:
        """
        A client connection opened.
        """

    def channelClosed(channel: HTTPServerChannel) -> None:
        """
        A client connection closed (for a connection whose protocol was
        switched, when the connection finally closes).
        """

    def refused(code: int, sentBytes: int, clientAddress: IAddress) -> None:
        """
        The channel refused a request by itself, before dispatching it.

        @param code: The status sent.
        @param sentBytes: The bytes of the error response.
        @param clientAddress: The client's address.
        """


class _Transport(_TypingProtocol):
    """
    What the channel uses of a client's transport (a TCP or TLS transport
    provides all of it).
    """

    def write(self, data: bytes) -> None: ...
    def writeSequence(self, data: Iterable[bytes]) -> None: ...
    def loseConnection(self) -> None: ...
    def abortConnection(self) -> None: ...
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...
    def registerProducer(self, producer: object, streaming: bool) -> None: ...
    def unregisterProducer(self) -> None: ...
    def getPeer(self) -> IAddress: ...
    def getHost(self) -> IAddress: ...


class _Stop(Exception):
    """
    Raised in a parser callback to stop parsing; the channel has decided
    what happens next.
    """


@implementer(IRequestBody)
class RequestBody:
    """
    The body of a L{ServerRequest}: what arrived before L{deliver} is
    buffered, the rest is pushed to the receiver as it arrives.

    @ivar length: The length from C{Content-Length}, or L{None} (chunked).
    @ivar limit: The most body bytes allowed.
    @ivar received: Body bytes received so far (decoded).
    @ivar complete: Whether the whole body has arrived.
    """

    __slots__ = (
        "length",
        "limit",
        "received",
        "complete",
        "_channel",
        "_request",
        "_buffer",
        "_receiver",
        "_failure",
        "_discard",
    )

    def __init__(
        self,
        channel: HTTPServerChannel,
        request: ServerRequest,
        length: int | None,
        limit: int | None = None,
    ) -> None:
        """
        @param channel: The channel reading the body.
        @param request: The request the body belongs to.
        @param length: The length from C{Content-Length}, or L{None}.
        @param limit: The most body bytes allowed (the channel's
            C{maxBodySize} if not given).
        """
        self.length = length
        self.limit = channel._settings.maxBodySize if limit is None else limit
        self.received = 0
        self.complete = length == 0
        self._channel = channel
        self._request = request
        self._buffer: list[bytes] = []
        self._receiver: IBodyReceiver | None = None
        self._failure: str | None = None
        self._discard = False

    def deliver(self, receiver: IBodyReceiver) -> None:
        """
        Give what arrived to C{receiver} at once and the rest as it arrives;
        answer C{100 Continue} first if the client waits for it.
        """
        if self._receiver is not None:
            raise RuntimeError("the body was delivered already")
        self._receiver = receiver
        if self._failure is not None:
            receiver.bodyFailed(self._failure)
            return
        request = self._request
        if request._expectContinue and not self.received and not self.complete:
            request._expectContinue = False
            self._channel._writeContinue(request)
        if self._buffer:
            data = b"".join(self._buffer)
            self._buffer = []
            if not self._discard:
                receiver.bodyData(data)
        if self.complete and not self._discard:
            receiver.bodyEnd()

    def pauseProducing(self) -> None:
        """
        Stop reading from the client.
        """
        if not self.complete and not self._request.done:
            self._channel._pause(_PAUSED_BODY)

    def resumeProducing(self) -> None:
        """
        Go on reading from the client.
        """
        self._channel._resume(_PAUSED_BODY)

    def stopProducing(self) -> None:
        """
        Drop the rest of the body (it is still read from the client).
        """
        self._discard = True
        self._buffer = []
        self._channel._resume(_PAUSED_BODY)

    # Called by the channel.

    def _data(self, data: bytes) -> None:
        self.received += len(data)
        if self._discard:
            return
        receiver = self._receiver
        if receiver is None:
            self._buffer.append(data)
        else:
            receiver.bodyData(data)

    def _end(self) -> None:
        self.complete = True
        if self._receiver is not None and not self._discard:
            self._receiver.bodyEnd()

    def _fail(self, reason: str) -> None:
        if self.complete or self._failure is not None:
            return
        self._failure = reason
        self._buffer = []
        if self._receiver is not None:
            self._receiver.bodyFailed(reason)


@implementer(IClientRequest)
class ServerRequest:
    """
    One request read by an L{HTTPServerChannel}, and its response.

    See L{IClientRequest} for the attributes and methods.
    """

    # What most requests never change, or change only once they are
    # answered: class defaults, so that making a request sets only what
    # differs from one request to the next.
    body: RequestBody | None = None
    status: int | None = None
    sentBytes = 0
    headSent = False
    done = False
    routed: object | None = None
    _pendingHead = b""
    _expectContinue = False
    _upgrade = False
    _chunked = False
    _bodyAllowed = True
    _keepAlive = False
    _callbacks: list[Callable[[], object]] | None = None
    _producer: object | None = None

    def __init__(
        self,
        channel: HTTPServerChannel,
        method: bytes,
        target: bytes,
        version: bytes,
        headers: list[tuple[bytes, bytes]],
        connectionTokens: frozenset[bytes],
        host: bytes | None,
        persistent: bool,
        started: float = 0.0,
    ) -> None:
        """
        @param channel: The channel the request came on.
        @param method: The method.
        @param target: The target, in origin form or C{*}.
        @param version: C{b"HTTP/1.1"} or C{b"HTTP/1.0"}.
        @param headers: The field lines.
        @param connectionTokens: The C{Connection} options.
        @param host: The C{Host} value, or L{None}.
        @param persistent: Whether the client lets the connection persist
            after this request.
        @param started: When its head was complete.
        """
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.connectionTokens = connectionTokens
        self.host = host
        self.clientAddress = channel._clientAddress
        self.serverAddress = channel._serverAddress
        self.secure = channel._settings.secure
        self.started = started
        self._channel = channel
        self._persistent = persistent

    def __repr__(self) -> str:
        return f"<ServerRequest {self.method!r} {self.target!r} {self.version!r}>"

    def respond(
        self,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        length: int | None,
    ) -> None:
        """
        Prepare the response head, with the framing and persistence fields
        the channel decides; it leaves with the first body bytes (one write
        for both), or at L{flush}, L{finish} or L{abort}.
        """
        if self.done or self.headSent:
            return
        channel = self._channel
        self.status = status
        self.headSent = True
        parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        if status < 200:
            # 101 Switching Protocols: the caller's fields only.
            self._bodyAllowed = False
        else:
            body = self.body
            keep = (
                self._persistent
                and not channel._closing
                and not channel._frontend.draining
                and (body is None or body.complete)
            )
            bodyAllowed = status != 204 and status != 304 and self.method != b"HEAD"
            self._bodyAllowed = bodyAllowed
            if length is not None:
                if status != 204:
                    parts.append(b"Content-Length: %d\r\n" % (length,))
            elif bodyAllowed:
                if self.version == b"HTTP/1.1":
                    self._chunked = True
                    parts.append(b"Transfer-Encoding: chunked\r\n")
                else:
                    keep = False
            if not keep:
                parts.append(b"Connection: close\r\n")
            elif self.version == b"HTTP/1.0":
                parts.append(b"Connection: keep-alive\r\n")
            self._keepAlive = keep
        parts.append(b"\r\n")
        if status < 200:
            channel._write(self, b"".join(parts))
        else:
            self._pendingHead = b"".join(parts)

    def write(self, data: bytes) -> None:
        """
        Send body bytes, chunked if the response is.
        """
        if self.done or not self.headSent or not self._bodyAllowed or not data:
            return
        self.sentBytes += len(data)
        head, self._pendingHead = self._pendingHead, b""
        if self._chunked:
            self._channel._write(self, b"%s%x\r\n%s\r\n" % (head, len(data), data))
        else:
            self._channel._write(self, head + data if head else data)

    def finish(self) -> None:
        """
        Complete the response; the channel goes on with the next request or
        closes the connection.
        """
        if self.done:
            return
        head, self._pendingHead = self._pendingHead, b""
        if self._chunked:
            self._channel._write(self, head + _LAST_CHUNK)
        elif head:
            self._channel._write(self, head)
        self._channel._requestFinished(self)

    def flush(self) -> None:
        """
        Send the response head if it is still held back.
        """
        head = self._pendingHead
        if head and not self.done:
            self._pendingHead = b""
            self._channel._write(self, head)

    def abort(self) -> None:
        """
        Cut the response off by aborting the client's connection; what was
        held back goes first.
        """
        if self.done:
            return
        self.flush()
        self._channel._abortRequest(self)

    def respondError(
        self,
        code: int,
        detail: str | None = None,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        """
        Answer with one of lbtwist's error pages and finish.

        @param code: The status.
        @param detail: A line of lbtwist's own words for the page, or
            L{None}.
        @param headers: Fields to add to the page's.
        """
        if self.done or self.headSent:
            return
        phrase, body = errorBody(code, detail)
        self.respond(code, phrase, [_ERROR_TYPE, *headers], len(body))
        self.write(body)
        self.finish()

    def registerProducer(self, producer: object) -> None:
        """
        Register C{producer} as a streaming producer on the client's
        connection.
        """
        if self.done:
            return
        self._producer = producer
        self._channel._transport.registerProducer(producer, True)

    def unregisterProducer(self) -> None:
        """
        Unregister the producer registered with L{registerProducer}.
        """
        if self._producer is not None:
            self._producer = None
            self._channel._transport.unregisterProducer()

    def notifyDone(self, callback: object) -> None:
        """
        Call C{callback()} once when the request is over.
        """
        assert callable(callback)
        if self.done:
            callback()
        elif self._callbacks is None:
            self._callbacks = [callback]
        else:
            self._callbacks.append(callback)

    def countSwitched(self, sent: int) -> None:
        """
        Count bytes a tunnel wrote to the client's connection.
        """
        self._channel._stats.sent(sent)

    def switchProtocols(self, protocol: object) -> tuple[object, bytes] | None:
        """
        Hand the connection over to C{protocol}, if this request asked to
        upgrade it.
        """
        if self.done or not self._upgrade:
            return None
        return self._channel._switchProtocols(self, protocol)

    def _over(self) -> None:
        """
        The request is over: unregister a forgotten producer and tell those
        waiting.
        """
        self.done = True
        if self._producer is not None:
            self.unregisterProducer()
        callbacks = self._callbacks
        if callbacks is not None:
            self._callbacks = None
            for callback in callbacks:
                try:
                    callback()
                except Exception:
                    _log.failure("notifyDone callback of {request} failed", request=self)


@implementer(IHalfCloseableProtocol)
class HTTPServerChannel(Protocol):
    """
    A client's HTTP/1.1 connection: requests parsed with llhttp, dispatched
    to the frontend one at a time and answered in order.

    Construct it with the L{IServerFrontend} it serves:
    C{HTTPServerChannel(frontend)}.
    """

    _parser: httptools.HttpRequestParser | None
    _transport: _Transport

    def __init__(self, frontend: IServerFrontend) -> None:
        """
        @param frontend: The frontend this connection belongs to.
        """
        self._frontend = frontend
        self._settings: ServerSettings = frontend.settings
        self._clock: IReactorTime = frontend.clock
        self._stats: FrontendStats = frontend.stats
        self._newParser()
        self._clientAddress: IAddress | None = None
        self._serverAddress: IAddress | None = None
        # Requests: the one being answered, those waiting, the one whose
        # body is being read.
        self._current: ServerRequest | None = None
        self._queue: deque[ServerRequest] = deque()
        self._reading: ServerRequest | None = None
        self._processing = False
        # The head being parsed.
        self._parsing = False
        self._headSerial = 0
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._headSize = 0
        self._headRaw = 0
        # What stops the parser for good.
        self._stopped = False
        self._pendingRefusal: int | None = None
        self._upgradeRest: list[bytes] | None = None
        # Body bytes of the request being read that the channel reads itself
        # (an upgrade request with a Content-Length body, see _readRawBody).
        self._rawLeft = 0
        self._switched: IProtocol | None = None
        self._closing = False
        self._closed = False
        self._pauses = 0
        self._awaitingProxy = False
        self._proxyBuffer = b""
        # Timers.
        self._headTimer: IDelayedCall | None = None
        self._idleTimer: IDelayedCall | None = None
        self._idle = False
        self._idleSince = 0.0
        self._bodyTimer: IDelayedCall | None = None
        self._bodyLast = 0.0
        self._rateTimer: IDelayedCall | None = None
        self._rateStart = 0

    # Connection events

    def connectionMade(self) -> None:
        """
        Tell the frontend; wait for a PROXY header or the first request.
        """
        transport = self._transport = cast(_Transport, self.transport)
        self._writer = SocketWriter(transport, WriteBatch.forClock(self._clock))
        self._clientAddress = transport.getPeer()
        self._serverAddress = transport.getHost()
        self._awaitingProxy = self._settings.acceptProxy
        self._frontend.channelOpened(self)
        self._updateTimers()

    def dataReceived(self, data: bytes) -> None:
        """
        Parse C{data}; dispatch the requests it completes.
        """
        self._stats.received(len(data))
        if self._switched is not None:
            self._switched.dataReceived(data)
            return
        if self._stopped:
            if self._upgradeRest is not None:
                self._upgradeRest.append(data)
            return
        if self._awaitingProxy:
            data = self._proxyHeaderReceived(data)
            if not data:
                return
        # Activity: the idle time counts again from the next idle moment.
        self._idle = False
        if self._bodyTimer is not None:
            self._bodyLast = self._clock.seconds()
        try:
            self._feed(data)
        except _Stop:
            pass
        self._processQueue()

    def readConnectionLost(self) -> None:
        """
        The client will send nothing more: answer what it sent completely,
        then close.
        """
        switched = self._switched
        if switched is not None:
            if IHalfCloseableProtocol.providedBy(switched):
                switched.readConnectionLost()
            else:
                self._loseConnection()
            return
        self._closing = True
        if self._parsing or self._reading is not None or self._current is None:
            # Nothing complete left to answer.
            self._loseConnection()

    def writeConnectionLost(self) -> None:
        """
        Only a switched protocol half-closes the connection's write side.
        """
        switched = self._switched
        if switched is not None and IHalfCloseableProtocol.providedBy(switched):
            switched.writeConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Fail the request in progress; tell the frontend.
        """
        # The parser refers to this channel: a cycle that would keep the
        # transport and its buffers alive until the garbage collector runs.
        self._parser = None
        switched = self._switched
        if switched is not None:
            try:
                switched.connectionLost(reason)
            finally:
                self._frontend.channelClosed(self)
            return
        self._closed = True
        self._stopped = True
        self._cancelTimers()
        request = self._current
        self._current = None
        self._queue.clear()
        self._reading = None
        if request is not None and not request.done:
            if request.body is not None:
                request.body._fail("client closed the connection")
            request._over()
        self._frontend.channelClosed(self)

    # For the frontend

    def drain(self) -> None:
        """
        Close now if no request is in progress, else after the current
        response.
        """
        self._closing = True
        if (
            not self._parsing
            and self._current is None
            and not self._queue
            and self._reading is None
        ):
            self._loseConnection()

    def abortConnection(self) -> None:
        """
        Abort the connection at once.
        """
        self._closed = True
        self._stopped = True
        self._cancelTimers()
        self._writer.abortConnection()

    # The PROXY header

    def _proxyHeaderReceived(self, data: bytes) -> bytes:
        """
        @return: The bytes after the PROXY header once it is complete, else
            C{b""}.
        """
        buffer = self._proxyBuffer + data
        try:
            parsed = proxyheader.parseProxyHeader(buffer)
        except proxyheader.InvalidProxyHeader:
            _log.info(
                "client {peer} sent an invalid PROXY header", peer=self._clientAddress
            )
            self._loseConnection()
            return b""
        if parsed is None:
            self._proxyBuffer = buffer
            return b""
        info, rest = parsed
        self._proxyBuffer = b""
        self._awaitingProxy = False
        self._cancelHeadTimer()
        if info.source is not None:
            self._clientAddress = info.source
        if not rest:
            self._updateTimers()
        return rest

    # Parsing

    def _newParser(self) -> None:
        parser = self._parser = httptools.HttpRequestParser(self)
        # HTTP/1.2 and later minor versions are HTTP/1.1 (RFC 9112 section
        # 2.6); other versions are refused with 505 after parsing.
        parser.set_dangerous_leniencies(lenient_version=True)

    def _feed(self, data: bytes) -> None:
        """
        Parse C{data}: body bytes the channel reads itself, then the rest
        with llhttp.
        """
        while data:
            if self._rawLeft:
                data = self._readRawBody(data)
                if not data or self._stopped:
                    return
            data = self._feedParser(data)

    def _readRawBody(self, data: bytes) -> bytes:
        """
        Read the body of an upgrade request with a C{Content-Length} body,
        which llhttp skips: pass it on as L{on_body} does, and end it as
        L{on_message_complete} does.

        @return: The bytes after the body.
        """
        left = self._rawLeft
        if len(data) > left:
            data, rest = data[:left], data[left:]
        else:
            rest = b""
        self._rawLeft = left - len(data)
        try:
            self.on_body(data)
            if not self._rawLeft:
                self.on_message_complete()
        except _Stop:
            return b""
        return rest

    def _feedParser(self, data: bytes) -> bytes:
        """
        Feed C{data} to the parser, in pieces no longer than the head limit
        while a head may be in progress, so that llhttp never holds more of
        a head than allowed.

        @return: The bytes after the head of an upgrade request whose body
            the channel reads itself (to go on with a fresh parser), else
            C{b""}.
        """
        limit = self._settings.maxHeaderSize
        parser = self._parser
        assert parser is not None
        size = len(data)
        pieces: Sequence[bytes | memoryview]
        if size <= limit or self._reading is not None:
            pieces = (data,)
        else:
            view = memoryview(data)
            pieces = [view[start : start + limit] for start in range(0, size, limit)]
        index = -1
        for piece in pieces:
            index += 1
            if self._stopped:
                return b""
            serial = self._headSerial if self._parsing else -1
            try:
                parser.feed_data(piece)
            except httptools.HttpParserUpgrade as upgrade:
                offset = upgrade.args[0]
                rest = [bytes(piece[offset:])]
                rest.extend(bytes(p) for p in pieces[index + 1 :])
                if self._rawLeft:
                    # Not an upgrade after all: the body comes next, then
                    # the next request, for a parser that starts afresh.
                    self._newParser()
                    return b"".join(rest)
                self._upgraded(rest)
                return b""
            except httptools.HttpParserError as e:
                if self._stopped:
                    return b""
                if e.__context__ is not None and not isinstance(e.__context__, _Stop):
                    _log.failure(
                        "request processing failed",
                        Failure(e.__context__),
                    )
                self._malformed()
                return b""
            if self._parsing and serial == self._headSerial:
                self._headRaw += len(piece)
                if self._headRaw > limit:
                    self._refuse(431)
                    return b""
        return b""

    def on_message_begin(self) -> None:
        """
        A request head begins.
        """
        if self._stopped:
            raise _Stop()
        self._parsing = True
        self._headSerial += 1
        self._url = b""
        self._headers = []
        self._headSize = _REQUEST_LINE_OVERHEAD
        self._headRaw = 0

    def on_url(self, url: bytes) -> None:
        """
        Some bytes of the target (it may arrive in pieces).
        """
        self._url += url
        self._headSize += len(url)
        if len(self._url) > self._settings.maxTargetLength:
            self._refuseStop(414)
        if self._headSize > self._settings.maxHeaderSize:
            self._refuseStop(431)

    def on_header(self, name: bytes, value: bytes) -> None:
        """
        A field line (trailer fields are dropped).
        """
        if not self._parsing:
            return
        self._headSize += len(name) + len(value) + 4
        if self._headSize > self._settings.maxHeaderSize:
            self._refuseStop(431)
        self._headers.append((name, value.rstrip(b" \t")))

    def on_headers_complete(self) -> None:
        """
        Check the head; queue the request.
        """
        self._parsing = False
        parser = self._parser
        assert parser is not None
        method = parser.get_method()
        self._headSize += len(method)
        if self._headSize > self._settings.maxHeaderSize:
            self._refuseStop(431)
        if method == b"CONNECT":
            self._refuseStop(405)
        versionText = parser.get_http_version()
        if versionText == "1.1":
            version = b"HTTP/1.1"
        elif versionText == "1.0":
            version = b"HTTP/1.0"
        elif versionText[:2] == "1.":
            version = b"HTTP/1.1"
        else:
            self._refuseStop(505)

        headers = self._headers
        host: bytes | None = None
        hostIndex = -1
        transferEncoding: bytes | None = None
        contentLength: int | None = None
        tokens = _NO_TOKENS
        expectContinue = False
        for index, (name, value) in enumerate(headers):
            size = len(name)
            if size == 4:
                if name.lower() == b"host":
                    if host is not None:
                        self._refuseStop(400)
                    host = value
                    hostIndex = index
            elif size == 10:
                if name.lower() == b"connection":
                    tokens = tokens.union(
                        token
                        for token in (
                            t.strip(b" \t").lower() for t in value.split(b",")
                        )
                        if token
                    )
            elif size == 14:
                if name.lower() == b"content-length":
                    # llhttp checked it: digits, not repeated.
                    contentLength = int(value)
            elif size == 17:
                if name.lower() == b"transfer-encoding":
                    if transferEncoding is not None:
                        self._refuseStop(400)
                    transferEncoding = value
            elif size == 6:
                if name.lower() == b"expect":
                    expectContinue = value.lower() == b"100-continue"

        target = self._url
        if target[:1] == b"/":
            if _BAD_TARGET_BYTE.search(target) is not None:
                self._refuseStop(400)
        elif target == b"*":
            if method != b"OPTIONS":
                self._refuseStop(400)
        else:
            match = _ABSOLUTE_FORM.match(target)
            if match is None or _BAD_TARGET_BYTE.search(target) is not None:
                self._refuseStop(400)
            authority, rest = match.groups()
            if b"@" in authority or not validHost(authority):
                self._refuseStop(400)
            target = rest if rest[:1] == b"/" else b"/" + rest
            if hostIndex < 0:
                headers.append((b"Host", authority))
            else:
                headers[hostIndex] = (headers[hostIndex][0], authority)
            host = authority
        if host is None:
            if version == b"HTTP/1.1":
                self._refuseStop(400)
        elif not validHost(host):
            self._refuseStop(400)
        if transferEncoding is not None and (
            version != b"HTTP/1.1"
            or transferEncoding.strip(b" \t").lower() != b"chunked"
        ):
            self._refuseStop(400)
        upgrade = parser.should_upgrade()
        rawBody = False
        if upgrade and transferEncoding is not None:
            # llhttp does not read the body of an upgrade request, and the
            # channel reads only Content-Length bodies itself: a chunked body
            # on an upgrade request is rare, and refusing it is safe.
            self._refuseStop(400)
        if upgrade and contentLength:
            # Not a handshake the proxy tunnels (those have no body): an
            # ordinary request, whose body the channel reads itself after
            # llhttp stops at the end of the head.
            upgrade = False
            rawBody = True

        if version == b"HTTP/1.1":
            persistent = b"close" not in tokens
        else:
            persistent = b"keep-alive" in tokens
            expectContinue = False
        request = ServerRequest(
            self,
            method,
            target,
            version,
            headers,
            tokens,
            host,
            persistent,
            self._clock.seconds(),
        )
        limit = self._settings.maxBodySize
        routeHead = self._frontend.routeHead
        if routeHead is not None:
            routedLimit = routeHead(request)
            if routedLimit is not None:
                limit = routedLimit
        if contentLength is not None and contentLength > limit:
            self._refuseStop(413)
        if upgrade:
            request._upgrade = True
            request._persistent = False
        if transferEncoding is not None:
            request.body = RequestBody(self, request, None, limit)
            self._reading = request
        elif contentLength is not None:
            request.body = RequestBody(self, request, contentLength, limit)
            if contentLength:
                self._reading = request
                if rawBody:
                    self._rawLeft = contentLength
        if expectContinue:
            request._expectContinue = True
        self._queue.append(request)
        self._cancelHeadTimer()

    def on_body(self, data: bytes) -> None:
        """
        Body bytes of the request being read.
        """
        request = self._reading
        if request is None or request.done:
            return
        body = request.body
        assert body is not None
        if body.length is None and body.received + len(data) > body.limit:
            if request is self._current:
                self._failRequest(request, 413, "the body is over the limit")
                raise _Stop()
            self._refuseStop(413)
        body._data(data)

    def on_message_complete(self) -> None:
        """
        The request is complete; stop here if the connection ends after it.
        """
        if self._rawLeft:
            # llhttp ends an upgrade request at its head; the channel reads
            # the body and ends it.
            return
        request = self._reading
        if request is not None:
            self._reading = None
            if request.body is not None and not request.done:
                request.body._end()
        else:
            request = self._queue[-1] if self._queue else self._current
        if request is not None and not request._persistent and not request._upgrade:
            self._stopped = True
            raise _Stop()

    def _upgraded(self, rest: list[bytes]) -> None:
        """
        llhttp stopped after an upgrade request: keep the bytes after it
        and stop reading until the proxy decides.
        """
        self._stopped = True
        self._upgradeRest = rest
        self._pause(_PAUSED_QUEUE)

    def _malformed(self) -> None:
        """
        llhttp refused what it was given: 400 (or abort, if the response to
        the request whose body is malformed has started).
        """
        reading = self._reading
        if reading is not None and reading is self._current:
            self._failRequest(reading, 400, "malformed request body")
        else:
            self._refuse(400)

    # Refusals

    def _refuseStop(self, code: int) -> NoReturn:
        """
        Refuse the request being parsed and stop the parser.
        """
        self._refuse(code)
        raise _Stop()

    def _refuse(self, code: int) -> None:
        """
        Refuse a request that was not dispatched: at once, or after the
        responses to the requests before it.

        @param code: The status.
        """
        self._stopped = True
        self._parsing = False
        reading = self._reading
        if reading is not None and reading is not self._current:
            # A queued request whose body went wrong.
            self._reading = None
            try:
                self._queue.remove(reading)
            except ValueError:
                pass
        self._cancelHeadTimer()
        self._pendingRefusal = code
        if self._current is None and not self._queue:
            self._sendRefusal()

    def _sendRefusal(self) -> None:
        code = self._pendingRefusal
        assert code is not None
        self._pendingRefusal = None
        response = errorResponse(code)
        self._stats.sent(len(response))
        self._writer.write(response)
        assert self._clientAddress is not None
        self._frontend.refused(code, len(response), self._clientAddress)
        self._loseConnection()

    def _failRequest(self, request: ServerRequest, code: int, reason: str) -> None:
        """
        A dispatched request's body went wrong: its receiver is told, and
        the client gets C{code} if the response has not started, else the
        connection is aborted.
        """
        self._stopped = True
        if self._reading is request:
            self._reading = None
        if request.body is not None:
            request.body._fail(reason)
        if request.done:
            return
        if request.headSent:
            request.abort()
        else:
            request._persistent = False
            request.respondError(code)

    # Dispatching

    def _processQueue(self) -> None:
        """
        Dispatch the next request if none is being answered; pause reading
        while requests wait.
        """
        if self._processing:
            return
        queue = self._queue
        if queue and self._current is None:
            self._processing = True
            try:
                while self._current is None and queue and not self._closed:
                    request = queue.popleft()
                    self._current = request
                    try:
                        self._frontend.dispatch(request)
                    except Exception:
                        self._dispatchFailed(request)
            finally:
                self._processing = False
        if self._closed:
            return
        if self._current is None and self._pendingRefusal is not None:
            self._sendRefusal()
            return
        if self._queue:
            self._pause(_PAUSED_QUEUE)
        elif self._pauses and self._upgradeRest is None:
            self._resume(_PAUSED_QUEUE)
        self._updateTimers()

    def _dispatchFailed(self, request: ServerRequest) -> None:
        """
        The frontend raised while dispatching C{request} (a bug): log it and
        answer 502, or abort if the response had begun.
        """
        _log.failure("dispatching {request} failed", request=request)
        if not request.done:
            if request.headSent:
                request.abort()
            else:
                request.respondError(502)

    def _requestFinished(self, request: ServerRequest) -> None:
        """
        The response to C{request} is complete: go on with the next request
        or close.
        """
        keep = request._keepAlive and request.headSent
        if request is self._current:
            self._current = None
        request._over()
        if not keep:
            self._loseConnection()
            return
        if self._pauses:
            self._resume(_PAUSED_BODY)
        self._processQueue()

    def _abortRequest(self, request: ServerRequest) -> None:
        if request is self._current:
            self._current = None
        self.abortConnection()
        if request.body is not None:
            request.body._fail("the response was aborted")
        request._over()

    def _switchProtocols(
        self, request: ServerRequest, protocol: object
    ) -> tuple[object, bytes]:
        """
        Hand the connection to C{protocol}.
        """
        assert IProtocol.providedBy(protocol)
        transport = self._transport
        # What the channel still holds for the client goes before whatever
        # the protocol writes.
        self._writer.handOver()
        rest = b"".join(self._upgradeRest or ())
        self._upgradeRest = None
        self._switched = protocol
        self._stopped = True
        self._cancelTimers()
        if request is self._current:
            self._current = None
        # The proxy's producer stays registered: the tunnel owns it now.
        request._producer = None
        request._over()
        self._queue.clear()
        if self._pauses:
            self._pauses = 0
            transport.resumeProducing()
        return transport, rest

    # Writing

    def _write(self, request: ServerRequest, data: bytes) -> None:
        if self._closed:
            return
        self._stats.sent(len(data))
        self._writer.write(data)

    def _writeSequence(self, request: ServerRequest, parts: list[bytes]) -> None:
        if self._closed:
            return
        data = b"".join(parts)
        self._stats.sent(len(data))
        self._writer.write(data)

    def _writeContinue(self, request: ServerRequest) -> None:
        if self._closed or request.headSent:
            return
        self._stats.sent(len(_CONTINUE))
        self._writer.write(_CONTINUE)

    def _loseConnection(self) -> None:
        self._stopped = True
        self._closing = True
        self._cancelTimers()
        if not self._closed:
            self._closed = True
            self._writer.loseConnection()

    # Reading pauses

    def _pause(self, why: int) -> None:
        before = self._pauses
        self._pauses = before | why
        if not before and not self._closed:
            self._transport.pauseProducing()
            self._updateTimers()

    def _resume(self, why: int) -> None:
        before = self._pauses
        if not before & why:
            return
        self._pauses = before & ~why
        if not self._pauses and not self._closed:
            self._transport.resumeProducing()
            self._updateTimers()

    # Timers

    def _updateTimers(self) -> None:
        """
        Run the deadline the connection's state calls for, and only that.
        """
        if self._closed:
            return
        clock = self._clock
        active = not self._pauses and not self._stopped
        if active and (self._parsing or self._awaitingProxy):
            if self._headTimer is None:
                self._headTimer = clock.callLater(
                    self._settings.headerTimeout, self._headTimedOut
                )
        elif self._headTimer is not None:
            self._cancelHeadTimer()
        reading = self._reading
        if active and reading is not None and reading is self._current:
            if self._bodyTimer is None:
                self._startBodyTimers()
        elif self._bodyTimer is not None:
            self._cancelBodyTimers()
        idle = (
            active
            and not self._parsing
            and not self._awaitingProxy
            and reading is None
            and self._current is None
            and not self._queue
        )
        if idle and not self._idle:
            self._idleSince = clock.seconds()
            if self._idleTimer is None:
                self._idleTimer = clock.callLater(
                    self._settings.idleTimeout, self._idleTimedOut
                )
        self._idle = idle

    def _cancelHeadTimer(self) -> None:
        if self._headTimer is not None:
            self._headTimer.cancel()
            self._headTimer = None

    def _startBodyTimers(self) -> None:
        clock = self._clock
        self._bodyLast = clock.seconds()
        self._bodyTimer = clock.callLater(
            self._settings.bodyTimeout, self._bodyTimedOut
        )
        if self._settings.minBodyRate:
            reading = self._reading
            assert reading is not None and reading.body is not None
            self._rateStart = reading.body.received
            self._rateTimer = clock.callLater(_RATE_WINDOW, self._rateChecked)

    def _cancelBodyTimers(self) -> None:
        if self._bodyTimer is not None:
            self._bodyTimer.cancel()
            self._bodyTimer = None
        if self._rateTimer is not None:
            self._rateTimer.cancel()
            self._rateTimer = None

    def _cancelTimers(self) -> None:
        self._cancelHeadTimer()
        self._cancelBodyTimers()
        if self._idleTimer is not None:
            self._idleTimer.cancel()
            self._idleTimer = None
        self._idle = False

    def _headTimedOut(self) -> None:
        self._headTimer = None
        if self._awaitingProxy:
            _log.info(
                "client {peer} sent no PROXY header within {timeout}s",
                peer=self._clientAddress,
                timeout=self._settings.headerTimeout,
            )
            self._loseConnection()
            return
        _log.info(
            "client {peer} did not complete its request head within {timeout}s",
            peer=self._clientAddress,
            timeout=self._settings.headerTimeout,
        )
        self._refuse(408)

    def _idleTimedOut(self) -> None:
        self._idleTimer = None
        if not self._idle:
            return
        left = self._idleSince + self._settings.idleTimeout - self._clock.seconds()
        if left > 0:
            self._idleTimer = self._clock.callLater(left, self._idleTimedOut)
        else:
            self._loseConnection()

    def _bodyTimedOut(self) -> None:
        self._bodyTimer = None
        if self._reading is None:
            return
        left = self._bodyLast + self._settings.bodyTimeout - self._clock.seconds()
        if left > 0:
            self._bodyTimer = self._clock.callLater(left, self._bodyTimedOut)
            return
        self._bodyStalled("no body bytes within {}s".format(self._settings.bodyTimeout))

    def _rateChecked(self) -> None:
        self._rateTimer = None
        reading = self._reading
        if reading is None or reading.body is None:
            return
        received = reading.body.received
        if received - self._rateStart < self._settings.minBodyRate * _RATE_WINDOW:
            self._bodyStalled(
                "the body arrives slower than {} bytes/s".format(
                    self._settings.minBodyRate
                )
            )
            return
        self._rateStart = received
        self._rateTimer = self._clock.callLater(_RATE_WINDOW, self._rateChecked)

    def _bodyStalled(self, reason: str) -> None:
        reading = self._reading
        assert reading is not None
        _log.info(
            "client {peer} is too slow sending a body: {reason}",
            peer=self._clientAddress,
            reason=reason,
        )
        self._cancelBodyTimers()
        self._failRequest(reading, 408, reason)

