# -*- test-case-name: tests.test_stats -*-
"""
Traffic statistics kept per backend and per frontend.

Plain counters, a fixed-bucket L{Histogram} of durations and a
L{LatencyWindow} of recent durations for percentiles.  The admin page, the
JSON API and the Prometheus collector in L{lbtwist.metrics} read them; the
proxy writes them.  Nothing here touches the reactor or Prometheus: the time
is passed in as C{now}.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence

__all__ = [
    "DURATION_BUCKETS",
    "FAILURE_KINDS",
    "STATUS_CLASSES",
    "BackendStats",
    "FrontendStats",
    "Histogram",
    "LatencyWindow",
    "statusClass",
]

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
"""The classes responses are counted by, from L{statusClass}."""

FAILURE_KINDS = (
    "connect_refused",
    "connect_timeout",
    "connect_error",
    "response_timeout",
    "invalid_response",
    "connection_lost",
    "truncated",
)
"""The reasons a failed attempt on a backend is counted by."""

DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""The upper bounds, in seconds, of the duration histograms' buckets."""


def statusClass(status: int) -> str | None:
    """
    The class of an HTTP status code.

    @param status: A status code, e.g. C{404}.
    @return: One of L{STATUS_CLASSES}, e.g. C{"4xx"}, or L{None} for a code
        outside 100-599.
    """
    return _CLASS_OF_STATUS.get(status)


