# -*- test-case-name: tests.test_simulate -*-
"""
The strategy simulator: C{python -m lbtwist simulate CONFIG}.

It runs a configuration's pools, with lbtwist's own L{BackendPool},
strategies, backend state and attempt loop, on a L{Clock} against simulated
backends: no sockets and no wall time, so a run of 100,000 requests takes
seconds and the same seed prints the same report, byte for byte.

A workload is either made up (C{--requests} arrivals at C{--rate} per
second, a Poisson process; keys drawn from C{--clients} clients) or replayed
from a JSON access log of lbtwist (C{--replay}): arrival times, client
addresses, targets and the latencies that were observed.

Simulated backends answer after a latency drawn from their distribution
(C{--latency}), serve at most C{--concurrency} requests at once (the rest
wait in line), and refuse connections during their failure windows
(C{--fail}); active health checks run at the pool's C{interval} and see the
failures, so a failing backend is taken out and brought back as it would be
for real.
"""

from __future__ import annotations

import json
import math
import random as _random
import re
from collections import deque
from typing import IO, Callable, Collection, Iterator, Sequence

from attrs import Factory, define, frozen
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock

from lbtwist.attempts import Attempts, Lease
from lbtwist.backend import Backend, BackendState
from lbtwist.config import STRATEGY_NAMES, Config, PoolConfig
from lbtwist.failures import UpstreamFailure
from lbtwist.hashkey import keyReader
from lbtwist.maglev import MaglevTable, tableSize
from lbtwist.pool import BackendPool
from lbtwist.strategies import Choice

__all__ = [
    "SimulationError",
    "Latency",
    "parseLatency",
    "FailureWindow",
    "parseFailure",
    "Arrival",
    "poissonArrivals",
    "replayArrivals",
    "Outcome",
    "simulatePool",
    "report",
]

_REFUSED = UpstreamFailure("connect_refused", "connection refused")


class SimulationError(ValueError):
    """
    A bad simulator option or replay file; the message says which.
    """


_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|us)$")


def _seconds(text: str, what: str) -> float:
    """
    @param text: A duration with its unit: C{20ms}, C{0.5s}, C{300us}.
    @return: The duration in seconds.
    @raise SimulationError: If C{text} is not such a duration.
    """
    match = _DURATION.match(text)
    if match is None:
        raise SimulationError(
            f'{what}: "{text}" is not a duration such as 20ms, 0.5s or 300us'
        )
    value, unit = float(match.group(1)), match.group(2)
    return value * {"s": 1.0, "ms": 1e-3, "us": 1e-6}[unit]


@frozen
class Latency:
    """
    A distribution of a backend's service time.

    @ivar kind: C{"fixed"}, C{"lognormal"} or C{"exponential"}.
    @ivar seconds: The fixed value, the median (lognormal) or the mean
        (exponential).
    @ivar sigma: The lognormal's shape (the standard deviation of its
        logarithm); 0 for the others.
    """

    kind: str
    seconds: float
    sigma: float = 0.0

    def sample(self, uniform: float, normal: float) -> float:
        """
        Draw a latency from the request's own random numbers, so that every
        strategy sees the same luck for the same request.

        @param uniform: A number in M{[0, 1)}.
        @param normal: A standard normal number.
        @return: The latency in seconds.
        """
        if self.kind == "lognormal":
            return self.seconds * math.exp(self.sigma * normal)
        if self.kind == "exponential":
            return -self.seconds * math.log(1.0 - uniform)
        return self.seconds

    def __str__(self) -> str:
        milliseconds = f"{self.seconds * 1000:g}ms"
        if self.kind == "lognormal":
            return f"lognormal:{milliseconds}:{self.sigma:g}"
        if self.kind == "exponential":
            return f"exp:{milliseconds}"
        return milliseconds


DEFAULT_LATENCY = Latency("lognormal", 0.010, 0.5)
"""
The latency of a backend without a C{--latency}: a median of 10 ms with a
long tail.
"""


