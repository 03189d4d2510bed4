# -*- test-case-name: tests.test_frontend -*-
"""
An HTTP frontend: the protocol factory behind a listening port, which
builds lbtwist's own HTTP/1.1 channels (L{lbtwist._http.server}) and hands
their requests to the frontend's root resource (a L{lbtwist.web.PoolResource}).

It owns what belongs to the frontend rather than to one request: its
limits, its rate limit (a request over it is answered 429 here, before any
backend is chosen), its counters, its access log lines, its open
connections (for draining and shutdown), and applying new settings after a
reload.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable

from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from zope.interface import implementer

from lbtwist._http.errors import errorBody
from lbtwist._http.headers import ForwardingPolicy
from lbtwist._http.interfaces import IClientRequest
from lbtwist._http.server import HTTPServerChannel, IServerFrontend, ServerSettings
from lbtwist.accesslog import AccessLog, AccessRecord
from lbtwist.config import FrontendConfig
from lbtwist.ratelimit import RateLimit, Refusal
from lbtwist.stats import FrontendStats
from lbtwist.strategies import Choice

__all__ = ["HTTPFrontend", "serverSettings"]

_log = Logger()


def serverSettings(frontend: FrontendConfig, maxBodySize: int) -> ServerSettings:
    """
    The channel settings of a frontend.

    @param frontend: The frontend's configuration.
    @param maxBodySize: The request body limit of its pool.
    """
    return ServerSettings(
        headerTimeout=frontend.header_timeout,
        idleTimeout=frontend.idle_timeout,
        bodyTimeout=frontend.body_timeout,
        minBodyRate=frontend.min_body_rate,
        maxHeaderSize=frontend.max_header_size,
        maxTargetLength=frontend.max_target_length,
        maxBodySize=maxBodySize,
        secure=frontend.tls is not None,
        # Behind TLS the PROXY header comes before the handshake: the
        # listener's ProxyHeaderWrappingFactory reads it (see service.py).
        acceptProxy=frontend.accept_proxy and frontend.tls is None,
    )


_TOO_MANY_REQUESTS = errorBody(429)[0]


@lru_cache(maxsize=64)
def _tooManyRequests(seconds: int) -> tuple[tuple[tuple[bytes, bytes], ...], bytes]:
    """
    The fields and body of a 429 response (made once for each value).

    @param seconds: The C{Retry-After} value.
    """
    _, body = errorBody(429, f"retry after {seconds} s")
    headers = (
        (b"Content-Type", b"text/plain; charset=utf-8"),
        (b"Retry-After", b"%d" % (seconds,)),
    )
    return headers, body


def _host(address: IAddress | None) -> str:
    return str(getattr(address, "host", "-"))


@implementer(IServerFrontend)
class HTTPFrontend(Factory):
    """
    The protocol factory of one HTTP frontend.

    @ivar frontend: The frontend's configuration.
    @ivar settings: The channels' limits.
    @ivar policy: How forwarding fields are added.
    @ivar clock: The reactor's clock.
    @ivar stats: The frontend's counters.
    @ivar accessLog: Where one line per request goes, if anywhere.
    @ivar resource: The root resource requests go to: a
        L{lbtwist.web.PoolResource}, or a L{lbtwist.web.RoutedResource}
        when the frontend has routes, header rules or request IDs.
    @ivar routeHead: The routed resource's C{routeHead}, or L{None} (see
        L{IServerFrontend}).
    @ivar rateLimit: The frontend's rate limit, or L{None} if it has none.
    @ivar draining: Whether the frontend is shutting down.
    @ivar channels: The open client connections.
    """

    noisy = False

    def __init__(
        self,
        clock: IReactorTime,
        frontend: FrontendConfig,
        maxBodySize: int,
        stats: FrontendStats | None = None,
        accessLog: AccessLog | None = None,
    ) -> None:
        """
        @param clock: The reactor's clock.
        @param frontend: The frontend's configuration.
        @param maxBodySize: The request body limit of its pool.
        @param stats: Its counters (new ones if not given).
        @param accessLog: Where one line per request goes, if anywhere.
        """
        self.clock = clock
        self.stats = FrontendStats() if stats is None else stats
        self.accessLog = accessLog
        self.draining = False
        self.channels: set[HTTPServerChannel] = set()
        self.routeHead: Callable[[Any], int | None] | None = None
        self._resource: Any = None
        self.rateLimit: RateLimit | None = None
        self.reconfigure(frontend, maxBodySize)

    @property
    def resource(self) -> Any:
        """
        The root resource requests go to.
        """
        return self._resource

    @resource.setter
    def resource(self, resource: Any) -> None:
        self._resource = resource
        self.routeHead = getattr(resource, "routeHead", None)

    def reconfigure(self, frontend: FrontendConfig, maxBodySize: int) -> None:
        """
        Apply new settings (after a reload): new connections and requests
        follow them; requests in flight finish as they started.  The rate
        limit keeps its buckets if its settings are unchanged.

        @param frontend: The frontend's configuration.
        @param maxBodySize: The request body limit of its default pool (its
            routes' pools have theirs).
        """
        self.frontend = frontend
        self.poolName = frontend.pool
        self.settings = serverSettings(frontend, maxBodySize)
        self.policy = ForwardingPolicy.fromConfig(
            frontend.trusted_proxies, frontend.add_forwarded
        )
        limit, current = frontend.rate_limit, self.rateLimit
        if limit is None:
            self.rateLimit = None
        elif current is not None and current.config == limit:
            current.policy = self.policy
        else:
            self.rateLimit = RateLimit(limit, self.policy, frontend.name)

    def buildProtocol(self, addr: Any) -> HTTPServerChannel:
        """
        @return: A new channel for a client connection.
        """
        channel = HTTPServerChannel(self)
        channel.factory = self
        return channel

    # IServerFrontend

    def dispatch(self, request: IClientRequest) -> None:
        """
        Hand a request to the root resource, unless the rate limit refuses
        it.
        """
        rateLimit = self.rateLimit
        if rateLimit is not None:
            refusal = rateLimit.check(request, self.clock.seconds())
            if refusal is not None:
                self._rateLimited(request, refusal)
                return
        self._resource.forward(request)

    def _rateLimited(self, request: IClientRequest, refusal: Refusal) -> None:
        """
        Answer a request over the rate limit: 429 with C{Retry-After}, no
        backend involved.
        """
        self.stats.rateLimited += 1
        headers, body = _tooManyRequests(refusal.retryAfter)
        request.respond(429, _TOO_MANY_REQUESTS, list(headers), len(body))
        request.write(body)
        request.finish()
        self.record(
            request, None, 0, (), 429, request.sentBytes, reason=refusal.reason
        )

    def channelOpened(self, channel: HTTPServerChannel) -> None:
        """
        Count a new client connection.
        """
        self.channels.add(channel)
        self.stats.connectionOpened()
        if self.draining:
            channel.drain()

    def channelClosed(self, channel: HTTPServerChannel) -> None:
        """
        Count a closed client connection.
        """
        self.channels.discard(channel)
        self.stats.connectionClosed()

    def refused(self, code: int, sentBytes: int, clientAddress: IAddress | None) -> None:
        """
        Count and log a request the channel refused before dispatching it.
        """
        self.stats.recordResponse(code)
        if self.accessLog is None:
            return
        self.accessLog.log(
            AccessRecord(
                timestamp=self.clock.seconds(),
                client=_host(clientAddress),
                method="-",
                target="-",
                version="-",
                status=code,
                bytes=sentBytes,
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

    # The access log (a RequestRecorder for the root resource)

    def record(
        self,
        request: IClientRequest,
        backend: str | None,
        attempts: int,
        retryReasons: tuple[str, ...],
        status: int,
        sentBytes: int,
        strategy: str | None = None,
        choice: Choice | None = None,
        reason: str | None = None,
    ) -> None:
        """
        Count a finished request and write its access log line.

        @param reason: Why the frontend answered itself, if it did.
        @see: L{lbtwist.web.RequestRecorder}
        """
        self.stats.recordResponse(status)
        if self.accessLog is None:
            return
        pool = self.poolName
        routed = getattr(request, "routed", None)
        if routed is not None:
            pool = routed.destination.pool
        referer = userAgent = requestId = None
        wanted = self.accessLog.headers
        recorded: list[tuple[str, str]] = []
        for name, value in request.headers:
            lowered = name.lower()
            if lowered in wanted:
                recorded.append((name.decode("latin-1"), value.decode("latin-1")))
            if lowered == b"referer" and referer is None:
                referer = value.decode("latin-1")
            elif lowered == b"user-agent" and userAgent is None:
                userAgent = value.decode("latin-1")
            elif lowered == b"x-request-id" and requestId is None:
                requestId = value.decode("latin-1")
        now = self.clock.seconds()
        self.accessLog.log(
            AccessRecord(
                timestamp=now,
                client=_host(request.clientAddress),
                method=request.method.decode("latin-1"),
                target=request.target.decode("latin-1"),
                version=request.version.decode("latin-1"),
                status=status,
                bytes=sentBytes,
                duration=now - request.started,
                frontend=self.frontend.name,
                pool=pool,
                backend=backend,
                attempts=attempts,
                retryReasons=retryReasons,
                referer=referer,
                userAgent=userAgent,
                requestId=requestId,
                strategy=strategy,
                choice=None if choice is None else choice.why,
                headers=tuple(recorded),
                reason=reason,
            )
        )

    # Draining (graceful shutdown)

    def drain(self) -> None:
        """
        Close idle keep-alive connections now; the others close after their
        current response, which says C{Connection: close}.
        """
        self.draining = True
        for channel in list(self.channels):
            channel.drain()

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
            channel.abortConnection()
