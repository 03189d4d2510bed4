# -*- test-case-name: tests.test_shutdown -*-
"""
Graceful shutdown: when twistd stops (SIGTERM), lbtwist stops accepting,
lets what is in flight finish, and only then closes its upstream pools and
access log.

L{GracefulShutdown} is the first child of the service tree, so it is
stopped after the frontends' listeners (a L{MultiService} stops its children
in reverse order): by the time it runs, no new connection is accepted. It
then

  1. closes idle keep-alive client connections at once and marks the
     others to close after their current response (which carries
     C{Connection: close});
  2. waits until no request or tunnel is in flight and no client connection
     is open, checking every L{GracefulShutdown.pollInterval} seconds;
  3. after the grace period, aborts whatever is left;
  4. runs the clean-up steps (closing cached upstream connections, the
     access log).

twistd waits for the L{Deferred} L{GracefulShutdown.stopService} returns
before the process exits.
"""

from __future__ import annotations

from typing import Callable, Iterable, Protocol, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from lbtwist.pool import BackendPool

_log = Logger()


class Drainable(Protocol):
    """
    A frontend's connections, as graceful shutdown sees them.
    """

    def drain(self) -> None:
        """
        Close idle connections; let the others finish what they are doing,
        then close.
        """

    def openConnections(self) -> int:
        """
        @return: How many client connections are still open.
        """

    def abortConnections(self) -> None:
        """
        Abort every client connection still open.
        """


class GracefulShutdown(Service):
    """
    Drains the frontends when the service tree stops, then runs clean-up
    steps.

    @ivar pollInterval: Seconds between two checks for the end of the drain.
    """

    pollInterval = 0.1

    def __init__(
        self,
        clock: IReactorTime,
        gracePeriod: float,
        frontends: Sequence[Drainable],
        pools: Iterable[BackendPool],
        cleanUp: Sequence[Callable[[], object]],
    ) -> None:
        """
        @param clock: The reactor's clock.
        @param gracePeriod: Seconds allowed for the drain.
        @param frontends: The frontends' factories, including those retired
            by a reload while they still have open connections.
        @param pools: The pools, whose backends count requests and tunnels
            in flight: those in force and those retired by a reload with
            work still in flight (a backend in several counts once).
        @param cleanUp: Steps run after the drain, in order; each may
            return a L{Deferred}.
        """
        self._clock = clock
        self._gracePeriod = gracePeriod
        self._frontends = frontends
        self._pools = pools
        self._cleanUp = cleanUp

    def inFlight(self) -> tuple[int, int]:
        """
        @return: The requests and tunnels in flight and the client
            connections open.
        """
        # A backend adopted by a reload is in a retired pool and in the one
        # in force: count it once.
        backends = {b for pool in self._pools for b in pool.backends}
        active = sum(b.active for b in backends)
        connections = sum(f.openConnections() for f in self._frontends)
        return active, connections

    def stopService(self) -> Deferred[object]:
        """
        Drain, then clean up.

        @return: A L{Deferred} firing when everything is closed.
        """
        super().stopService()
        started = self._clock.seconds()
        active, connections = self.inFlight()
        _log.info(
            "stopping: {active} request(s) in flight on {connections} "
            "connection(s); waiting up to {grace}s",
            active=active,
            connections=connections,
            grace=self._gracePeriod,
        )
        for frontend in self._frontends:
            frontend.drain()
        drained: Deferred[None] = Deferred()
        self._poll(drained, started + self._gracePeriod)
        return drained.addCallback(lambda _: self._runCleanUp())

    def _poll(self, drained: Deferred[None], deadline: float) -> None:
        active, connections = self.inFlight()
        if active == 0 and connections == 0:
            drained.callback(None)
            return
        if self._clock.seconds() >= deadline:
            _log.warn(
                "grace period over: aborting {active} request(s) in flight on "
                "{connections} connection(s)",
                active=active,
                connections=connections,
            )
            for frontend in self._frontends:
                frontend.abortConnections()
            drained.callback(None)
            return
        self._clock.callLater(self.pollInterval, self._poll, drained, deadline)

    def _runCleanUp(self) -> Deferred[list[object]]:
        return gatherResults([maybeDeferred(step) for step in self._cleanUp])


__all__ = ["Drainable", "GracefulShutdown"]
