# -*- test-case-name: tests.test_web -*-
"""
The HTTP (L7) proxy as twisted.web resources.

A frontend serves a L{PoolResource} at its root: for each request it asks
its L{BackendPool} for a backend and forwards the request there, retrying
on others as the rules allow; a L{ReverseProxyResource} forwards to one
backend only.  Both take any request providing
L{lbtwist._http.interfaces.IClientRequest} (lbtwist's own channel) or a
stock C{twisted.web.server.Request} (an application embedding lbtwist in
its own C{Site}), and forward it over lbtwist's upstream connections
(L{lbtwist._http.client}):

  - the request head goes upstream with the header policy of
    L{lbtwist._http.headers}, the body streams as it arrives, and up to the
    pool's C{retry_buffer} bytes of it are kept so that a retry can send it
    again;
  - the response streams back with backpressure both ways; a response cut
    short aborts the client's connection;
  - a GET WebSocket handshake answered with 101 becomes a raw L{Tunnel}.

Which failures are retried is decided by L{lbtwist.attempts.Attempts}; the
backend's in-flight count is held by its L{lbtwist.attempts.Lease}.
"""

from __future__ import annotations

import os
import re
from functools import partial
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Collection,
    Mapping,
    Protocol,
    Sequence,
    cast,
)

from attrs import frozen

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IPushProducer, IReactorTime, ITCPTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from zope.interface import implementer

from lbtwist._http.client import ConnectionPool, UpstreamConnection
from lbtwist._http.errors import errorBody
from lbtwist._http.headers import (
    IDEMPOTENT_METHODS,
    RESPONSE_HOP_BY_HOP,
    VIA,
    ForwardingPolicy,
    connectionTokens,
    requestHead,
    responseHeaders,
    websocketUpgrade,
)
from lbtwist._http.interfaces import (
    IBodyReceiver,
    IClientRequest,
    IRequestBody,
    IResponseReceiver,
    ResponseHead,
)
from lbtwist._http.server import ServerRequest
from lbtwist.attempts import Attempts, Lease
from lbtwist.backend import Backend
from lbtwist.config import FrontendConfig, HeaderRules, PoolConfig, RouteConfig
from lbtwist.endpoints import backendEndpoint
from lbtwist.failures import UpstreamFailure, classifyConnectFailure
from lbtwist.hashkey import keyReader
from lbtwist.headerrules import REQUEST_ID, CompiledRules, compileRules, requestID
from lbtwist.pool import BackendPool
from lbtwist.routing import InvalidPath, Route, Router, hostName, strippedTarget
from lbtwist.sticky import StickyCookie
from lbtwist.strategies import Choice
from lbtwist.tunnel import Tunnel, TunnelTotals

if TYPE_CHECKING:
    from twisted.web import server

__all__ = [
    "BackendConnections",
    "ForwardingPolicy",
    "PoolResource",
    "RequestRecorder",
    "ReverseProxyResource",
    "Routed",
    "RoutedResource",
    "StockRequest",
]

_log = Logger()

_OPTIONS_ALLOW = b"GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH"


class RequestRecorder(Protocol):
    """
    Told once about every request a proxy resource is done with (for the
    access log and the frontend's counters).
    """

    def __call__(
        self,
        request: IClientRequest,
        backend: str | None,
        attempts: int,
        retryReasons: tuple[str, ...],
        status: int,
        sentBytes: int,
        strategy: str | None = None,
        choice: Choice | None = None,
    ) -> None:
        """
        @param request: The request.
        @param backend: The name of the backend that answered last, if any.
        @param attempts: How many backends were tried.
        @param retryReasons: Why each retry was made, or not made.
        @param strategy: The pool's strategy.
        @param choice: The last backend tried, as chosen (with why).
        @param status: The status sent (0 if none was).
        @param sentBytes: The bytes sent to the client.
        """


class _What:
    """
    A request's method and target for logs, decoded only when logged.
    """

    __slots__ = ("_method", "_target")

    def __init__(self, method: bytes, target: bytes) -> None:
        self._method = method
        self._target = target

    def __str__(self) -> str:
        return "%s %s" % (
            self._method.decode("ascii", "replace"),
            self._target.decode("ascii", "replace")[:200],
        )