def parseLatency(text: str) -> Latency:
    """
    Parse a distribution: C{5ms} (fixed), C{lognormal:20ms:0.5} (median and
    shape) or C{exp:20ms} (mean).

    @raise SimulationError: On anything else.
    """
    parts = text.split(":")
    if len(parts) == 1:
        return Latency("fixed", _seconds(parts[0], "--latency"))
    if parts[0] == "lognormal" and len(parts) == 3:
        try:
            sigma = float(parts[2])
        except ValueError:
            sigma = -1.0
        if not 0 <= sigma <= 5:
            raise SimulationError(
                f'--latency: lognormal shape "{parts[2]}" must be a number from 0 to 5'
            )
        return Latency("lognormal", _seconds(parts[1], "--latency"), sigma)
    if parts[0] == "exp" and len(parts) == 2:
        return Latency("exponential", _seconds(parts[1], "--latency"))
    raise SimulationError(
        f'--latency: "{text}" is not 5ms, lognormal:20ms:0.5 or exp:20ms'
    )


@frozen
class FailureWindow:
    """
    A time during which a backend refuses every connection.

    @ivar start: Seconds after the start of the run.
    @ivar end: Seconds after the start of the run (excluded).
    """

    start: float
    end: float

    def covers(self, now: float) -> bool:
        """
        @return: Whether C{now} falls in the window.
        """
        return self.start <= now < self.end


def _target(spec: str, option: str) -> tuple[str, str]:
    """
    Split C{NAME=...} or C{NAME@...} at its separator, the name possibly
    qualified by its pool (C{app/app-1}).
    """
    separator = "=" if option == "--latency" else "@"
    name, found, rest = spec.partition(separator)
    if not found or not name or not rest:
        example = "app-1=5ms" if option == "--latency" else "app-3@30s-60s"
        raise SimulationError(f'{option}: "{spec}" is not of the form {example}')
    return name, rest


def parseFailure(text: str) -> FailureWindow:
    """
    Parse a failure window: C{30s-60s}.

    @raise SimulationError: On anything else.
    """
    start, found, end = text.partition("-")
    if not found:
        raise SimulationError(f'--fail: "{text}" is not a window such as 30s-60s')
    window = FailureWindow(_seconds(start, "--fail"), _seconds(end, "--fail"))
    if window.end <= window.start:
        raise SimulationError(f'--fail: window "{text}" ends before it starts')
    return window


@frozen
class Arrival:
    """
    One request of the workload.

    @ivar at: Seconds after the start of the run.
    @ivar clientAddress: The client's address.
    @ivar target: The request target.
    @ivar headers: Its field lines.
    @ivar uniform: Its own uniform random number (latency draw).
    @ivar normal: Its own normal random number (latency draw).
    @ivar observed: The latency observed in a replayed log, if any.
    """

    at: float
    clientAddress: IPv4Address
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    uniform: float
    normal: float
    observed: float | None = None


def poissonArrivals(
    count: int, rate: float, clients: int, seed: int
) -> Iterator[Arrival]:
    """
    Make up a workload: C{count} requests arriving at C{rate} per second on
    average, each from one of C{clients} clients, each client with its own
    address, user header and cookie, path and query.

    @param seed: The same seed gives the same workload.
    """
    random = _random.Random(f"arrivals {seed}")
    now = 0.0
    for _ in range(count):
        now += random.expovariate(rate)
        client = random.randrange(clients)
        address = f"10.{client >> 16 & 255}.{client >> 8 & 255}.{client & 255}"
        yield Arrival(
            at=now,
            clientAddress=IPv4Address("TCP", address, 40000 + client % 20000),
            target=f"/item/{client}?user=u{client}".encode(),
            headers=(
                (b"X-User", f"u{client}".encode()),
                (b"Cookie", f"session=s{client}".encode()),
            ),
            uniform=random.random(),
            normal=random.gauss(0.0, 1.0),
        )


