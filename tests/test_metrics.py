# -*- test-case-name: tests.test_metrics -*-
"""
Tests for L{lbtwist.metrics}.
"""

from __future__ import annotations

from attrs import define, evolve
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from lbtwist.backend import Backend, BackendState
from lbtwist.config import FrontendConfig, RateLimitConfig, parseConfig
from lbtwist.metrics import BalancerCollector, metricsRegistry, renderMetrics
from lbtwist.pool import BackendPool
from lbtwist.stats import DURATION_BUCKETS, FAILURE_KINDS, FrontendStats

Labels = frozenset[tuple[str, str]]


@define
class FakeBalancer:
    """
    The attributes of a L{lbtwist.balancer.Balancer} the collector reads.
    """

    pools: dict[str, BackendPool]
    frontends: list[tuple[FrontendConfig, FrontendStats]]


def makeBalancer() -> FakeBalancer:
    """
    Make a balancer with pool C{app} (backends C{a} and C{b}, HTTP checks),
    pool C{static} (one backend named by its address, no checks) and the
    frontends C{web} and C{alt}.
    """
    config = parseConfig(
        {
            "frontend": [
                {"name": "web", "listen": "tcp:8080", "pool": "app"},
                {"name": "alt", "listen": "tcp:8090", "pool": "static"},
            ],
            "pool": [
                {
                    "name": "app",
                    "backend": [
                        {"url": "http://127.0.0.1:9001", "name": "a", "weight": 3},
                        {"url": "http://127.0.0.1:9002", "name": "b"},
                    ],
                },
                {
                    "name": "static",
                    "backend": [{"url": "http://127.0.0.1:9101"}],
                    "health": {"check": "none"},
                },
            ],
        }
    )
    pools = [BackendPool(pool) for pool in config.pools]
    return FakeBalancer(
        {pool.name: pool for pool in pools},
        [(frontend, FrontendStats()) for frontend in config.frontends],
    )


def scrape(
    balancer: FakeBalancer, now: float = 0.0
) -> dict[str, dict[tuple[str, Labels], float]]:
    """
    Render the balancer's metrics and parse them back.

    @return: For each metric family's name, its type and, by sample name
        and labels, the sample values.
    """
    clock = Clock()
    clock.advance(now)
    body, _ = renderMetrics(metricsRegistry(balancer, clock))
    return {
        family.name: {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for sample in family.samples
        }
        for family in text_string_to_metric_families(body.decode("utf-8"))
    }


def types(balancer: FakeBalancer) -> dict[str, str]:
    """
    @return: The type of every metric family, by the family's name.
    """
    body, _ = renderMetrics(metricsRegistry(balancer, Clock()))
    return {
        family.name: family.type
        for family in text_string_to_metric_families(body.decode("utf-8"))
    }


def labels(**values: str) -> Labels:
    """
    @return: The labels C{values} as a hashable set.
    """
    return frozenset(values.items())


def backendOf(balancer: FakeBalancer, pool: str, name: str) -> Backend:
    """
    @return: The backend C{name} of pool C{pool}.
    """
    return balancer.pools[pool].backend(name)


A = labels(pool="app", backend="a")
B = labels(pool="app", backend="b")
STATIC = labels(pool="static", backend="127.0.0.1:9101")


