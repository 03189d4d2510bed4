# -*- test-case-name: tests.test_config -*-
"""
lbtwist's configuration: frozen value objects, read from a TOML file or from
the quick-form command-line options, and validated before anything listens.

Every error is a L{ConfigError} whose message names the section and the key,
for example C{pool "app" backend 2: weight must be a positive integer}.
Nothing here uses a reactor; the only I/O is L{loadConfig} reading its file
(and an C{ssl:} listen description reading its certificate, as Twisted's
endpoint parser does).
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from attrs import Factory, frozen
from twisted.internet.endpoints import (
    _parseServer,
    _SystemdParser,
    serverFromString,
)

from lbtwist.accesslog import ACCESS_LOG_FORMATS, parseFormat
from lbtwist.routing import InvalidPath, normalisePath

__all__ = [
    "BackendConfig",
    "Config",
    "ConfigError",
    "FrontendConfig",
    "HeaderRules",
    "RouteConfig",
    "HEADER_PLACEHOLDERS",
    "REDIRECT_PLACEHOLDERS",
    "FORBIDDEN_RULE_HEADERS",
    "FrontendTLSConfig",
    "HealthCheckConfig",
    "PoolConfig",
    "RateLimitConfig",
    "STRATEGY_NAMES",
    "configFromOptions",
    "expandEnvironment",
    "loadConfig",
    "parseBackendSpec",
    "parseConfig",
]

STRATEGY_NAMES = (
    "round-robin",
    "weighted-round-robin",
    "least-connections",
    "random-two",
    "consistent-hash",
    "peak-ewma",
)
"""The names a pool's C{strategy} may have (see L{lbtwist.strategies})."""

_HEALTH_CHECK_KINDS = ("http", "tcp", "none")
_INITIAL_STATES = ("down", "up")
_MODES = ("http", "tcp")
_SEND_PROXY = ("none", "v1", "v2")
_TLS_VERSIONS = ("1.2", "1.3")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class ConfigError(ValueError):
    """
    The configuration is invalid or cannot be read.

    @ivar message: What is wrong, naming the section and the key, e.g.
        C{pool "app" backend 2: weight must be a positive integer}.
    @ivar source: The file the error is in, or L{None}; when given, C{str()}
        of the error begins with it.
    """

    def __init__(self, message: str, source: str | None = None) -> None:
        """
        @param message: See L{ConfigError.message}.
        @param source: See L{ConfigError.source}.
        """
        super().__init__(f"{source}: {message}" if source else message)
        self.message = message
        self.source = source


@frozen
class HealthCheckConfig:
    """
    How a pool actively checks its backends.

    @ivar check: C{"tcp"} (connect and close, the default: HAProxy's plain
        C{check}), C{"http"} (GET C{path}) or C{"none"}.  A
        C{[pool.health]} table without C{check} means C{"http"} if it sets
        C{path} or C{expect_status}, else C{"tcp"}.
    @ivar path: The path requested by HTTP checks; starts with C{"/"}.
    @ivar expect_status: Inclusive C{(low, high)} ranges of accepted statuses.
    @ivar interval: Seconds between the starts of two checks.
    @ivar timeout: Seconds one check may take before it counts as failed.
    @ivar rise: Consecutive successes that bring a down backend up.
    @ivar fall: Consecutive failed checks that bring an up backend down.
    @ivar passive_fall: Consecutive failed requests (connection failures and
        timeouts on real traffic) that bring an up backend down; 0 turns
        passive detection off.
    @ivar initial_state: C{"down"} or C{"up"}: the state of a new backend
        before its first check (with C{check = "none"} it starts up).
    """

    check: str = "tcp"
    path: str = "/healthz"
    expect_status: tuple[tuple[int, int], ...] = ((200, 399),)
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3
    passive_fall: int = 3
    initial_state: str = "down"

    def accepts(self, status: int) -> bool:
        """
        @param status: An HTTP status code from a health check response.
        @return: Whether C{status} lies in one of the C{expect_status} ranges.
        """
        return any(low <= status <= high for low, high in self.expect_status)


@frozen
class BackendConfig:
    """
    One upstream server.

    @ivar url: The URL as written, e.g. C{"http://127.0.0.1:9001"}.
    @ivar scheme: C{"http"}, C{"https"} or C{"tcp"}.
    @ivar host: Host name or IP address, without brackets for IPv6.
    @ivar port: TCP port (80, or 443 for C{https}, when the URL has none).
    @ivar name: Name within its pool; defaults to L{address}.
    @ivar weight: Relative share of the traffic, a positive integer.
    @ivar max_connections: The most requests (TCP pools: connections) in
        flight on this backend at once, or L{None} for no limit (HAProxy's
        C{maxconn} on a C{server}); when every available backend is at its
        limit, requests wait in the pool's queue.
    """

    url: str
    scheme: str
    host: str
    port: int
    name: str = Factory(lambda self: self.address, takes_self=True)
    weight: int = 1
    max_connections: int | None = None

    @property
    def address(self) -> str:
        """
        C{"host:port"}, with an IPv6 host in brackets: C{"[::1]:9001"}.
        """
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@frozen
class PoolConfig:
    """
    A named group of backends and how traffic is spread over them.

    @ivar name: The name frontends use to refer to the pool.
    @ivar backends: At least one backend, with unique names.
    @ivar strategy: One of L{STRATEGY_NAMES}.
    @ivar retries: Extra attempts on other backends.
    @ivar connect_timeout: Seconds to connect to a backend.
    @ivar response_timeout: Seconds until a backend's response headers.
    @ivar read_timeout: The longest pause, in seconds, while a backend sends
        a response body; then the client connection is aborted.
    @ivar retry_buffer: Bytes of a request body kept so that the request can
        be retried on another backend; a request whose body outgrew it is
        not retried once sent.
    @ivar max_body_size: Largest request body in bytes (larger get 413).
    @ivar rewrite_host: Send C{Host: <backend address>} instead of the
        client's C{Host}.
    @ivar max_idle_connections: Idle keep-alive connections kept per backend.
    @ivar idle_connection_timeout: Seconds an idle upstream connection is kept.
    @ivar passive_cooldown: With C{check = "none"}, seconds a backend that
        failed on real traffic is skipped.
    @ivar idle_timeout: Seconds without bytes in either direction after
        which a TCP connection or an HTTP upgrade tunnel is closed.
    @ivar send_proxy: C{"none"}, C{"v1"} or C{"v2"}: write a PROXY protocol
        header carrying the client's address to TCP backends.
    @ivar health: The active health check.
    @ivar ca_file: For C{https://} backends: a PEM file of the certificates
        to trust (resolved against the configuration file's directory), or
        L{None} for the system trust store.
    @ivar tls_verify: For C{https://} backends: verify the certificate and
        the host name; C{False} is an explicit, logged opt-out.
    @ivar hash_key: With C{strategy = "consistent-hash"}: what a request is
        placed by, C{"client_ip"}, C{"path"}, C{"header:NAME"},
        C{"cookie:NAME"} or C{"query:NAME"}.
    @ivar hash_balance_factor: With C{strategy = "consistent-hash"}: no
        backend gets more than this percentage of the average load (at
        least 100), or 0 for no bound.
    @ivar ewma_decay: With C{strategy = "peak-ewma"}: the time constant, in
        seconds, of the moving average of latency.
    @ivar sticky_cookie: The name of the cookie that keeps a client on the
        backend that first served it, or L{None} for no stickiness.
    @ivar slow_start: Seconds over which a backend that comes up ramps from
        10% to 100% of its weight; 0 for none.
    @ivar max_queue: The most requests (TCP pools: connections) that wait
        in the pool's queue while every available backend is at its
        C{max_connections} (HAProxy's C{maxqueue}); beyond it they get 503
        at once; 0 for no queue.
    @ivar queue_timeout: Seconds a request waits in the queue, then it
        gets 503 (HAProxy's C{timeout queue}).
    """

    name: str
    backends: tuple[BackendConfig, ...]
    strategy: str = "round-robin"
    retries: int = 2
    connect_timeout: float = 3.0
    response_timeout: float = 30.0
    read_timeout: float = 60.0
    retry_buffer: int = 65536
    max_body_size: int = 10485760
    rewrite_host: bool = False
    max_idle_connections: int = 512
    idle_connection_timeout: float = 60.0
    passive_cooldown: float = 10.0
    idle_timeout: float = 300.0
    send_proxy: str = "none"
    health: HealthCheckConfig = HealthCheckConfig()
    ca_file: str | None = None
    tls_verify: bool = True
    hash_key: str = "client_ip"
    hash_balance_factor: int = 125
    ewma_decay: float = 10.0
    sticky_cookie: str | None = None
    slow_start: float = 0.0
    max_queue: int = 1000
    queue_timeout: float = 5.0

    @property
    def mode(self) -> str:
        """
        C{"tcp"} if the backends are C{tcp://} URLs, else C{"http"}.
        """
        return "tcp" if self.backends[0].scheme == "tcp" else "http"

    @property
    def usesTLS(self) -> bool:
        """
        Whether any backend is an C{https://} URL.
        """
        return any(backend.scheme == "https" for backend in self.backends)