@implementer(IBodyReceiver, IPushProducer)
class _ReplayBody:
    """
    Streams a request body to the current attempt's upstream connection and
    keeps up to C{limit} bytes of it, so that a retry can send it again.

    It is also the push producer registered on the upstream connection (a
    backend that reads slowly pauses reading from the client); a lost
    upstream connection's C{stopProducing} is ignored, since another
    attempt may still want the body.
    """

    __slots__ = (
        "_body",
        "_limit",
        "_forward",
        "_chunks",
        "_size",
        "_target",
        "_delivering",
        "_waiting",
        "overflowed",
        "ended",
        "length",
    )

    def __init__(self, body: IRequestBody, limit: int, forward: _Forward) -> None:
        self._body = body
        self._limit = limit
        self._forward = forward
        self._chunks: list[bytes] = []
        self._size = 0
        self._target: UpstreamConnection | None = None
        self._delivering = False
        self._waiting = False
        self.overflowed = False
        self.ended = False
        self.length: int | None = body.length

    @property
    def started(self) -> bool:
        """
        Whether some of the body was handed to an upstream connection.
        """
        return self._delivering

    def notReplayable(self) -> str | None:
        """
        @return: Why the body cannot be sent again, or L{None} if it can.
        """
        if self.overflowed:
            return f"body larger than retry_buffer ({self._limit} bytes)"
        return None

    def attach(self, connection: UpstreamConnection) -> None:
        """
        Send the body to C{connection}: what is kept first, the rest as it
        arrives.
        """
        self._target = connection
        if not self._delivering:
            self._delivering = True
            connection.registerBodyProducer(self)
            self._body.deliver(self)
            if self._waiting:
                self._waiting = False
                self._body.resumeProducing()
            return
        for chunk in self._chunks:
            connection.writeBody(chunk)
        if self.ended:
            connection.endBody()
        else:
            connection.registerBodyProducer(self)
            self._body.resumeProducing()

    def hold(self) -> None:
        """
        The request waits in its pool's queue before its first attempt:
        stop reading the client, so that no body piles up meanwhile.
        """
        if not self._delivering and not self.ended:
            self._waiting = True
            self._body.pauseProducing()

    def detach(self) -> None:
        """
        The current attempt failed: stop sending, and stop reading the
        client until the next attempt is connected.
        """
        if self._target is not None:
            self._target = None
            if not self.ended:
                self._body.pauseProducing()

    def stop(self) -> None:
        """
        The body is not wanted any more.
        """
        self._target = None
        if not self.ended:
            self._body.stopProducing()

    # IBodyReceiver

    def bodyData(self, data: bytes) -> None:
        if not self.overflowed:
            self._size += len(data)
            if self._size > self._limit:
                self.overflowed = True
                self._chunks = []
            else:
                self._chunks.append(data)
        if self._target is not None:
            self._target.writeBody(data)

    def bodyEnd(self) -> None:
        self.ended = True
        target = self._target
        if target is not None:
            target.unregisterBodyProducer()
            target.endBody()

    def bodyFailed(self, reason: str) -> None:
        self._target = None
        self._forward.clientBodyFailed(reason)

    # IPushProducer, for the upstream connection's transport

    def pauseProducing(self) -> None:
        self._body.pauseProducing()

    def resumeProducing(self) -> None:
        self._body.resumeProducing()

    def stopProducing(self) -> None:
        """
        The upstream connection is gone; the L{_Forward} decides what
        happens to the body.
        """


