# -*- test-case-name: tests.test_attempts -*-
"""
The one attempt loop: which backend to try next, what a failed attempt
means, and who holds a backend's in-flight count.  HTTP requests, WebSocket
handshakes (L{lbtwist.web}) and TCP connections (L{lbtwist.tcp}) all go
through it.

  - L{Lease}: the only code that changes a backend's C{active} count; it is
    taken when an attempt starts and released exactly once, whatever
    happens (response done, failure, client gone, timeout, tunnel closed,
    shutdown).
  - L{Attempts}: chooses the next backend (never one already tried), counts
    a failed attempt against the backend (statistics and passive health),
    decides whether another attempt is allowed, and says what to answer
    when none is left (503 when no backend was available, 504 after a
    timeout, 502 otherwise).  Before the first attempt it holds a request
    back while its pool has no backend available only because the pool's
    first round of health checks is not complete (L{Attempts.whenReady}).

Retry rules (proxy-rules.md, "Failure handling"): a failure before the
request was sent may be retried for any method; after it was sent, only if
the caller says the request can be replayed (an idempotent method whose body
is still held) and nothing of the response reached the client.
"""

from __future__ import annotations

from typing import Callable, Collection

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from lbtwist.backend import Backend, logStateChange
from lbtwist.failures import UpstreamFailure
from lbtwist.pool import BackendPool
from lbtwist.strategies import Choice

__all__ = ["Attempts", "Lease"]

_log = Logger()


class Lease:
    """
    One request's (or tunnel's) hold on a backend: while it is held, the
    backend counts one more request in flight.

    @ivar backend: The backend.
    @ivar started: When the attempt started.
    """

    __slots__ = ("backend", "started", "_held")

    def __init__(self, backend: Backend, started: float) -> None:
        """
        Take the lease: C{backend.active} and C{backend.requests} go up by
        one.
        """
        self.backend = backend
        self.started = started
        self._held = True
        backend.active += 1
        backend.requests += 1

    @property
    def held(self) -> bool:
        """
        Whether the lease has not been released yet.
        """
        return self._held

    def release(self) -> None:
        """
        Give the backend's slot back; only the first call counts.
        """
        if self._held:
            self._held = False
            self.backend.active -= 1


