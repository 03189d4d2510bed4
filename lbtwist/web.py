# -*- test-case-name: tests.test_web -*-
"""
The HTTP (L7) proxy: a twisted.web L{ProxySite} whose root is a
L{PoolResource}, which asks its L{BackendPool} for a backend and delegates to
that backend's L{ReverseProxyResource}; that one forwards through Twisted's
L{Agent} and a persistent connection pool and relays the response with
backpressure.

Which failures are retried (proxy-rules.md, "Failure handling"):

  - the connection could not be made (refused, connect timeout, name
    resolution): any method, on another backend;
  - the request was sent but no complete response head came back (reset,
    close, invalid response, response timeout): only idempotent methods,
    on another backend;
  - never once the response head has been relayed to the client.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Iterable, cast

from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IPushProducer, ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web._newclient import RequestNotSent, ResponseDone, ResponseFailed
from twisted.web.client import Agent
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent, IResponse
from twisted.web.resource import Resource

from lbtwist.backend import Backend, logStateChange
from lbtwist.channel import ProxyChannel, connectionTokens, errorBody
from lbtwist.accesslog import AccessLog, AccessRecord
from lbtwist.config import FrontendConfig, PoolConfig
from lbtwist.pool import BackendPool
from lbtwist.stats import FrontendStats
from lbtwist.tls import BackendTLS, TLSFailure, describeTLSFailure
from lbtwist.upstream import (
    RESPONSE_HOP_BY_HOP,
    BackendEndpoints,
    SpooledBody,
    UpstreamConnectionPool,
)

_log = Logger()

IDEMPOTENT_METHODS = frozenset(
    {b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"}
)

# Request fields that are about the client's connection to lbtwist.
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

_NEVER_REMOVED_BY_CONNECTION = frozenset({b"host"})

_VIA = b"1.1 lbtwist"

_CONNECT_FAILURES = (
    ierror.ConnectError,
    ierror.DNSLookupError,
)


def _isIdempotent(method: bytes) -> bool:
    return method in IDEMPOTENT_METHODS


class UpstreamAttemptFailed(Exception):
    """
    One attempt to forward a request to one backend failed before any of the
    response reached the client.

    @ivar kind: The kind of failure, one of L{lbtwist.stats.FAILURE_KINDS}.
    @ivar reason: A short reason for logs (C{"connection refused"}).
    @ivar sent: Whether the request may have reached the backend.
    @ivar timedOut: Whether it failed by a timeout (504) rather than a
        connection or protocol failure (502).
    """

    _NOT_SENT = frozenset({"connect_refused", "connect_timeout", "connect_error"})
    _TIMEOUTS = frozenset({"connect_timeout", "response_timeout"})

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.sent = kind not in self._NOT_SENT
        self.timedOut = kind in self._TIMEOUTS


def classifyFailure(failure: Failure) -> UpstreamAttemptFailed:
    """
    Turn the failure of an L{Agent} request into an L{UpstreamAttemptFailed}.

    @param failure: The failure from C{Agent.request}, possibly after a
        response timeout.
    """
    if failure.check(RequestNotSent):
        return UpstreamAttemptFailed("connect_error", "request not sent")
    tls = _tlsFailure(failure)
    if tls is not None:
        # A failed handshake means the request never reached the backend.
        kind = "connect_error" if tls.handshake else "invalid_response"
        return UpstreamAttemptFailed(kind, tls.reason)
    if failure.check(ierror.ConnectingCancelledError, ierror.TimeoutError):
        return UpstreamAttemptFailed("connect_timeout", "connect timeout")
    if failure.check(ierror.ConnectionRefusedError):
        return UpstreamAttemptFailed("connect_refused", "connection refused")
    if failure.check(*_CONNECT_FAILURES):
        return UpstreamAttemptFailed(
            "connect_error", "cannot connect: %s" % (failure.getErrorMessage(),)
        )
    if failure.check(DeferredTimeoutError, CancelledError):
        return UpstreamAttemptFailed("response_timeout", "response timeout")
    if isinstance(failure.value, ResponseFailed):
        reasons: list[Failure] = failure.value.reasons
        if any(f.check(DeferredTimeoutError, CancelledError) for f in reasons):
            return UpstreamAttemptFailed("response_timeout", "response timeout")
        invalid = [
            f for f in reasons if not f.check(ierror.ConnectionDone, ierror.ConnectionLost)
        ]
        if invalid:
            return UpstreamAttemptFailed(
                "invalid_response",
                "invalid response: %s" % (invalid[0].getErrorMessage(),),
            )
    return UpstreamAttemptFailed(
        "connection_lost", "connection lost before the response"
    )


def _tlsFailure(failure: Failure) -> TLSFailure | None:
    """
    @return: What went wrong if C{failure} (or, for an L{Agent} failure, one
        of its reasons) is a TLS failure, else L{None}.
    """
    reasons = [failure]
    if isinstance(failure.value, ResponseFailed):
        reasons.extend(failure.value.reasons)
    for reason in reasons:
        described = describeTLSFailure(reason)
        if described is not None:
            return described
    return None


def _trusted(address: str, networks: Iterable[Any]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def upstreamHeaders(
    request: server.Request,
    frontend: FrontendConfig,
    trustedNetworks: tuple[Any, ...],
    hostOverride: bytes | None,
) -> Headers:
    """
    The header fields sent upstream for C{request}: hop-by-hop fields
    removed, forwarding fields added, everything else kept in order with all
    its values.

    @param request: The client's request.
    @param frontend: The frontend it arrived on.
    @param trustedNetworks: Networks whose forwarding fields are kept.
    @param hostOverride: A C{Host} to send instead of the client's.
    """
    incoming = request.requestHeaders
    drop = REQUEST_HOP_BY_HOP | (
        connectionTokens(incoming) - _NEVER_REMOVED_BY_CONNECTION
    )
    peer = request.getClientAddress()
    clientIP = getattr(peer, "host", None) or "unknown"
    trusted = bool(trustedNetworks) and _trusted(clientIP, trustedNetworks)
    forwardingFields = (
        frozenset()
        if trusted
        else frozenset(
            {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"}
        )
    )
    headers = Headers()
    for name, values in incoming.getAllRawHeaders():
        lowered = name.lower()
        if lowered in drop or lowered in forwardingFields:
            continue
        headers.setRawHeaders(name, list(values))
    client = clientIP.encode("ascii")
    host = (incoming.getRawHeaders(b"host") or [b""])[0]
    proto = b"https" if request.isSecure() else b"http"
    previous = headers.getRawHeaders(b"x-forwarded-for")
    headers.setRawHeaders(
        b"x-forwarded-for",
        [b", ".join([*previous, client]) if previous else client],
    )
    if not headers.hasHeader(b"x-forwarded-proto"):
        headers.setRawHeaders(b"x-forwarded-proto", [proto])
    if host and not headers.hasHeader(b"x-forwarded-host"):
        headers.setRawHeaders(b"x-forwarded-host", [host])
    if frontend.add_forwarded:
        node = b'"[%s]"' % (client,) if b":" in client else client
        element = b"for=%s;proto=%s" % (node, proto)
        if host:
            element += b';host="%s"' % (host,)
        headers.addRawHeader(b"forwarded", element)
    headers.addRawHeader(b"via", _VIA)
    if hostOverride is not None:
        headers.setRawHeaders(b"host", [hostOverride])
    return headers


def respondWithError(request: server.Request, code: int) -> None:
    """
    Finish C{request} with one of lbtwist's short plain-text error pages.

    @param request: A request whose response has not started.
    @param code: 502, 503 or 504.
    """
    phrase, body = errorBody(code)
    request.setResponseCode(code, phrase)
    headers = Headers()
    headers.setRawHeaders(b"content-type", [b"text/plain; charset=utf-8"])
    headers.setRawHeaders(b"content-length", [b"%d" % (len(body),)])
    for value in request.responseHeaders.getRawHeaders(b"connection", ()):
        headers.addRawHeader(b"connection", value)
    request.responseHeaders = headers
    request.write(body)
    request.finish()


class _ResponseRelay(Protocol):
    """
    Relays a response body from the backend to the client, as a producer
    registered with the client's connection: a client that reads slowly
    pauses reading from the backend.

    A body that ends early (fewer bytes than its C{Content-Length}, or
    chunked without the last chunk) aborts the client's connection so that
    the client sees the truncation.
    """

    def __init__(
        self,
        request: server.Request,
        backend: str,
        finished: Callable[[Failure | None], None],
    ) -> None:
        self._request = request
        self._backend = backend
        self._finished = finished
        self.done = False
        self.clientGone = False

    def producer(self) -> IPushProducer:
        """
        The backend connection's producer this relay is connected to.
        """
        return cast(IPushProducer, self.transport)

    def dataReceived(self, data: bytes) -> None:
        if not self.clientGone:
            self._request.write(data)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.done = True
        request = self._request
        if self.clientGone:
            self._finished(reason)
            return
        request.unregisterProducer()
        if reason.check(ResponseDone, PotentialDataLoss):
            request.finish()
            self._finished(None)
        else:
            _log.info(
                "response from {backend} was cut short; aborting the client connection",
                backend=self._backend,
            )
            transport = request.channel.transport
            if transport is not None:
                cast(ITCPTransport, transport).abortConnection()
            self._finished(reason)


class ReverseProxyResource(Resource):
    """
    Forwards requests to one backend and relays its responses.

    Used by L{PoolResource}, which picks the backend and retries; it can
    also serve as the root of a L{ProxySite} on its own.

    @ivar backend: The backend's runtime state.
    """

    isLeaf = True

    def __init__(
        self,
        reactor: Any,
        backend: Backend,
        pool: PoolConfig,
        agent: IAgent,
    ) -> None:
        """
        @param reactor: Provides the clock for the response timeout.
        @param backend: The backend.
        @param pool: The settings of the backend's pool.
        @param agent: The agent forwarding requests (connection pooling).
        """
        super().__init__()
        self._reactor = reactor
        self.backend = backend
        self._pool = pool
        self._agent = agent
        self._base = f"{backend.config.scheme}://{backend.address}".encode("ascii")
        self._hostOverride = (
            backend.address.encode("ascii") if pool.rewrite_host else None
        )

    def forward(
        self, request: server.Request, headers: Headers
    ) -> Deferred[IResponse]:
        """
        Send C{request} to the backend.

        @param request: The client's request (its body fully received).
        @param headers: The header fields to send.
        @return: A L{Deferred} firing with the response once its head has
            arrived, or failing with L{UpstreamAttemptFailed}.
        """
        if self._hostOverride is not None:
            headers = headers.copy()
            headers.setRawHeaders(b"host", [self._hostOverride])
        body = _requestBody(request)
        d = self._agent.request(request.method, self._base + request.uri, headers, body)
        d.addTimeout(self._pool.response_timeout, self._reactor)

        def failed(failure: Failure) -> Failure:
            return Failure(classifyFailure(failure))

        d.addErrback(failed)
        return d

    def render(self, request: ProxyRequest) -> Any:
        """
        Forward C{request} to this backend alone (no retries).
        """
        _Attempts(self._reactor, request, self._only, 0).start()
        return server.NOT_DONE_YET

    def _only(self, tried: list[Backend]) -> ReverseProxyResource | None:
        return None if tried else self


def _requestBody(request: server.Request) -> SpooledBody | None:
    content = request.content
    if content is None:
        return None
    content.seek(0, 2)
    length = content.tell()
    if length == 0 and not (
        request.requestHeaders.hasHeader(b"content-length")
        or request.requestHeaders.hasHeader(b"transfer-encoding")
    ):
        return None
    return SpooledBody(content, length)


class _Attempts:
    """
    Forwards one client request, trying further backends while the rules
    allow, then relays the response or answers 502, 503 or 504.
    """

    def __init__(
        self,
        reactor: Any,
        request: ProxyRequest,
        choose: Callable[[list[Backend]], ReverseProxyResource | None],
        retries: int,
    ) -> None:
        """
        @param reactor: The clock.
        @param request: The client's request.
        @param choose: Given the backends already tried, the next backend's
            resource, or L{None} if there is none.
        @param retries: Attempts allowed after the first.
        """
        self._reactor = reactor
        self._request = request
        self._choose = choose
        self._retries = retries
        self._tried: list[Backend] = []
        self._pending: Deferred[IResponse] | None = None
        self._relay: _ResponseRelay | None = None
        self._clientGone = False
        self._lastFailure: UpstreamAttemptFailed | None = None
        self._retryReasons: list[str] = []
        self._attemptStarted = 0.0
        self._site = site = request.channel.site
        self._headers = upstreamHeaders(
            request, site.frontend, site.trustedNetworks, None
        )
        request.notifyFinish().addBoth(self._done)

    def start(self) -> None:
        """
        Make the next attempt, or answer with an error when none is left.
        """
        if self._clientGone:
            return
        proxy = self._choose(self._tried)
        if proxy is None:
            self._giveUp()
            return
        backend = proxy.backend
        self._tried.append(backend)
        backend.active += 1
        backend.requests += 1
        self._attemptStarted = self._reactor.seconds()
        d = proxy.forward(self._request, self._headers)
        self._pending = d
        d.addCallbacks(
            self._responded, self._failed, callbackArgs=(backend,), errbackArgs=(backend,)
        )

    def _giveUp(self) -> None:
        last = self._lastFailure
        if last is None:
            code = 503
        else:
            code = 504 if last.timedOut else 502
        _log.info(
            "{method} {target}: answering {code} after {attempts} attempt(s){why}",
            method=self._request.method.decode("ascii", "replace"),
            target=self._request.uri.decode("ascii", "replace"),
            code=code,
            attempts=len(self._tried),
            why=": %s" % (last.reason,) if last is not None else ": no backend available",
        )
        respondWithError(self._request, code)

    def _failed(self, failure: Failure, backend: Backend) -> None:
        self._pending = None
        backend.active -= 1
        if self._clientGone:
            # Cancelled because the client went away: not the backend's fault.
            return
        problem = failure.value
        if not isinstance(problem, UpstreamAttemptFailed):
            problem = classifyFailure(failure)
        self._lastFailure = problem
        now = self._reactor.seconds()
        backend.stats.recordFailure(problem.kind, now - self._attemptStarted, now)
        change = backend.requestFailed(problem.reason, now)
        if change is not None:
            logStateChange(change)
        retryable = not problem.sent or _isIdempotent(self._request.method)
        if retryable and len(self._tried) <= self._retries:
            self._retryReasons.append("%s: %s" % (backend.name, problem.reason))
            _log.info(
                "retrying {method} {target} after {backend}: {reason}",
                method=self._request.method.decode("ascii", "replace"),
                target=self._request.uri.decode("ascii", "replace"),
                backend=backend.address,
                reason=problem.reason,
            )
            self.start()
        else:
            self._giveUp()

    def _responded(self, response: IResponse, backend: Backend) -> None:
        self._pending = None
        change = backend.requestSucceeded(self._reactor.seconds())
        if change is not None:
            logStateChange(change)
        request = self._request
        if self._clientGone:
            backend.active -= 1
            response.deliverBody(_Discard())
            return
        status = response.code
        started = self._attemptStarted

        def finished(reason: Failure | None) -> None:
            backend.active -= 1
            now = self._reactor.seconds()
            if reason is None:
                backend.stats.recordResponse(status, now - started, now)
            elif not self._clientGone:
                backend.stats.recordFailure("truncated", now - started, now)

        self._relay = relayResponse(request, response, backend.address, finished)

    def _done(self, result: object) -> None:
        """
        The response to the client is complete (or the client went away):
        count it and write the access log line.
        """
        if isinstance(result, Failure):
            self._clientLost(result)
        self._site.stats.recordResponse(self._request.code)
        self._site.logRequest(
            self._request,
            self._tried[-1] if self._tried else None,
            len(self._tried),
            tuple(self._retryReasons),
        )

    def _clientLost(self, failure: Failure) -> None:
        self._clientGone = True
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.cancel()
        relay = self._relay
        if relay is not None and not relay.done:
            relay.clientGone = True
            relay.producer().stopProducing()


def relayResponse(
    request: server.Request,
    response: IResponse,
    backend: str,
    finished: Callable[[Failure | None], None],
) -> _ResponseRelay:
    """
    Send a backend's response to the client: its status, its header fields
    less the hop-by-hop ones, and its body, streamed with backpressure.

    @param request: The client's request, whose response has not started.
    @param response: The backend's response.
    @param backend: The backend's address, for logs.
    @param finished: Called once the body is relayed (with L{None}) or cut
        short (with the reason).
    @return: The relay (a protocol receiving the body).
    """
    request.setResponseCode(response.code, response.phrase)
    headers = Headers()
    for name, values in response.headers.getAllRawHeaders():
        if name.lower() not in RESPONSE_HOP_BY_HOP:
            headers.setRawHeaders(name, list(values))
    headers.addRawHeader(b"via", _VIA)
    if (
        response.length is not UNKNOWN_LENGTH
        and request.method != b"HEAD"
        and response.code not in (204, 304)
    ):
        headers.setRawHeaders(b"content-length", [b"%d" % (response.length,)])
    if not request.channel.persistent:
        headers.setRawHeaders(b"connection", [b"close"])
    request.responseHeaders = headers
    relay = _ResponseRelay(request, backend, finished)
    response.deliverBody(relay)
    if not relay.done and not request._disconnected:
        producer = relay.producer()
        request.registerProducer(producer, True)
        if request.channel._waitingForTransport:
            producer.pauseProducing()
    return relay


class _Discard(Protocol):
    """
    Reads and drops a response body nobody wants any more.
    """

    def connectionMade(self) -> None:
        cast(IPushProducer, self.transport).stopProducing()


class PoolResource(Resource):
    """
    The root resource of a frontend: chooses a backend of its
    L{BackendPool} for each request and delegates to that backend's
    L{ReverseProxyResource}, retrying on others as the rules allow.

    @ivar pool: The pool.
    @ivar proxies: The L{ReverseProxyResource} of each backend, by name.
    """

    isLeaf = True

    def __init__(
        self,
        reactor: Any,
        pool: BackendPool,
        agent: IAgent,
        upgrade: Callable[[ProxyRequest, BackendPool], bool] | None = None,
    ) -> None:
        """
        @param reactor: The reactor (clock for timeouts and health state).
        @param pool: The pool.
        @param agent: The agent shared by the pool's backends.
        @param upgrade: Called first with each request; takes over (and
            returns C{True} for) the upgrade requests it tunnels.
        """
        super().__init__()
        self._reactor = reactor
        self._upgrade = upgrade
        self.pool = pool
        self.proxies = {
            backend.name: ReverseProxyResource(reactor, backend, pool.config, agent)
            for backend in pool.backends
        }

    def render(self, request: ProxyRequest) -> Any:
        """
        Forward C{request} to a backend of the pool.
        """
        if self._upgrade is not None and self._upgrade(request, self.pool):
            return server.NOT_DONE_YET
        _Attempts(
            self._reactor, request, self._choose, self.pool.config.retries
        ).start()
        return server.NOT_DONE_YET

    def _choose(self, tried: list[Backend]) -> ReverseProxyResource | None:
        backend = self.pool.choose(self._reactor.seconds(), exclude=tried)
        return None if backend is None else self.proxies[backend.name]


def accessRecord(
    request: ProxyRequest,
    now: float,
    frontend: str,
    pool: str,
    backend: str | None,
    attempts: int,
    retryReasons: tuple[str, ...],
) -> AccessRecord:
    """
    The access log record of a finished request.

    @param request: The request.
    @param now: When it finished.
    @param frontend: The frontend's name.
    @param pool: The pool's name.
    @param backend: The backend that answered last, if any.
    @param attempts: How many backends were tried.
    @param retryReasons: Why each retry was made.
    """
    headers = request.requestHeaders
    referer = headers.getRawHeaders(b"referer")
    agent = headers.getRawHeaders(b"user-agent")
    peer = request.getClientAddress()
    return AccessRecord(
        timestamp=now,
        client=str(getattr(peer, "host", "-")),
        method=request.method.decode("latin-1"),
        target=request.uri.decode("latin-1"),
        version=(request.clientproto or b"HTTP/1.1").decode("latin-1"),
        status=request.code,
        bytes=request.sentLength,
        duration=now - request.started,
        frontend=frontend,
        pool=pool,
        backend=backend,
        attempts=attempts,
        retryReasons=retryReasons,
        referer=referer[0].decode("latin-1") if referer else None,
        userAgent=agent[0].decode("latin-1") if agent else None,
    )


def makeAgent(reactor: Any, pool: PoolConfig) -> tuple[Agent, UpstreamConnectionPool]:
    """
    An L{Agent} for a pool's backends with its own keep-alive connection
    pool.

    @param reactor: The reactor.
    @param pool: The pool's settings.
    @return: The agent and its connection pool (close its cached
        connections on shutdown).
    """
    connections = UpstreamConnectionPool(
        reactor, pool.max_idle_connections, pool.idle_connection_timeout
    )
    agent = Agent.usingEndpointFactory(
        reactor,
        BackendEndpoints(reactor, pool.connect_timeout, BackendTLS.forPool(pool)),
        pool=connections,
    )
    return agent, connections


class ProxyRequest(server.Request):
    """
    A request on a frontend: no form parsing, no default content type, and
    straight to the site's root resource (no traversal).

    @ivar started: When the request line arrived.
    """

    defaultContentType = None
    channel: ProxyChannel

    def __init__(self, channel: ProxyChannel, queued: object = None) -> None:
        """
        @param channel: The client connection.
        @param queued: Unused (Twisted's legacy argument).
        """
        super().__init__(channel)
        self.started: float = channel.site.reactor.seconds()

    def handleContentChunk(self, data: bytes) -> None:
        """
        Spool body bytes while they are within the body limit.
        """
        if self.channel.bodyChunkReceived(len(data)):
            super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """
        Record the request line and process it (Twisted's version would also
        parse form bodies, which a proxy must not touch).
        """
        assert self.content is not None
        self.content.seek(0, 0)
        self.args = {}
        self.method, self.uri = command, path
        self.clientproto = version
        self.path = path.split(b"?", 1)[0]
        self.process()

    def process(self) -> None:
        """
        Hand the request to the site's root resource.
        """
        self.site = self.channel.site
        self.prepath = []
        self.postpath = []
        try:
            self.render(self.site.resource)
        except BaseException:
            self.processingFailed(Failure())

    def processingFailed(self, reason: Failure) -> None:
        """
        Log an unexpected error and answer 502 without details.
        """
        _log.failure("error while proxying {uri}", reason, uri=self.uri)
        if not self.startedWriting and not self.finished and not self._disconnected:
            respondWithError(self, 502)


class ProxySite(server.Site):
    """
    The twisted.web site of one HTTP frontend.

    @ivar frontend: The frontend's settings.
    @ivar trustedNetworks: Networks whose forwarding fields are trusted.
    @ivar stats: The frontend's counters.
    @ivar accessLog: Where to log each request, if anywhere.
    @ivar poolName: The name of the pool the frontend forwards to.
    """

    requestFactory = ProxyRequest  # type: ignore[assignment]
    noisy = False

    def __init__(
        self,
        resource: Resource,
        frontend: FrontendConfig,
        maxBodySize: int,
        reactor: Any,
        stats: FrontendStats | None = None,
        accessLog: AccessLog | None = None,
    ) -> None:
        """
        @param resource: The root resource (a L{PoolResource}).
        @param frontend: The frontend's settings.
        @param maxBodySize: The request body limit of the frontend's pool.
        @param reactor: The reactor.
        @param stats: The frontend's counters (new ones if not given).
        @param accessLog: Where to log each request, if anywhere.
        """
        super().__init__(resource, timeout=frontend.idle_timeout, reactor=reactor)
        self.stats = FrontendStats() if stats is None else stats
        self.accessLog = accessLog
        self.channels: set[ProxyChannel] = set()
        self.draining = False
        self.reconfigure(resource, frontend, maxBodySize)

    def reconfigure(
        self, resource: Resource, frontend: FrontendConfig, maxBodySize: int
    ) -> None:
        """
        Apply new settings (after a reload): new connections and new
        requests follow them; requests in flight finish as they started.

        @param resource: The root resource (a L{PoolResource}).
        @param frontend: The frontend's settings.
        @param maxBodySize: The request body limit of the frontend's pool.
        """
        self.resource = resource
        self.frontend = frontend
        self.poolName = frontend.pool
        self.timeOut = frontend.idle_timeout
        self.maxBodySize = maxBodySize
        self.trustedNetworks = tuple(
            ipaddress.ip_network(n, strict=False) for n in frontend.trusted_proxies
        )

    def buildProtocol(self, addr: Any) -> ProxyChannel:  # type: ignore[override]
        """
        Build a L{ProxyChannel} with this frontend's limits.
        """
        channel = ProxyChannel(
            headerTimeout=self.frontend.header_timeout,
            maxHeaderSize=self.frontend.max_header_size,
            maxTargetLength=self.frontend.max_target_length,
            maxBodySize=self.maxBodySize,
        )
        channel.factory = self
        channel.site = self
        if self.draining:
            channel.persistent = False
        self.channels.add(channel)
        channel.requestFactory = self.requestFactory  # type: ignore[assignment]
        # As HTTPFactory.buildProtocol does: timeouts on this site's reactor.
        channel.callLater = self.reactor.callLater  # type: ignore[method-assign,assignment]
        channel.timeOut = self.timeOut  # type: ignore[assignment]
        return channel

    def drain(self) -> None:
        """
        Close idle keep-alive connections now; the others close after their
        current response, which says C{Connection: close}.
        """
        self.draining = True
        for channel in list(self.channels):
            channel.persistent = False
            if not channel.requests and channel.transport is not None:
                channel.transport.loseConnection()

    def openConnections(self) -> int:
        """
        @return: How many client connections are open.
        """
        return len(self.channels)

    def abortConnections(self) -> None:
        """
        Abort every client connection still open.
        """
        for channel in list(self.channels):
            if channel.transport is not None:
                cast(ITCPTransport, channel.transport).abortConnection()

    def logRequest(
        self,
        request: ProxyRequest,
        backend: Backend | None,
        attempts: int,
        retryReasons: tuple[str, ...],
    ) -> None:
        """
        Write a finished request's access log line, if there is an access
        log.

        @param request: The request.
        @param backend: The backend that answered last, if any.
        @param attempts: How many backends were tried.
        @param retryReasons: Why each retry was made.
        """
        if self.accessLog is None:
            return
        self.accessLog.log(
            accessRecord(
                request,
                self.reactor.seconds(),
                self.frontend.name,
                self.poolName,
                None if backend is None else backend.name,
                attempts,
                retryReasons,
            )
        )

    def refused(self, channel: ProxyChannel, code: int, size: int) -> None:
        """
        Count and log a request the channel refused before processing it.

        @param channel: The client connection.
        @param code: The status sent.
        @param size: The bytes sent.
        """
        self.stats.recordResponse(code)
        if self.accessLog is None:
            return
        peer = channel.transport.getPeer() if channel.transport else None
        now = self.reactor.seconds()
        self.accessLog.log(
            AccessRecord(
                timestamp=now,
                client=str(getattr(peer, "host", "-")),
                method="-",
                target="-",
                version="-",
                status=code,
                bytes=size,
                duration=0.0,
                frontend=self.frontend.name,
                pool=self.poolName,
                backend=None,
                attempts=0,
                retryReasons=(),
                referer=None,
                userAgent=None,
            )
        )

    def log(self, request: Any) -> None:
        """
        Twisted's own access log is not used; see L{AccessLog}.
        """