@frozen
class FrontendTLSConfig:
    """
    TLS termination on a frontend (C{[frontend.tls]}).

    @ivar certificates: PEM files (private key, certificate, chain), resolved
        against the configuration file's directory; the first one is served
        when no certificate's names match the client's server name.
    @ivar min_version: C{"1.2"} or C{"1.3"}.
    @ivar handshake_timeout: Seconds a connection has to complete the TLS
        handshake before it is closed.
    """

    certificates: tuple[str, ...]
    min_version: str = "1.2"
    handshake_timeout: float = 10.0


@frozen
class HeaderRules:
    """
    Header fields a frontend or route sets, adds or removes, on requests
    (before they go upstream) or on responses (before they go to the
    client).  Values may use the placeholders L{HEADER_PLACEHOLDERS}.

    @ivar set: C{(name, value)} pairs: the field is replaced by this value.
    @ivar add: C{(name, value)} pairs: a field line is added.
    @ivar remove: Names of fields removed.
    """

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        """
        @return: Whether there is any rule.
        """
        return bool(self.set or self.add or self.remove)


@frozen
class RouteConfig:
    """
    One C{[[frontend.route]]}: what requests (HTTP frontends) or TLS
    connections (TCP frontends, by SNI) it matches, and where they go.  The
    first matching route of a frontend wins, in file order.

    @ivar host: HTTP: host names (lower case) the C{Host} must be, port
        ignored; C{"*.example.org"} matches one label; empty: any host.
    @ivar path_prefix: HTTP: the normalised path must start with it.
    @ivar path_regex: HTTP: the normalised path must match it (re.search).
    @ivar methods: HTTP: the request method must be one of them; empty: any.
    @ivar headers: HTTP: C{(lower-case name, value)}: each field must be
        present with exactly this value.
    @ivar sni: TCP: server names (lower case; C{"*.b.example"} matches one
        label) the TLS ClientHello must carry.
    @ivar pool: Where matching requests go, or L{None} for a redirect.
    @ivar strip_prefix: HTTP: the backend sees the path without
        C{path_prefix} (at least C{"/"}).
    @ivar redirect: HTTP: answer with a redirect to this URL template
        (placeholders C{{scheme}}, C{{host}}, C{{path}}) instead of
        forwarding.
    @ivar redirect_status: HTTP: 301, 302, 307 or 308.
    @ivar request_headers: HTTP: rules applied after the frontend's.
    @ivar response_headers: HTTP: rules applied after the frontend's.
    """

    host: tuple[str, ...] = ()
    path_prefix: str | None = None
    path_regex: str | None = None
    methods: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    sni: tuple[str, ...] = ()
    pool: str | None = None
    strip_prefix: bool = False
    redirect: str | None = None
    redirect_status: int = 301
    request_headers: HeaderRules = HeaderRules()
    response_headers: HeaderRules = HeaderRules()


@frozen
class RateLimitConfig:
    """
    A token bucket per client (C{[frontend.rate_limit]}, HTTP frontends).

    @ivar requests_per_second: How fast a key's bucket refills.
    @ivar burst: A bucket's size: the requests a key may make at once.
    @ivar key: What a request is counted under: C{"client_ip"} (the
        client's address, honouring C{trusted_proxies}) or
        C{"header:NAME"} (the header's value; a request without it, or
        with an empty one, is counted under its client's address).
    @ivar max_keys: The most keys kept; beyond it the least recently seen
        key is forgotten.
    """

    requests_per_second: float
    burst: int
    key: str = "client_ip"
    max_keys: int = 100000


@frozen
class FrontendConfig:
    """
    Where clients connect, and which pool serves them.

    @ivar name: The frontend's name (C{"frontend-N"} when the file has none).
    @ivar listen: Twisted server endpoint descriptions, e.g. C{"tcp:8080"}.
    @ivar pool: The name of the pool that serves what no route matches, or
        L{None} (only with routes): HTTP answers 404, TCP closes.
    @ivar mode: C{"http"} (L7) or C{"tcp"} (L4: bytes are relayed as they are).
    @ivar header_timeout: Seconds to receive a complete request head.
    @ivar idle_timeout: Seconds a keep-alive connection may sit idle.
    @ivar body_timeout: The longest wait, in seconds, for the next bytes of a
        request body (then 408, or the connection is closed).
    @ivar min_body_rate: The slowest request body accepted, in bytes per
        second over each 10 seconds of reading (0: no minimum).
    @ivar backlog: The listen queue of the frontend's TCP endpoints (unless
        their description sets C{backlog}).
    @ivar max_header_size: Bytes of request line and headers (then 431).
    @ivar max_target_length: Bytes of request target (then 414).
    @ivar trusted_proxies: IP networks whose C{X-Forwarded-For} is kept,
        normalised (C{"10.0.0.0/8"}, C{"192.0.2.1/32"}).
    @ivar add_forwarded: Also send an RFC 7239 C{Forwarded} header upstream.
    @ivar accept_proxy: Expect a PROXY protocol (v1 or v2) header from a
        trusted balancer in front; the client address it carries is the one
        logged, forwarded and sent on.
    @ivar tls: TLS termination, or L{None} for plain connections.
    @ivar routes: The C{[[frontend.route]]}s, in file order.
    @ivar request_headers: HTTP: rules for every request, before a route's.
    @ivar response_headers: HTTP: rules for every response, before a
        route's.
    @ivar request_id: HTTP: give each request an C{X-Request-ID} (kept if
        the client sent a valid one), log it and echo it in the response.
    @ivar rate_limit: The rate limit per client, or L{None} for none.
    """

    name: str
    listen: tuple[str, ...]
    pool: str | None = None
    mode: str = "http"
    header_timeout: float = 10.0
    idle_timeout: float = 60.0
    body_timeout: float = 60.0
    min_body_rate: int = 1024
    backlog: int = 1024
    max_header_size: int = 16384
    max_target_length: int = 8192
    trusted_proxies: tuple[str, ...] = ()
    add_forwarded: bool = False
    accept_proxy: bool = False
    tls: FrontendTLSConfig | None = None
    routes: tuple[RouteConfig, ...] = ()
    request_headers: HeaderRules = HeaderRules()
    response_headers: HeaderRules = HeaderRules()
    request_id: bool = False
    rate_limit: RateLimitConfig | None = None

    @property
    def pools(self) -> tuple[str, ...]:
        """
        Every pool this frontend sends to: its own and its routes', each
        once, in order.
        """
        names = [self.pool] + [route.pool for route in self.routes]
        return tuple(dict.fromkeys(name for name in names if name is not None))


@frozen
class AdminConfig:
    """
    The admin listener: stats page, JSON API and metrics.

    @ivar listen: A Twisted server endpoint description; a non-loopback
        address requires a token.
    @ivar token: When set, every admin request needs
        C{Authorization: Bearer <token>} (or a session cookie from the
        login form).
    @ivar token_file: The file the token was read from (resolved against
        the configuration file's directory), or L{None} if it was given as
        C{token} or not at all.
    """

    listen: str = "tcp:8081:interface=127.0.0.1"
    token: str | None = None
    token_file: str | None = None


@frozen
class SettingsConfig:
    """
    Process-wide settings.

    @ivar access_log: A path, C{"-"} for standard output, or L{None} for no
        access log.
    @ivar access_log_format: C{"combined"}, C{"json"} or a format string.
    @ivar access_log_headers: Request header fields the JSON format records
        in its C{headers} object.
    @ivar state_file: Where runtime changes (drain, disable, weight) are kept;
        L{None} to keep them in memory only.
    @ivar grace_period: Seconds in-flight requests and tunnels get to finish
        when lbtwist stops (SIGTERM) before they are cut off.
    @ivar secret: The key that signs sticky cookies, or L{None} to use one
        generated and kept next to the state file.
    """

    access_log: str | None = None
    access_log_format: str = "combined"
    state_file: str | None = None
    grace_period: float = 10.0
    secret: str | None = None
    access_log_headers: tuple[str, ...] = ()


