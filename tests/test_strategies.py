# -*- test-case-name: tests.test_strategies -*-
"""
Tests for L{lbtwist.strategies}.
"""

from __future__ import annotations

import math
from collections import Counter
from random import Random
from typing import Callable, Collection, Sequence

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from lbtwist.backend import Backend, BackendState
from lbtwist.config import BackendConfig, HealthCheckConfig, PoolConfig
from lbtwist.strategies import (
    STRATEGIES,
    ConsistentHash,
    IStrategy,
    IStrategy,
    LeastConnections,
    PeakEWMA,
    RandomTwo,
    RoundRobin,
    WeightedRoundRobin,
)


def makeBackends(*weights: int) -> list[Backend]:
    """
    Make up backends named C{a}, C{b}, C{c}... with the given weights.

    @param weights: One weight per backend.
    @return: The backends, all up.
    """
    backends = []
    for index, weight in enumerate(weights):
        port = 9001 + index
        config = BackendConfig(
            url=f"http://127.0.0.1:{port}",
            scheme="http",
            host="127.0.0.1",
            port=port,
            name="abcdefgh"[index],
            weight=weight,
        )
        backends.append(Backend(config, "app", HealthCheckConfig(check="none"), 10.0))
    return backends


POOL = PoolConfig(name="app", backends=(BackendConfig(
    url="http://127.0.0.1:9001", scheme="http", host="127.0.0.1", port=9001),))


def allowAllBut(*names: str) -> Callable[[Backend], bool]:
    """
    Make an eligibility test that refuses the named backends.

    @param names: The names of the ineligible backends.
    @return: The test.
    """
    return lambda backend: backend.name not in names


def picks(
    strategy: IStrategy,
    backends: Sequence[Backend],
    count: int,
    eligible: Callable[[Backend], bool] = allowAllBut(),
) -> str:
    """
    Pick C{count} times and spell out the names picked.

    @param strategy: The strategy to pick with.
    @param backends: The backends to pick from.
    @param count: How many picks.
    @param eligible: The eligibility test.
    @return: The picked names concatenated, C{-} for L{None}.
    """
    names = []
    for _ in range(count):
        backend = strategy.pick(backends, eligible)
        names.append("-" if backend is None else backend.name)
    return "".join(names)


def setActive(backends: Sequence[Backend], actives: Collection[int]) -> None:
    """
    Set the requests in flight of each backend.

    @param backends: The backends.
    @param actives: One count per backend.
    """
    for backend, active in zip(backends, actives):
        backend.active = active


class RegistryTests(SynchronousTestCase):
    """
    Tests for L{STRATEGIES}.
    """

    def test_namesMapToStrategies(self) -> None:
        """
        The configuration's strategy names make the strategy classes, with
        the pool's settings.
        """
        made = {
            name: type(factory(POOL, Random(1))) for name, factory in STRATEGIES.items()
        }
        self.assertEqual(
            made,
            {
                "round-robin": RoundRobin,
                "weighted-round-robin": WeightedRoundRobin,
                "least-connections": LeastConnections,
                "random-two": RandomTwo,
                "consistent-hash": ConsistentHash,
                "peak-ewma": PeakEWMA,
            },
        )
        pool = POOL.__class__(
            name="app",
            backends=POOL.backends,
            strategy="consistent-hash",
            hash_balance_factor=150,
        )
        hashing = STRATEGIES["consistent-hash"](pool, Random(1))
        assert isinstance(hashing, ConsistentHash)
        self.assertEqual(hashing.balanceFactor, 150)

    def test_providesIStrategy(self) -> None:
        """
        Every registered strategy provides L{IStrategy}.
        """
        for name, factory in STRATEGIES.items():
            with self.subTest(name=name):
                self.assertTrue(verifyObject(IStrategy, factory(POOL, Random(1))))

    def test_noneWhenNothingEligible(self) -> None:
        """
        Every strategy picks L{None} when no backend is eligible, and when
        there are no backends at all.
        """
        for name, factory in STRATEGIES.items():
            with self.subTest(name=name):
                strategy = factory(POOL, Random(1))
                backends = makeBackends(5, 1, 1)
                self.assertEqual(
                    picks(strategy, backends, 3, allowAllBut("a", "b", "c")), "---"
                )
                self.assertIsNone(strategy.pick([], allowAllBut()))

    def test_recoversAfterAllDown(self) -> None:
        """
        Every strategy picks again once backends become eligible after a
        time when none was.
        """
        for name, factory in STRATEGIES.items():
            with self.subTest(name=name):
                strategy = factory(POOL, Random(1))
                backends = makeBackends(1, 1)
                self.assertEqual(
                    picks(strategy, backends, 2, allowAllBut("a", "b")), "--"
                )
                if name in ("round-robin", "weighted-round-robin", "least-connections"):
                    self.assertEqual(picks(strategy, backends, 4), "abab")
                else:
                    self.assertNotIn("-", picks(strategy, backends, 4))


