# -*- test-case-name: tests.test_strategies -*-
"""
Selection strategies: which of a pool's eligible backends gets the next
request.

A strategy is pure: it reads only the C{weight} and C{active} attributes of
the backends it is given, and keeps its own position between picks.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

from zope.interface import Attribute, Interface, implementer

from lbtwist.backend import Backend

__all__ = [
    "IStrategy",
    "RoundRobin",
    "WeightedRoundRobin",
    "LeastConnections",
    "STRATEGIES",
]


class IStrategy(Interface):
    """
    A way to choose the backend for the next request.
    """

    usesWeights = Attribute(
        "Whether the choice depends on the backends' C{weight} (a C{bool})."
    )

    def pick(
        backends: Sequence[Backend], eligible: Callable[[Backend], bool]
    ) -> Backend | None:
        """
        Choose one of the eligible backends.

        @param backends: The pool's backends, in pool order.
        @param eligible: Says whether a backend may be chosen now.
        @return: The chosen backend, or L{None} if none is eligible.
        """


def _rotated(backends: Sequence[Backend], start: int) -> list[tuple[int, Backend]]:
    """
    List the backends with their indexes, beginning at C{start} and wrapping
    around.

    @param backends: The backends.
    @param start: The index to begin at (taken modulo the length).
    @return: C{(index, backend)} pairs.
    """
    count = len(backends)
    return [((start + i) % count, backends[(start + i) % count]) for i in range(count)]


@implementer(IStrategy)
class RoundRobin:
    """
    Each eligible backend in turn, in pool order, skipping ineligible ones.
    Weights are ignored.
    """

    usesWeights = False

    def __init__(self) -> None:
        """
        Start at the first backend.
        """
        self._next = 0

    def pick(
        self, backends: Sequence[Backend], eligible: Callable[[Backend], bool]
    ) -> Backend | None:
        """
        Choose the first eligible backend at or after the cursor.

        @see: L{IStrategy.pick}
        """
        count = len(backends)
        start = self._next
        for offset in range(count):
            index = (start + offset) % count
            backend = backends[index]
            if eligible(backend):
                self._next = index + 1
                return backend
        return None


@implementer(IStrategy)
class WeightedRoundRobin:
    """
    nginx's smooth weighted round robin: each backend gets its share of
    requests according to its C{weight}, spread out rather than in bursts
    (weights 5, 1, 1 give C{a a b a c a a}, repeating).

    Every pick adds each eligible backend's weight to its current weight,
    chooses the backend with the greatest current weight (the first in pool
    order on a tie) and takes the total eligible weight off the chosen one.
    An ineligible backend is skipped and its current weight left as it is.
    """

    usesWeights = True

    def __init__(self) -> None:
        """
        Start with every current weight at zero.
        """
        self._current: dict[int, int] = {}

    def pick(
        self, backends: Sequence[Backend], eligible: Callable[[Backend], bool]
    ) -> Backend | None:
        """
        Choose the eligible backend with the greatest current weight.

        @see: L{IStrategy.pick}
        """
        total = 0
        best: Backend | None = None
        bestWeight = 0
        for backend in backends:
            if not eligible(backend):
                continue
            current = self._current.get(id(backend), 0) + backend.weight
            self._current[id(backend)] = current
            total += backend.weight
            if best is None or current > bestWeight:
                best, bestWeight = backend, current
        if best is not None:
            self._current[id(best)] -= total
        return best


@implementer(IStrategy)
class LeastConnections:
    """
    The eligible backend with the fewest requests in flight for its weight
    (least C{active / weight}); ties are broken round robin.
    """

    usesWeights = True

    def __init__(self) -> None:
        """
        Start breaking ties at the first backend.
        """
        self._next = 0

    def pick(
        self, backends: Sequence[Backend], eligible: Callable[[Backend], bool]
    ) -> Backend | None:
        """
        Choose the least loaded eligible backend, the first one at or after
        the tie-breaking cursor if several are equally loaded.

        @see: L{IStrategy.pick}
        """
        best: Backend | None = None
        bestIndex = 0
        for index, backend in _rotated(backends, self._next):
            if not eligible(backend):
                continue
            # backend.active / backend.weight < best.active / best.weight,
            # in integers.
            if best is None or backend.active * best.weight < (
                best.active * backend.weight
            ):
                best, bestIndex = backend, index
        if best is not None:
            self._next = bestIndex + 1
        return best


STRATEGIES: Mapping[str, Callable[[], IStrategy]] = {
    "round-robin": RoundRobin,
    "weighted-round-robin": WeightedRoundRobin,
    "least-connections": LeastConnections,
}
"""
The strategies by the name used in the configuration's C{strategy} key.
"""
