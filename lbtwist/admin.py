# -*- test-case-name: tests.test_admin -*-
"""
The admin listener's resources: the stats page, the JSON API and the
Prometheus metrics.

  - C{GET /}: an HTML stats page (refreshes every 5 seconds), with buttons
    that C{POST} to C{/pools/<pool>/backends/<backend>/<action>} and are
    answered with a C{303} back to C{/}.
  - C{GET /api/pools}: every pool and backend as JSON (see
    L{lbtwist.balancer.poolsJSON}); C{GET /api/pools/<pool>} and
    C{GET /api/pools/<pool>/backends/<backend>} show one of them.
  - C{POST /api/pools/<pool>/backends/<backend>/drain}, C{/disable},
    C{/enable}, C{PUT .../weight} with C{{"weight": N}} and
    C{DELETE .../overrides} (back to the configured weight and state):
    answered with the backend's JSON.  C{<backend>} is a backend's name or
    its C{host:port} (C{127.0.0.1:9102}, C{[::1]:9001}), as log lines show
    it.
  - C{GET /metrics}: the Prometheus text format.

Errors are JSON, C{{"error": "..."}}: 404 for an unknown path, pool or
backend, 400 for a bad body or weight, 405 for a wrong method, 401 for a
missing or wrong token, 403 for a form or API post from another origin
(a web page cannot make the browser change lbtwist's backends) and 409 for
a weight on a pool whose strategy ignores weights or an address shared by
several backends.  Nothing changes on any error.

With a token, every request needs C{Authorization: Bearer <token>} or a
session cookie.  A browser that asks for a page without either gets a
small login form (status 401); C{POST /login} with the right token sets
a signed session cookie (C{Secure}, C{HttpOnly}, C{SameSite=Strict}) that
expires after L{SESSION_SECONDS}, and
C{POST /logout} removes it.  API clients keep using the bearer token and
get JSON 401s.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import html
import ipaddress
import json
import os
import time
from collections.abc import Callable, Sequence
from urllib.parse import quote, urlsplit

from attrs import frozen
from prometheus_client.registry import CollectorRegistry
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.logger import Logger
from twisted.web.http import Request
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import Site

import lbtwist
from lbtwist.backend import CHECK_HISTORY, Backend, BackendState
from lbtwist.balancer import (
    Ambiguous,
    Balancer,
    NotFound,
    WeightIgnored,
    backendJSON,
    poolJSON,
    poolsJSON,
)
from lbtwist.config import FrontendConfig
from lbtwist.hashkey import keyReader
from lbtwist.metrics import renderMetrics
from lbtwist.pool import BackendPool
from lbtwist.stats import STATUS_CLASSES, FrontendStats

__all__ = [
    "ACTIONS",
    "AdminSite",
    "REFRESH_SECONDS",
    "SESSION_COOKIE",
    "SESSION_SECONDS",
    "Sessions",
    "adminResource",
    "renderLoginPage",
    "renderStatsPage",
]

_log = Logger()

REFRESH_SECONDS = 5
"""How often the stats page reloads itself."""

ACTIONS = ("drain", "disable", "enable")
"""The operations the page's buttons and the API's C{POST}s name."""

_FORM_ACTIONS = ACTIONS + ("reset",)
"""The page's buttons: L{ACTIONS}, and C{reset}, which does what the API's
C{DELETE .../overrides} does."""

SESSION_COOKIE = b"lbtwist_session"
"""The name of the session cookie the login form sets."""

SESSION_SECONDS = 12 * 3600
"""How long a session cookie is valid after the login."""

_JSON = b"application/json"
_HTML = b"text/html; charset=utf-8"
_PAGE_POLICY = (
    b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    b"frame-ancestors 'none'; base-uri 'none'"
)


def _jsonBody(value: object) -> bytes:
    """
    @param value: A JSON-serialisable value.
    @return: It as indented UTF-8 JSON with a final newline.
    """
    return json.dumps(value, indent=2).encode("utf-8") + b"\n"


def _respond(request: IRequest, code: int, contentType: bytes, body: bytes) -> bytes:
    """
    Set the status and the headers every admin response has.

    @param request: The request.
    @param code: The status code.
    @param contentType: The C{Content-Type}.
    @param body: The body.
    @return: C{body}, for C{render} to return.
    """
    request.setResponseCode(code)
    request.setHeader(b"content-type", contentType)
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-content-type-options", b"nosniff")
    return body


def _json(request: IRequest, value: object, code: int = 200) -> bytes:
    """
    Answer with JSON.

    @param request: The request.
    @param value: What to send.
    @param code: The status code.
    @return: The body.
    """
    return _respond(request, code, _JSON, _jsonBody(value))


def _error(request: IRequest, code: int, message: str) -> bytes:
    """
    Answer with a JSON error, C{{"error": message}}.

    @param request: The request.
    @param code: The status code.
    @param message: What went wrong.
    @return: The body.
    """
    return _json(request, {"error": message}, code)


def _methodNotAllowed(request: IRequest, allowed: Sequence[bytes]) -> bytes:
    """
    Answer 405 with an C{Allow} header.

    @param request: The request.
    @param allowed: The methods this URL accepts.
    @return: The body.
    """
    request.setHeader(b"allow", b", ".join(allowed))
    method = request.method.decode("ascii", "replace")
    names = ", ".join(each.decode("ascii") for each in allowed)
    return _error(request, 405, f"method {method} not allowed here (allowed: {names})")


def _isRead(request: IRequest) -> bool:
    """
    @param request: A request.
    @return: Whether it is a C{GET} or a C{HEAD}.
    """
    return request.method in (b"GET", b"HEAD")


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _sameOrigin(request: IRequest) -> bool:
    """
    Whether a request that changes something may come from where it comes
    from: it has no C{Origin} header (not a browser), or its C{Origin} has
    the host and port of its C{Host} header (one of our own pages).

    @param request: The request.
    """
    origin = request.getHeader(b"origin")
    if origin is None:
        return True
    host = request.getHeader(b"host")
    if host is None:
        return False
    try:
        came = urlsplit(origin.decode("ascii"))
        here = urlsplit("//" + host.decode("ascii"))
        default = _DEFAULT_PORTS.get(came.scheme)
        return (
            came.hostname is not None
            and came.hostname == here.hostname
            and (came.port or default) == (here.port or default)
        )
    except (UnicodeDecodeError, ValueError):
        return False


def _names(segments: Sequence[bytes]) -> list[str]:
    """
    @param segments: Path segments (already percent-decoded).
    @return: The segments as text.
    """
    return [segment.decode("utf-8", "replace") for segment in segments]


class _JSONError(Resource):
    """
    Answers every request with one JSON error.
    """

    isLeaf = True

    def __init__(
        self, code: int, message: str, headers: dict[bytes, bytes] | None = None
    ) -> None:
        """
        @param code: The status code.
        @param message: The error message.
        @param headers: More response headers.
        """
        super().__init__()
        self._code = code
        self._message = message
        self._headers = dict(headers or {})

    def render(self, request: IRequest) -> bytes:
        """
        Answer with the error.

        @param request: Any request.
        @return: The body.
        """
        for name, value in self._headers.items():
            request.setHeader(name, value)
        return _error(request, self._code, self._message)


class _Directory(Resource):
    """
    A resource with fixed children that answers unknown paths with a JSON
    404.
    """

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        """
        @param path: A path segment that is not one of the children.
        @param request: The request.
        @return: A JSON 404.
        """
        return _JSONError(
            404, f"no such page: {request.path.decode('utf-8', 'replace')}"
        )

    def render(self, request: IRequest) -> bytes:
        """
        Answer a request for the directory itself with a JSON 404.

        @param request: The request.
        @return: The body.
        """
        return _error(
            request, 404, f"no such page: {request.path.decode('utf-8', 'replace')}"
        )


class Sessions:
    """
    Signed, expiring session cookies for browsers that logged in with the
    admin token.

    A cookie value is C{<expiry>.<nonce>.<signature>}: the expiry as a Unix
    time, a random nonce, and an HMAC-SHA256 of both under a key that is
    random per process, so a restart (not a reload) ends every session and
    nothing needs to be kept on disk.  The expiry is checked here, whatever
    the browser does with C{Max-Age}.
    """

    def __init__(
        self,
        clock: IReactorTime,
        lifetime: float = SESSION_SECONDS,
        key: bytes | None = None,
    ) -> None:
        """
        @param clock: The time source for expiry.
        @param lifetime: How many seconds a session lasts.
        @param key: The HMAC key; 32 random bytes by default.
        """
        self._clock = clock
        self.lifetime = lifetime
        self._key = os.urandom(32) if key is None else key

    def _sign(self, payload: bytes) -> bytes:
        """
        @param payload: C{<expiry>.<nonce>}.
        @return: Its signature, in hex.
        """
        return hmac.new(self._key, payload, hashlib.sha256).hexdigest().encode()

    def issue(self) -> bytes:
        """
        @return: A new cookie value, valid for L{lifetime} seconds from now.
        """
        expiry = int(self._clock.seconds() + self.lifetime)
        payload = b"%d.%s" % (expiry, os.urandom(9).hex().encode())
        return payload + b"." + self._sign(payload)

    def valid(self, value: bytes) -> bool:
        """
        @param value: A cookie value a browser sent.
        @return: Whether it is one of ours (its signature checks) and has
            not expired.
        """
        payload, _, signature = value.rpartition(b".")
        expiry, _, _ = payload.partition(b".")
        if not expiry.isdigit():
            return False
        if not hmac.compare_digest(signature, self._sign(payload)):
            return False
        return int(expiry) > self._clock.seconds()


def _cookie(request: IRequest, value: bytes, maxAge: int) -> None:
    """
    Set the session cookie: C{Secure}, C{HttpOnly}, C{SameSite=Strict}, for
    the whole admin listener.  Browsers keep a C{Secure} cookie from an
    HTTPS page or a loopback one (C{http://127.0.0.1}, C{http://localhost}):
    the admin listener is one or the other unless it is exposed without TLS,
    which the login page warns about (L{_secureContext}).

    @param request: The response's request.
    @param value: The cookie value; empty to remove it.
    @param maxAge: Its lifetime in seconds; 0 removes it.
    """
    cookie = SESSION_COOKIE + b"=" + value + b"; Path=/; Max-Age=%d" % (maxAge,)
    cookie += b"; Secure; HttpOnly; SameSite=Strict"
    request.responseHeaders.addRawHeader(b"set-cookie", cookie)


def _secureContext(request: IRequest) -> bool:
    """
    Whether a browser treats the page as a secure context, where it keeps
    C{Secure} cookies: served over TLS, or from a loopback host
    (C{localhost}, C{*.localhost}, C{127.0.0.0/8}, C{[::1]}).

    @param request: The request for the page.
    """
    if request.isSecure():
        return True
    host = (request.getHeader(b"host") or b"").decode("latin-1").lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host
    else:
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_PLAIN_HTTP_WARNING = (
    "This page is served over plain HTTP to another host: browsers keep the "
    "login cookie only over HTTPS or on localhost. Serve the admin listener "
    "with an ssl: endpoint."
)


def _client(request: IRequest) -> str:
    """
    @param request: A request.
    @return: The address it came from, for the log.
    """
    peer = request.getClientAddress()
    return str(getattr(peer, "host", peer))


def _wantsPage(request: IRequest, path: bytes) -> bool:
    """
    Whether a request without credentials comes from a browser that wants
    a page (and should get the login form rather than a JSON 401).

    @param request: The request.
    @param path: Its first path segment.
    """
    accept = request.getHeader(b"accept") or b""
    return (
        _isRead(request)
        and path not in (b"api", b"metrics")
        and b"text/html" in accept.lower()
    )


class _Login(Resource):
    """
    C{/login}: C{GET} shows the login form, C{POST} with C{token=...} (the
    form's body) checks the token and sets the session cookie.
    """

    isLeaf = True

    def __init__(self, token: bytes, sessions: Sessions) -> None:
        """
        @param token: The admin token.
        @param sessions: Where session cookies come from.
        """
        super().__init__()
        self._token = token
        self._sessions = sessions

    def render(self, request: IRequest) -> bytes:
        """
        Show the form, or log in.

        @param request: The request.
        @return: The body.
        """
        if request.postpath not in ([], [b""]):
            return _error(
                request, 404, f"no such page: {request.path.decode('utf-8', 'replace')}"
            )
        if _isRead(request):
            return _loginPage(request, 200)
        if request.method != b"POST":
            return _methodNotAllowed(request, [b"GET", b"HEAD", b"POST"])
        if not _sameOrigin(request):
            return _error(request, 403, "cross-origin request refused")
        given = (request.args or {}).get(b"token", [b""])[0].strip()
        if not given or not hmac.compare_digest(given, self._token):
            _log.warn(
                "admin: login with a wrong token from {client}",
                client=_client(request),
            )
            return _loginPage(request, 401, "Wrong token.")
        _log.info("admin: login from {client}", client=_client(request))
        _cookie(request, self._sessions.issue(), int(self._sessions.lifetime))
        request.setHeader(b"location", b"/")
        return _respond(request, 303, b"text/plain; charset=utf-8", b"See /\n")


class _Logout(Resource):
    """
    C{POST /logout}: remove the session cookie and go to the login form.
    """

    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        """
        Log out.

        @param request: The request.
        @return: The body.
        """
        if request.method != b"POST":
            return _methodNotAllowed(request, [b"POST"])
        if not _sameOrigin(request):
            return _error(request, 403, "cross-origin request refused")
        _cookie(request, b"", 0)
        request.setHeader(b"location", b"/login")
        return _respond(request, 303, b"text/plain; charset=utf-8", b"See /login\n")


class _LoginForm(Resource):
    """
    The login form, status 401, for a browser without credentials.
    """

    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        """
        @param request: The request.
        @return: The login page.
        """
        return _loginPage(request, 401)


def _loginPage(request: IRequest, code: int, problem: str = "") -> bytes:
    """
    Answer with the login page.

    @param request: The request.
    @param code: The status code.
    @param problem: What went wrong with the last attempt, or C{""}.
    @return: The body.
    """
    request.setHeader(b"content-security-policy", _PAGE_POLICY)
    warning = "" if _secureContext(request) else _PLAIN_HTTP_WARNING
    page = renderLoginPage(problem, warning)
    return _respond(request, code, _HTML, page.encode("utf-8"))


class _TokenGuard(_Directory):
    """
    The root of the admin tree when a token is set: every request needs
    C{Authorization: Bearer <token>} or a valid session cookie, except the
    login and logout pages.
    """

    def __init__(self, token: str, sessions: Sessions) -> None:
        """
        @param token: The token requests must present.
        @param sessions: Checks session cookies.
        """
        super().__init__()
        self._token = token.encode("utf-8")
        self._sessions = sessions
        self._login = _Login(self._token, sessions)
        self._logout = _Logout()

    def _refusal(self, request: IRequest) -> str | None:
        """
        @param request: The request.
        @return: Why the request is refused, or L{None} if its token or its
            session cookie is right.
        """
        header = request.getHeader(b"authorization")
        if header is None:
            cookie = request.getCookie(SESSION_COOKIE)
            if cookie is not None and self._sessions.valid(cookie):
                return None
            return "missing bearer token"
        scheme, _, given = header.strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return "missing bearer token"
        if not hmac.compare_digest(given.strip(), self._token):
            return "invalid token"
        return None

    def getChildWithDefault(self, path: bytes, request: IRequest) -> IResource:
        """
        Check the token or session before finding the child.

        @param path: The first path segment.
        @param request: The request.
        @return: The child, the login form, or a 401 resource.
        """
        if path == b"login":
            return self._login
        if path == b"logout":
            return self._logout
        refusal = self._refusal(request)
        if refusal is not None:
            if refusal != "invalid token" and _wantsPage(request, path):
                return _LoginForm()
            challenge = b'Bearer realm="lbtwist"'
            if refusal == "invalid token":
                challenge += b', error="invalid_token"'
            return _JSONError(401, refusal, {b"www-authenticate": challenge})
        child: IResource = super().getChildWithDefault(path, request)
        return child

    def render(self, request: IRequest) -> bytes:
        """
        Refuse a request that has no path segment at all.

        @param request: The request.
        @return: The body.
        """
        request.setHeader(b"www-authenticate", b'Bearer realm="lbtwist"')
        return _error(request, 401, "missing bearer token")


class MetricsResource(Resource):
    """
    C{GET /metrics}: the Prometheus text format.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        """
        @param registry: The registry to render (see
            L{lbtwist.metrics.metricsRegistry}).
        """
        super().__init__()
        self._registry = registry

    def render(self, request: IRequest) -> bytes:
        """
        Render the metrics.

        @param request: The request.
        @return: The body.
        """
        if not _isRead(request):
            return _methodNotAllowed(request, [b"GET", b"HEAD"])
        body, contentType = renderMetrics(self._registry)
        return _respond(request, 200, contentType.encode("ascii"), body)


class _Operations:
    """
    The runtime operations shared by the JSON API and the page's forms.
    """

    def __init__(self, balancer: Balancer) -> None:
        """
        @param balancer: The balancer to operate on.
        """
        self._operations: dict[str, Callable[[str, str], Backend]] = {
            "drain": balancer.drain,
            "disable": balancer.disable,
            "enable": balancer.enable,
            "reset": balancer.clearOverrides,
        }

    def run(self, action: str, pool: str, backend: str) -> Backend:
        """
        Run one operation.

        @param action: One of L{_FORM_ACTIONS}.
        @param pool: The pool's name.
        @param backend: The backend's name or address.
        @return: The backend.
        @raise NotFound: For an unknown pool or backend, or L{Ambiguous}
            for an address several backends share.
        """
        return self._operations[action](pool, backend)


@frozen
class _ImaginedRequest:
    """
    The parts of a request a pool's key is read from, as the C{explain}
    API's query describes them.
    """

    clientAddress: IAddress | None
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...]


def _imagine(args: dict[bytes, list[bytes]]) -> tuple[_ImaginedRequest, str | None]:
    """
    Make up the request the C{explain} API's query describes:
    C{client_ip}, C{path} (with its query), C{header.NAME}, C{cookie.NAME}
    and C{sticky} (the backend a valid sticky cookie would name).

    @return: The request and the sticky backend's name.
    @raise ValueError: On a parameter that is none of these, or a bad
        address.
    """
    client: IAddress | None = None
    target = b"/"
    headers: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] = []
    sticky = None
    for name, values in sorted(args.items()):
        value = values[-1]
        if name == b"client_ip":
            text = value.decode("ascii", "replace")
            try:
                parsed = ipaddress.ip_address(text)
            except ValueError:
                raise ValueError(f'client_ip "{text}" is not an IP address') from None
            kind = IPv6Address if parsed.version == 6 else IPv4Address
            client = kind("TCP", text, 0)
        elif name == b"path":
            if not value.startswith(b"/"):
                raise ValueError("path must start with /")
            target = value
        elif name.startswith(b"header.") and len(name) > 7:
            headers.append((name[7:], value))
        elif name.startswith(b"cookie.") and len(name) > 7:
            cookies.append(name[7:] + b"=" + value)
        elif name == b"sticky":
            sticky = value.decode("utf-8", "replace")
        elif name != b"key":
            raise ValueError(
                f'unknown parameter "{name.decode("utf-8", "replace")}": use key, '
                "client_ip, path, header.NAME, cookie.NAME or sticky"
            )
    if cookies:
        headers.append((b"Cookie", b"; ".join(cookies)))
    return _ImaginedRequest(client, target, tuple(headers)), sticky


def explainJSON(
    pool: BackendPool, now: float, args: dict[bytes, list[bytes]]
) -> dict[str, object]:
    """
    Say which backend a request would get now, and why, without sending
    traffic or moving the pool's strategy on (a copy of it chooses).

    @param pool: The pool.
    @param now: The current time.
    @param args: The query: C{key} (the hash key itself) or the request's
        attributes (see L{_imagine}).
    @return: The choice, the key it was made by, and each backend's state,
        effective weight and load.
    @raise ValueError: On a bad query.
    """
    request, sticky = _imagine(args)
    config = pool.config
    key: bytes | None = None
    if b"key" in args:
        key = args[b"key"][-1]
    elif config.strategy == "consistent-hash":
        key = keyReader(config.hash_key)(request)
    choice = pool.choose(
        now, (), key, sticky, strategy=copy.deepcopy(pool.strategy)
    )
    if choice is not None:
        why = choice.why
    elif pool.canQueue(now):
        why = (
            f'it would wait in the queue of pool "{pool.name}" '
            f"({len(pool.queue)} waiting): no available backend is below "
            "its max_connections, or others wait before it"
        )
    else:
        why = pool.describeUnavailable()
    return {
        "pool": pool.name,
        "strategy": config.strategy,
        "hash_key": config.hash_key if config.strategy == "consistent-hash" else None,
        "key": None if key is None else key.decode("utf-8", "replace"),
        "sticky": sticky,
        "backend": None if choice is None else choice.backend.name,
        "why": why,
        "backends": [
            {
                "name": backend.name,
                "address": backend.address,
                "state": backend.state.value,
                "available": backend.available(now),
                "weight": backend.weight,
                "effective_weight": round(backend.effectiveWeight, 3),
                "active": backend.active,
                "max_connections": backend.maxConnections,
            }
            for backend in pool.backends
        ],
    }


class PoolsAPI(Resource):
    """
    C{/api/pools} and below: the JSON API.
    """

    isLeaf = True

    def __init__(self, balancer: Balancer, clock: IReactorTime) -> None:
        """
        @param balancer: The balancer to show and operate on.
        @param clock: The time source.
        """
        super().__init__()
        self._balancer = balancer
        self._clock = clock
        self._operations = _Operations(balancer)

    def render(self, request: IRequest) -> bytes:
        """
        Route the request by the rest of its path.

        @param request: The request.
        @return: The body.
        """
        segments = list(request.postpath)
        if segments and segments[-1] == b"":
            segments.pop()
        names = _names(segments)
        now = self._clock.seconds()
        if not names:
            if not _isRead(request):
                return _methodNotAllowed(request, [b"GET", b"HEAD"])
            return _json(request, poolsJSON(self._balancer, now))
        if len(names) == 1:
            if not _isRead(request):
                return _methodNotAllowed(request, [b"GET", b"HEAD"])
            pool = self._balancer.pools.get(names[0])
            if pool is None:
                return _error(request, 404, f'unknown pool "{names[0]}"')
            overrides = self._balancer.overrides().get(pool.name)
            return _json(request, poolJSON(pool, now, overrides))
        if len(names) == 2 and names[1] == "explain":
            if not _isRead(request):
                return _methodNotAllowed(request, [b"GET", b"HEAD"])
            pool = self._balancer.pools.get(names[0])
            if pool is None:
                return _error(request, 404, f'unknown pool "{names[0]}"')
            try:
                return _json(request, explainJSON(pool, now, request.args))
            except ValueError as e:
                return _error(request, 400, str(e))
        if len(names) in (3, 4) and names[1] == "backends":
            return self._backend(request, names[0], names[2], names[3:])
        return _error(
            request, 404, f"no such API path: {request.path.decode('utf-8', 'replace')}"
        )

    def _backend(
        self, request: IRequest, pool: str, name: str, action: list[str]
    ) -> bytes:
        """
        Show a backend, or run an operation on it.

        @param request: The request.
        @param pool: The pool's name.
        @param name: The backend's name or address.
        @param action: C{[]} to show it, or one of L{ACTIONS}, C{"weight"}
            or C{"overrides"}.
        @return: The body.
        """
        if not action:
            allowed = [b"GET", b"HEAD"]
        elif action[0] in ACTIONS:
            allowed = [b"POST"]
        elif action[0] == "weight":
            allowed = [b"PUT"]
        elif action[0] == "overrides":
            allowed = [b"DELETE"]
        else:
            return _error(request, 404, f'no such operation: "{action[0]}"')
        if request.method not in allowed:
            return _methodNotAllowed(request, allowed)
        if action and not _sameOrigin(request):
            return _error(request, 403, "cross-origin request refused")
        try:
            backend = self._balancer.backend(pool, name)
            if action and action[0] == "weight":
                weight = _weightFromJSON(request.content.read())
                self._balancer.setWeight(pool, name, weight)  # type: ignore[arg-type]
            elif action and action[0] == "overrides":
                self._operations.run("reset", pool, name)
            elif action:
                self._operations.run(action[0], pool, name)
        except Ambiguous as e:
            return _error(request, 409, e.message)
        except NotFound as e:
            return _error(request, 404, e.message)
        except WeightIgnored as e:
            return _error(request, 409, e.message)
        except ValueError as e:
            return _error(request, 400, str(e))
        override = self._balancer.override(backend)
        return _json(request, backendJSON(backend, self._clock.seconds(), override))


def _weightFromJSON(body: bytes) -> object:
    """
    Read the weight from a C{PUT .../weight} body, C{{"weight": N}}.

    @param body: The request body.
    @return: The weight, not checked yet (L{Balancer.setWeight} does).
    @raise ValueError: If the body is not such an object.
    """
    try:
        document = json.loads(body)
    except ValueError:
        raise ValueError('the body must be JSON like {"weight": 3}') from None
    if not isinstance(document, dict) or "weight" not in document:
        raise ValueError('the body must be JSON like {"weight": 3}')
    weight: object = document["weight"]
    return weight


class FormActions(Resource):
    """
    C{POST /pools/<pool>/backends/<backend>/<action>}: the stats page's
    buttons; answered with a C{303} to the page.
    """

    isLeaf = True

    def __init__(self, balancer: Balancer) -> None:
        """
        @param balancer: The balancer to operate on.
        """
        super().__init__()
        self._operations = _Operations(balancer)

    def render(self, request: IRequest) -> bytes:
        """
        Run the operation the path names and redirect to the page.

        @param request: The request.
        @return: The body.
        """
        names = _names(request.postpath)
        if len(names) != 4 or names[1] != "backends" or names[3] not in _FORM_ACTIONS:
            return _error(
                request, 404, f"no such page: {request.path.decode('utf-8', 'replace')}"
            )
        if request.method != b"POST":
            return _methodNotAllowed(request, [b"POST"])
        if not _sameOrigin(request):
            return _error(request, 403, "cross-origin request refused")
        try:
            self._operations.run(names[3], names[0], names[2])
        except Ambiguous as e:
            return _error(request, 409, e.message)
        except NotFound as e:
            return _error(request, 404, e.message)
        request.setHeader(b"location", b"/")
        return _respond(request, 303, b"text/plain; charset=utf-8", b"See /\n")


class StatsPage(Resource):
    """
    C{GET /}: the HTML stats page.
    """

    isLeaf = True

    def __init__(
        self,
        balancer: Balancer,
        clock: IReactorTime,
        started: float,
        logout: bool = False,
    ) -> None:
        """
        @param balancer: The balancer to show.
        @param clock: The time source.
        @param started: When lbtwist started, for the uptime.
        @param logout: Whether the page has a log-out button (with a token).
        """
        super().__init__()
        self._balancer = balancer
        self._clock = clock
        self._started = started
        self._logout = logout

    def render(self, request: IRequest) -> bytes:
        """
        Render the page.

        @param request: The request.
        @return: The body.
        """
        if request.postpath not in ([], [b""]):
            return _error(
                request, 404, f"no such page: {request.path.decode('utf-8', 'replace')}"
            )
        if not _isRead(request):
            return _methodNotAllowed(request, [b"GET", b"HEAD"])
        request.setHeader(b"content-security-policy", _PAGE_POLICY)
        page = renderStatsPage(
            self._balancer, self._clock.seconds(), self._started, self._logout
        )
        return _respond(request, 200, _HTML, page.encode("utf-8"))


def adminResource(
    balancer: Balancer,
    clock: IReactorTime,
    registry: CollectorRegistry,
    token: str | None,
    started: float | None = None,
    sessions: Sessions | None = None,
) -> IResource:
    """
    The root of the admin listener's resource tree.

    @param balancer: The running balancer.
    @param clock: The time source (never the global reactor).
    @param registry: The metrics registry (see
        L{lbtwist.metrics.metricsRegistry}).
    @param token: When set, every request needs
        C{Authorization: Bearer <token>} or a session cookie from the login
        form.
    @param started: When lbtwist started, for the uptime on the page;
        defaults to now.
    @param sessions: Issues and checks session cookies (with a token); a
        new L{Sessions} on C{clock} by default.
    @return: The resource to serve at C{/}.
    """
    if started is None:
        started = clock.seconds()
    if token is None:
        root = _Directory()
    else:
        root = _TokenGuard(token, sessions or Sessions(clock))
    root.putChild(b"", StatsPage(balancer, clock, started, logout=token is not None))
    root.putChild(b"metrics", MetricsResource(registry))
    root.putChild(b"pools", FormActions(balancer))
    api = _Directory()
    api.putChild(b"pools", PoolsAPI(balancer, clock))
    root.putChild(b"api", api)
    return root


class AdminSite(Site):
    """
    The admin listener's site: quiet, no access log.
    """

    noisy = False

    def log(self, request: Request) -> None:
        """
        Log nothing.
        """


# The stats page.

_STYLE = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f3f5f8; color: #1f2933;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue",
    Arial, sans-serif; }
