# -*- test-case-name: tests.test_pool -*-
"""
A pool of backends: the only owner of "which backend gets this request".
"""

from __future__ import annotations

from random import Random
from typing import Collection

from lbtwist.backend import Backend
from lbtwist.config import PoolConfig
from lbtwist.strategies import STRATEGIES, Choice, IStrategy

__all__ = ["BackendPool"]


class BackendPool:
    """
    A named group of backends and the only owner of "which backend now".

    @ivar config: The pool's configuration.
    @ivar name: The pool's name.
    @ivar backends: Its backends, in configuration order.
    @ivar strategy: The strategy that chooses among them.
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

    def choose(
        self, now: float, exclude: Collection[Backend] = (), key: bytes | None = None
    ) -> Choice | None:
        """
        Choose the backend for the next request.

        @param now: The current time.
        @param exclude: Backends not to choose, e.g. those this request has
            already failed on.
        @param key: The request's key for C{consistent-hash} (see
            L{lbtwist.hashkey}), or L{None}.
        @return: An available backend not in C{exclude} and why it was
            chosen, or L{None} if there is none.
        """

        def eligible(backend: Backend) -> bool:
            return backend not in exclude and backend.available(now)

        return self.strategy.choose(self.backends, eligible, key)

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

    def backend(self, name: str) -> Backend:
        """
        Find a backend by name.

        @param name: The backend's name.
        @return: The backend.
        @raise KeyError: If the pool has no backend of that name.
        """
        return self._byName[name]