class Attempts:
    """
    The attempts made for one request or connection.

    @ivar tried: The backends tried so far, in order.
    @ivar choices: Each of them as chosen, with why (L{Choice.why}), in
        order.
    @ivar retryReasons: Why each further attempt was made (or not), for the
        access log: C{"app-1: connection refused"}.
    @ivar lastFailure: The last attempt's failure, if any.
    """

    def __init__(
        self,
        clock: IReactorTime,
        choose: Callable[[float, Collection[Backend]], Choice | None],
        retries: int,
        what: str,
        pool: BackendPool | None = None,
    ) -> None:
        """
        @param clock: The reactor's clock.
        @param choose: Given the time and the backends already tried, the
            backend for the next attempt and why, or L{None} if none is
            available.
        @param retries: How many attempts are allowed after the first.
        @param what: What is being forwarded, for logs (C{"GET /p"}).
        @param pool: The pool C{choose} chooses from, if it is one: a first
            attempt waits for its first round of checks, and a 503 says why
            its backends are unavailable.
        """
        self._clock = clock
        self._choose = choose
        self._retries = retries
        self._what = what
        self._pool = pool
        self._timer: IDelayedCall | None = None
        self._stopWatching: Callable[[], None] | None = None
        self.tried: list[Backend] = []
        self.choices: list[Choice] = []
        self.retryReasons: list[str] = []
        self.lastFailure: UpstreamFailure | None = None

    def whenReady(self, proceed: Callable[[], None]) -> None:
        """
        Call C{proceed} when the first attempt should be made.

        That is at once, unless the pool has no backend available only
        because its first round of active health checks is not complete
        (lbtwist has just started, e.g. for a socket-activated first
        client).  Then C{proceed} is called as soon as a first check result
        makes a backend available or completes the round, and at the
        latest after the pool's check C{timeout} (the deadline every first
        check has): a wait that always ends.  L{cancel} stops waiting.

        @param proceed: Makes the first attempt (calls L{next}).
        """
        pool = self._pool
        if pool is None or not pool.firstRoundPending:
            proceed()
            return
        deadline = self._clock.seconds() + pool.config.health.timeout
        self._waitUntil(pool, deadline, proceed)

    def _waitUntil(
        self, pool: BackendPool, deadline: float, proceed: Callable[[], None]
    ) -> None:
        """
        Call C{proceed} now if there is nothing (more) to wait for, else
        when the next first check result is recorded or at C{deadline}.
        """
        self._timer = None
        clock = self._clock
        now = clock.seconds()
        if now >= deadline or not pool.firstRoundPending or pool.available(now):
            proceed()
            return

        def checked() -> None:
            # Called while the check result is recorded: look again once
            # that (and its log line) is done.
            self.cancel()
            self._timer = clock.callLater(0, self._waitUntil, pool, deadline, proceed)

        def expired() -> None:
            self._timer = None
            self.cancel()
            proceed()

        self._stopWatching = pool.whenChecked(checked)
        self._timer = clock.callLater(deadline - now, expired)

    def cancel(self) -> None:
        """
        Stop waiting for the first round of checks, if L{whenReady} is
        waiting: the request is over.
        """
        stop, self._stopWatching = self._stopWatching, None
        if stop is not None:
            stop()
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def next(self) -> Lease | None:
        """
        Start the next attempt.

        @return: A lease on the backend to try, or L{None} if no backend not
            tried yet is available.
        """
        now = self._clock.seconds()
        choice = self._choose(now, self.tried)
        if choice is None:
            return None
        backend = choice.backend
        self.tried.append(backend)
        self.choices.append(choice)
        return Lease(backend, now)

    def succeeded(self, lease: Lease) -> None:
        """
        The backend answered (a response head, or a TCP connection).

        @param lease: The attempt's lease (still held).
        """
        now = self._clock.seconds()
        change = lease.backend.requestSucceeded(now)
        if change is not None:
            logStateChange(change)
        pool = self._pool
        if pool is not None and pool.strategy.measuresLatency:
            pool.observe(lease.backend, now - lease.started, now)

    def failed(
        self, lease: Lease, failure: UpstreamFailure, notReplayable: str | None = None
    ) -> bool:
        """
        An attempt failed before anything of the response reached the
        client: release its lease, count the failure against the backend,
        and say whether to try again.

        @param lease: The attempt's lease.
        @param failure: What went wrong.
        @param notReplayable: Why the request cannot be sent again after
            this failure (C{"POST is not idempotent"} once it may have
            reached the backend; a body that outgrew the retry buffer), or
            L{None} if it can.
        @return: Whether another attempt should be made.
        """
        lease.release()
        backend = lease.backend
        self.lastFailure = failure
        now = self._clock.seconds()
        backend.stats.recordFailure(failure.statsKind, now - lease.started, now)
        change = backend.requestFailed(failure.reason, now, failure.countsForHealth)
        if change is not None:
            logStateChange(change)
        if notReplayable is not None:
            self.retryReasons.append(
                f"{backend.name}: {failure.reason}; not retried: {notReplayable}"
            )
            return False
        if len(self.tried) > self._retries:
            self.retryReasons.append(f"{backend.name}: {failure.reason}")
            return False
        self.retryReasons.append(f"{backend.name}: {failure.reason}")
        _log.info(
            "retrying {what} after {label}: {reason}",
            what=self._what,
            **backend.logFields,
            reason=failure.reason,
        )
        return True

    def giveUpStatus(self) -> int:
        """
        @return: The status to answer when no attempt is left: 503 if no
            backend was available at all, 504 after a timeout, else 502.
        """
        last = self.lastFailure
        if last is None:
            return 503
        return 504 if last.timedOut else 502

    def giveUpReason(self) -> str:
        """
        @return: Why no attempt is left: the last failure's reason, or, when
            no backend was available, what the pool says about its backends
            (L{BackendPool.describeUnavailable}).
        """
        last = self.lastFailure
        if last is not None:
            return last.reason
        if self._pool is not None:
            return self._pool.describeUnavailable()
        return "no backend available"

    def logGiveUp(self, status: int) -> None:
        """
        Log that no attempt is left.
        """
        _log.info(
            "{what}: answering {code} after {attempts} attempt(s): {why}",
            what=self._what,
            code=status,
            attempts=len(self.tried),
            why=self.giveUpReason(),
            pool=None if self._pool is None else self._pool.name,
        )
