# -*- test-case-name: tests.test_http_client -*-
"""
The upstream (backend-facing) HTTP/1.1 client: one keep-alive
L{ConnectionPool} per backend, and the L{UpstreamConnection}s it holds,
which read responses with llhttp (C{httptools.HttpResponseParser}).

The parser is strict where a proxy must be: a response with ambiguous
framing, a garbage status line, obsolete line folding, a transfer coding
other than C{chunked}, a control byte in a field value or a header section
over L{MAX_HEAD_SIZE} fails with an C{invalid_response}
L{UpstreamFailure}, and its connection is closed.  A connection returns to
its pool only after a complete, clean response: the backend keeps it alive,
the request body was completely sent, and nothing followed the response.

Each response gets a fresh parser: the response to a HEAD request and the
204 and 304 responses end with their head, whatever they announce (llhttp
would wait for the body a HEAD response's C{Content-Length} describes).
"""

from __future__ import annotations

from typing import Callable, NoReturn, Protocol as TypingProtocol, Sequence, cast

from httptools import HttpParserError, HttpResponseParser
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IProtocol,
    IPushProducer,
    IReactorTime,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from lbtwist._http.writer import SocketWriter, WriteBatch
from lbtwist._http.interfaces import IResponseReceiver, ResponseHead
from lbtwist.failures import (
    UpstreamFailure,
    classifyConnectFailure,
    classifyLostConnection,
)

__all__ = ["MAX_HEAD_SIZE", "ConnectionPool", "UpstreamConnection"]

_log = Logger()

MAX_HEAD_SIZE = 65536
"""
The longest response header section accepted, in bytes.
"""

# Connection states.
_READY = 0  # handed out by the pool, no request yet
_HEAD = 1  # request sent, waiting for the response head
_BODY = 2  # reading the response body
_IDLE = 3  # in the pool's idle list
_UPGRADED = 4  # a 101 head was delivered, waiting for detach()
_DETACHED = 5  # handed over to another protocol
_CLOSED = 6  # aborted, lost, or closing: never used again

# What the parser callbacks found during one feed_data() call.
_NOTHING = 0
_COMPLETE = 1  # the response is complete
_STRAY = 2  # the response is complete and more bytes followed it
_NOBODY = 3  # the head of a response without body is complete
_INVALID = 4  # the response is invalid (see _invalid)
_ABORTED = 5  # the receiver abandoned the request inside a callback

_VERSIONS = {"1.1": b"HTTP/1.1", "1.0": b"HTTP/1.0"}


class _Transport(TypingProtocol):
    """
    What a connection uses of its transport (a TCP or TLS transport).
    """

    def write(self, data: bytes) -> None: ...

    def writeSequence(self, data: Sequence[bytes]) -> None: ...

    def loseConnection(self) -> None: ...

    def abortConnection(self) -> None: ...

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...

    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...


class _Stop(Exception):
    """
    Raised inside a parser callback to stop the parser.
    """


def _isFinalStatus(status: int) -> bool:
    return status >= 200 or status == 101