_CLASS_OF_STATUS = {
    status: STATUS_CLASSES[status // 100 - 1] for status in range(100, 600)
}


def _zeroCounts(keys: Sequence[str]) -> dict[str, int]:
    """
    @param keys: The keys to count by.
    @return: A dictionary with a zero for every key, in the order given.
    """
    return dict.fromkeys(keys, 0)


class Histogram:
    """
    Counts of observed values in fixed buckets, with their sum, as a
    Prometheus histogram needs them.

    @ivar buckets: The buckets' upper bounds (inclusive), ascending.
    @ivar counts: The number of values in each bucket, not cumulative: the
        values greater than the previous bound and at most this one, plus a
        last slot for the values greater than every bound (C{+Inf}).
    @ivar sum: The sum of all observed values.
    @ivar count: The number of observed values.
    """

    def __init__(self, buckets: Sequence[float] = DURATION_BUCKETS) -> None:
        """
        @param buckets: The buckets' upper bounds, ascending.
        @raise ValueError: If they are not strictly ascending and finite.
        """
        bounds = tuple(float(bound) for bound in buckets)
        if any(not math.isfinite(bound) for bound in bounds) or any(
            low >= high for low, high in zip(bounds, bounds[1:])
        ):
            raise ValueError(f"buckets must be finite and ascending: {bounds!r}")
        self.buckets = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """
        Count one value.

        @param value: The value, e.g. a duration in seconds.
        """
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """
        The bucket counts the way Prometheus exposes them.

        @return: C{(upper bound, number of values at most that bound)} for
            every bucket, then C{("+Inf", count)}; e.g. C{[("0.001", 2),
            ..., ("30.0", 7), ("+Inf", 8)]}.
        """
        bounds = [repr(bound) for bound in self.buckets] + ["+Inf"]
        total = 0
        result = []
        for bound, count in zip(bounds, self.counts):
            total += count
            result.append((bound, total))
        return result


class LatencyWindow:
    """
    The recent durations of one backend, for percentiles: at most the last
    C{size} values, none older than C{age} seconds.

    Values are expected in the order of their times.
    """

    def __init__(self, size: int = 1000, age: float = 300.0) -> None:
        """
        @param size: The most values kept.
        @param age: How many seconds a value is kept.
        """
        self._samples: deque[tuple[float, float]] = deque(maxlen=size)
        self._age = age

    def add(self, value: float, now: float) -> None:
        """
        Add a value, dropping the oldest beyond C{size} and those too old.

        @param value: A duration in seconds.
        @param now: The current time.
        """
        self._expire(now)
        self._samples.append((now, value))

    def quantile(self, q: float, now: float) -> float | None:
        """
        A quantile of the values in the window, by the nearest-rank method:
        the smallest value that at least C{q} of the values are at most.

        @param q: The quantile, from 0 to 1, e.g. C{0.99}.
        @param now: The current time; older values than C{age} are dropped.
        @return: The value, or L{None} if the window is empty.
        @raise ValueError: If C{q} is not between 0 and 1.
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be between 0 and 1: {q!r}")
        self._expire(now)
        if not self._samples:
            return None
        values = sorted(value for _, value in self._samples)
        rank = max(1, math.ceil(q * len(values)))
        return values[rank - 1]

    def _expire(self, now: float) -> None:
        """
        Drop the values older than C{age} seconds.

        @param now: The current time.
        """
        samples = self._samples
        while samples and now - samples[0][0] > self._age:
            samples.popleft()


class BackendStats:
    """
    What happened to the requests sent to one backend.

    @ivar responses: Responses relayed from the backend, by status class
        (L{STATUS_CLASSES}).
    @ivar failures: Failed attempts, by kind (L{FAILURE_KINDS}).
    @ivar duration: Attempt durations in seconds: from the start of the
        attempt until the response body is complete, or until it failed.
    @ivar latency: The recent attempt durations, for percentiles.
    @ivar checkDuration: Active health check durations in seconds.
    """

    def __init__(self) -> None:
        self.responses = _zeroCounts(STATUS_CLASSES)
        self.failures = _zeroCounts(FAILURE_KINDS)
        self.duration = Histogram()
        self.latency = LatencyWindow()
        self.checkDuration = Histogram()

    def recordResponse(self, status: int, duration: float, now: float) -> None:
        """
        Count a response relayed from the backend.

        @param status: Its status code; one outside 100-599 is timed but not
            counted in L{responses}.
        @param duration: How long the attempt took, in seconds.
        @param now: The current time.
        """
        kind = statusClass(status)
        if kind is not None:
            self.responses[kind] += 1
        self._timed(duration, now)

    def recordFailure(self, kind: str, duration: float, now: float) -> None:
        """
        Count a failed attempt.

        @param kind: One of L{FAILURE_KINDS}.
        @param duration: How long the attempt took until it failed, in
            seconds.
        @param now: The current time.
        @raise ValueError: If C{kind} is not one of L{FAILURE_KINDS}.
        """
        if kind not in self.failures:
            raise ValueError(f"unknown failure kind: {kind!r}")
        self.failures[kind] += 1
        self._timed(duration, now)

    def recordCheck(self, duration: float) -> None:
        """
        Time an active health check.

        @param duration: How long it took, in seconds.
        """
        self.checkDuration.observe(duration)

    def serverErrors(self) -> int:
        """
        @return: The number of C{5xx} responses relayed from the backend.
        """
        return self.responses["5xx"]

    def _timed(self, duration: float, now: float) -> None:
        """
        Record an attempt's duration in the histogram and the window.

        @param duration: How long it took, in seconds.
        @param now: The current time.
        """
        self.duration.observe(duration)
        self.latency.add(duration, now)


class FrontendStats:
    """
    What happened on one frontend.

    @ivar connectionsTotal: Client connections accepted in total.
    @ivar connectionsOpen: Client connections open now.
    @ivar bytesIn: Bytes received from clients.
    @ivar bytesOut: Bytes sent to clients.
    @ivar responses: Responses sent to clients, by status class
        (L{STATUS_CLASSES}), lbtwist's own error responses included.
    @ivar rateLimited: Requests refused with 429 by the frontend's
        C{rate_limit}.
    """

    def __init__(self) -> None:
        self.connectionsTotal = 0
        self.connectionsOpen = 0
        self.bytesIn = 0
        self.bytesOut = 0
        self.responses = _zeroCounts(STATUS_CLASSES)
        self.rateLimited = 0

    def connectionOpened(self) -> None:
        """
        Count a new client connection.
        """
        self.connectionsTotal += 1
        self.connectionsOpen += 1

    def connectionClosed(self) -> None:
        """
        Count a client connection that closed.
        """
        self.connectionsOpen -= 1

    def received(self, n: int) -> None:
        """
        Count bytes received from a client.

        @param n: How many.
        """
        self.bytesIn += n

    def sent(self, n: int) -> None:
        """
        Count bytes sent to a client.

        @param n: How many.
        """
        self.bytesOut += n

    def recordResponse(self, status: int) -> None:
        """
        Count a response sent to a client.

        @param status: Its status code; one outside 100-599 is not counted.
        """
        kind = statusClass(status)
        if kind is not None:
            self.responses[kind] += 1
