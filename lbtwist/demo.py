# -*- test-case-name: tests.test_demo -*-
"""
The built-in demo: three tiny backends that say which of them answered, and
a configuration that balances across them.

C{twistd -n lbtwist --demo} runs L{demoServices} next to the balancer built
from L{demoConfig}, so C{curl http://127.0.0.1:8080/} shows the requests
going round the backends and C{/healthz} keeps the health checks green.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.application.service import IService
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IReactorTCP
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from lbtwist.config import Config, parseConfig
from lbtwist.listener import Listener

__all__ = ["DemoBackend", "demoServices", "demoConfig"]

DEMO_PORTS: tuple[int, ...] = (9001, 9002, 9003)
"""
The ports the demo backends listen on by default.
"""

DEMO_LISTEN: tuple[str, ...] = ("tcp:8080:interface=127.0.0.1",)
"""
Where the demo balancer listens by default.
"""

DEMO_ADMIN = "tcp:8081:interface=127.0.0.1"
"""
Where the demo's admin page (stats, JSON API, metrics) listens by default.
"""

HEALTH_PATH = b"/healthz"
"""
The path the demo backends answer with C{ok} and the demo pool checks.
"""


class _QuietSite(Site):
    """
    A demo backend's site: no factory or access-log lines in twistd's log.
    """

    noisy = False

    def log(self, request: http.Request) -> None:
        """
        Log nothing.
        """


class DemoBackend(Resource):
    """
    A backend that answers every request with its own name.

    Every path gets C{200} with C{Content-Type: text/plain}, an
    C{X-Served-By} header naming the backend and the body
    C{Hello from <name> (<method> <path>)}; C{/healthz} gets C{ok}.

    @ivar name: The backend's name, e.g. C{"demo-1"}.
    """

    isLeaf = True

    def __init__(self, name: str) -> None:
        """
        @param name: The name reported in C{X-Served-By} and in the body.
        """
        super().__init__()
        self.name = name

    def render(self, request: Request) -> bytes:
        """
        Answer any method on any path.

        @param request: The request.
        @return: The response body (empty for C{HEAD}, with the
            C{Content-Length} of the C{GET} answer).
        """
        path: bytes = request.path
        method: bytes = request.method
        if path == HEALTH_PATH:
            body = b"ok\n"
        else:
            body = b"Hello from %s (%s %s)\n" % (
                self.name.encode("utf-8"),
                method,
                path,
            )
        headers = request.responseHeaders
        request.setResponseCode(200)
        headers.setRawHeaders(b"Content-Type", [b"text/plain"])
        headers.setRawHeaders(b"X-Served-By", [self.name.encode("utf-8")])
        if method == b"HEAD":
            headers.setRawHeaders(b"Content-Length", [b"%d" % (len(body),)])
            return b""
        return body


def demoServices(
    reactor: IReactorTCP,
    ports: Sequence[int] = DEMO_PORTS,
    interface: str = "127.0.0.1",
) -> list[IService]:
    """
    Build one listening service per demo backend.

    @param reactor: Listens for the backends.
    @param ports: One TCP port per backend; the backends are named
        C{demo-1}, C{demo-2}, ... in this order.
    @param interface: The address the backends listen on.
    @return: Unstarted L{Listener}s serving L{DemoBackend}s, in C{ports}
        order.
    """
    services: list[IService] = []
    for index, port in enumerate(ports, start=1):
        site = _QuietSite(DemoBackend(f"demo-{index}"))
        endpoint = TCP4ServerEndpoint(reactor, port, interface=interface)
        # A port already in use stops twistd with one line naming it.
        services.append(
            Listener(endpoint, site, f"tcp:{port}", f"demo backend demo-{index}")
        )
    return services


def demoConfig(
    listen: Sequence[str] = DEMO_LISTEN,
    ports: Sequence[int] = DEMO_PORTS,
    admin: str = DEMO_ADMIN,
) -> Config:
    """
    The balancer configuration in front of the demo backends.

    One frontend C{demo} on C{listen} sends to the pool C{demo}, which
    balances round-robin across C{http://127.0.0.1:<port>} for each of
    C{ports} (backends named C{demo-1}, C{demo-2}, ...) with HTTP health
    checks of C{/healthz} every 2 seconds.

    @param listen: Twisted server endpoint descriptions for the frontend.
    @param ports: The demo backends' ports, as given to L{demoServices}.
    @param admin: The admin listener's endpoint description (stats page,
        JSON API and metrics).
    @return: The validated configuration.
    @raise lbtwist.config.ConfigError: If C{listen} or C{ports} are invalid.
    """
    document: dict[str, object] = {
        "frontend": [{"name": "demo", "listen": list(listen), "pool": "demo"}],
        "pool": [
            {
                "name": "demo",
                "strategy": "round-robin",
                "health": {
                    "check": "http",
                    "path": HEALTH_PATH.decode("ascii"),
                    "interval": 2.0,
                },
                "backend": [
                    {"url": f"http://127.0.0.1:{port}", "name": f"demo-{index}"}
                    for index, port in enumerate(ports, start=1)
                ],
            }
        ],
        "admin": {"listen": admin},
    }
    return parseConfig(document, source="<demo>")
