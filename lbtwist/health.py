# -*- test-case-name: tests.test_health -*-
"""
Active health checks.

A probe (L{IHealthProbe}) checks one backend once: L{HTTPProbe} sends a
C{GET} for the pool's health path and compares the status with the pool's
C{expect_status}, L{TCPProbe} only opens a TCP connection and closes it
again. A probe's L{Deferred} never errbacks and is bounded by the probe's
own timeout; every outcome is a L{ProbeResult}.

A L{HealthCheck} service runs one probe every C{interval} seconds on an
injected clock and hands each result to a callback (which applies the
C{rise}/C{fall} rules kept in L{lbtwist.backend}). It does not trust the
probe to keep its promise: every probe gets a deadline of its own, which
always fires and reports a failure that says "timed out", so a probe whose
L{Deferred} never fires cannot freeze a backend's checks. A loop that dies
anyway is logged as an error and restarted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, NoReturn

from attrs import frozen
from twisted.application.service import Service
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.defer import maybeDeferred, succeed
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
)
from twisted.internet.error import ConnectionRefusedError as TwistedRefusedError
from twisted.internet.error import TCPTimedOutError
from twisted.internet.error import TimeoutError as ConnectTimeoutError
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHandshakeListener,
    IProtocol,
    IProtocolFactory,
    IReactorTCP,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IAgentEndpointFactory, IResponse
from zope.interface import Attribute, Interface, implementer

from lbtwist.config import BackendConfig, HealthCheckConfig, PoolConfig
from lbtwist.tls import BackendTLS, describeTLSFailure
from lbtwist.endpoints import BackendEndpoints

if TYPE_CHECKING:
    from twisted.web.client import URI

__all__ = [
    "ProbeResult",
    "IHealthProbe",
    "HTTPProbe",
    "TCPProbe",
    "HealthCheck",
    "probeOnce",
    "probeFor",
    "healthAgent",
]

_log = Logger()

MAX_BODY_BYTES = 64 * 1024
"""
How much of a health check response body is read (and discarded) before the
connection is closed; the status line is all that matters.
"""

_CONNECT_TIMEOUT = 30.0
"""
Seconds the shared health check agent gives a connection attempt (each
probe's own deadline is shorter).
"""

USER_AGENT = b"lbtwist-health-check"
"""
The C{User-Agent} sent with HTTP health checks.
"""


@frozen
class ProbeResult:
    """
    The outcome of one health probe.

    @ivar ok: Whether the backend passed.
    @ivar detail: What happened, for logs and the stats page: C{"HTTP 200"},
        C{"HTTP 503 on GET /healthz (expected 200-399)"}, C{"connected"},
        C{"connection refused"}, C{"timed out after 1.0s"} or
        C{"<exception class>: <message>"}.
    @ivar duration: Seconds from the start of the probe to its result.
    """

    ok: bool
    detail: str
    duration: float


class IHealthProbe(Interface):
    """
    A check of one backend that can be run repeatedly.
    """

    timeout = Attribute(
        "Seconds one probe may take (a L{float}); past it the probe counts as "
        "failed."
    )

    def probe() -> Deferred[ProbeResult]:
        """
        Check the backend once.

        @return: A L{Deferred} that fires with a L{ProbeResult}. It never
            errbacks and is bounded by the probe's own timeout. Cancelling it
            abandons the probe.
        """


def _formatTimeout(timeout: float) -> str:
    """
    Describe a probe timeout.

    @param timeout: The timeout in seconds.
    @return: For example C{"timed out after 1.0s"}.
    """
    return f"timed out after {float(timeout)}s"


def _formatExpected(ranges: tuple[tuple[int, int], ...]) -> str:
    """
    Format accepted status ranges the way they are written in the config.

    @param ranges: Inclusive C{(low, high)} status ranges.
    @return: For example C{"200-399"} or C{"200,204,300-302"}.
    """
    return ",".join(
        str(low) if low == high else f"{low}-{high}" for low, high in ranges
    )


def _describeFailure(reason: Failure, timeout: float) -> str:
    """
    Turn the failure of a probe into a short human readable detail.

    @param reason: Why the probe failed.
    @param timeout: The probe's timeout, named when it expired.
    @return: The detail for a failed L{ProbeResult}.
    """
    error = reason.value
    if isinstance(error, (DeferredTimeoutError, ConnectTimeoutError, TCPTimedOutError)):
        return _formatTimeout(timeout)
    if isinstance(error, (TwistedRefusedError, ConnectionRefusedError)):
        return "connection refused"
    if isinstance(error, CancelledError):
        return "cancelled"
    tls = describeTLSFailure(reason)
    if tls is not None:
        return tls.reason
    message = str(error)
    name = type(error).__name__
    return f"{name}: {message}" if message else name


def _describeAgentFailure(reason: Failure, timeout: float) -> str:
    """
    L{_describeFailure} for a failure of twisted.web's L{Agent}, which wraps
    the interesting failure: the first one inside is described.

    @param reason: Why an HTTP probe failed.
    @param timeout: The probe's timeout, named when it expired.
    @return: The detail for a failed L{ProbeResult}.
    """
    # Imported here (as everywhere in this module): twisted.web's HTTP
    # client is large, and only HTTP checks need it.
    from twisted.web.client import ResponseFailed, ResponseNeverReceived

    error = reason.value
    if isinstance(error, (ResponseFailed, ResponseNeverReceived)):
        inner = [r for r in error.reasons if isinstance(r, Failure)]
        if inner:
            return _describeAgentFailure(inner[0], timeout)
    return _describeFailure(reason, timeout)


def _timedOut(result: object, timeout: float) -> NoReturn:
    """
    Replace whatever a timed out L{Deferred} was cancelled with by a timeout.

    Cancelling an HTTP request or a connection attempt may fail it with an
    exception other than L{CancelledError}; the probe still timed out.

    @param result: The result of the L{Deferred} after it was cancelled.
    @param timeout: The timeout that expired.
    @raise twisted.internet.defer.TimeoutError: Always.
    """
    raise DeferredTimeoutError(timeout, "health probe")


class _DiscardBody(Protocol):
    """
    Read a response body, throw it away, and stop reading after a limit.

    @ivar finished: Fires with C{None} when the body is complete or the limit
        was reached, or errbacks if the body could not be read. Cancelling it
        stops the transport.
    """

    def __init__(self, limit: int) -> None:
        """
        @param limit: How many bytes to read before closing the connection.
        """
        self._limit = limit
        self._received = 0
        self.finished: Deferred[None] = Deferred(self._cancel)

    def _cancel(self, finished: Deferred[None]) -> None:
        """
        Stop receiving the body when L{finished} is cancelled.

        @param finished: L{finished}.
        """
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        """
        Count and discard C{data}; stop the transport past the limit.

        @param data: Part of the response body.
        """
        self._received += len(data)
        if self._received > self._limit and not self.finished.called:
            self.finished.callback(None)
            self.transport.stopProducing()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        The body is complete, or reading it failed.

        @param reason: L{ResponseDone} or L{PotentialDataLoss} when the whole
            body was received, another failure otherwise.
        """
        # Imported here: only HTTP checks need twisted.web's HTTP client.
        from twisted.web.client import ResponseDone
        from twisted.web.http import PotentialDataLoss

        if self.finished.called:
            return
        if isinstance(reason.value, (ResponseDone, PotentialDataLoss)):
            self.finished.callback(None)
        else:
            self.finished.errback(reason)


@implementer(IHealthProbe)
class HTTPProbe:
    """
    Probe a backend with an HTTP C{GET}.

    The probe passes if the response status is accepted by the health config's
    C{expect_status}. The body is read (at most L{MAX_BODY_BYTES} of it) and
    discarded; the timeout covers the response headers and the body.
    """

    def __init__(
        self,
        agent: IAgent,
        url: bytes,
        healthConfig: HealthCheckConfig,
        clock: IReactorTime,
        host: bytes | None = None,
    ) -> None:
        """
        @param agent: Sends the request. In production a
            L{twisted.web.client.Agent} with a non-persistent pool, so that
            each probe opens (and closes) its own connection.
        @param url: The absolute URL to C{GET}.
        @param healthConfig: The pool's health settings (C{timeout},
            C{expect_status}).
        @param clock: Schedules the timeout and measures the duration.
        @param host: The C{Host} header to send, or C{None} to let the agent
            derive it from C{url}.
        """
        # Imported here: only HTTP checks need twisted.web's HTTP client.
        from twisted.web.client import URI

        self.agent = agent
        self.url = url
        self._path = URI.fromBytes(url).originForm.decode("ascii", "replace")
        self.healthConfig = healthConfig
        self.clock = clock
        self.host = host

    def __repr__(self) -> str:
        """
        @return: A description naming the URL.
        """
        return f"<HTTPProbe GET {self.url.decode('ascii', 'replace')}>"

    @property
    def timeout(self) -> float:
        """
        Seconds one probe may take: the health config's C{timeout}.
        """
        return self.healthConfig.timeout

    def probe(self) -> Deferred[ProbeResult]:
        """
        Send one C{GET} and judge the response status.

        @return: A L{Deferred} firing with a L{ProbeResult}; never errbacks.
        """
        started = self.clock.seconds()
        timeout = self.healthConfig.timeout
        headers = Headers({b"User-Agent": [USER_AGENT]})
        if self.host is not None:
            headers.setRawHeaders(b"Host", [self.host])
        d: Deferred[IResponse] = maybeDeferred(
            self.agent.request, b"GET", self.url, headers, None
        )
        status: Deferred[int] = d.addCallback(self._readBody)
        status.addTimeout(timeout, self.clock, _timedOut)

        def judge(code: int) -> ProbeResult:
            duration = self.clock.seconds() - started
            if self.healthConfig.accepts(code):
                return ProbeResult(True, f"HTTP {code}", duration)
            expected = _formatExpected(self.healthConfig.expect_status)
            return ProbeResult(
                False,
                f"HTTP {code} on GET {self._path} (expected {expected})",
                duration,
            )

        def failed(reason: Failure) -> ProbeResult:
            return ProbeResult(
                False,
                _describeAgentFailure(reason, timeout),
                self.clock.seconds() - started,
            )

        return status.addCallback(judge).addErrback(failed)

    def _readBody(self, response: IResponse) -> Deferred[int]:
        """
        Discard the body of C{response}, reading at most L{MAX_BODY_BYTES}.

        @param response: The health check response.
        @return: A L{Deferred} firing with the response status code once the
            body is done.
        """
        body = _DiscardBody(MAX_BODY_BYTES)
        response.deliverBody(body)
        code: int = response.code
        return body.finished.addCallback(lambda _: code)


@implementer(IProtocolFactory)
class _QuietFactory:
    """
    Builds a probe's protocol without logging C{Starting factory} and
    C{Stopping factory} for every probe.
    """

    noisy = False

    def __init__(self, wrapped: IProtocolFactory) -> None:
        """
        @param wrapped: Builds the protocol; its own C{doStart} and
            C{doStop} are not called (Agent's and probes' factories only log
            there).
        """
        self.wrapped = wrapped

    def doStart(self) -> None:
        """
        A connection attempt starts: nothing to do, nothing to log.
        """

    def doStop(self) -> None:
        """
        A connection attempt is over: nothing to do, nothing to log.
        """

    def buildProtocol(self, addr: IAddress) -> IProtocol | None:
        """
        @param addr: The backend's address.
        @return: What the wrapped factory builds.
        """
        return self.wrapped.buildProtocol(addr)


@implementer(IStreamClientEndpoint)
class _QuietEndpoint:
    """
    An endpoint whose connections are made with a L{_QuietFactory}: the
    factories twisted.web's L{Agent} makes per connection are noisy.
    """

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        """
        @param endpoint: Makes the connection.
        """
        self.endpoint = endpoint

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        @param protocolFactory: Builds the connection's protocol.
        @return: What the wrapped endpoint's C{connect} returns.
        """
        return self.endpoint.connect(_QuietFactory(protocolFactory))


@implementer(IAgentEndpointFactory)
class _QuietEndpoints:
    """
    The endpoints of the health checks' L{Agent}: L{BackendEndpoints}, made
    quiet with L{_QuietEndpoint}.
    """

    def __init__(self, endpoints: BackendEndpoints) -> None:
        """
        @param endpoints: Builds the endpoint of a URL.
        """
        self.endpoints = endpoints

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        """
        @param uri: A backend's health check URL.
        @return: A quiet endpoint connecting to it.
        """
        return _QuietEndpoint(self.endpoints.endpointForURI(uri))


def _quietFactory(build: Callable[[], Protocol]) -> IProtocolFactory:
    """
    @param build: Makes the protocol of a probe's connection.
    @return: A factory of it that does not log every connection.
    """
    factory: Factory[Protocol] = Factory.forProtocol(build)
    factory.noisy = False
    return factory


class _CloseAtOnce(Protocol):
    """
    A protocol that closes its connection as soon as it is made.
    """

    def connectionMade(self) -> None:
        """
        Close the connection: connecting was the whole check.
        """
        self.transport.loseConnection()  # type: ignore[union-attr]


@implementer(IHandshakeListener)
class _CloseAfterHandshake(Protocol):
    """
    A protocol that closes its TLS connection once the handshake completed.

    @ivar handshake: Fires with the protocol when the handshake completed,
        or errbacks with why the connection was lost before.
    """

    def __init__(self) -> None:
        self.handshake: Deferred[IProtocol] = Deferred(self._cancel)

    def _cancel(self, handshake: Deferred[IProtocol]) -> None:
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def handshakeCompleted(self) -> None:
        """
        The certificate was accepted: that was the whole check.
        """
        if not self.handshake.called:
            self.handshake.callback(self)
        self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Lost before the handshake completed: the check failed.

        @param reason: Why (a TLS error, for example).
        """
        if not self.handshake.called:
            self.handshake.errback(reason)


@implementer(IHealthProbe)
class TCPProbe:
    """
    Probe a backend by opening a TCP connection and closing it at once; with
    C{tls}, the TLS handshake (certificate verification included) must
    complete too.
    """

    def __init__(
        self,
        reactor: IReactorTCP,
        host: str,
        port: int,
        timeout: float,
        clock: IReactorTime | None = None,
        tls: BackendTLS | None = None,
    ) -> None:
        """
        @param reactor: Makes the connection; also the clock unless C{clock}
            is given.
        @param tls: For an C{https://} backend: how to talk TLS to it.
        @param host: An IPv4 or IPv6 literal (without brackets) or a host
            name.
        @param port: The TCP port.
        @param timeout: Seconds until the connection attempt is abandoned.
        @param clock: Schedules the timeout and measures the duration;
            defaults to C{reactor}.
        """
        self.reactor = reactor
        self.host = host
        self.port = port
        self.timeout = timeout
        self.clock: IReactorTime = clock if clock is not None else IReactorTime(reactor)
        self.tls = tls

    def __repr__(self) -> str:
        """
        @return: A description naming the address.
        """
        host = f"[{self.host}]" if isIPv6Address(self.host) else self.host
        return f"<TCPProbe {host}:{self.port}>"

    def _endpoint(self) -> IStreamClientEndpoint:
        """
        Choose the endpoint for the kind of host.

        @return: A L{TCP4ClientEndpoint} for an IPv4 literal, a
            L{TCP6ClientEndpoint} for an IPv6 literal, and a
            L{HostnameEndpoint} for a name.
        """
        if isIPAddress(self.host):
            return TCP4ClientEndpoint(
                self.reactor, self.host, self.port, timeout=self.timeout
            )
        if isIPv6Address(self.host):
            return TCP6ClientEndpoint(
                self.reactor, self.host, self.port, timeout=self.timeout
            )
        return HostnameEndpoint(
            self.reactor,
            self.host.encode("idna"),
            self.port,
            timeout=self.timeout,
        )

    def _connect(self) -> Deferred[IProtocol]:
        """
        Start connecting to the backend.

        @return: The endpoint's connection L{Deferred}.
        """
        if self.tls is None:
            return self._endpoint().connect(_quietFactory(_CloseAtOnce))
        endpoint = self.tls.wrap(self._endpoint(), self.host)
        protocol = _CloseAfterHandshake()
        d = endpoint.connect(_quietFactory(lambda: protocol))
        return d.addCallback(lambda _: protocol.handshake)

    def probe(self) -> Deferred[ProbeResult]:
        """
        Connect once and close the connection at once.

        @return: A L{Deferred} firing with a L{ProbeResult}; never errbacks.
        """
        started = self.clock.seconds()
        timeout = self.timeout
        d: Deferred[IProtocol] = maybeDeferred(self._connect)
        d.addTimeout(timeout, self.clock, _timedOut)

        def connected(protocol: IProtocol) -> ProbeResult:
            return ProbeResult(True, "connected", self.clock.seconds() - started)

        def failed(reason: Failure) -> ProbeResult:
            return ProbeResult(
                False,
                _describeFailure(reason, timeout),
                self.clock.seconds() - started,
            )

        return d.addCallback(connected).addErrback(failed)


class HealthCheck(Service):
    """
    Probe one backend every C{interval} seconds while running.

    The first probe starts as soon as the service starts. Every probe has a
    deadline, C{timeout} seconds after it started, that always fires: a
    probe still pending then is reported as a failure that says "timed
    out", cancelled, and forgotten (whatever it reports later is ignored),
    so the next tick probes again. A tick that comes while a probe is still
    pending (C{timeout} longer than C{interval}) is skipped. The looping
    call never waits for a probe, so a slow probe never delays any other
    check. Results go to C{onResult}; an exception raised there is logged
    and the checks go on. If the looping call dies all the same, that is
    logged as an error with its traceback and the loop is restarted.

    @ivar probe: The probe run on every tick.
    @ivar interval: Seconds between ticks.
    @ivar timeout: Seconds a probe may take before it counts as failed.
    """

    def __init__(
        self,
        clock: IReactorTime,
        probe: IHealthProbe,
        interval: float,
        onResult: Callable[[ProbeResult], None],
        paused: Callable[[], bool] = lambda: False,
        timeout: float | None = None,
    ) -> None:
        """
        @param clock: Schedules the ticks and the deadlines.
        @param probe: Checks the backend once per tick.
        @param interval: Seconds between the starts of two ticks.
        @param onResult: Called with every L{ProbeResult} while running.
        @param paused: Asked at every tick; no probe is sent while it returns
            C{True} (a backend disabled by an operator).
        @param timeout: The deadline of each probe in seconds; by default the
            probe's own C{timeout}.
        """
        self.clock = clock
        self.probe = probe
        self.interval = interval
        self.timeout: float = probe.timeout if timeout is None else timeout
        self.onResult = onResult
        self.paused = paused
        self._loop: LoopingCall | None = None
        self._pending: Deferred[ProbeResult] | None = None
        self._deadline: IDelayedCall | None = None

    def __repr__(self) -> str:
        """
        @return: A description naming the probe and the interval.
        """
        return f"<HealthCheck {self.probe!r} every {self.interval}s>"

    @property
    def pending(self) -> bool:
        """
        Whether a probe is in progress.
        """
        return self._pending is not None

    def startService(self) -> None:
        """
        Start probing: once now, then every C{interval} seconds.
        """
        super().startService()
        self._startLoop(now=True)

    def _startLoop(self, now: bool) -> None:
        """
        Start the looping call, watching for its death.

        @param now: Whether the first tick is now rather than in
            C{interval} seconds.
        """
        loop = self._loop = LoopingCall(self._tick)
        loop.clock = self.clock
        loop.start(self.interval, now=now).addErrback(self._loopDied, loop)

    def _loopDied(self, reason: Failure, loop: LoopingCall) -> None:
        """
        The looping call stopped because a tick raised: log it and, if this
        service still runs, start a new loop whose first tick is one
        C{interval} from now (so a tick that always raises is logged once
        per interval, not in a tight loop).

        @param reason: What the tick raised.
        @param loop: The loop that died.
        """
        _log.failure(
            "health check loop {check!r} died; restarting it",
            reason,
            LogLevel.error,
            check=self,
        )
        if self.running and self._loop is loop:
            self._startLoop(now=False)

    def stopService(self) -> None:
        """
        Stop probing and cancel a pending probe; its result is not reported.
        """
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        pending = self._forget()
        if pending is not None:
            pending.cancel()

    def _forget(self) -> Deferred[ProbeResult] | None:
        """
        Forget the pending probe, if any, and cancel its deadline.

        @return: The probe's L{Deferred}, or L{None} if none was pending.
        """
        pending, self._pending = self._pending, None
        deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()
        return pending

    def _tick(self) -> None:
        """
        Start a probe unless one is pending, and give it its deadline.
        Never returns the probe's L{Deferred}, so the loop never waits for a
        probe.

        @raise TypeError: If the probe broke its contract and returned
            something other than a L{Deferred} (the loop dies, and is
            restarted by L{_loopDied}).
        """
        if self._pending is not None:
            _log.debug(
                "health probe {probe!r} still pending; skipping this tick",
                probe=self.probe,
            )
            return
        try:
            if self.paused():
                return
        except Exception:
            _log.failure("while asking whether health checks are paused")
        started = self.clock.seconds()
        try:
            d = self.probe.probe()
        except Exception:
            reason = Failure()
            _log.failure("health probe {probe!r} raised", reason, probe=self.probe)
            self._report(
                ProbeResult(
                    False,
                    _describeFailure(reason, self.timeout),
                    self.clock.seconds() - started,
                )
            )
            return
        if not isinstance(d, Deferred):
            raise TypeError(f"{self.probe!r} returned {d!r}, not a Deferred")
        self._pending = d
        self._deadline = self.clock.callLater(self.timeout, self._expired, d, started)
        d.addBoth(self._probeDone, d, started)

    def _expired(self, d: Deferred[ProbeResult], started: float) -> None:
        """
        A probe's deadline passed: report it as timed out, then cancel and
        forget it.

        @param d: The probe's L{Deferred}.
        @param started: When the probe started.
        """
        if self._pending is not d:
            return
        self._deadline = None
        self._forget()
        self._report(
            ProbeResult(
                False, _formatTimeout(self.timeout), self.clock.seconds() - started
            )
        )
        try:
            d.cancel()
        except Exception:
            _log.failure("cancelling health probe {probe!r} failed", probe=self.probe)

    def _probeDone(
        self,
        result: ProbeResult | Failure,
        d: Deferred[ProbeResult],
        started: float,
    ) -> None:
        """
        A probe finished: forget it and report its result, unless it was
        forgotten already (its deadline passed, or the service stopped).

        @param result: The probe's result or, if the probe broke its
            contract, a failure (logged and reported as a failed result).
        @param d: The probe's L{Deferred}.
        @param started: When the probe started.
        """
        if self._pending is not d:
            return None
        self._forget()
        if not self.running:
            return None
        if isinstance(result, Failure):
            _log.failure("health probe {probe!r} failed", result, probe=self.probe)
            result = ProbeResult(
                False,
                _describeFailure(result, self.timeout),
                self.clock.seconds() - started,
            )
        self._report(result)
        return None

    def _report(self, result: ProbeResult) -> None:
        """
        Hand C{result} to C{onResult}, logging anything it raises.

        @param result: The result of a probe.
        """
        try:
            self.onResult(result)
        except Exception:
            _log.failure(
                "health check result handler failed for {probe!r} ({detail})",
                probe=self.probe,
                detail=result.detail,
            )


def probeOnce(
    clock: IReactorTime, probe: IHealthProbe, timeout: float | None = None
) -> Deferred[ProbeResult]:
    """
    Run C{probe} once, with a deadline that always fires.

    @param clock: Schedules the deadline and measures the duration.
    @param probe: The probe to run.
    @param timeout: The deadline in seconds; by default the probe's own
        C{timeout}.
    @return: A L{Deferred} that never fails and fires with the probe's
        L{ProbeResult}, or with a failed one saying "timed out" when the
        deadline passed first (the probe is then cancelled).
    """
    deadline: float = probe.timeout if timeout is None else timeout
    started = clock.seconds()

    def failed(reason: Failure) -> ProbeResult:
        return ProbeResult(
            False, _describeFailure(reason, deadline), clock.seconds() - started
        )

    try:
        d = probe.probe()
    except Exception:
        return succeed(failed(Failure()))
    return d.addTimeout(deadline, clock, _timedOut).addErrback(failed)


def probeFor(
    reactor: IReactorTCP,
    agent: IAgent | None,
    pool: PoolConfig,
    backend: BackendConfig,
) -> IHealthProbe | None:
    """
    Build the probe a pool's health settings ask for.

    @param reactor: Connects TCP probes and is the clock of every probe; it
        must provide L{IReactorTCP} and L{IReactorTime}.
    @param agent: Sends HTTP probes (see L{HTTPProbe}); other checks need
        none.
    @param pool: The pool, whose C{health} section chooses the check.
    @param backend: The backend to probe.
    @return: An L{HTTPProbe} of C{http://{address}{path}} (C{https://}
        for an C{https} backend: give an C{agent} from
        C{healthAgent(reactor, pool)}) with C{Host} set to the backend's
        address, a L{TCPProbe} (which completes the TLS handshake with an
        C{https} backend), or C{None} when the check is C{"none"}.
    @raise ValueError: For an unknown check kind, or an HTTP check without
        an C{agent}.
    """
    health = pool.health
    if health.check == "none":
        return None
    clock = IReactorTime(reactor)
    if health.check == "http":
        if agent is None:
            raise ValueError("an HTTP health check needs an agent")
        address = backend.address
        url = f"{backend.scheme}://{address}{health.path}".encode("ascii")
        return HTTPProbe(agent, url, health, clock, host=address.encode("ascii"))
    if health.check == "tcp":
        tls = BackendTLS.forPool(pool) if backend.scheme == "https" else None
        return TCPProbe(
            reactor, backend.host, backend.port, health.timeout, clock, tls
        )
    raise ValueError(f"unknown health check {health.check!r}")


def healthAgent(reactor: IReactorTCP, pool: PoolConfig | None = None) -> IAgent:
    """
    Make the agent HTTP probes use in production.

    Its pool is not persistent: every probe opens its own connection and
    sends C{Connection: close}, so a check measures whether the backend
    accepts new connections and never holds idle ones.  Its connections are
    quiet: no C{Starting factory} lines in the log for every probe.

    @param reactor: Connects to the backends; it must also provide
        L{IReactorTime}.
    @param pool: A pool with C{https://} backends: the agent connects to
        them with the pool's TLS settings (C{ca_file}, C{tls_verify}), as
        requests do.
    @return: A L{twisted.web.client.Agent}.
    """
    # Imported here: only HTTP checks need twisted.web's HTTP client.
    from twisted.web.client import Agent, HTTPConnectionPool

    connections = HTTPConnectionPool(reactor, persistent=False)
    if pool is None:
        # Each probe has its own deadline; this only bounds the connect.
        endpoints = BackendEndpoints(reactor, _CONNECT_TIMEOUT)
    else:
        endpoints = BackendEndpoints(
            reactor, pool.health.timeout, BackendTLS.forPool(pool)
        )
    agent: IAgent = Agent.usingEndpointFactory(
        reactor, _QuietEndpoints(endpoints), pool=connections
    )
    return agent
