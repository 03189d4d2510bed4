# -*- test-case-name: tests.test_pool -*-
"""
Tests for L{lbtwist.pool}.
"""

from __future__ import annotations

from random import Random
from typing import Collection

from twisted.trial.unittest import SynchronousTestCase

from lbtwist.backend import Backend, BackendState
from lbtwist.config import BackendConfig, HealthCheckConfig, PoolConfig
from lbtwist.pool import BackendPool
from lbtwist.strategies import (
    Choice,
    LeastConnections,
    RoundRobin,
    WeightedRoundRobin,
)


def makePool(
    strategy: str = "round-robin",
    check: str = "none",
    weights: tuple[int, ...] = (1, 1, 1),
    cooldown: float = 10.0,
    max_connections: tuple[int | None, ...] = (None, None, None),
    **keys: object,
) -> BackendPool:
    """
    Make a pool C{app} of backends C{a}, C{b}, C{c}... on 127.0.0.1:9001 and
    up.

    @param strategy: The strategy's name.
    @param check: The kind of active health check.
    @param weights: One weight per backend.
    @param cooldown: Seconds a passively failed backend is skipped.
    @param max_connections: One C{max_connections} per backend.
    @return: The pool.
    """
    backends = tuple(
        BackendConfig(
            url=f"http://127.0.0.1:{9001 + index}",
            scheme="http",
            host="127.0.0.1",
            port=9001 + index,
            name="abcdefgh"[index],
            weight=weight,
            max_connections=(
                max_connections[index] if index < len(max_connections) else None
            ),
        )
        for index, weight in enumerate(weights)
    )
    return BackendPool(
        PoolConfig(
            name="app",
            backends=backends,
            strategy=strategy,
            passive_cooldown=cooldown,
            health=HealthCheckConfig(check=check, rise=2, fall=3),
            **keys,  # type: ignore[arg-type]
        ),
        random=Random(1),
    )


def chooseMany(
    pool: BackendPool, count: int, now: float = 0.0, exclude: Collection[Backend] = ()
) -> str:
    """
    Choose C{count} times and spell out the names chosen.

    @param pool: The pool to choose from.
    @param count: How many choices.
    @param now: The time to choose at.
    @param exclude: Backends not to choose.
    @return: The chosen names concatenated, C{-} for L{None}.
    """
    names = []
    for _ in range(count):
        choice = pool.choose(now, exclude)
        names.append("-" if choice is None else choice.backend.name)
    return "".join(names)


