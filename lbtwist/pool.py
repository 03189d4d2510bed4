# -*- test-case-name: tests.test_pool -*-
"""
A pool of backends: the only owner of "which backend gets this request".

A backend with C{max_connections} that has that many requests in flight is
full, and not eligible.  When every available backend is full, a request
waits in the pool's L{PoolQueue} (first in, first out); a freed slot goes to
the oldest waiting request that can use it.  The queue holds no timers: the
waiting requests keep their own deadlines (L{lbtwist.attempts.Attempts}).
"""

from __future__ import annotations

from random import Random
from typing import Callable, Collection, Protocol

from lbtwist.backend import Backend, BackendState
from lbtwist.config import PoolConfig
from lbtwist.strategies import STRATEGIES, Choice, IStrategy

__all__ = ["BackendPool", "IWaiting", "PoolQueue"]


class IWaiting(Protocol):
    """
    A request (or TCP connection) waiting in a L{PoolQueue}.
    """

    def wants(self, backend: Backend) -> bool:
        """
        @param backend: A backend of the pool.
        @return: Whether this request could be sent to C{backend} (it was
            not tried on it already).
        """

    @property
    def retrying(self) -> bool:
        """
        Whether this request waits for a further attempt: it cannot go to
        the backends it was tried on.
        """

    def wake(self) -> Backend | None:
        """
        Try to take a slot now.  On success, leave the queue and go on.

        @return: The backend whose slot was taken, or L{None} if none has
            room for this request (it stays in the queue, in its place).
        """


class PoolQueue:
    """
    The requests of one pool that wait for a backend with room, oldest
    first (HAProxy's backend queue).

    @ivar timeouts: How many requests left the queue after C{queue_timeout}
        (counted by the waiting requests).
    @ivar rejected: How many requests found the queue full (counted by the
        requests).
    """

    def __init__(self) -> None:
        self._waiting: dict[IWaiting, None] = {}
        self._waking = 0
        self.timeouts = 0
        self.rejected = 0

    def __len__(self) -> int:
        """
        @return: How many requests are waiting.
        """
        return len(self._waiting)

    def __contains__(self, waiter: object) -> bool:
        """
        @return: Whether C{waiter} is waiting.
        """
        return waiter in self._waiting

    @property
    def waking(self) -> bool:
        """
        Whether a waiting request is being offered a slot right now: only
        then may a choice be made while others wait (see
        L{BackendPool.choose}).
        """
        return self._waking > 0

    def add(self, waiter: IWaiting) -> None:
        """
        Put a request at the end of the queue.

        @param waiter: The request.
        """
        self._waiting[waiter] = None

    def remove(self, waiter: IWaiting) -> None:
        """
        Take a request out of the queue, if it is in it.

        @param waiter: The request.
        """
        self._waiting.pop(waiter, None)

    def slotFreed(self, backend: Backend) -> None:
        """
        A slot of C{backend} was freed: the oldest waiting request that can
        use it takes it (one request, or none if C{backend} is not
        available any more).  If the strategy gives that request another
        backend with room, the next one is offered the slot too.

        @param backend: The backend (of this queue's pool).
        """
        if not self._waiting:
            return
        self._waking += 1
        try:
            for waiter in list(self._waiting):
                if waiter in self._waiting and waiter.wants(backend):
                    taken = waiter.wake()
                    if taken is None or taken is backend:
                        return
        finally:
            self._waking -= 1

    def pump(self) -> None:
        """
        Offer slots to the waiting requests, oldest first, until one that
        could go to any backend finds none: for a slot that opened without
        being freed (a backend came up, a limit was raised by a reload, a
        retry left a backend that only newer requests can use).
        """
        self._waking += 1
        try:
            for waiter in list(self._waiting):
                if (
                    waiter in self._waiting
                    and waiter.wake() is None
                    and not waiter.retrying
                ):
                    return
        finally:
            self._waking -= 1

    def adopt(self, previous: PoolQueue) -> None:
        """
        Take over the waiting requests and the counters of C{previous} (the
        same pool's queue before a reload): they keep their place, ahead of
        the requests that arrive from now on.

        @param previous: The queue this one replaces.
        """
        waiting = dict(previous._waiting)
        waiting.update(self._waiting)
        self._waiting = waiting
        previous._waiting = {}
        self.timeouts += previous.timeouts
        self.rejected += previous.rejected


