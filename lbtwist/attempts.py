# -*- test-case-name: tests.test_attempts -*-
"""
The one attempt loop: which backend to try next, what a failed attempt
means, and who holds a backend's in-flight count.  HTTP requests, WebSocket
handshakes (L{lbtwist.web}) and TCP connections (L{lbtwist.tcp}) all go
through it.

  - L{Lease}: the only code that changes a backend's C{active} count; it is
    taken when an attempt starts and released exactly once, whatever
    happens (response done, failure, client gone, timeout, tunnel closed,
    shutdown).  Releasing a slot of a backend with C{max_connections}
    hands it to the oldest request waiting in its pool's queue
    (L{lbtwist.pool.PoolQueue.slotFreed}).
  - L{Attempts}: chooses the next backend (never one already tried), counts
    a failed attempt against the backend (statistics and passive health),
    decides whether another attempt is allowed, and says what to answer
    when none is left (503 when no backend was available, 504 after a
    timeout, 502 otherwise).  Before the first attempt it holds a request
    back while its pool has no backend available only because the pool's
    first round of health checks is not complete (L{Attempts.whenReady});
    when every available backend is at its C{max_connections}, it waits in
    the pool's queue, at most C{queue_timeout} (L{Attempts.wait}).  Both
    waits have a deadline that always fires, and L{Attempts.cancel} ends
    either.

Retry rules (proxy-rules.md, "Failure handling"): a failure before the
request was sent may be retried for any method; after it was sent, only if
the caller says the request can be replayed (an idempotent method whose body
is still held) and nothing of the response reached the client.  A retry
finds a backend with room as the first attempt does: it may wait in the
queue too (as HAProxy's C{option redispatch} queues a redispatched
connection), for at most C{queue_timeout} each time.
"""

from __future__ import annotations

from typing import Callable, Collection

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from lbtwist.backend import Backend, logStateChange
from lbtwist.failures import UpstreamFailure
from lbtwist.pool import BackendPool, PoolQueue
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
            backend = self.backend
            backend.active -= 1
            queue = backend.queue
            if queue is not None:
                queue.slotFreed(backend)