@implementer(IResponseReceiver)
class _Forward:
    """
    Forwards one client request: makes attempts on backends until one
    answers (or none is left), relays the response, and cleans up exactly
    once when the request is over.
    """

    def __init__(
        self,
        proxy: _ProxyResource,
        request: IClientRequest,
        routed: Routed | None = None,
    ) -> None:
        self._proxy = proxy
        self._request = request
        self._routed = routed
        target = request.target
        self._rules: tuple[frozenset[bytes], list[tuple[bytes, bytes]]] | None = None
        if routed is not None:
            target = routed.target
            rules = routed.destination.requestRules
            if rules is not None:
                self._rules = (rules.drop, rules.render(routed.values(request)))
        config = proxy.config
        method = request.method
        sticky = proxy.sticky
        self._stuckTo = None if sticky is None else sticky.read(request.headers)
        self._attempts = Attempts(
            proxy.clock,
            # Not a method of this object: that would make a reference
            # cycle, left for the garbage collector after every request.
            partial(proxy.choose, request, self._stuckTo),
            proxy.retries,
            _What(method, target),  # type: ignore[arg-type]
            proxy.pool,
        )
        self._lease: Lease | None = None
        self._connection: UpstreamConnection | None = None
        self._pending: Any = None
        self._committed = False
        self._producing = False
        self._over = False
        self._tunnelled = False
        self._status = 0
        body = request.body
        self._body = (
            None if body is None else _ReplayBody(body, config.retry_buffer, self)
        )
        self._idempotent = method in IDEMPOTENT_METHODS
        tokens = request.connectionTokens
        self._upgrade = (
            websocketUpgrade(
                method, request.version, tokens, request.headers, body is not None
            )
            if tokens and isinstance(request, ServerRequest)
            else None
        )
        self._target = target
        self._head: list[bytes] | None = None
        request.notifyDone(self._done)

    # Attempts

    def start(self) -> None:
        """
        Make the first attempt once the pool is ready (see
        L{Attempts.whenReady}).
        """
        self._attempts.whenReady(self._attempt)

    def _attempt(self) -> None:
        """
        Make the next attempt, or wait in the pool's queue for a backend
        with room, or answer with an error when none is left.
        """
        if self._over:
            return
        attempts = self._attempts
        lease = attempts.next()
        if lease is None:
            if attempts.wait(self._attempt):
                body = self._body
                if body is not None and attempts.waiting:
                    body.hold()
                return
            self._giveUp()
            return
        self._lease = lease
        connections = self._proxy.connectionsFor(lease.backend)
        if self._upgrade is None:
            connection = connections.idleConnection()
            if connection is not None:
                self._connected(connection, lease)
                return
        d = connections.connect(fresh=self._upgrade is not None)
        self._pending = d
        d.addCallbacks(
            self._connected,
            self._connectFailed,
            callbackArgs=(lease,),
            errbackArgs=(lease,),
        )

    def _headFor(self, backend: Backend) -> list[bytes]:
        """
        The request head for C{backend}: made once and sent to every backend
        tried, unless the pool rewrites C{Host} for each.
        """
        rewrite = self._proxy.config.rewrite_host
        head = self._head
        if head is not None and not rewrite:
            return head
        request = self._request
        body = self._body
        head = requestHead(
            request.method,
            self._target,
            request.headers,
            request.connectionTokens,
            str(getattr(request.clientAddress, "host", "unknown")),
            request.secure,
            self._proxy.policy,
            None if body is None else body.length,
            body is not None,
            self._upgrade,
            hostOverride=backend.address.encode("ascii") if rewrite else None,
            rules=self._rules,
        )
        if not rewrite:
            self._head = head
        return head

    def _connected(self, connection: UpstreamConnection, lease: Lease) -> None:
        self._pending = None
        if self._over:
            connection.abort()
            lease.release()
            return
        self._connection = connection
        config = self._proxy.config
        body = self._body
        connection.request(
            self._headFor(lease.backend),
            self._request.method,
            body is not None and body.length is None,
            self,
            config.response_timeout,
            config.read_timeout,
        )
        if body is not None and self._connection is connection:
            body.attach(connection)
        elif body is None and self._connection is connection:
            connection.endBody()

    def _connectFailed(self, failure: Failure, lease: Lease) -> None:
        self._pending = None
        if self._over:
            lease.release()
            return
        self._failed(lease, classifyConnectFailure(failure))

    def _failed(self, lease: Lease, problem: UpstreamFailure) -> None:
        """
        An attempt failed before anything reached the client: try another
        backend if the rules allow, else answer with an error.
        """
        self._connection = None
        body = self._body
        notReplayable = None
        if problem.sent and not self._idempotent:
            notReplayable = "%s is not idempotent" % (
                self._request.method.decode("ascii", "replace"),
            )
        if notReplayable is None and body is not None and body.started:
            # Even a request that never reached the backend cannot be sent
            # again once its body outgrew the buffer.
            notReplayable = body.notReplayable()
        if body is not None:
            body.detach()
        if self._attempts.failed(lease, problem, notReplayable):
            self._attempt()
        else:
            self._giveUp()

    def _giveUp(self) -> None:
        attempts = self._attempts
        status = attempts.giveUpStatus()
        attempts.logGiveUp(status)
        self._status = status
        # A 503 says why no backend was available; a 502 or 504 does not
        # describe a backend's failure to the client.
        detail = attempts.giveUpReason() if status == 503 else None
        routed = self._routed
        request = self._request
        if routed is None:
            request.respondError(status, detail)
        else:
            request.respondError(status, detail, routed.responseHeaders([], request))

    # IResponseReceiver

    def responseHead(self, head: ResponseHead) -> None:
        try:
            lease = self._lease
            assert lease is not None
            if head.status == 101:
                if self._upgrade is None:
                    connection = self._connection
                    if connection is not None:
                        connection.abort()
                    self._failed(
                        lease,
                        UpstreamFailure(
                            "invalid_response",
                            "invalid response: 101 to a request that did not upgrade",
                        ),
                    )
                    return
                self._switch(head, lease)
                return
            self._committed = True
            self._attempts.succeeded(lease)
            request = self._request
            self._status = head.status
            headers = responseHeaders(head.headers)
            routed = self._routed
            if routed is not None:
                headers = routed.responseHeaders(headers, request)
            sticky = self._proxy.sticky
            if sticky is not None and self._stuckTo != lease.backend.name:
                headers.append(
                    (
                        b"Set-Cookie",
                        sticky.setCookie(lease.backend.name, request.secure),
                    )
                )
            request.respond(head.status, head.reason, headers, head.length)
        except Exception:
            self._crashed(Failure())

    def responseData(self, data: bytes) -> None:
        self._request.write(data)

    def responseWaiting(self) -> None:
        request = self._request
        if not self._producing:
            # The body goes on after this read: from now on the client's
            # connection paces the backend's.  (A response complete in one
            # read, the usual small one, never registers: at most one read
            # of the backend's is ever buffered for a slow client.)
            self._producing = True
            connection = self._connection
            if connection is not None:
                request.registerProducer(connection)
        request.flush()

    def responseEnd(self) -> None:
        try:
            lease = self._lease
            assert lease is not None
            self._connection = None
            clock = self._proxy.clock
            now = clock.seconds()
            lease.backend.stats.recordResponse(self._status, now - lease.started, now)
            lease.release()
            body = self._body
            if body is not None and not body.ended:
                body.stop()
            request = self._request
            if self._producing:
                request.unregisterProducer()
            request.finish()
        except Exception:
            self._crashed(Failure())

    def responseFailed(self, failure: object) -> None:
        try:
            assert isinstance(failure, UpstreamFailure)
            lease = self._lease
            assert lease is not None
            self._connection = None
            if not self._committed:
                self._failed(lease, failure)
                return
            now = self._proxy.clock.seconds()
            lease.backend.stats.recordFailure(
                failure.statsKind, now - lease.started, now
            )
            lease.release()
            _log.info(
                "response from {label} to {what} was cut short ({reason}); "
                "aborting the client connection",
                what=self._attempts,
                reason=failure.reason,
                **lease.backend.logFields,
            )
            self._request.abort()
        except Exception:
            self._crashed(Failure())

    # WebSocket

    def _switch(self, head: ResponseHead, lease: Lease) -> None:
        """
        The backend switched protocols: send its 101 to the client and join
        the two connections in a tunnel, which holds the lease until it
        closes.
        """
        connection = self._connection
        assert connection is not None
        request = self._request
        self._committed = self._tunnelled = True
        self._attempts.succeeded(lease)
        now = self._proxy.clock.seconds()
        lease.backend.stats.recordResponse(101, now - lease.started, now)
        tunnel = Tunnel(
            self._proxy.clock,
            self._proxy.config.idle_timeout,
            lambda totals: self._tunnelClosed(lease, totals),
        )
        switched = request.switchProtocols(tunnel.client)
        if switched is None:
            self._tunnelled = False
            connection.abort()
            self._crashed(Failure(RuntimeError("request cannot switch protocols")))
            return
        clientTransport, fromClient = switched
        backendTransport, fromBackend = connection.detach(tunnel.backend)
        self._connection = None
        self._status = 101
        switching = _switchingHead(head)
        clientTransport.write(switching)  # type: ignore[attr-defined]
        request.countSwitched(len(switching))
        tunnel.start(clientTransport, backendTransport, fromClient, fromBackend)

    def _tunnelClosed(self, lease: Lease, totals: TunnelTotals) -> None:
        lease.release()
        self._request.countSwitched(totals.toClient)
        self._record(101, totals.toClient)

    # The end

    def clientBodyFailed(self, reason: str) -> None:
        """
        The client's body will not arrive whole; the channel answers the
        client itself.  Abandon the attempt.
        """
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.abort()

    def _crashed(self, failure: Failure) -> None:
        """
        A bug: log it, cut the upstream connection, answer 502 if nothing
        was sent yet (else abort), and release the backend.
        """
        _log.failure("error while proxying {what}", failure, what=self._attempts)
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.abort()
        lease = self._lease
        if lease is not None:
            lease.release()
        request = self._request
        if request.headSent:
            request.abort()
        else:
            self._status = 502
            request.respondError(502)

    def _done(self) -> None:
        """
        The request is over (finished, aborted, or the client went away):
        release everything still held, exactly once, and record it.
        """
        if self._over:
            return
        self._over = True
        self._attempts.cancel()
        if self._tunnelled:
            # The tunnel holds the lease and the connections now.
            return
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.abort()
        body = self._body
        if body is not None and not body.ended:
            body.stop()
        lease = self._lease
        if lease is not None:
            lease.release()
        request = self._request
        self._record(request.status or self._status, request.sentBytes)

    def _record(self, status: int, sentBytes: int) -> None:
        record = self._proxy.record
        if record is None:
            return
        attempts = self._attempts
        tried = attempts.tried
        record(
            self._request,
            tried[-1].name if tried else None,
            len(tried),
            tuple(attempts.retryReasons),
            status,
            sentBytes,
            self._proxy.config.strategy,
            attempts.choices[-1] if attempts.choices else None,
        )


