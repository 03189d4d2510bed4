"""
Tests for L{lbtwist.service.LoadBalancer}: building the service tree and
reloading a configuration in place, with a memory reactor.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from lbtwist import service
from lbtwist.backend import BackendState
from lbtwist.config import loadConfig
from lbtwist.health import HealthCheck, ProbeResult
from lbtwist.service import FrontendListener, LoadBalancer, ReloadError
from lbtwist.shutdown import GracefulShutdown

CONFIG = """
[[frontend]]
name = "web"
listen = "tcp:8080"
pool = "app"
{extra}
[[pool]]
name = "app"
strategy = "{strategy}"
[pool.health]
{health}
{backends}
"""


def text(
    backends: list[tuple[str, int]],
    strategy: str = "round-robin",
    extra: str = "",
    health: str = 'check = "none"',
    listen: str = "tcp:8080",
) -> str:
    lines = "".join(
        f'[[pool.backend]]\nurl = "http://127.0.0.1:{port}"\nname = "{name}"\n'
        for name, port in backends
    )
    return CONFIG.format(
        backends=lines, strategy=strategy, extra=extra, health=health
    ).replace('listen = "tcp:8080"', f'listen = "{listen}"')


class ReloadTests(SynchronousTestCase):
    """
    L{LoadBalancer.reload} applies a new file in place.
    """

    def setUp(self) -> None:
        self.path = self.mktemp() + ".toml"
        Path(self.path).write_text(text([("a", 9001), ("b", 9002)]))
        self.reactor = MemoryReactorClock()
        self.lb = LoadBalancer(loadConfig(self.path), self.reactor)
        self.lb.privilegedStartService()
        self.lb.startService()
        self.addCleanup(self.lb.stopService)

    def reload(self, content: str) -> None:
        Path(self.path).write_text(content)
        self.successResultOf(self.lb.reload())

    def test_backendsAdoptedAndReplaced(self) -> None:
        """
        A backend kept by name and URL is the same object, with its state;
        others are new or gone; the strategy follows the file.
        """
        pool = self.lb.balancer.pools["app"]
        kept = pool.backend("b")
        kept.setState(BackendState.DRAINING, "test", 0)
        self.reload(text([("b", 9002), ("c", 9003)], strategy="least-connections"))
        pool = self.lb.balancer.pools["app"]
        self.assertEqual([b.name for b in pool.backends], ["b", "c"])
        self.assertIs(pool.backend("b"), kept)
        self.assertIs(kept.state, BackendState.DRAINING)
        self.assertEqual(type(pool.strategy).__name__, "LeastConnections")
        self.assertEqual(self.lb.config.pools[0].strategy, "least-connections")

    def test_frontendKeptListening(self) -> None:
        """
        A frontend with the same endpoints keeps its listener; one added
        gets a listener.
        """
        before = [s for s in self.lb if isinstance(s, FrontendListener)]
        extra = '[[frontend]]\nname = "more"\nlisten = "tcp:8081"\npool = "app"\n'
        self.reload(text([("a", 9001)], extra=extra))
        after = [s for s in self.lb if isinstance(s, FrontendListener)]
        self.assertEqual(after[: len(before)], before)
        self.assertEqual([s.frontend for s in after], ["web", "more"])
        self.assertEqual([p[0] for p in self.reactor.tcpServers], [8080, 8081])

    def test_invalidFileChangesNothing(self) -> None:
        """
        An invalid file leaves the running configuration as it was.
        """
        config = self.lb.config
        pool = self.lb.balancer.pools["app"]
        self.reload(text([("a", 9001)]).replace("round-robin", "random"))
        self.assertIs(self.lb.config, config)
        self.assertIs(self.lb.balancer.pools["app"], pool)


class FreezeHeapTests(SynchronousTestCase):
    """
    L{LoadBalancer.freezeHeap}: what start-up made is frozen once started;
    a reload unfreezes, collects and freezes again; without it, the
    garbage collector is left alone.
    """

    def setUp(self) -> None:
        self.calls: list[str] = []
        # The real functions would freeze the test runner's own heap.
        for name in ("freeze", "unfreeze", "collect"):
            self.patch(service.gc, name, lambda name=name: self.calls.append(name))
        self.path = self.mktemp() + ".toml"
        Path(self.path).write_text(text([("a", 9001)]))
        self.lb = LoadBalancer(loadConfig(self.path), MemoryReactorClock())

    def start(self) -> None:
        self.lb.privilegedStartService()
        self.lb.startService()
        self.addCleanup(self.lb.stopService)

    def test_frozenOnceStarted(self) -> None:
        """
        The heap is frozen when the service starts, not before.
        """
        self.lb.freezeHeap()
        self.assertEqual(self.calls, [])
        self.start()
        self.assertEqual(self.calls, ["freeze"])

    def test_reloadCollectsAndFreezes(self) -> None:
        """
        A reload that switched unfreezes, collects what the old
        configuration left, and freezes again; one that failed does not.
        """
        self.lb.freezeHeap()
        self.start()
        Path(self.path).write_text(text([("b", 9002)]))
        self.successResultOf(self.lb.reload())
        self.assertEqual(self.calls, ["freeze", "unfreeze", "collect", "freeze"])
        Path(self.path).write_text("not toml [")
        self.successResultOf(self.lb.reload())
        self.assertEqual(self.calls, ["freeze", "unfreeze", "collect", "freeze"])

    def test_leftAloneByDefault(self) -> None:
        """
        Without L{LoadBalancer.freezeHeap} (an embedding application), the
        garbage collector is not touched, at start or on reload.
        """
        self.start()
        Path(self.path).write_text(text([("b", 9002)]))
        self.successResultOf(self.lb.reload())
        self.assertEqual(self.calls, [])


class _RefusingReactor(MemoryReactorClock):
    """
    A memory reactor that cannot listen on the ports in C{taken}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.taken: set[int] = set()

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        if port in self.taken:
            raise CannotListenError(
                interface, port, OSError(errno.EADDRINUSE, "Address already in use")
            )
        return super().listenTCP(port, factory, backlog, interface)


