# -*- test-case-name: tests.test_health -*-
"""
Tests for L{lbtwist.health}: probes against in-memory doubles and the
L{HealthCheck} loop on a L{Clock}. No real sockets.
"""

from __future__ import annotations

from typing import Callable

import attrs
from treq.testing import RequestTraversalAgent
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import (
    EventLoggingObserver,
    MemoryReactorClock,
    StringTransport,
)
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseNeverReceived
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer
from zope.interface.verify import verifyObject

from lbtwist.config import HealthCheckConfig, PoolConfig, parseConfig
from lbtwist.health import (
    MAX_BODY_BYTES,
    HealthCheck,
    HTTPProbe,
    IHealthProbe,
    ProbeResult,
    TCPProbe,
    healthAgent,
    probeFor,
)


class _StatusResource(Resource):
    """
    Answer C{/status/<code>} with that status, C{/big} with a large body,
    C{/slow} with headers and part of a body that never ends, and record
    every request's C{Host} header.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.hosts: list[bytes | None] = []
        self.slow: list[Request] = []

    def render(self, request: Request) -> bytes | int:
        self.hosts.append(request.getHeader(b"host"))
        path: bytes = request.path
        if path == b"/big":
            return b"x" * (4 * MAX_BODY_BYTES)
        if path == b"/slow":
            request.write(b"partial")
            self.slow.append(request)
            return NOT_DONE_YET
        code = int(path.rsplit(b"/", 1)[-1])
        request.setResponseCode(code)
        return b"" if code in (204, 304) else b"status body\n"


@implementer(IAgent)
class _HangingAgent:
    """
    An agent whose requests never get an answer, and which counts the
    requests that were cancelled.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[bytes, bytes, Headers | None]] = []
        self.cancelled = 0

    def _cancel(self, d: Deferred[IResponse]) -> None:
        self.cancelled += 1

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        self.requests.append((method, uri, headers))
        return Deferred(self._cancel)


@implementer(IAgent)
class _FailingAgent:
    """
    An agent whose requests fail at once with a given exception, or raise it
    synchronously.
    """

    def __init__(self, error: Exception, synchronous: bool = False) -> None:
        self.error = error
        self.synchronous = synchronous

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        if self.synchronous:
            raise self.error
        return fail(self.error)


def _pool(check: str, url: str = "http://127.0.0.1:9001") -> PoolConfig:
    """
    Build a validated pool named C{app} with one backend.
    """
    config = parseConfig(
        {
            "frontend": [{"name": "web", "listen": "tcp:8080", "pool": "app"}],
            "pool": [
                {
                    "name": "app",
                    "health": {
                        "check": check,
                        **({"path": "/healthz"} if check == "http" else {}),
                        "timeout": 0.5,
                    },
                    "backend": [{"url": url}],
                }
            ],
        }
    )
    return config.pool("app")


class ProbeResultTests(SynchronousTestCase):
    """
    Tests for L{ProbeResult}.
    """

    def test_frozen(self) -> None:
        """
        A result cannot be changed after it is made.
        """
        result = ProbeResult(True, "HTTP 200", 0.1)
        self.assertRaises(
            attrs.exceptions.FrozenInstanceError, setattr, result, "ok", False
        )


