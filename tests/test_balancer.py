# -*- test-case-name: tests.test_balancer -*-
"""
Tests for L{lbtwist.balancer}.
"""

from __future__ import annotations

import copy
import json
import os

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from lbtwist.backend import BackendState
from lbtwist.balancer import (
    Ambiguous,
    Balancer,
    NotFound,
    WeightIgnored,
    backendJSON,
    poolsJSON,
)
from lbtwist.config import BackendConfig, FrontendConfig, HealthCheckConfig, PoolConfig
from lbtwist.pool import BackendPool
from lbtwist.statefile import Overrides, StateFile
from lbtwist.stats import FrontendStats


def makePools(check: str = "none") -> list[BackendPool]:
    """
    Make two pools: C{app} (weighted round robin) with backends C{a}
    (weight 1), C{b} (weight 2) and C{c} (weight 1) on 127.0.0.1:9001-9003,
    and C{api} (least connections) with one backend C{x} on
    127.0.0.1:9101.

    @param check: The kind of active health check of C{app}.
    @return: The pools.
    """

    def backend(name: str, port: int, weight: int = 1) -> BackendConfig:
        return BackendConfig(
            url=f"http://127.0.0.1:{port}",
            scheme="http",
            host="127.0.0.1",
            port=port,
            name=name,
            weight=weight,
        )

    app = PoolConfig(
        name="app",
        backends=(backend("a", 9001), backend("b", 9002, 2), backend("c", 9003)),
        strategy="weighted-round-robin",
        health=HealthCheckConfig(check=check, rise=2, fall=3),
    )
    api = PoolConfig(
        name="api",
        backends=(backend("x", 9101),),
        strategy="least-connections",
        health=HealthCheckConfig(check="none"),
    )
    return [BackendPool(app), BackendPool(api)]


def makeBalancer(
    stateFile: StateFile | None = None, check: str = "none", clock: Clock | None = None
) -> Balancer:
    """
    Make a balancer of the pools of L{makePools} and one frontend C{web}
    in front of C{app}.

    @param stateFile: Where overrides persist.
    @param check: The kind of active health check of C{app}.
    @param clock: The clock; a new L{Clock} at 1000 by default.
    @return: The balancer.
    """
    if clock is None:
        clock = Clock()
        clock.advance(1000)
    frontend = FrontendConfig(name="web", listen=("tcp:8080",), pool="app")
    return Balancer(makePools(check), [(frontend, FrontendStats())], clock, stateFile)


class RecordingStateFile(StateFile):
    """
    A state file that keeps what it would save, and loads given overrides.

    @ivar saved: A copy of the overrides of every save.
    """

    def __init__(self, overrides: Overrides | None = None) -> None:
        super().__init__("<memory>")
        self.saved: list[Overrides] = []
        self._initial = overrides or {}

    def load(self) -> Overrides:
        return copy.deepcopy(self._initial)

    def save(self, overrides: Overrides) -> None:
        self.saved.append(copy.deepcopy(overrides))


