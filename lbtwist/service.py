# -*- test-case-name: tests.test_service -*-
"""
Turn a L{Config} into a running service tree: one listening service per
frontend endpoint, one health check per backend, and the upstream
connection pools (closed on shutdown).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory
from twisted.web.client import HTTPConnectionPool
from twisted.web.server import Site
from twisted.web.iweb import IAgent

from lbtwist.accesslog import openAccessLog
from lbtwist.admin import adminResource
from lbtwist.backend import Backend, BackendState, logStateChange
from lbtwist.balancer import Balancer
from lbtwist.config import Config
from lbtwist.health import HealthCheck, ProbeResult, healthAgent, probeFor
from lbtwist.metrics import metricsRegistry
from lbtwist.pool import BackendPool
from lbtwist.shutdown import Drainable, GracefulShutdown
from lbtwist.statefile import StateFile
from lbtwist.systemd import SystemdNotifier, SystemdService, whenListening
from lbtwist.stats import FrontendStats
from lbtwist.tcp import TCPProxyFactory
from lbtwist.tls import ALPN_HTTP, serverTLSFactory
from lbtwist.upgrade import upgradeHandler
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


def _recordCheck(reactor: Any, backend: Backend) -> Callable[[ProbeResult], None]:
    def record(result: ProbeResult) -> None:
        backend.stats.recordCheck(result.duration)
        change = backend.checkResult(result.ok, result.detail, reactor.seconds())
        if change is not None:
            logStateChange(change)

    return record


def _isDisabled(backend: Backend) -> Callable[[], bool]:
    return lambda: backend.state is BackendState.DISABLED


def _healthChecks(reactor: Any, pool: BackendPool, agent: IAgent) -> list[IService]:
    checks: list[IService] = []
    if pool.config.usesTLS:
        # Probes of https:// backends verify them as requests do.
        agent = healthAgent(reactor, pool.config)
    for backend in pool.backends:
        probe = probeFor(reactor, agent, pool.config, backend.config)
        if probe is not None:
            checks.append(
                HealthCheck(
                    reactor,
                    probe,
                    pool.config.health.interval,
                    _recordCheck(reactor, backend),
                    _isDisabled(backend),
                )
            )
    return checks


def _listeners(
    reactor: Any, frontend: str, listen: Sequence[str], factory: Any
) -> list[IService]:
    return [
        FrontendListener(frontend, serverFromString(reactor, description), factory)
        for description in listen
    ]


class _AdminSite(Site):
    """
    The admin listener's site: quiet, no access log.
    """

    noisy = False

    def log(self, request: Any) -> None:
        """
        Log nothing.
        """


def makeService(config: Config, reactor: Any) -> MultiService:
    """
    Build the service tree for C{config}.

    @param config: A validated configuration.
    @param reactor: The reactor everything runs on.
    @return: A L{MultiService} to start (twistd starts it).
    """
    root = MultiService()
    settings = config.settings
    accessLog = (
        None
        if settings.access_log is None
        else openAccessLog(settings.access_log, settings.access_log_format)
    )
    probeAgent = healthAgent(reactor)
    connectionPools: list[HTTPConnectionPool] = []
    pools: dict[str, BackendPool] = {}
    drainable: list[Drainable] = []
    cleanUp: list[Callable[[], object]] = []
    # First child: stopped after the listeners, so it drains what is left.
    GracefulShutdown(
        reactor, settings.grace_period, drainable, pools.values(), cleanUp
    ).setServiceParent(root)
    resources: dict[str, PoolResource] = {}
    upgrades = upgradeHandler(reactor)
    for poolConfig in config.pools:
        pool = pools[poolConfig.name] = BackendPool(poolConfig)
        if poolConfig.usesTLS and not poolConfig.tls_verify:
            _log.warn(
                "pool {pool}: tls_verify = false: the certificates of its "
                "https backends are not verified",
                pool=poolConfig.name,
            )
        if poolConfig.mode == "http":
            agent, connections = makeAgent(reactor, poolConfig)
            connectionPools.append(connections)
            resources[poolConfig.name] = PoolResource(reactor, pool, agent, upgrades)
        for check in _healthChecks(reactor, pool, probeAgent):
            check.setServiceParent(root)
    frontends = [(frontend, FrontendStats()) for frontend in config.frontends]
    stateFile = None if settings.state_file is None else StateFile(settings.state_file)
    balancer = Balancer(list(pools.values()), frontends, reactor, stateFile)
    balancer.applyState()
    for frontend, stats in frontends:
        factory: Any
        if frontend.mode == "tcp":
            factory = TCPProxyFactory(
                reactor, frontend, pools[frontend.pool], stats, accessLog
            )
            drainable.append(factory)
        else:
            factory = ProxySite(
                resources[frontend.pool],
                frontend,
                config.pool(frontend.pool).max_body_size,
                reactor,
                stats,
                accessLog,
            )
            drainable.append(factory)
        if frontend.tls is not None:
            protocols = ALPN_HTTP if frontend.mode == "http" else ()
            factory = serverTLSFactory(
                reactor, frontend.name, frontend.tls, factory, protocols
            )
        if frontend.accept_proxy and frontend.mode == "http":
            # TCP frontends read the PROXY header themselves (keeping
            # half-close, which Twisted's wrapper does not pass on).
            factory = HAProxyWrappingFactory(factory)
        for listener in _listeners(reactor, frontend.name, frontend.listen, factory):
            listener.setServiceParent(root)
    if config.admin is not None:
        admin = adminResource(
            balancer,
            reactor,
            metricsRegistry(balancer, reactor),
            config.admin.token,
            started=reactor.seconds(),
        )
        for listener in _listeners(
            reactor, "admin", [config.admin.listen], _AdminSite(admin)
        ):
            listener.setServiceParent(root)
    cleanUp.extend(p.closeCachedConnections for p in connectionPools)
    if accessLog is not None:
        cleanUp.append(accessLog.close)
    # Last child: starts after the listeners (READY=1 once they all listen)
    # and stops first (STOPPING=1 before the drain). Does nothing outside
    # systemd.
    SystemdService(
        reactor,
        SystemdNotifier(),
        whenListening([s for s in root if isinstance(s, FrontendListener)]),
        describe=_listeningOn,
    ).setServiceParent(root)
    return root


def _listeningOn(ports: Sequence[IListeningPort]) -> str:
    return "listening on " + ", ".join(map(describeAddress, ports))
