# -*- test-case-name: tests.test_strategies -*-
"""
Selection strategies: which of a pool's eligible backends gets the next
request.

A strategy is pure: it reads only the C{name}, C{weight} and C{active}
attributes of the backends it is given (and the latencies it is told of),
and keeps its own position between picks.  Each choice comes with a short
explanation of why (L{Choice}).
"""

from __future__ import annotations

import math
from random import Random
from typing import Callable, Mapping, Sequence

from zope.interface import Attribute, Interface, implementer

from lbtwist.backend import Backend
from lbtwist.config import PoolConfig
from lbtwist.maglev import DEFAULT_TABLE_SIZE, MaglevTable, tableSize

__all__ = [
    "IStrategy",
    "RoundRobin",
    "WeightedRoundRobin",
    "LeastConnections",
    "Choice",
    "RandomTwo",
    "ConsistentHash",
    "PeakEWMA",
    "STRATEGIES",
]


class IStrategy(Interface):
    """
    A way to choose the backend for the next request.
    """

    usesWeights = Attribute(
        "Whether the choice depends on the backends' C{weight} (a C{bool})."
    )
    measuresLatency = Attribute(
        "Whether the strategy learns from L{observe} (a C{bool}); when not, "
        "callers need not tell it latencies."
    )

    def choose(
        backends: Sequence[Backend],
        eligible: Callable[[Backend], bool],
        key: bytes | None = None,
    ) -> Choice | None:
        """
        Choose one of the eligible backends for a request, and say why.

        @param backends: The pool's backends, in pool order.
        @param eligible: Says whether a backend may be chosen now.
        @param key: The request's key (client address, header value...),
            for strategies that place requests by key; others ignore it.
        @return: The choice and why, or L{None} if none is eligible.
        """

    def pick(
        backends: Sequence[Backend], eligible: Callable[[Backend], bool]
    ) -> Backend | None:
        """
        Choose one of the eligible backends, for a request without a key.

        @param backends: The pool's backends, in pool order.
        @param eligible: Says whether a backend may be chosen now.
        @return: The chosen backend, or L{None} if none is eligible.
        """

    def adopt(previous: IStrategy, backends: Sequence[Backend]) -> None:
        """
        Carry over what C{previous} (the pool's strategy before a reload)
        learned about the backends kept across the reload, if it is of the
        same kind.

        @param previous: The strategy this one replaces.
        @param backends: The pool's backends after the reload.
        """

    def observe(backend: Backend, latency: float, now: float) -> None:
        """
        Learn how long a backend took to answer (strategies that do not
        measure latency ignore it).

        @param backend: The backend that sent a response head.
        @param latency: Seconds from sending the request to the head.
        @param now: When the head arrived.
        """


class Choice:
    """
    A strategy's choice and why it made it.

    The explanation is kept as a template and the values it needs, taken
    when the choice is made, and formatted only when it is read (most
    requests are never explained to anyone).

    @ivar backend: The chosen backend.
    """

    __slots__ = ("backend", "_template", "_values")

    def __init__(self, backend: Backend, why: str, *values: object) -> None:
        """
        @param backend: The chosen backend.
        @param why: The explanation, or a L{str.format} template of it.
        @param values: The template's values; none if C{why} is the
            explanation itself.
        """
        self.backend = backend
        self._template = why
        self._values = values

    @property
    def why(self) -> str:
        """
        A short explanation for access logs and the C{explain} API, e.g.
        C{"p2c: app-2 (2 in flight) over app-1 (5 in flight)"}.
        """
        if self._values:
            return self._template.format(*self._values)
        return self._template

    def __repr__(self) -> str:
        return f"<Choice {self.backend.name}: {self.why}>"


class _Picking:
    """
    The part of L{IStrategy} shared by strategies that choose without a key
    and measure nothing: L{choose} is L{pick} with an explanation.
    """

    measuresLatency = False

    template = ""
    """The explanation, a L{str.format} template of L{explain}'s values,
    e.g. C{"round robin: {}"}."""

    def pick(
        self, backends: Sequence[Backend], eligible: Callable[[Backend], bool]
    ) -> Backend | None:
        raise NotImplementedError()

    def explain(self, backend: Backend) -> tuple[object, ...]:
        """
        @return: The values L{template} explains the chosen backend with.
        """
        return (backend.name,)

    def choose(
        self,
        backends: Sequence[Backend],
        eligible: Callable[[Backend], bool],
        key: bytes | None = None,
    ) -> Choice | None:
        """
        @see: L{IStrategy.choose}
        """
        backend = self.pick(backends, eligible)
        if backend is None:
            return None
        return Choice(backend, self.template, *self.explain(backend))

    def adopt(self, previous: IStrategy, backends: Sequence[Backend]) -> None:
        """
        @see: L{IStrategy.adopt}
        """

    def observe(self, backend: Backend, latency: float, now: float) -> None:
        """
        @see: L{IStrategy.observe}
        """