class BackendPool:
    """
    A named group of backends and the only owner of "which backend now".

    @ivar config: The pool's configuration.
    @ivar name: The pool's name.
    @ivar backends: Its backends, in configuration order.
    @ivar strategy: The strategy that chooses among them.
    @ivar queue: The requests waiting for a backend with room.
    @ivar limited: Whether some backend has C{max_connections}.
    """

    def __init__(
        self,
        config: PoolConfig,
        now: float | None = None,
        random: Random | None = None,
    ) -> None:
        """
        Build the backends and the strategy named by the configuration.

        @param config: The pool's configuration.
        @param now: The current time, when the backends enter their initial
            state (see L{Backend.stateSince}), or L{None} if unknown.
        @param random: The strategy's source of randomness; a new, randomly
            seeded one by default.
        """
        self.config = config
        self.name = config.name
        self.backends = [
            Backend(backend, config.name, config.health, config.passive_cooldown, now)
            for backend in config.backends
        ]
        self.strategy: IStrategy = STRATEGIES[config.strategy](
            config, Random() if random is None else random
        )
        self._byName = {backend.name: backend for backend in self.backends}
        self._firstRoundDone = False
        self.queue = PoolQueue()
        self.limited = False
        self._linkQueue()

    def _linkQueue(self) -> None:
        """
        Tell each backend with C{max_connections} the queue to wake when it
        frees a slot.
        """
        queue = self.queue
        limited = False
        for backend in self.backends:
            if backend.maxConnections is None:
                backend.queue = None
            else:
                backend.queue = queue
                limited = True
        self.limited = limited

    def choose(
        self,
        now: float,
        exclude: Collection[Backend] = (),
        key: bytes | None = None,
        sticky: str | None = None,
        strategy: IStrategy | None = None,
    ) -> Choice | None:
        """
        Choose the backend for the next request.

        @param now: The current time.
        @param exclude: Backends not to choose, e.g. those this request has
            already failed on.
        @param key: The request's key for C{consistent-hash} (see
            L{lbtwist.hashkey}), or L{None}.
        @param sticky: The name of the backend the request's sticky cookie
            names, if any: it is chosen while it is available.
        @param strategy: The strategy to choose with, instead of the pool's
            own (the C{explain} API passes a copy, to leave the pool's
            untouched).
        @return: An available backend with room (below its
            C{max_connections}) not in C{exclude} and why it was chosen, or
            L{None} if there is none, or if requests are waiting in the
            queue and this is not one of them being woken: those go first.
        """
        if self.limited:
            if self.queue and not self.queue.waking:
                return None

            def eligible(backend: Backend) -> bool:
                return (
                    backend not in exclude
                    and backend.available(now)
                    and backend.hasRoom
                )

        else:

            def eligible(backend: Backend) -> bool:
                return backend not in exclude and backend.available(now)

        if sticky is not None:
            preferred = self._byName.get(sticky)
            if preferred is not None and eligible(preferred):
                return Choice(preferred, "sticky cookie: {}", preferred.name)
        slowStart = self.config.slow_start
        if slowStart:
            for backend in self.backends:
                backend.slowStart(now, slowStart)
        choice = (strategy or self.strategy).choose(self.backends, eligible, key)
        if choice is None or (sticky is None and choice.backend.ramp == 1.0):
            return choice
        notes = "{}"
        values: list[object] = [choice.why]
        if sticky is not None:
            notes += "; sticky cookie for {} not usable"
            values.append(sticky)
        if choice.backend.ramp < 1.0:
            notes += "; slow start {:.0%}"
            values.append(choice.backend.ramp)
        return Choice(choice.backend, notes, *values)

    def observe(self, backend: Backend, latency: float, now: float) -> None:
        """
        Tell the strategy how long a backend took to send a response head.

        @param backend: The backend.
        @param latency: Seconds from the start of the attempt to the head.
        @param now: When the head arrived.
        """
        self.strategy.observe(backend, latency, now)

    def available(self, now: float) -> bool:
        """
        Whether some backend may get a request now (without choosing one,
        which would move the strategy on).

        @param now: The current time.
        """
        return any(backend.available(now) for backend in self.backends)

    def canQueue(self, now: float, exclude: Collection[Backend] = ()) -> bool:
        """
        Whether a request that found no backend with room should wait in the
        queue rather than get 503: some available backend not in
        C{exclude} has C{max_connections} (it is full, or requests wait
        for it).

        @param now: The current time.
        @param exclude: The backends the request was tried on.
        """
        return self.limited and any(
            backend.maxConnections is not None
            and backend not in exclude
            and backend.available(now)
            for backend in self.backends
        )

    @property
    def firstRoundPending(self) -> bool:
        """
        Whether the pool's first round of active checks is not complete:
        some backend is down only because no check of it has finished yet
        (see L{Backend.awaitingFirstCheck}).  Never true with
        C{check = "none"} or C{initial_state = "up"}.  Once the round is
        complete it stays so (until L{adopt} changes the backends), and
        this costs nothing per request.
        """
        if self._firstRoundDone:
            return False
        pending = any(backend.awaitingFirstCheck for backend in self.backends)
        self._firstRoundDone = not pending
        return pending

    def whenChecked(self, callback: Callable[[], None]) -> Callable[[], None]:
        """
        Call C{callback} once, after the next first check result of one of
        the backends still awaiting theirs has been recorded.

        @param callback: Called with no arguments.
        @return: A function that cancels the call if it has not happened.
        """
        cancels: list[Callable[[], None]] = []

        def cancel() -> None:
            for each in cancels:
                each()
            del cancels[:]

        def checked() -> None:
            cancel()
            callback()

        for backend in self.backends:
            if backend.awaitingFirstCheck:
                cancels.append(backend.whenChecked(checked))
        return cancel

    def describeUnavailable(self) -> str:
        """
        Say why no backend can be chosen, for the log and the 503 page.

        @return: For example C{'no backend available in pool "app": 2 of 2
            down (one: HTTP 404 on GET /healthz (expected 200-399))'}: how
            many backends are in each state other than up, and the reason of
            the first one that is not up.
        """
        counts: dict[BackendState, int] = {}
        first: Backend | None = None
        for backend in self.backends:
            if backend.state is BackendState.UP:
                continue
            counts[backend.state] = counts.get(backend.state, 0) + 1
            if first is None:
                first = backend
        total = len(self.backends)
        states = ", ".join(
            f"{count} of {total} {state.value}" for state, count in counts.items()
        )
        message = f'no backend available in pool "{self.name}"'
        if first is None:
            return message
        return f"{message}: {states} ({first.name}: {first.reason})"

    def adopt(self, previous: BackendPool) -> None:
        """
        Take over the running backends of C{previous} (the same pool before a
        reload) that are still configured with the same URL, so that their
        state, counters and requests in flight carry on; their settings
        follow this pool's configuration.

        @param previous: The pool this one replaces.
        """
        config = self.config
        for index, backend in enumerate(self.backends):
            try:
                running = previous.backend(backend.name)
            except KeyError:
                continue
            if running.config.url != backend.config.url:
                continue
            running.reconfigure(backend.config, config.health, config.passive_cooldown)
            self.backends[index] = running
        self._byName = {backend.name: backend for backend in self.backends}
        self._firstRoundDone = False
        self._linkQueue()
        self.queue.adopt(previous.queue)
        self.strategy.adopt(previous.strategy, self.backends)
        if self.queue:
            # The limits may have been raised or removed: serve who can be.
            self.queue.pump()

    def backend(self, name: str) -> Backend:
        """
        Find a backend by name.

        @param name: The backend's name.
        @return: The backend.
        @raise KeyError: If the pool has no backend of that name.
        """
        return self._byName[name]