@frozen
class Config:
    """
    A whole, valid configuration.

    @ivar frontends: At least one frontend, with unique names.
    @ivar pools: At least one pool, with unique names.
    @ivar source: Where the configuration came from (a file name).
    @ivar admin: The admin listener, or L{None} for none.
    @ivar settings: Process-wide settings.
    """

    frontends: tuple[FrontendConfig, ...]
    pools: tuple[PoolConfig, ...]
    source: str = "<config>"
    admin: AdminConfig | None = None
    settings: SettingsConfig = SettingsConfig()

    def pool(self, name: str) -> PoolConfig:
        """
        @param name: A pool's name.
        @return: The pool called C{name}.
        @raise KeyError: If there is no such pool.
        """
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)

    def counts(self) -> str:
        """
        @return: How much is configured, e.g. C{"1 frontend, 1 pool, 3 backends"}.
        """
        backends = sum(len(pool.backends) for pool in self.pools)
        return ", ".join(
            [
                _plural(len(self.frontends), "frontend"),
                _plural(len(self.pools), "pool"),
                _plural(backends, "backend"),
            ]
        )

    def summary(self) -> str:
        """
        @return: One line, e.g. C{"lbtwist.toml: 1 frontend, 1 pool, 3 backends"}.
        """
        return f"{self.source}: {self.counts()}"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


# Checks: each takes a value as TOML gives it and returns the converted value,
# or raises _Invalid with a reason that completes the sentence "<key> ...".


class _Invalid(Exception):
    """
    A value failed a check; C{reason} completes the sentence C{"<key> ..."}.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_Check = Callable[[object], Any]


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid("must be a string")
    return value


def _name(value: object) -> str:
    text = _string(value)
    if not text:
        raise _Invalid("must not be empty")
    return text


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("must be true or false")
    return value


def _integer(minimum: int) -> _Check:
    """
    @return: A check for an integer (not a bool) of at least C{minimum}.
    """
    wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _Invalid(f"must be {wanted}")
        return value

    return check


def _seconds(allowZero: bool = False) -> _Check:
    """
    @return: A check for a finite number (int or float, not bool) greater
        than 0, or at least 0 if C{allowZero}; it returns a float.
    """
    wanted = ">= 0" if allowZero else "greater than 0"

    def check(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(f"must be a number {wanted}")
        number = float(value)
        if not math.isfinite(number) or number < 0 or (number == 0 and not allowZero):
            raise _Invalid(f"must be a number {wanted}")
        return number

    return check


def _choice(allowed: Sequence[str]) -> _Check:
    """
    @param allowed: The accepted strings.
    @return: A check for one of C{allowed}.
    """
    expected = ", ".join(f'"{each}"' for each in allowed)

    def check(value: object) -> str:
        text = _string(value)
        if text not in allowed:
            raise _Invalid(f'"{text}" is not one of {expected}')
        return text

    return check


def _path(value: object) -> str:
    text = _string(value)
    if not text.startswith("/"):
        raise _Invalid(f'"{text}" must start with "/"')
    return text


def _listOf(each: Callable[[str], str], allowEmpty: bool) -> _Check:
    """
    @param each: Checks and converts one string of the list.
    @param allowEmpty: Whether an empty list is valid.
    @return: A check for a string or a list of strings, returning a tuple.
    """

    def check(value: object) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise _Invalid("must be a string or a list of strings")
        if not items and not allowEmpty:
            raise _Invalid("must not be empty")
        return tuple(each(item) for item in items)

    return check


class _AnyDescriptor:
    """
    Stands in for systemd's inherited descriptors, so that a C{systemd:}
    description can be checked outside of systemd: every index and name is
    found.
    """

    def __getitem__(self, key: object) -> int:
        return 3

    def inheritedDescriptors(self) -> _AnyDescriptor:
        return self

    def inheritedNamedDescriptors(self) -> _AnyDescriptor:
        return self


class _SystemdSyntaxParser(_SystemdParser):
    """
    Twisted's C{systemd:} endpoint parser, with every descriptor available.
    """

    _sddaemon = _AnyDescriptor()  # type: ignore[assignment]


def _buildEndpoint(description: str) -> object:
    """
    Build (but do not listen on) the endpoint C{description} describes, with
    a placeholder for the reactor, as C{twistd} would.

    @raise Exception: Whatever Twisted's parser raises for a bad description.
    """
    reactor = object()
    kind, args, kwargs = _parseServer(description, None)
    if isinstance(kind, _SystemdParser):
        return _SystemdSyntaxParser().parseStreamServer(reactor, *args, **kwargs)
    return serverFromString(reactor, description)


_HOST_PORT = re.compile(r"(?:(?P<host>[^:\[\]]*)|\[(?P<ipv6>[^\]]+)\]):(?P<port>[0-9]+)")


def _suggestEndpoint(description: str) -> str | None:
    """
    The endpoint description meant by an address written the usual way:
    C{"8080"} and C{":8080"} mean C{"tcp:8080"}, C{"127.0.0.1:8080"} means
    C{"tcp:8080:interface=127.0.0.1"}, C{"[::1]:8080"} means
    C{"tcp6:8080:interface=\\:\\:1"} (and C{localhost:8080} and C{*:8080}
    likewise).

    @param description: What Twisted's parser refused.
    @return: The suggestion, or L{None} if C{description} is no such address.
    """
    if _DIGITS.fullmatch(description):
        return f"tcp:{description}"
    match = _HOST_PORT.fullmatch(description)
    if match is None:
        return None
    port, host, ipv6 = match["port"], match["host"], match["ipv6"]
    if ipv6 is not None:
        escaped = ipv6.replace(":", "\\:")
        return f"tcp6:{port}:interface={escaped}"
    if not host or host == "*":
        return f"tcp:{port}"
    if host != "localhost":
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return None
    return f"tcp:{port}:interface={host}"


def _endpoint(description: str) -> str:
    try:
        endpoint = _buildEndpoint(description)
    except Exception as e:
        suggestion = _suggestEndpoint(description)
        if suggestion is not None:
            raise _Invalid(
                f'"{description}" is not an endpoint description; '
                f'did you mean "{suggestion}"?'
            ) from None
        raise _Invalid(f'"{description}": {str(e) or type(e).__name__}') from None
    port = getattr(endpoint, "_port", None)
    if isinstance(port, int) and not 0 <= port <= 65535:
        raise _Invalid(f'"{description}": port must be 0-65535')
    return description


def isLoopbackEndpoint(description: str) -> bool:
    """
    Whether a server endpoint description listens only where other hosts
    cannot connect: a loopback interface or a UNIX socket.

    @param description: A valid server endpoint description.
    """
    endpoint = _buildEndpoint(description)
    if hasattr(endpoint, "_address") and not hasattr(endpoint, "_interface"):
        return True  # UNIX socket
    interface = getattr(endpoint, "_interface", None)
    if not isinstance(interface, str) or not interface:
        return False
    try:
        return ipaddress.ip_address(interface.split("%")[0]).is_loopback
    except ValueError:
        return interface == "localhost"


def _readToken(path: str) -> str:
    """
    Read the admin token from C{token_file}.

    @param path: The file's path.
    @return: Its content without the trailing line break.
    @raise ConfigError: If it cannot be read, is not UTF-8 or is empty.
    """
    try:
        with open(path, "rb") as f:
            token = f.read().decode("utf-8").rstrip("\r\n")
    except OSError as e:
        raise ConfigError(
            f'[admin]: token_file "{path}" cannot be read: {e.strerror or e}'
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f'[admin]: token_file "{path}" is not UTF-8 text') from None
    if not token.strip():
        raise ConfigError(f'[admin]: token_file "{path}" is empty')
    return token


def _parseAdmin(table: Mapping[str, object], directory: str = "") -> AdminConfig:
    values = _read(table, "[admin]", _ADMIN)
    if "token_file" in values:
        if "token" in values:
            raise ConfigError(
                "[admin]: token and token_file are mutually exclusive; set one"
            )
        path = _resolve(values["token_file"], directory)
        values["token_file"] = path
        values["token"] = _readToken(path)
    admin = AdminConfig(**values)
    if admin.token is not None and not admin.token:
        raise ConfigError("[admin]: token must not be empty")
    if admin.token is None and not isLoopbackEndpoint(admin.listen):
        raise ConfigError(
            f'[admin]: listen "{admin.listen}" is not a loopback address; '
            "set a token to expose the admin listener"
        )
    return admin


def _parseSettings(table: Mapping[str, object], source: str) -> SettingsConfig:
    values = _read(table, "[settings]", _SETTINGS)
    if "state_file" not in values and not source.startswith("<"):
        values["state_file"] = source + ".state.json"
    return SettingsConfig(**values)


def _headerName(text: str) -> str:
    """
    Check a header field name: a token.
    """
    if not _TOKEN.fullmatch(text):
        raise _Invalid(f'"{text}" is not a header name')
    return text


def _network(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise _Invalid(f'"{text}" is not an IP address or network') from None


_DIGITS = re.compile("[0-9]+")
_STATUS_ITEM = re.compile("([0-9]+)(?:-([0-9]+))?")


def _statusRanges(value: object) -> tuple[tuple[int, int], ...]:
    """
    Check an C{expect_status}: an int, or a string like C{"200,204,300-302"}.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _Invalid('must be a status code or a string like "200-399"')
    ranges = []
    for item in value.split(","):
        match = _STATUS_ITEM.fullmatch(item.strip())
        if match is None:
            raise _Invalid(
                f'"{value}" must be status codes and ranges like "200,204,300-399"'
            )
        low, high = int(match[1]), int(match[2] or match[1])
        if not (100 <= low <= 599 and 100 <= high <= 599):
            raise _Invalid(f'"{value}": status codes must be 100-599')
        if low > high:
            raise _Invalid(f'"{value}": range {low}-{high} is empty')
        ranges.append((low, high))
    return tuple(ranges)