def replayArrivals(lines: IO[str], pool: str, seed: int) -> list[Arrival]:
    """
    Read a workload from a JSON access log of lbtwist (C{access_log_format =
    "json"}): one arrival per HTTP request record of C{pool}, at its time,
    from its client, with its target, any C{headers} object it carries, and
    the latency it had.

    @param lines: The log's lines.
    @param pool: The pool whose requests to replay.
    @param seed: Seeds the random numbers of each request.
    @raise SimulationError: On a line that is not such a record.
    """
    from datetime import datetime

    random = _random.Random(f"replay {seed}")
    arrivals: list[Arrival] = []
    first: float | None = None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if record.get("pool") != pool or "target" not in record:
                continue
            at = datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
            seconds = at.timestamp()
            duration = float(record["duration_ms"]) / 1000
            target = str(record["target"]).encode("utf-8")
            client = str(record["client"])
            headers = tuple(
                (str(name).encode("utf-8"), str(value).encode("utf-8"))
                for name, value in dict(record.get("headers") or {}).items()
            )
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise SimulationError(
                f"--replay: line {number} is not a JSON access log record: {e}"
            ) from None
        # The request arrived when it ended minus how long it took.
        seconds -= duration
        if first is None:
            first = seconds
        arrivals.append(
            Arrival(
                at=seconds,
                clientAddress=IPv4Address("TCP", client, 0),
                target=target,
                headers=headers,
                uniform=random.random(),
                normal=random.gauss(0.0, 1.0),
                observed=duration,
            )
        )
    if not arrivals:
        raise SimulationError(f'--replay: no request of pool "{pool}" in the log')
    arrivals.sort(key=lambda arrival: arrival.at)
    start = arrivals[0].at
    return [
        Arrival(
            a.at - start, a.clientAddress, a.target, a.headers, a.uniform, a.normal,
            a.observed,
        )
        for a in arrivals
    ]


@define
class _SimulatedBackend:
    """
    A backend's behaviour in the simulation, and what it saw.
    """

    latency: Latency | None
    failures: Sequence[FailureWindow]
    concurrency: int
    serving: int = 0
    waiting: deque[Callable[[], None]] = Factory(deque)
    requests: int = 0
    refused: int = 0
    peak: int = 0
    timeline: list[tuple[float, int, float]] = Factory(list)

    def failing(self, now: float) -> bool:
        return any(window.covers(now) for window in self.failures)


@frozen
class Outcome:
    """
    What one strategy did with one pool's workload.

    @ivar strategy: The strategy's name.
    @ivar pool: The pool's name.
    @ivar backends: Per backend, in pool order: name, requests served, peak
        requests in flight, attempts refused while it was failing.
    @ivar latencies: Each answered request's latency as its client saw it,
        sorted.
    @ivar statuses: How many requests got each failure status (502, 503).
    @ivar hitFailing: Requests that had at least one attempt on a failing
        backend.
    @ivar moved: For C{consistent-hash}: the fractions of the workload's
        keys that move when the last backend is removed and when one is
        added, or L{None}.
    @ivar timeline: Per backend, C{(second, requests started, mean latency)}
        samples, for plots.
    """

    strategy: str
    pool: str
    backends: tuple[tuple[str, int, int, int], ...]
    latencies: tuple[float, ...]
    statuses: tuple[tuple[int, int], ...]
    hitFailing: int
    moved: tuple[float, float] | None
    timeline: tuple[tuple[str, tuple[tuple[float, int, float], ...]], ...]


def _lookup(spec: dict[str, object], pool: str, name: str) -> object | None:
    """
    @return: What C{spec} has for a backend, under C{pool/name} or C{name}.
    """
    return spec.get(f"{pool}/{name}", spec.get(name))