class RegistryTests(SynchronousTestCase):
    """
    Tests for L{metricsRegistry} and L{renderMetrics}.
    """

    def test_contentType(self) -> None:
        """
        Metrics are rendered in the Prometheus text format, with the content
        type C{prometheus_client} gives it.
        """
        body, contentType = renderMetrics(metricsRegistry(makeBalancer(), Clock()))
        self.assertEqual(contentType, CONTENT_TYPE_LATEST)
        self.assertTrue(contentType.startswith("text/plain; version="))
        self.assertIn(b"# TYPE lbtwist_backend_up gauge\n", body)

    def test_ownRegistry(self) -> None:
        """
        The registry holds only lbtwist's collector, and nothing is added to
        the process-wide default registry.
        """
        registry = metricsRegistry(makeBalancer(), Clock())
        names = {family.name for family in registry.collect()}
        self.assertEqual({name[:8] for name in names}, {"lbtwist_"})
        defaults = {family.name for family in REGISTRY.collect()}
        self.assertEqual(defaults & names, set())

    def test_types(self) -> None:
        """
        Every documented metric is there with its type.
        """
        self.assertEqual(
            types(makeBalancer()),
            {
                "lbtwist_backend_up": "gauge",
                "lbtwist_backend_state": "gauge",
                "lbtwist_backend_weight": "gauge",
                "lbtwist_backend_active": "gauge",
                "lbtwist_backend_max_connections": "gauge",
                "lbtwist_backend_requests": "counter",
                "lbtwist_backend_responses": "counter",
                "lbtwist_backend_failures": "counter",
                "lbtwist_backend_request_duration_seconds": "histogram",
                "lbtwist_backend_recent_latency_seconds": "gauge",
                "lbtwist_backend_health_check_duration_seconds": "histogram",
                "lbtwist_backend_health_check_ok": "gauge",
                "lbtwist_pool_queue_length": "gauge",
                "lbtwist_pool_queue_timeouts": "counter",
                "lbtwist_pool_queue_full": "counter",
                "lbtwist_frontend_connections": "counter",
                "lbtwist_frontend_connections_open": "gauge",
                "lbtwist_frontend_received_bytes": "counter",
                "lbtwist_frontend_sent_bytes": "counter",
                "lbtwist_frontend_responses": "counter",
                "lbtwist_frontend_rate_limited": "counter",
            },
        )

    def test_liveValues(self) -> None:
        """
        Each scrape reads the current values, not those at registration.
        """
        balancer = makeBalancer()
        registry = metricsRegistry(balancer, Clock())
        backendOf(balancer, "app", "a").requests = 7
        first = renderMetrics(registry)[0]
        backendOf(balancer, "app", "a").requests = 8
        second = renderMetrics(registry)[0]
        line = 'lbtwist_backend_requests_total{backend="a",pool="app"} %s\n'
        self.assertIn((line % "7.0").encode("ascii"), first)
        self.assertIn((line % "8.0").encode("ascii"), second)

    def test_collector(self) -> None:
        """
        L{BalancerCollector.collect} yields the backend families, then the
        pool families, then the frontend families, in the documented order.
        """
        balancer = makeBalancer()
        collector = BalancerCollector(balancer, Clock())
        self.assertEqual(
            [family.name for family in collector.collect()],
            [
                "lbtwist_backend_up",
                "lbtwist_backend_state",
                "lbtwist_backend_weight",
                "lbtwist_backend_active",
                "lbtwist_backend_max_connections",
                "lbtwist_backend_requests",
                "lbtwist_backend_responses",
                "lbtwist_backend_failures",
                "lbtwist_backend_request_duration_seconds",
                "lbtwist_backend_recent_latency_seconds",
                "lbtwist_backend_health_check_duration_seconds",
                "lbtwist_backend_health_check_ok",
                "lbtwist_pool_queue_length",
                "lbtwist_pool_queue_timeouts",
                "lbtwist_pool_queue_full",
                "lbtwist_frontend_connections",
                "lbtwist_frontend_connections_open",
                "lbtwist_frontend_received_bytes",
                "lbtwist_frontend_sent_bytes",
                "lbtwist_frontend_responses",
                "lbtwist_frontend_rate_limited",
            ],
        )