class BalancerTests(SynchronousTestCase):
    """
    Tests for L{Balancer}.
    """

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.stateFile = RecordingStateFile()
        self.balancer = makeBalancer(self.stateFile)

    def states(self, pool: str = "app") -> list[str]:
        """
        @return: The states of the backends of C{pool}.
        """
        return [b.state.value for b in self.balancer.pools[pool].backends]

    def messages(self) -> list[str]:
        """
        @return: The formatted log messages so far.
        """
        return [event["log_format"].format(**event) for event in self.events]

    def test_poolsAndFrontends(self) -> None:
        """
        Pools are kept by name in configuration order, with the frontends.
        """
        self.assertEqual(list(self.balancer.pools), ["app", "api"])
        [(frontend, stats)] = self.balancer.frontends
        self.assertEqual(frontend.name, "web")
        self.assertIsInstance(stats, FrontendStats)

    def test_backend(self) -> None:
        """
        L{Balancer.backend} finds a backend by pool and name.
        """
        backend = self.balancer.backend("app", "b")
        self.assertEqual((backend.pool, backend.name), ("app", "b"))

    def test_unknownPool(self) -> None:
        """
        An unknown pool raises L{NotFound}, a L{KeyError}, naming the pool.
        """
        e = self.assertRaises(NotFound, self.balancer.backend, "nope", "a")
        self.assertIsInstance(e, KeyError)
        self.assertEqual(str(e), 'unknown pool "nope"')

    def test_unknownBackend(self) -> None:
        """
        An unknown backend raises L{NotFound} naming the pool and backend.
        """
        e = self.assertRaises(NotFound, self.balancer.backend, "app", "x")
        self.assertEqual(e.message, 'pool "app" has no backend "x"')

    def test_drain(self) -> None:
        """
        Draining makes a backend C{draining} (no new requests, in-flight
        ones go on), logs the change and persists it.
        """
        backend = self.balancer.backend("app", "a")
        backend.active = 2
        self.assertIs(self.balancer.drain("app", "a"), backend)
        self.assertEqual(self.states(), ["draining", "up", "up"])
        self.assertEqual(backend.reason, "drained by operator")
        self.assertFalse(backend.available(1000))
        self.assertEqual(backend.active, 2)
        self.assertEqual(self.stateFile.saved, [{"app": {"a": {"state": "draining"}}}])
        self.assertEqual(
            self.messages(),
            ["backend app/a (127.0.0.1:9001) is draining: drained by operator"],
        )

    def test_drainTwice(self) -> None:
        """
        Draining a drained backend changes nothing: no log, no save.
        """
        self.balancer.drain("app", "a")
        self.balancer.drain("app", "a")
        self.assertEqual(len(self.stateFile.saved), 1)
        self.assertEqual(len(self.events), 1)

    def test_disable(self) -> None:
        """
        Disabling makes a backend C{disabled} and persists it.
        """
        self.balancer.disable("api", "x")
        self.assertEqual(self.states("api"), ["disabled"])
        self.assertEqual(self.stateFile.saved, [{"api": {"x": {"state": "disabled"}}}])

    def test_disableDrained(self) -> None:
        """
        Disabling a drained backend replaces its persisted state.
        """
        self.balancer.drain("app", "a")
        self.balancer.disable("app", "a")
        self.assertEqual(self.states(), ["disabled", "up", "up"])
        self.assertEqual(
            self.balancer.overrides(), {"app": {"a": {"state": "disabled"}}}
        )

    def test_enableWithoutChecks(self) -> None:
        """
        Without active checks, enabling a drained backend makes it C{up} and
        removes its persisted state.
        """
        self.balancer.drain("app", "a")
        self.balancer.enable("app", "a")
        self.assertEqual(self.states(), ["up", "up", "up"])
        self.assertEqual(
            self.balancer.backend("app", "a").reason, "enabled by operator"
        )
        self.assertEqual(self.stateFile.saved[-1], {})
        self.assertEqual(
            self.messages()[-1], "backend app/a (127.0.0.1:9001) is up: enabled by operator"
        )

    def test_enableAfterPassingCheck(self) -> None:
        """
        With active checks, a backend whose last check passed is C{up} at
        once when enabled.
        """
        balancer = makeBalancer(check="http")
        backend = balancer.backend("app", "a")
        backend.checkResult(True, "HTTP 200", 1000)
        balancer.disable("app", "a")
        balancer.enable("app", "a")
        self.assertIs(backend.state, BackendState.UP)

    def test_enableWithoutPassingCheck(self) -> None:
        """
        With active checks, a backend never checked, or whose last check
        failed, is C{down} when enabled, until checks bring it up.
        """
        balancer = makeBalancer(check="http")
        never, failed = balancer.backend("app", "a"), balancer.backend("app", "b")
        failed.checkResult(False, "connection refused", 1000)
        for backend in [never, failed]:
            balancer.drain("app", backend.name)
            balancer.enable("app", backend.name)
            self.assertIs(backend.state, BackendState.DOWN)
            self.assertEqual(
                backend.reason,
                "enabled by operator; waiting for a passing health check",
            )
        never.checkResult(True, "HTTP 200", 1001)
        self.assertIs(never.state, BackendState.UP)

    def test_enableLeavesUpAndDown(self) -> None:
        """
        Enabling a backend that is C{up} or C{down} changes nothing and
        saves nothing.
        """
        balancer = makeBalancer(self.stateFile, check="http")
        up = balancer.backend("app", "a")
        up.checkResult(True, "HTTP 200", 1000)
        balancer.enable("app", "a")
        balancer.enable("app", "b")
        self.assertEqual(
            [b.state.value for b in balancer.pools["app"].backends],
            ["up", "down", "down"],
        )
        self.assertEqual(self.stateFile.saved, [])
        self.assertEqual(len(self.events), 0)

    def test_enableKeepsWeight(self) -> None:
        """
        A weight override persists independently of the state: enabling
        keeps it.
        """
        self.balancer.setWeight("app", "a", 5)
        self.balancer.drain("app", "a")
        self.balancer.enable("app", "a")
        self.assertEqual(self.balancer.backend("app", "a").weight, 5)
        self.assertEqual(self.stateFile.saved[-1], {"app": {"a": {"weight": 5}}})

    def test_setWeight(self) -> None:
        """
        Setting a weight changes it, logs the change and persists it.
        """
        backend = self.balancer.setWeight("app", "b", 7)
        self.assertEqual(backend.weight, 7)
        self.assertEqual(self.stateFile.saved, [{"app": {"b": {"weight": 7}}}])
        self.assertEqual(
            self.messages(),
            ["backend app/b (127.0.0.1:9002) weight 2 -> 7 (set at runtime)"],
        )
        self.assertEqual(self.events[0]["log_level"], LogLevel.info)

    def test_setConfiguredWeight(self) -> None:
        """
        Setting the configured weight again removes the weight override.
        """
        self.balancer.drain("app", "b")
        self.balancer.setWeight("app", "b", 7)
        self.balancer.setWeight("app", "b", 2)
        self.assertEqual(self.balancer.backend("app", "b").weight, 2)
        self.assertEqual(
            self.stateFile.saved[-1], {"app": {"b": {"state": "draining"}}}
        )

    def test_badWeight(self) -> None:
        """
        A weight that is not a positive integer raises L{ValueError} and
        changes nothing.
        """
        for weight in [0, -1, True, 2.5, "2", None]:
            e = self.assertRaises(
                ValueError, self.balancer.setWeight, "app", "a", weight
            )
            self.assertEqual(str(e), "weight must be a positive integer")
        self.assertEqual(self.balancer.backend("app", "a").weight, 1)
        self.assertEqual(self.stateFile.saved, [])

    def test_unknownNamesChangeNothing(self) -> None:
        """
        Every operation on an unknown pool or backend raises L{NotFound} and
        saves nothing.
        """
        for operation in [
            self.balancer.drain,
            self.balancer.disable,
            self.balancer.enable,
            lambda pool, backend: self.balancer.setWeight(pool, backend, 3),
        ]:
            self.assertRaises(NotFound, operation, "nope", "a")
            self.assertRaises(NotFound, operation, "app", "nope")
        self.assertEqual(self.stateFile.saved, [])
        self.assertEqual(self.states(), ["up", "up", "up"])

    def test_applyState(self) -> None:
        """
        At startup the persisted states and weights are applied to the
        backends they name, and the state changes are logged.
        """
        stateFile = RecordingStateFile(
            {
                "app": {"a": {"state": "draining"}, "b": {"weight": 5}},
                "api": {"x": {"state": "disabled", "weight": 3}},
            }
        )
        balancer = makeBalancer(stateFile)
        balancer.applyState()
        self.assertEqual(
            [(b.state.value, b.weight) for b in balancer.pools["app"].backends],
            [("draining", 1), ("up", 5), ("up", 1)],
        )
        x = balancer.backend("api", "x")
        self.assertEqual(
            (x.state, x.weight, x.reason),
            (BackendState.DISABLED, 3, "disabled (from the state file)"),
        )
        self.assertIn(
            "backend app/a (127.0.0.1:9001) is draining: draining (from the state file)",
            self.messages(),
        )
        self.assertEqual(stateFile.saved, [])

    def test_applyStateIgnoresUnknown(self) -> None:
        """
        Overrides of unknown pools and backends are logged and ignored, and
        kept in the state file.
        """
        stateFile = RecordingStateFile(
            {"gone": {"a": {"state": "draining"}}, "app": {"z": {"weight": 4}}}
        )
        balancer = makeBalancer(stateFile)
        balancer.applyState()
        self.assertEqual(
            [b.state.value for b in balancer.pools["app"].backends], ["up", "up", "up"]
        )
        self.assertEqual(
            self.messages(),
            [
                'state file <memory>: ignoring override: unknown pool "gone"',
                'state file <memory>: ignoring override: pool "app" has no backend "z"',
            ],
        )
        balancer.drain("app", "a")
        self.assertEqual(
            stateFile.saved,
            [
                {
                    "gone": {"a": {"state": "draining"}},
                    "app": {"z": {"weight": 4}, "a": {"state": "draining"}},
                }
            ],
        )

    def test_enableAfterRestart(self) -> None:
        """
        A backend drained before a restart is enabled like any other, and
        its override is removed.
        """
        stateFile = RecordingStateFile({"app": {"a": {"state": "draining"}}})
        balancer = makeBalancer(stateFile)
        balancer.applyState()
        balancer.enable("app", "a")
        self.assertIs(balancer.backend("app", "a").state, BackendState.UP)
        self.assertEqual(stateFile.saved, [{}])

    def test_withoutStateFile(self) -> None:
        """
        Without a state file, operations apply and the overrides are kept
        in memory; L{Balancer.applyState} does nothing.
        """
        balancer = makeBalancer(None)
        balancer.applyState()
        balancer.drain("app", "c")
        self.assertIs(balancer.backend("app", "c").state, BackendState.DRAINING)
        self.assertEqual(balancer.overrides(), {"app": {"c": {"state": "draining"}}})

    def test_saveFailureLogged(self) -> None:
        """
        If the state file cannot be saved, the change still applies and the
        failure is logged.
        """
        directory = os.path.abspath(self.mktemp())
        balancer = makeBalancer(StateFile(os.path.join(directory, "state.json")))
        balancer.drain("app", "a")
        self.assertIs(balancer.backend("app", "a").state, BackendState.DRAINING)
        [error] = [e for e in self.events if e["log_level"] == LogLevel.critical]
        self.assertIn("cannot save state file", error["log_format"])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_persistsAcrossRestart(self) -> None:
        """
        With a real state file, a new balancer over the same file gets the
        runtime changes back.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "state.json")
        first = makeBalancer(StateFile(path))
        first.drain("app", "a")
        first.setWeight("app", "c", 4)
        with open(path) as f:
            self.assertEqual(
                json.load(f),
                {"pools": {"app": {"a": {"state": "draining"}, "c": {"weight": 4}}}},
            )
        second = makeBalancer(StateFile(path))
        second.applyState()
        self.assertEqual(
            [(b.state.value, b.weight) for b in second.pools["app"].backends],
            [("draining", 1), ("up", 2), ("up", 4)],
        )


class JSONViewTests(SynchronousTestCase):
    """
    Tests for L{backendJSON} and L{poolsJSON}.
    """

    def test_backendBeforeAnything(self) -> None:
        """
        A fresh backend has zero counters, no latency and no health check.
        """
        backend = makeBalancer().backend("app", "b")
        self.assertEqual(
            backendJSON(backend, 1000),
            {
                "name": "b",
                "url": "http://127.0.0.1:9002",
                "address": "127.0.0.1:9002",
                "weight": 2,
                "configured_weight": 2,
                "overrides": {},
                "state": "up",
                "reason": "no active health checks",
                "state_since": None,
                "state_seconds": None,
                "active": 0,
                "max_connections": None,
                "requests": 0,
                "failures": 0,
                "failures_by_reason": {
                    "connect_refused": 0,
                    "connect_timeout": 0,
                    "connect_error": 0,
                    "response_timeout": 0,
                    "invalid_response": 0,
                    "connection_lost": 0,
                    "truncated": 0,
                },
                "responses": {"1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0},
                "server_errors": 0,
                "latency_p50_ms": None,
                "latency_p99_ms": None,
                "health": {"ok": None, "checked_at": None, "detail": None},
                "check_history": [],
            },
        )

    def test_backendWithTraffic(self) -> None:
        """
        Counters, latency percentiles in milliseconds and the last health
        check are shown.
        """
        backend = makeBalancer(check="http").backend("app", "a")
        backend.active, backend.requests = 2, 12
        backend.checkResult(True, "HTTP 200", 990.5)
        for index in range(10):
            backend.stats.recordResponse(200, (index + 1) / 1000, 999)
        backend.stats.recordResponse(503, 0.25, 999)
        backend.stats.recordFailure("connect_refused", 0.002, 999)
        backend.requestFailed("connection refused", 999)
        view = backendJSON(backend, 1000)
        self.assertEqual(
            (view["state"], view["active"], view["requests"], view["failures"]),
            ("up", 2, 12, 1),
        )
        self.assertEqual(view["server_errors"], 1)
        self.assertEqual(view["latency_p50_ms"], 5.0)
        self.assertEqual(view["latency_p99_ms"], 250.0)
        self.assertEqual(
            view["health"], {"ok": True, "checked_at": 990.5, "detail": "HTTP 200"}
        )
        self.assertEqual(json.loads(json.dumps(view)), view)

    def test_pools(self) -> None:
        """
        L{poolsJSON} lists every pool in order with its strategy and
        backends.
        """
        balancer = makeBalancer()
        balancer.drain("app", "c")
        view = poolsJSON(balancer, 1000)
        self.assertEqual(
            [
                (
                    p["name"],
                    p["strategy"],
                    [(b["name"], b["state"]) for b in p["backends"]],
                )
                for p in view["pools"]  # type: ignore[attr-defined]
            ],
            [
                (
                    "app",
                    "weighted-round-robin",
                    [("a", "up"), ("b", "up"), ("c", "draining")],
                ),
                ("api", "least-connections", [("x", "up")]),
            ],
        )


def _ipv6Balancer() -> Balancer:
    """
    @return: A balancer with a pool C{v6} of backends C{one} on
        C{[::1]:9001}, C{two} and C{twin} both on C{127.0.0.1:9002}.
    """

    def backend(name: str, host: str, port: int) -> BackendConfig:
        bracketed = f"[{host}]" if ":" in host else host
        return BackendConfig(
            url=f"http://{bracketed}:{port}",
            scheme="http",
            host=host,
            port=port,
            name=name,
        )

    pool = PoolConfig(
        name="v6",
        backends=(
            backend("one", "::1", 9001),
            backend("two", "127.0.0.1", 9002),
            backend("twin", "127.0.0.1", 9002),
        ),
        strategy="weighted-round-robin",
        health=HealthCheckConfig(check="none"),
    )
    clock = Clock()
    return Balancer([BackendPool(pool)], [], clock, None)


class AddressLookupTests(SynchronousTestCase):
    """
    L{Balancer.backend} finds a backend by name or by C{host:port}.
    """

    def test_byAddress(self) -> None:
        """
        A backend's C{host:port}, as log lines show it, finds it.
        """
        balancer = makeBalancer()
        self.assertIs(
            balancer.backend("app", "127.0.0.1:9002"), balancer.backend("app", "b")
        )

    def test_ipv6(self) -> None:
        """
        An IPv6 address is given in brackets, in any spelling of the
        address; without brackets it is not an address.
        """
        balancer = _ipv6Balancer()
        one = balancer.backend("v6", "one")
        for text in ["[::1]:9001", "[0:0::1]:9001", "[0000::0001]:9001"]:
            self.assertIs(balancer.backend("v6", text), one)
        self.assertRaises(NotFound, balancer.backend, "v6", "::1:9001")
        self.assertRaises(NotFound, balancer.backend, "v6", "[::1]:9009")

    def test_ambiguous(self) -> None:
        """
        An address two backends share is refused with both names.
        """
        balancer = _ipv6Balancer()
        e = self.assertRaises(Ambiguous, balancer.backend, "v6", "127.0.0.1:9002")
        self.assertEqual(
            e.message,
            'pool "v6" has 2 backends at 127.0.0.1:9002 ("two", "twin"); use a name',
        )

    def test_operationsByAddressPersistByName(self) -> None:
        """
        An operation on a backend found by address keeps its override under
        the backend's name.
        """
        stateFile = RecordingStateFile()
        balancer = makeBalancer(stateFile)
        balancer.drain("app", "127.0.0.1:9001")
        balancer.setWeight("app", "127.0.0.1:9003", 4)
        self.assertEqual(
            stateFile.saved[-1],
            {"app": {"a": {"state": "draining"}, "c": {"weight": 4}}},
        )


class OverrideTests(SynchronousTestCase):
    """
    Runtime overrides win over the configuration, say so in the log, and
    can be removed.
    """

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def messages(self) -> list[str]:
        """
        @return: The formatted log messages so far.
        """
        return [event["log_format"].format(**event) for event in self.events]

    def test_appliedOverridesLogged(self) -> None:
        """
        Applying the state file logs one warning per overridden value,
        naming the value, the configured one and the file, and nothing
        else about weights.
        """
        stateFile = RecordingStateFile(
            {"app": {"b": {"weight": 5, "state": "disabled"}, "c": {"weight": 3}}}
        )
        balancer = makeBalancer(stateFile)
        balancer.applyState("lbtwist.toml")
        overrides = [
            (e["log_level"], e["log_format"].format(**e))
            for e in self.events
            if "from the state file overrides" in e["log_format"]
        ]
        self.assertEqual(
            overrides,
            [
                (
                    LogLevel.warn,
                    "app/b (127.0.0.1:9002): weight 5 from the state file "
                    "overrides 2 from lbtwist.toml",
                ),
                (
                    LogLevel.warn,
                    "app/b (127.0.0.1:9002): state disabled from the state file "
                    "overrides enabled from lbtwist.toml",
                ),
                (
                    LogLevel.warn,
                    "app/c (127.0.0.1:9003): weight 3 from the state file "
                    "overrides 1 from lbtwist.toml",
                ),
            ],
        )
        self.assertFalse([m for m in self.messages() if "->" in m])
        self.assertEqual(balancer.backend("app", "b").weight, 5)

    def test_reloadLogsAgain(self) -> None:
        """
        Each application (start, every reload) logs the overrides it keeps
        once.
        """
        stateFile = RecordingStateFile({"app": {"a": {"weight": 4}}})
        balancer = makeBalancer(stateFile)
        balancer.applyState("x.toml")
        balancer.applyState("x.toml")
        self.assertEqual(
            [m for m in self.messages() if "overrides" in m],
            ["app/a (127.0.0.1:9001): weight 4 from the state file overrides 1 "
             "from x.toml"] * 2,
        )

    def test_overrideEqualToConfigurationDropped(self) -> None:
        """
        A weight override equal to the configured weight (the file was
        edited to match) is not logged and is removed from the state file.
        """
        stateFile = RecordingStateFile({"app": {"b": {"weight": 2}}})
        balancer = makeBalancer(stateFile)
        balancer.applyState()
        self.assertEqual([m for m in self.messages() if "overrides" in m], [])
        self.assertEqual(stateFile.saved, [{}])

    def test_clearOverrides(self) -> None:
        """
        L{Balancer.clearOverrides} restores the configured weight, puts a
        drained backend back into rotation and removes the override.
        """
        stateFile = RecordingStateFile()
        balancer = makeBalancer(stateFile)
        balancer.setWeight("app", "b", 9)
        balancer.drain("app", "b")
        backend = balancer.clearOverrides("app", "127.0.0.1:9002")
        self.assertEqual((backend.weight, backend.state), (2, BackendState.UP))
        self.assertEqual(backend.reason, "override removed by operator")
        self.assertEqual(stateFile.saved[-1], {})
        self.assertEqual(balancer.override(backend), {})
        self.assertIn(
            "backend app/b (127.0.0.1:9002) weight 9 -> 2 (override removed)",
            self.messages(),
        )

    def test_clearWithoutOverride(self) -> None:
        """
        Clearing a backend without an override changes and saves nothing.
        """
        stateFile = RecordingStateFile()
        balancer = makeBalancer(stateFile)
        balancer.clearOverrides("app", "a")
        self.assertEqual(stateFile.saved, [])

    def test_weightIgnored(self) -> None:
        """
        Setting a weight on a round-robin pool raises L{WeightIgnored}
        naming the pool and strategy, and changes nothing.
        """
        stateFile = RecordingStateFile()
        pool = PoolConfig(
            name="rr",
            backends=(
                BackendConfig(
                    url="http://127.0.0.1:9001",
                    scheme="http",
                    host="127.0.0.1",
                    port=9001,
                    name="a",
                ),
            ),
            health=HealthCheckConfig(check="none"),
        )
        balancer = Balancer([BackendPool(pool)], [], Clock(), stateFile)
        e = self.assertRaises(WeightIgnored, balancer.setWeight, "rr", "a", 3)
        self.assertEqual(
            e.message,
            'pool "rr" uses the round-robin strategy, which ignores weights; use '
            "weighted-round-robin or least-connections to weight its backends",
        )
        self.assertEqual(balancer.backend("rr", "a").weight, 1)
        self.assertEqual(stateFile.saved, [])

    def test_jsonShowsConfiguredAndOverride(self) -> None:
        """
        The JSON view has the configured weight, the override, the time in
        the current state and the check history.
        """
        balancer = makeBalancer(check="tcp")
        backend = balancer.backend("app", "b")
        backend.checkResult(False, "connection refused", 1001)
        backend.checkResult(True, "connected", 1003)
        balancer.setWeight("app", "b", 6)
        view = poolsJSON(balancer, 1010)["pools"][0]["backends"][1]  # type: ignore[index]
        self.assertEqual(
            (view["weight"], view["configured_weight"], view["overrides"]),
            (6, 2, {"weight": 6}),
        )
        self.assertEqual((view["state_since"], view["state_seconds"]), (1003, 7))
        self.assertEqual(
            view["check_history"],
            [
                {"at": 1001, "ok": False, "detail": "connection refused"},
                {"at": 1003, "ok": True, "detail": "connected"},
            ],
        )