def _switchingHead(head: ResponseHead) -> bytes:
    """
    The 101 response head for the client: the backend's fields less the
    hop-by-hop ones, then C{Connection: Upgrade}, its C{Upgrade} and C{Via}.
    """
    lines = [b"HTTP/1.1 101 Switching Protocols\r\n"]
    upgrade = None
    for name, value in head.headers:
        lowered = name.lower()
        if lowered == b"upgrade":
            upgrade = value
        elif lowered not in RESPONSE_HOP_BY_HOP:
            lines.append(b"%s: %s\r\n" % (name, value))
    lines.append(b"Connection: Upgrade\r\n")
    if upgrade is not None:
        lines.append(b"Upgrade: %s\r\n" % (upgrade,))
    lines.append(b"Via: %s\r\n\r\n" % (VIA,))
    return b"".join(lines)


def _renderForwarded(
    clock: IReactorTime, forward: Callable[[IClientRequest], None], request: Any
) -> object:
    """
    Render a request a twisted.web C{Site} gives a resource of ours: adapt a
    stock request, forward it, and tell the site the response comes later.
    """
    if not isinstance(request, ServerRequest):
        request = StockRequest(request, clock.seconds())
    forward(request)
    # Imported here: only a stock twisted.web Site renders; lbtwist's own
    # frontends call forward, and never need twisted.web.server.
    from twisted.web.server import NOT_DONE_YET

    return NOT_DONE_YET