class BackendPoolTests(SynchronousTestCase):
    """
    Tests for L{BackendPool}.
    """

    def test_buildsBackendsFromConfig(self) -> None:
        """
        The pool has one backend per configured backend, in order, with the
        pool's name and the configured weights.
        """
        pool = makePool(weights=(5, 1, 1))
        self.assertEqual(pool.name, "app")
        self.assertEqual(
            [(b.pool, b.name, b.address, b.weight) for b in pool.backends],
            [
                ("app", "a", "127.0.0.1:9001", 5),
                ("app", "b", "127.0.0.1:9002", 1),
                ("app", "c", "127.0.0.1:9003", 1),
            ],
        )

    def test_strategyFromConfig(self) -> None:
        """
        The pool uses the strategy its configuration names.
        """
        for name, cls, weights, expected in [
            ("round-robin", RoundRobin, (5, 1, 1), "abcabca"),
            ("weighted-round-robin", WeightedRoundRobin, (5, 1, 1), "aabacaa"),
            ("least-connections", LeastConnections, (5, 1, 1), "abcabca"),
        ]:
            with self.subTest(strategy=name):
                pool = makePool(strategy=name, weights=weights)
                self.assertIsInstance(pool.strategy, cls)
                self.assertEqual(chooseMany(pool, 7), expected)

    def test_backendByName(self) -> None:
        """
        L{BackendPool.backend} finds a backend by its name.
        """
        pool = makePool()
        self.assertIs(pool.backend("b"), pool.backends[1])

    def test_unknownBackendName(self) -> None:
        """
        L{BackendPool.backend} raises L{KeyError} for an unknown name.
        """
        self.assertRaises(KeyError, makePool().backend, "z")

    def test_nothingChosenBeforeFirstCheck(self) -> None:
        """
        With active checks, no backend is chosen before its first check
        passes.
        """
        pool = makePool(check="http")
        self.assertEqual(chooseMany(pool, 3), "---")
        pool.backend("b").checkResult(True, "HTTP 200", 1.0)
        self.assertEqual(chooseMany(pool, 3, 1.0), "bbb")

    def test_skipsBackendsThatAreDown(self) -> None:
        """
        Backends that are down are not chosen.
        """
        pool = makePool(check="http")
        for name in ["a", "c"]:
            pool.backend(name).checkResult(True, "HTTP 200", 1.0)
        self.assertEqual(chooseMany(pool, 4, 1.0), "acac")

    def test_skipsDrainingAndDisabled(self) -> None:
        """
        Draining and disabled backends are not chosen.
        """
        pool = makePool()
        pool.backend("a").setState(BackendState.DRAINING, "operator", 0.0)
        pool.backend("c").setState(BackendState.DISABLED, "operator", 0.0)
        self.assertEqual(chooseMany(pool, 3), "bbb")

    def test_chooseExcludes(self) -> None:
        """
        Backends in C{exclude} are not chosen.
        """
        for strategy in ["round-robin", "weighted-round-robin", "least-connections"]:
            with self.subTest(strategy=strategy):
                pool = makePool(strategy=strategy)
                exclude = {pool.backend("a")}
                self.assertEqual(chooseMany(pool, 4, exclude=exclude), "bcbc")

    def test_noneWhenAllUnavailableOrExcluded(self) -> None:
        """
        L{BackendPool.choose} returns L{None} when every backend is down or
        excluded.
        """
        pool = makePool()
        for now in [1.0, 2.0, 3.0]:
            pool.backend("a").requestFailed("connection refused", now)
        self.assertEqual(
            chooseMany(pool, 2, 3.0, exclude=[pool.backend("b"), pool.backend("c")]),
            "--",
        )

    def test_halfOpenAfterCooldown(self) -> None:
        """
        Without active checks, a passively failed backend is skipped for the
        pool's C{passive_cooldown}, then chosen again.
        """
        pool = makePool(check="none", cooldown=5.0)
        for now in [1.0, 2.0, 3.0]:
            pool.backend("a").requestFailed("connection refused", now)
        self.assertEqual(chooseMany(pool, 4, 7.9), "bcbc")
        self.assertEqual(chooseMany(pool, 3, 8.0), "abc")


class FirstRoundTests(SynchronousTestCase):
    """
    What a pool knows about its first round of health checks, and what it
    says when no backend is available.
    """

    def test_pendingUntilEveryBackendHasAResult(self) -> None:
        """
        The first round is pending while some backend that starts down has
        no check result, whether the others passed or failed.
        """
        pool = makePool(check="tcp")
        a, b, c = pool.backends
        self.assertTrue(pool.firstRoundPending)
        a.checkResult(True, "connected", 1.0)
        b.checkResult(False, "connection refused", 1.0)
        self.assertTrue(pool.firstRoundPending)
        c.checkResult(False, "timed out after 1.0s", 2.0)
        self.assertFalse(pool.firstRoundPending)

    def test_nothingPendingWithoutChecks(self) -> None:
        """
        With C{check = "none"} there is no first round to wait for.
        """
        self.assertFalse(makePool(check="none").firstRoundPending)

    def test_whenCheckedFiresOnceForAnyBackend(self) -> None:
        """
        The callback runs once, after the first result of any backend
        still awaiting one; cancelling stops it.
        """
        pool = makePool(check="tcp")
        a, b, _ = pool.backends
        seen: list[int] = []
        pool.whenChecked(lambda: seen.append(1))
        b.checkResult(False, "connection refused", 1.0)
        a.checkResult(False, "connection refused", 1.0)
        self.assertEqual(seen, [1])
        cancel = pool.whenChecked(lambda: seen.append(2))
        cancel()
        pool.backends[2].checkResult(True, "connected", 2.0)
        self.assertEqual(seen, [1])

    def test_describeUnavailable(self) -> None:
        """
        The description names the pool, counts the backends by state and
        gives the first unavailable one's reason.
        """
        pool = makePool(check="tcp")
        a, b, c = pool.backends
        b.checkResult(False, "connection refused", 1.0)
        c.setState(BackendState.DISABLED, "disabled by operator", 1.0)
        self.assertEqual(
            pool.describeUnavailable(),
            'no backend available in pool "app": 2 of 3 down, 1 of 3 disabled '
            "(a: waiting for first health check)",
        )

    def test_backendsStartAtNow(self) -> None:
        """
        The pool's creation time is when its backends entered their state.
        """
        config = makePool().config
        pool = BackendPool(config, 42.0)
        self.assertEqual({b.stateSince for b in pool.backends}, {42.0})