def simulatePool(
    config: PoolConfig,
    strategy: str,
    arrivals: Sequence[Arrival],
    latencies: dict[str, Latency],
    failures: dict[str, list[FailureWindow]],
    concurrency: int,
    seed: int,
) -> Outcome:
    """
    Run one pool with one strategy over a workload.

    @param config: The pool's configuration (its C{strategy} is replaced).
    @param strategy: The strategy to run.
    @param arrivals: The workload, in time order.
    @param latencies: Latency by backend name (or C{pool/name}).
    @param failures: Failure windows by backend name (or C{pool/name}).
    @param concurrency: Requests a backend serves at once; 0 for no limit.
    @param seed: Seeds the strategy's random choices.
    @return: What happened.
    """
    from attrs import evolve

    config = evolve(
        config,
        strategy=strategy,
        hash_key=config.hash_key if strategy == "consistent-hash" else "client_ip",
        hash_balance_factor=(
            config.hash_balance_factor if strategy == "consistent-hash" else 125
        ),
        ewma_decay=config.ewma_decay if strategy == "peak-ewma" else 10.0,
    )
    clock = Clock()
    pool = BackendPool(config, random=_random.Random(f"strategy {seed}"))
    simulated: dict[int, _SimulatedBackend] = {}
    for backend in pool.backends:
        backend.setState(BackendState.UP, "simulation start", 0.0)
        latency = _lookup(latencies, pool.name, backend.name)  # type: ignore[arg-type]
        windows = _lookup(failures, pool.name, backend.name)  # type: ignore[arg-type]
        simulated[id(backend)] = _SimulatedBackend(
            latency=latency if isinstance(latency, Latency) else None,
            failures=windows if isinstance(windows, list) else [],
            concurrency=concurrency,
        )
    read = keyReader(config.hash_key) if strategy == "consistent-hash" else None
    answered: list[float] = []
    statuses = {502: 0, 503: 0}
    hitFailing = 0
    health = config.health

    def check() -> None:
        now = clock.seconds()
        for backend in pool.backends:
            ok = not simulated[id(backend)].failing(now)
            backend.checkResult(ok, "simulated" if ok else "connection refused", now)
        clock.callLater(health.interval, check)

    if health.check != "none":
        clock.callLater(health.interval, check)

    def start(arrival: Arrival) -> None:
        key = read(arrival) if read is not None else None

        def choose(now: float, tried: Collection[Backend]) -> Choice | None:
            return pool.choose(now, tried, key)

        attempts = Attempts(clock, choose, config.retries, "simulated request", pool)
        hit = False
        while True:
            lease = attempts.next()
            if lease is None:
                statuses[attempts.giveUpStatus()] += 1
                break
            state = simulated[id(lease.backend)]
            if state.failing(clock.seconds()):
                state.refused += 1
                hit = True
                if attempts.failed(lease, _REFUSED):
                    continue
                statuses[attempts.giveUpStatus()] += 1
                break
            serve(arrival, attempts, lease, state)
            break
        if hit:
            nonlocal hitFailing
            hitFailing += 1

    def serve(
        arrival: Arrival, attempts: Attempts, lease: Lease, state: _SimulatedBackend
    ) -> None:
        state.requests += 1
        state.peak = max(state.peak, lease.backend.active)
        if state.latency is None and arrival.observed is not None:
            service = arrival.observed
        else:
            distribution = state.latency or DEFAULT_LATENCY
            service = distribution.sample(arrival.uniform, arrival.normal)

        def begin() -> None:
            state.serving += 1
            clock.callLater(service, done)

        def done() -> None:
            state.serving -= 1
            now = clock.seconds()
            # Rounded to the nanosecond: sums of floats are not exact.
            latency = round(now - arrival.at, 9)
            attempts.succeeded(lease)
            lease.release()
            answered.append(latency)
            state.timeline.append((arrival.at, 1, latency))
            if state.waiting:
                state.waiting.popleft()()

        if state.concurrency and state.serving >= state.concurrency:
            state.waiting.append(begin)
        else:
            begin()

    for arrival in arrivals:
        _advanceTo(clock, arrival.at)
        start(arrival)
    # Let every request in flight finish; the checks stop with the clock.
    while any(state.serving or state.waiting for state in simulated.values()):
        _advanceTo(clock, min(call.getTime() for call in clock.getDelayedCalls()))
    moved = None
    if strategy == "consistent-hash":
        moved = _keysMoved(pool.backends, arrivals, read)  # type: ignore[arg-type]
    return Outcome(
        strategy=strategy,
        pool=pool.name,
        backends=tuple(
            (
                backend.name,
                simulated[id(backend)].requests,
                simulated[id(backend)].peak,
                simulated[id(backend)].refused,
            )
            for backend in pool.backends
        ),
        latencies=tuple(sorted(answered)),
        statuses=tuple(sorted(statuses.items())),
        hitFailing=hitFailing,
        moved=moved,
        timeline=tuple(
            (
                backend.name,
                _perSecond(
                    simulated[id(backend)].timeline,
                    int(arrivals[-1].at) if arrivals else 0,
                ),
            )
            for backend in pool.backends
        ),
    )