class BackendConnections:
    """
    The keep-alive connection pools of one pool's backends, one each, made
    on first use; call an instance with a backend to get its pool (the
    C{connectionsFor} argument of L{PoolResource}).
    """

    def __init__(self, reactor: Any, config: PoolConfig) -> None:
        """
        @param reactor: The reactor (L{IReactorTCP} and L{IReactorTime}).
        @param config: The pool's settings (timeouts, idle connections, TLS).
        """
        self._reactor = reactor
        self.config = config
        self._tls: Any = None
        if config.usesTLS:
            # Imported here: only pools with https backends need OpenSSL.
            from lbtwist.tls import BackendTLS

            self._tls = BackendTLS.forPool(config)
        self._pools: dict[tuple[str, str], ConnectionPool] = {}
        # The same, by backend object: no key to make on every request.
        self._byBackend: dict[Backend, ConnectionPool] = {}

    def __call__(self, backend: Backend) -> ConnectionPool:
        """
        @param backend: A backend of the pool.
        @return: Its connection pool.
        """
        connections = self._byBackend.get(backend)
        if connections is not None:
            return connections
        key = (backend.name, backend.config.url)
        connections = self._pools.get(key)
        if connections is None:
            config = self.config
            connections = self._pools[key] = ConnectionPool(
                self._reactor,
                backendEndpoint(
                    self._reactor, backend.config, config.connect_timeout, self._tls
                ),
                config.max_idle_connections,
                config.idle_connection_timeout,
                config.connect_timeout,
            )
        # A backend kept across a reload keeps its URL (BackendPool.adopt).
        self._byBackend[backend] = connections
        return connections

    def sameSettings(self, other: BackendConnections) -> bool:
        """
        @return: Whether C{other} makes connections the same way, so that
            its pools can be adopted.
        """
        mine, theirs = self.config, other.config
        return (
            mine.connect_timeout,
            mine.max_idle_connections,
            mine.idle_connection_timeout,
            mine.ca_file,
            mine.tls_verify,
        ) == (
            theirs.connect_timeout,
            theirs.max_idle_connections,
            theirs.idle_connection_timeout,
            theirs.ca_file,
            theirs.tls_verify,
        )

    def adopt(self, previous: BackendConnections, keep: Collection[Backend]) -> None:
        """
        Take over the connection pools of C{previous} (the same pool before
        a reload) for the backends in C{keep}, if connections are made the
        same way; close the others of C{previous}.

        @param previous: The connections before the reload.
        @param keep: The backends of the new pool.
        """
        wanted = {(b.name, b.config.url) for b in keep}
        compatible = self.sameSettings(previous)
        for key, connections in previous._pools.items():
            if compatible and key in wanted:
                self._pools[key] = connections
            else:
                connections.close()
        previous._pools = {}
        previous._byBackend = {}

    def close(self) -> Deferred[None]:
        """
        Close every idle connection now, the others after their response.

        @return: A L{Deferred} firing when the idle ones are closed.
        """
        for connections in self._pools.values():
            connections.close()
        return gatherResults(
            [c.closeIdle() for c in self._pools.values()]
        ).addCallback(lambda _: None)


class _ProxyResource(Resource):
    """
    What L{PoolResource} and L{ReverseProxyResource} share: the settings a
    L{_Forward} reads, and rendering.
    """

    isLeaf = True
    record: RequestRecorder | None
    config: PoolConfig
    retries: int
    pool: BackendPool | None = None
    sticky: StickyCookie | None = None

    def __init__(
        self,
        clock: IReactorTime,
        config: PoolConfig,
        connectionsFor: Callable[[Backend], ConnectionPool],
        policy: ForwardingPolicy,
        record: RequestRecorder | None,
    ) -> None:
        super().__init__()
        self.clock = clock
        self.config = config
        self.connectionsFor = connectionsFor
        self.policy = policy
        self.record = record

    def choose(
        self,
        request: IClientRequest,
        stuckTo: str | None,
        now: float,
        tried: Collection[Backend],
    ) -> Choice | None:
        """
        @param now: The current time.
        @param tried: The backends this request has been tried on.
        @param request: The request.
        @param stuckTo: The backend the request's sticky cookie names, read
            once per request, if any.
        @return: The backend for the next attempt and why, or L{None}.
        """
        raise NotImplementedError()

    def render(self, request: Any) -> Any:
        """
        Forward C{request}: lbtwist's own L{ServerRequest}, or a stock
        twisted.web request.
        """
        return _renderForwarded(self.clock, self.forward, request)

    def forward(self, request: IClientRequest, routed: Routed | None = None) -> None:
        """
        Forward C{request}, answering C{OPTIONS *} directly.

        @param request: The client's request.
        @param routed: What a L{RoutedResource} decided for it: the target
            to send and the header rules to apply.
        """
        if request.target == b"*":
            _answerOptions(request)
            if self.record is not None:
                self.record(request, None, 0, (), 200, request.sentBytes)
            return
        _Forward(self, request, routed).start()


def _answerOptions(request: IClientRequest) -> None:
    """
    Answer C{OPTIONS *} (a question about lbtwist itself): 200 with the
    methods it forwards; no backend is involved.
    """
    request.respond(200, b"OK", [(b"Allow", _OPTIONS_ALLOW)], 0)
    request.finish()