class StickyChoiceTests(SynchronousTestCase):
    """
    L{BackendPool.choose} with the backend a sticky cookie names.
    """

    def test_stickyBackendWhileAvailable(self) -> None:
        """
        The named backend is chosen while it is available, whatever the
        strategy would do; the strategy does not move.
        """
        pool = makePool()
        for _ in range(3):
            choice = pool.choose(0.0, sticky="c")
            assert choice is not None
            self.assertEqual((choice.backend.name, choice.why), ("c", "sticky cookie: c"))
        self.assertEqual(chooseMany(pool, 3), "abc")

    def test_unusableStickyBackend(self) -> None:
        """
        A sticky backend that is down, already tried or unknown is passed
        over, and the explanation says so when it names one.
        """
        pool = makePool()
        pool.backend("b").setState(BackendState.DOWN, "test", 0.0)
        choice = pool.choose(0.0, sticky="b")
        assert choice is not None
        self.assertEqual(
            (choice.backend.name, choice.why),
            ("a", "round robin: a; sticky cookie for b not usable"),
        )
        choice = pool.choose(0.0, exclude=[pool.backend("c")], sticky="c")
        assert choice is not None
        self.assertNotEqual(choice.backend.name, "c")
        choice = pool.choose(0.0, sticky="zz")
        assert choice is not None
        self.assertIn("sticky cookie for zz not usable", choice.why)


class SlowStartTests(SynchronousTestCase):
    """
    C{slow_start}: a backend that comes up ramps from 10% to 100% of its
    weight.
    """

    def test_rampAfterComingUp(self) -> None:
        """
        A backend that came up 25 of 100 seconds ago has 10% + 90% * 25% of
        its weight, and gets that share of the requests.
        """
        pool = makePool("weighted-round-robin", weights=(4, 4), slow_start=100.0)
        a, b = pool.backends
        a.setState(BackendState.DOWN, "test", 0.0)
        a.setState(BackendState.UP, "test", 0.0)
        b.setState(BackendState.DOWN, "test", 75.0)
        b.setState(BackendState.UP, "test", 75.0)
        names = chooseMany(pool, 1325, now=100.0)
        self.assertEqual(a.effectiveWeight, 4.0)
        self.assertEqual(b.ramp, 0.1 + 0.9 * 0.25)
        self.assertEqual(names.count("b"), round(1325 * 1.3 / 5.3))
        choice = pool.choose(100.0, exclude=[a])
        assert choice is not None
        self.assertEqual(choice.why, "weighted round robin: b (weight 1.3); slow start 32%")

    def test_fullWeightAfterRamp(self) -> None:
        """
        After C{slow_start} seconds, and without slow start, the weight is
        whole.
        """
        pool = makePool("weighted-round-robin", slow_start=10.0)
        backend = pool.backends[0]
        backend.setState(BackendState.DOWN, "test", 0.0)
        backend.setState(BackendState.UP, "test", 0.0)
        pool.choose(10.0)
        self.assertEqual(backend.ramp, 1.0)
        self.assertEqual(backend.slowStart(5.0, 0.0), 1.0)
        self.assertEqual(backend.slowStart(5.0, 10.0), 0.55)