header { background: #1e3a5f; color: #fff; padding: 12px 16px;
  display: flex; flex-wrap: wrap; align-items: baseline; gap: 6px 24px; }
header h1 { margin: 0; font-size: 20px; font-weight: 650; letter-spacing: .01em; }
header h1 .version { font-size: 13px; font-weight: 400; color: #b7c8de;
  margin-left: 6px; }
header .facts { color: #d5e0ee; font-size: 13px; }
header .facts b { color: #fff; font-weight: 600; }
main { padding: 16px 16px 8px; }
section { margin-bottom: 22px; }
h2 { font-size: 16px; margin: 0 0 6px; font-weight: 650; }
h2 .sub { font-size: 13px; font-weight: 400; color: #52606d; margin-left: 8px; }
table { border-collapse: collapse; width: 100%; background: #fff;
  border: 1px solid #d9dee5; box-shadow: 0 1px 2px rgba(16, 24, 40, .06); }
th, td { padding: 5px 8px; border-bottom: 1px solid #e6e9ee; text-align: left;
  white-space: nowrap; vertical-align: middle; }
thead th { background: #e8edf3; color: #3e4c59; font-size: 11.5px; font-weight: 650;
  text-transform: uppercase; letter-spacing: .04em; border-bottom: 1px solid #d0d7e0; }
thead tr.group th { background: #dde4ec; text-align: center;
  border-left: 1px solid #cfd6df; border-right: 1px solid #cfd6df; }
thead tr.group th.blank { background: #e8edf3; border-left: 0; border-right: 0; }
tbody tr:last-child td { border-bottom: 0; }
tbody tr:hover td { background: #f7f9fb; }
tbody tr:hover td.state { filter: brightness(.98); }
table.backends { table-layout: fixed; }
table.backends td { white-space: normal; overflow-wrap: anywhere; }
td.backend span { display: block; overflow: hidden; text-overflow: ellipsis;
  white-space: nowrap; }
td.backend .url { font-size: 12px; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.name { font-weight: 600; }
.url { color: #52606d; font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas,
  monospace; font-size: 12.5px; }
td.state { font-weight: 650; text-transform: uppercase; font-size: 12px;
  letter-spacing: .04em; border-left: 4px solid transparent; }
td.state .reason, td.state .since { display: block; font-weight: 400;
  text-transform: none; letter-spacing: 0; font-size: 11.5px; opacity: .85; }
td.state .since { font-variant-numeric: tabular-nums; }
.runtime { color: #9a3412; font-weight: 700; cursor: help; }
.history { display: flex; gap: 2px; margin-bottom: 2px; }
.history i { display: inline-block; width: 6px; height: 12px; border-radius: 1px;
  background: #2f9e44; }
.history i.failed { background: #d64545; }
.history i.none { background: #dde2e7; }
td.check { font-size: 12px; }
td.check .muted { white-space: nowrap; }
td.up { background: #dcf5dc; color: #14532d; border-left-color: #2f9e44; }
td.down { background: #fde2e1; color: #7f1d1d; border-left-color: #d64545; }
td.draining { background: #fff0cc; color: #7a4b00; border-left-color: #e6a700; }
td.disabled { background: #e6e9ed; color: #3e4c59; border-left-color: #8a96a3; }
.ok { color: #1a7f37; font-weight: 600; }
.fail { color: #b42318; font-weight: 600; }
.muted { color: #8a96a3; }
.bad { color: #b42318; font-weight: 650; }
.zero { color: #a3adb8; }
a { color: #1e5fa8; }
table.backends { font-size: 13px; }
table.backends td.num { white-space: nowrap; }
td.actions { padding: 3px 6px; }
td.actions .buttons { display: grid; grid-template-columns: 1fr 1fr; gap: 3px; }
form { display: inline; margin: 0; }
button { font: inherit; font-size: 11.5px; line-height: 1.2; padding: 2px 5px;
  border: 1px solid #b4bec9; border-radius: 4px;
  background: #fff; color: #1f2933; cursor: pointer; }
td.actions button { width: 100%; }
header form { margin-left: auto; }
header button { background: transparent; color: #fff; border-color: #7f98b8; }
header button:hover:enabled { background: #2b4c77; border-color: #b7c8de; }
@media (max-width: 1180px) {
  main { padding: 12px 8px 6px; }
  table.backends { font-size: 12px; }
  th, td { padding: 4px 5px; }
}
.login { max-width: 22em; margin: 12vh auto; background: #fff; padding: 20px 24px;
  border: 1px solid #d9dee5; box-shadow: 0 1px 2px rgba(16, 24, 40, .06); }
.login h1 { font-size: 20px; margin: 0 0 12px; }
.login label { display: block; margin-bottom: 6px; }
.login input { font: inherit; width: 100%; padding: 5px 7px; margin-bottom: 12px;
  border: 1px solid #b4bec9; border-radius: 4px; }
.login .problem { color: #b42318; font-weight: 600; }
button:hover:enabled { background: #eef2f6; border-color: #8a96a3; }
button:disabled { color: #a9b3bd; border-color: #dde2e7; background: #f7f8fa; cursor: default; }
footer { color: #7b8794; font-size: 12px; padding: 0 16px 18px; }
"""


def _count(value: int) -> str:
    """
    @param value: A count.
    @return: It with thousands separators, e.g. C{"12,345"}.
    """
    return f"{value:,}"


def _plural(count: int, word: str) -> str:
    """
    @param count: How many.
    @param word: What, in the singular.
    @return: E.g. C{"<b>1</b> pool"} or C{"<b>2</b> pools"}.
    """
    return f"<b>{count}</b> {word}" + ("" if count == 1 else "s")


def _bytes(value: int) -> str:
    """
    @param value: A number of bytes.
    @return: It for humans, e.g. C{"512 B"} or C{"1.5 MiB"}.
    """
    if value < 1024:
        return f"{value} B"
    size = float(value)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024:
            break
    return f"{size:.1f} {unit}"


def _duration(seconds: float) -> str:
    """
    @param seconds: A duration.
    @return: It for humans, to the second, e.g. C{"2d 3h 4m"} or
        C{"4m 5s"}.
    """
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def _age(then: float | None, now: float) -> str:
    """
    @param then: When something happened, or L{None} for never.
    @param now: The current time.
    @return: How long ago, e.g. C{"3 s ago"}, C{"5 min ago"}, or
        C{"never"}.
    """
    if then is None:
        return "never"
    seconds = max(0, int(now - then))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def _milliseconds(seconds: float | None) -> str:
    """
    @param seconds: A latency, or L{None} when unknown.
    @return: It in milliseconds with one decimal, e.g. C{"12.3 ms"}, or
        C{"–"}.
    """
    if seconds is None:
        return "–"
    return f"{seconds * 1000:.1f} ms"


def _latencyCell(seconds: float | None) -> str:
    """
    @param seconds: A latency, or L{None} when unknown.
    @return: A right-aligned C{td} of it in milliseconds.
    """
    return _cell(_milliseconds(seconds), "num" if seconds is not None else "num muted")


def _cell(text: str, classes: str = "", title: str | None = None) -> str:
    """
    @param text: The cell's contents, already HTML.
    @param classes: CSS classes.
    @param title: A tooltip (plain text), or L{None}.
    @return: A C{td} element.
    """
    attributes = f' class="{classes}"' if classes else ""
    if title:
        attributes += f' title="{html.escape(title)}"'
    return f"<td{attributes}>{text}</td>"


def _number(value: int, alarming: bool = False, title: str | None = None) -> str:
    """
    @param value: A count.
    @param alarming: Whether a non-zero value is bad news (highlighted).
    @param title: A tooltip, or L{None}.
    @return: A right-aligned C{td}; a zero is greyed out.
    """
    if not value:
        classes = "num zero"
    else:
        classes = "num bad" if alarming else "num"
    return _cell(_count(value), classes, title)


def _frontendRow(frontend: FrontendConfig, stats: FrontendStats) -> str:
    """
    @param frontend: A frontend.
    @param stats: Its statistics.
    @return: Its row of the frontends table.
    """
    listen = "<br>".join(html.escape(each) for each in frontend.listen)
    cells = [
        _cell(html.escape(frontend.name), "name"),
        _cell(listen, "url"),
        _cell("<br>".join(html.escape(pool) for pool in frontend.pools)),
        _cell(html.escape(frontend.mode)),
        _number(stats.connectionsOpen),
        _number(stats.connectionsTotal),
        _cell(_bytes(stats.bytesIn), "num", f"{stats.bytesIn:,} bytes"),
        _cell(_bytes(stats.bytesOut), "num", f"{stats.bytesOut:,} bytes"),
    ]
    cells += [
        _number(stats.responses[code], alarming=code == "5xx")
        for code in STATUS_CLASSES
    ]
    return "<tr>" + "".join(cells) + "</tr>"


def _frontendsTable(frontends: Sequence[tuple[FrontendConfig, FrontendStats]]) -> str:
    """
    @param frontends: The frontends and their statistics.
    @return: The frontends section.
    """
    codes = "".join(f'<th class="num">{code}</th>' for code in STATUS_CLASSES)
    rows = "".join(_frontendRow(frontend, stats) for frontend, stats in frontends)
    return (
        "<section><h2>Frontends</h2><table><thead>"
        '<tr class="group"><th class="blank" colspan="4"></th>'
        '<th colspan="2">Connections</th><th colspan="2">Bytes</th>'
        f'<th colspan="{len(STATUS_CLASSES)}">Responses</th></tr>'
        "<tr><th>Name</th><th>Listen</th><th>Pools</th><th>Mode</th>"
        '<th class="num">Open</th><th class="num">Total</th>'
        '<th class="num">In</th><th class="num">Out</th>'
        f"{codes}</tr></thead><tbody>{rows}</tbody></table></section>"
    )


def _actionURL(backend: Backend, action: str) -> str:
    """
    @param backend: A backend.
    @param action: One of L{_FORM_ACTIONS}.
    @return: The path its button posts to, names percent-encoded.
    """
    pool, name = quote(backend.pool, safe=""), quote(backend.name, safe="")
    return f"/pools/{pool}/backends/{name}/{action}"


_ACTION_AVAILABLE: dict[str, Callable[[Backend, dict[str, object]], bool]] = {
    "drain": lambda backend, _: backend.state is not BackendState.DRAINING,
    "disable": lambda backend, _: backend.state is not BackendState.DISABLED,
    "enable": lambda backend, _: backend.state
    in (BackendState.DRAINING, BackendState.DISABLED),
    "reset": lambda _, override: bool(override),
}

_ACTION_TITLES = {
    "drain": "no new requests; those in flight finish",
    "disable": "out of rotation at once; health checks pause",
    "enable": "back into rotation",
    "reset": "back to the configured weight and state; "
    "removes the override from the state file",
}


def _buttons(backend: Backend, override: dict[str, object]) -> str:
    """
    @param backend: A backend.
    @param override: Its runtime override.
    @return: Its Drain, Disable, Enable and Reset forms; a button that
        would change nothing is disabled.
    """
    forms = []
    for action in _FORM_ACTIONS:
        available = _ACTION_AVAILABLE[action](backend, override)
        disabled = "" if available else " disabled"
        forms.append(
            f'<form method="post" action="{html.escape(_actionURL(backend, action))}">'
            f'<button type="submit" title="{html.escape(_ACTION_TITLES[action])}"'
            f"{disabled}>{action.capitalize()}</button></form>"
        )
    return '<div class="buttons">' + "".join(forms) + "</div>"


def _checkCell(backend: Backend, now: float) -> str:
    """
    @param backend: A backend.
    @param now: The current time.
    @return: Its check cell: a mark per remembered check result, oldest
        first (green passed, red failed, grey not yet), each with its age
        and detail as a tooltip; then the last result and its age.
    """
    records = list(backend.checkHistory)
    marks = [
        f'<i class="{"passed" if record.ok else "failed"}" title="'
        f'{html.escape(_age(record.at, now))}: '
        f'{"passed" if record.ok else "failed"}, {html.escape(record.detail)}"></i>'
        for record in records
    ]
    marks += ['<i class="none" title="no check yet"></i>'] * (CHECK_HISTORY - len(marks))
    history = '<span class="history">' + "".join(marks) + "</span>"
    if backend.lastCheckOk is None:
        return _cell(history + '<span class="muted">no check yet</span>', "check")
    mark, classes = ("✓", "ok") if backend.lastCheckOk else ("✗", "fail")
    detail = html.escape(backend.lastCheckDetail)
    age = html.escape(_age(backend.lastCheckAt, now))
    return _cell(
        f'{history}<span class="{classes}">{mark}</span> {detail} '
        f'<span class="muted">· {age}</span>',
        "check",
    )


def _runtime(text: str, title: str) -> str:
    """
    @param text: A value set at runtime, already HTML.
    @param title: What it overrides (plain text).
    @return: The value marked with an asterisk and a tooltip.
    """
    return f'<span class="runtime" title="{html.escape(title)}">{text}*</span>'


def _stateCell(backend: Backend, override: dict[str, object], now: float) -> str:
    """
    @param backend: A backend.
    @param override: Its runtime override.
    @param now: The current time.
    @return: Its state cell: the state (marked if it comes from an
        override), how long it has been in it, and why.
    """
    state = backend.state.value
    text = html.escape(state)
    if override.get("state") == state:
        text = _runtime(text, "set at runtime; configured: enabled")
    if backend.stateSince is not None:
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(backend.stateSince))
        text += (
            f'<span class="since" title="since {since}">'
            f"for {_duration(now - backend.stateSince)}</span>"
        )
    text += f'<span class="reason">{html.escape(backend.reason)}</span>'
    return _cell(text, f"state {state}")


def _weightCell(backend: Backend, override: dict[str, object]) -> str:
    """
    @param backend: A backend.
    @param override: Its runtime override.
    @return: Its weight cell, marked if the weight was set at runtime.
    """
    if "weight" in override and backend.weight != backend.config.weight:
        return _cell(
            _runtime(
                _count(backend.weight),
                f"set at runtime; configured {backend.config.weight}",
            ),
            "num",
        )
    return _number(backend.weight)


def _activeCell(backend: Backend) -> str:
    """
    @param backend: A backend.
    @return: Its requests in flight, with its C{max_connections} if it has
        one (C{"3/10"}, alarming when full).
    """
    limit = backend.maxConnections
    if limit is None:
        return _number(backend.active)
    return _cell(
        f"{backend.active:,}/{limit:,}",
        "num bad" if backend.active >= limit else "num",
        f"{backend.active} in flight, max_connections = {limit}",
    )


def _backendRow(backend: Backend, override: dict[str, object], now: float) -> str:
    """
    @param backend: A backend.
    @param override: Its runtime override (see L{Balancer.override}).
    @param now: The current time.
    @return: Its row of its pool's table.
    """
    stats = backend.stats
    failures = ", ".join(
        f"{kind}: {count}" for kind, count in stats.failures.items() if count
    )
    cells = [
        _cell(
            f'<span class="name">{html.escape(backend.name)}</span>'
            f'<span class="url">{html.escape(backend.config.url)}</span>',
            "backend",
            f"{backend.name}\n{backend.config.url}",
        ),
        _stateCell(backend, override, now),
        _weightCell(backend, override),
        _activeCell(backend),
        _number(backend.requests),
        _number(stats.serverErrors(), alarming=True),
        _number(backend.failures, alarming=True, title=failures or "no failures"),
        _checkCell(backend, now),
        _latencyCell(stats.latency.quantile(0.5, now)),
        _latencyCell(stats.latency.quantile(0.99, now)),
        _cell(_buttons(backend, override), "actions"),
    ]
    return "<tr>" + "".join(cells) + "</tr>"


def _poolTable(pool: BackendPool, balancer: Balancer, now: float) -> str:
    """
    @param pool: A pool.
    @param balancer: The balancer, for the backends' overrides.
    @param now: The current time.
    @return: The pool's section.
    """
    up = sum(backend.state is BackendState.UP for backend in pool.backends)
    check = pool.config.health.check
    checks = "no active checks" if check == "none" else f"{check} checks"
    summary = (
        f"{html.escape(pool.config.strategy)} · {up} of {len(pool.backends)} up · "
        f"{html.escape(checks)}"
    )
    if not pool.strategy.usesWeights:
        summary += " (weights unused)"
    if pool.limited:
        config = pool.config
        summary += (
            f" · queue {len(pool.queue):,} of {config.max_queue:,} max, "
            f"{config.queue_timeout:g} s timeout · {pool.queue.timeouts:,} "
            f"timed out, {pool.queue.rejected:,} refused"
        )
    rows = "".join(
        _backendRow(backend, balancer.override(backend), now)
        for backend in pool.backends
    )
    return (
        f'<section><h2>Pool {html.escape(pool.name)}<span class="sub">{summary}</span>'
        f'</h2><table class="backends">{_BACKEND_HEADER}<tbody>{rows}</tbody></table></section>'
    )


def _backendHeader() -> str:
    """
    @return: The column widths and the header of a pool's table.
    """
    columns = "".join(
        f'<col style="width: {width}em">' for _, width, _, _ in _BACKEND_COLUMNS
    )
    names = "".join(
        "<th"
        + (' class="num"' if numeric else "")
        + (f' title="{html.escape(title)}"' if title else "")
        + f">{label}</th>"
        for label, _, numeric, title in _BACKEND_COLUMNS
    )
    return (
        f"<colgroup>{columns}</colgroup><thead>"
        '<tr class="group"><th class="blank" colspan="3"></th>'
        '<th colspan="4">Requests</th><th>Health</th>'
        '<th colspan="2">Latency</th><th class="blank"></th></tr>'
        f"<tr>{names}</tr></thead>"
    )


_BACKEND_COLUMNS: list[tuple[str, float, bool, str]] = [
    ("Backend", 12, False, "name and URL"),
    ("State", 12, False, "how long, and why; * = set at runtime"),
    ("Weight", 4.5, True, "* = set at runtime"),
    ("Active", 4.5, True, "requests in flight / max_connections"),
    ("Total", 5.5, True, "attempts started"),
    ("5xx", 4, True, "5xx responses from the backend"),
    ("Failed", 4.5, True, "failed attempts: connection, timeout or protocol"),
    ("Checks", 11, False, "the last 10 active health checks, oldest first"),
    ("p50", 5, True, "median of the recent request durations"),
    ("p99", 5.5, True, "99th percentile of the recent request durations"),
    ("Actions", 10.5, False, ""),
]
"""The columns of a pool's table: label, width in em, whether it is numeric,
and a tooltip.  The widths are fixed, so that the columns of all pools'
tables line up."""

_BACKEND_HEADER = _backendHeader()


def renderLoginPage(problem: str = "", warning: str = "") -> str:
    """
    Render the login form of an admin listener with a token.

    @param problem: What went wrong with the last attempt (plain text), or
        C{""}.
    @param warning: Why logging in may not work here (plain text), or
        C{""}.
    @return: The HTML document: a form that posts C{token} to C{/login}.
    """
    notice = "".join(
        f'<p class="problem">{html.escape(text)}</p>'
        for text in (warning, problem)
        if text
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>lbtwist login</title><style>{_STYLE}</style></head><body>"
        '<form class="login" method="post" action="/login"><h1>lbtwist</h1>'
        f"{notice}"
        '<label for="token">Admin token</label>'
        '<input id="token" name="token" type="password" required autofocus '
        'autocomplete="current-password">'
        '<button type="submit">Log in</button></form></body></html>\n'
    )


def renderStatsPage(
    balancer: Balancer, now: float, started: float, logout: bool = False
) -> str:
    """
    Render the stats page.

    @param balancer: The balancer to show.
    @param now: The current time.
    @param started: When lbtwist started.
    @param logout: Whether to show a log-out button.
    @return: The HTML document; every name in it is escaped.
    """
    pools = list(balancer.pools.values())
    backends = [backend for pool in pools for backend in pool.backends]
    up = sum(backend.state is BackendState.UP for backend in backends)
    clock = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    version = html.escape(lbtwist.__version__)
    sections = [_frontendsTable(balancer.frontends)]
    sections += [_poolTable(pool, balancer, now) for pool in pools]
    logoutForm = (
        '<form method="post" action="/logout"><button type="submit">Log out</button>'
        "</form>"
        if logout
        else ""
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>lbtwist stats</title><style>{_STYLE}</style></head><body>"
        f'<header><h1>lbtwist<span class="version">{version}</span></h1>'
        f'<span class="facts">uptime <b>{_duration(now - started)}</b></span>'
        f'<span class="facts">{_plural(len(pools), "pool")} · '
        f'{_plural(len(backends), "backend")} · <b>{up}</b> up</span>'
        f'<span class="facts">{clock}</span>{logoutForm}</header>'
        f"<main>{''.join(sections)}</main>"
        f"<footer>Refreshes every {REFRESH_SECONDS} s · "
        'JSON: <a href="/api/pools">/api/pools</a> · '
        'Prometheus: <a href="/metrics">/metrics</a></footer>'
        "</body></html>\n"
    )