class ReverseProxyResource(_ProxyResource):
    """
    Forwards every request to one backend, without retries.

    @ivar backend: The backend's runtime state.
    """

    def __init__(
        self,
        clock: IReactorTime,
        backend: Backend,
        config: PoolConfig,
        connections: ConnectionPool,
        policy: ForwardingPolicy = ForwardingPolicy(),
        record: RequestRecorder | None = None,
    ) -> None:
        """
        @param clock: The reactor's clock (timeouts, statistics).
        @param backend: The backend.
        @param config: The settings of the backend's pool.
        @param connections: The backend's keep-alive connection pool.
        @param policy: How forwarding fields are added.
        @param record: Told about every finished request, if given.
        """
        super().__init__(clock, config, lambda _: connections, policy, record)
        self.backend = backend
        self.retries = 0

    def choose(
        self,
        request: IClientRequest,
        stuckTo: str | None,
        now: float,
        tried: Collection[Backend],
    ) -> Choice | None:
        """
        @return: The backend, unless it was tried already.
        """
        return None if tried else Choice(self.backend, f"only {self.backend.name}")


class PoolResource(_ProxyResource):
    """
    The root resource of an HTTP frontend: forwards each request to a
    backend its L{BackendPool} chooses, retrying on others as the rules
    allow.

    @ivar pool: The pool.
    """

    pool: BackendPool

    def __init__(
        self,
        clock: IReactorTime,
        pool: BackendPool,
        connectionsFor: Callable[[Backend], ConnectionPool],
        policy: ForwardingPolicy = ForwardingPolicy(),
        record: RequestRecorder | None = None,
        sticky: StickyCookie | None = None,
    ) -> None:
        """
        @param clock: The reactor's clock (timeouts, health state).
        @param pool: The pool.
        @param connectionsFor: The keep-alive connection pool of a backend.
        @param policy: How forwarding fields are added.
        @param record: Told about every finished request, if given.
        @param sticky: The pool's sticky cookie, with its secret, when the
            pool has C{sticky_cookie}; made with a per-process secret if
            not given.
        """
        super().__init__(clock, pool.config, connectionsFor, policy, record)
        self.pool = pool
        self.retries = pool.config.retries
        config = pool.config
        self._readKey = (
            keyReader(config.hash_key) if config.strategy == "consistent-hash" else None
        )
        if sticky is None and config.sticky_cookie is not None:
            # Embedded without a secret: cookies last as long as the process.
            sticky = StickyCookie(config.sticky_cookie, pool.name, os.urandom(32))
        self.sticky = sticky

    def choose(
        self,
        request: IClientRequest,
        stuckTo: str | None,
        now: float,
        tried: Collection[Backend],
    ) -> Choice | None:
        """
        @return: What the pool chooses for C{request} (by its key, and the
            backend its sticky cookie names), never a backend already tried.
        """
        readKey = self._readKey
        return self.pool.choose(
            now, tried, None if readKey is None else readKey(request), stuckTo
        )

    def getProxy(self, name: str) -> ReverseProxyResource:
        """
        @param name: A backend's name.
        @return: A L{ReverseProxyResource} forwarding to that backend alone.
        @raise KeyError: If the pool has no such backend.
        """
        backend = self.pool.backend(name)
        return ReverseProxyResource(
            self.clock,
            backend,
            self.config,
            self.connectionsFor(backend),
            self.policy,
            self.record,
        )


# Routes

_REDIRECT_PHRASES = {
    301: b"Moved Permanently",
    302: b"Found",
    307: b"Temporary Redirect",
    308: b"Permanent Redirect",
}
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")


@frozen
class _Destination:
    """
    Where a route (or the frontend's default) leads, with the header rules
    of that way.

    @ivar resource: The pool's resource, or L{None} for a redirect or for
        nothing (404).
    @ivar pool: The pool's name, or L{None}.
    @ivar maxBodySize: The pool's request body limit, or L{None}.
    @ivar route: The route, or L{None} for the frontend's default.
    @ivar requestRules: The frontend's request rules, then the route's.
    @ivar responseRules: Echoing the request ID, then the frontend's
        response rules, then the route's.
    """

    resource: PoolResource | None
    pool: str | None
    maxBodySize: int | None
    route: RouteConfig | None
    requestRules: CompiledRules | None
    responseRules: CompiledRules | None