class HTTPProbeTests(SynchronousTestCase):
    """
    Tests for L{HTTPProbe} against an in-memory resource tree.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = _StatusResource()
        self.agent = RequestTraversalAgent(self.resource)

    def probe(
        self,
        path: bytes,
        health: HealthCheckConfig = HealthCheckConfig(),
        agent: IAgent | None = None,
    ) -> HTTPProbe:
        """
        Make a probe of C{path} on the in-memory backend.
        """
        return HTTPProbe(
            agent if agent is not None else self.agent,
            b"http://127.0.0.1:9001" + path,
            health,
            self.clock,
        )

    def test_interface(self) -> None:
        """
        L{HTTPProbe} provides L{IHealthProbe}.
        """
        self.assertTrue(verifyObject(IHealthProbe, self.probe(b"/status/200")))

    def test_ok(self) -> None:
        """
        A 200 answer passes with the detail C{HTTP 200}.
        """
        result = self.successResultOf(self.probe(b"/status/200").probe())
        self.assertEqual(result, ProbeResult(True, "HTTP 200", 0.0))

    def test_serverError(self) -> None:
        """
        A 500 answer fails and the detail names what was expected.
        """
        result = self.successResultOf(self.probe(b"/status/500").probe())
        self.assertEqual(
            result,
            ProbeResult(False, "HTTP 500 on GET /status/500 (expected 200-399)", 0.0),
        )

    def test_redirectIsAcceptedByDefault(self) -> None:
        """
        The default expected range 200-399 accepts a 302.
        """
        result = self.successResultOf(self.probe(b"/status/302").probe())
        self.assertEqual(result, ProbeResult(True, "HTTP 302", 0.0))

    def test_expectedRanges(self) -> None:
        """
        Only the statuses in the configured ranges pass.
        """
        health = HealthCheckConfig(expect_status=((200, 200), (204, 204), (300, 301)))
        outcomes = {
            code: self.successResultOf(
                self.probe(b"/status/%d" % (code,), health).probe()
            )
            for code in (200, 201, 204, 300, 301, 302)
        }
        self.assertEqual(
            {code: result.ok for code, result in outcomes.items()},
            {200: True, 201: False, 204: True, 300: True, 301: True, 302: False},
        )
        self.assertEqual(
            outcomes[302].detail, "HTTP 302 on GET /status/302 (expected 200,204,300-301)"
        )

    def test_largeBodyIsDiscarded(self) -> None:
        """
        A body larger than the read limit does not keep the probe from
        passing.
        """
        result = self.successResultOf(self.probe(b"/big").probe())
        self.assertEqual(result, ProbeResult(True, "HTTP 200", 0.0))

    def test_sendsHostHeader(self) -> None:
        """
        The configured C{Host} header is sent instead of the one derived from
        the URL.
        """
        probe = HTTPProbe(
            self.agent,
            b"http://127.0.0.1:80/status/200",
            HealthCheckConfig(),
            self.clock,
            host=b"127.0.0.1:80",
        )
        self.successResultOf(probe.probe())
        self.assertEqual(self.resource.hosts, [b"127.0.0.1:80"])

    def test_timesOutExactlyAtTimeout(self) -> None:
        """
        A request that never gets an answer fails exactly at the timeout and
        the request is cancelled.
        """
        agent = _HangingAgent()
        d = self.probe(b"/healthz", HealthCheckConfig(timeout=1.0), agent).probe()
        self.clock.advance(0.999)
        self.assertNoResult(d)
        self.assertEqual(agent.cancelled, 0)
        self.clock.advance(0.001)
        result = self.successResultOf(d)
        self.assertEqual(result, ProbeResult(False, "timed out after 1.0s", 1.0))
        self.assertEqual(agent.cancelled, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeoutCoversBody(self) -> None:
        """
        A response whose body never ends times out like one that never
        starts.
        """
        d = self.probe(b"/slow", HealthCheckConfig(timeout=2.5)).probe()
        self.assertEqual(len(self.resource.slow), 1)
        self.clock.advance(2.0)
        self.assertNoResult(d)
        self.clock.advance(0.5)
        result = self.successResultOf(d)
        self.assertEqual(result, ProbeResult(False, "timed out after 2.5s", 2.5))

    def test_durationMeasuredOnClock(self) -> None:
        """
        The duration is the time on the injected clock between the start of
        the probe and its result.
        """
        agent = _HangingAgent()
        d = self.probe(b"/healthz", agent=agent).probe()
        self.clock.advance(0.25)
        d.cancel()
        result = self.successResultOf(d)
        self.assertEqual(result.duration, 0.25)
        self.assertFalse(result.ok)

    def test_connectionRefused(self) -> None:
        """
        A refused connection fails with the detail C{connection refused}.
        """
        agent = _FailingAgent(ConnectionRefusedError())
        result = self.successResultOf(self.probe(b"/healthz", agent=agent).probe())
        self.assertEqual(result, ProbeResult(False, "connection refused", 0.0))

    def test_wrappedFailureIsDescribed(self) -> None:
        """
        The first reason inside a L{ResponseNeverReceived} is what the detail
        describes.
        """
        error = ResponseNeverReceived([Failure(OSError("reset by peer"))])
        agent = _FailingAgent(error)
        result = self.successResultOf(self.probe(b"/healthz", agent=agent).probe())
        self.assertEqual(result, ProbeResult(False, "OSError: reset by peer", 0.0))

    def test_synchronousExceptionIsAResult(self) -> None:
        """
        An agent that raises makes the probe fail with the exception's class
        and message; the probe does not raise or errback.
        """
        agent = _FailingAgent(ValueError("bad URL"), synchronous=True)
        result = self.successResultOf(self.probe(b"/healthz", agent=agent).probe())
        self.assertEqual(result, ProbeResult(False, "ValueError: bad URL", 0.0))


class TCPProbeTests(SynchronousTestCase):
    """
    Tests for L{TCPProbe} against a L{MemoryReactorClock}.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()

    def test_interface(self) -> None:
        """
        L{TCPProbe} provides L{IHealthProbe}.
        """
        self.assertTrue(
            verifyObject(IHealthProbe, TCPProbe(self.reactor, "127.0.0.1", 1, 1.0))
        )

    def test_connected(self) -> None:
        """
        A successful connection passes with the detail C{connected}, and the
        connection is closed at once.
        """
        d = TCPProbe(self.reactor, "127.0.0.1", 9001, 1.0).probe()
        host, port, factory, timeout, bindAddress = self.reactor.tcpClients[0]
        self.assertEqual((host, port), ("127.0.0.1", 9001))
        self.assertNoResult(d)
        self.reactor.advance(0.125)
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport()
        protocol.makeConnection(transport)
        result = self.successResultOf(d)
        self.assertEqual(result, ProbeResult(True, "connected", 0.125))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_refused(self) -> None:
        """
        A refused connection fails with the detail C{connection refused}.
        """
        d = TCPProbe(self.reactor, "127.0.0.1", 9001, 1.0).probe()
        factory = self.reactor.tcpClients[0][2]
        factory.clientConnectionFailed(
            self.reactor.connectors[0], Failure(ConnectionRefusedError())
        )
        result = self.successResultOf(d)
        self.assertEqual(result, ProbeResult(False, "connection refused", 0.0))

    def test_timeout(self) -> None:
        """
        A connection attempt that never completes fails exactly at the
        timeout and the attempt is stopped.
        """
        d = TCPProbe(self.reactor, "127.0.0.1", 9001, 1.0).probe()
        self.reactor.advance(0.999)
        self.assertNoResult(d)
        self.reactor.advance(0.001)
        result = self.successResultOf(d)
        self.assertEqual(result, ProbeResult(False, "timed out after 1.0s", 1.0))
        self.assertTrue(self.reactor.connectors[0].stoppedConnecting)

    def test_separateClock(self) -> None:
        """
        With a clock given, the timeout runs on that clock and not on the
        reactor.
        """
        clock = Clock()
        d = TCPProbe(self.reactor, "127.0.0.1", 9001, 2.0, clock).probe()
        self.reactor.advance(5)
        self.assertNoResult(d)
        clock.advance(2)
        self.assertEqual(
            self.successResultOf(d), ProbeResult(False, "timed out after 2.0s", 2.0)
        )

    def test_ipv6Literal(self) -> None:
        """
        An IPv6 literal is connected to directly.
        """
        TCPProbe(self.reactor, "::1", 9001, 1.0).probe()
        self.assertEqual(self.reactor.tcpClients[0][:2], ("::1", 9001))

    def test_hostName(self) -> None:
        """
        A host name is resolved first; the connection goes to the address it
        resolves to, and a success passes.
        """
        d = TCPProbe(self.reactor, "app.internal", 9001, 1.0).probe()
        host, port, factory, timeout, bindAddress = self.reactor.tcpClients[0]
        # MemoryReactor's resolver resolves every name to 127.0.0.1.
        self.assertEqual((host, port), ("127.0.0.1", 9001))
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        protocol.makeConnection(StringTransport())
        self.assertEqual(self.successResultOf(d), ProbeResult(True, "connected", 0.0))