class _Choosing:
    """
    The part of L{IStrategy} shared by strategies whose primitive is
    L{choose}: L{pick} is L{choose} without a key.
    """

    measuresLatency = False

    def choose(
        self,
        backends: Sequence[Backend],
        eligible: Callable[[Backend], bool],
        key: bytes | None = None,
    ) -> Choice | None:
        raise NotImplementedError()

    def pick(
        self, backends: Sequence[Backend], eligible: Callable[[Backend], bool]
    ) -> Backend | None:
        """
        @see: L{IStrategy.pick}
        """
        choice = self.choose(backends, eligible)
        return None if choice is None else choice.backend

    def adopt(self, previous: IStrategy, backends: Sequence[Backend]) -> None:
        """
        @see: L{IStrategy.adopt}
        """

    def observe(self, backend: Backend, latency: float, now: float) -> None:
        """
        @see: L{IStrategy.observe}
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
class RoundRobin(_Picking):
    """
    Each eligible backend in turn, in pool order, skipping ineligible ones.
    Weights are ignored.
    """

    template = "round robin: {}"

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
class WeightedRoundRobin(_Picking):
    """
    nginx's smooth weighted round robin: each backend gets its share of
    requests according to its C{weight}, spread out rather than in bursts
    (weights 5, 1, 1 give C{a a b a c a a}, repeating).

    Every pick adds each eligible backend's weight to its current weight,
    chooses the backend with the greatest current weight (the first in pool
    order on a tie) and takes the total eligible weight off the chosen one.
    An ineligible backend is skipped and its current weight left as it is.
    """

    template = "weighted round robin: {} (weight {:g})"

    def explain(self, backend: Backend) -> tuple[object, ...]:
        """
        @return: The backend's name and weight.
        """
        return (backend.name, backend.effectiveWeight)

    usesWeights = True

    def __init__(self) -> None:
        """
        Start with every current weight at zero.
        """
        self._current: dict[int, float] = {}

    def pick(
        self, backends: Sequence[Backend], eligible: Callable[[Backend], bool]
    ) -> Backend | None:
        """
        Choose the eligible backend with the greatest current weight.

        @see: L{IStrategy.pick}
        """
        total = 0.0
        best: Backend | None = None
        bestWeight = 0.0
        for backend in backends:
            if not eligible(backend):
                continue
            weight = backend.effectiveWeight
            current = self._current.get(id(backend), 0) + weight
            self._current[id(backend)] = current
            total += weight
            if best is None or current > bestWeight:
                best, bestWeight = backend, current
        if best is not None:
            self._current[id(best)] -= total
        return best


@implementer(IStrategy)
class LeastConnections(_Picking):
    """
    The eligible backend with the fewest requests in flight for its weight
    (least C{active / weight}); ties are broken round robin.
    """

    template = "least connections: {} ({} in flight{})"

    def explain(self, backend: Backend) -> tuple[object, ...]:
        """
        @return: The backend's name, load and weight (when not 1).
        """
        weight = backend.effectiveWeight
        return (
            backend.name,
            backend.active,
            "" if weight == 1 else f", weight {weight:g}",
        )

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
            if best is None or backend.active * best.effectiveWeight < (
                best.active * backend.effectiveWeight
            ):
                best, bestIndex = backend, index
        if best is not None:
            self._next = bestIndex + 1
        return best


def _lighter(a: Backend, b: Backend) -> bool:
    """
    @return: Whether C{a} has fewer requests in flight for its weight than
        C{b}.
    """
    return a.active * b.effectiveWeight < b.active * a.effectiveWeight


def _describeLoad(backend: Backend) -> str:
    """
    @return: C{"app-2 (2 in flight)"}, with the weight when it is not 1.
    """
    weight = backend.effectiveWeight
    described = "" if weight == 1 else f", weight {weight:g}"
    return f"{backend.name} ({backend.active} in flight{described})"


def _twoChoices(
    random: Random,
    backends: Sequence[Backend],
    eligible: Callable[[Backend], bool],
    label: str,
    better: Callable[[Backend, Backend], bool],
    describe: Callable[[Backend], str],
) -> Choice | None:
    """
    The power of two choices: draw two distinct eligible backends at random
    and take the better one.

    @param random: The source of randomness.
    @param backends: The pool's backends.
    @param eligible: Says whether a backend may be chosen now.
    @param label: How the explanation names the strategy.
    @param better: Whether its first argument is better than its second.
    @param describe: What the explanation says of each backend drawn.
    @return: The better backend, explained as C{"<label>: <better> over
        <other>"}; the only eligible one without a draw; L{None} if none is
        eligible.
    """
    candidates = [backend for backend in backends if eligible(backend)]
    if not candidates:
        return None
    if len(candidates) == 1:
        return Choice(candidates[0], f"{label}: {candidates[0].name}, the only one")
    first, second = random.sample(candidates, 2)
    if better(second, first):
        first, second = second, first
    return Choice(first, f"{label}: {describe(first)} over {describe(second)}")


@implementer(IStrategy)
class RandomTwo(_Choosing):
    """
    The power of two choices (Envoy's C{LEAST_REQUEST}, HAProxy's
    C{random(2)}): draw two distinct eligible backends at random and take
    the one with fewer requests in flight for its weight.  Almost as good as
    least connections at spreading load, and it does not herd every
    balancer process onto the same least loaded backend.
    """

    usesWeights = True

    def __init__(self, random: Random) -> None:
        """
        @param random: The source of randomness (seeded in tests).
        """
        self._random = random

    def choose(
        self,
        backends: Sequence[Backend],
        eligible: Callable[[Backend], bool],
        key: bytes | None = None,
    ) -> Choice | None:
        """
        Choose the lighter of two eligible backends drawn at random.

        @see: L{IStrategy.choose}
        """
        return _twoChoices(
            self._random, backends, eligible, "p2c", _lighter, _describeLoad
        )


@implementer(IStrategy)
class ConsistentHash(_Choosing):
    """
    Consistent hashing on a Maglev table with bounded load.

    A request's key (its client address, a header, a cookie...) picks a
    slot of the table; the slot's backend gets the request if it is
    eligible and not above its bound: C{balanceFactor} percent of its
    weighted share of the requests in flight, counting this one (Google's
    "consistent hashing with bounded loads", HAProxy's
    C{hash-balance-factor}).  Otherwise the next slots are tried in turn, so
    a key's requests spill over to the same few other backends.  A request
    without a key is placed by L{RandomTwo}.

    The table is rebuilt when the pool's backends or weights change.
    """

    usesWeights = True

    def __init__(
        self,
        random: Random,
        balanceFactor: int = 125,
        tableSize: int = DEFAULT_TABLE_SIZE,
    ) -> None:
        """
        @param random: For requests without a key (see L{RandomTwo}).
        @param balanceFactor: The bound as a percentage of the average load,
            at least 100; 0 turns bounding off.
        @param tableSize: The Maglev table's smallest size, a prime; it grows
            to a prime of at least 100 slots per backend for larger pools.
        """
        if balanceFactor and balanceFactor < 100:
            raise ValueError("balanceFactor must be 0 or at least 100")
        self.balanceFactor = balanceFactor
        self._tableSize = tableSize
        self._fallback = RandomTwo(random)
        self._table: MaglevTable | None = None
        self._builtFor: tuple[tuple[str, int], ...] = ()

    def table(self, backends: Sequence[Backend]) -> MaglevTable:
        """
        @param backends: The pool's backends.
        @return: The Maglev table for them, rebuilt if they changed.
        """
        members = tuple((backend.name, backend.weight) for backend in backends)
        if self._table is None or members != self._builtFor:
            weights = [weight for _, weight in members]
            self._table = MaglevTable(
                [name for name, _ in members],
                weights,
                tableSize(len(members), sum(weights), self._tableSize),
            )
            self._builtFor = members
        return self._table

    def _bound(self, weight: float, inFlight: int, totalWeight: float) -> float:
        """
        The most requests a backend may have in flight, this one included:
        M{ceil(factor/100 * (inFlight + 1) * weight / totalWeight)}, at least
        one.

        @param weight: The backend's weight.
        @param inFlight: Requests in flight on all eligible backends.
        @param totalWeight: The eligible backends' total weight.
        """
        share = self.balanceFactor * (inFlight + 1) * weight
        return -(-share // (100 * totalWeight))

    def choose(
        self,
        backends: Sequence[Backend],
        eligible: Callable[[Backend], bool],
        key: bytes | None = None,
    ) -> Choice | None:
        """
        Choose the backend for C{key}: the owner of its slot, or of the
        first slot after it whose backend is eligible and under its bound.

        @see: L{IStrategy.choose}
        """
        if key is None:
            return self._fallback.choose(backends, eligible)
        if not backends:
            return None
        table = self.table(backends)
        allowed = [eligible(backend) for backend in backends]
        if not any(allowed):
            return None
        inFlight = 0
        totalWeight = 0.0
        for backend, ok in zip(backends, allowed):
            if ok:
                inFlight += backend.active
                totalWeight += backend.effectiveWeight
        slots, size = table.slots, table.size
        home = table.slotFor(key)
        owner = backends[slots[home]]
        for step in range(size):
            index = slots[(home + step) % size]
            if not allowed[index]:
                continue
            backend = backends[index]
            if self.balanceFactor and backend.active + 1 > self._bound(
                backend.effectiveWeight, inFlight, totalWeight
            ):
                continue
            if backend is owner:
                why = f"hash -> {backend.name}"
            elif not eligible(owner):
                why = f"hash -> {owner.name} ({owner.state.value}), next: {backend.name}"
            else:
                why = (
                    f"hash -> {owner.name} (over {self.balanceFactor}% of the "
                    f"average load), next: {backend.name}"
                )
            return Choice(backend, why)
        return None


@implementer(IStrategy)
class PeakEWMA(_Choosing):
    """
    Latency-aware choice (Finagle's and Linkerd's peak-EWMA): the power of
    two choices over each backend's cost, its peak-sensitive moving average
    of response latency times its requests in flight plus one, divided by
    its weight.

    The average follows a slower response at once (the peak) and decays
    towards faster ones with a time constant of C{decay} seconds.  A backend
    with no latency yet costs nothing while it has no request in flight, so
    it is tried once before it is trusted, and a high penalty while its
    first request is pending.
    """

    usesWeights = True

    measuresLatency = True

    PENALTY = 10.0
    """
    The latency in seconds assumed for a backend whose first request is
    still pending.
    """

    def __init__(self, random: Random, decay: float = 10.0) -> None:
        """
        @param random: The source of randomness (seeded in tests).
        @param decay: The averages' time constant, in seconds.
        """
        self._random = random
        self.decay = decay
        self._averages: dict[int, tuple[float, float]] = {}

    def observe(self, backend: Backend, latency: float, now: float) -> None:
        """
        Record the latency of one response from a backend.

        @see: L{IStrategy.observe}
        """
        previous = self._averages.get(id(backend))
        if previous is None or latency > previous[0]:
            self._averages[id(backend)] = (latency, now)
            return
        self._averages[id(backend)] = (self._decayed(previous, now, latency), now)

    def adopt(self, previous: IStrategy, backends: Sequence[Backend]) -> None:
        """
        Keep the latencies of the backends kept across a reload.

        @see: L{IStrategy.adopt}
        """
        if isinstance(previous, PeakEWMA):
            for backend in backends:
                average = previous._averages.get(id(backend))
                if average is not None:
                    self._averages[id(backend)] = average

    def _decayed(
        self, previous: tuple[float, float], now: float, latency: float
    ) -> float:
        """
        @return: The moving average C{previous} (value, time) moved towards
            C{latency} by the time elapsed since.
        """
        value, at = previous
        weight = math.exp(-max(now - at, 0.0) / self.decay)
        return value * weight + latency * (1 - weight)

    def latency(self, backend: Backend) -> float | None:
        """
        @param backend: A backend.
        @return: Its average latency now, or L{None} if it has not answered
            yet.
        """
        previous = self._averages.get(id(backend))
        if previous is None:
            return None
        # With no new observation the average keeps its value: decaying it
        # towards zero would make a backend that stopped answering look fast.
        return previous[0]

    def cost(self, backend: Backend) -> float:
        """
        @param backend: A backend.
        @return: Its latency times its requests in flight plus one, over its
            weight.
        """
        latency = self.latency(backend)
        if latency is None:
            latency = 0.0 if backend.active == 0 else self.PENALTY
        return latency * (backend.active + 1) / backend.effectiveWeight

    def choose(
        self,
        backends: Sequence[Backend],
        eligible: Callable[[Backend], bool],
        key: bytes | None = None,
    ) -> Choice | None:
        """
        Choose the cheaper of two eligible backends drawn at random.

        @see: L{IStrategy.choose}
        """
        return _twoChoices(
            self._random,
            backends,
            eligible,
            "peak-ewma",
            lambda a, b: self.cost(a) < self.cost(b),
            self._describe,
        )

    def _describe(self, backend: Backend) -> str:
        """
        @return: C{"app-1 (12.0 ms, 2 in flight)"}, or C{"untried"}.
        """
        latency = self.latency(backend)
        seen = "untried" if latency is None else f"{latency * 1000:.1f} ms"
        return f"{backend.name} ({seen}, {backend.active} in flight)"


STRATEGIES: Mapping[str, Callable[[PoolConfig, Random], IStrategy]] = {
    "round-robin": lambda config, random: RoundRobin(),
    "weighted-round-robin": lambda config, random: WeightedRoundRobin(),
    "least-connections": lambda config, random: LeastConnections(),
    "random-two": lambda config, random: RandomTwo(random),
    "consistent-hash": lambda config, random: ConsistentHash(
        random, config.hash_balance_factor
    ),
    "peak-ewma": lambda config, random: PeakEWMA(random, config.ewma_decay),
}
"""
Make the strategy a pool's configuration names (C{strategy}), given the
pool's configuration and a source of randomness.
"""