def _table(header: str) -> _Check:
    """
    @param header: How the table is written in TOML, for the error message.
    @return: A check for a TOML table.
    """

    def check(value: object) -> Mapping[str, object]:
        if not isinstance(value, Mapping):
            raise _Invalid(f"must be a table, written {header}")
        return value

    return check


def _tables(header: str) -> _Check:
    """
    @param header: How the array of tables is written in TOML.
    @return: A check for a non-empty array of TOML tables.
    """

    def check(value: object) -> list[Mapping[str, object]]:
        if not isinstance(value, list) or not all(
            isinstance(i, Mapping) for i in value
        ):
            raise _Invalid(f"must be an array of tables, written {header}")
        if not value:
            raise _Invalid(f"must not be empty: add a {header} section")
        return value

    return check


_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)"
    r"(?P<path>[^?#]*)(?P<rest>[?#].*)?",
    re.DOTALL,
)
_AUTHORITY = re.compile(
    r"(?:\[(?P<ipv6>[^\]]*)\]|(?P<host>[^:\[\]]*))(?::(?P<port>[^:]*))?"
)
_HOST_NAME = re.compile(
    r"[A-Za-z0-9_]([A-Za-z0-9_-]*)(\.[A-Za-z0-9_][A-Za-z0-9_-]*)*\.?"
)


def _hostOf(ipv6: str | None, host: str) -> str:
    """
    @return: The host of an authority, without brackets.
    @raise _Invalid: If it is neither an IP address nor a host name.
    """
    if ipv6 is not None:
        try:
            return str(ipaddress.IPv6Address(ipv6))
        except ValueError:
            raise _Invalid(f'"[{ipv6}]" is not an IPv6 address') from None
    if not host:
        raise _Invalid("has no host")
    if re.fullmatch("[0-9.]+", host):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise _Invalid(f'"{host}" is not an IPv4 address') from None
    if not _HOST_NAME.fullmatch(host):
        raise _Invalid(f'"{host}" is not a host name or IP address')
    return host.lower()


def _urlParts(url: str) -> tuple[str, str, int]:
    """
    @return: C{(scheme, host, port)} of an C{http://host[:port]},
        C{https://host[:port]} or C{tcp://host:port} URL.
    @raise _Invalid: With the problem, for any other URL.
    """
    match = _URL.fullmatch(url)
    scheme = match["scheme"].lower() if match else ""
    if match is None or scheme not in ("http", "https", "tcp"):
        raise _Invalid("must be an http://, https:// or tcp:// URL")
    if "@" in match["authority"]:
        raise _Invalid("must not contain user information")
    if match["path"] not in ("", "/"):
        raise _Invalid(f'must not have a path ("{match["path"]}")')
    if match["rest"]:
        raise _Invalid("must not have a query or fragment")
    authority = _AUTHORITY.fullmatch(match["authority"])
    if authority is None:
        raise _Invalid(
            f'"{match["authority"]}" is not host[:port] '
            "(an IPv6 address goes in brackets: http://[::1]:8080)"
        )
    host = _hostOf(authority["ipv6"], authority["host"])
    port = authority["port"]
    if port is None and scheme == "tcp":
        raise _Invalid("a tcp:// URL needs a port")
    if port is None:
        return scheme, host, _DEFAULT_PORTS[scheme]
    if not _DIGITS.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise _Invalid(f'port "{port}" must be 1-65535')
    return scheme, host, int(port)


def _url(value: object) -> tuple[str, str, str, int]:
    """
    Check a backend URL.

    @return: C{(url, scheme, host, port)}.
    """
    url = _string(value)
    try:
        return (url, *_urlParts(url))
    except _Invalid as e:
        raise _Invalid(f'"{url}": {e.reason}') from None


# Sections: which keys each may have, and the check for each key.

_TOP_LEVEL = {
    "frontend": _tables("[[frontend]]"),
    "pool": _tables("[[pool]]"),
    "admin": _table("[admin]"),
    "settings": _table("[settings]"),
}

_ADMIN = {
    "listen": lambda value: _endpoint(_string(value)),
    "token": _string,
    "token_file": _string,
}

def _accessLogFormat(value: object) -> str:
    """
    Check an C{access_log_format}: C{"combined"}, C{"json"} or a format
    string with fields (see L{lbtwist.accesslog.parseFormat}).
    """
    text = _string(value)
    if text not in ACCESS_LOG_FORMATS:
        try:
            parseFormat(text)
        except ValueError as e:
            raise _Invalid(str(e)) from None
    return text


_SETTINGS = {
    "access_log": _string,
    "access_log_format": _accessLogFormat,
    "access_log_headers": _listOf(_headerName, allowEmpty=True),
    "state_file": _string,
    "secret": lambda value: _secret(_string(value)),
    "grace_period": _seconds(allowZero=True),
}

_FRONTEND = {
    "name": _name,
    "listen": _listOf(_endpoint, allowEmpty=False),
    "pool": _name,
    "mode": _choice(_MODES),
    "header_timeout": _seconds(),
    "idle_timeout": _seconds(),
    "body_timeout": _seconds(),
    "min_body_rate": _integer(0),
    "backlog": _integer(1),
    "max_header_size": _integer(1),
    "max_target_length": _integer(1),
    "trusted_proxies": _listOf(_network, allowEmpty=True),
    "add_forwarded": _boolean,
    "accept_proxy": _boolean,
    "tls": _table("[frontend.tls]"),
    "route": _tables("[[frontend.route]]"),
    "request_headers": _table("[frontend.request_headers]"),
    "response_headers": _table("[frontend.response_headers]"),
    "request_id": _boolean,
    "rate_limit": _table("[frontend.rate_limit]"),
}

_ROUTE_HTTP_KEYS = (
    "host",
    "path_prefix",
    "path_regex",
    "methods",
    "headers",
    "strip_prefix",
    "redirect",
    "redirect_status",
    "request_headers",
    "response_headers",
)

_ROUTE = {
    "host": lambda value: _listOf(_hostPattern, allowEmpty=False)(value),
    "path_prefix": lambda value: _pathPrefix(_path(value)),
    "path_regex": lambda value: _regex(_string(value)),
    "methods": lambda value: _listOf(_method, allowEmpty=False)(value),
    "headers": lambda value: _headerMatches(value),
    "sni": lambda value: _listOf(_hostPattern, allowEmpty=False)(value),
    "pool": _name,
    "strip_prefix": _boolean,
    "redirect": lambda value: _redirect(_string(value)),
    "redirect_status": lambda value: _redirectStatus(value),
    "request_headers": _table("[frontend.route.request_headers]"),
    "response_headers": _table("[frontend.route.response_headers]"),
}

