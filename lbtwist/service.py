# -*- test-case-name: tests.test_service -*-
"""
Turn a L{Config} into a running service tree: one listening service per
frontend endpoint, one health check per backend, and the upstream
connection pools (closed on shutdown).
"""

from __future__ import annotations

import signal
from typing import Any, Callable, Sequence

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.web.server import Site
from twisted.web.iweb import IAgent

from lbtwist.accesslog import openAccessLog
from lbtwist.admin import adminResource
from lbtwist.backend import Backend, BackendState, logStateChange
from lbtwist.balancer import Balancer
from lbtwist.config import Config, ConfigError, FrontendConfig, loadConfig
from lbtwist.frontend import HTTPFrontend
from lbtwist.health import HealthCheck, ProbeResult, healthAgent, probeFor
from lbtwist.metrics import metricsRegistry
from lbtwist.pool import BackendPool
from lbtwist.proxyheader import ProxyHeaderWrappingFactory
from lbtwist.shutdown import Drainable, GracefulShutdown
from lbtwist.statefile import StateFile
from lbtwist.systemd import SystemdNotifier, SystemdService, whenListening
from lbtwist.stats import FrontendStats
from lbtwist.tcp import TCPProxyFactory
from lbtwist.tls import ALPN_HTTP, serverTLSFactory
from lbtwist.web import BackendConnections, PoolResource

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


def withBacklog(description: str, backlog: int) -> str:
    """
    A server endpoint description with a listen backlog: C{tcp}, C{tcp6}
    and C{ssl} descriptions that set none get C{backlog}.

    @param description: E.g. C{"tcp:8080:interface=127.0.0.1"}.
    @param backlog: The listen queue length.
    """
    kind = description.split(":", 1)[0].lower()
    if kind not in ("tcp", "tcp6", "ssl") or "backlog=" in description:
        return description
    return f"{description}:backlog={backlog}"


