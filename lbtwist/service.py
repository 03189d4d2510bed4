# -*- test-case-name: tests.test_service -*-
"""
Turn a L{Config} into a running service tree: one listening service per
frontend endpoint, one health check per backend, and the upstream
connection pools (closed on shutdown).
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import gatherResults
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.web.client import HTTPConnectionPool
from twisted.web.iweb import IAgent

from lbtwist.backend import Backend, logStateChange
from lbtwist.config import Config, FrontendConfig, PoolConfig
from lbtwist.health import HealthCheck, ProbeResult, healthAgent, probeFor
from lbtwist.pool import BackendPool
from lbtwist.web import PoolResource, ProxySite, makeAgent

_log = Logger()


def describeAddress(port: IListeningPort) -> str:
    """
    A readable address for a listening port: C{127.0.0.1:8080},
    C{[::1]:8080}, or a UNIX socket path.

    @param port: The listening port.
    """
    address = port.getHost()
    host = getattr(address, "host", None)
    if host is None:
        return str(getattr(address, "name", address))
    if ":" in host:
        host = "[%s]" % (host,)
    return "%s:%d" % (host, getattr(address, "port"))


class FrontendListener(StreamServerEndpointService):
    """
    Listens on one endpoint of a frontend and logs the address once bound;
    a bind failure stops twistd from starting.

    @ivar frontend: The frontend's name.
    """

    _raiseSynchronously = True

    def __init__(self, frontend: str, endpoint: Any, factory: Any) -> None:
        """
        @param frontend: The frontend's name (for the log).
        @param endpoint: The server endpoint.
        @param factory: The protocol factory (a L{ProxySite}).
        """
        super().__init__(endpoint, factory)
        self.frontend = frontend

    def privilegedStartService(self) -> None:
        """
        Start listening and log where.
        """
        super().privilegedStartService()
        assert self._waitingForPort is not None
        self._waitingForPort.addCallback(self._listening)

    def _listening(self, port: IListeningPort) -> IListeningPort:
        _log.info(
            "frontend {frontend} listening on {address}",
            frontend=self.frontend,
            address=describeAddress(port),
        )
        return port


class _ConnectionPoolCloser(Service):
    """
    Closes cached upstream connections when the service tree stops.
    """

    def __init__(self, pools: list[HTTPConnectionPool]) -> None:
        self._pools = pools

    def stopService(self) -> Any:
        super().stopService()
        return gatherResults([p.closeCachedConnections() for p in self._pools])


def _recordCheck(reactor: Any, backend: Backend) -> Any:
    def record(result: ProbeResult) -> None:
        change = backend.checkResult(result.ok, result.detail, reactor.seconds())
        if change is not None:
            logStateChange(change)

    return record


def _healthChecks(reactor: Any, pool: BackendPool, agent: IAgent) -> list[IService]:
    checks: list[IService] = []
    for backend in pool.backends:
        probe = probeFor(reactor, agent, pool.config, backend.config)
        if probe is not None:
            checks.append(
                HealthCheck(
                    reactor,
                    probe,
                    pool.config.health.interval,
                    _recordCheck(reactor, backend),
                )
            )
    return checks


def _listeners(
    reactor: Any, frontend: FrontendConfig, site: ProxySite
) -> list[IService]:
    return [
        FrontendListener(frontend.name, serverFromString(reactor, listen), site)
        for listen in frontend.listen
    ]


def makeService(config: Config, reactor: Any) -> MultiService:
    """
    Build the service tree for C{config}.

    @param config: A validated configuration.
    @param reactor: The reactor everything runs on.
    @return: A L{MultiService} to start (twistd starts it).
    """
    root = MultiService()
    probeAgent = healthAgent(reactor)
    connectionPools: list[HTTPConnectionPool] = []
    resources: dict[str, tuple[PoolResource, PoolConfig]] = {}
    for poolConfig in config.pools:
        pool = BackendPool(poolConfig)
        agent, connections = makeAgent(reactor, poolConfig)
        connectionPools.append(connections)
        resources[poolConfig.name] = (PoolResource(reactor, pool, agent), poolConfig)
        for check in _healthChecks(reactor, pool, probeAgent):
            check.setServiceParent(root)
    for frontend in config.frontends:
        resource, poolConfig = resources[frontend.pool]
        site = ProxySite(resource, frontend, poolConfig.max_body_size, reactor)
        for listener in _listeners(reactor, frontend, site):
            listener.setServiceParent(root)
    _ConnectionPoolCloser(connectionPools).setServiceParent(root)
    return root