class BackendMetricsTests(SynchronousTestCase):
    """
    Tests for the backend metrics of L{BalancerCollector}.
    """

    def test_up(self) -> None:
        """
        C{lbtwist_backend_up} is 1 for an up backend and 0 otherwise.
        """
        balancer = makeBalancer()
        backendOf(balancer, "app", "a").setState(BackendState.UP, "test", 0.0)
        self.assertEqual(
            scrape(balancer)["lbtwist_backend_up"],
            {
                ("lbtwist_backend_up", A): 1.0,
                ("lbtwist_backend_up", B): 0.0,
                ("lbtwist_backend_up", STATIC): 1.0,
            },
        )

    def test_state(self) -> None:
        """
        C{lbtwist_backend_state} is 1 for the backend's state and 0 for the
        three others.
        """
        balancer = makeBalancer()
        backendOf(balancer, "app", "a").setState(BackendState.DRAINING, "test", 0.0)
        samples = scrape(balancer)["lbtwist_backend_state"]
        self.assertEqual(len(samples), 12)
        self.assertEqual(
            {
                state: samples[("lbtwist_backend_state", A | labels(state=state))]
                for state in ("up", "down", "draining", "disabled")
            },
            {"up": 0.0, "down": 0.0, "draining": 1.0, "disabled": 0.0},
        )
        self.assertEqual(
            samples[("lbtwist_backend_state", B | labels(state="down"))], 1.0
        )
        self.assertEqual(
            samples[("lbtwist_backend_state", STATIC | labels(state="up"))], 1.0
        )

    def test_weightActiveRequests(self) -> None:
        """
        Weight, requests in flight and requests started are the backend's.
        """
        balancer = makeBalancer()
        a = backendOf(balancer, "app", "a")
        a.active, a.requests = 2, 40
        metrics = scrape(balancer)
        self.assertEqual(
            metrics["lbtwist_backend_weight"],
            {
                ("lbtwist_backend_weight", A): 3.0,
                ("lbtwist_backend_weight", B): 1.0,
                ("lbtwist_backend_weight", STATIC): 1.0,
            },
        )
        self.assertEqual(
            metrics["lbtwist_backend_active"][("lbtwist_backend_active", A)], 2.0
        )
        self.assertEqual(
            metrics["lbtwist_backend_requests"],
            {
                ("lbtwist_backend_requests_total", A): 40.0,
                ("lbtwist_backend_requests_total", B): 0.0,
                ("lbtwist_backend_requests_total", STATIC): 0.0,
            },
        )

    def test_weightChange(self) -> None:
        """
        A weight changed at runtime shows at the next scrape.
        """
        balancer = makeBalancer()
        backendOf(balancer, "app", "b").weight = 9
        self.assertEqual(
            scrape(balancer)["lbtwist_backend_weight"][("lbtwist_backend_weight", B)],
            9.0,
        )

    def test_responses(self) -> None:
        """
        C{lbtwist_backend_responses_total} counts responses by C{code}, every
        class present.
        """
        balancer = makeBalancer()
        stats = backendOf(balancer, "app", "a").stats
        for status in (200, 201, 404, 503):
            stats.recordResponse(status, 0.01, 0.0)
        samples = scrape(balancer)["lbtwist_backend_responses"]
        self.assertEqual(
            {
                code: samples[
                    ("lbtwist_backend_responses_total", A | labels(code=code))
                ]
                for code in ("1xx", "2xx", "3xx", "4xx", "5xx")
            },
            {"1xx": 0.0, "2xx": 2.0, "3xx": 0.0, "4xx": 1.0, "5xx": 1.0},
        )
        self.assertEqual(len(samples), 15)

    def test_failures(self) -> None:
        """
        C{lbtwist_backend_failures_total} counts failed attempts by
        C{reason}, every kind present.
        """
        balancer = makeBalancer()
        stats = backendOf(balancer, "static", "127.0.0.1:9101").stats
        stats.recordFailure("connect_refused", 0.001, 0.0)
        stats.recordFailure("connect_refused", 0.001, 0.0)
        stats.recordFailure("truncated", 0.2, 0.0)
        samples = scrape(balancer)["lbtwist_backend_failures"]
        expected = dict.fromkeys(FAILURE_KINDS, 0.0)
        expected.update(connect_refused=2.0, truncated=1.0)
        self.assertEqual(
            {
                reason: samples[
                    ("lbtwist_backend_failures_total", STATIC | labels(reason=reason))
                ]
                for reason in FAILURE_KINDS
            },
            expected,
        )
        self.assertEqual(len(samples), 3 * len(FAILURE_KINDS))

    def test_requestDuration(self) -> None:
        """
        C{lbtwist_backend_request_duration_seconds} has the cumulative
        buckets, the count and the sum of the attempt durations.
        """
        balancer = makeBalancer()
        stats = backendOf(balancer, "app", "b").stats
        stats.recordResponse(200, 0.0625, 0.0)
        stats.recordResponse(200, 0.25, 0.0)
        stats.recordFailure("response_timeout", 31.0, 0.0)
        samples = scrape(balancer)["lbtwist_backend_request_duration_seconds"]
        name = "lbtwist_backend_request_duration_seconds"
        buckets = {
            bound: samples[(f"{name}_bucket", B | labels(le=bound))]
            for bound in ("0.05", "0.1", "0.25", "0.5", "30.0", "+Inf")
        }
        self.assertEqual(
            buckets,
            {
                "0.05": 0.0,
                "0.1": 1.0,
                "0.25": 2.0,
                "0.5": 2.0,
                "30.0": 2.0,
                "+Inf": 3.0,
            },
        )
        self.assertEqual(samples[(f"{name}_count", B)], 3.0)
        self.assertEqual(samples[(f"{name}_sum", B)], 31.3125)
        self.assertEqual(samples[(f"{name}_count", A)], 0.0)
        self.assertEqual(
            len([key for key in samples if key[1] >= B]), len(DURATION_BUCKETS) + 3
        )

    def test_recentLatency(self) -> None:
        """
        C{lbtwist_backend_recent_latency_seconds} gives the 0.5 and 0.99
        quantiles of the recent attempts, read at the clock's time; it is
        absent for backends without recent attempts.
        """
        balancer = makeBalancer()
        stats = backendOf(balancer, "app", "a").stats
        for value in range(1, 101):
            stats.recordResponse(200, value / 1000, 10.0)
        name = "lbtwist_backend_recent_latency_seconds"
        self.assertEqual(
            scrape(balancer, now=20.0)[name],
            {
                (name, A | labels(quantile="0.5")): 0.05,
                (name, A | labels(quantile="0.99")): 0.099,
            },
        )
        self.assertEqual(scrape(balancer, now=311.0)[name], {})

    def test_healthCheckDuration(self) -> None:
        """
        C{lbtwist_backend_health_check_duration_seconds} times the active
        checks.
        """
        balancer = makeBalancer()
        backendOf(balancer, "app", "a").stats.recordCheck(0.0015)
        samples = scrape(balancer)["lbtwist_backend_health_check_duration_seconds"]
        name = "lbtwist_backend_health_check_duration_seconds"
        self.assertEqual(samples[(f"{name}_bucket", A | labels(le="0.001"))], 0.0)
        self.assertEqual(samples[(f"{name}_bucket", A | labels(le="0.0025"))], 1.0)
        self.assertEqual(samples[(f"{name}_count", A)], 1.0)
        self.assertEqual(samples[(f"{name}_sum", A)], 0.0015)
        self.assertEqual(samples[(f"{name}_count", STATIC)], 0.0)

    def test_healthCheckOk(self) -> None:
        """
        C{lbtwist_backend_health_check_ok} is 1 or 0 after a check, and
        absent before the first one.
        """
        balancer = makeBalancer()
        backendOf(balancer, "app", "a").checkResult(True, "HTTP 200", 1.0)
        backendOf(balancer, "app", "b").checkResult(False, "HTTP 500", 1.0)
        self.assertEqual(
            scrape(balancer)["lbtwist_backend_health_check_ok"],
            {
                ("lbtwist_backend_health_check_ok", A): 1.0,
                ("lbtwist_backend_health_check_ok", B): 0.0,
            },
        )

    def test_noPools(self) -> None:
        """
        With no backends the backend families are there, without samples.
        """
        balancer = makeBalancer()
        balancer.pools = {}
        metrics = scrape(balancer)
        self.assertEqual(metrics["lbtwist_backend_up"], {})
        self.assertEqual(metrics["lbtwist_backend_request_duration_seconds"], {})


