"""
Tests for L{lbtwist.attempts}: leases and the retry rules.
"""

from __future__ import annotations

from typing import Collection

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from lbtwist.attempts import Attempts, Lease
from lbtwist.backend import Backend, BackendState
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


def limitedPool(
    limits: tuple[int | None, ...] = (1, 1), **poolOptions: object
) -> BackendPool:
    """
    A pool C{app} of backends C{a}, C{b}... with these C{max_connections}
    (L{None}: no limit), without health checks.
    """
    backends: list[dict[str, object]] = []
    for index, limit in enumerate(limits):
        backend: dict[str, object] = {
            "url": f"http://127.0.0.1:{9001 + index}",
            "name": "abcdefgh"[index],
        }
        if limit is not None:
            backend["max_connections"] = limit
        backends.append(backend)
    return BackendPool(makeConfig(backend=backends, **poolOptions).pools[0])


class _Request:
    """
    A request as the proxies make it: its first attempt when ready, waiting
    in the queue when no backend has room, giving up when L{Attempts} says
    so.
    """

    def __init__(self, clock: Clock, pool: BackendPool, retries: int = 2) -> None:
        self.attempts = Attempts(
            clock,
            lambda now, tried: pool.choose(now, tried),
            retries,
            "GET /",
            pool,
        )
        self.leases: list[Lease] = []
        self.gaveUp = False

    def start(self) -> _Request:
        self.attempts.whenReady(self.attempt)
        return self

    def attempt(self) -> None:
        lease = self.attempts.next()
        if lease is None:
            if not self.attempts.wait(self.attempt):
                self.gaveUp = True
            return
        self.leases.append(lease)

    @property
    def lease(self) -> Lease:
        return self.leases[-1]


