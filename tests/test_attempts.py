"""
Tests for L{lbtwist.attempts}: leases and the retry rules.
"""

from __future__ import annotations

from typing import Collection

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from lbtwist.attempts import Attempts, Lease
from lbtwist.backend import Backend
from lbtwist.failures import UpstreamFailure
from lbtwist.pool import BackendPool
from lbtwist.strategies import Choice

from .doubles import makeConfig


def build(retries: int = 2) -> tuple[Clock, BackendPool, Attempts]:
    clock = Clock()
    pool = BackendPool(makeConfig().pools[0])

    def choose(now: float, tried: Collection[Backend]) -> Choice | None:
        return pool.choose(now, exclude=tried)

    return clock, pool, Attempts(clock, choose, retries, "GET /")


REFUSED = UpstreamFailure("connect_refused", "connection refused")
LOST = UpstreamFailure("connection_lost", "connection lost before the response")
TIMEOUT = UpstreamFailure("response_timeout", "response timeout")


class LeaseTests(SynchronousTestCase):
    """
    Tests for L{Lease}.
    """

    def test_releasedOnce(self) -> None:
        """
        A lease counts one request in flight until released; releasing it
        again changes nothing.
        """
        _, pool, _ = build()
        backend = pool.backends[0]
        lease = Lease(backend, 0.0)
        self.assertEqual((backend.active, backend.requests), (1, 1))
        lease.release()
        lease.release()
        self.assertEqual((backend.active, backend.requests), (0, 1))
        self.assertFalse(lease.held)


class AttemptsTests(SynchronousTestCase):
    """
    Tests for L{Attempts}.
    """

    def test_neverTheSameBackendTwice(self) -> None:
        """
        Each attempt goes to a backend not tried yet; then none is left.
        """
        _, pool, attempts = build()
        first = attempts.next()
        assert first is not None
        self.assertTrue(attempts.failed(first, REFUSED))
        second = attempts.next()
        assert second is not None
        self.assertNotEqual(first.backend, second.backend)
        self.assertFalse(attempts.failed(second, REFUSED) and attempts.next())

    def test_notSentRetried(self) -> None:
        """
        A failure before sending is retried when the caller has no reason
        against it, and releases the lease.
        """
        _, _, attempts = build()
        lease = attempts.next()
        assert lease is not None
        self.assertTrue(attempts.failed(lease, REFUSED))
        self.assertEqual(lease.backend.active, 0)

    def test_sentNotReplayable(self) -> None:
        """
        A failure after sending is not retried when the request cannot be
        replayed, and the access log reason says why.
        """
        _, _, attempts = build()
        lease = attempts.next()
        assert lease is not None
        self.assertFalse(attempts.failed(lease, LOST, "POST is not idempotent"))
        self.assertIn("not retried: POST is not idempotent", attempts.retryReasons[0])
        self.assertEqual(attempts.giveUpStatus(), 502)

    def test_retriesLimit(self) -> None:
        """
        No more than C{retries} further attempts are made.
        """
        _, _, attempts = build(retries=0)
        lease = attempts.next()
        assert lease is not None
        self.assertFalse(attempts.failed(lease, LOST))

    def test_giveUpStatus(self) -> None:
        """
        503 when no backend was available, 504 after a timeout, else 502.
        """
        _, pool, attempts = build()
        for backend in pool.backends:
            backend.state = backend.state.DOWN
        self.assertIsNone(attempts.next())
        self.assertEqual(attempts.giveUpStatus(), 503)
        _, _, attempts = build()
        lease = attempts.next()
        assert lease is not None
        attempts.failed(lease, TIMEOUT)
        self.assertEqual(attempts.giveUpStatus(), 504)

    def test_failureCounted(self) -> None:
        """
        A failed attempt is counted in the backend's statistics.
        """
        clock, _, attempts = build()
        lease = attempts.next()
        assert lease is not None
        clock.advance(0.5)
        attempts.failed(lease, REFUSED)
        self.assertEqual(lease.backend.stats.failures["connect_refused"], 1)

    def test_passiveHealthCountsOnlyConnectFailuresAndTimeouts(self) -> None:
        """
        Connection failures and response timeouts count toward
        C{passive_fall}; invalid responses and lost connections count only in
        the statistics.
        """
        for failure, counts in [
            (REFUSED, True),
            (UpstreamFailure("connect_timeout", "connect timeout"), True),
            (UpstreamFailure("connect_error", "cannot connect"), True),
            (TIMEOUT, True),
            (UpstreamFailure("invalid_response", "invalid response"), False),
            (LOST, False),
        ]:
            with self.subTest(kind=failure.kind):
                _, pool, attempts = build(retries=0)
                lease = attempts.next()
                assert lease is not None
                backend = lease.backend
                for _ in range(pool.config.health.passive_fall):
                    attempts.failed(Lease(backend, 0.0), failure)
                self.assertEqual(backend.state is backend.state.DOWN, counts)
                self.assertEqual(
                    backend.stats.failures[failure.statsKind],
                    pool.config.health.passive_fall,
                )