def _advanceTo(clock: Clock, when: float) -> None:
    """
    Move C{clock} to C{when}, running each call due on the way at its own
    time (L{Clock.advance} runs them all at the end of the step).
    """
    while True:
        due = [call.getTime() for call in clock.getDelayedCalls()]
        following = min(due) if due else None
        if following is None or following > when:
            break
        clock.advance(max(following - clock.seconds(), 0.0))
    clock.advance(max(when - clock.seconds(), 0.0))


def _perSecond(
    samples: Sequence[tuple[float, int, float]], seconds: int
) -> tuple[tuple[float, int, float], ...]:
    """
    @param samples: A backend's requests: C{(arrival, 1, latency)}.
    @param seconds: How many seconds the run lasted.
    @return: C{(second, requests, mean latency)} for every second of the
        run; a second without requests has a mean latency of NaN (a gap in
        a plot).
    """
    buckets: list[list[float]] = [[] for _ in range(seconds + 1)]
    for at, _, latency in samples:
        buckets[min(int(at), seconds)].append(latency)
    return tuple(
        (float(second), len(values), sum(values) / len(values) if values else math.nan)
        for second, values in enumerate(buckets)
    )


def _keysMoved(
    backends: Sequence[Backend],
    arrivals: Sequence[Arrival],
    read: Callable[[Arrival], bytes | None],
) -> tuple[float, float]:
    """
    @return: The fractions of the workload's distinct keys that move when
        the last backend is removed, and when a backend is added.
    """
    keys = sorted({key for key in map(read, arrivals) if key is not None})
    names = [backend.name for backend in backends]
    weights = [backend.weight for backend in backends]

    def table(names: list[str], weights: list[int]) -> MaglevTable:
        return MaglevTable(names, weights, tableSize(len(names), sum(weights)))

    full = table(names, weights)
    if not keys:
        return (0.0, 0.0)
    fewer = table(names[:-1], weights[:-1]) if len(names) > 1 else full
    extra = "+".join(names) + "+new"
    more = table(names + [extra], weights + [1])
    before = [full.lookup(key) for key in keys]
    removed = sum(old != fewer.lookup(key) for old, key in zip(before, keys))
    added = sum(old != more.lookup(key) for old, key in zip(before, keys))
    return (removed / len(keys), added / len(keys))


def _quantile(values: Sequence[float], q: float) -> float:
    """
    @return: The C{q} quantile of sorted C{values} (nearest rank).
    """
    if not values:
        return math.nan
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def report(outcomes: Sequence[Outcome], header: str) -> str:
    """
    Format outcomes as text tables: one block per pool and strategy.

    @param outcomes: What the runs did.
    @param header: The first line (the workload).
    @return: The report, the same for the same outcomes.
    """
    lines = [header]
    for outcome in outcomes:
        total = sum(requests for _, requests, _, _ in outcome.backends) or 1
        lines.append("")
        lines.append(f'pool "{outcome.pool}", strategy {outcome.strategy}')
        width = max(7, *(len(name) for name, _, _, _ in outcome.backends))
        lines.append(
            f"  {'backend':<{width}}  {'requests':>8}  {'share':>6}  "
            f"{'peak in flight':>14}  {'refused while failing':>21}"
        )
        for name, requests, peak, refused in outcome.backends:
            lines.append(
                f"  {name:<{width}}  {requests:>8}  {100 * requests / total:>5.1f}%  "
                f"{peak:>14}  {refused:>21}"
            )
        failed = ", ".join(f"{count} x {status}" for status, count in outcome.statuses)
        lines.append(
            f"  clients: p50 {_quantile(outcome.latencies, 0.5) * 1000:.2f} ms, "
            f"p99 {_quantile(outcome.latencies, 0.99) * 1000:.2f} ms; "
            f"{len(outcome.latencies)} answered, failed: {failed}; "
            f"{outcome.hitFailing} hit a failing backend"
        )
        if outcome.moved is not None:
            count = len(outcome.backends)
            removed, added = outcome.moved
            lines.append(
                f"  keys moved: {100 * removed:.1f}% removing "
                f"{outcome.backends[-1][0]} (ideal {100 / count:.1f}%), "
                f"{100 * added:.1f}% adding a backend "
                f"(ideal {100 / (count + 1):.1f}%)"
            )
    return "\n".join(lines) + "\n"


