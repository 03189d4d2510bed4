# -*- test-case-name: tests.test_balancer -*-
"""
Everything that is running, in one place: the pools and the frontends, and
the runtime operations of the admin API (drain, disable, enable, weight)
that persist in a L{StateFile}.

Operations act on a backend at once and then save the state file.  An
override is kept until it is undone, and it wins over the configuration
file at every start and reload, which logs one line per overridden value
(C{app/one (127.0.0.1:9102): weight 3 from the state file overrides 5 from
lbtwist.toml}).  C{enable} removes a backend's state override, setting the
configured weight again removes its weight override, and
L{Balancer.clearOverrides} removes both.  Failing to save is logged; the
change still applies.

Operations find a backend by its name or by its C{host:port} (see
L{Balancer.backend}).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from lbtwist.backend import Backend, BackendState, logStateChange
from lbtwist.config import FrontendConfig
from lbtwist.pool import BackendPool
from lbtwist.statefile import Overrides, StateFile
from lbtwist.stats import FrontendStats

__all__ = [
    "Ambiguous",
    "Balancer",
    "NotFound",
    "WeightIgnored",
    "backendJSON",
    "poolJSON",
    "poolsJSON",
]

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


class Ambiguous(NotFound):
    """
    A C{host:port} names several backends of a pool; their names tell them
    apart.
    """


class WeightIgnored(Exception):
    """
    A weight was set on a backend whose pool's strategy ignores weights.

    @ivar message: What is wrong and what to do, naming the pool and its
        strategy.
    """

    def __init__(self, message: str) -> None:
        """
        @param message: See L{WeightIgnored.message}.
        """
        super().__init__(message)
        self.message = message


def _addressKey(text: str) -> tuple[str, int] | None:
    """
    Normalize a C{host:port} for comparison: IPv6 in brackets
    (C{[::1]:9001}), IP addresses in their canonical form, host names in
    lower case.

    @param text: What an operator typed, e.g. C{"127.0.0.1:9102"}.
    @return: C{(host, port)}, or L{None} if C{text} is not a C{host:port}.
    """
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or not host:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        return None  # an IPv6 address needs its brackets before the port
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        host = host.lower()
    return host, int(port)


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

    def override(self, backend: Backend) -> dict[str, object]:
        """
        @param backend: A backend.
        @return: A copy of its override (C{state} and/or C{weight}); empty
            if it has none.
        """
        return dict(self._overrides.get(backend.pool, {}).get(backend.name, {}))

    def backend(self, pool: str, backend: str) -> Backend:
        """
        Find a backend by its name or, failing that, by its C{host:port}
        (as log lines show it: C{127.0.0.1:9102}, C{[::1]:9001}).

        @param pool: The pool's name.
        @param backend: The backend's name or address in that pool.
        @return: The backend.
        @raise NotFound: If there is no such pool or backend; the message
            names it.
        @raise Ambiguous: If C{backend} is the address of several backends
            of the pool.
        """
        found = self.pools.get(pool)
        if found is None:
            raise NotFound(f'unknown pool "{pool}"')
        try:
            return found.backend(backend)
        except KeyError:
            pass
        key = _addressKey(backend)
        matches = [
            each
            for each in found.backends
            if key is not None and _addressKey(each.address) == key
        ]
        if len(matches) == 1:
            return matches[0]
        if matches:
            names = ", ".join(f'"{each.name}"' for each in matches)
            raise Ambiguous(
                f'pool "{pool}" has {len(matches)} backends at {backend} '
                f"({names}); use a name"
            )
        raise NotFound(f'pool "{pool}" has no backend "{backend}"')

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
        self._release(found, "enabled by operator")
        self._update(found, state=None)
        return found

    def clearOverrides(self, pool: str, backend: str) -> Backend:
        """
        Return a backend to its configured values: its configured weight,
        and back into rotation (as L{enable} does) if it was drained or
        disabled; its override is removed from the state file.

        @param pool: The pool's name.
        @param backend: The backend's name or address.
        @return: The backend.
        @raise NotFound: If there is no such pool or backend.
        """
        found = self.backend(pool, backend)
        self._changeWeight(found, found.config.weight, "override removed")
        self._release(found, "override removed by operator")
        self._update(found, state=None, weight=None)
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
        @raise WeightIgnored: If the pool's strategy ignores weights
            (C{round-robin}); nothing changes.
        """
        if type(weight) is not int or weight < 1:
            raise ValueError("weight must be a positive integer")
        found = self.backend(pool, backend)
        strategy = self.pools[pool].config.strategy
        if not self.pools[pool].strategy.usesWeights:
            raise WeightIgnored(
                f'pool "{pool}" uses the {strategy} strategy, which ignores '
                "weights; use weighted-round-robin or least-connections to "
                "weight its backends"
            )
        self._changeWeight(found, weight, "set at runtime")
        configured = found.config.weight
        self._update(found, weight=None if weight == configured else weight)
        return found

    def applyState(self, source: str = "the configuration") -> None:
        """
        Read the state file and apply its overrides to the backends they
        name, at start and after every reload: each overridden value is
        logged (C{app/one (127.0.0.1:9102): weight 3 from the state file
        overrides 5 from lbtwist.toml}).  Overrides of unknown pools or
        backends are logged, ignored and kept in the file; a weight
        override equal to the configured weight is no longer one and is
        removed from the file.

        @param source: The configuration file's name, for the log.
        """
        if self.stateFile is None:
            return
        self._overrides = self.stateFile.load()
        moot = []
        for pool, backends in self._overrides.items():
            for name, override in backends.items():
                try:
                    found = self.pools[pool].backend(name)
                except KeyError:
                    error = (
                        f'unknown pool "{pool}"'
                        if pool not in self.pools
                        else f'pool "{pool}" has no backend "{name}"'
                    )
                    _log.info(
                        "state file {path}: ignoring override: {error}",
                        path=self.stateFile.path,
                        error=error,
                    )
                    continue
                weight = override.get("weight")
                if isinstance(weight, int) and weight == found.config.weight:
                    moot.append(found)
                elif isinstance(weight, int):
                    found.weight = weight
                    self._logOverride(
                        found, "weight", str(weight), str(found.config.weight), source
                    )
                state = override.get("state")
                if isinstance(state, str) and state in _OPERATOR_STATES:
                    self._changeState(
                        found, _OPERATOR_STATES[state], f"{state} (from the state file)"
                    )
                    self._logOverride(found, "state", state, "enabled", source)
        for found in moot:
            self._update(found, weight=None)

    def _logOverride(
        self, backend: Backend, key: str, value: str, configured: str, source: str
    ) -> None:
        """
        Log that a value from the state file wins over the configuration.

        @param backend: The backend.
        @param key: C{"weight"} or C{"state"}.
        @param value: The value from the state file.
        @param configured: The configured value.
        @param source: The configuration file's name.
        """
        _log.warn(
            "{label}: {key} {value} from the state file overrides {configured} "
            "from {source}",
            **backend.logFields,
            key=key,
            value=value,
            configured=configured,
            source=source,
            path=self.stateFile.path if self.stateFile is not None else None,
        )

    def _release(self, backend: Backend, reason: str) -> None:
        """
        Put a drained or disabled backend back into rotation: C{up} at once
        if its pool has no active health checks or its last check passed,
        otherwise C{down} until checks bring it up.  A backend that is
        C{up} or C{down} already is left as it is.

        @param backend: The backend.
        @param reason: Why, for its reason and the log.
        """
        if backend.state in (BackendState.DRAINING, BackendState.DISABLED):
            passive = self.pools[backend.pool].config.health.check == "none"
            if passive or backend.lastCheckOk is True:
                new = BackendState.UP
            else:
                new = BackendState.DOWN
                reason += "; waiting for a passing health check"
            self._changeState(backend, new, reason)

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
        self._update(found, state=state)
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

    def _changeWeight(self, backend: Backend, weight: int, why: str) -> None:
        """
        Set a backend's weight and log the change, if it is one.

        @param backend: The backend.
        @param weight: Its new weight.
        @param why: Why, for the log, e.g. C{"set at runtime"}.
        """
        old, backend.weight = backend.weight, weight
        if old != weight:
            _log.info(
                "backend {label} weight {old} -> {new} ({why})",
                **backend.logFields,
                old=old,
                new=weight,
                why=why,
            )

    def _update(self, found: Backend, **changes: object) -> None:
        """
        Change one backend's override and save the state file if it
        changed.

        @param found: The backend.
        @param changes: C{state} and/or C{weight}: the new value, or L{None}
            to remove it from the override.
        """
        pool, backend = found.pool, found.name
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


