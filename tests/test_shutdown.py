"""
Tests for L{lbtwist.shutdown.GracefulShutdown}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from lbtwist.pool import BackendPool
from lbtwist.shutdown import GracefulShutdown

from .doubles import makeConfig


class FakeFrontend:
    """
    A frontend with a number of open connections.
    """

    def __init__(self, connections: int) -> None:
        self.connections = connections
        self.drained = False
        self.aborted = False

    def drain(self) -> None:
        self.drained = True

    def openConnections(self) -> int:
        return self.connections

    def abortConnections(self) -> None:
        self.aborted = True
        self.connections = 0


class GracefulShutdownTests(SynchronousTestCase):
    """
    Draining on stop, then cleaning up.
    """

    def build(self, grace: float = 5.0) -> tuple[Any, ...]:
        clock = Clock()
        pool = BackendPool(makeConfig().pools[0])
        frontend = FakeFrontend(1)
        steps: list[str] = []
        shutdown = GracefulShutdown(
            clock, grace, [frontend], [pool], [lambda: steps.append("clean")]
        )
        shutdown.startService()
        return clock, pool, frontend, steps, shutdown

    def test_waitsForInFlight(self) -> None:
        """
        Stopping drains the frontends and fires only once nothing is in
        flight and no connection is open; clean-up runs after.
        """
        clock, pool, frontend, steps, shutdown = self.build()
        pool.backends[0].active = 1
        d = shutdown.stopService()
        self.assertTrue(frontend.drained)
        clock.advance(1)
        self.assertNoResult(d)
        pool.backends[0].active = 0
        clock.advance(1)
        self.assertNoResult(d)
        frontend.connections = 0
        clock.advance(0.1)
        self.successResultOf(d)
        self.assertEqual(steps, ["clean"])
        self.assertFalse(frontend.aborted)

    def test_gracePeriod(self) -> None:
        """
        After the grace period what is left is aborted.
        """
        clock, pool, frontend, steps, shutdown = self.build(grace=2.0)
        pool.backends[0].active = 1
        d = shutdown.stopService()
        clock.advance(1.9)
        self.assertNoResult(d)
        clock.advance(0.2)
        self.successResultOf(d)
        self.assertTrue(frontend.aborted)
        self.assertEqual(steps, ["clean"])