class RoundRobinTests(SynchronousTestCase):
    """
    Tests for L{RoundRobin}.
    """

    def test_cyclesInOrder(self) -> None:
        """
        With 1 to 4 backends, the picks cycle through them in pool order.
        """
        for count, expected in [
            (1, "aaa"),
            (2, "ababab"),
            (3, "abcabcabc"),
            (4, "abcdabcdabcd"),
        ]:
            with self.subTest(count=count):
                backends = makeBackends(*[1] * count)
                self.assertEqual(picks(RoundRobin(), backends, 3 * count), expected)

    def test_ignoresWeights(self) -> None:
        """
        Weights make no difference to round robin.
        """
        self.assertEqual(picks(RoundRobin(), makeBackends(5, 1, 1), 6), "abcabc")

    def test_skipsBackendsThatAreDown(self) -> None:
        """
        Ineligible backends are skipped and the others still take turns.
        """
        for down, expected in [
            (("a",), "bcbcbc"),
            (("b",), "acacac"),
            (("c",), "ababab"),
            (("a", "b"), "cccccc"),
        ]:
            with self.subTest(down=down):
                backends = makeBackends(1, 1, 1)
                self.assertEqual(
                    picks(RoundRobin(), backends, 6, allowAllBut(*down)), expected
                )

    def test_resumesAfterLastPick(self) -> None:
        """
        The cursor continues after the last backend picked, so a backend
        that comes back takes its turn in order.
        """
        strategy = RoundRobin()
        backends = makeBackends(1, 1, 1)
        self.assertEqual(picks(strategy, backends, 3, allowAllBut("b")), "aca")
        self.assertEqual(picks(strategy, backends, 4), "bcab")


class WeightedRoundRobinTests(SynchronousTestCase):
    """
    Tests for L{WeightedRoundRobin}.
    """

    def test_smoothSequences(self) -> None:
        """
        The picks follow nginx's smooth weighted round robin exactly, over
        two full cycles.
        """
        for weights, cycle in [
            ((5, 1, 1), "aabacaa"),
            ((1, 1, 1), "abc"),
            ((2, 1), "aba"),
            ((3, 2), "ababa"),
            ((1, 2), "bab"),
            ((4,), "aaaa"),
        ]:
            with self.subTest(weights=weights):
                backends = makeBackends(*weights)
                self.assertEqual(
                    picks(WeightedRoundRobin(), backends, 2 * len(cycle)), cycle * 2
                )

    def test_equalWeightsAreRoundRobin(self) -> None:
        """
        With equal weights the picks are the same as round robin's.
        """
        for weight in [1, 3]:
            with self.subTest(weight=weight):
                backends = makeBackends(weight, weight, weight)
                self.assertEqual(
                    picks(WeightedRoundRobin(), backends, 9),
                    picks(RoundRobin(), backends, 9),
                )

    def test_skipsIneligibleWithoutChangingItsWeight(self) -> None:
        """
        An ineligible backend is skipped, the others share the traffic by
        their weights, and the skipped backend's current weight is left as it
        was, so the full cycle resumes when it returns.
        """
        strategy = WeightedRoundRobin()
        backends = makeBackends(5, 1, 1)
        self.assertEqual(picks(strategy, backends, 12, allowAllBut("b")), "aaacaa" * 2)
        self.assertEqual(picks(strategy, backends, 14), "aabacaa" * 2)