def backendJSON(
    backend: Backend, now: float, override: Mapping[str, object] | None = None
) -> dict[str, object]:
    """
    A backend as the JSON API shows it.

    @param backend: The backend.
    @param now: The current time, for the recent latency window and the
        time in the current state.
    @param override: Its runtime override (see L{Balancer.override}), or
        L{None} for none.
    @return: An object with C{name}, C{url}, C{address}, C{weight} (the
        weight in force), C{configured_weight} (the configuration file's),
        C{overrides} (the runtime values kept in the state file that win
        over the configuration: C{weight} and/or C{state}; empty if none),
        C{state}, C{reason}, C{state_since} (a Unix time, or L{None} if
        unknown) and C{state_seconds} (how long it has been in its state),
        C{active}, C{max_connections} (L{None} for no limit), C{requests},
        C{failures} (failed requests),
        C{failures_by_reason}, C{responses} (by status class),
        C{server_errors} (5xx), C{latency_p50_ms} and C{latency_p99_ms}
        (L{None} with no recent requests), C{health} (C{ok}, C{checked_at}
        as a Unix time and C{detail}; L{None} before the first check) and
        C{check_history} (the last 10 active checks, oldest first, each
        C{{"at", "ok", "detail"}}).
    """
    stats = backend.stats

    def milliseconds(q: float) -> float | None:
        value = stats.latency.quantile(q, now)
        return None if value is None else round(value * 1000, 3)

    since = backend.stateSince
    return {
        "name": backend.name,
        "url": backend.config.url,
        "address": backend.address,
        "weight": backend.weight,
        "configured_weight": backend.config.weight,
        "overrides": dict(override or {}),
        "state": backend.state.value,
        "reason": backend.reason,
        "state_since": since,
        "state_seconds": None if since is None else round(max(0.0, now - since), 3),
        "active": backend.active,
        "max_connections": backend.maxConnections,
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
        "check_history": [
            {"at": record.at, "ok": record.ok, "detail": record.detail}
            for record in backend.checkHistory
        ],
    }