_HEADER_RULES = {
    "set": lambda value: _headerValues(value, "set"),
    "add": lambda value: _headerValues(value, "add"),
    "remove": lambda value: _listOf(_removableHeaderName, allowEmpty=True)(value),
}

_FRONTEND_TLS = {
    "certificates": _listOf(_name, allowEmpty=False),
    "min_version": _choice(_TLS_VERSIONS),
    "handshake_timeout": _seconds(),
}

_POOL = {
    "name": _name,
    "strategy": _choice(STRATEGY_NAMES),
    "retries": _integer(0),
    "connect_timeout": _seconds(),
    "response_timeout": _seconds(),
    "read_timeout": _seconds(),
    "retry_buffer": _integer(0),
    "max_body_size": _integer(0),
    "rewrite_host": _boolean,
    "max_idle_connections": _integer(0),
    "idle_connection_timeout": _seconds(),
    "passive_cooldown": _seconds(allowZero=True),
    "idle_timeout": _seconds(),
    "send_proxy": _choice(_SEND_PROXY),
    "ca_file": _name,
    "tls_verify": _boolean,
    "hash_key": lambda value: _hashKey(_string(value)),
    "hash_balance_factor": _integer(0),
    "ewma_decay": _seconds(),
    "sticky_cookie": lambda value: _cookieName(_string(value)),
    "slow_start": _seconds(allowZero=True),
    "max_queue": _integer(0),
    "queue_timeout": _seconds(),
    "health": _table("[pool.health]"),
    "backend": _tables("[[pool.backend]]"),
}

_HEALTH = {
    "check": _choice(_HEALTH_CHECK_KINDS),
    "path": _path,
    "expect_status": _statusRanges,
    "interval": _seconds(),
    "timeout": _seconds(),
    "rise": _integer(1),
    "fall": _integer(1),
    "passive_fall": _integer(0),
    "initial_state": _choice(_INITIAL_STATES),
}

_BACKEND = {
    "url": _url,
    "name": _name,
    "weight": _integer(1),
    "max_connections": _integer(1),
}


def _read(
    table: Mapping[str, object],
    where: str,
    checks: Mapping[str, _Check],
    required: Sequence[str] = (),
) -> dict[str, Any]:
    """
    Check every key of a TOML table: all known, the required ones present,
    each value valid.

    @param table: The table as TOML gives it.
    @param where: The section, for error messages, e.g. C{'pool "app"'}.
    @param checks: The check for each key the section may have.
    @param required: Keys that must be present.
    @return: The converted value of each key present.
    @raise ConfigError: Naming the section and the key.
    """
    for key in table:
        if key not in checks:
            raise ConfigError(f'{where}: unknown key "{key}"')
    for key in required:
        if key not in table:
            raise ConfigError(f'{where}: missing required key "{key}"')
    values = {}
    for key, value in table.items():
        try:
            values[key] = checks[key](value)
        except _Invalid as e:
            raise ConfigError(f"{where}: {key} {e.reason}") from None
    return values


def _label(kind: str, index: int, table: Mapping[str, object]) -> str:
    """
    @return: How messages name a section: C{'pool "app"'} if it has a usable
        name, else C{"pool 2"}.
    """
    name = table.get("name")
    return f'{kind} "{name}"' if isinstance(name, str) and name else f"{kind} {index}"


def _requireUniqueNames(names: Sequence[str], kind: str, prefix: str = "") -> None:
    """
    @param names: The names of the items of one list, in order.
    @param kind: What an item is called in messages (C{"backend"}).
    @param prefix: What precedes C{kind} in messages (C{'pool "app" '}).
    @raise ConfigError: Naming the first repeated name.
    """
    first: dict[str, int] = {}
    for index, name in enumerate(names, 1):
        if name in first:
            raise ConfigError(
                f'{prefix}{kind} {index}: name "{name}" is already used by '
                f"{kind} {first[name]}"
            )
        first[name] = index


def _parseBackend(table: Mapping[str, object], where: str) -> BackendConfig:
    values = _read(table, where, _BACKEND, required=("url",))
    url, scheme, host, port = values.pop("url")
    return BackendConfig(url=url, scheme=scheme, host=host, port=port, **values)


HASH_KEY_KINDS = ("client_ip", "path")
"""The C{hash_key} values that take no name."""

HASH_KEY_PREFIXES = ("header:", "cookie:", "query:")
"""The C{hash_key} kinds followed by a name, e.g. C{header:X-User}."""

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _hashKey(text: str) -> str:
    """
    Check a C{hash_key}: C{client_ip}, C{path}, or C{header:}, C{cookie:} or
    C{query:} followed by a name (a header name must be a token).
    """
    if text in HASH_KEY_KINDS:
        return text
    for prefix in HASH_KEY_PREFIXES:
        if text.startswith(prefix) and text[len(prefix) :]:
            name = text[len(prefix) :]
            if prefix == "header:" and not _TOKEN.fullmatch(name):
                raise _Invalid(f'"{name}" is not a valid header name')
            return text
    raise _Invalid(
        f'"{text}" is not one of client_ip, path, header:NAME, cookie:NAME, '
        "query:NAME"
    )


def _secret(text: str) -> str:
    """
    Check a signing secret: at least 16 characters.
    """
    if len(text) < 16:
        raise _Invalid("must be at least 16 characters")
    return text


def _cookieName(text: str) -> str:
    """
    Check a cookie name: a token (RFC 6265).
    """
    if not _TOKEN.fullmatch(text):
        raise _Invalid(f'"{text}" is not a valid cookie name')
    return text


def _checkStrategyKeys(values: Mapping[str, object], where: str, tcp: bool) -> None:
    """
    Refuse strategy settings that the pool's strategy would ignore, and hash
    keys a TCP pool cannot read.
    """
    strategy = values.get("strategy", "round-robin")
    for key, needs in (
        ("hash_key", "consistent-hash"),
        ("hash_balance_factor", "consistent-hash"),
        ("ewma_decay", "peak-ewma"),
    ):
        if key in values and strategy != needs:
            raise ConfigError(f'{where}: {key} needs strategy = "{needs}"')
    factor = values.get("hash_balance_factor", 125)
    if factor != 0 and factor < 100:  # type: ignore[operator]
        raise ConfigError(
            f"{where}: hash_balance_factor must be 0 (no bound) or at least 100"
        )
    if tcp and values.get("hash_key", "client_ip") != "client_ip":
        raise ConfigError(
            f'{where}: hash_key "{values["hash_key"]}" needs http:// backends; '
            "a TCP pool can only hash client_ip"
        )
    if tcp and "sticky_cookie" in values:
        raise ConfigError(f"{where}: sticky_cookie needs http:// backends")
    if tcp and strategy == "peak-ewma":
        raise ConfigError(
            f'{where}: strategy "peak-ewma" needs http:// backends (it measures '
            "response latency)"
        )


def _parsePool(
    table: Mapping[str, object], index: int, directory: str = ""
) -> PoolConfig:
    where = _label("pool", index, table)
    values = _read(table, where, _POOL, required=("name", "backend"))
    healthValues = _read(values.pop("health", {}), f"{where} health", _HEALTH)
    backends = tuple(
        _parseBackend(backend, f"{where} backend {number}")
        for number, backend in enumerate(values.pop("backend"), 1)
    )
    _requireUniqueNames([b.name for b in backends], "backend", f"{where} ")
    for number, backend in enumerate(backends, 1):
        if (backend.scheme == "tcp") != (backends[0].scheme == "tcp"):
            raise ConfigError(
                f'{where} backend {number}: url "{backend.url}": the backends of '
                "a pool must all be http:// or all be tcp://"
            )
    _checkStrategyKeys(values, where, backends[0].scheme == "tcp")
    if not any(backend.max_connections is not None for backend in backends):
        for key in ("max_queue", "queue_timeout"):
            if key in values:
                raise ConfigError(
                    f"{where}: {key} needs max_connections on a backend "
                    "(without a limit nothing ever waits)"
                )
    _defaultCheck(healthValues, f"{where} health", backends[0].scheme != "tcp")
    if backends[0].scheme == "tcp":
        if healthValues["check"] == "http":
            raise ConfigError(f'{where} health: check "http" needs http:// backends')
    elif values.get("send_proxy", "none") != "none":
        raise ConfigError(f"{where}: send_proxy needs tcp:// backends")
    if not any(backend.scheme == "https" for backend in backends):
        for key in ("ca_file", "tls_verify"):
            if key in values:
                raise ConfigError(f"{where}: {key} needs https:// backends")
    if "ca_file" in values:
        written = values["ca_file"]
        values["ca_file"] = _resolve(written, directory)
        _checkTLSFile("ca", values["ca_file"], f"{where} ca_file", written)
    health = HealthCheckConfig(**healthValues)
    return PoolConfig(backends=backends, health=health, **values)