class QueueTests(SynchronousTestCase):
    """
    Requests wait in their pool's queue while every available backend is at
    its C{max_connections} (L{Attempts.wait}, L{lbtwist.pool.PoolQueue}).
    """

    def test_waitsForAFreedSlot(self) -> None:
        """
        With both backends full, a request waits (no lease, no 503); when a
        lease is released, it takes that slot, and no timer is left.
        """
        clock = Clock()
        pool = limitedPool()
        first, second = _Request(clock, pool).start(), _Request(clock, pool).start()
        waiting = _Request(clock, pool).start()
        self.assertEqual((waiting.leases, waiting.gaveUp), ([], False))
        self.assertEqual(len(pool.queue), 1)
        self.assertTrue(waiting.attempts.waiting)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(1.0)
        second.lease.release()
        self.assertEqual(len(waiting.leases), 1)
        self.assertIs(waiting.lease.backend, second.lease.backend)
        self.assertEqual(waiting.lease.started, 1.0)
        self.assertEqual((len(pool.queue), clock.getDelayedCalls()), (0, []))
        self.assertFalse(waiting.attempts.waiting)
        self.assertEqual([b.active for b in pool.backends], [1, 1])
        self.assertEqual(waiting.attempts.tried, [second.lease.backend])

    def test_oldestFirstAndExactlyOne(self) -> None:
        """
        Each freed slot wakes exactly one waiting request, the oldest.
        """
        clock = Clock()
        pool = limitedPool()
        holders = [_Request(clock, pool).start() for _ in range(2)]
        waiting = [_Request(clock, pool).start() for _ in range(3)]
        self.assertEqual(len(pool.queue), 3)
        holders[0].lease.release()
        self.assertEqual([len(w.leases) for w in waiting], [1, 0, 0])
        self.assertEqual(len(pool.queue), 2)
        holders[1].lease.release()
        self.assertEqual([len(w.leases) for w in waiting], [1, 1, 0])
        waiting[0].lease.release()
        self.assertEqual([len(w.leases) for w in waiting], [1, 1, 1])
        self.assertEqual((len(pool.queue), clock.getDelayedCalls()), (0, []))

    def test_timeout(self) -> None:
        """
        After C{queue_timeout} the request leaves the queue and gives up
        with 503 and a reason naming the timeout and the pool; the timeout
        is counted.
        """
        clock = Clock()
        pool = limitedPool(queue_timeout=2.5)
        holders = [_Request(clock, pool).start() for _ in range(2)]
        waiting = _Request(clock, pool).start()
        clock.advance(2.4)
        self.assertFalse(waiting.gaveUp)
        clock.advance(0.1)
        self.assertTrue(waiting.gaveUp)
        attempts = waiting.attempts
        self.assertEqual(attempts.giveUpStatus(), 503)
        reason = 'queue timeout after 2.5s in pool "app"'
        self.assertEqual(attempts.giveUpReason(), reason)
        self.assertEqual(attempts.retryReasons, [reason])
        self.assertEqual(attempts.queueProblem, "queue timeout")
        self.assertEqual(
            (len(pool.queue), pool.queue.timeouts, clock.getDelayedCalls()),
            (0, 1, []),
        )
        # A slot freed later goes to nobody.
        holders[0].lease.release()
        self.assertEqual(waiting.leases, [])
        self.assertEqual(pool.backends[0].active, 0)

    def test_queueFull(self) -> None:
        """
        Beyond C{max_queue} waiting requests, a request gives up at once
        with a reason saying so; it is counted, and starts no timer.
        """
        clock = Clock()
        pool = limitedPool(max_queue=2)
        for _ in range(2 + 2):
            _Request(clock, pool).start()
        self.assertEqual(len(pool.queue), 2)
        refused = _Request(clock, pool).start()
        self.assertTrue(refused.gaveUp)
        self.assertEqual(refused.attempts.giveUpStatus(), 503)
        self.assertEqual(
            refused.attempts.giveUpReason(), 'queue full (2 waiting) in pool "app"'
        )
        self.assertEqual(refused.attempts.queueProblem, "queue full")
        self.assertEqual((len(pool.queue), pool.queue.rejected), (2, 1))
        self.assertEqual(len(clock.getDelayedCalls()), 2)

    def test_noQueue(self) -> None:
        """
        With C{max_queue = 0}, a request that finds every backend full gets
        503 at once.
        """
        clock = Clock()
        pool = limitedPool(max_queue=0)
        [_Request(clock, pool).start() for _ in range(2)]
        refused = _Request(clock, pool).start()
        self.assertTrue(refused.gaveUp)
        self.assertIn("has no queue (max_queue = 0)", refused.attempts.giveUpReason())
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_cancelLeavesTheQueue(self) -> None:
        """
        A request that ends while waiting (its client went away) leaves the
        queue and cancels its timer; a later freed slot goes to the next
        one.
        """
        clock = Clock()
        pool = limitedPool()
        holders = [_Request(clock, pool).start() for _ in range(2)]
        gone = _Request(clock, pool).start()
        later = _Request(clock, pool).start()
        gone.attempts.cancel()
        self.assertEqual(len(pool.queue), 1)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        holders[0].lease.release()
        self.assertEqual((gone.leases, len(later.leases)), ([], 1))
        self.assertEqual((len(pool.queue), clock.getDelayedCalls()), (0, []))
        clock.advance(10.0)
        self.assertFalse(gone.gaveUp)

    def test_noBackendAvailableIsNotQueued(self) -> None:
        """
        When no backend is available at all (down, not full), the request
        is not queued: 503 at once, saying why.
        """
        clock = Clock()
        pool = limitedPool()
        for backend in pool.backends:
            backend.setState(BackendState.DISABLED, "test", 0.0)
        request = _Request(clock, pool).start()
        self.assertTrue(request.gaveUp)
        self.assertIsNone(request.attempts.queueProblem)
        self.assertIn("2 of 2 disabled", request.attempts.giveUpReason())
        self.assertEqual((len(pool.queue), clock.getDelayedCalls()), (0, []))

    def test_unlimitedBackendNeverFull(self) -> None:
        """
        A backend without C{max_connections} takes any number of requests,
        and a pool without limits never queues or links its backends to
        its queue.
        """
        clock = Clock()
        pool = limitedPool((None, None))
        self.assertFalse(pool.limited)
        self.assertEqual([b.queue for b in pool.backends], [None, None])
        requests = [_Request(clock, pool).start() for _ in range(50)]
        self.assertTrue(all(r.leases for r in requests))
        mixed = limitedPool((1, None))
        self.assertTrue(mixed.limited)
        self.assertEqual(
            [b.queue for b in mixed.backends], [mixed.queue, None]
        )

    def test_slotThatAppearsServesTheOldestFirst(self) -> None:
        """
        A slot that opens without a release (a backend comes up) goes to
        the oldest waiting request, not to a newcomer, which waits behind
        it.
        """
        clock = Clock()
        pool = limitedPool()
        a, b = pool.backends
        b.setState(BackendState.DISABLED, "test", 0.0)
        holder = _Request(clock, pool).start()
        self.assertIs(holder.lease.backend, a)
        oldest = _Request(clock, pool).start()
        self.assertEqual(len(pool.queue), 1)
        b.setState(BackendState.UP, "test", 1.0)
        newcomer = _Request(clock, pool).start()
        self.assertIs(oldest.lease.backend, b)
        self.assertEqual(newcomer.leases, [])
        self.assertTrue(newcomer.attempts.waiting)
        holder.lease.release()
        self.assertIs(newcomer.lease.backend, a)
        self.assertEqual((len(pool.queue), clock.getDelayedCalls()), (0, []))

    def test_retryWaitsForABackendNotTried(self) -> None:
        """
        A retry after a failed attempt may wait in the queue too, for a
        backend it was not tried on: a slot freed on the backend that
        failed goes to another request.
        """
        clock = Clock()
        pool = limitedPool((1, 1, 1))
        a, b, c = pool.backends
        failing = _Request(clock, pool).start()
        self.assertIs(failing.lease.backend, a)
        holders = [_Request(clock, pool).start() for _ in range(2)]
        self.assertTrue(failing.attempts.failed(failing.lease, REFUSED))
        failing.attempt()
        self.assertTrue(failing.attempts.waiting)
        other = _Request(clock, pool).start()
        # a's slot is free again, and taken by the newcomer: the retry
        # waits for b or c.
        self.assertIs(other.lease.backend, a)
        other.lease.release()
        self.assertEqual(len(failing.leases), 1)
        self.assertEqual(a.active, 0)
        holders[1].lease.release()
        self.assertIs(failing.lease.backend, c)
        self.assertEqual(failing.attempts.tried, [a, c])
        self.assertEqual((len(pool.queue), clock.getDelayedCalls()), (0, []))

    def test_retryTimeoutIs503(self) -> None:
        """
        A retry that waits too long in the queue gives up with 503 and the
        queue's reason after the failed attempt's.
        """
        clock = Clock()
        pool = limitedPool((1, 1))
        failing = _Request(clock, pool).start()
        _Request(clock, pool).start()
        failing.attempts.failed(failing.lease, TIMEOUT)
        failing.attempt()
        clock.advance(5.0)
        self.assertTrue(failing.gaveUp)
        self.assertEqual(failing.attempts.giveUpStatus(), 503)
        self.assertEqual(
            failing.attempts.retryReasons,
            [
                "a: response timeout",
                'queue timeout after 5.0s in pool "app"',
            ],
        )

    def test_wokenRequestThatEndedGivesTheSlotBack(self) -> None:
        """
        A request woken whose proceed does not take the lease (it ended
        meanwhile) gives the slot back, to the next waiting request.
        """
        clock = Clock()
        pool = limitedPool((1,))
        holder = _Request(clock, pool).start()
        ended = _Request(clock, pool).start()
        ended.attempt = lambda: None  # type: ignore[method-assign]
        ended.attempts._proceed = ended.attempt
        nextOne = _Request(clock, pool).start()
        holder.lease.release()
        self.assertEqual(ended.leases, [])
        self.assertEqual(len(nextOne.leases), 1)
        self.assertEqual(pool.backends[0].active, 1)
        self.assertEqual((len(pool.queue), clock.getDelayedCalls()), (0, []))