def poolJSON(
    pool: BackendPool,
    now: float,
    overrides: Mapping[str, Mapping[str, object]] | None = None,
) -> dict[str, object]:
    """
    A pool as the JSON API shows it.

    @param pool: The pool.
    @param now: The current time.
    @param overrides: The runtime overrides of its backends by name (see
        L{Balancer.overrides}), or L{None} for none.
    @return: C{{"name", "strategy", "uses_weights", "queue",
        "max_queue", "queue_timeout", "queue_timeouts", "queue_full",
        "backends": [...]}}: C{queue} is how many requests wait for a
        backend with room now, C{queue_timeouts} and C{queue_full} count
        the requests refused with 503 after C{queue_timeout} and because
        C{max_queue} were waiting; each backend as L{backendJSON} shows it.
    """
    overrides = overrides or {}
    queue = pool.queue
    return {
        "name": pool.name,
        "strategy": pool.config.strategy,
        "uses_weights": bool(pool.strategy.usesWeights),
        "queue": len(queue),
        "max_queue": pool.config.max_queue,
        "queue_timeout": pool.config.queue_timeout,
        "queue_timeouts": queue.timeouts,
        "queue_full": queue.rejected,
        "backends": [
            backendJSON(backend, now, overrides.get(backend.name))
            for backend in pool.backends
        ],
    }


def poolsJSON(balancer: Balancer, now: float) -> dict[str, object]:
    """
    Every pool and backend, as C{GET /api/pools} shows them.

    @param balancer: The balancer.
    @param now: The current time.
    @return: C{{"pools": [...]}}, every pool in configuration order as
        L{poolJSON} shows it.
    """
    overrides = balancer.overrides()
    return {
        "pools": [
            poolJSON(pool, now, overrides.get(pool.name))
            for pool in balancer.pools.values()
        ]
    }
