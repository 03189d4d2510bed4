# -*- test-case-name: tests.test_stats -*-
"""
Tests for L{lbtwist.stats}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from lbtwist.stats import (
    DURATION_BUCKETS,
    FAILURE_KINDS,
    STATUS_CLASSES,
    BackendStats,
    FrontendStats,
    Histogram,
    LatencyWindow,
    statusClass,
)


class StatusClassTests(SynchronousTestCase):
    """
    Tests for L{statusClass}.
    """

    def test_classes(self) -> None:
        """
        Codes from 100 to 599 are classed by their first digit.
        """
        self.assertEqual(
            [statusClass(code) for code in (100, 199, 200, 304, 404, 500, 599)],
            ["1xx", "1xx", "2xx", "3xx", "4xx", "5xx", "5xx"],
        )

    def test_outOfRange(self) -> None:
        """
        Codes outside 100-599 have no class.
        """
        self.assertEqual([statusClass(code) for code in (0, 99, 600, 999)], [None] * 4)


class HistogramTests(SynchronousTestCase):
    """
    Tests for L{Histogram}.
    """

    def test_empty(self) -> None:
        """
        A new histogram has zero counts in every bucket and in C{+Inf}.
        """
        histogram = Histogram((0.1, 1.0))
        self.assertEqual(histogram.buckets, (0.1, 1.0))
        self.assertEqual(histogram.counts, [0, 0, 0])
        self.assertEqual((histogram.sum, histogram.count), (0.0, 0))
        self.assertEqual(histogram.cumulative(), [("0.1", 0), ("1.0", 0), ("+Inf", 0)])

    def test_observe(self) -> None:
        """
        A value goes into the first bucket whose bound is at least the value;
        one above every bound goes into the C{+Inf} slot.
        """
        histogram = Histogram((0.25, 1.0))
        for value in (0.125, 0.25, 0.5, 1.0, 2.0, 3.0):
            histogram.observe(value)
        self.assertEqual(histogram.counts, [2, 2, 2])
        self.assertEqual(histogram.count, 6)
        self.assertEqual(histogram.sum, 6.875)

    def test_cumulative(self) -> None:
        """
        L{Histogram.cumulative} gives running totals labelled by the bounds
        as Prometheus writes them, ending with C{+Inf} and the count.
        """
        histogram = Histogram((0.0025, 1, 30))
        for value in (0.001, 0.002, 0.5, 31.0):
            histogram.observe(value)
        self.assertEqual(
            histogram.cumulative(),
            [("0.0025", 2), ("1.0", 3), ("30.0", 3), ("+Inf", 4)],
        )

    def test_defaultBuckets(self) -> None:
        """
        By default the buckets are L{DURATION_BUCKETS}, from 1 ms to 30 s.
        """
        histogram = Histogram()
        self.assertEqual(histogram.buckets, DURATION_BUCKETS)
        self.assertEqual(len(histogram.counts), 15)
        self.assertEqual(histogram.cumulative()[0], ("0.001", 0))
        self.assertEqual(histogram.cumulative()[-2:], [("30.0", 0), ("+Inf", 0)])

    def test_unorderedBuckets(self) -> None:
        """
        Buckets that are not strictly ascending are refused.
        """
        self.assertRaises(ValueError, Histogram, (1.0, 0.5))
        self.assertRaises(ValueError, Histogram, (1.0, 1.0))

    def test_infiniteBucket(self) -> None:
        """
        An infinite bound is refused: C{+Inf} is always there.
        """
        self.assertRaises(ValueError, Histogram, (1.0, float("inf")))


class LatencyWindowTests(SynchronousTestCase):
    """
    Tests for L{LatencyWindow}.
    """

    def test_empty(self) -> None:
        """
        An empty window has no quantiles.
        """
        self.assertIsNone(LatencyWindow().quantile(0.5, 0.0))

    def test_nearestRank(self) -> None:
        """
        Quantiles are the values at the nearest rank, C{ceil(q * n)}, of the
        sorted values.
        """
        window = LatencyWindow()
        for value in (5, 1, 4, 2, 3, 10, 9, 8, 7, 6):
            window.add(float(value), 0.0)
        self.assertEqual(
            [window.quantile(q, 0.0) for q in (0.0, 0.1, 0.15, 0.5, 0.51, 0.99, 1.0)],
            [1.0, 1.0, 2.0, 5.0, 6.0, 10.0, 10.0],
        )

    def test_oneValue(self) -> None:
        """
        With one value every quantile is that value.
        """
        window = LatencyWindow()
        window.add(0.25, 0.0)
        self.assertEqual([window.quantile(q, 0.0) for q in (0.5, 0.99)], [0.25, 0.25])

    def test_size(self) -> None:
        """
        Only the last C{size} values are kept.
        """
        window = LatencyWindow(size=3)
        for value in (100.0, 1.0, 2.0, 3.0):
            window.add(value, 0.0)
        self.assertEqual(window.quantile(1.0, 0.0), 3.0)
        self.assertEqual(window.quantile(0.0, 0.0), 1.0)

    def test_age(self) -> None:
        """
        Values older than C{age} seconds are dropped; one exactly C{age} old
        is kept.
        """
        window = LatencyWindow(age=10.0)
        window.add(9.0, 0.0)
        window.add(1.0, 5.0)
        self.assertEqual(window.quantile(1.0, 10.0), 9.0)
        self.assertEqual(window.quantile(1.0, 10.5), 1.0)
        self.assertIsNone(window.quantile(1.0, 15.5))

    def test_addExpires(self) -> None:
        """
        Adding a value drops the values that have become too old.
        """
        window = LatencyWindow(age=10.0)
        window.add(9.0, 0.0)
        window.add(1.0, 20.0)
        self.assertEqual(window.quantile(1.0, 20.0), 1.0)

    def test_badQuantile(self) -> None:
        """
        A quantile outside 0-1 is refused.
        """
        window = LatencyWindow()
        self.assertRaises(ValueError, window.quantile, -0.1, 0.0)
        self.assertRaises(ValueError, window.quantile, 1.5, 0.0)


class BackendStatsTests(SynchronousTestCase):
    """
    Tests for L{BackendStats}.
    """

    def test_initial(self) -> None:
        """
        New statistics count zero of every status class and failure kind.
        """
        stats = BackendStats()
        self.assertEqual(stats.responses, dict.fromkeys(STATUS_CLASSES, 0))
        self.assertEqual(list(stats.responses), ["1xx", "2xx", "3xx", "4xx", "5xx"])
        self.assertEqual(stats.failures, dict.fromkeys(FAILURE_KINDS, 0))
        self.assertEqual(stats.duration.count, 0)
        self.assertEqual(stats.checkDuration.count, 0)
        self.assertIsNone(stats.latency.quantile(0.5, 0.0))
        self.assertEqual(stats.serverErrors(), 0)

    def test_recordResponse(self) -> None:
        """
        A response is counted by its class and timed in the histogram and
        the latency window.
        """
        stats = BackendStats()
        stats.recordResponse(200, 0.125, 100.0)
        stats.recordResponse(503, 0.5, 101.0)
        stats.recordResponse(502, 0.25, 102.0)
        self.assertEqual(
            stats.responses, {"1xx": 0, "2xx": 1, "3xx": 0, "4xx": 0, "5xx": 2}
        )
        self.assertEqual(stats.serverErrors(), 2)
        self.assertEqual(stats.duration.count, 3)
        self.assertEqual(stats.duration.sum, 0.875)
        self.assertEqual(stats.latency.quantile(0.5, 102.0), 0.25)
        self.assertEqual(stats.latency.quantile(0.99, 102.0), 0.5)

    def test_recordResponseOutOfRange(self) -> None:
        """
        A response with a code outside 100-599 is timed but not counted by
        class.
        """
        stats = BackendStats()
        stats.recordResponse(999, 0.1, 0.0)
        self.assertEqual(stats.responses, dict.fromkeys(STATUS_CLASSES, 0))
        self.assertEqual(stats.duration.count, 1)

    def test_recordFailure(self) -> None:
        """
        A failure is counted by kind and timed like a response.
        """
        stats = BackendStats()
        stats.recordFailure("connect_refused", 0.001, 5.0)
        stats.recordFailure("connect_refused", 0.002, 6.0)
        stats.recordFailure("response_timeout", 30.0, 7.0)
        expected = dict.fromkeys(FAILURE_KINDS, 0)
        expected.update(connect_refused=2, response_timeout=1)
        self.assertEqual(stats.failures, expected)
        self.assertEqual(stats.duration.count, 3)
        self.assertEqual(stats.latency.quantile(1.0, 7.0), 30.0)
        self.assertEqual(stats.responses, dict.fromkeys(STATUS_CLASSES, 0))

    def test_recordUnknownFailure(self) -> None:
        """
        An unknown failure kind is refused and nothing is counted.
        """
        stats = BackendStats()
        self.assertRaises(ValueError, stats.recordFailure, "gremlins", 0.1, 0.0)
        self.assertEqual(stats.failures, dict.fromkeys(FAILURE_KINDS, 0))
        self.assertEqual(stats.duration.count, 0)

    def test_recordCheck(self) -> None:
        """
        A health check is timed in its own histogram only.
        """
        stats = BackendStats()
        stats.recordCheck(0.003)
        self.assertEqual(stats.checkDuration.count, 1)
        self.assertEqual(stats.checkDuration.sum, 0.003)
        self.assertEqual(stats.duration.count, 0)
        self.assertIsNone(stats.latency.quantile(0.5, 0.0))


class FrontendStatsTests(SynchronousTestCase):
    """
    Tests for L{FrontendStats}.
    """

    def test_initial(self) -> None:
        """
        New frontend statistics are all zero.
        """
        stats = FrontendStats()
        self.assertEqual(
            (
                stats.connectionsTotal,
                stats.connectionsOpen,
                stats.bytesIn,
                stats.bytesOut,
            ),
            (0, 0, 0, 0),
        )
        self.assertEqual(stats.responses, dict.fromkeys(STATUS_CLASSES, 0))

    def test_connections(self) -> None:
        """
        Opened connections count toward the total and the open ones; closed
        ones leave the open count.
        """
        stats = FrontendStats()
        stats.connectionOpened()
        stats.connectionOpened()
        stats.connectionClosed()
        stats.connectionOpened()
        self.assertEqual((stats.connectionsTotal, stats.connectionsOpen), (3, 2))

    def test_bytes(self) -> None:
        """
        Bytes received and sent add up separately.
        """
        stats = FrontendStats()
        stats.received(100)
        stats.sent(20)
        stats.received(5)
        self.assertEqual((stats.bytesIn, stats.bytesOut), (105, 20))

    def test_responses(self) -> None:
        """
        Responses are counted by class; codes outside 100-599 are not.
        """
        stats = FrontendStats()
        for code in (101, 200, 204, 400, 502, 999):
            stats.recordResponse(code)
        self.assertEqual(
            stats.responses, {"1xx": 1, "2xx": 2, "3xx": 0, "4xx": 1, "5xx": 1}
        )