def _listeners(
    reactor: Any,
    frontend: str,
    listen: Sequence[str],
    factory: Any,
    backlog: int | None = None,
) -> list[FrontendListener]:
    return [
        FrontendListener(
            frontend,
            serverFromString(
                reactor,
                description if backlog is None else withBacklog(description, backlog),
            ),
            factory,
        )
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


class LoadBalancer(MultiService):
    """
    The running load balancer: the services built from a L{Config}
    (listeners, health checks, admin, graceful shutdown, systemd), and
    L{LoadBalancer.reload} to apply a new configuration in place.

    A reload keeps what did not change: a backend configured with the same
    name and URL keeps its state, counters and requests in flight; a
    frontend with the same endpoints, mode and TLS keeps listening and only
    takes the new settings, so no connection is refused. Frontends added or
    removed start or stop listening. Requests and tunnels in flight finish on
    the objects they started with; new ones follow the new configuration at
    once. The admin listener and the C{[settings]} are read at start only.

    @ivar config: The configuration in force.
    @ivar balancer: Pools and frontends, for the admin page and API.
    """

    def __init__(self, config: Config, reactor: Any) -> None:
        """
        @param config: A validated configuration.
        @param reactor: The reactor everything runs on.
        """
        super().__init__()
        self.config = config
        self._reactor = reactor
        settings = config.settings
        self._accessLog = (
            None
            if settings.access_log is None
            else openAccessLog(settings.access_log, settings.access_log_format)
        )
        self._probeAgent = healthAgent(reactor)
        self._connections: dict[str, BackendConnections] = {}
        self._pools: dict[str, BackendPool] = {}
        self._checks: list[IService] = []
        self._frontends: dict[str, tuple[FrontendConfig, Any, FrontendStats]] = {}
        self._listeners: dict[str, list[FrontendListener]] = {}
        self._drainable: list[Drainable] = []
        self._cleanUp: list[Callable[[], object]] = []
        # First child: stopped after the listeners, so it drains what is left.
        GracefulShutdown(
            reactor,
            settings.grace_period,
            self._drainable,
            self._pools.values(),
            self._cleanUp,
        ).setServiceParent(self)
        stateFile = None if settings.state_file is None else StateFile(settings.state_file)
        self.balancer = Balancer([], [], reactor, stateFile)
        self._applyPools(config)
        self._listeners = self._applyFrontends(config)[0]
        for listeners in self._listeners.values():
            for listener in listeners:
                listener.setServiceParent(self)
        if config.admin is not None:
            admin = adminResource(
                self.balancer,
                reactor,
                metricsRegistry(self.balancer, reactor),
                config.admin.token,
                started=reactor.seconds(),
            )
            for adminListener in _listeners(
                reactor, "admin", [config.admin.listen], _AdminSite(admin)
            ):
                adminListener.setServiceParent(self)
        self._cleanUp.append(self._closeConnectionPools)
        if self._accessLog is not None:
            self._cleanUp.append(self._accessLog.close)
        # Last child: starts after the listeners (READY=1 once they all
        # listen) and stops first (STOPPING=1 before the drain). Does
        # nothing outside systemd.
        self._systemd = SystemdService(
            reactor,
            SystemdNotifier(),
            whenListening([s for s in self if isinstance(s, FrontendListener)]),
            describe=_listeningOn,
        )
        self._systemd.setServiceParent(self)

    # Pools

    def _applyPools(self, config: Config) -> None:
        """
        Build the pools of C{config}, adopting the running backends that
        are still configured, and restart the health checks.
        """
        reactor = self._reactor
        pools: dict[str, BackendPool] = {}
        connections: dict[str, BackendConnections] = {}
        for poolConfig in config.pools:
            pool = pools[poolConfig.name] = BackendPool(poolConfig)
            previous = self._pools.get(poolConfig.name)
            if previous is not None:
                pool.adopt(previous)
            if poolConfig.usesTLS and not poolConfig.tls_verify:
                _log.warn(
                    "pool {pool}: tls_verify = false: the certificates of its "
                    "https backends are not verified",
                    pool=poolConfig.name,
                )
            if poolConfig.mode == "http":
                new = connections[poolConfig.name] = BackendConnections(
                    reactor, poolConfig
                )
                running = self._connections.get(poolConfig.name)
                if running is not None:
                    new.adopt(running, pool.backends)
        for check in self._checks:
            check.disownServiceParent()
        self._checks = [
            check
            for pool in pools.values()
            for check in _healthChecks(reactor, pool, self._probeAgent)
        ]
        for check in self._checks:
            check.setServiceParent(self)
        for name, retired in self._connections.items():
            if name not in connections:
                retired.close()
        self._connections = connections
        self._pools.clear()
        self._pools.update(pools)
        self.balancer.pools.clear()
        self.balancer.pools.update(pools)
        self.balancer.applyState()

    def _closeConnectionPools(self) -> Deferred[list[None]]:
        return gatherResults(
            [connections.close() for connections in self._connections.values()]
        )

    # Frontends

    def _applyFrontends(
        self, config: Config
    ) -> tuple[dict[str, list[FrontendListener]], set[str]]:
        """
        Bring the frontends in line with C{config}: update those whose
        endpoints, mode and TLS are unchanged in place, and build listeners
        for the others (the caller starts them, and stops the listeners of
        the frontends not kept).

        @return: The new listeners by frontend, not yet started, and the
            names of the frontends kept listening as they were.
        """
        reactor = self._reactor
        frontends: dict[str, tuple[FrontendConfig, Any, FrontendStats]] = {}
        created: dict[str, list[FrontendListener]] = {}
        kept: set[str] = set()
        for frontend in config.frontends:
            previous = self._frontends.get(frontend.name)
            if previous is not None and _sameListeners(previous[0], frontend):
                _, factory, stats = previous
                if frontend.mode == "tcp":
                    factory.reconfigure(frontend, self._pools[frontend.pool])
                else:
                    factory.reconfigure(
                        frontend, config.pool(frontend.pool).max_body_size
                    )
                    factory.resource = self._rootResource(factory)
                frontends[frontend.name] = (frontend, factory, stats)
                kept.add(frontend.name)
                continue
            stats = FrontendStats()
            factory = self._factoryFor(config, frontend, stats)
            frontends[frontend.name] = (frontend, factory, stats)
            created[frontend.name] = _listeners(
                reactor,
                frontend.name,
                frontend.listen,
                _wrapped(reactor, frontend, factory),
                frontend.backlog,
            )
        self._frontends = frontends
        self._drainable[:] = [factory for _, factory, _ in frontends.values()]
        self.balancer.frontends[:] = [
            (frontend, stats) for frontend, _, stats in frontends.values()
        ]
        return created, kept

    def _factoryFor(
        self, config: Config, frontend: FrontendConfig, stats: FrontendStats
    ) -> Any:
        if frontend.mode == "tcp":
            return TCPProxyFactory(
                self._reactor, frontend, self._pools[frontend.pool], stats, self._accessLog
            )
        site = HTTPFrontend(
            self._reactor,
            frontend,
            config.pool(frontend.pool).max_body_size,
            stats,
            self._accessLog,
        )
        site.resource = self._rootResource(site)
        return site

    def _rootResource(self, site: HTTPFrontend) -> PoolResource:
        """
        The root resource of an HTTP frontend: its pool, forwarding with
        its policy and recording in its access log.
        """
        name = site.frontend.pool
        return PoolResource(
            self._reactor,
            self._pools[name],
            self._connections[name],
            site.policy,
            site.record,
        )

    # Reload

    def reload(self) -> Deferred[None]:
        """
        Re-read the configuration file and apply it; an invalid file is
        logged and changes nothing.

        @return: A L{Deferred} firing when the new configuration is in force.
        """
        source = self.config.source
        if source.startswith("<"):
            _log.warn("reload: nothing to re-read (configuration from {source})", source=source)
            return succeed(None)
        try:
            config = loadConfig(source)
        except ConfigError as e:
            _log.error(
                "reload failed, the running configuration keeps serving: {error}",
                error=str(e),
            )
            return succeed(None)
        return self._systemd.reload(lambda: self._apply(config))

    def _apply(self, config: Config) -> Deferred[None]:
        self._applyPools(config)
        created, kept = self._applyFrontends(config)
        stale = [
            listener
            for name, listeners in self._listeners.items()
            if name not in kept
            for listener in listeners
        ]
        # Stop listening where a frontend went away or moved before binding
        # again, in case a new listener wants the same address.
        stopped = gatherResults(
            [maybeDeferred(listener.disownServiceParent) for listener in stale]
        )

        def start(_: object) -> None:
            listeners = {name: self._listeners[name] for name in kept}
            for name, new in created.items():
                for listener in new:
                    try:
                        listener.setServiceParent(self)
                    except Exception as e:
                        _log.error(
                            "reload: frontend {frontend} cannot listen: {error}",
                            frontend=name,
                            error=str(e),
                        )
                        listener.disownServiceParent()
                    else:
                        listeners.setdefault(name, []).append(listener)
            self._listeners = listeners
            self.config = config
            _log.info("configuration reloaded: {summary}", summary=config.summary())

        return stopped.addCallback(start)

    # Signals

    def installSignalHandler(self) -> None:
        """
        Reload on SIGHUP (twistd's plugin calls this; tests need not).
        """
        reactor = self._reactor

        def onSignal(signum: int, frame: object) -> None:
            reactor.callFromThread(self.reload)

        signal.signal(signal.SIGHUP, onSignal)


def _sameListeners(old: FrontendConfig, new: FrontendConfig) -> bool:
    return (
        old.listen == new.listen
        and old.mode == new.mode
        and old.tls == new.tls
        and old.accept_proxy == new.accept_proxy
    )


def _wrapped(reactor: Any, frontend: FrontendConfig, factory: Any) -> Any:
    """
    The factory a frontend listens with: TLS around its HTTP or TCP factory,
    and for an HTTP frontend with both TLS and C{accept_proxy}, a reader of
    the PROXY header around that (the header comes before the handshake;
    without TLS the channel and the TCP proxy read it themselves).
    """
    if frontend.tls is not None:
        protocols = ALPN_HTTP if frontend.mode == "http" else ()
        factory = serverTLSFactory(reactor, frontend.name, frontend.tls, factory, protocols)
        if frontend.accept_proxy and frontend.mode == "http":
            factory = ProxyHeaderWrappingFactory(
                factory, reactor, frontend.header_timeout
            )
    return factory


def makeService(config: Config, reactor: Any) -> LoadBalancer:
    """
    Build the service tree for C{config}.

    @param config: A validated configuration.
    @param reactor: The reactor everything runs on.
    @return: A L{LoadBalancer} to start (twistd starts it).
    """
    return LoadBalancer(config, reactor)


def _listeningOn(ports: Sequence[IListeningPort]) -> str:
    return "listening on " + ", ".join(map(describeAddress, ports))
