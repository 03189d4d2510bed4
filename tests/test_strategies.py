# -*- test-case-name: tests.test_strategies -*-
"""
Tests for L{lbtwist.strategies}.
"""

from __future__ import annotations

from typing import Callable, Collection, Sequence

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from lbtwist.backend import Backend
from lbtwist.config import BackendConfig, HealthCheckConfig
from lbtwist.strategies import (
    STRATEGIES,
    IStrategy,
    LeastConnections,
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
        The configuration's strategy names map to the strategy classes.
        """
        self.assertEqual(
            dict(STRATEGIES),
            {
                "round-robin": RoundRobin,
                "weighted-round-robin": WeightedRoundRobin,
                "least-connections": LeastConnections,
            },
        )

    def test_providesIStrategy(self) -> None:
        """
        Every registered strategy provides L{IStrategy}.
        """
        for name, factory in STRATEGIES.items():
            with self.subTest(name=name):
                self.assertTrue(verifyObject(IStrategy, factory()))

    def test_noneWhenNothingEligible(self) -> None:
        """
        Every strategy picks L{None} when no backend is eligible, and when
        there are no backends at all.
        """
        for name, factory in STRATEGIES.items():
            with self.subTest(name=name):
                strategy = factory()
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
                strategy = factory()
                backends = makeBackends(1, 1)
                self.assertEqual(
                    picks(strategy, backends, 2, allowAllBut("a", "b")), "--"
                )
                self.assertEqual(picks(strategy, backends, 4), "abab")


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