class FrontendMetricsTests(SynchronousTestCase):
    """
    Tests for the frontend metrics of L{BalancerCollector}.
    """

    def test_frontend(self) -> None:
        """
        Connections, bytes and responses are the frontend's, labelled by the
        frontend's name.
        """
        balancer = makeBalancer()
        web = balancer.frontends[0][1]
        web.connectionOpened()
        web.connectionOpened()
        web.connectionClosed()
        web.received(120)
        web.sent(4096)
        web.recordResponse(200)
        web.recordResponse(502)
        metrics = scrape(balancer)
        WEB, ALT = labels(frontend="web"), labels(frontend="alt")
        self.assertEqual(
            metrics["lbtwist_frontend_connections"],
            {
                ("lbtwist_frontend_connections_total", WEB): 2.0,
                ("lbtwist_frontend_connections_total", ALT): 0.0,
            },
        )
        self.assertEqual(
            metrics["lbtwist_frontend_connections_open"],
            {
                ("lbtwist_frontend_connections_open", WEB): 1.0,
                ("lbtwist_frontend_connections_open", ALT): 0.0,
            },
        )
        self.assertEqual(
            metrics["lbtwist_frontend_received_bytes"][
                ("lbtwist_frontend_received_bytes_total", WEB)
            ],
            120.0,
        )
        self.assertEqual(
            metrics["lbtwist_frontend_sent_bytes"][
                ("lbtwist_frontend_sent_bytes_total", WEB)
            ],
            4096.0,
        )
        responses = metrics["lbtwist_frontend_responses"]
        self.assertEqual(
            {
                code: responses[
                    ("lbtwist_frontend_responses_total", WEB | labels(code=code))
                ]
                for code in ("1xx", "2xx", "3xx", "4xx", "5xx")
            },
            {"1xx": 0.0, "2xx": 1.0, "3xx": 0.0, "4xx": 0.0, "5xx": 1.0},
        )
        self.assertEqual(len(responses), 10)

    def test_rateLimited(self) -> None:
        """
        C{lbtwist_frontend_rate_limited_total} counts the requests a
        frontend refused with 429; only frontends with a rate limit have
        it.
        """
        balancer = makeBalancer()
        config, stats = balancer.frontends[0]
        balancer.frontends[0] = (
            evolve(config, rate_limit=RateLimitConfig(5.0, 2)),
            stats,
        )
        stats.rateLimited = 3
        self.assertEqual(
            scrape(balancer)["lbtwist_frontend_rate_limited"],
            {("lbtwist_frontend_rate_limited_total", labels(frontend="web")): 3.0},
        )
        self.assertEqual(types(balancer)["lbtwist_frontend_rate_limited"], "counter")

    def test_escapedLabels(self) -> None:
        """
        Names with quotes, backslashes and line breaks survive as label
        values.
        """
        balancer = makeBalancer()
        config, stats = balancer.frontends[0]
        odd = 'we"b\\\nx'
        balancer.frontends[0] = (
            FrontendConfig(name=odd, listen=config.listen, pool=config.pool),
            stats,
        )
        self.assertIn(
            ("lbtwist_frontend_connections_open", labels(frontend=odd)),
            scrape(balancer)["lbtwist_frontend_connections_open"],
        )