@implementer(IHealthProbe)
class _FakeProbe:
    """
    A probe whose results the test controls.

    @ivar calls: The L{Deferred} of every probe started, in order.
    @ivar error: If set, L{probe} raises it.
    @ivar timeout: The probe's own timeout, the default deadline of a
        L{HealthCheck}.
    """

    timeout = 1.0

    def __init__(self) -> None:
        self.calls: list[Deferred[ProbeResult]] = []
        self.cancelled = 0
        self.error: Exception | None = None

    def _cancel(self, d: Deferred[ProbeResult]) -> None:
        self.cancelled += 1

    def probe(self) -> Deferred[ProbeResult]:
        if self.error is not None:
            raise self.error
        d: Deferred[ProbeResult] = Deferred(self._cancel)
        self.calls.append(d)
        return d


OK = ProbeResult(True, "HTTP 200", 0.0)
BAD = ProbeResult(False, "HTTP 500 on GET /healthz (expected 200-399)", 0.0)


class HealthCheckTests(SynchronousTestCase):
    """
    Tests for L{HealthCheck}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.probe = _FakeProbe()
        self.results: list[ProbeResult] = []
        self.check = HealthCheck(self.clock, self.probe, 2.0, self.results.append)

    def start(self, check: HealthCheck | None = None) -> HealthCheck:
        """
        Start C{check} (the default one if not given), stopping it at the end
        of the test.
        """
        check = check if check is not None else self.check
        check.startService()
        self.addCleanup(lambda: check.stopService() if check.running else None)
        return check

    def test_firstProbeAtOnce(self) -> None:
        """
        The first probe starts as soon as the service starts.
        """
        self.assertEqual(self.probe.calls, [])
        self.start()
        self.assertEqual(len(self.probe.calls), 1)
        self.assertTrue(self.check.pending)

    def test_resultsGoToOnResult(self) -> None:
        """
        Each result is handed to C{onResult} when the probe fires.
        """
        self.start()
        self.probe.calls[0].callback(OK)
        self.assertEqual(self.results, [OK])
        self.assertFalse(self.check.pending)

    def test_intervalRespected(self) -> None:
        """
        The next probe starts C{interval} seconds after the previous one
        started, not earlier.
        """
        self.start()
        self.clock.advance(0.5)
        self.probe.calls[0].callback(OK)
        self.clock.advance(1.4)
        self.assertEqual(len(self.probe.calls), 1)
        self.clock.advance(0.1)
        self.assertEqual(len(self.probe.calls), 2)
        self.probe.calls[1].callback(BAD)
        self.clock.advance(2.0)
        self.assertEqual(len(self.probe.calls), 3)
        self.assertEqual(self.results, [OK, BAD])

    def test_tickSkippedWhilePending(self) -> None:
        """
        With a C{timeout} longer than C{interval}, a tick that comes while
        the previous probe is pending starts no probe and is logged; the
        next tick after the result does.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.check = HealthCheck(
            self.clock, self.probe, 2.0, self.results.append, timeout=5.0
        )
        self.start()
        self.clock.advance(2.0)
        self.clock.advance(2.0)
        self.assertEqual(len(self.probe.calls), 1)
        skipped = [e for e in events if "skipping" in e["log_format"]]
        self.assertEqual(len(skipped), 2)
        self.assertIs(skipped[0]["probe"], self.probe)
        self.probe.calls[0].callback(OK)
        self.assertEqual(len(self.probe.calls), 1)
        self.clock.advance(2.0)
        self.assertEqual(len(self.probe.calls), 2)
        self.assertEqual(self.results, [OK])

    def test_stuckProbeDoesNotStallOtherChecks(self) -> None:
        """
        Probes that never fire do not delay a second check on the same
        clock, and their own check goes on probing every C{interval}.
        """
        otherProbe = _FakeProbe()
        otherResults: list[ProbeResult] = []
        other = self.start(
            HealthCheck(self.clock, otherProbe, 1.0, otherResults.append)
        )
        self.start()
        for i in range(6):
            otherProbe.calls[-1].callback(OK)
            self.clock.advance(1.0)
        self.assertEqual(len(otherProbe.calls), 7)
        self.assertEqual(otherResults, [OK] * 6)
        self.assertEqual(len(self.probe.calls), 4)
        self.assertEqual(
            self.results, [ProbeResult(False, "timed out after 1.0s", 1.0)] * 3
        )
        self.assertTrue(other.running)

    def test_onResultExceptionLogged(self) -> None:
        """
        An exception raised by C{onResult} is logged and the checks go on.
        """
        calls: list[ProbeResult] = []

        def onResult(result: ProbeResult) -> None:
            calls.append(result)
            raise ZeroDivisionError("handler bug")

        check = self.start(HealthCheck(self.clock, self.probe, 2.0, onResult))
        self.probe.calls[0].callback(OK)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.clock.advance(2.0)
        self.probe.calls[1].callback(BAD)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(calls, [OK, BAD])
        self.assertTrue(check.running)

    def test_stopCancelsPendingProbe(self) -> None:
        """
        Stopping the service cancels a pending probe, reports no result and
        starts no more probes.
        """
        self.start()
        self.check.stopService()
        self.assertEqual(self.probe.cancelled, 1)
        self.assertFalse(self.check.pending)
        self.clock.advance(10.0)
        self.assertEqual(len(self.probe.calls), 1)
        self.assertEqual(self.results, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopWithoutPendingProbe(self) -> None:
        """
        Stopping between probes stops the loop and cancels nothing.
        """
        self.start()
        self.probe.calls[0].callback(OK)
        self.check.stopService()
        self.assertEqual(self.probe.cancelled, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_restart(self) -> None:
        """
        A stopped check can be started again and probes at once.
        """
        self.start()
        self.check.stopService()
        self.check.startService()
        self.assertEqual(len(self.probe.calls), 2)
        self.probe.calls[1].callback(OK)
        self.assertEqual(self.results, [OK])

    def test_probeRaisingIsAFailure(self) -> None:
        """
        A probe that raises synchronously is logged and reported as a failed
        result, and the loop goes on.
        """
        self.probe.error = RuntimeError("probe bug")
        self.start()
        self.assertEqual(
            self.results, [ProbeResult(False, "RuntimeError: probe bug", 0.0)]
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.probe.error = None
        self.clock.advance(2.0)
        self.assertEqual(len(self.probe.calls), 1)
        self.probe.calls[0].callback(OK)
        self.assertEqual(self.results[-1], OK)

    def test_probeErrbackIsAFailure(self) -> None:
        """
        A probe whose L{Deferred} errbacks, against its contract, is logged
        and reported as a failed result.
        """
        self.start()
        self.clock.advance(0.5)
        self.probe.calls[0].errback(KeyError("oops"))
        self.assertEqual(self.results, [ProbeResult(False, "KeyError: 'oops'", 0.5)])
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.clock.advance(1.5)
        self.assertEqual(len(self.probe.calls), 2)

    def test_synchronousProbe(self) -> None:
        """
        A probe that fires before returning is reported and does not count as
        pending.
        """
        results = iter([OK, BAD])

        @implementer(IHealthProbe)
        class Immediate:
            timeout = 1.0

            def probe(self) -> Deferred[ProbeResult]:
                d: Deferred[ProbeResult] = Deferred()
                d.callback(next(results))
                return d

        check = self.start(
            HealthCheck(self.clock, Immediate(), 1.0, self.results.append)
        )
        self.assertFalse(check.pending)
        self.clock.advance(1.0)
        self.assertEqual(self.results, [OK, BAD])


class _NeverProbe:
    """
    A probe whose L{Deferred} never fires, not even when it is cancelled.

    @ivar calls: The L{Deferred} of every probe started, in order.
    """

    timeout = 1.0

    def __init__(self) -> None:
        self.calls: list[Deferred[ProbeResult]] = []

    def probe(self) -> Deferred[ProbeResult]:
        d: Deferred[ProbeResult] = Deferred()
        # A paused Deferred runs no callbacks, even after cancel().
        d.pause()
        self.calls.append(d)
        return d


class HealthCheckDeadlineTests(SynchronousTestCase):
    """
    Every probe of a L{HealthCheck} has a deadline that always fires.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.results: list[ProbeResult] = []

    def start(self, probe: IHealthProbe, **kwargs: float) -> HealthCheck:
        """
        Start a check of C{probe} every 2 seconds, stopped at the end of the
        test.
        """
        check = HealthCheck(self.clock, probe, 2.0, self.results.append, **kwargs)
        check.startService()
        self.addCleanup(lambda: check.stopService() if check.running else None)
        return check

    def test_deadlineIsAFailure(self) -> None:
        """
        A probe still pending at its deadline (the probe's C{timeout}) is
        reported as a failure that says "timed out", is cancelled and is no
        longer pending.
        """
        probe = _FakeProbe()
        check = self.start(probe)
        self.clock.advance(0.999)
        self.assertEqual(self.results, [])
        self.clock.advance(0.001)
        self.assertEqual(
            self.results, [ProbeResult(False, "timed out after 1.0s", 1.0)]
        )
        self.assertEqual(probe.cancelled, 1)
        self.assertFalse(check.pending)

    def test_probeThatNeverFires(self) -> None:
        """
        A probe whose L{Deferred} never fires, even when cancelled, does not
        freeze the checks: each tick probes again, and each probe fails at
        its deadline.
        """
        probe = _NeverProbe()
        check = self.start(probe)
        for _ in range(3):
            self.clock.advance(1.0)
            self.assertFalse(check.pending)
            self.clock.advance(1.0)
        self.assertEqual(len(probe.calls), 4)
        self.assertEqual(
            self.results, [ProbeResult(False, "timed out after 1.0s", 1.0)] * 3
        )
        self.assertTrue(check.pending)

    def test_explicitTimeout(self) -> None:
        """
        A C{timeout} given to the check overrides the probe's own.
        """
        probe = _NeverProbe()
        check = self.start(probe, timeout=0.25)
        self.assertEqual(check.timeout, 0.25)
        self.clock.advance(0.25)
        self.assertEqual(
            self.results, [ProbeResult(False, "timed out after 0.25s", 0.25)]
        )

    def test_lateResultIgnored(self) -> None:
        """
        What a probe reports after its deadline (here: a passed result when
        it is cancelled) is ignored; the timeout is the only result.
        """

        @implementer(IHealthProbe)
        class PassesWhenCancelled:
            timeout = 1.0

            def probe(self) -> Deferred[ProbeResult]:
                return Deferred(lambda d: d.callback(OK))

        check = self.start(PassesWhenCancelled())
        self.clock.advance(1.0)
        self.assertEqual(
            self.results, [ProbeResult(False, "timed out after 1.0s", 1.0)]
        )
        self.assertFalse(check.pending)

    def test_resultCancelsDeadline(self) -> None:
        """
        A probe that fires in time cancels its deadline: only the loop's
        next tick stays scheduled.
        """
        probe = _FakeProbe()
        self.start(probe)
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)
        probe.calls[0].callback(OK)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(5.0)
        self.assertEqual(self.results, [OK])

    def test_stopCancelsDeadline(self) -> None:
        """
        Stopping the check cancels the pending probe's deadline.
        """
        probe = _FakeProbe()
        check = self.start(probe)
        check.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.results, [])


class HealthCheckLoopRestartTests(SynchronousTestCase):
    """
    A L{HealthCheck} whose looping call dies restarts it.
    """

    def test_loopRestarted(self) -> None:
        """
        A tick that raises (here: a probe that returns something other than
        a L{Deferred}) is logged as an error with its traceback, and the
        loop starts again one C{interval} later.
        """
        clock = Clock()
        results: list[ProbeResult] = []
        answers: list[object] = [None, succeed(OK), succeed(BAD)]

        @implementer(IHealthProbe)
        class Broken:
            timeout = 1.0

            def probe(self) -> Deferred[ProbeResult]:
                return answers.pop(0)  # type: ignore[return-value]

        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        check = HealthCheck(clock, Broken(), 2.0, results.append)
        check.startService()
        self.addCleanup(check.stopService)
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)
        died = [e for e in events if "died" in e["log_format"]]
        self.assertEqual(len(died), 1)
        self.assertEqual(died[0]["log_level"], LogLevel.error)
        self.assertIn("Traceback", died[0]["log_failure"].getTraceback())
        self.assertEqual(results, [])
        clock.advance(2.0)
        self.assertEqual(results, [OK])
        clock.advance(2.0)
        self.assertEqual(results, [OK, BAD])
        self.assertTrue(check.running)


class ProbeForTests(SynchronousTestCase):
    """
    Tests for L{probeFor}.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.agent = _HangingAgent()

    def build(self, pool: PoolConfig) -> IHealthProbe | None:
        """
        Call L{probeFor} for the pool's first backend.
        """
        return probeFor(self.reactor, self.agent, pool, pool.backends[0])

    def test_none(self) -> None:
        """
        No probe is made when checks are off.
        """
        self.assertIsNone(self.build(_pool("none")))

    def test_http(self) -> None:
        """
        An HTTP check GETs the health path on the backend's address with the
        backend's address as C{Host}.
        """
        pool = _pool("http")
        probe = self.build(pool)
        assert isinstance(probe, HTTPProbe)
        self.assertEqual(probe.url, b"http://127.0.0.1:9001/healthz")
        self.assertIs(probe.healthConfig, pool.health)
        probe.probe()
        [(method, uri, headers)] = self.agent.requests
        self.assertEqual((method, uri), (b"GET", b"http://127.0.0.1:9001/healthz"))
        assert headers is not None
        self.assertEqual(headers.getRawHeaders(b"host"), [b"127.0.0.1:9001"])

    def test_httpUsesReactorAsClock(self) -> None:
        """
        An HTTP probe times out on the reactor's clock after the pool's
        timeout.
        """
        probe = self.build(_pool("http"))
        assert probe is not None
        d = probe.probe()
        self.reactor.advance(0.5)
        self.assertEqual(self.successResultOf(d).detail, "timed out after 0.5s")

    def test_httpIPv6(self) -> None:
        """
        An IPv6 backend's address is bracketed in the URL and C{Host}.
        """
        probe = self.build(_pool("http", "http://[::1]:9001"))
        assert isinstance(probe, HTTPProbe)
        self.assertEqual(probe.url, b"http://[::1]:9001/healthz")
        self.assertEqual(probe.host, b"[::1]:9001")

    def test_httpNeedsAnAgent(self) -> None:
        """
        An HTTP check without an agent is a L{ValueError}; the other checks
        need none.
        """
        pool = _pool("http")
        self.assertRaises(
            ValueError, probeFor, self.reactor, None, pool, pool.backends[0]
        )
        pool = _pool("tcp")
        probe = probeFor(self.reactor, None, pool, pool.backends[0])
        self.assertIsInstance(probe, TCPProbe)

    def test_tcp(self) -> None:
        """
        A TCP check connects to the backend's host and port with the pool's
        timeout.
        """
        probe = self.build(_pool("tcp", "http://[::1]:9002"))
        assert isinstance(probe, TCPProbe)
        self.assertEqual((probe.host, probe.port, probe.timeout), ("::1", 9002, 0.5))
        probe.probe()
        self.assertEqual(self.reactor.tcpClients[0][:2], ("::1", 9002))


class HealthAgentTests(SynchronousTestCase):
    """
    Tests for L{healthAgent}.
    """

    def test_connectionClose(self) -> None:
        """
        A probe through the production agent opens its own connection and
        asks the backend to close it after the response.
        """
        reactor = MemoryReactorClock()
        probe = HTTPProbe(
            healthAgent(reactor),
            b"http://127.0.0.1:9001/healthz",
            HealthCheckConfig(),
            reactor,
            host=b"127.0.0.1:9001",
        )
        d = probe.probe()
        host, port, factory, timeout, bindAddress = reactor.tcpClients[0]
        self.assertEqual((host, port), ("127.0.0.1", 9001))
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport()
        protocol.makeConnection(transport)
        head = transport.value().lower()
        self.assertTrue(head.startswith(b"get /healthz http/1.1\r\n"), head)
        self.assertIn(b"\r\nconnection: close\r\n", head)
        self.assertIn(b"\r\nhost: 127.0.0.1:9001\r\n", head)
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
        self.assertEqual(self.successResultOf(d), ProbeResult(True, "HTTP 200", 0.0))


class HealthCheckPauseTests(SynchronousTestCase):
    """
    Health checks of a disabled backend are paused.
    """

    def test_noProbesWhilePaused(self) -> None:
        """
        No probe is sent while C{paused} returns C{True}; probing resumes
        when it returns C{False}.
        """
        clock = Clock()
        probes: list[Deferred[ProbeResult]] = []

        @implementer(IHealthProbe)
        class Probe:
            timeout = 1.0

            def probe(self) -> Deferred[ProbeResult]:
                d: Deferred[ProbeResult] = Deferred()
                probes.append(d)
                d.callback(ProbeResult(True, "ok", 0.0))
                return d

        paused = [True]
        check = HealthCheck(clock, Probe(), 1.0, lambda r: None, lambda: paused[0])
        check.startService()
        clock.advance(3)
        self.assertEqual(probes, [])
        paused[0] = False
        clock.advance(1)
        self.assertEqual(len(probes), 1)
        check.stopService()