_HTTP_CHECK_KEYS = ("path", "expect_status")
"""
The C{[pool.health]} keys that only an HTTP check uses.
"""


def _defaultCheck(values: dict[str, Any], where: str, httpBackends: bool) -> None:
    """
    Choose the kind of check of a C{[pool.health]} table that does not say:
    C{"http"} if it sets an HTTP-only key (C{path}, C{expect_status}), as
    giving HAProxy's C{option httpchk} a URI implies an HTTP check, else
    C{"tcp"}, HAProxy's plain C{check}.

    @param values: The table's checked values; C{check} is set in place.
    @param where: The section, for error messages.
    @param httpBackends: Whether the pool's backends speak HTTP (a
        C{tcp://} pool only has TCP checks).
    @raise ConfigError: If an HTTP-only key is set with another C{check}
        or in a C{tcp://} pool.
    """
    given = [key for key in _HTTP_CHECK_KEYS if key in values]
    if given and not httpBackends:
        raise ConfigError(f"{where}: {given[0]} needs http:// backends")
    check = values.setdefault("check", "http" if given else "tcp")
    if given and check != "http":
        raise ConfigError(
            f'{where}: {given[0]} needs check = "http" (check is "{check}")'
        )


def _resolve(path: str, directory: str) -> str:
    """
    @return: C{path}, relative to C{directory} unless it is absolute.
    """
    return os.path.join(directory, path) if directory else path


def _checkTLSFile(kind: str, path: str, where: str, written: str) -> None:
    """
    Load a certificate file, turning its error into a L{ConfigError} like
    C{frontend "https" tls: certs/a.pem: no private key}.

    @param kind: C{"server"} (a frontend's key and certificate, see
        L{lbtwist.tls.loadServerCertificate}) or C{"ca"} (a pool's
        C{ca_file}, see L{lbtwist.tls.checkCAFile}).
    """
    # Imported here: only configurations with TLS need OpenSSL.
    from lbtwist.tls import CertificateError, checkCAFile, loadServerCertificate

    try:
        if kind == "ca":
            checkCAFile(path)
        else:
            loadServerCertificate(path)
    except CertificateError as e:
        raise ConfigError(f"{where}: {written}: {e.reason}") from None


def _parseFrontendTLS(
    table: Mapping[str, object], where: str, directory: str
) -> FrontendTLSConfig:
    where = f"{where} tls"
    values = _read(table, where, _FRONTEND_TLS, required=("certificates",))
    paths = []
    for written in values["certificates"]:
        path = _resolve(written, directory)
        _checkTLSFile("server", path, where, written)
        paths.append(path)
    values["certificates"] = tuple(paths)
    return FrontendTLSConfig(**values)


HEADER_PLACEHOLDERS = ("client_ip", "request_id", "scheme", "host")
"""The placeholders header rule values may use: C{{client_ip}} and so on."""

REDIRECT_PLACEHOLDERS = ("scheme", "host", "path")
"""The placeholders of a route's C{redirect}; C{{path}} keeps the query."""

FORBIDDEN_RULE_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
"""Hop-by-hop and framing fields: header rules may not touch them."""

_HOST_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def _hostPattern(text: str) -> str:
    """
    Check a host name a route matches: a name (lower-cased), or
    C{*.} followed by a name, which matches exactly one more label.
    """
    lowered = text.lower().rstrip(".")
    name = lowered[2:] if lowered.startswith("*.") else lowered
    if ":" in name and not name.startswith("["):
        raise _Invalid(f'"{text}" has a port; the port is ignored when matching')
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        pass
    else:
        if name != lowered:
            raise _Invalid(f'"{text}": a wildcard needs a host name, not an address')
        return name
    if not name or not all(_HOST_LABEL.fullmatch(label) for label in name.split(".")):
        raise _Invalid(f'"{text}" is not a host name or *.name')
    return lowered


def _pathPrefix(text: str) -> str:
    """
    Check a route's C{path_prefix}: it is compared with normalised paths
    (L{lbtwist.routing.normalisePath}), so it must be normalised itself.
    """
    try:
        normal = normalisePath(text)
    except InvalidPath:
        raise _Invalid(f'"{text}" has a "%" that is not followed by two hex digits') from None
    if normal != text:
        raise _Invalid(
            f'"{text}" would never match: paths are matched normalised '
            f'(write "{normal}")'
        )
    return text


def _removableHeaderName(text: str) -> str:
    """
    Check the name of a field a header rule removes: one rules may touch,
    and not C{Host} (a request needs one; C{set} may replace it).
    """
    _ruleHeaderName(text)
    if text.lower() == "host":
        raise _Invalid('cannot remove "Host" (set may replace it)')
    return text


def _isAddress(name: str) -> bool:
    """
    Whether a host pattern is an IP address (C{"192.0.2.1"}, C{"[::1]"}).
    """
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def _regex(text: str) -> str:
    """
    Check a regular expression.
    """
    try:
        re.compile(text)
    except re.error as e:
        raise _Invalid(f'"{text}" is not a valid regular expression: {e}') from None
    return text


def _method(text: str) -> str:
    """
    Check an HTTP method: a token (case matters, as in HTTP).
    """
    if not _TOKEN.fullmatch(text):
        raise _Invalid(f'"{text}" is not an HTTP method')
    return text


def _headerMatches(value: object) -> tuple[tuple[str, str], ...]:
    """
    Check a route's C{headers}: a table of header names and the exact
    values they must have.
    """
    if not isinstance(value, Mapping):
        raise _Invalid('must be a table such as { "X-Canary" = "1" }')
    pairs = []
    for name, wanted in value.items():
        if not _TOKEN.fullmatch(name):
            raise _Invalid(f'has "{name}", which is not a header name')
        if not isinstance(wanted, str):
            raise _Invalid(f'"{name}" must be a string')
        pairs.append((name.lower(), wanted))
    return tuple(pairs)


def _placeholders(text: str, allowed: Sequence[str], what: str) -> None:
    """
    Check the C{{name}} placeholders of a template (C{{{} and C{}}} are
    literal braces).

    @raise _Invalid: On an unknown placeholder, a format spec, or an
        unmatched brace.
    """
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as e:
        raise _Invalid(f'"{text}" is not a valid {what}: {e}') from None
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if field not in allowed or spec or conversion:
            known = ", ".join("{" + name + "}" for name in allowed)
            raise _Invalid(
                f'"{text}" has unknown placeholder "{{{field}}}" (placeholders: {known})'
            )


def _redirect(text: str) -> str:
    """
    Check a redirect URL template.
    """
    _placeholders(text, REDIRECT_PLACEHOLDERS, "redirect")
    if not text:
        raise _Invalid("must not be empty")
    return text