TCP_CHECK = 'check = "tcp"\ninterval = 1.0'


def checks(lb: LoadBalancer) -> dict[str, HealthCheck]:
    """
    The running health checks of C{lb} by the port they probe.
    """
    return {
        str(getattr(s.probe, "port")): s
        for s in lb
        if isinstance(s, HealthCheck)
    }


class ReloadTransactionTests(SynchronousTestCase):
    """
    L{LoadBalancer.reload} keeps health checks of adopted backends, never
    overlaps, and leaves the running configuration untouched when it fails.
    """

    def setUp(self) -> None:
        self.path = self.mktemp() + ".toml"
        self.reactor = _RefusingReactor()

    def start(self, content: str) -> LoadBalancer:
        Path(self.path).write_text(content)
        lb = LoadBalancer(loadConfig(self.path), self.reactor)
        lb.privilegedStartService()
        lb.startService()
        self.addCleanup(lb.stopService)
        return lb

    def reload(self, lb: LoadBalancer, content: str) -> None:
        Path(self.path).write_text(content)
        reloaded = lb.reload()
        # First checks of new backends never connect on a memory reactor:
        # they time out.
        self.reactor.advance(5.0)
        self.successResultOf(reloaded)

    def test_adoptedBackendsKeepTheirChecks(self) -> None:
        """
        A backend adopted by a reload keeps its running health check; a
        removed one's check stops; a new one gets a check.
        """
        lb = self.start(text([("a", 9001), ("b", 9002)], health=TCP_CHECK))
        before = checks(lb)
        self.reload(lb, text([("a", 9001), ("c", 9003)], health=TCP_CHECK))
        after = checks(lb)
        self.assertEqual(sorted(after), ["9001", "9003"])
        self.assertIs(after["9001"], before["9001"])
        self.assertTrue(after["9001"].running)
        self.assertTrue(after["9001"]._loop is not None and after["9001"]._loop.running)
        self.assertFalse(before["9002"].running)
        self.assertTrue(after["9003"].running)

    def test_changedCheckSettingsRestartTheCheck(self) -> None:
        """
        When a pool's check settings change, its backends get new checks.
        """
        lb = self.start(text([("a", 9001)], health=TCP_CHECK))
        before = checks(lb)["9001"]
        self.reload(lb, text([("a", 9001)], health='check = "tcp"\ninterval = 2.0'))
        after = checks(lb)["9001"]
        self.assertIsNot(after, before)
        self.assertFalse(before.running)
        self.assertEqual(after.interval, 2.0)

    def test_reloadsCollapse(self) -> None:
        """
        Reloads asked for while one waits for a listener to stop run once,
        after it.
        """
        extra = '[[frontend]]\nname = "more"\nlisten = "tcp:8081"\npool = "app"\n'
        lb = self.start(text([("a", 9001)], extra=extra))
        [more] = [s for s in lb if isinstance(s, FrontendListener) and s.frontend == "more"]
        stopping: Deferred[None] = Deferred()
        self.patch(more, "stopService", lambda: stopping)
        runs: list[str] = []
        original = lb._reloadOnce

        def counted() -> Any:
            runs.append(Path(self.path).read_text())
            return original()

        self.patch(lb, "_reloadOnce", counted)
        Path(self.path).write_text(text([("a", 9001)]))
        first = lb.reload()
        self.assertNoResult(first)
        second = lb.reload()
        third = lb.reload()
        self.assertEqual(len(runs), 1)
        Path(self.path).write_text(text([("b", 9002)]))
        stopping.callback(None)
        for d in (first, second, third):
            self.assertIsNone(self.successResultOf(d))
        self.assertEqual(len(runs), 2)
        self.assertEqual([b.name for b in lb.balancer.pools["app"].backends], ["b"])

    def test_unboundPortKeepsConfiguration(self) -> None:
        """
        A reload whose frontend cannot bind its new port changes nothing and
        logs why; the next good reload works.
        """
        lb = self.start(text([("a", 9001)]))
        config = lb.config
        pool = lb.balancer.pools["app"]
        [old] = [s for s in lb if isinstance(s, FrontendListener)]
        self.reactor.taken.add(8081)
        self.reload(lb, text([("b", 9002)], listen="tcp:8081"))
        [error] = self.flushLoggedErrors(ReloadError)
        self.assertIn('frontend "web": cannot listen on tcp:8081', error.getErrorMessage())
        self.assertIs(lb.config, config)
        self.assertIs(lb.balancer.pools["app"], pool)
        self.assertEqual([s for s in lb if isinstance(s, FrontendListener)], [old])
        self.assertTrue(old.running)
        self.reload(lb, text([("b", 9002)], listen="tcp:8082"))
        self.assertEqual([b.name for b in lb.balancer.pools["app"].backends], ["b"])
        [new] = [s for s in lb if isinstance(s, FrontendListener)]
        self.assertEqual(new.description, "tcp:8082")
        self.assertTrue(new.running)
        self.assertFalse(old.running)


