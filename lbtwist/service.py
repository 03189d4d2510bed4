# -*- test-case-name: tests.test_service -*-
"""
Turn a L{Config} into a running service tree: one listening service per
frontend endpoint, one health check per backend, and the upstream
connection pools (closed on shutdown).
"""

from __future__ import annotations

import gc
import os
import signal
from typing import Any, Callable, Mapping, Sequence

from attrs import evolve, fields, frozen

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IAgent

from lbtwist.accesslog import openAccessLog
from lbtwist.backend import Backend, BackendState, logFailedCheck, logStateChange
from lbtwist.balancer import Balancer
from lbtwist.config import (
    AdminConfig,
    Config,
    ConfigError,
    FrontendConfig,
    PoolConfig,
    SettingsConfig,
    loadConfig,
)
from lbtwist.frontend import HTTPFrontend
from lbtwist.listener import ListenError, Listener, StartupError, listenFailure
from lbtwist.health import HealthCheck, ProbeResult, healthAgent, probeFor, probeOnce
from lbtwist.pool import BackendPool
from lbtwist.proxyheader import ProxyHeaderWrappingFactory
from lbtwist.shutdown import Drainable, GracefulShutdown
from lbtwist.statefile import StateFile
from lbtwist.sticky import StickyCookie, loadOrCreateSecret
from lbtwist.systemd import SystemdNotifier, SystemdService, whenListening
from lbtwist.stats import FrontendStats
from lbtwist.tls import ALPN_HTTP, serverTLSFactory
from lbtwist.web import BackendConnections, PoolResource, RoutedResource

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


class FrontendListener(Listener):
    """
    Listens on one endpoint of a frontend (or of the admin listener); a bind
    failure raises L{ListenError} from L{privilegedStartService}. Its owner
    logs the address with L{announce} once every listener it starts listens.

    @ivar frontend: The frontend's name.
    """

    def __init__(
        self,
        frontend: str,
        endpoint: Any,
        factory: Any,
        description: str = "",
        label: str | None = None,
    ) -> None:
        """
        @param frontend: The frontend's name (for the log).
        @param endpoint: The server endpoint.
        @param factory: The protocol factory.
        @param description: The endpoint's description, as configured.
        @param label: How errors name the listener: by default
            C{frontend "<frontend>"}, or C{"admin"} for the admin listener.
        """
        super().__init__(
            endpoint,
            factory,
            description,
            f'frontend "{frontend}"' if label is None else label,
        )
        self.frontend = frontend

    def announce(self) -> None:
        """
        Log where this listener listens, if it does.
        """
        if self.port is not None:
            _log.info(
                "frontend {frontend} listening on {address}",
                frontend=self.frontend,
                address=describeAddress(self.port),
            )


def _recordCheck(reactor: Any, backend: Backend) -> Callable[[ProbeResult], None]:
    """
    What a backend's health check does with each result: record it, log a
    state change, and log a failed check of a down backend (throttled, see
    L{logFailedCheck}).
    """

    def record(result: ProbeResult) -> None:
        backend.stats.recordCheck(result.duration)
        now = reactor.seconds()
        change = backend.checkResult(result.ok, result.detail, now)
        if change is not None:
            logStateChange(change)
        elif not result.ok:
            logFailedCheck(backend, now)

    return record


def _isDisabled(backend: Backend) -> Callable[[], bool]:
    return lambda: backend.state is BackendState.DISABLED


def _checkKey(pool: PoolConfig, backend: Backend) -> tuple[object, ...]:
    """
    What a backend's health check is made from: a running check is kept
    across a reload while this stays the same.
    """
    return (pool.health, backend.config.url, pool.ca_file, pool.tls_verify)


def _isAdopted(backend: Backend, previous: BackendPool | None) -> bool:
    """
    Whether a reload adopts a running backend for C{backend}: the same pool
    had one with the same name and URL (see L{BackendPool.adopt}).
    """
    if previous is None:
        return False
    try:
        running = previous.backend(backend.name)
    except KeyError:
        return False
    return running.config.url == backend.config.url