class Attempts:
    """
    The attempts made for one request or connection.

    @ivar tried: The backends tried so far, in order.
    @ivar choices: Each of them as chosen, with why (L{Choice.why}), in
        order.
    @ivar retryReasons: Why each further attempt was made (or not), for the
        access log: C{"app-1: connection refused"}.
    @ivar lastFailure: The last attempt's failure, if any.
    @ivar queueProblem: C{"queue timeout"} or C{"queue full"} once the
        request waited too long in its pool's queue, or found it full;
        then no further attempt is made.
    """

    # Set only while waiting in the queue, or after it: class defaults, so
    # that a request that never waits pays nothing for them.
    _queue: PoolQueue | None = None
    _proceed: Callable[[], None] | None = None
    _woken: Lease | None = None
    _queueReason: str | None = None
    queueProblem: str | None = None

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
        Stop waiting, for the first round of checks (L{whenReady}) or in the
        queue (L{wait}), if waiting: the request is over, or goes on.
        """
        stop, self._stopWatching = self._stopWatching, None
        if stop is not None:
            stop()
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        if self._queue is None and self._woken is None:
            # Never waited in the queue (the usual request).
            return
        queue, self._queue = self._queue, None
        if queue is not None:
            queue.remove(self)
        self._proceed = None
        woken, self._woken = self._woken, None
        if woken is not None:
            woken.release()

    def next(self) -> Lease | None:
        """
        Start the next attempt.

        @return: A lease on the backend to try, or L{None} if no backend not
            tried yet is available, or has room (see L{wait}), or if the
            request waited in the queue too long or found it full.
        """
        woken = self._woken
        if woken is not None:
            self._woken = None
            return woken
        if self.queueProblem is not None:
            return None
        now = self._clock.seconds()
        choice = self._choose(now, self.tried)
        if choice is None:
            return None
        return self._take(choice, now)

    def _take(self, choice: Choice, now: float) -> Lease:
        """
        Start an attempt on the backend chosen.
        """
        backend = choice.backend
        self.tried.append(backend)
        self.choices.append(choice)
        return Lease(backend, now)

    def wait(self, proceed: Callable[[], None]) -> bool:
        """
        L{next} found no backend: wait in the pool's queue if that is why
        (every available backend not tried yet is at its
        C{max_connections}, or requests wait before this one).

        C{proceed} is called when a slot is free for this request (then
        L{next} returns a lease on it), or after the pool's
        C{queue_timeout} (then L{next} returns L{None} and
        L{giveUpReason} says why).  A full queue (C{max_queue}) is not
        waited in.  L{cancel} leaves the queue.

        @param proceed: Makes the attempt (calls L{next}).
        @return: Whether the request waits; if not, L{next} has nothing to
            offer and the caller gives up.
        """
        pool = self._pool
        if pool is None or self.queueProblem is not None:
            return False
        clock = self._clock
        if not pool.canQueue(clock.seconds(), self.tried):
            return False
        queue = pool.queue
        config = pool.config
        waiting = len(queue)
        if waiting >= config.max_queue:
            queue.rejected += 1
            self.queueProblem = "queue full"
            self._queueReason = (
                f'queue full ({waiting} waiting) in pool "{pool.name}"'
                if config.max_queue
                else f'every backend is at max_connections and pool "{pool.name}" '
                "has no queue (max_queue = 0)"
            )
            self.retryReasons.append(self._queueReason)
            return False
        self._queue = queue
        self._proceed = proceed
        queue.add(self)
        self._timer = clock.callLater(config.queue_timeout, self._queueTimedOut)
        if waiting:
            # There may be room that those waiting have not taken yet.
            queue.pump()
        return True

    @property
    def waiting(self) -> bool:
        """
        Whether the request waits in its pool's queue (see L{wait}).
        """
        return self._queue is not None

    @property
    def retrying(self) -> bool:
        """
        Whether an attempt was made already.

        @see: L{lbtwist.pool.IWaiting.retrying}
        """
        return bool(self.tried)

    def wants(self, backend: Backend) -> bool:
        """
        Whether a slot of C{backend} could serve this waiting request.

        @see: L{lbtwist.pool.IWaiting.wants}
        """
        return backend not in self.tried

    def wake(self) -> Backend | None:
        """
        Offered a slot while waiting in the queue: take it if the pool has
        one for this request, and go on.

        @see: L{lbtwist.pool.IWaiting.wake}
        """
        now = self._clock.seconds()
        choice = self._choose(now, self.tried)
        if choice is None:
            return None
        proceed = self._proceed
        self.cancel()
        self._woken = self._take(choice, now)
        if proceed is not None:
            proceed()
        # Not taken (the request ended meanwhile): give the slot back.
        woken, self._woken = self._woken, None
        if woken is not None:
            woken.release()
        return choice.backend

    def _queueTimedOut(self) -> None:
        """
        The request waited C{queue_timeout} in the queue: leave it, and let
        the caller give up.
        """
        self._timer = None
        pool = self._pool
        assert pool is not None
        proceed = self._proceed
        self.cancel()
        pool.queue.timeouts += 1
        self.queueProblem = "queue timeout"
        self._queueReason = (
            f'queue timeout after {pool.config.queue_timeout}s in pool "{pool.name}"'
        )
        self.retryReasons.append(self._queueReason)
        if proceed is not None:
            proceed()

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
        if last is None or self.queueProblem is not None:
            return 503
        return 504 if last.timedOut else 502

    def giveUpReason(self) -> str:
        """
        @return: Why no attempt is left: the queue's verdict (C{'queue
            timeout after 5.0s in pool "app"'}, C{'queue full (1000
            waiting) in pool "app"'}), else the last failure's reason, or,
            when no backend was available, what the pool says about its
            backends (L{BackendPool.describeUnavailable}).
        """
        if self._queueReason is not None:
            return self._queueReason
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