class Routed:
    """
    What a L{RoutedResource} decided for one request.

    @ivar destination: Where it goes.
    @ivar target: The target sent upstream (as sent, or less a stripped
        prefix).
    @ivar requestId: Its C{X-Request-ID}, if the frontend gives them.
    @ivar refusal: 0, or the status it is refused with (400: a path that
        cannot be normalised, or stripped consistently; 404: no route and
        no default pool).
    """

    __slots__ = ("destination", "target", "requestId", "refusal", "_values")

    def __init__(
        self,
        destination: _Destination,
        target: bytes,
        requestId: bytes | None,
        refusal: int = 0,
    ) -> None:
        self.destination = destination
        self.target = target
        self.requestId = requestId
        self.refusal = refusal
        self._values: dict[str, str] | None = None

    def values(self, request: IClientRequest) -> dict[str, str]:
        """
        The placeholders of header rules for C{request}: C{client_ip} (the
        client as lbtwist sees it, after a PROXY header), C{request_id},
        C{scheme} (of the client's connection) and C{host} (the host name,
        without the port; the frontend's address if there is no C{Host}).
        """
        values = self._values
        if values is None:
            requestId = self.requestId
            values = self._values = {
                "client_ip": str(getattr(request.clientAddress, "host", "unknown")),
                "request_id": "" if requestId is None else requestId.decode("ascii"),
                "scheme": "https" if request.secure else "http",
                "host": hostName(request.host)
                or str(getattr(request.serverAddress, "host", "")),
            }
        return values

    def responseHeaders(
        self, headers: list[tuple[bytes, bytes]], request: IClientRequest
    ) -> list[tuple[bytes, bytes]]:
        """
        @param headers: The response's fields.
        @param request: The request.
        @return: The fields after the response rules.
        """
        rules = self.destination.responseRules
        if rules is None:
            return headers
        return rules.apply(headers, self.values(request))


class RoutedResource(Resource):
    """
    The root resource of an HTTP frontend with routes, header rules or
    request IDs: each request goes to the pool of the first route that
    matches it (L{lbtwist.routing}), or to the frontend's default pool, or
    is answered with a redirect, or with 404 when nothing matches and there
    is no default pool.

    lbtwist's own channel routes a request as soon as its head is complete
    (L{routeHead}), so that the body limit of the pool it goes to applies;
    a stock twisted.web request is routed when rendered.
    """

    isLeaf = True

    def __init__(
        self,
        clock: IReactorTime,
        frontend: FrontendConfig,
        resources: Mapping[str, PoolResource],
        record: RequestRecorder | None = None,
    ) -> None:
        """
        @param clock: The reactor's clock.
        @param frontend: The frontend's configuration.
        @param resources: The resource of each of its pools
            (L{FrontendConfig.pools}), by name.
        @param record: Told about every request answered here (redirects
            and refusals); the pools' resources record the others.
        """
        super().__init__()
        self.clock = clock
        self.record = record
        self._requestId = frontend.request_id
        echo = (
            [HeaderRules(set=((REQUEST_ID.decode("ascii"), "{request_id}"),))]
            if frontend.request_id
            else []
        )

        def destination(route: RouteConfig | None, pool: str | None) -> _Destination:
            resource = None if pool is None else resources[pool]
            requestRules = [frontend.request_headers]
            responseRules = echo + [frontend.response_headers]
            if route is not None:
                requestRules.append(route.request_headers)
                responseRules.append(route.response_headers)
            return _Destination(
                resource,
                pool,
                None if resource is None else resource.config.max_body_size,
                route,
                compileRules(requestRules),
                compileRules(responseRules),
            )

        self._default = destination(None, frontend.pool)
        self._router: Router[_Destination] = Router(
            [Route(route, destination(route, route.pool)) for route in frontend.routes]
        )

    def route(self, request: IClientRequest) -> Routed:
        """
        Decide where C{request} goes (once), giving it its request ID.

        @param request: The request, whose head is complete.
        @return: The decision.
        """
        requestId = requestID(request.headers) if self._requestId else None
        target = request.target
        try:
            route = self._router.match(request.method, target, request.host, request.headers)
        except InvalidPath:
            return Routed(self._default, target, requestId, 400)
        if route is None:
            destination = self._default
            if destination.resource is None:
                return Routed(destination, target, requestId, 404)
            return Routed(destination, target, requestId)
        destination = route.destination
        config = route.config
        if config.strip_prefix and config.path_prefix is not None:
            stripped = strippedTarget(target, config.path_prefix)
            if stripped is None:
                return Routed(destination, target, requestId, 400)
            target = stripped
        return Routed(destination, target, requestId)

    def routeHead(self, request: ServerRequest) -> int | None:
        """
        Route a request of lbtwist's own channel when its head is complete.

        @return: The body limit of the pool it goes to, or L{None} (no
            pool: the frontend's limit).
        """
        routed = request.routed = self.route(request)
        return routed.destination.maxBodySize

    def render(self, request: Any) -> Any:
        """
        Route and forward a stock twisted.web request.
        """
        return _renderForwarded(self.clock, self.forward, request)

    def forward(self, request: IClientRequest) -> None:
        """
        Send C{request} where its route leads (routing it now if it was not
        routed yet), or answer it: a redirect, 400 or 404.

        @param request: The client's request.
        """
        routed = request.routed
        if routed is None:
            routed = request.routed = self.route(request)
        refusal = routed.refusal
        destination = routed.destination
        if refusal:
            request.respondError(refusal, None, routed.responseHeaders([], request))
            self._recordAnswered(request, refusal)
            return
        resource = destination.resource
        if resource is not None:
            resource.forward(request, routed)
            return
        route = destination.route
        assert route is not None and route.redirect is not None
        values = routed.values(request)
        location = route.redirect.format(
            scheme=values["scheme"],
            host=values["host"],
            path=request.target.decode("ascii", "replace"),
        )
        status = route.redirect_status
        headers = routed.responseHeaders(
            [(b"Location", _UNSAFE.sub("", location).encode("utf-8"))], request
        )
        request.respond(status, _REDIRECT_PHRASES[status], headers, 0)
        request.finish()
        self._recordAnswered(request, status)

    def _recordAnswered(self, request: IClientRequest, status: int) -> None:
        record = self.record
        if record is not None:
            record(request, None, 0, (), status, request.sentBytes)


