"""
Tests for L{lbtwist.service.LoadBalancer}: building the service tree and
reloading a configuration in place, with a memory reactor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from lbtwist.backend import BackendState
from lbtwist.config import loadConfig
from lbtwist.health import HealthCheck
from lbtwist.service import FrontendListener, LoadBalancer, ReloadError

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


class _RefusingReactor(MemoryReactorClock):
    """
    A memory reactor that cannot listen on the ports in C{taken}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.taken: set[int] = set()

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        if port in self.taken:
            raise CannotListenError(interface, port, OSError("Address already in use"))
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
        self.successResultOf(lb.reload())

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
