# -*- test-case-name: tests.test_http_server -*-
"""
The seams of lbtwist's HTTP data path.

  - L{IClientRequest}: what a proxy resource (L{lbtwist.web.ReverseProxyResource})
    needs from a client's request.  lbtwist's own channel
    (L{lbtwist._http.server}) provides it; L{lbtwist.web} adapts a stock
    C{twisted.web.server.Request} to it, so the same resource serves an
    embedding application's C{Site} (and later an HTTP/2 frontend).
  - L{IRequestBody} / L{IBodyReceiver}: a request body streamed as it
    arrives, with backpressure on the client's connection.
  - L{IResponseReceiver}: what an upstream connection
    (L{lbtwist._http.client}) tells about the response it reads.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

from zope.interface import Attribute, Interface

__all__ = [
    "IBodyReceiver",
    "IClientRequest",
    "IRequestBody",
    "IResponseReceiver",
    "ResponseHead",
]


class IBodyReceiver(Interface):
    """
    Receives a request body as it arrives from the client.
    """

    def bodyData(data: bytes) -> None:
        """
        More body bytes (decoded: chunked framing removed).
        """

    def bodyEnd() -> None:
        """
        The body is complete.
        """

    def bodyFailed(reason: str) -> None:
        """
        The body will not be complete: the client went away, sent a
        malformed chunk, went over the body limit or the body deadline.
        The request is over: its owner answers nothing more (the channel
        answers the client itself, or aborts the connection) and must
        release what it holds.

        @param reason: Why, for logs, e.g. C{"client closed the connection"}.
        """


class IRequestBody(Interface):
    """
    The body of a client's request, streamed as it arrives.

    It is a push producer over the client's connection: pausing it stops
    reading from the client.
    """

    length = Attribute(
        "The body's length from C{Content-Length} (an int, possibly 0), or "
        "None for a chunked body of unknown length."
    )

    def deliver(receiver: IBodyReceiver) -> None:
        """
        Deliver the body to C{receiver}: what has arrived already at once,
        the rest as it arrives.  Called at most once.  If the client asked
        for C{100-continue} and no body byte has arrived yet, the channel
        answers C{100 Continue} now.
        """

    def pauseProducing() -> None:
        """
        Stop reading the body from the client until resumed.
        """

    def resumeProducing() -> None:
        """
        Go on reading the body from the client.
        """

    def stopProducing() -> None:
        """
        The body is not wanted any more: what arrives is read and dropped
        (if the response is finished before the body, the channel closes the
        connection after the response).
        """


class IClientRequest(Interface):
    """
    One request from a client, as a proxy needs it, and the way to answer
    it.

    The response is sent with L{respond} (the head), L{write} (body bytes,
    framed by the channel) and L{finish}, or L{respondError} (one of
    lbtwist's short error pages), or cut off with L{abort}.  After the
    request is done (finished, aborted, or the client went away) every
    response method does nothing.
    """

    method = Attribute("The method, e.g. C{b'GET'}.")
    target = Attribute(
        "The request target in origin form (C{b'/p?q'}), or C{b'*'} for "
        "C{OPTIONS *}; an absolute-form target arrives here in origin form, "
        "its authority in the C{Host} field."
    )
    version = Attribute("C{b'HTTP/1.1'} or C{b'HTTP/1.0'}.")
    headers = Attribute(
        "The field lines, in order: a list of C{(name, value)} with names as "
        "sent and values without surrounding whitespace."
    )
    connectionTokens = Attribute(
        "The lower-cased options of every C{Connection} line (a frozenset)."
    )
    host = Attribute("The C{Host} field value, or None.")
    clientAddress = Attribute(
        "The client's address (an IAddress; from the PROXY header when the "
        "frontend accepts one)."
    )
    serverAddress = Attribute("The frontend's address the request came to.")
    secure = Attribute("Whether the request came over TLS.")
    started = Attribute("When the request head was complete (reactor seconds).")
    body = Attribute(
        "An L{IRequestBody}, or None if the request has no body (neither "
        "C{Content-Length} nor C{Transfer-Encoding})."
    )
    status = Attribute("The status sent, or None before the response head.")
    routed = Attribute(
        "What the frontend's routes decided for the request (a "
        "L{lbtwist.web.Routed}), or None when it has none or did not route "
        "it yet."
    )
    sentBytes = Attribute("Response body bytes sent to the client so far.")
    headSent = Attribute("Whether the response head has been sent.")
    done = Attribute("Whether the request is over (finished, aborted or gone).")

    def respond(
        status: int, reason: bytes, headers: list[tuple[bytes, bytes]], length: int | None
    ) -> None:
        """
        Send the response head.

        @param headers: End-to-end fields only (no C{Connection},
            C{Transfer-Encoding}, C{Content-Length}, C{Keep-Alive}): the
            channel adds the framing and persistence fields itself.
        @param length: The body's length if known: sent as
            C{Content-Length} (also for HEAD and 304 responses, which carry
            no body).  L{None}: chunked to an HTTP/1.1 client, delimited by
            closing the connection for HTTP/1.0.  No body is sent for HEAD,
            1xx, 204 and 304, whatever L{write} is given.
        """

    def write(data: bytes) -> None:
        """
        Send body bytes.
        """

    def finish() -> None:
        """
        The response is complete.
        """

    def flush() -> None:
        """
        Send what is held back now: the response head waits for the first
        body bytes (so that both leave in one write) until this, L{write},
        L{finish} or L{abort}.
        """

    def abort() -> None:
        """
        Cut the response off: abort the client's connection, so that the
        client sees the truncation.
        """

    def respondError(
        code: int,
        detail: str | None = None,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        """
        Answer with one of lbtwist's own short error pages (e.g. 502) and
        finish; does nothing if the head was already sent.

        @param code: The status.
        @param detail: A line of lbtwist's own words added to the page
            (see L{lbtwist._http.errors.errorBody}), or L{None}.
        @param headers: C{(name, value)} fields added to the page's (e.g.
            C{X-Request-ID}).
        """

    def registerProducer(producer: object) -> None:
        """
        Register a push producer (e.g. the backend connection) that is
        paused while the client reads slower than it produces.
        """

    def unregisterProducer() -> None:
        """
        Unregister the producer registered with L{registerProducer}.
        """

    def notifyDone(callback: object) -> None:
        """
        Call C{callback()} once when the request is over: the response
        finished, was aborted, or the client went away before.  Use
        L{done} and L{headSent} in it to tell which.  Callbacks added after
        the request is over are called at once.
        """

    def countSwitched(sent: int) -> None:
        """
        Count C{sent} bytes written to the client's connection after
        L{switchProtocols} by whoever took it over (the bytes it reads are
        counted by the channel itself).
        """

    def switchProtocols(protocol: object) -> tuple[object, bytes] | None:
        """
        Hand the client's connection over to C{protocol} (after a
        C{101 Switching Protocols} the caller writes itself): from now on
        every event of the connection (C{dataReceived},
        C{readConnectionLost}, C{writeConnectionLost}, C{connectionLost})
        goes to C{protocol}.  The request is over for the channel, but the
        connection counts as the frontend's until it closes.

        @return: The client's transport and the bytes received after the
            request head, or L{None} if this request cannot switch
            protocols (a stock twisted.web request).
        """


class ResponseHead(NamedTuple):
    """
    The head of a backend's response (a named tuple: one is made for every
    response, and a tuple is the cheapest immutable value to make).

    @ivar status: The status code.
    @ivar reason: The reason phrase.
    @ivar version: C{b"HTTP/1.1"} or C{b"HTTP/1.0"}.
    @ivar headers: All field lines as received, in order (names as sent,
        values stripped); the proxy applies the header policy.
    @ivar length: The body's length from C{Content-Length} (for HEAD and
        304 responses: the length they describe), or L{None} (chunked, or
        delimited by the end of the connection, or no C{Content-Length}).
    @ivar bodyExpected: Whether body bytes follow (C{False} for responses
        to HEAD, and for 1xx, 204 and 304).
    """

    status: int
    reason: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    length: int | None
    bodyExpected: bool


class IResponseReceiver(Interface):
    """
    Told about the response an upstream connection reads for one request.
    Exactly one of L{responseEnd} and L{responseFailed} is called, once.
    """

    def responseHead(head: ResponseHead) -> None:
        """
        The response head arrived (interim 1xx responses other than 101 are
        skipped).  After a 101, no body follows: the caller takes the
        connection over with C{UpstreamConnection.detach}, and neither
        L{responseEnd} nor L{responseFailed} is called.
        """

    def responseData(data: bytes) -> None:
        """
        Response body bytes (decoded: chunked framing removed).
        """

    def responseWaiting() -> None:
        """
        Everything read from the backend so far has been delivered; the rest
        of the body comes with later reads (a hint to send on what is held
        back, see L{IClientRequest.flush}).
        """

    def responseEnd() -> None:
        """
        The response is complete.
        """

    def responseFailed(failure: object) -> None:
        """
        The response will not be complete: an L{lbtwist.failures.UpstreamFailure}
        (connection lost, invalid response, response or read timeout).  Its
        C{responseStarted} says whether L{responseHead} was called.
        """
