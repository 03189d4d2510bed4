# -*- test-case-name: tests.test_backend -*-
"""
The runtime state of one backend server.

A L{Backend} is C{up}, C{down}, C{draining} or C{disabled}.  Active health
check results and passive failures on real traffic move it between C{up} and
C{down} (HAProxy's C{rise} and C{fall} for checks, C{observe} for traffic);
C{draining} and C{disabled} are set by an operator and left alone by checks.
Nothing here touches the reactor: the time is passed in as C{now}, and a
state change is returned as a L{StateChange} for the caller to log with
L{logStateChange}.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import TYPE_CHECKING, Callable

from attrs import frozen
from twisted.logger import Logger

from lbtwist.config import BackendConfig, HealthCheckConfig
from lbtwist.stats import BackendStats

if TYPE_CHECKING:
    from lbtwist.pool import PoolQueue

__all__ = [
    "BackendState",
    "CheckRecord",
    "StateChange",
    "logStateChange",
    "logFailedCheck",
    "backendLabel",
    "Backend",
    "CHECK_HISTORY",
    "FAILED_CHECK_LOG_INTERVAL",
]

CHECK_HISTORY = 10
"""
How many active check results a backend remembers (L{Backend.checkHistory}).
"""

FAILED_CHECK_LOG_INTERVAL = 60.0
"""
Seconds between two log lines about the failed checks of a backend that is
down (the first failed check is logged at once).
"""

_log = Logger()


def backendLabel(pool: str, name: str, address: str) -> str:
    """
    How log lines name a backend.

    @param pool: The name of its pool.
    @param name: Its name.
    @param address: Its C{host:port}.
    @return: C{"app/one (127.0.0.1:9102)"}, or C{"app/127.0.0.1:9102"}
        when its name is its address.
    """
    if name == address:
        return f"{pool}/{address}"
    return f"{pool}/{name} ({address})"


class BackendState(enum.Enum):
    """
    The state of a backend; only an C{UP} backend gets new requests.
    """

    UP = "up"
    DOWN = "down"
    DRAINING = "draining"
    DISABLED = "disabled"


@frozen
class CheckRecord:
    """
    The result of one active health check.

    @ivar at: When the check finished.
    @ivar ok: Whether it passed.
    @ivar detail: What it saw, e.g. C{"HTTP 200"} or C{"connection refused"}.
    """

    at: float
    ok: bool
    detail: str


@frozen
class StateChange:
    """
    A backend moved from one state to another.

    @ivar pool: The name of the backend's pool.
    @ivar backend: The backend's name.
    @ivar address: The backend's C{host:port}.
    @ivar old: The state before the change.
    @ivar new: The state after the change.
    @ivar reason: Why, e.g. C{"3 consecutive failures (HTTP 500)"}.
    """

    pool: str
    backend: str
    address: str
    old: BackendState
    new: BackendState
    reason: str

    @property
    def label(self) -> str:
        """
        How log lines name the backend (see L{backendLabel}).
        """
        return backendLabel(self.pool, self.backend, self.address)


def logStateChange(change: StateChange, log: Logger = _log) -> None:
    """
    Emit a log event for a state change: a warning when the backend went
    down, informational otherwise.

    @param change: The change to log.
    @param log: The logger to emit the event with.
    """
    emit = log.warn if change.new is BackendState.DOWN else log.info
    emit(
        "backend {label} is {new}: {reason}",
        label=change.label,
        pool=change.pool,
        backend=change.backend,
        address=change.address,
        old=change.old.value,
        new=change.new.value,
        reason=change.reason,
    )


class Backend:
    """
    Runtime state of one server (mutable).

    Active and passive evidence are kept apart, as HAProxy keeps C{check}
    and C{observe} apart:

      - I{Active checks} have their own counters.  C{fall} failed checks in
        a row take an up backend down, whatever the traffic does: a
        successful request never counts as a passed check.  A backend that
        has never passed a check comes up with its first passed check;
        afterwards it takes C{rise} passed checks in a row.
      - I{Passive failures} (a connection failure or a timeout on real
        traffic) count on a counter of their own: C{passive_fall} of them in
        a row take an up backend down (0 turns passive detection off).  A
        successful request resets that counter and only that one.  With
        active checks, only checks bring the backend back.  With
        C{check = "none"} it is C{down} for C{cooldown} seconds, then
        half-open: it is offered traffic again, and the next request's
        outcome decides.

    With checks on, a backend starts C{down} (C{initial_state = "down"}) or
    C{up} (C{initial_state = "up"}) until checks say otherwise; with
    C{check = "none"} it starts C{up}.

    @ivar config: The backend's configuration.
    @ivar pool: The name of the pool it belongs to.
    @ivar name: The backend's name.
    @ivar address: The backend's C{host:port}.
    @ivar weight: Its weight for the weighted strategies.
    @ivar state: Its current state.
    @ivar reason: Why it is in its current state.
    @ivar downSince: When it last went down, or L{None} if it has not gone
        down since it was last up (or ever).
    @ivar active: Requests in flight (L{lbtwist.attempts.Lease} increments
        and decrements it).
    @ivar maxConnections: The most requests in flight at once, or L{None}
        for no limit (C{max_connections}).
    @ivar queue: The queue of the pool this backend serves, told when one
        of its slots is freed; L{None} when it has no C{max_connections}
        (nothing ever waits for it).
    @ivar requests: Requests started in total (callers increment).
    @ivar failures: Failed requests in total, whether or not they count
        toward C{passive_fall}.
    @ivar stats: Response, failure and latency statistics.
    @ivar lastCheckOk: Whether the last active check passed, or L{None}
        before the first one.
    @ivar lastCheckDetail: What the last active check saw, e.g.
        C{"HTTP 200"}.
    @ivar lastCheckAt: When the last active check finished, or L{None}.
    @ivar checkHistory: The last L{CHECK_HISTORY} active check results,
        oldest first.
    @ivar stateSince: When the backend entered its current state (its
        creation counts), or L{None} if that time was not given.
    """

    @property
    def logFields(self) -> dict[str, str]:
        """
        The fields a log event about this backend carries: C{label} (see
        L{label}), C{pool}, C{backend} (the name) and C{address}.
        """
        return {
            "label": self.label,
            "pool": self.pool,
            "backend": self.name,
            "address": self.address,
        }

    @property
    def effectiveWeight(self) -> float:
        """
        The weight the strategies use: L{weight}, scaled down by L{ramp}
        while the backend is in slow start.
        """
        return self.weight * self.ramp

    def slowStart(self, now: float, duration: float) -> float:
        """
        Set L{ramp} for slow start: a backend that came up less than
        C{duration} seconds ago (for the first time, after being down, or
        after being enabled) gets from 10% to 100% of its weight, linearly
        (HAProxy's C{slowstart}).

        @param now: The current time.
        @param duration: The pool's C{slow_start}, in seconds; 0 for none.
        @return: The new L{ramp}.
        """
        since = self.stateSince
        if (
            duration <= 0
            or since is None
            or self.state is not BackendState.UP
            or now - since >= duration
        ):
            self.ramp = 1.0
        else:
            self.ramp = 0.1 + 0.9 * max(now - since, 0.0) / duration
        return self.ramp

    def __init__(
        self,
        config: BackendConfig,
        pool: str,
        health: HealthCheckConfig,
        cooldown: float,
        now: float | None = None,
    ) -> None:
        """
        @param config: The backend's configuration.
        @param pool: The name of the pool it belongs to.
        @param health: The pool's health check settings (C{check}, C{rise},
            C{fall}, C{passive_fall}, C{initial_state}).
        @param cooldown: With C{check = "none"}, how many seconds a
            passively failed backend is skipped before it is tried again.
        @param now: The current time, the start of the initial state.
        """
        self.config = config
        self.pool = pool
        self.name = config.name
        self.address = config.address
        self.weight = config.weight
        self.ramp = 1.0
        self.active = 0
        self.maxConnections = config.max_connections
        self.queue: PoolQueue | None = None
        self.requests = 0
        self.failures = 0
        self.lastCheckOk: bool | None = None
        self.lastCheckDetail = ""
        self.lastCheckAt: float | None = None
        self.checkHistory: deque[CheckRecord] = deque(maxlen=CHECK_HISTORY)
        self.stateSince: float | None = now
        self.stats = BackendStats()
        self.downSince: float | None = None
        self._checkWaiters: list[Callable[[], None]] = []
        self._failedCheckLoggedAt: float | None = None
        self._health = health
        self._cooldown = cooldown
        self._passive = health.check == "none"
        self._checkSuccesses = 0
        self._checkFailures = 0
        self._passiveFailures = 0
        self._passedCheck = False
        self.state: BackendState
        self.reason: str
        if self._passive:
            self.state, self.reason = BackendState.UP, "no active health checks"
        elif health.initial_state == "up":
            self.state = BackendState.UP
            self.reason = 'initial_state = "up"; no health check yet'
        else:
            self.state = BackendState.DOWN
            self.reason = "waiting for first health check"

    def __repr__(self) -> str:
        """
        @return: The pool, name, address and state, for debugging.
        """
        return f"<Backend {self.pool}/{self.name} {self.address} {self.state.value}>"

    @property
    def label(self) -> str:
        """
        How log lines name this backend: C{"app/one (127.0.0.1:9102)"}, or
        C{"app/127.0.0.1:9102"} when its name is its address.
        """
        return backendLabel(self.pool, self.name, self.address)

    @property
    def awaitingFirstCheck(self) -> bool:
        """
        Whether this backend is down only because no active check of it has
        finished yet (it started C{down} and checks have not spoken).
        """
        return (
            not self._passive
            and self.lastCheckAt is None
            and self.state is BackendState.DOWN
        )

    def whenChecked(self, callback: Callable[[], None]) -> Callable[[], None]:
        """
        Call C{callback} once, right after the next active check result of
        this backend has been recorded by L{checkResult}.

        @param callback: Called with no arguments; what it raises is not
            caught here.
        @return: A function that cancels the call if it has not happened
            (calling it again does nothing).
        """
        self._checkWaiters.append(callback)

        def cancel() -> None:
            if callback in self._checkWaiters:
                self._checkWaiters.remove(callback)

        return cancel

    def failedCheckLogDue(self, now: float) -> bool:
        """
        Whether a failed check of this backend while it is down should be
        logged now: the first one is, then at most one every
        L{FAILED_CHECK_LOG_INTERVAL} seconds.  Saying yes counts as logging.

        @param now: The current time.
        @return: Whether to log.
        """
        last = self._failedCheckLoggedAt
        if last is not None and now - last < FAILED_CHECK_LOG_INTERVAL:
            return False
        self._failedCheckLoggedAt = now
        return True

    def reconfigure(
        self, config: BackendConfig, health: HealthCheckConfig, cooldown: float
    ) -> None:
        """
        Apply new settings (after a reload) without losing the state,
        counters or requests in flight.

        @param config: The backend's new configuration (same URL).
        @param health: Its pool's health check settings.
        @param cooldown: Its pool's passive cool-down.
        """
        self.config = config
        self.weight = config.weight
        self.maxConnections = config.max_connections
        self._health = health
        self._cooldown = cooldown
        self._passive = health.check == "none"

    @property
    def hasRoom(self) -> bool:
        """
        Whether this backend is below its C{max_connections} (always, with
        no limit).
        """
        limit = self.maxConnections
        return limit is None or self.active < limit

    def available(self, now: float) -> bool:
        """
        May this backend get a new request now?

        @param now: The current time.
        @return: C{True} if it is up, or if it is down without active checks
            and its cooldown is over (half-open).
        """
        if self.state is BackendState.UP:
            return True
        return (
            self._passive
            and self.state is BackendState.DOWN
            and self.downSince is not None
            and now - self.downSince >= self._cooldown
        )

    def checkResult(self, ok: bool, detail: str, now: float) -> StateChange | None:
        """
        Record the result of an active health check, then call the
        callbacks registered with L{whenChecked}.

        A failed check counts toward C{fall}, a passed one toward C{rise};
        neither touches the count of passive failures.  While the backend
        is C{down}, every check that does not bring it up becomes its
        C{reason} (C{"HTTP 404 on GET /healthz (expected 200-399)"}, or
        C{"1 of 2 consecutive successes (HTTP 200)"}); the reasons of the
        operator states are left alone.

        @param ok: Whether the check passed.
        @param detail: What it saw, e.g. C{"HTTP 500"}.
        @param now: When it finished.
        @return: The resulting state change, if any.
        """
        try:
            change = self._checkResult(ok, detail, now)
            if change is not None and change.new is BackendState.DOWN:
                # The state change names this check: the next failed one is
                # logged a full interval later.
                self._failedCheckLoggedAt = now
            if change is None and self.state is BackendState.DOWN:
                if ok:
                    rise = self._health.rise
                    self.reason = (
                        f"{self._checkSuccesses} of {rise} consecutive "
                        f"successes ({detail})"
                    )
                else:
                    self.reason = detail
            return change
        finally:
            waiters, self._checkWaiters = self._checkWaiters, []
            for waiter in waiters:
                waiter()

    @property
    def failedChecks(self) -> int:
        """
        How many active checks in a row have failed (0 after a passed one).
        """
        return self._checkFailures

    def _checkResult(self, ok: bool, detail: str, now: float) -> StateChange | None:
        """
        Apply the C{rise}/C{fall} rules to one check result (see
        L{checkResult}).
        """
        self.lastCheckOk, self.lastCheckDetail, self.lastCheckAt = ok, detail, now
        self.checkHistory.append(CheckRecord(at=now, ok=ok, detail=detail))
        if not ok:
            self._checkSuccesses = 0
            self._checkFailures += 1
            count = self._checkFailures
            if self.state is BackendState.UP and count >= self._health.fall:
                return self.setState(
                    BackendState.DOWN, f"{count} consecutive failures ({detail})", now
                )
            return None
        self._checkFailures = 0
        self._checkSuccesses += 1
        first, self._passedCheck = not self._passedCheck, True
        if self.state is not BackendState.DOWN:
            return None
        if first:
            return self.setState(
                BackendState.UP, f"first health check passed ({detail})", now
            )
        rise = self._health.rise
        if self._checkSuccesses >= rise:
            return self.setState(
                BackendState.UP, f"{rise} consecutive successes ({detail})", now
            )
        return None

    def requestFailed(
        self, reason: str, now: float, countsForHealth: bool = True
    ) -> StateChange | None:
        """
        Record a failed attempt on real traffic.

        @param reason: What went wrong, e.g. C{"connection refused"}.
        @param now: When it happened.
        @param countsForHealth: Whether the failure is evidence that the
            backend is unhealthy (a connection failure or a timeout, see
            L{lbtwist.failures.UpstreamFailure.countsForHealth}); other
            failures are only counted in L{failures}.
        @return: The resulting state change, if any.
        """
        self.failures += 1
        passiveFall = self._health.passive_fall
        if not countsForHealth or passiveFall == 0:
            return None
        if self.state is BackendState.DOWN and self.available(now):
            # The half-open attempt failed: start a new cooldown.
            self.downSince = now
        self._passiveFailures += 1
        count = self._passiveFailures
        if self.state is BackendState.UP and count >= passiveFall:
            return self.setState(
                BackendState.DOWN,
                f"{count} consecutive failed requests ({reason})",
                now,
            )
        return None

    def requestSucceeded(self, now: float) -> StateChange | None:
        """
        Record a request that got a response from this backend.

        It resets the count of passive failures only: a successful request
        is not a passed health check.

        @param now: When the response arrived.
        @return: The resulting state change, if any.
        """
        self._passiveFailures = 0
        if self.state is BackendState.DOWN and self.available(now):
            return self.setState(
                BackendState.UP, "request succeeded after cooldown", now
            )
        return None

    def setState(
        self, new: BackendState, reason: str, now: float
    ) -> StateChange | None:
        """
        Move this backend to a state, for example when an operator drains or
        disables it.

        @param new: The new state.
        @param reason: Why.
        @param now: The current time.
        @return: The change, or L{None} if the backend already was in
            C{new}.
        """
        old = self.state
        if new is old:
            return None
        self.state, self.reason = new, reason
        self.stateSince = now
        self.downSince = now if new is BackendState.DOWN else None
        # A new state: its first failed check is logged at once.
        self._failedCheckLoggedAt = None
        if new is BackendState.DOWN:
            # Coming back takes rise passed checks from now on.
            self._checkSuccesses = 0
        elif new is BackendState.UP:
            self._passiveFailures = 0
        return StateChange(
            pool=self.pool,
            backend=self.name,
            address=self.address,
            old=old,
            new=new,
            reason=reason,
        )


def logFailedCheck(backend: Backend, now: float, log: Logger = _log) -> None:
    """
    Log the last active check of a backend that is C{down} and failed it,
    if L{Backend.failedCheckLogDue}: the first failure at once, then at most
    one line every L{FAILED_CHECK_LOG_INTERVAL} seconds per backend.

    @param backend: The backend, its last check failed.
    @param now: The current time.
    @param log: The logger to emit the event with.
    """
    if backend.state is not BackendState.DOWN or not backend.failedCheckLogDue(now):
        return
    log.warn(
        "backend {label} is down: health check failed: {detail} "
        "({failures} failed in a row)",
        **backend.logFields,
        detail=backend.lastCheckDetail,
        failures=backend.failedChecks,
    )
