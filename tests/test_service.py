"""
Tests for L{lbtwist.service.LoadBalancer}: building the service tree and
reloading a configuration in place, with a memory reactor.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from lbtwist.backend import BackendState
from lbtwist.config import loadConfig
from lbtwist.service import FrontendListener, LoadBalancer

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
check = "none"
{backends}
"""


def text(backends: list[tuple[str, int]], strategy: str = "round-robin", extra: str = "") -> str:
    lines = "".join(
        f'[[pool.backend]]\nurl = "http://127.0.0.1:{port}"\nname = "{name}"\n'
        for name, port in backends
    )
    return CONFIG.format(backends=lines, strategy=strategy, extra=extra)


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