class LeastConnectionsTests(SynchronousTestCase):
    """
    Tests for L{LeastConnections}.
    """

    def test_picksLeastActivePerWeight(self) -> None:
        """
        The backend with the least requests in flight for its weight is
        picked.
        """
        for weights, actives, expected in [
            ((1, 1, 1), (2, 0, 1), "b"),
            ((1, 1, 1), (3, 2, 1), "c"),
            ((3, 1), (2, 1), "a"),  # 2/3 < 1/1
            ((3, 1), (4, 1), "b"),  # 1/1 < 4/3
            ((2, 1), (3, 1), "b"),  # 1/1 < 3/2
            ((5, 1, 1), (9, 2, 2), "a"),  # 9/5 < 2/1
        ]:
            with self.subTest(weights=weights, actives=actives):
                backends = makeBackends(*weights)
                setActive(backends, actives)
                self.assertEqual(picks(LeastConnections(), backends, 1), expected)

    def test_tiesRotate(self) -> None:
        """
        Equally loaded backends are picked in turn.
        """
        for weights, actives, expected in [
            ((1, 1, 1), (0, 0, 0), "abcabc"),
            ((1, 1, 1), (5, 0, 0), "bcbcbc"),
            ((2, 1, 1), (2, 1, 1), "abcabc"),  # all at 1 per weight
            ((1, 2, 1), (0, 1, 0), "acacac"),
        ]:
            with self.subTest(weights=weights, actives=actives):
                backends = makeBackends(*weights)
                setActive(backends, actives)
                self.assertEqual(picks(LeastConnections(), backends, 6), expected)

    def test_followsActiveCounts(self) -> None:
        """
        Picks follow the requests in flight as callers count them up and
        down.
        """
        strategy = LeastConnections()
        backends = makeBackends(2, 1)
        chosen = []
        for _ in range(6):
            backend = strategy.pick(backends, allowAllBut())
            assert backend is not None
            backend.active += 1
            chosen.append(backend.name)
        self.assertEqual("".join(chosen), "ababaa")
        self.assertEqual([backend.active for backend in backends], [4, 2])
        backends[0].active = 0
        self.assertEqual(picks(strategy, backends, 1), "a")

    def test_skipsIneligible(self) -> None:
        """
        An ineligible backend is not picked even when it is the least
        loaded.
        """
        backends = makeBackends(1, 1, 1)
        setActive(backends, (0, 3, 3))
        self.assertEqual(
            picks(LeastConnections(), backends, 4, allowAllBut("a")), "bcbc"
        )


class RegistryTests(SynchronousTestCase):
    """
    The strategy registry and the names the configuration accepts.
    """

    def test_configNamesMatchRegistry(self) -> None:
        """
        Every name the configuration accepts has a strategy, and no more.
        """
        from lbtwist.config import STRATEGY_NAMES

        self.assertEqual(set(STRATEGY_NAMES), set(STRATEGIES))


class RandomTwoTests(SynchronousTestCase):
    """
    Tests for L{RandomTwo}.
    """

    def test_providesIStrategy(self) -> None:
        """
        L{RandomTwo} provides L{IStrategy}.
        """
        self.assertTrue(verifyObject(IStrategy, RandomTwo(Random(1))))

    def test_lighterOfTwoDrawn(self) -> None:
        """
        Of the two backends drawn, the one with fewer requests in flight for
        its weight is chosen, and the explanation names both.
        """
        backends = makeBackends(1, 1, 1, 1)
        setActive(backends, [5, 2, 9, 0])
        random = Random(7)
        drawn = Random(7).sample(backends, 2)
        choice = RandomTwo(random).choose(backends, allowAllBut())
        assert choice is not None
        expected = min(drawn, key=lambda backend: backend.active)
        other = drawn[0] if drawn[1] is expected else drawn[1]
        self.assertIs(choice.backend, expected)
        self.assertEqual(
            choice.why,
            f"p2c: {expected.name} ({expected.active} in flight) over "
            f"{other.name} ({other.active} in flight)",
        )

    def test_exactChoicesWithASeed(self) -> None:
        """
        With a seeded source the sequence of choices is fixed; the most
        loaded backend is never chosen.
        """
        backends = makeBackends(1, 1, 1)
        setActive(backends, [3, 1, 2])
        strategy = RandomTwo(Random(1))
        self.assertEqual(picks(strategy, backends, 12), "cbbbcbbcbbcb")

    def test_weightDividesLoad(self) -> None:
        """
        Load is compared per unit of weight: 4 in flight on weight 4 is
        lighter than 2 on weight 1.
        """
        backends = makeBackends(4, 1)
        setActive(backends, [4, 2])
        choice = RandomTwo(Random(3)).choose(backends, allowAllBut())
        assert choice is not None
        self.assertEqual(choice.backend.name, "a")
        self.assertIn("a (4 in flight, weight 4)", choice.why)

    def test_onlyEligible(self) -> None:
        """
        Ineligible backends are never drawn; one eligible backend is chosen
        without a draw; none gives L{None}.
        """
        backends = makeBackends(1, 1, 1)
        strategy = RandomTwo(Random(5))
        self.assertEqual(picks(strategy, backends, 6, allowAllBut("a", "c")), "bbbbbb")
        self.assertIsNone(strategy.choose(backends, allowAllBut("a", "b", "c")))