class _ScriptedProbe:
    """
    A health probe whose results a test gives.
    """

    timeout = 1.0

    def __init__(self, port: int) -> None:
        self.port = port
        self.pending: list[Deferred[ProbeResult]] = []

    def probe(self) -> Deferred[ProbeResult]:
        d: Deferred[ProbeResult] = Deferred()
        self.pending.append(d)
        return d


class ReloadFirstChecksTests(SynchronousTestCase):
    """
    A reload runs the first health check of new backends before the switch,
    bounded by the pool's C{timeout}; retired work stays visible to graceful
    shutdown; C{[admin]} and C{[settings]} changes are reported, not applied.
    """

    def setUp(self) -> None:
        self.path = self.mktemp() + ".toml"
        self.reactor = MemoryReactorClock()
        self.probes: dict[int, _ScriptedProbe] = {}

        def fakeProbeFor(reactor: Any, agent: Any, pool: Any, backend: Any) -> Any:
            if pool.health.check == "none":
                return None
            return self.probes.setdefault(backend.port, _ScriptedProbe(backend.port))

        self.patch(service, "probeFor", fakeProbeFor)

    def start(self, content: str) -> LoadBalancer:
        Path(self.path).write_text(content)
        lb = LoadBalancer(loadConfig(self.path), self.reactor)
        lb.privilegedStartService()
        lb.startService()
        self.addCleanup(lb.stopService)
        return lb

    def test_firstChecksAwaitedBeforeSwitch(self) -> None:
        """
        The switch waits for the first check of each new backend (not of
        adopted ones); a backend that passed it is up at the switch.
        """
        lb = self.start(text([("a", 9001)], health=TCP_CHECK))
        old = lb.balancer.pools["app"]
        self.probes[9001].pending.clear()
        Path(self.path).write_text(text([("a", 9001), ("c", 9003)], health=TCP_CHECK))
        reloaded = lb.reload()
        self.assertNoResult(reloaded)
        self.assertIs(lb.balancer.pools["app"], old)
        self.assertEqual(self.probes[9001].pending, [])
        [first] = self.probes[9003].pending
        first.callback(ProbeResult(True, "connected", 0.01))
        self.successResultOf(reloaded)
        pool = lb.balancer.pools["app"]
        self.assertIsNot(pool, old)
        self.assertIs(pool.backend("c").state, BackendState.UP)

    def test_firstCheckBoundedByTimeout(self) -> None:
        """
        A first check that does not answer within the pool's C{timeout}
        counts as failed: the switch happens and the backend is down.
        """
        lb = self.start(text([("a", 9001)], health=TCP_CHECK + "\ntimeout = 0.5"))
        Path(self.path).write_text(text([("c", 9003)], health=TCP_CHECK + "\ntimeout = 0.5"))
        reloaded = lb.reload()
        self.reactor.advance(0.4)
        self.assertNoResult(reloaded)
        self.reactor.advance(0.2)
        self.successResultOf(reloaded)
        backend = lb.balancer.pools["app"].backend("c")
        self.assertIs(backend.state, BackendState.DOWN)
        self.assertIn("timed out", backend.lastCheckDetail)

    def test_initialStateUpSkipsFirstChecks(self) -> None:
        """
        With C{initial_state = "up"} the switch does not wait for checks.
        """
        health = TCP_CHECK + '\ninitial_state = "up"'
        lb = self.start(text([("a", 9001)], health=health))
        Path(self.path).write_text(text([("c", 9003)], health=health))
        self.successResultOf(lb.reload())
        self.assertIs(lb.balancer.pools["app"].backend("c").state, BackendState.UP)

    def test_retiredWorkCountedByShutdown(self) -> None:
        """
        Requests in flight on a retired pool and connections open on a
        retired frontend count for graceful shutdown until they are done.
        """
        lb = self.start(text([("a", 9001)]))
        [shutdown] = [s for s in lb if isinstance(s, GracefulShutdown)]
        lb.balancer.pools["app"].backend("a").active = 1
        oldFactory = lb._frontends["web"][1]
        self.patch(oldFactory, "openConnections", lambda: 2)
        Path(self.path).write_text(text([("b", 9002)], listen="tcp:8081"))
        self.successResultOf(lb.reload())
        self.assertEqual(shutdown.inFlight(), (1, 2))
        self.assertIn(oldFactory, lb._drainable)
        self.patch(oldFactory, "openConnections", lambda: 0)
        Path(self.path).write_text(text([("c", 9003)], listen="tcp:8081"))
        self.successResultOf(lb.reload())
        self.assertEqual(shutdown.inFlight(), (1, 0))
        self.assertNotIn(oldFactory, lb._drainable)
        self.assertEqual(len(lb._drainPools), 2)

    def test_restartOnlyChangesWarned(self) -> None:
        """
        A reload that changes C{[settings]} or C{[admin]} logs one warning
        per key and keeps the running values.
        """
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        lb = self.start(text([("a", 9001)]))
        settings = '[settings]\ngrace_period = 5.0\naccess_log_format = "json"\n'
        Path(self.path).write_text(settings + text([("b", 9002)]))
        self.successResultOf(lb.reload())
        messages = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]
        self.assertIn(
            "reload: [settings] grace_period changed from 10.0 to 5.0; "
            "it takes effect after a restart",
            messages,
        )
        self.assertIn(
            "reload: [settings] access_log_format changed from 'combined' to "
            "'json'; it takes effect after a restart",
            messages,
        )
        self.assertEqual(lb.config.settings.grace_period, 10.0)
        self.assertEqual([b.name for b in lb.balancer.pools["app"].backends], ["b"])