class WhenReadyTests(SynchronousTestCase):
    """
    L{Attempts.whenReady}: the first attempt waits for the pool's first
    round of health checks, on the injected clock, never past its deadline.
    """

    def build(self, **health: object) -> tuple[Clock, BackendPool, Attempts]:
        clock = Clock()
        pool = BackendPool(makeConfig(health=dict(health)).pools[0])

        def choose(now: float, tried: Collection[Backend]) -> Choice | None:
            return pool.choose(now, exclude=tried)

        return clock, pool, Attempts(clock, choose, 2, "GET /", pool)

    def test_atOnceWithoutChecks(self) -> None:
        """
        With C{check = "none"} there is nothing to wait for.
        """
        clock, pool, attempts = self.build(check="none")
        calls: list[float] = []
        attempts.whenReady(lambda: calls.append(clock.seconds()))
        self.assertEqual(calls, [0.0])

    def test_atOnceWithoutAPool(self) -> None:
        """
        Attempts without a pool (one fixed backend) never wait.
        """
        clock = Clock()
        attempts = Attempts(clock, lambda now, tried: None, 0, "GET /")
        calls: list[int] = []
        attempts.whenReady(lambda: calls.append(1))
        self.assertEqual(calls, [1])

    def test_untilABackendIsUp(self) -> None:
        """
        The wait ends right after the check result that brings a backend
        up is recorded, not while it is.
        """
        clock, pool, attempts = self.build(check="tcp")
        a, b = pool.backends
        calls: list[float] = []
        attempts.whenReady(lambda: calls.append(clock.seconds()))
        clock.advance(0.25)
        a.checkResult(False, "connection refused", clock.seconds())
        clock.advance(0)
        self.assertEqual(calls, [])
        clock.advance(0.25)
        b.checkResult(True, "connected", clock.seconds())
        self.assertEqual(calls, [])
        clock.advance(0)
        self.assertEqual(calls, [0.5])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_untilTheRoundIsComplete(self) -> None:
        """
        When every backend's first check failed there is nothing more to
        wait for: the attempt is made (and finds no backend).
        """
        clock, pool, attempts = self.build(check="tcp")
        calls: list[float] = []
        attempts.whenReady(lambda: calls.append(clock.seconds()))
        for backend in pool.backends:
            backend.checkResult(False, "connection refused", 0.1)
        clock.advance(0)
        self.assertEqual(calls, [0.0])
        self.assertIsNone(attempts.next())
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_deadlineAlwaysFires(self) -> None:
        """
        Without any check result the wait ends after the pool's check
        C{timeout}.
        """
        clock, pool, attempts = self.build(check="tcp", timeout=0.75)
        calls: list[float] = []
        attempts.whenReady(lambda: calls.append(clock.seconds()))
        clock.advance(0.7)
        self.assertEqual(calls, [])
        clock.advance(0.05)
        self.assertEqual(calls, [0.75])
        self.assertEqual(clock.getDelayedCalls(), [])
        # A late result does not call again.
        pool.backends[0].checkResult(True, "connected", 1.0)
        clock.advance(1)
        self.assertEqual(calls, [0.75])

    def test_cancel(self) -> None:
        """
        A cancelled wait never proceeds and leaves no timer.
        """
        clock, pool, attempts = self.build(check="tcp")
        calls: list[int] = []
        attempts.whenReady(lambda: calls.append(1))
        attempts.cancel()
        self.assertEqual(clock.getDelayedCalls(), [])
        pool.backends[0].checkResult(True, "connected", 0.0)
        clock.advance(5)
        self.assertEqual(calls, [])
