# -*- test-case-name: tests.test_metrics -*-
"""
Prometheus metrics, read from the running balancer at every scrape.

L{BalancerCollector} is a C{prometheus_client} custom collector: nothing is
copied into Prometheus objects as traffic flows; each scrape reads the
backends (L{lbtwist.backend.Backend} and its L{lbtwist.stats.BackendStats})
and the frontends' L{lbtwist.stats.FrontendStats}.  L{metricsRegistry} puts
it in a registry of its own (never the global one) and L{renderMetrics}
renders that registry in the Prometheus text format.

=============================================  =========  =======================
Metric                                         Type       Labels
=============================================  =========  =======================
lbtwist_backend_up                             gauge      pool, backend
lbtwist_backend_state                          gauge      pool, backend, state
lbtwist_backend_weight                         gauge      pool, backend
lbtwist_backend_active                         gauge      pool, backend
lbtwist_backend_max_connections                gauge      pool, backend
lbtwist_backend_requests_total                 counter    pool, backend
lbtwist_backend_responses_total                counter    pool, backend, code
lbtwist_backend_failures_total                 counter    pool, backend, reason
lbtwist_backend_request_duration_seconds       histogram  pool, backend
lbtwist_backend_recent_latency_seconds         gauge      pool, backend, quantile
lbtwist_backend_health_check_duration_seconds  histogram  pool, backend
lbtwist_backend_health_check_ok                gauge      pool, backend
lbtwist_pool_queue_length                      gauge      pool
lbtwist_pool_queue_timeouts_total              counter    pool
lbtwist_pool_queue_full_total                  counter    pool
lbtwist_frontend_connections_total             counter    frontend
lbtwist_frontend_connections_open              gauge      frontend
lbtwist_frontend_received_bytes_total          counter    frontend
lbtwist_frontend_sent_bytes_total              counter    frontend
lbtwist_frontend_responses_total               counter    frontend, code
lbtwist_frontend_rate_limited_total            counter    frontend
=============================================  =========  =======================

- C{pool} and C{frontend} are names from the configuration; C{backend} is the
  backend's name, which defaults to its C{host:port}.
- C{lbtwist_backend_up} is 1 if the backend is up, else 0.
  C{lbtwist_backend_state} is 1 for the backend's current C{state} (C{up},
  C{down}, C{draining}, C{disabled}) and 0 for the three others.
- C{lbtwist_backend_active} counts the requests in flight;
  C{lbtwist_backend_requests_total} the attempts started.
- C{lbtwist_backend_max_connections} is the backend's C{max_connections};
  it is absent for a backend without a limit.
- C{lbtwist_pool_queue_length} counts the requests (TCP pools: connections)
  waiting for a backend with room; C{lbtwist_pool_queue_timeouts_total}
  those that got 503 after C{queue_timeout}, and
  C{lbtwist_pool_queue_full_total} those that got 503 because C{max_queue}
  were waiting already.
- C{code} is the status class, C{1xx} to C{5xx}.
  C{lbtwist_backend_responses_total} counts the responses relayed from the
  backend; C{lbtwist_frontend_responses_total} those sent to clients,
  lbtwist's own error responses included.
- C{reason} is one of C{connect_refused}, C{connect_timeout},
  C{connect_error}, C{response_timeout}, C{invalid_response},
  C{connection_lost}, C{truncated}.
- C{lbtwist_backend_request_duration_seconds} times each attempt from its
  start to the complete response body, or to its failure.  Both histograms'
  buckets are 1, 2.5, 5, 10, 25, 50, 100, 250 and 500 ms, 1, 2.5, 5, 10 and
  30 s.
- C{lbtwist_backend_recent_latency_seconds} gives the C{quantile}s C{0.5} and
  C{0.99} (nearest rank) of the last 1000 attempt durations no older than 5
  minutes; it is absent while there are none.
- C{lbtwist_backend_health_check_ok} is 1 if the last active health check
  passed, else 0; it is absent before the first check.
- C{lbtwist_frontend_rate_limited_total} counts the requests answered 429
  by the frontend's C{rate_limit}; only frontends with one have it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from twisted.internet.interfaces import IReactorTime

from lbtwist.backend import Backend, BackendState
from lbtwist.config import FrontendConfig
from lbtwist.pool import BackendPool
from lbtwist.stats import FAILURE_KINDS, STATUS_CLASSES, FrontendStats, Histogram

__all__ = ["QUANTILES", "BalancerCollector", "metricsRegistry", "renderMetrics"]

QUANTILES = (0.5, 0.99)
"""The quantiles of C{lbtwist_backend_recent_latency_seconds}."""

_BACKEND = ["pool", "backend"]
_FRONTEND = ["frontend"]


class _Balancer(Protocol):
    """
    What the collector reads of a L{lbtwist.balancer.Balancer}.
    """

    @property
    def pools(self) -> Mapping[str, BackendPool]:
        """
        The pools by name, in configuration order.
        """

    @property
    def frontends(self) -> Sequence[tuple[FrontendConfig, FrontendStats]]:
        """
        The frontends and their statistics, in configuration order.
        """


def _addHistogram(
    family: HistogramMetricFamily, labels: list[str], histogram: Histogram
) -> None:
    """
    Add one histogram's buckets and sum to a metric family.

    @param family: The family.
    @param labels: The label values.
    @param histogram: The histogram.
    """
    family.add_metric(labels, histogram.cumulative(), histogram.sum)


class BalancerCollector(Collector):
    """
    A C{prometheus_client} collector that reads every metric from the
    balancer's pools, backends and frontends when it is scraped.
    """

    def __init__(self, balancer: _Balancer, clock: IReactorTime) -> None:
        """
        @param balancer: The running balancer (its C{pools} and
            C{frontends}).
        @param clock: The time source for the recent latency window.
        """
        self._balancer = balancer
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        """
        Read the current values.

        @return: The metric families documented in L{lbtwist.metrics}.
        """
        yield from self._backendMetrics()
        yield from self._poolMetrics()
        yield from self._frontendMetrics()

    def _backends(self) -> Iterator[tuple[list[str], Backend]]:
        """
        @return: Every backend of every pool, in configuration order, with
            its C{pool} and C{backend} label values.
        """
        for pool in self._balancer.pools.values():
            for backend in pool.backends:
                yield [pool.name, backend.name], backend

    def _backendMetrics(self) -> Iterator[Metric]:
        """
        @return: The backend metric families.
        """
        now = self._clock.seconds()
        up = GaugeMetricFamily(
            "lbtwist_backend_up",
            "Whether the backend is up (1) or not (0).",
            labels=_BACKEND,
        )
        state = GaugeMetricFamily(
            "lbtwist_backend_state",
            "1 for the backend's current state, 0 for the other states.",
            labels=_BACKEND + ["state"],
        )
        weight = GaugeMetricFamily(
            "lbtwist_backend_weight", "The backend's weight.", labels=_BACKEND
        )
        active = GaugeMetricFamily(
            "lbtwist_backend_active",
            "Requests in flight to the backend.",
            labels=_BACKEND,
        )
        maxConnections = GaugeMetricFamily(
            "lbtwist_backend_max_connections",
            "The backend's max_connections (absent without a limit).",
            labels=_BACKEND,
        )
        requests = CounterMetricFamily(
            "lbtwist_backend_requests_total",
            "Attempts started on the backend.",
            labels=_BACKEND,
        )
        responses = CounterMetricFamily(
            "lbtwist_backend_responses_total",
            "Responses relayed from the backend, by status class.",
            labels=_BACKEND + ["code"],
        )
        failures = CounterMetricFamily(
            "lbtwist_backend_failures_total",
            "Failed attempts on the backend, by reason.",
            labels=_BACKEND + ["reason"],
        )
        duration = HistogramMetricFamily(
            "lbtwist_backend_request_duration_seconds",
            "Attempt durations, from the start to the complete response body"
            " or the failure.",
            labels=_BACKEND,
        )
        latency = GaugeMetricFamily(
            "lbtwist_backend_recent_latency_seconds",
            "Quantiles of the recent attempt durations.",
            labels=_BACKEND + ["quantile"],
        )
        checkDuration = HistogramMetricFamily(
            "lbtwist_backend_health_check_duration_seconds",
            "Active health check durations.",
            labels=_BACKEND,
        )
        checkOk = GaugeMetricFamily(
            "lbtwist_backend_health_check_ok",
            "Whether the last active health check passed (1) or not (0).",
            labels=_BACKEND,
        )
        for labels, backend in self._backends():
            stats = backend.stats
            up.add_metric(labels, int(backend.state is BackendState.UP))
            for each in BackendState:
                state.add_metric(labels + [each.value], int(backend.state is each))
            weight.add_metric(labels, backend.weight)
            active.add_metric(labels, backend.active)
            if backend.maxConnections is not None:
                maxConnections.add_metric(labels, backend.maxConnections)
            requests.add_metric(labels, backend.requests)
            for code in STATUS_CLASSES:
                responses.add_metric(labels + [code], stats.responses[code])
            for reason in FAILURE_KINDS:
                failures.add_metric(labels + [reason], stats.failures[reason])
            _addHistogram(duration, labels, stats.duration)
            for q in QUANTILES:
                value = stats.latency.quantile(q, now)
                if value is not None:
                    latency.add_metric(labels + [repr(q)], value)
            _addHistogram(checkDuration, labels, stats.checkDuration)
            if backend.lastCheckOk is not None:
                checkOk.add_metric(labels, int(backend.lastCheckOk))
        yield from [
            up,
            state,
            weight,
            active,
            maxConnections,
            requests,
            responses,
            failures,
            duration,
            latency,
            checkDuration,
            checkOk,
        ]

    def _poolMetrics(self) -> Iterator[Metric]:
        """
        @return: The pool metric families (the queues).
        """
        length = GaugeMetricFamily(
            "lbtwist_pool_queue_length",
            "Requests waiting in the pool's queue for a backend with room.",
            labels=["pool"],
        )
        timeouts = CounterMetricFamily(
            "lbtwist_pool_queue_timeouts_total",
            "Requests refused with 503 after waiting queue_timeout.",
            labels=["pool"],
        )
        full = CounterMetricFamily(
            "lbtwist_pool_queue_full_total",
            "Requests refused with 503 because max_queue were waiting.",
            labels=["pool"],
        )
        for pool in self._balancer.pools.values():
            labels = [pool.name]
            queue = pool.queue
            length.add_metric(labels, len(queue))
            timeouts.add_metric(labels, queue.timeouts)
            full.add_metric(labels, queue.rejected)
        yield from [length, timeouts, full]

    def _frontendMetrics(self) -> Iterator[Metric]:
        """
        @return: The frontend metric families.
        """
        total = CounterMetricFamily(
            "lbtwist_frontend_connections_total",
            "Client connections accepted.",
            labels=_FRONTEND,
        )
        opened = GaugeMetricFamily(
            "lbtwist_frontend_connections_open",
            "Client connections open.",
            labels=_FRONTEND,
        )
        received = CounterMetricFamily(
            "lbtwist_frontend_received_bytes_total",
            "Bytes received from clients.",
            labels=_FRONTEND,
        )
        sent = CounterMetricFamily(
            "lbtwist_frontend_sent_bytes_total",
            "Bytes sent to clients.",
            labels=_FRONTEND,
        )
        responses = CounterMetricFamily(
            "lbtwist_frontend_responses_total",
            "Responses sent to clients, by status class.",
            labels=_FRONTEND + ["code"],
        )
        rateLimited = CounterMetricFamily(
            "lbtwist_frontend_rate_limited_total",
            "Requests refused with 429 by the frontend's rate limit.",
            labels=_FRONTEND,
        )
        for frontend, stats in self._balancer.frontends:
            labels = [frontend.name]
            if frontend.rate_limit is not None:
                rateLimited.add_metric(labels, stats.rateLimited)
            total.add_metric(labels, stats.connectionsTotal)
            opened.add_metric(labels, stats.connectionsOpen)
            received.add_metric(labels, stats.bytesIn)
            sent.add_metric(labels, stats.bytesOut)
            for code in STATUS_CLASSES:
                responses.add_metric(labels + [code], stats.responses[code])
        yield from [total, opened, received, sent, responses, rateLimited]


def metricsRegistry(balancer: _Balancer, clock: IReactorTime) -> CollectorRegistry:
    """
    A registry of lbtwist's metrics only (not the process-wide default one).

    @param balancer: The running balancer.
    @param clock: The time source for the recent latency window.
    @return: A new registry with a L{BalancerCollector} over C{balancer}.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BalancerCollector(balancer, clock))
    return registry


def renderMetrics(registry: CollectorRegistry) -> tuple[bytes, str]:
    """
    Render a registry for a Prometheus scrape.

    @param registry: The registry, e.g. from L{metricsRegistry}.
    @return: The body in the Prometheus text format and its C{Content-Type}.
    """
    return generate_latest(registry), CONTENT_TYPE_LATEST