def _restartOnly(running: Config, new: Config) -> list[str]:
    """
    Describe the changes from C{running} to C{new} that a reload does not
    apply: the C{[admin]} listener and the C{[settings]}, one line a key.
    """
    changes: list[str] = []
    if running.admin is None or new.admin is None:
        if running.admin != new.admin:
            changes.append(
                "[admin] added" if running.admin is None else "[admin] removed"
            )
    else:
        for field in fields(AdminConfig):
            before = getattr(running.admin, field.name)
            after = getattr(new.admin, field.name)
            if before == after:
                continue
            if field.name == "token":
                changes.append("[admin] token changed")
            else:
                changes.append(
                    f"[admin] {field.name} changed from {before!r} to {after!r}"
                )
    for field in fields(SettingsConfig):
        before = getattr(running.settings, field.name)
        after = getattr(new.settings, field.name)
        if before != after:
            changes.append(f"[settings] {field.name} changed from {before!r} to {after!r}")
    return changes


@frozen
class _RunningCheck:
    """
    The health check running for one backend, and what it was made from.
    """

    backend: Backend
    key: tuple[object, ...]
    check: HealthCheck


class ReloadError(Exception):
    """
    A reload failed before the switch; the running configuration is
    untouched.
    """


class _Plan:
    """
    What a reload built and has not yet put in force.

    @ivar config: The new configuration.
    @ivar pools: The new pools by name (backends not yet adopted).
    @ivar connections: The new upstream connection pools by pool name.
    @ivar frontends: Every frontend's configuration, factory and stats.
    @ivar created: The new listeners by frontend.
    @ivar kept: The frontends that keep listening as they are.
    @ivar bound: The new listeners started before the switch.
    @ivar later: The new listeners started once the old ones stopped, as
        they want an address an old one holds.
    """

    def __init__(self, config: Config) -> None:
        """
        @param config: The new configuration.
        """
        self.config = config
        self.pools: dict[str, BackendPool] = {}
        self.connections: dict[str, BackendConnections] = {}
        self.frontends: dict[str, tuple[FrontendConfig, Any, FrontendStats]] = {}
        self.created: dict[str, list[FrontendListener]] = {}
        self.kept: set[str] = set()
        self.bound: list[FrontendListener] = []
        self.later: list[FrontendListener] = []


