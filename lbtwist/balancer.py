# -*- test-case-name: tests.test_balancer -*-
"""
Everything that is running, in one place: the pools and the frontends, and
the runtime operations of the admin API (drain, disable, enable, weight)
that persist in a L{StateFile}.

Operations act on a backend at once and then save the state file.  An
override is kept until it is undone: C{enable} removes a backend's state
override, and setting the configured weight again removes its weight
override.  Failing to save is logged; the change still applies.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from lbtwist.backend import Backend, BackendState, logStateChange
from lbtwist.config import FrontendConfig
from lbtwist.pool import BackendPool
from lbtwist.statefile import Overrides, StateFile
from lbtwist.stats import FrontendStats

__all__ = ["Balancer", "NotFound", "backendJSON", "poolJSON", "poolsJSON"]

_log = Logger()

_OPERATOR_STATES = {
    "draining": BackendState.DRAINING,
    "disabled": BackendState.DISABLED,
}


class NotFound(KeyError):
    """
    There is no pool, or no backend in a pool, of the name asked for.

    @ivar message: What was not found, e.g. C{pool "app" has no backend "b9"}.
    """

    def __init__(self, message: str) -> None:
        """
        @param message: See L{NotFound.message}.
        """
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        """
        @return: The message (without the quotes L{KeyError} adds).
        """
        return self.message


class Balancer:
    """
    The running pools and frontends, and the runtime operations on backends.

    @ivar pools: The pools by name, in configuration order.
    @ivar frontends: The frontends with their statistics, in configuration
        order.
    @ivar clock: The time source for state changes.
    @ivar stateFile: Where overrides persist, or L{None} to keep them in
        memory only.
    """

    def __init__(
        self,
        pools: Sequence[BackendPool],
        frontends: Sequence[tuple[FrontendConfig, FrontendStats]],
        clock: IReactorTime,
        stateFile: StateFile | None,
    ) -> None:
        """
        @param pools: The pools, in configuration order.
        @param frontends: The frontends and their statistics.
        @param clock: The time source for state changes.
        @param stateFile: Where overrides persist, or L{None}.
        """
        self.pools: dict[str, BackendPool] = {pool.name: pool for pool in pools}
        self.frontends = list(frontends)
        self.clock = clock
        self.stateFile = stateFile
        self._overrides: Overrides = {}

    def overrides(self) -> Overrides:
        """
        @return: A copy of the current overrides by pool and backend, as
            saved in the state file.
        """
        return {
            pool: {name: dict(override) for name, override in backends.items()}
            for pool, backends in self._overrides.items()
        }

    def backend(self, pool: str, backend: str) -> Backend:
        """
        Find a backend.

        @param pool: The pool's name.
        @param backend: The backend's name in that pool.
        @return: The backend.
        @raise NotFound: If there is no such pool or backend; the message
            names it.
        """
        found = self.pools.get(pool)
        if found is None:
            raise NotFound(f'unknown pool "{pool}"')
        try:
            return found.backend(backend)
        except KeyError:
            raise NotFound(f'pool "{pool}" has no backend "{backend}"') from None

    def drain(self, pool: str, backend: str) -> Backend:
        """
        Stop sending new requests to a backend; those in flight finish.

        @param pool: The pool's name.
        @param backend: The backend's name.
        @return: The backend, now C{draining}.
        @raise NotFound: If there is no such pool or backend.
        """
        return self._hold(pool, backend, "draining", "drained by operator")

    def disable(self, pool: str, backend: str) -> Backend:
        """
        Take a backend out of rotation and pause its health checks.

        @param pool: The pool's name.
        @param backend: The backend's name.
        @return: The backend, now C{disabled}.
        @raise NotFound: If there is no such pool or backend.
        """
        return self._hold(pool, backend, "disabled", "disabled by operator")

    def enable(self, pool: str, backend: str) -> Backend:
        """
        Put a drained or disabled backend back into rotation, and forget its
        persisted state.

        It is C{up} at once if its pool has no active health checks or its
        last check passed; otherwise it is C{down} until checks bring it up.
        A backend that is C{up} or C{down} already is left as it is.

        @param pool: The pool's name.
        @param backend: The backend's name.
        @return: The backend.
        @raise NotFound: If there is no such pool or backend.
        """
        found = self.backend(pool, backend)
        if found.state in (BackendState.DRAINING, BackendState.DISABLED):
            passive = self.pools[pool].config.health.check == "none"
            if passive or found.lastCheckOk is True:
                new, reason = BackendState.UP, "enabled by operator"
            else:
                new = BackendState.DOWN
                reason = "enabled by operator; waiting for a passing health check"
            self._changeState(found, new, reason)
        self._update(pool, backend, state=None)
        return found

    def setWeight(self, pool: str, backend: str, weight: int) -> Backend:
        """
        Change a backend's weight.

        @param pool: The pool's name.
        @param backend: The backend's name.
        @param weight: The new weight, a positive integer.
        @return: The backend.
        @raise NotFound: If there is no such pool or backend.
        @raise ValueError: If C{weight} is not a positive integer (C{True}
            is not an integer here); nothing changes.
        """
        if type(weight) is not int or weight < 1:
            raise ValueError("weight must be a positive integer")
        found = self.backend(pool, backend)
        self._changeWeight(found, weight)
        configured = found.config.weight
        self._update(pool, backend, weight=None if weight == configured else weight)
        return found

    def applyState(self) -> None:
        """
        Read the state file and apply its overrides to the backends they
        name; overrides of unknown pools or backends are logged, ignored and
        kept in the file.
        """
        if self.stateFile is None:
            return
        self._overrides = self.stateFile.load()
        for pool, backends in self._overrides.items():
            for name, override in backends.items():
                try:
                    found = self.backend(pool, name)
                except NotFound as e:
                    _log.info(
                        "state file {path}: ignoring override: {error}",
                        path=self.stateFile.path,
                        error=e.message,
                    )
                    continue
                weight = override.get("weight")
                if isinstance(weight, int):
                    self._changeWeight(found, weight)
                state = override.get("state")
                if isinstance(state, str) and state in _OPERATOR_STATES:
                    self._changeState(
                        found, _OPERATOR_STATES[state], f"{state} (from the state file)"
                    )

    def _hold(self, pool: str, backend: str, state: str, reason: str) -> Backend:
        """
        Put a backend in an operator state and persist it.

        @param pool: The pool's name.
        @param backend: The backend's name.
        @param state: C{"draining"} or C{"disabled"}.
        @param reason: Why, for the log.
        @return: The backend.
        @raise NotFound: If there is no such pool or backend.
        """
        found = self.backend(pool, backend)
        self._changeState(found, _OPERATOR_STATES[state], reason)
        self._update(pool, backend, state=state)
        return found

    def _changeState(self, backend: Backend, new: BackendState, reason: str) -> None:
        """
        Move a backend to a state and log the change, if it is one.

        @param backend: The backend.
        @param new: Its new state.
        @param reason: Why.
        """
        change = backend.setState(new, reason, self.clock.seconds())
        if change is not None:
            logStateChange(change, _log)

    def _changeWeight(self, backend: Backend, weight: int) -> None:
        """
        Set a backend's weight and log the change, if it is one.

        @param backend: The backend.
        @param weight: Its new weight.
        """
        old, backend.weight = backend.weight, weight
        if old != weight:
            _log.info(
                "backend {label} weight {old} -> {new}",
                label=backend.label,
                pool=backend.pool,
                backend=backend.name,
                address=backend.address,
                old=old,
                new=weight,
            )

    def _update(self, pool: str, backend: str, **changes: object) -> None:
        """
        Change one backend's override and save the state file if it
        changed.

        @param pool: The pool's name.
        @param backend: The backend's name.
        @param changes: C{state} and/or C{weight}: the new value, or L{None}
            to remove it from the override.
        """
        old = self._overrides.get(pool, {}).get(backend, {})
        override = dict(old)
        for key, value in changes.items():
            if value is None:
                override.pop(key, None)
            else:
                override[key] = value
        if override == old:
            return
        backends = self._overrides.setdefault(pool, {})
        if override:
            backends[backend] = override
        else:
            del backends[backend]
            if not backends:
                del self._overrides[pool]
        self._save()

    def _save(self) -> None:
        """
        Write the overrides to the state file, if there is one; a failure is
        logged.
        """
        if self.stateFile is None:
            return
        try:
            self.stateFile.save(self._overrides)
        except OSError:
            _log.failure(
                "cannot save state file {path}; runtime changes will not "
                "survive a restart",
                path=self.stateFile.path,
            )


def backendJSON(backend: Backend, now: float) -> dict[str, object]:
    """
    A backend as the JSON API shows it.

    @param backend: The backend.
    @param now: The current time, for the recent latency window.
    @return: An object with C{name}, C{url}, C{address}, C{weight},
        C{state}, C{reason}, C{active}, C{requests}, C{failures} (failed
        requests), C{failures_by_reason}, C{responses} (by status class),
        C{server_errors} (5xx), C{latency_p50_ms} and C{latency_p99_ms}
        (L{None} with no recent requests) and C{health} (C{ok}, C{checked_at}
        as a Unix time and C{detail}; L{None} before the first check).
    """
    stats = backend.stats

    def milliseconds(q: float) -> float | None:
        value = stats.latency.quantile(q, now)
        return None if value is None else round(value * 1000, 3)

    return {
        "name": backend.name,
        "url": backend.config.url,
        "address": backend.address,
        "weight": backend.weight,
        "state": backend.state.value,
        "reason": backend.reason,
        "active": backend.active,
        "requests": backend.requests,
        "failures": backend.failures,
        "failures_by_reason": dict(stats.failures),
        "responses": dict(stats.responses),
        "server_errors": stats.serverErrors(),
        "latency_p50_ms": milliseconds(0.5),
        "latency_p99_ms": milliseconds(0.99),
        "health": {
            "ok": backend.lastCheckOk,
            "checked_at": backend.lastCheckAt,
            "detail": (
                backend.lastCheckDetail if backend.lastCheckAt is not None else None
            ),
        },
    }


def poolJSON(pool: BackendPool, now: float) -> dict[str, object]:
    """
    A pool as the JSON API shows it.

    @param pool: The pool.
    @param now: The current time.
    @return: C{{"name", "strategy", "backends": [...]}}, each backend as
        L{backendJSON} shows it.
    """
    return {
        "name": pool.name,
        "strategy": pool.config.strategy,
        "backends": [backendJSON(backend, now) for backend in pool.backends],
    }


def poolsJSON(balancer: Balancer, now: float) -> dict[str, object]:
    """
    Every pool and backend, as C{GET /api/pools} shows them.

    @param balancer: The balancer.
    @param now: The current time.
    @return: C{{"pools": [...]}}, every pool in configuration order as
        L{poolJSON} shows it.
    """
    return {"pools": [poolJSON(pool, now) for pool in balancer.pools.values()]}