class ObserveTests(SynchronousTestCase):
    """
    L{BackendPool.observe} feeds the strategy, and a reload keeps what
    peak-EWMA learned.
    """

    def test_peakEWMALearnsAndKeepsAcrossReload(self) -> None:
        """
        Observed latencies reach the strategy; a pool that adopts the
        previous one keeps them for the backends it keeps.
        """
        pool = makePool("peak-ewma")
        a = pool.backends[0]
        pool.observe(a, 0.05, 1.0)
        self.assertEqual(pool.strategy.latency(a), 0.05)  # type: ignore[attr-defined]
        reloaded = makePool("peak-ewma")
        reloaded.adopt(pool)
        self.assertIs(reloaded.backends[0], a)
        self.assertEqual(reloaded.strategy.latency(a), 0.05)  # type: ignore[attr-defined]


class LimitTests(SynchronousTestCase):
    """
    C{max_connections}: a full backend is not eligible, and the queue
    survives a reload.
    """

    def test_fullBackendNotEligible(self) -> None:
        """
        A backend with as many requests in flight as its C{max_connections}
        is not chosen; when all are full, nothing is, and the request could
        wait in the queue.
        """
        pool = makePool("least-connections", max_connections=(2, 1, None))
        a, b, c = pool.backends
        self.assertEqual(
            [backend.maxConnections for backend in pool.backends], [2, 1, None]
        )
        a.active, b.active, c.active = 2, 0, 5
        choice = pool.choose(0.0, exclude=[c])
        assert choice is not None
        self.assertIs(choice.backend, b)
        b.active = 1
        self.assertIsNone(pool.choose(0.0, exclude=[c]))
        self.assertTrue(pool.canQueue(0.0, exclude=[c]))
        self.assertFalse(pool.canQueue(0.0, exclude=[a, b]))
        a.setState(BackendState.DISABLED, "test", 0.0)
        b.setState(BackendState.DISABLED, "test", 0.0)
        self.assertFalse(pool.canQueue(0.0, exclude=[c]))

    def test_stickyToAFullBackend(self) -> None:
        """
        A sticky cookie naming a full backend is not usable: another
        backend with room is chosen, and the choice says so.
        """
        pool = makePool(max_connections=(1, 1, 1))
        a = pool.backends[0]
        a.active = 1
        choice = pool.choose(0.0, sticky="a")
        assert choice is not None
        self.assertIsNot(choice.backend, a)
        self.assertIn("sticky cookie for a not usable", choice.why)

    def test_waitingGoFirst(self) -> None:
        """
        While requests wait in the queue, a new request is not given a
        backend (it queues behind them), except while the queue is waking
        one of them.
        """
        pool = makePool(max_connections=(1, 1, 1))
        choices: list[Choice | None] = []

        class Waiter:
            retrying = False

            def wants(self, backend: Backend) -> bool:
                return True

            def wake(self) -> Backend | None:
                choice = pool.choose(0.0)
                choices.append(choice)
                return None if choice is None else choice.backend

        waiter = Waiter()
        pool.queue.add(waiter)
        self.assertIsNone(pool.choose(0.0))
        pool.queue.pump()
        self.assertIsNotNone(choices[0])
        pool.queue.remove(waiter)
        self.assertIsNotNone(pool.choose(0.0))

    def test_reloadKeepsTheQueue(self) -> None:
        """
        A pool that adopts the previous one takes over its waiting requests
        (ahead of its own) and its counters, and its limited backends wake
        its queue.
        """
        old = makePool(max_connections=(1, 1, 1))
        new = makePool(max_connections=(1, 1, 1))

        class Waiter:
            retrying = False

            def wants(self, backend: Backend) -> bool:
                return True

            def wake(self) -> Backend | None:
                return None

        first, second = Waiter(), Waiter()
        old.queue.add(first)
        old.queue.timeouts, old.queue.rejected = 3, 4
        new.queue.add(second)
        new.adopt(old)
        self.assertEqual(list(new.queue._waiting), [first, second])
        self.assertEqual(len(old.queue), 0)
        self.assertEqual((new.queue.timeouts, new.queue.rejected), (3, 4))
        self.assertEqual(
            [backend.queue for backend in new.backends], [new.queue] * 3
        )
        self.assertIs(new.backends[0], old.backends[0])
        unlimited = makePool()
        unlimited.adopt(new)
        self.assertFalse(unlimited.limited)
        self.assertEqual([backend.queue for backend in unlimited.backends], [None] * 3)