# A stock twisted.web request, adapted.


@implementer(IRequestBody)
class _SpooledBody:
    """
    The body of a stock twisted.web request, which twisted.web received
    whole (in memory or spooled to a file) before rendering.
    """

    readSize = 65536

    def __init__(self, content: Any, length: int) -> None:
        self._content = content
        self.length: int | None = length
        self._receiver: IBodyReceiver | None = None
        self._paused = False
        self._stopped = False

    def deliver(self, receiver: IBodyReceiver) -> None:
        self._content.seek(0)
        self._receiver = receiver
        self._pump()

    def _pump(self) -> None:
        receiver = self._receiver
        while receiver is not None and not self._paused and not self._stopped:
            chunk = self._content.read(self.readSize)
            if not chunk:
                self._receiver = None
                receiver.bodyEnd()
                return
            receiver.bodyData(chunk)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:
        self._stopped = True


@implementer(IClientRequest)
class StockRequest:
    """
    A stock C{twisted.web.server.Request} seen as an L{IClientRequest}, so
    that L{PoolResource} and L{ReverseProxyResource} can serve in an
    ordinary twisted.web C{Site}.  It cannot switch protocols: a WebSocket
    handshake is forwarded as an ordinary request.
    """

    def __init__(self, request: server.Request, now: float) -> None:
        """
        @param request: The twisted.web request (its body already received).
        @param now: The current time.
        """
        self._request = request
        self.method: bytes = request.method
        self.target: bytes = request.uri
        self.version: bytes = request.clientproto or b"HTTP/1.1"
        self.headers = [
            (name, value)
            for name, values in request.requestHeaders.getAllRawHeaders()
            for value in values
        ]
        self.connectionTokens = connectionTokens(self.headers)
        hosts = request.requestHeaders.getRawHeaders(b"host")
        self.host: bytes | None = hosts[0] if hosts else None
        self.clientAddress = request.getClientAddress()
        self.serverAddress = request.getHost()
        self.secure = request.isSecure()
        self.started = now
        self.body: IRequestBody | None = None
        content = request.content
        requestHeaders = request.requestHeaders
        if content is not None and (
            requestHeaders.hasHeader(b"content-length")
            or requestHeaders.hasHeader(b"transfer-encoding")
        ):
            content.seek(0, 2)
            self.body = _SpooledBody(content, content.tell())
        self.status: int | None = None
        self.headSent = False
        self.done = False
        self.routed: Routed | None = None
        self._callbacks: list[Callable[[], object]] = []
        # A proxy invents no Content-Type.
        request.defaultContentType = None
        request.notifyFinish().addBoth(self._over)

    @property
    def sentBytes(self) -> int:
        """
        Body bytes twisted.web has sent.
        """
        return int(self._request.sentLength)

    def _over(self, result: object) -> None:
        self.done = True
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def respond(
        self,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        length: int | None,
    ) -> None:
        if self.done or self.headSent:
            return
        request = self._request
        self.status = status
        self.headSent = True
        request.setResponseCode(status, reason)
        # The backend's fields, not twisted.web's own Date and Server.
        responseHeaders = request.responseHeaders = Headers()
        for name, value in headers:
            responseHeaders.addRawHeader(name, value)
        if length is not None and status not in (204, 304) and status >= 200:
            responseHeaders.setRawHeaders(b"content-length", [b"%d" % (length,)])

    def write(self, data: bytes) -> None:
        if not self.done:
            self._request.write(data)

    def finish(self) -> None:
        if not self.done:
            self._request.finish()

    def flush(self) -> None:
        """
        twisted.web sends the head with the first body bytes by itself.
        """

    def abort(self) -> None:
        if self.done:
            return
        transport = self._request.channel.transport
        if transport is not None:
            cast(ITCPTransport, transport).abortConnection()

    def respondError(
        self,
        code: int,
        detail: str | None = None,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        if self.done or self.headSent:
            return
        phrase, body = errorBody(code, detail)
        self.respond(
            code,
            phrase,
            [(b"Content-Type", b"text/plain; charset=utf-8"), *headers],
            len(body),
        )
        self._request.write(body)
        self._request.finish()

    def registerProducer(self, producer: object) -> None:
        if not self.done:
            self._request.registerProducer(producer, True)

    def unregisterProducer(self) -> None:
        if not self.done:
            self._request.unregisterProducer()

    def notifyDone(self, callback: Any) -> None:
        if self.done:
            callback()
        else:
            self._callbacks.append(callback)

    def countSwitched(self, sent: int) -> None:
        """
        A stock request never switches protocols.
        """

    def switchProtocols(self, protocol: object) -> None:
        """
        A stock request cannot switch protocols.
        """
        return None