class PoolMetricsTests(SynchronousTestCase):
    """
    Tests for the pool (queue) metrics of L{BalancerCollector}.
    """

    def test_queue(self) -> None:
        """
        C{lbtwist_pool_queue_length} is each pool's queue length now; the
        two counters count the requests refused after C{queue_timeout} and
        because the queue was full.
        """
        balancer = makeBalancer()
        queue = balancer.pools["app"].queue

        class Waiter:
            retrying = False

            def wants(self, backend: Backend) -> bool:
                return True

            def wake(self) -> Backend | None:
                return None

        queue.add(Waiter())
        queue.add(Waiter())
        queue.timeouts, queue.rejected = 3, 4
        metrics = scrape(balancer)
        app, static = labels(pool="app"), labels(pool="static")
        self.assertEqual(
            metrics["lbtwist_pool_queue_length"],
            {
                ("lbtwist_pool_queue_length", app): 2.0,
                ("lbtwist_pool_queue_length", static): 0.0,
            },
        )
        self.assertEqual(
            metrics["lbtwist_pool_queue_timeouts"][
                ("lbtwist_pool_queue_timeouts_total", app)
            ],
            3.0,
        )
        self.assertEqual(
            metrics["lbtwist_pool_queue_full"][("lbtwist_pool_queue_full_total", app)],
            4.0,
        )

    def test_maxConnections(self) -> None:
        """
        C{lbtwist_backend_max_connections} is given for a backend with a
        limit only.
        """
        balancer = makeBalancer()
        backendOf(balancer, "app", "a").maxConnections = 8
        self.assertEqual(
            scrape(balancer)["lbtwist_backend_max_connections"],
            {
                (
                    "lbtwist_backend_max_connections",
                    labels(pool="app", backend="a"),
                ): 8.0
            },
        )
