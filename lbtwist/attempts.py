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
    timeout, 502 otherwise).

Retry rules (proxy-rules.md, "Failure handling"): a failure before the
request was sent may be retried for any method; after it was sent, only if
the caller says the request can be replayed (an idempotent method whose body
is still held) and nothing of the response reached the client.
"""

from __future__ import annotations

from typing import Callable, Collection

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from lbtwist.backend import Backend, logStateChange
from lbtwist.failures import UpstreamFailure

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
    @ivar retryReasons: Why each further attempt was made (or not), for the
        access log: C{"app-1: connection refused"}.
    @ivar lastFailure: The last attempt's failure, if any.
    """

    def __init__(
        self,
        clock: IReactorTime,
        choose: Callable[[float, Collection[Backend]], Backend | None],
        retries: int,
        what: str,
    ) -> None:
        """
        @param clock: The reactor's clock.
        @param choose: Given the time and the backends already tried, the
            backend for the next attempt, or L{None} if none is available.
        @param retries: How many attempts are allowed after the first.
        @param what: What is being forwarded, for logs (C{"GET /p"}).
        """
        self._clock = clock
        self._choose = choose
        self._retries = retries
        self._what = what
        self.tried: list[Backend] = []
        self.retryReasons: list[str] = []
        self.lastFailure: UpstreamFailure | None = None

    def next(self) -> Lease | None:
        """
        Start the next attempt.

        @return: A lease on the backend to try, or L{None} if no backend not
            tried yet is available.
        """
        now = self._clock.seconds()
        backend = self._choose(now, self.tried)
        if backend is None:
            return None
        self.tried.append(backend)
        return Lease(backend, now)

    def succeeded(self, lease: Lease) -> None:
        """
        The backend answered (a response head, or a TCP connection).

        @param lease: The attempt's lease (still held).
        """
        change = lease.backend.requestSucceeded(self._clock.seconds())
        if change is not None:
            logStateChange(change)

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
            "retrying {what} after {backend}: {reason}",
            what=self._what,
            backend=f"{backend.pool}/{backend.name}",
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

    def logGiveUp(self, status: int) -> None:
        """
        Log that no attempt is left.
        """
        last = self.lastFailure
        _log.info(
            "{what}: answering {code} after {attempts} attempt(s): {why}",
            what=self._what,
            code=status,
            attempts=len(self.tried),
            why=last.reason if last is not None else "no backend available",
        )