def plot(outcomes: Sequence[Outcome], path: str) -> None:
    """
    Draw, per pool and strategy, each backend's requests per second and
    mean latency over time, into a PNG file.

    @raise SimulationError: If matplotlib is not installed.
    """
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        raise SimulationError(
            "--plot needs matplotlib: pip install 'lbtwist[plot]'"
        ) from None
    figure, axes = pyplot.subplots(
        len(outcomes), 2, figsize=(12, 3 * len(outcomes)), squeeze=False
    )
    for row, outcome in enumerate(outcomes):
        load, latency = axes[row]
        for name, samples in outcome.timeline:
            seconds = [second for second, _, _ in samples]
            load.plot(seconds, [count for _, count, _ in samples], label=name)
            latency.plot(seconds, [mean * 1000 for _, _, mean in samples], label=name)
        load.set_title(f"{outcome.pool}: {outcome.strategy}: requests/s")
        latency.set_title(f"{outcome.pool}: {outcome.strategy}: mean latency (ms)")
        load.set_xlabel("seconds")
        latency.set_xlabel("seconds")
        load.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)


def run(
    config: Config,
    strategies: Sequence[str],
    requests: int,
    rate: float,
    clients: int,
    seed: int,
    latencySpecs: Sequence[str],
    failureSpecs: Sequence[str],
    concurrency: int,
    replay: IO[str] | None,
) -> tuple[str, list[Outcome]]:
    """
    Simulate every pool of a configuration with each strategy.

    @return: The report and the outcomes.
    @raise SimulationError: On a bad option.
    """
    if "all" in strategies:
        strategies = STRATEGY_NAMES
    for name in strategies:
        if name not in STRATEGY_NAMES:
            raise SimulationError(
                f'--strategy "{name}" is not one of '
                + ", ".join(f'"{known}"' for known in STRATEGY_NAMES)
            )
    known = {
        qualified
        for pool in config.pools
        for backend in pool.backends
        for qualified in (backend.name, f"{pool.name}/{backend.name}")
    }
    latencies: dict[str, Latency] = {}
    for spec in latencySpecs:
        name, distribution = _target(spec, "--latency")
        if name not in known:
            raise SimulationError(f'--latency: no backend named "{name}"')
        latencies[name] = parseLatency(distribution)
    failures: dict[str, list[FailureWindow]] = {}
    for spec in failureSpecs:
        name, window = _target(spec, "--fail")
        if name not in known:
            raise SimulationError(f'--fail: no backend named "{name}"')
        failures.setdefault(name, []).append(parseFailure(window))
    replayed = replay.readlines() if replay is not None else None
    outcomes = []
    pools = [pool for pool in config.pools if pool.mode == "http"] or list(config.pools)
    for pool in pools:
        if replayed is not None:
            arrivals = replayArrivals(iter(replayed), pool.name, seed)  # type: ignore[arg-type]
        else:
            arrivals = list(poissonArrivals(requests, rate, clients, seed))
        for strategy in strategies or [pool.strategy]:
            outcomes.append(
                simulatePool(
                    pool, strategy, arrivals, dict(latencies), failures, concurrency, seed
                )
            )
    if replayed is not None:
        header = f"replay of {len(replayed)} log lines, seed {seed}"
    else:
        header = (
            f"{requests} requests at {rate:g}/s from {clients} clients, seed {seed}"
        )
    return report(outcomes, header), outcomes