@implementer(IPushProducer, IHalfCloseableProtocol)
class UpstreamConnection(Protocol):
    """
    One HTTP/1.1 connection to a backend, carrying one request at a time.

    Use: L{request} (the head), then L{writeBody} and L{endBody} (or
    L{endBody} alone for a request without body); the response is told to
    the L{IResponseReceiver}.  L{abort} abandons the request.

    It is a push producer over reading from the backend: the proxy registers
    it on the client's transport so that a client that reads slowly pauses
    reading from the backend.  Unregister it before the receiver's
    C{responseEnd} returns: by then the connection may already serve
    another request.

    @ivar reused: Whether this connection served a request before the
        current one.
    """

    reused = False
    _transport: _Transport

    def __init__(self, pool: ConnectionPool, attempt: _ConnectAttempt) -> None:
        self._pool = pool
        self._attempt: _ConnectAttempt | None = attempt
        self._clock = pool._clock
        self._state = _READY
        self._receiver: IResponseReceiver | None = None
        self._parser: HttpResponseParser | None = None
        self._timer: IDelayedCall | None = None
        self._timerAt = 0.0
        self._deadline = 0.0
        self._readTimeout = 0.0
        self._paused = False
        self._lostReason: Failure | None = None
        self._tunnel: IProtocol | None = None
        self._rest = b""
        self._producerRegistered = False
        self._resetRequest()

    def _resetRequest(self) -> None:
        self._head = True
        self._chunked = False
        self._bodyDone = False
        self._resetResponse()

    # Set before use for each response (_fail, the _NOBODY outcome, _feed).
    _invalid = ""
    _pendingHead: ResponseHead | None = None
    _chunk = b""

    def _resetResponse(self) -> None:
        """
        Forget what was read of a response head, for the next response.
        """
        self._outcome = _NOTHING
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._length: int | None = None
        self._codings: list[bytes] | None = None
        self._closeToken = False
        self._keepAliveToken = False
        self._keepAlive = False
        self._headSize = 0
        self._headTail = b""
        self._prefix = b""
        self._closeDelimited = False

    # Protocol

    def connectionMade(self) -> None:
        """
        Count the connection as open, or drop it if nobody waits for it any
        more (its connection attempt timed out).
        """
        self._transport = cast(_Transport, self.transport)
        self._writer = SocketWriter(self.transport, WriteBatch.forClock(self._clock))
        attempt, self._attempt = self._attempt, None
        if attempt is not None and attempt.abandoned:
            self._state = _CLOSED
            self._transport.abortConnection()
            return
        self._pool._opened(self)

    def dataReceived(self, data: bytes) -> None:
        """
        Parse response bytes; drop a connection that sends while idle.
        """
        state = self._state
        if state == _BODY or state == _HEAD:
            if state == _BODY:
                self._deadline = self._clock.seconds() + self._readTimeout
            self._feed(data)
            if self._state == _BODY:
                # The rest of the body comes with later reads.
                receiver = self._receiver
                if receiver is not None:
                    receiver.responseWaiting()
        elif state == _DETACHED:
            assert self._tunnel is not None
            self._tunnel.dataReceived(data)
        elif state == _UPGRADED:
            self._rest += data
        elif state == _IDLE or state == _READY:
            # Nothing was asked: the framing of this connection cannot be
            # trusted any more.
            self._close()

    def readConnectionLost(self) -> None:
        """
        The backend half-closed: close the connection (or tell the protocol
        the connection was handed over to).
        """
        if self._state == _DETACHED:
            tunnel = self._tunnel
            half = IHalfCloseableProtocol(tunnel, None)
            if half is not None:
                half.readConnectionLost()
            else:
                self._transport.loseConnection()
            return
        self._writer.loseConnection()

    def writeConnectionLost(self) -> None:
        """
        Our write side was closed: only of interest to the protocol the
        connection was handed over to.
        """
        if self._state == _DETACHED:
            half = IHalfCloseableProtocol(self._tunnel, None)
            if half is not None:
                half.writeConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        End or fail the current response, and leave the pool.
        """
        state = self._state
        self._state = _CLOSED
        self._lostReason = reason
        # The parser refers to this protocol: a cycle that would keep the
        # transport and its buffers alive until the garbage collector runs.
        self._parser = None
        self._cancelTimer()
        self._pool._connectionLost(self)
        if state == _DETACHED:
            assert self._tunnel is not None
            self._tunnel.connectionLost(reason)
            return
        receiver = self._receiver
        self._receiver = None
        if receiver is None or state == _UPGRADED:
            return
        if state == _HEAD:
            receiver.responseFailed(classifyLostConnection(reason, False))
        elif self._closeDelimited and reason.check(ConnectionDone):
            receiver.responseEnd()
        else:
            receiver.responseFailed(classifyLostConnection(reason, True))

    # The request

    def request(
        self,
        head: Sequence[bytes],
        method: bytes,
        chunked: bool,
        receiver: IResponseReceiver,
        responseTimeout: float,
        readTimeout: float,
    ) -> None:
        """
        Send a request head; the response is told to C{receiver}.

        If the connection was lost already, C{receiver.responseFailed} is
        called before this returns.

        @param head: The request line and field lines, each ending with
            C{b"\\r\\n"}, and the empty line.
        @param method: The request method (C{HEAD} responses have no body).
        @param chunked: Whether L{writeBody} frames the body as chunks.
        @param responseTimeout: Seconds allowed until the response head is
            complete.
        @param readTimeout: The longest pause, in seconds, between body
            bytes of the response (not counting time paused).
        """
        if self._state != _READY:
            reason = self._lostReason or Failure(ConnectionDone())
            receiver.responseFailed(classifyLostConnection(reason, False))
            return
        self._state = _HEAD
        self._receiver = receiver
        self._resetRequest()
        self._head = method == b"HEAD"
        self._chunked = chunked
        self._readTimeout = readTimeout
        if self._head or self._parser is None:
            # A HEAD response gets a parser of its own, never reused
            # (httptools issue #47); else the parser the last complete
            # response left ready serves this one.
            self._parser = HttpResponseParser(self)
        self._writer.write(b"".join(head))
        self._arm(responseTimeout)

    def writeBody(self, data: bytes) -> None:
        """
        Send request body bytes (as one chunk if the body is chunked).
        """
        if self._state >= _IDLE or not data:
            return
        if self._chunked:
            self._writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self._writer.write(data)

    def endBody(self) -> None:
        """
        The request body is complete (sends the last chunk if chunked).
        """
        if self._bodyDone:
            return
        self._bodyDone = True
        if self._chunked and self._state < _IDLE:
            self._writer.write(b"0\r\n\r\n")

    def registerBodyProducer(self, producer: IPushProducer) -> None:
        """
        Register the request body's producer on the backend's transport, so
        that a backend that reads slowly pauses it.
        """
        if self._producerRegistered or self._state >= _IDLE:
            return
        self._producerRegistered = True
        self._transport.registerProducer(producer, True)

    def unregisterBodyProducer(self) -> None:
        """
        Unregister the producer registered with L{registerBodyProducer}.
        """
        if self._producerRegistered:
            self._producerRegistered = False
            self._transport.unregisterProducer()

    def abort(self) -> None:
        """
        Abandon the request: abort the connection; the receiver is told
        nothing more.

        Does nothing once the response ended (the connection may be idle in
        its pool already) or after L{detach}.
        """
        if self._state == _IDLE or self._state == _DETACHED:
            return
        self._receiver = None
        self._abort()

    def detach(self, protocol: IProtocol) -> tuple[ITransport, bytes]:
        """
        Hand the connection over to C{protocol} after a 101 response: every
        later event of the connection goes to it.

        @return: The transport (reading, not paused) and the bytes received
            after the 101 head.
        """
        if self._state != _UPGRADED:
            raise RuntimeError("only a connection switching protocols can detach")
        self._state = _DETACHED
        self._tunnel = protocol
        # The request head (held until the end of the round) goes before
        # whatever the protocol writes.
        self._writer.handOver()
        self._pool._lost(self)
        rest, self._rest = self._rest, b""
        if self._paused:
            self._paused = False
            self._transport.resumeProducing()
        transport = self.transport
        assert transport is not None
        return transport, rest

    # IPushProducer: reading from the backend

    def pauseProducing(self) -> None:
        """
        Stop reading from the backend; the read timeout is suspended.
        """
        if not self._paused and self._state < _IDLE:
            self._paused = True
            self._transport.pauseProducing()

    def resumeProducing(self) -> None:
        """
        Read from the backend again.
        """
        if self._paused:
            self._paused = False
            self._transport.resumeProducing()
            if self._state == _BODY:
                self._arm(self._readTimeout)

    def stopProducing(self) -> None:
        """
        The consumer is gone: abandon the request (see L{abort}).
        """
        self.abort()

    # The parser's callbacks

    def on_message_begin(self) -> None:
        if self._outcome == _COMPLETE:
            # Bytes after a complete response in the same read.
            self._outcome = _STRAY
            raise _Stop()

    def on_status(self, reason: bytes) -> None:
        self._reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._state != _HEAD:
            # A trailer field (llhttp checked its syntax): dropped.
            return
        value = value.strip(b" \t")
        self._headers.append((name, value))
        size = len(name)
        if size == 14:
            if name.lower() == b"content-length":
                # llhttp refuses a second Content-Length and any non-digit.
                if not value.isdigit():
                    self._fail("bad Content-Length")
                self._length = int(value)
        elif size == 17:
            if name.lower() == b"transfer-encoding":
                if self._codings is None:
                    self._codings = [value]
                else:
                    self._codings.append(value)
        elif size == 10:
            if name.lower() == b"connection":
                for token in value.lower().split(b","):
                    token = token.strip()
                    if token == b"close":
                        self._closeToken = True
                    elif token == b"keep-alive":
                        self._keepAliveToken = True
        # llhttp refuses control bytes other than HTAB in field values.

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        if self._headSize > MAX_HEAD_SIZE and (
            self._headSize - len(self._chunk) + self._headEnd(self._chunk)
            > MAX_HEAD_SIZE
        ):
            self._fail("header section too large")
        version = _VERSIONS.get(parser.get_http_version())
        if version is None:
            self._fail("unsupported HTTP version")
        codings = self._codings
        if codings:
            if len(codings) != 1 or codings[0].lower() != b"chunked":
                self._fail("unsupported transfer coding")
        status: int = parser.get_status_code()
        bodyExpected = not (
            self._head or status < 200 or status == 204 or status == 304
        )
        head = ResponseHead(
            status,
            self._reason,
            version,
            self._headers,
            self._length,
            bodyExpected,
        )
        if not bodyExpected:
            # llhttp's should_keep_alive() would want the end of the
            # connection for a HEAD response without Content-Length.
            self._keepAlive = not self._closeToken and (
                version == b"HTTP/1.1" or self._keepAliveToken
            )
            self._pendingHead = head
            self._outcome = _NOBODY
            raise _Stop()
        receiver = self._receiver
        assert receiver is not None
        self._closeDelimited = self._length is None and not codings
        # The read timeout starts after this read (see _feed): a small
        # response is complete before.
        self._state = _BODY
        receiver.responseHead(head)
        if self._receiver is None:
            self._outcome = _ABORTED
            raise _Stop()

    def on_body(self, data: bytes) -> None:
        receiver = self._receiver
        if receiver is None:
            self._outcome = _ABORTED
            raise _Stop()
        receiver.responseData(data)

    def on_message_complete(self) -> None:
        if self._receiver is None:
            self._outcome = _ABORTED
            raise _Stop()
        parser = self._parser
        assert parser is not None
        self._keepAlive = parser.should_keep_alive() and not self._closeToken
        self._outcome = _COMPLETE

    # Internals

    def _fail(self, what: str) -> NoReturn:
        """
        Stop the parser: the response is invalid.
        """
        self._invalid = what
        self._outcome = _INVALID
        raise _Stop()

    def _headEnd(self, data: bytes) -> int:
        """
        Where the response head being parsed ends in C{data}, the latest
        bytes fed (llhttp requires CRLF line ends, and the message starts
        with C{HTTP/}: the head ends at the first empty line).
        """
        tail = self._headTail
        return (tail + data).find(b"\r\n\r\n") + 4 - len(tail)

    def _feed(self, data: bytes) -> None:
        """
        Feed C{data} to the parser and act on what it found.
        """
        while True:
            inHead = self._state == _HEAD
            if inHead:
                size = self._headSize
                if size < 5 and not (size == 0 and data.startswith(b"HTTP/")):
                    # llhttp also knows RTSP/ and ICE/, and skips empty lines
                    # before the status line; neither is HTTP.
                    prefix = (self._prefix + data)[:5]
                    self._prefix = prefix
                    if not b"HTTP/".startswith(prefix):
                        self._invalidResponse("bad status line")
                        return
                self._headSize = size + len(data)
                self._chunk = data
            parser = self._parser
            assert parser is not None
            error: HttpParserError | None = None
            try:
                parser.feed_data(data)
            except HttpParserError as e:
                error = e
            outcome = self._outcome
            if outcome == _NOTHING:
                if error is not None:
                    context = error.__context__
                    if context is not None and not isinstance(context, _Stop):
                        # A receiver raised inside a callback.
                        _log.failure(
                            "response receiver failed",
                            Failure(context, type(context), context.__traceback__),
                        )
                        self._invalidResponse("internal error")
                        return
                    self._invalidResponse(str(error).lower() or "parse error")
                elif not inHead:
                    return
                elif self._state == _BODY:
                    # The head arrived in this read, the body goes on.
                    self._arm(self._readTimeout)
                elif self._headSize > MAX_HEAD_SIZE:
                    self._invalidResponse("header section too large")
                else:
                    self._headTail = (self._headTail + data)[-3:]
                return
            if outcome == _COMPLETE:
                self._complete(error is not None)
            elif outcome == _STRAY:
                self._complete(True)
            elif outcome == _INVALID:
                self._invalidResponse(self._invalid)
            elif outcome == _NOBODY:
                head = self._pendingHead
                assert head is not None
                rest = data[self._headEnd(data) :]
                status = head.status
                if status == 101:
                    self._upgraded(head, rest)
                elif status < 200:
                    # An interim response: skipped; a fresh parser for what
                    # follows.
                    self._resetResponse()
                    self._parser = HttpResponseParser(self)
                    if rest:
                        data = rest
                        continue
                else:
                    self._state = _BODY
                    receiver = self._receiver
                    assert receiver is not None
                    receiver.responseHead(head)
                    if self._receiver is not None:
                        self._complete(bool(rest))
            # _ABORTED: nothing more to do.
            return

    def _upgraded(self, head: ResponseHead, rest: bytes) -> None:
        """
        Deliver a 101 head; the caller takes the connection over with
        L{detach}.
        """
        self._state = _UPGRADED
        self._rest = rest
        self._cancelTimer()
        receiver, self._receiver = self._receiver, None
        self._parser = None
        assert receiver is not None
        receiver.responseHead(head)

    def _complete(self, stray: bool) -> None:
        """
        The response is complete: return the connection to the pool if it
        can be reused, then tell the receiver.
        """
        receiver = self._receiver
        assert receiver is not None
        self._receiver = None
        if stray or self._head or self._outcome != _COMPLETE:
            # The parser was stopped inside a callback, or was made for a
            # HEAD request: the next response needs a fresh one.  (Else
            # llhttp is ready for the next response on this connection.)
            self._parser = None
        if self._paused:
            self._paused = False
            self._transport.resumeProducing()
        if self._producerRegistered:
            self._producerRegistered = False
            self._transport.unregisterProducer()
        if (
            self._keepAlive
            and self._bodyDone
            and not stray
            and not self._closeToken
            and self._pool._release(self)
        ):
            self._state = _IDLE
        else:
            self._cancelTimer()
            self._state = _CLOSED
            self._parser = None
            if self._bodyDone:
                self._writer.loseConnection()
            else:
                self._writer.abortConnection()
        receiver.responseEnd()

    def _invalidResponse(self, what: str) -> None:
        """
        Fail the response as invalid and abort the connection.
        """
        receiver = self._receiver
        responseStarted = self._state == _BODY
        self._receiver = None
        self._abort()
        if receiver is not None:
            receiver.responseFailed(
                UpstreamFailure(
                    "invalid_response", f"invalid response: {what}", responseStarted
                )
            )

    def _abort(self) -> None:
        """
        Abort the connection, never to be used again.
        """
        if self._state == _CLOSED:
            return
        self._state = _CLOSED
        self._parser = None
        self._cancelTimer()
        self._pool._lost(self)
        self._writer.abortConnection()

    def _close(self) -> None:
        """
        Close an unused connection.
        """
        self._state = _CLOSED
        self._cancelTimer()
        self._pool._lost(self)
        self._writer.loseConnection()

    def _activate(self) -> None:
        """
        Leave the idle list to serve a request (the timer stays: it does
        nothing in this state, and request() moves its deadline).
        """
        self._state = _READY
        self.reused = True

    def _idle(self, timeout: float) -> None:
        """
        Wait in the pool's idle list, at most C{timeout} seconds.
        """
        self._state = _IDLE
        self._arm(timeout)

    # Timers: one per connection, for the deadline of its state (response,
    # read or idle timeout).  A deadline moved later does not reschedule the
    # timer: when it fires early it is rescheduled, so that a connection
    # reused in a steady flow of requests does not call callLater each time.

    def _arm(self, delay: float) -> None:
        """
        Set the deadline of the connection's state to C{delay} from now.
        """
        deadline = self._clock.seconds() + delay
        self._deadline = deadline
        timer = self._timer
        if timer is None or self._timerAt > deadline:
            if timer is not None:
                timer.cancel()
            self._timerAt = deadline
            self._timer = self._clock.callLater(delay, self._timedOut)

    def _cancelTimer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _timedOut(self) -> None:
        self._timer = None
        state = self._state
        if state == _READY or state == _UPGRADED or (state == _BODY and self._paused):
            # No deadline now; resumeProducing() sets the read deadline again.
            return
        left = self._deadline - self._clock.seconds()
        if left > 0:
            self._timerAt = self._deadline
            self._timer = self._clock.callLater(left, self._timedOut)
            return
        if state == _IDLE:
            self._close()
            return
        receiver, self._receiver = self._receiver, None
        self._abort()
        if receiver is None:
            return
        if state == _HEAD:
            receiver.responseFailed(
                UpstreamFailure("response_timeout", "response timeout")
            )
        else:
            receiver.responseFailed(
                UpstreamFailure(
                    "read_timeout",
                    f"backend sent nothing for {self._readTimeout:g} s in the body",
                    True,
                )
            )


class _ConnectAttempt(Factory):
    """
    Builds the L{UpstreamConnection} of one connection attempt.

    @ivar abandoned: Whether the attempt failed or timed out: a connection
        made after that is aborted at once.
    """

    noisy = False

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self.abandoned = False

    def buildProtocol(self, addr: object) -> UpstreamConnection:
        return UpstreamConnection(self._pool, self)

    def connected(self, connection: UpstreamConnection) -> UpstreamConnection:
        return connection

    def failed(self, failure: Failure) -> Failure:
        self.abandoned = True
        return Failure(classifyConnectFailure(failure))


class _Closing:
    """
    Waits for some connections to close, with a deadline.
    """

    def __init__(
        self,
        connections: list[UpstreamConnection],
        clock: IReactorTime,
        timeout: float,
        done: Callable[[_Closing], None],
    ) -> None:
        self.remaining = set(connections)
        self.deferred: Deferred[None] = Deferred()
        self._done = done
        self._timer = clock.callLater(timeout, self._expired)

    def lost(self, connection: UpstreamConnection) -> None:
        self.remaining.discard(connection)
        if not self.remaining:
            self._timer.cancel()
            self._finish()

    def _expired(self) -> None:
        remaining, self.remaining = self.remaining, set()
        for connection in remaining:
            connection._transport.abortConnection()
        self._finish()

    def _finish(self) -> None:
        self._done(self)
        self.deferred.callback(None)


class ConnectionPool:
    """
    The keep-alive connections to one backend.

    @cvar closeTimeout: Seconds allowed for idle connections to close in
        L{closeIdle} before they are aborted.
    """

    closeTimeout = 5.0

    def __init__(
        self,
        clock: IReactorTime,
        endpoint: IStreamClientEndpoint,
        maxIdle: int,
        idleTimeout: float,
        connectTimeout: float,
    ) -> None:
        """
        @param clock: The reactor's time.
        @param endpoint: Connects to the backend (TLS included).
        @param maxIdle: Idle connections kept at most (0: never reuse).
        @param idleTimeout: Seconds an idle connection is kept.
        @param connectTimeout: Seconds allowed for a new connection.
        """
        self._clock = clock
        self._endpoint = endpoint
        self._maxIdle = maxIdle
        self._idleTimeout = idleTimeout
        self._connectTimeout = connectTimeout
        self._idleConnections: list[UpstreamConnection] = []
        self._open: set[UpstreamConnection] = set()
        self._closings: list[_Closing] = []
        self._closed = False

    def idleConnection(self) -> UpstreamConnection | None:
        """
        The most recently idled connection, ready for a request, if there is
        one (the fast path of L{connect}, without a L{Deferred}).
        """
        idle = self._idleConnections
        if not idle:
            return None
        connection = idle.pop()
        connection._activate()
        return connection

    def connect(self, fresh: bool = False) -> Deferred[UpstreamConnection]:
        """
        A connection for one request: the most recently idled one, or a new
        one.

        @param fresh: Whether to make a new connection whatever is idle
            (e.g. to retry after a reused connection failed).
        @return: A L{Deferred} firing with the connection, or failing with
            an L{UpstreamFailure} (C{connect_refused}, C{connect_timeout},
            C{connect_error}).
        """
        idle = self._idleConnections
        if idle and not fresh:
            connection = idle.pop()
            connection._activate()
            return succeed(connection)
        attempt = _ConnectAttempt(self)
        d = cast(
            "Deferred[UpstreamConnection]", self._endpoint.connect(attempt)
        )
        d.addTimeout(self._connectTimeout, self._clock)
        return d.addCallbacks(attempt.connected, attempt.failed)

    def idleCount(self) -> int:
        """
        @return: The number of idle connections.
        """
        return len(self._idleConnections)

    def openCount(self) -> int:
        """
        @return: The number of open connections, idle or in use (not
            counting connections handed over with C{detach}).
        """
        return len(self._open)

    def closeIdle(self) -> Deferred[None]:
        """
        Close the idle connections.

        @return: A L{Deferred} firing when they are closed (aborting those
            still open after L{closeTimeout}).
        """
        idle, self._idleConnections = self._idleConnections, []
        if not idle:
            return succeed(None)
        closing = _Closing(idle, self._clock, self.closeTimeout, self._closings.remove)
        self._closings.append(closing)
        for connection in idle:
            connection._close()
        return closing.deferred

    def close(self) -> Deferred[None]:
        """
        Close the idle connections; connections in use close after their
        current response instead of becoming idle.

        @return: See L{closeIdle}.
        """
        self._closed = True
        return self.closeIdle()

    # Called by the connections

    def _opened(self, connection: UpstreamConnection) -> None:
        self._open.add(connection)

    def _release(self, connection: UpstreamConnection) -> bool:
        """
        A connection finished a response cleanly: keep it idle if there is
        room.

        @return: Whether it is kept.
        """
        if self._closed or self._maxIdle <= 0 or connection not in self._open:
            return False
        idle = self._idleConnections
        if len(idle) >= self._maxIdle:
            idle.pop(0)._close()
        idle.append(connection)
        connection._idle(self._idleTimeout)
        return True

    def _lost(self, connection: UpstreamConnection) -> None:
        """
        A connection is closing, or was handed over: it is not the pool's
        any more.
        """
        self._open.discard(connection)
        try:
            self._idleConnections.remove(connection)
        except ValueError:
            pass

    def _connectionLost(self, connection: UpstreamConnection) -> None:
        """
        A connection is closed.
        """
        self._lost(connection)
        for closing in self._closings[:]:
            closing.lost(connection)