def _logReloadFailure(reason: Failure) -> None:
    """
    Log why a reload failed: an invalid file in one line, anything else
    with its traceback.
    """
    if reason.check(ConfigError):
        _log.error(
            "reload failed, the running configuration keeps serving: {error}",
            error=reason.getErrorMessage(),
        )
    else:
        _log.failure(
            "reload failed, the running configuration keeps serving: {error}",
            reason,
            error=reason.getErrorMessage(),
        )


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
    label: str | None = None,
) -> list[FrontendListener]:
    return [
        FrontendListener(
            frontend,
            serverFromString(
                reactor,
                description if backlog is None else withBacklog(description, backlog),
            ),
            factory,
            description,
            label,
        )
        for description in listen
    ]


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
    once. The health check of an adopted backend keeps running unless its
    check settings changed. A reload is a transaction: everything is built,
    new listeners bound and the first health check of every new backend
    run (bounded by its pool's C{timeout}) before the switch, and a failure
    before it leaves the running configuration untouched. Reloads never
    overlap. Retired pools and frontends stay visible to graceful shutdown
    until their work in flight is done. The admin listener and the
    C{[settings]} are read at start only: a reload that changes them logs a
    warning per key and keeps the running values.

    @ivar config: The configuration in force.
    @ivar balancer: Pools and frontends, for the admin page and API.
    """

    def __init__(self, config: Config, reactor: Any) -> None:
        """
        @param config: A validated configuration.
        @param reactor: The reactor everything runs on.
        @raise StartupError: If the access log cannot be opened.
        """
        super().__init__()
        self.config = config
        self._reactor = reactor
        settings = config.settings
        try:
            self._accessLog = (
                None
                if settings.access_log is None
                else openAccessLog(
                    settings.access_log,
                    settings.access_log_format,
                    headers=settings.access_log_headers,
                )
            )
        except OSError as e:
            raise StartupError(
                f"[settings] access_log: cannot open {settings.access_log}: "
                f"{listenFailure(e)}"
            ) from None
        # Made for the first pool with HTTP checks (see _agentFor).
        self._probeAgent: IAgent | None = None
        self._connections: dict[str, BackendConnections] = {}
        self._pools: dict[str, BackendPool] = {}
        self._checks: dict[tuple[str, str], _RunningCheck] = {}
        self._reloading = False
        self._reloadWaiters: list[Deferred[None]] = []
        self._handleUSR1 = False
        self._freezeHeap = False
        self._frontends: dict[str, tuple[FrontendConfig, Any, FrontendStats]] = {}
        self._listeners: dict[str, list[FrontendListener]] = {}
        self._drainable: list[Drainable] = []
        # What graceful shutdown counts: the pools in force, then retired
        # ones with work in flight.
        self._drainPools: list[BackendPool] = []
        self._retiredPools: list[BackendPool] = []
        self._retiredFrontends: list[Drainable] = []
        self._cleanUp: list[Callable[[], object]] = []
        self._secret: bytes | None = None
        # First child: stopped after the listeners, so it drains what is left.
        GracefulShutdown(
            reactor,
            settings.grace_period,
            self._drainable,
            self._drainPools,
            self._cleanUp,
        ).setServiceParent(self)
        stateFile = None if settings.state_file is None else StateFile(settings.state_file)
        self.balancer = Balancer([], [], reactor, stateFile)
        plan = self._build(config)
        self._commit(plan)
        self._listeners = plan.created
        for listeners in self._listeners.values():
            for listener in listeners:
                listener.setServiceParent(self)
        if config.admin is not None:
            self._addAdmin(config.admin)
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

    def _addAdmin(self, config: AdminConfig) -> None:
        """
        Add the admin listener: the stats page, JSON API and metrics.
        """
        # Imported here: the admin pages, prometheus_client and twisted.web's
        # Site take memory that a configuration without [admin] never uses.
        from lbtwist.admin import AdminSite, adminResource
        from lbtwist.metrics import metricsRegistry

        reactor = self._reactor
        admin = adminResource(
            self.balancer,
            reactor,
            metricsRegistry(self.balancer, reactor),
            config.token,
            started=reactor.seconds(),
        )
        for adminListener in _listeners(
            reactor, "admin", [config.listen], AdminSite(admin), label="admin"
        ):
            adminListener.setServiceParent(self)

    def privilegedStartService(self) -> None:
        """
        Bind every listener, then log where each listens: nothing is logged
        as listening unless all of them are.

        @raise ListenError: If one cannot listen; those already listening
            are stopped.
        """
        try:
            super().privilegedStartService()
        except ListenError:
            for listener in self._allListeners():
                if listener.port is not None:
                    listener.stopService()
            raise
        for listener in self._allListeners():
            listener.announce()

    def _allListeners(self) -> list[FrontendListener]:
        """
        The frontend listeners and the admin listener, in start order.
        """
        return [s for s in self if isinstance(s, FrontendListener)]

    # Building a configuration

    def _build(self, config: Config) -> _Plan:
        """
        Build what C{config} needs and the running configuration does not
        have: pools, connection pools, the factories and the (not yet
        started) listeners of new or moved frontends. Nothing running is
        changed; backends are adopted only by L{_commit}.
        """
        reactor = self._reactor
        plan = _Plan(config)
        for poolConfig in config.pools:
            plan.pools[poolConfig.name] = BackendPool(poolConfig, reactor.seconds())
            if poolConfig.mode == "http":
                plan.connections[poolConfig.name] = BackendConnections(
                    reactor, poolConfig
                )
        for frontend in config.frontends:
            previous = self._frontends.get(frontend.name)
            if (
                previous is not None
                and _sameListeners(previous[0], frontend)
                and len(self._listeners.get(frontend.name, ())) == len(frontend.listen)
            ):
                plan.frontends[frontend.name] = (frontend, previous[1], previous[2])
                plan.kept.add(frontend.name)
                continue
            stats = FrontendStats()
            factory = self._factoryFor(
                frontend, stats, plan.pools, plan.connections
            )
            plan.frontends[frontend.name] = (frontend, factory, stats)
            plan.created[frontend.name] = _listeners(
                reactor,
                frontend.name,
                frontend.listen,
                _wrapped(reactor, frontend, factory),
                frontend.backlog,
            )
        return plan

    def _stale(self, plan: _Plan) -> list[FrontendListener]:
        """
        The running listeners that C{plan} does not keep.
        """
        return [
            listener
            for name, listeners in self._listeners.items()
            if name not in plan.kept
            for listener in listeners
        ]

    def _bind(self, plan: _Plan) -> None:
        """
        Start listening with the new listeners of C{plan}, except those on
        an address a listener to be stopped still holds (bound by
        L{_bindAfterStop}).

        @raise ReloadError: If one cannot listen; those started are then in
            C{plan.bound}, for L{_release}.
        """
        held = {listener.description for listener in self._stale(plan)}
        for name, listeners in plan.created.items():
            for listener in listeners:
                if listener.description in held:
                    plan.later.append(listener)
                    continue
                plan.bound.append(listener)
                try:
                    listener.setServiceParent(self)
                except ListenError as e:
                    raise ReloadError(str(e)) from e

    def _release(self, plan: _Plan) -> Deferred[None]:
        """
        Undo L{_build} and L{_bind} after a failure: stop the new listeners
        and close the new connection pools.

        @return: A L{Deferred} firing when the new listeners stopped.
        """
        stopping = [
            maybeDeferred(listener.disownServiceParent) for listener in plan.bound
        ]
        for connections in plan.connections.values():
            stopping.append(connections.close())
        return gatherResults(stopping, consumeErrors=True).addBoth(lambda _: None)

    def _commit(self, plan: _Plan) -> None:
        """
        Put C{plan} in force in one step: adopt the running backends and
        their upstream connections, keep the health checks of adopted
        backends whose check is unchanged, and switch pools and frontends.
        """
        for name, pool in plan.pools.items():
            previous = self._pools.get(name)
            if previous is not None:
                pool.adopt(previous)
            if pool.config.usesTLS and not pool.config.tls_verify:
                _log.warn(
                    "pool {pool}: tls_verify = false: the certificates of its "
                    "https backends are not verified",
                    pool=name,
                )
            new = plan.connections.get(name)
            running = self._connections.get(name)
            if new is not None and running is not None:
                new.adopt(running, pool.backends)
        for name, retired in self._connections.items():
            if name not in plan.connections:
                retired.close()
        self._retire(plan)
        self._applyChecks(plan.pools)
        self._connections = plan.connections
        self._pools.clear()
        self._pools.update(plan.pools)
        self.balancer.pools.clear()
        self.balancer.pools.update(plan.pools)
        self.balancer.applyState(os.path.basename(plan.config.source))
        for name in plan.kept:
            frontend, factory, _ = plan.frontends[name]
            if frontend.mode == "tcp":
                factory.reconfigure(frontend, self._pools)
            else:
                factory.reconfigure(frontend, _bodyLimit(frontend, self._pools))
                factory.resource = self._rootResource(
                    factory, self._pools, self._connections
                )
        self._frontends = plan.frontends
        self._drainable[:] = [
            factory for _, factory, _ in plan.frontends.values()
        ] + self._retiredFrontends
        self.balancer.frontends[:] = [
            (frontend, stats) for frontend, _, stats in plan.frontends.values()
        ]
        self.config = plan.config

    def _retire(self, plan: _Plan) -> None:
        """
        Keep the pools and frontends C{plan} replaces while they have work
        in flight, so that graceful shutdown drains and aborts it too, and
        forget those retired earlier that are now idle.

        Called by L{_commit} once backends are adopted.
        """
        current = {b for pool in plan.pools.values() for b in pool.backends}
        self._retiredPools = [
            pool
            for pool in self._retiredPools + list(self._pools.values())
            if any(b.active for b in pool.backends if b not in current)
        ]
        self._retiredFrontends = [
            factory
            for factory in self._retiredFrontends
            + [
                factory
                for name, (_, factory, _) in self._frontends.items()
                if name not in plan.kept
            ]
            if factory.openConnections()
        ]
        self._drainPools[:] = list(plan.pools.values()) + self._retiredPools

    def _firstChecks(self, plan: _Plan) -> Deferred[None]:
        """
        Run the first health check of every new backend of C{plan} (not
        adopted from the running configuration) whose pool checks actively
        and starts its backends down, each bounded by the pool's C{timeout},
        and record the results: a backend that passes is up at the switch;
        one that fails or times out is down.

        @return: A L{Deferred} that never fails and fires when every such
            check has a result.
        """
        reactor = self._reactor
        checking: list[Deferred[None]] = []
        for name, pool in plan.pools.items():
            health = pool.config.health
            if health.check == "none" or health.initial_state == "up":
                continue
            previous = self._pools.get(name)
            agent = self._agentFor(pool.config)
            for backend in pool.backends:
                if _isAdopted(backend, previous):
                    continue
                probe = probeFor(reactor, agent, pool.config, backend.config)
                if probe is None:
                    continue
                checking.append(
                    probeOnce(reactor, probe, health.timeout).addCallback(
                        _recordCheck(reactor, backend)
                    )
                )
        done = gatherResults(checking, consumeErrors=True)
        done.addErrback(
            lambda reason: _log.failure("reload: recording a first health check", reason)
        )
        return done.addCallback(lambda _: None)

    def _agentFor(self, pool: PoolConfig) -> IAgent | None:
        """
        The agent that sends the HTTP health probes of C{pool}: probes of
        https:// backends verify them as requests do. L{None} for a pool
        without HTTP checks, so that twisted.web's HTTP client is loaded
        only by a configuration that has some.
        """
        if pool.health.check != "http":
            return None
        if pool.usesTLS:
            return healthAgent(self._reactor, pool)
        if self._probeAgent is None:
            self._probeAgent = healthAgent(self._reactor)
        return self._probeAgent

    def _applyChecks(self, pools: dict[str, BackendPool]) -> None:
        """
        One health check per backend of C{pools}: an adopted backend whose
        check settings and URL are unchanged keeps its running check; the
        others get a new one; the checks of backends gone are stopped.
        """
        reactor = self._reactor
        checks: dict[tuple[str, str], _RunningCheck] = {}
        started: list[HealthCheck] = []
        for pool in pools.values():
            agent = self._agentFor(pool.config)
            for backend in pool.backends:
                slot = (pool.name, backend.name)
                key = _checkKey(pool.config, backend)
                running = self._checks.get(slot)
                if running is not None and running.backend is backend and running.key == key:
                    checks[slot] = running
                    continue
                probe = probeFor(reactor, agent, pool.config, backend.config)
                if probe is None:
                    continue
                check = HealthCheck(
                    reactor,
                    probe,
                    pool.config.health.interval,
                    _recordCheck(reactor, backend),
                    _isDisabled(backend),
                )
                checks[slot] = _RunningCheck(backend, key, check)
                started.append(check)
        for slot, running in self._checks.items():
            if checks.get(slot) is not running:
                running.check.disownServiceParent()
        self._checks = checks
        for check in started:
            check.setServiceParent(self)

    def _closeConnectionPools(self) -> Deferred[list[None]]:
        return gatherResults(
            [connections.close() for connections in self._connections.values()]
        )

    def _factoryFor(
        self,
        frontend: FrontendConfig,
        stats: FrontendStats,
        pools: dict[str, BackendPool],
        connections: dict[str, BackendConnections],
    ) -> Any:
        if frontend.mode == "tcp":
            # Imported here: only TCP (L4) frontends need it.
            from lbtwist.tcp import TCPProxyFactory

            return TCPProxyFactory(
                self._reactor, frontend, pools, stats, self._accessLog
            )
        site = HTTPFrontend(
            self._reactor,
            frontend,
            _bodyLimit(frontend, pools),
            stats,
            self._accessLog,
        )
        site.resource = self._rootResource(site, pools, connections)
        return site

    def _rootResource(
        self,
        site: HTTPFrontend,
        pools: dict[str, BackendPool],
        connections: dict[str, BackendConnections],
    ) -> PoolResource | RoutedResource:
        """
        The root resource of an HTTP frontend: its pool, forwarding with
        its policy and recording in its access log; with routes, header
        rules or request IDs, a L{RoutedResource} over each of its pools.
        """
        frontend = site.frontend
        resources = {}
        for name in frontend.pools:
            pool = pools[name]
            cookie = pool.config.sticky_cookie
            resources[name] = PoolResource(
                self._reactor,
                pool,
                connections[name],
                site.policy,
                site.record,
                None
                if cookie is None
                else StickyCookie(cookie, name, self._stickySecret()),
            )
        if (
            frontend.pool is not None
            and not frontend.routes
            and not frontend.request_headers
            and not frontend.response_headers
            and not frontend.request_id
        ):
            return resources[frontend.pool]
        return RoutedResource(self._reactor, frontend, resources, site.record)

    def _stickySecret(self) -> bytes:
        """
        The key that signs sticky cookies: C{[settings] secret}, else one
        generated once and kept in C{lbtwist.secret} next to the state file,
        so that cookies stay valid across restarts; without a state file,
        or if that file cannot be written, a random one for this process.
        """
        if self._secret is not None:
            return self._secret
        settings = self.config.settings
        if settings.secret is not None:
            self._secret = settings.secret.encode("utf-8")
            return self._secret
        if settings.state_file is not None:
            path = os.path.join(
                os.path.dirname(os.path.abspath(settings.state_file)), "lbtwist.secret"
            )
            try:
                self._secret = loadOrCreateSecret(path)
                return self._secret
            except (OSError, ValueError) as e:
                _log.warn(
                    "cannot keep the sticky cookie secret in {path}: {error}; "
                    "sticky cookies will not survive a restart",
                    path=path,
                    error=str(e),
                )
        self._secret = os.urandom(32)
        return self._secret

    # Reload

    def reload(self) -> Deferred[None]:
        """
        Re-read the configuration file and apply it as one transaction:
        build everything and bind the new listeners first, then switch; a
        failure before the switch (an invalid file, a port that cannot be
        bound) is logged and leaves the running configuration untouched.

        Reloads never overlap: one asked for while another runs (a SIGHUP
        while a listener stops) runs once after it, however many were asked
        for meanwhile.

        @return: A L{Deferred} firing with L{None} when the reload asked for
            is done, whether it succeeded or not (a failure is logged).
        """
        source = self.config.source
        if source.startswith("<"):
            _log.warn("reload: nothing to re-read (configuration from {source})", source=source)
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._reloadWaiters.append(waiter)
        if not self._reloading:
            self._nextReload()
        return waiter

    def _nextReload(self) -> None:
        """
        Run one reload for everyone waiting, then one more if more asked
        meanwhile.
        """
        self._reloading = True
        waiters, self._reloadWaiters = self._reloadWaiters, []
        reloaded = self._systemd.reload(self._reloadOnce)
        reloaded.addErrback(_logReloadFailure)

        def done(_: object) -> None:
            for waiter in waiters:
                waiter.callback(None)
            if self._reloadWaiters:
                self._nextReload()
            else:
                self._reloading = False

        reloaded.addCallback(done)

    def _reloadOnce(self) -> Deferred[None]:
        config = loadConfig(self.config.source)
        restartOnly = _restartOnly(self.config, config)
        # The admin listener and the settings keep their running values.
        config = evolve(config, admin=self.config.admin, settings=self.config.settings)
        plan = self._build(config)
        try:
            self._bind(plan)
        except ReloadError:
            # Captured here, the traceback shows where listening failed.
            failure = Failure()
            released = self._release(plan)
            released.addCallback(lambda _: failure)
            return released
        checked = self._firstChecks(plan)
        checked.addCallback(lambda _: self._switch(plan, restartOnly))
        return checked

    def _switch(self, plan: _Plan, restartOnly: Sequence[str]) -> Deferred[None]:
        """
        Put C{plan}, built and bound, in force; stop the listeners it does
        not keep and bind those that waited for them.

        @param restartOnly: The changes this reload does not apply, each
            logged as a warning.
        """
        config = plan.config
        for change in restartOnly:
            _log.warn(
                "reload: {change}; it takes effect after a restart", change=change
            )
        stale = self._stale(plan)
        listeners = {name: self._listeners[name] for name in plan.kept}
        for listener in plan.bound:
            listeners.setdefault(listener.frontend, []).append(listener)
        self._commit(plan)
        self._listeners = listeners
        for listener in plan.bound:
            listener.announce()
        # Stop listening where a frontend went away or moved; a new listener
        # on an address an old one held binds once that one stopped.
        stopped = gatherResults(
            [maybeDeferred(listener.disownServiceParent) for listener in stale]
        )

        def bindAfterStop(_: object) -> None:
            for listener in plan.later:
                try:
                    listener.setServiceParent(self)
                except ListenError as e:
                    _log.error(
                        "reload: {error}",
                        frontend=listener.frontend,
                        address=listener.description,
                        error=str(e),
                    )
                    listener.disownServiceParent()
                else:
                    listener.announce()
                    self._listeners.setdefault(listener.frontend, []).append(listener)
            _log.info("configuration reloaded: {summary}", summary=config.summary())
            self._refreezeHeap()

        return stopped.addCallback(bindAfterStop).addCallback(lambda _: None)

    # Log files

    def reopenLogs(self) -> None:
        """
        Open the access log file again by its path (after log rotation moved
        it away); a file that cannot be opened is logged, and lines keep
        going to the file open before.
        """
        if self._accessLog is None or self.config.settings.access_log == "-":
            return
        path = self.config.settings.access_log
        try:
            self._accessLog.reopen()
        except OSError as e:
            _log.error(
                "cannot reopen the access log {path}: {error}; writing on to "
                "the file open before",
                path=path,
                error=e.strerror or str(e),
            )
        else:
            _log.info("reopened the access log {path}", path=path)

    # Signals

    def installSignalHandler(self) -> None:
        """
        On SIGHUP, reopen the log files and reload; on SIGUSR1, reopen the
        log files (twistd's plugin calls this; tests need not).

        SIGHUP is handled from now on; SIGUSR1 once the service starts, as
        twistd has installed its own handler by then (which rotates its
        C{--logfile}): lbtwist's calls it after reopening the access log.
        """
        reactor = self._reactor

        def onHangup(signum: int, frame: object) -> None:
            reactor.callFromThread(self._hangup)

        signal.signal(signal.SIGHUP, onHangup)
        self._handleUSR1 = True

    def _hangup(self) -> None:
        self.reopenLogs()
        self.reload()

    # The garbage collector

    def freezeHeap(self) -> None:
        """
        Once started, and after each reload, move every object made so far
        into the garbage collector's permanent generation (C{gc.freeze}).

        The modules, the configuration and the pools live as long as the
        process, yet a full collection walks them all (some 50,000 objects
        and 20 ms, measured while proxying: every request in flight waits
        that long, which shows in the 99th percentile).  Frozen, they are
        not walked again; a reload unfreezes and collects once, so that
        what the old configuration left in reference cycles is freed.
        twistd's plugin calls this; an application embedding lbtwist decides
        for itself.
        """
        self._freezeHeap = True

    def _refreezeHeap(self) -> None:
        """
        Collect what a reload left behind, then freeze again.
        """
        if self._freezeHeap:
            gc.unfreeze()
            gc.collect()
            gc.freeze()

    def startService(self) -> None:
        """
        Start the services and, if L{installSignalHandler} was called,
        handle SIGUSR1.
        """
        super().startService()
        if self._handleUSR1:
            _reopenOnUSR1(self._reactor, self.reopenLogs)
        if self._freezeHeap:
            gc.freeze()


def _reopenOnUSR1(reactor: Any, reopen: Callable[[], object]) -> None:
    """
    On SIGUSR1, call C{reopen} in the reactor thread, then the handler
    installed before (twistd's, which rotates its C{--logfile}), if any.
    """
    previous = signal.getsignal(signal.SIGUSR1)

    def onSignal(signum: int, frame: Any) -> None:
        reactor.callFromThread(reopen)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGUSR1, onSignal)


def _bodyLimit(frontend: FrontendConfig, pools: Mapping[str, BackendPool]) -> int:
    """
    The request body limit of an HTTP frontend's connections: its default
    pool's, or without one the largest of its routes' pools (a routed
    request gets the limit of the pool it goes to, see
    L{RoutedResource.routeHead}).
    """
    if frontend.pool is not None:
        return pools[frontend.pool].config.max_body_size
    return max(pools[name].config.max_body_size for name in frontend.pools)


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