def _redirectStatus(value: object) -> int:
    """
    Check a redirect status: 301, 302, 307 or 308.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid("must be 301, 302, 307 or 308")
    if value not in (301, 302, 307, 308):
        raise _Invalid("must be 301, 302, 307 or 308")
    return value


def _ruleHeaderName(text: str) -> str:
    """
    Check the name of a field a header rule touches: a token, and not a
    hop-by-hop or framing field.
    """
    if not _TOKEN.fullmatch(text):
        raise _Invalid(f'"{text}" is not a header name')
    if text.lower() in FORBIDDEN_RULE_HEADERS:
        raise _Invalid(
            f'cannot touch "{text}": hop-by-hop and framing fields are '
            "lbtwist's to write"
        )
    return text


def _headerValues(value: object, key: str) -> tuple[tuple[str, str], ...]:
    """
    Check the C{set} or C{add} table of header rules: names and value
    templates.
    """
    if not isinstance(value, Mapping):
        raise _Invalid('must be a table such as { "X-Env" = "prod" }')
    pairs = []
    for name, template in value.items():
        _ruleHeaderName(name)
        if not isinstance(template, str):
            raise _Invalid(f'"{name}" must be a string')
        if any(c in template for c in "\r\n\0"):
            raise _Invalid(f'"{name}" must not contain line breaks or NUL')
        _placeholders(template, HEADER_PLACEHOLDERS, "header value")
        pairs.append((name, template))
    return tuple(pairs)


def _parseHeaderRules(table: Mapping[str, object], where: str) -> HeaderRules:
    """
    Parse a C{request_headers} or C{response_headers} table.
    """
    values = _read(table, where, _HEADER_RULES)
    return HeaderRules(**values)


def _usesRequestID(rules: Sequence[HeaderRules]) -> bool:
    """
    Whether any rule value uses the C{{request_id}} placeholder.
    """
    return any(
        "{request_id}" in template
        for each in rules
        for _, template in each.set + each.add
    )


def _parseRoute(
    table: Mapping[str, object],
    where: str,
    mode: str,
    pools: Mapping[str, str],
) -> RouteConfig:
    """
    Parse one C{[[frontend.route]]} of a frontend of C{mode}.
    """
    values = _read(table, where, _ROUTE)
    if mode == "tcp":
        for key in values:
            if key not in ("sni", "pool"):
                raise ConfigError(f'{where}: {key} needs mode = "http"')
        if "sni" not in values:
            raise ConfigError(f"{where}: a TCP route needs sni")
        if "pool" not in values:
            raise ConfigError(f"{where}: a TCP route needs a pool")
        for name in values["sni"]:
            if not name.startswith("*.") and _isAddress(name):
                raise ConfigError(
                    f'{where}: sni "{name}" is an IP address; TLS clients send '
                    "only host names as SNI"
                )
    elif "sni" in values:
        raise ConfigError(
            f'{where}: sni needs mode = "tcp" (an HTTP route matches host)'
        )
    if ("pool" in values) == ("redirect" in values):
        raise ConfigError(f"{where}: a route needs either pool or redirect")
    if "path_prefix" in values and "path_regex" in values:
        raise ConfigError(f"{where}: path_prefix and path_regex exclude each other")
    if values.get("strip_prefix") and "path_prefix" not in values:
        raise ConfigError(f"{where}: strip_prefix needs path_prefix")
    if "redirect_status" in values and "redirect" not in values:
        raise ConfigError(f"{where}: redirect_status needs redirect")
    if "redirect" in values:
        for key in ("strip_prefix", "request_headers"):
            if key in values:
                raise ConfigError(f"{where}: {key} does not go with redirect")
    pool = values.get("pool")
    if pool is not None:
        _checkFrontendPool(pool, mode, pools, where)
    for key in ("request_headers", "response_headers"):
        if key in values:
            values[key] = _parseHeaderRules(values[key], f"{where} {key}")
    return RouteConfig(**values)


def _checkFrontendPool(
    pool: str, mode: str, pools: Mapping[str, str], where: str
) -> None:
    """
    Check that C{pool} exists and serves C{mode}.
    """
    if pool not in pools:
        defined = ", ".join(f'"{name}"' for name in pools)
        raise ConfigError(f'{where}: pool "{pool}" is not defined (pools: {defined})')
    if pools[pool] != mode:
        scheme = "tcp://" if pools[pool] == "tcp" else "http://"
        raise ConfigError(
            f'{where}: mode "{mode}" cannot use pool "{pool}", whose backends '
            f"are {scheme} URLs"
        )


def _rateLimitKey(value: object) -> str:
    """
    Check a rate limit C{key}: C{client_ip} or C{header:NAME}.
    """
    text = _string(value)
    if text == "client_ip":
        return text
    if text.startswith("header:"):
        _headerName(text[len("header:") :])
        return text
    raise _Invalid(f'"{text}" is not "client_ip" or "header:NAME"')


_RATE_LIMIT = {
    "requests_per_second": _seconds(),
    "burst": _integer(1),
    "key": _rateLimitKey,
    "max_keys": _integer(1),
}


def _parseRateLimit(
    table: Mapping[str, object], where: str, mode: str
) -> RateLimitConfig:
    """
    @param where: The frontend's section, for error messages.
    @param mode: The frontend's mode; only HTTP frontends are limited.
    """
    where = f"{where} rate_limit"
    if mode != "http":
        raise ConfigError(
            f'{where}: needs mode "http" (TCP connections are not rate limited)'
        )
    values = _read(table, where, _RATE_LIMIT, required=("requests_per_second",))
    # One second's worth of requests at once, unless it says otherwise.
    values.setdefault("burst", max(1, math.ceil(values["requests_per_second"])))
    return RateLimitConfig(**values)


def _parseFrontend(
    table: Mapping[str, object],
    index: int,
    pools: Mapping[str, str],
    directory: str = "",
) -> FrontendConfig:
    """
    @param pools: The mode (C{"http"} or C{"tcp"}) of each pool defined, by
        name; the frontend must name one of its own mode.
    @param directory: Where relative certificate paths start.
    """
    where = _label("frontend", index, table)
    values = _read(table, where, _FRONTEND, required=("listen",))
    mode = values.get("mode", "http")
    routes = tuple(
        _parseRoute(route, f"{where} route {number}", mode, pools)
        for number, route in enumerate(values.pop("route", ()), 1)
    )
    if routes:
        values["routes"] = routes
    pool = values.get("pool")
    if pool is None and not routes:
        raise ConfigError(f'{where}: missing required key "pool"')
    if pool is not None:
        _checkFrontendPool(pool, mode, pools, where)
    for key in ("request_headers", "response_headers", "request_id"):
        if key in values and mode == "tcp":
            raise ConfigError(f'{where}: {key} needs mode = "http"')
    for key in ("request_headers", "response_headers"):
        if key in values:
            values[key] = _parseHeaderRules(values[key], f"{where} {key}")
    rules = [
        values.get("request_headers", HeaderRules()),
        values.get("response_headers", HeaderRules()),
    ]
    for route in routes:
        rules += [route.request_headers, route.response_headers]
    if _usesRequestID(rules) and not values.get("request_id", False):
        raise ConfigError(f"{where}: {{request_id}} in a header rule needs request_id = true")
    if "tls" in values:
        if mode == "tcp" and routes:
            raise ConfigError(
                f"{where}: sni routes pass TLS through untouched; they need a "
                "frontend without tls"
            )
        if mode == "tcp" and values.get("accept_proxy", False):
            raise ConfigError(
                f"{where}: accept_proxy with tls needs mode \"http\""
            )
        values["tls"] = _parseFrontendTLS(values["tls"], where, directory)
    if "rate_limit" in values:
        values["rate_limit"] = _parseRateLimit(values["rate_limit"], where, mode)
    values.setdefault("name", f"frontend-{index}")
    return FrontendConfig(**values)


_REFERENCE = re.compile(
    r"\$(?:(?P<dollar>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}"
    r"|(?P<bad>\{[^}]*\}?))"
)


def expandEnvironment(text: str, environ: Mapping[str, str]) -> str:
    """
    Expand the environment variables in one string value of the file:
    C{${NAME}} is the value of C{NAME}, C{${NAME:-default}} that value or
    C{default} if C{NAME} is unset or empty, C{$$} a literal C{$}. A C{$}
    followed by anything else stays as it is.

    @param text: A string value, as TOML gives it.
    @param environ: The environment.
    @return: C{text} expanded.
    @raise _Invalid: Naming the variable, if one without a default is not
        set, or if a C{${...}} is not a valid reference.
    """

    def replace(match: re.Match[str]) -> str:
        if match["dollar"] is not None:
            return "$"
        if match["bad"] is not None:
            raise _Invalid(
                f'"{match.group()}" is not an environment variable reference: '
                "write ${NAME} or ${NAME:-default}, and $$ for a literal $"
            )
        value = environ.get(match["name"])
        if match["default"] is not None and not value:
            return match["default"]
        if value is None:
            raise _Invalid(f"environment variable {match['name']} is not set")
        return value

    return _REFERENCE.sub(replace, text)


def _expandValue(value: object, environ: Mapping[str, str]) -> object:
    """
    @return: C{value} with the environment expanded if it is a string or a
        list of strings; any other value as it is.
    @raise _Invalid: See L{expandEnvironment}.
    """
    if isinstance(value, str):
        return expandEnvironment(value, environ)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [expandEnvironment(item, environ) for item in value]
    return value


def _expandTable(
    table: Mapping[str, object], where: str, environ: Mapping[str, str]
) -> dict[str, object]:
    """
    Expand the environment in every string value of a table and of the
    tables in it (see L{expandEnvironment}); keys are left as they are.

    @param where: How errors name the table, as L{_read} does: C{'pool
        "app"'}, C{'pool "app" backend 2'}, C{"[settings]"}.
    @raise ConfigError: Naming the section and the key.
    """
    expanded: dict[str, object] = {}
    # The name first: the labels of the sections in the table use it.
    for key in sorted(table, key=lambda key: key != "name"):
        value = table[key]
        if isinstance(value, Mapping):
            label = f"[{key}]" if where == "top level" else f"{where} {key}"
            expanded[key] = _expandTable(value, label, environ)
        elif isinstance(value, list) and value and all(
            isinstance(item, Mapping) for item in value
        ):
            expanded[key] = [
                _expandTable(
                    item,
                    (
                        _label(key, index, _expandedName(item, environ))
                        if where == "top level"
                        else f"{where} {key} {index}"
                    ),
                    environ,
                )
                for index, item in enumerate(value, 1)
            ]
        else:
            try:
                expanded[key] = _expandValue(value, environ)
            except _Invalid as e:
                raise ConfigError(f"{where}: {key}: {e.reason}") from None
    return {key: expanded[key] for key in table}


def _expandedName(
    table: Mapping[str, object], environ: Mapping[str, str]
) -> Mapping[str, object]:
    """
    @return: A table holding only the C{name} of C{table}, expanded if it
        can be, for L{_label}.
    """
    try:
        return {"name": _expandValue(table.get("name"), environ)}
    except _Invalid:
        return {}


def parseConfig(
    document: Mapping[str, object],
    source: str = "<config>",
    environ: Mapping[str, str] | None = None,
) -> Config:
    """
    Validate a parsed TOML document and build the configuration.

    The environment is expanded in its string values first (see
    L{expandEnvironment}).

    @param document: The document, as C{tomllib} returns it.
    @param source: Where it came from, kept as L{Config.source}.
    @param environ: The environment variables; L{os.environ} if L{None}.
    @return: The configuration.
    @raise ConfigError: Naming the section and key of the first problem.
    """
    document = _expandTable(
        document, "top level", os.environ if environ is None else environ
    )
    values = _read(document, "top level", _TOP_LEVEL, required=("frontend", "pool"))
    # Certificate paths are relative to the file's directory.
    directory = "" if source.startswith("<") else os.path.dirname(source)
    pools = tuple(
        _parsePool(table, index, directory)
        for index, table in enumerate(values["pool"], 1)
    )
    poolNames = [pool.name for pool in pools]
    _requireUniqueNames(poolNames, "pool")
    modes = {pool.name: pool.mode for pool in pools}
    frontends = tuple(
        _parseFrontend(table, index, modes, directory)
        for index, table in enumerate(values["frontend"], 1)
    )
    _requireUniqueNames([frontend.name for frontend in frontends], "frontend")
    admin = _parseAdmin(values["admin"], directory) if "admin" in values else None
    settings = _parseSettings(values.get("settings", {}), source)
    return Config(
        frontends=frontends, pools=pools, source=source, admin=admin, settings=settings
    )


def loadConfig(path: str, environ: Mapping[str, str] | None = None) -> Config:
    """
    Read, parse and validate a TOML configuration file, expanding the
    environment in its string values (see L{expandEnvironment}).

    @param path: The file's name; it becomes L{Config.source}.
    @param environ: The environment variables; L{os.environ} if L{None}.
    @return: The configuration.
    @raise ConfigError: With C{source} set to C{path} (so that C{str()} of
        it begins with the path), if the file cannot be read, is not TOML,
        or is not a valid configuration.
    """
    # Imported here: the quick form (--listen/--backend) reads no file.
    import tomllib

    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror or e}", path) from None
    except UnicodeDecodeError:
        raise ConfigError("cannot read: not UTF-8 text", path) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"invalid TOML: {e}", path) from None
    try:
        return parseConfig(document, source=path, environ=environ)
    except ConfigError as e:
        raise ConfigError(e.message, path) from None


def _checkOption(option: str, value: object, check: Callable[[Any], Any]) -> Any:
    """
    @return: C{check(value)}.
    @raise ConfigError: Naming the option, e.g. C{--strategy "x" is not one of ...}.
    """
    try:
        return check(value)
    except _Invalid as e:
        raise ConfigError(f"{option} {e.reason}") from None


def parseBackendSpec(spec: str, index: int) -> BackendConfig:
    """
    Parse the quick form of a backend, C{"http://127.0.0.1:9002,weight=3,name=b"}.

    @param spec: The URL, then optional C{,weight=N}, C{,name=NAME} and
        C{,max_connections=N}.
    @param index: The 1-based position of this C{--backend} option.
    @return: The backend.
    @raise ConfigError: Beginning with C{--backend "<spec>":}.
    """
    url, *options = spec.split(",")
    values: dict[str, Any] = {"url": url}
    for option in options:
        key, equals, value = (part.strip() for part in option.partition("="))
        if key not in _BACKEND or key == "url":
            raise ConfigError(f'--backend "{spec}": unknown option "{key}"')
        if not equals or key in values:
            raise ConfigError(f'--backend "{spec}": give {key}=VALUE once')
        values[key] = (
            int(value)
            if key in ("weight", "max_connections") and _DIGITS.fullmatch(value)
            else value
        )
    return _parseBackend(values, f'--backend "{spec}"')


def configFromOptions(
    listen: Sequence[str],
    backends: Sequence[str],
    strategy: str = "round-robin",
    healthPath: str | None = None,
    admin: str | None = None,
    accessLog: str | None = None,
    mode: str = "http",
) -> Config:
    """
    Build a configuration from the quick-form command-line options: one
    frontend and one pool, both called C{"default"}.

    @param listen: C{--listen} endpoint descriptions; C{("tcp:8080",)} if empty.
    @param backends: C{--backend} quick forms (see L{parseBackendSpec}).
    @param strategy: C{--strategy}, one of L{STRATEGY_NAMES}.
    @param healthPath: C{--health-path}: check over HTTP on this path; if
        L{None}, check by connecting over TCP.
    @param admin: C{--admin}: the admin listener's endpoint, if any (it must
        be a loopback address: the quick form has no token).
    @param accessLog: C{--access-log}: a path or C{"-"}, if any.
    @param mode: C{--mode}: C{"http"} or C{"tcp"} (then the backends are
        C{tcp://} URLs and the health check connects over TCP).
    @return: The configuration.
    @raise ConfigError: Naming the option.
    """
    endpoints = tuple(_checkOption("--listen", d, _endpoint) for d in listen)
    strategy = _checkOption("--strategy", strategy, _POOL["strategy"])
    mode = _checkOption("--mode", mode, _FRONTEND["mode"])
    if healthPath is not None and mode == "tcp":
        raise ConfigError("--health-path needs --mode http")
    if healthPath is None:
        health = HealthCheckConfig(check="tcp")
    else:
        health = HealthCheckConfig(
            check="http", path=_checkOption("--health-path", healthPath, _path)
        )
    if not backends:
        raise ConfigError("at least one --backend is required")
    pool = PoolConfig(
        name="default",
        backends=tuple(parseBackendSpec(s, i) for i, s in enumerate(backends, 1)),
        strategy=strategy,
        health=health,
    )
    _requireUniqueNames([b.name for b in pool.backends], "--backend")
    for number, backend in enumerate(pool.backends, 1):
        if (backend.scheme == "tcp") != (mode == "tcp"):
            wanted = "tcp://" if mode == "tcp" else "http://"
            raise ConfigError(
                f'--backend {number}: "{backend.url}" must be a {wanted} URL '
                f"with --mode {mode}"
            )
    frontend = FrontendConfig(
        name="default", listen=endpoints or ("tcp:8080",), pool="default", mode=mode
    )
    adminConfig = None
    if admin is not None:
        adminConfig = _checkOption("--admin", admin, lambda d: AdminConfig(_endpoint(d)))
        if not isLoopbackEndpoint(adminConfig.listen):
            raise ConfigError(
                f'--admin "{admin}" is not a loopback address; use a '
                "configuration file with an [admin] token to expose it"
            )
    return Config(
        frontends=(frontend,),
        pools=(pool,),
        source="<command line>",
        admin=adminConfig,
        settings=SettingsConfig(access_log=accessLog),
    )