class StartupTests(SynchronousTestCase):
    """
    Starting a L{LoadBalancer}: listeners bind first, a failure is one
    L{service.ListenError}, and the access log can be reopened.
    """

    def setUp(self) -> None:
        self.path = self.mktemp() + ".toml"
        self.reactor = _RefusingReactor()

    def balancer(self, content: str) -> LoadBalancer:
        Path(self.path).write_text(content)
        return LoadBalancer(loadConfig(self.path), self.reactor)

    def test_portInUse(self) -> None:
        """
        A frontend port in use raises L{service.ListenError} naming the
        frontend, the endpoint as configured and the cause; the listeners
        already bound are closed again and none is logged as listening.
        """
        content = text([("a", 9001)], listen="tcp:8080").replace(
            'listen = "tcp:8080"', 'listen = ["tcp:8080", "tcp:8081:interface=127.0.0.1"]'
        )
        lb = self.balancer(content)
        self.reactor.taken.add(8081)
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        error = self.assertRaises(service.ListenError, lb.privilegedStartService)
        self.assertEqual(
            str(error),
            'frontend "web": cannot listen on tcp:8081:interface=127.0.0.1: '
            "address already in use",
        )
        listeners = [s for s in lb if isinstance(s, FrontendListener)]
        self.assertEqual([listener.port for listener in listeners], [None, None])
        self.assertFalse(
            [e for e in events if "listening on" in (formatEvent(e) or "")]
        )

    def test_adminPortInUse(self) -> None:
        """
        The admin listener's error names it as C{admin}.
        """
        lb = self.balancer(
            text([("a", 9001)]) + '[admin]\nlisten = "tcp:8090:interface=127.0.0.1"\n'
        )
        self.reactor.taken.add(8090)
        error = self.assertRaises(service.ListenError, lb.privilegedStartService)
        self.assertEqual(
            str(error),
            "admin: cannot listen on tcp:8090:interface=127.0.0.1: "
            "address already in use",
        )

    def test_listeningLoggedOnceAllBound(self) -> None:
        """
        Once every listener is bound, each is logged as listening.
        """
        lb = self.balancer(
            text([("a", 9001)]) + '[admin]\nlisten = "tcp:8090:interface=127.0.0.1"\n'
        )
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        lb.privilegedStartService()
        self.addCleanup(lb.stopService)
        self.assertEqual(
            [formatEvent(e) for e in events if "listening on" in (formatEvent(e) or "")],
            [
                "frontend web listening on 0.0.0.0:8080",
                "frontend admin listening on 0.0.0.0:8090",
            ],
        )

    def test_reopenLogs(self) -> None:
        """
        L{LoadBalancer.reopenLogs} makes the access log's next lines go to a
        new file once the old one was moved away; when the path cannot be
        opened, it logs why and the old file goes on.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        log = directory / "access.log"
        lb = self.balancer(
            text([("a", 9001)]) + f'[settings]\naccess_log = "{log}"\n'
            'access_log_format = "{status}"\n'
        )
        record = lb._accessLog
        assert record is not None
        self.addCleanup(record.close)
        from tests.test_accesslog import RECORD

        record.log(RECORD)
        log.rename(directory / "access.log.1")
        lb.reopenLogs()
        record.log(RECORD)
        self.assertEqual((directory / "access.log.1").read_text(), "200\n")
        self.assertEqual(log.read_text(), "200\n")
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        log.unlink()
        directory.chmod(0o500)
        self.addCleanup(directory.chmod, 0o700)
        lb.reopenLogs()
        record.log(RECORD)
        if (directory / "access.log").exists():  # root ignores permissions
            return
        [error] = [e for e in events if e["log_level"] is LogLevel.error]
        self.assertIn("cannot reopen the access log", formatEvent(error) or "")