class ConsistentHashTests(SynchronousTestCase):
    """
    Tests for L{ConsistentHash}.
    """

    def test_providesIStrategy(self) -> None:
        """
        L{ConsistentHash} provides L{IStrategy}.
        """
        self.assertTrue(verifyObject(IStrategy, ConsistentHash(Random(1))))

    def test_sameKeySameBackend(self) -> None:
        """
        A key goes to the owner of its slot every time, and the explanation
        says so.
        """
        backends = makeBackends(1, 1, 1, 1)
        strategy = ConsistentHash(Random(1), tableSize=1009)
        owner = strategy.table(backends).lookup(b"10.0.0.1")
        for _ in range(5):
            choice = strategy.choose(backends, allowAllBut(), b"10.0.0.1")
            assert choice is not None
            self.assertEqual(choice.backend.name, owner)
            self.assertEqual(choice.why, f"hash -> {owner}")

    def test_exactOwners(self) -> None:
        """
        The table is deterministic: these keys have these owners.
        """
        backends = makeBackends(1, 1, 1)
        strategy = ConsistentHash(Random(1))
        owners = "".join(
            strategy.table(backends).lookup(f"key-{i}".encode()) for i in range(12)
        )
        self.assertEqual(owners, "ccbcabbcccbc")

    def test_downOwnerSpillsToNextSlot(self) -> None:
        """
        When a key's backend is not eligible, the key goes to the owner of
        the next slot that is, and only that key's backend's keys move.
        """
        backends = makeBackends(1, 1, 1, 1)
        strategy = ConsistentHash(Random(1), balanceFactor=0)
        keys = [f"client-{i}".encode() for i in range(400)]

        def placed(eligible: Callable[[Backend], bool]) -> list[str]:
            result = []
            for key in keys:
                choice = strategy.choose(backends, eligible, key)
                assert choice is not None
                result.append(choice.backend.name)
            return result

        before = placed(allowAllBut())
        after = placed(allowAllBut("b"))
        for old, new in zip(before, after):
            self.assertTrue(old == new or old == "b")
            self.assertNotEqual(new, "b")
        backends[1].state = BackendState.DOWN
        choice = strategy.choose(backends, allowAllBut("b"), keys[before.index("b")])
        assert choice is not None
        self.assertTrue(choice.why.startswith("hash -> b (down), next: "))

    def test_boundedLoadNeverExceeded(self) -> None:
        """
        Hammering one key never puts more than the bound on any backend,
        M{ceil(1.25 * (in flight + 1) / backends)}: the key's own backend
        fills up to it and the rest spills over.
        """
        backends = makeBackends(1, 1, 1, 1)
        strategy = ConsistentHash(Random(1), balanceFactor=125)
        spills = 0
        for _ in range(200):
            total = sum(backend.active for backend in backends)
            bound = -(-125 * (total + 1) // (100 * len(backends)))
            choice = strategy.choose(backends, allowAllBut(), b"hot-key")
            assert choice is not None
            choice.backend.active += 1
            self.assertLessEqual(choice.backend.active, bound)
            spills += "over 125%" in choice.why
        self.assertGreater(spills, 100)
        self.assertEqual(
            sorted(backend.active for backend in backends), [12, 62, 63, 63]
        )

    def test_unboundedWithoutFactor(self) -> None:
        """
        With C{balanceFactor=0} a key stays on its backend however loaded.
        """
        backends = makeBackends(1, 1)
        strategy = ConsistentHash(Random(1), balanceFactor=0)
        names = set()
        for _ in range(10):
            choice = strategy.choose(backends, allowAllBut(), b"k")
            assert choice is not None
            choice.backend.active += 1
            names.add(choice.backend.name)
        self.assertEqual(len(names), 1)

    def test_noKeyFallsBackToRandomTwo(self) -> None:
        """
        A request without a key is placed by the power of two choices.
        """
        backends = makeBackends(1, 1, 1)
        setActive(backends, [3, 1, 2])
        choice = ConsistentHash(Random(1)).choose(backends, allowAllBut())
        assert choice is not None
        self.assertTrue(choice.why.startswith("p2c: "))

    def test_rebuildsWhenBackendsChange(self) -> None:
        """
        A new weight or a new backend rebuilds the table; the same backends
        reuse it.
        """
        backends = makeBackends(1, 1)
        strategy = ConsistentHash(Random(1), tableSize=1009)
        first = strategy.table(backends)
        self.assertIs(strategy.table(list(backends)), first)
        backends[0].weight = 3
        second = strategy.table(backends)
        self.assertIsNot(second, first)
        self.assertEqual(Counter(second.slots)[0], 757)

    def test_refusesSmallFactor(self) -> None:
        """
        A balance factor below 100 (other than 0) is refused.
        """
        self.assertRaises(ValueError, ConsistentHash, Random(1), 99)


class PeakEWMATests(SynchronousTestCase):
    """
    Tests for L{PeakEWMA}.
    """

    def setUp(self) -> None:
        self.now = 0.0
        self.strategy = PeakEWMA(Random(2), decay=10.0)

    def observe(self, backend: Backend, latency: float) -> None:
        self.strategy.observe(backend, latency, self.now)

    def test_providesIStrategy(self) -> None:
        """
        L{PeakEWMA} provides L{IStrategy}.
        """
        self.assertTrue(verifyObject(IStrategy, self.strategy))

    def test_peakThenDecay(self) -> None:
        """
        A slower response raises the average at once; faster ones pull it
        down with the time constant.
        """
        backend = makeBackends(1)[0]
        self.assertIsNone(self.strategy.latency(backend))
        self.observe(backend, 0.001)
        self.observe(backend, 0.050)
        self.assertEqual(self.strategy.latency(backend), 0.050)
        self.now += 10.0
        self.observe(backend, 0.001)
        expected = 0.050 * math.exp(-1) + 0.001 * (1 - math.exp(-1))
        self.assertEqual(self.strategy.latency(backend), expected)

    def test_costWeighsLoadAndWeight(self) -> None:
        """
        Cost is latency times (in flight + 1) over weight; an untried
        backend costs nothing while idle and a penalty once busy.
        """
        a, b = makeBackends(1, 2)
        self.observe(a, 0.010)
        a.active = 3
        self.assertEqual(self.strategy.cost(a), 0.010 * 4)
        self.assertEqual(self.strategy.cost(b), 0.0)
        b.active = 1
        self.assertEqual(self.strategy.cost(b), PeakEWMA.PENALTY * 2 / 2)

    def test_movesAwayFromSlowBackend(self) -> None:
        """
        When one backend's latency rises from 1 ms to 50 ms, it gets a small
        share of the following choices.
        """
        backends = makeBackends(1, 1, 1)
        for backend in backends:
            self.observe(backend, 0.001)
        self.observe(backends[0], 0.050)
        chosen = Counter(
            self.strategy.pick(backends, allowAllBut()).name  # type: ignore[union-attr]
            for _ in range(300)
        )
        self.assertLess(chosen["a"], 300 // 3 // 2)

    def test_explains(self) -> None:
        """
        The explanation gives both candidates' latency and load.
        """
        a, b = makeBackends(1, 1)
        self.observe(a, 0.012)
        choice = self.strategy.choose([a, b], allowAllBut())
        assert choice is not None
        self.assertEqual(
            choice.why,
            "peak-ewma: b (untried, 0 in flight) over a (12.0 ms, 0 in flight)",
        )
