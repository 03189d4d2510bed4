"""
Take the screenshot of the admin stats page used in the README,
C{docs/stats-page.png}.

It builds a L{Balancer} of two pools and five backends in every state, with
made-up traffic statistics, serves the admin page on a free loopback port
with the real reactor, points headless Chromium (Debian's C{chromium}) at
it, and stops.  Nothing here is run by the tests::

    python docs/make_screenshot.py [OUTPUT.png]
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
from typing import Any

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.server import Site

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lbtwist.admin import adminResource  # noqa: E402
from lbtwist.backend import BackendState  # noqa: E402
from lbtwist.balancer import Balancer  # noqa: E402
from lbtwist.config import (  # noqa: E402
    BackendConfig,
    FrontendConfig,
    HealthCheckConfig,
    PoolConfig,
)
from lbtwist.metrics import metricsRegistry  # noqa: E402
from lbtwist.pool import BackendPool  # noqa: E402
from lbtwist.stats import FrontendStats  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stats-page.png")
WINDOW = "1280,900"


def _backend(name: str, port: int, weight: int = 1) -> BackendConfig:
    """
    @return: A backend C{name} on C{10.0.0.x:port}.
    """
    host = f"10.0.0.{port % 100}"
    return BackendConfig(
        url=f"http://{host}:{port}",
        scheme="http",
        host=host,
        port=port,
        name=name,
        weight=weight,
    )


def _traffic(
    backend: Any,
    now: float,
    requests: int,
    median: float,
    errors: int = 0,
    failures: dict[str, int] | None = None,
) -> None:
    """
    Record made-up traffic on a backend: C{requests} responses with
    latencies around C{median} seconds, C{errors} of them 5xx, and some
    failed attempts.
    """
    rng = random.Random(backend.name)
    backend.requests = requests + sum((failures or {}).values())
    for index in range(requests):
        latency = rng.lognormvariate(0, 0.45) * median
        status = 503 if index < errors else rng.choice([200] * 30 + [304, 404])
        backend.stats.recordResponse(status, latency, now - rng.uniform(0, 200))
    for kind, count in (failures or {}).items():
        for _ in range(count):
            backend.stats.recordFailure(kind, 0.002, now)
            backend.failures += 1


def demoBalancer(now: float) -> Balancer:
    """
    Two pools, five backends in every state, with statistics.

    @param now: The current time.
    @return: The balancer.
    """
    web = BackendPool(
        PoolConfig(
            name="web",
            strategy="weighted-round-robin",
            backends=(
                _backend("web-1", 8001, 3),
                _backend("web-2", 8002, 2),
                _backend("web-3", 8003),
            ),
            health=HealthCheckConfig(check="http", path="/healthz"),
        ),
        now - 5 * 86400,
    )
    api = BackendPool(
        PoolConfig(
            name="api",
            strategy="least-connections",
            backends=(_backend("api-1", 9011), _backend("api-2", 9012)),
            health=HealthCheckConfig(check="tcp"),
        ),
        now - 5 * 86400,
    )
    frontends = [
        (
            FrontendConfig(name="public", listen=("tcp:80", "tcp6:80"), pool="web"),
            FrontendStats(),
        ),
        (
            FrontendConfig(
                name="internal-api", listen=("tcp:8443:interface=10.0.0.1",), pool="api"
            ),
            FrontendStats(),
        ),
    ]
    balancer = Balancer([web, api], frontends, task.Clock(), None)
    balancer.clock.advance(now)  # type: ignore[attr-defined]

    web1, web2, web3 = web.backends
    api1, api2 = api.backends
    for backend in [web1, web2, web3, api1, api2]:
        backend.setState(BackendState.UP, "first health check passed", now - 86400)
    for index in range(10):
        at = now - 1.6 - 2 * (9 - index)
        for backend in [web1, web2, web3]:
            backend.checkResult(True, "HTTP 200", at)
        api1.checkResult(True, "connected", at + 0.8)
        api2.checkResult(index != 4, "connected" if index != 4 else "timeout", at)
    for index in range(3):
        api2.checkResult(False, "connection refused", now - 6.3 + 2 * index)
    balancer.setWeight("web", "web-1", 5)

    _traffic(web1, now, 1840, 0.0123, errors=2)
    web1.active = 5
    _traffic(web2, now, 1215, 0.0187, failures={"response_timeout": 1})
    web2.active = 3
    balancer.drain("web", "web-2")
    web2.stateSince = now - 1262
    _traffic(web3, now, 402, 0.0311, errors=17, failures={"connect_refused": 2})
    balancer.disable("web", "web-3")
    web3.stateSince = now - 3 * 3600 - 125
    web3.lastCheckAt = now - 845
    _traffic(api1, now, 9321, 0.0042)
    api1.active = 12
    _traffic(
        api2,
        now,
        286,
        0.0058,
        errors=4,
        failures={"connect_refused": 31, "connect_timeout": 3},
    )

    public, internal = (stats for _, stats in frontends)
    for stats, opened, total, received, sent, responses in [
        (
            public,
            14,
            3614,
            1_843_201,
            96_532_118,
            {200: 3101, 304: 312, 404: 101, 503: 19},
        ),
        (internal, 12, 412, 9_832_114, 44_120_557, {200: 9321, 503: 38}),
    ]:
        stats.connectionsTotal, stats.connectionsOpen = total, opened
        stats.bytesIn, stats.bytesOut = received, sent
        for status, count in responses.items():
            for _ in range(count):
                stats.recordResponse(status)
    return balancer


async def screenshot(reactor: Any, output: str) -> None:
    """
    Serve the page and take its screenshot.

    @param reactor: The real reactor.
    @param output: Where to write the PNG.
    """
    now = reactor.seconds()
    balancer = demoBalancer(now)
    started = now - (3 * 86400 + 4 * 3600 + 17 * 60)
    registry = metricsRegistry(balancer, balancer.clock)
    site = Site(
        adminResource(balancer, balancer.clock, registry, None, started=started)
    )
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
    url = f"http://127.0.0.1:{port.getHost().port}/"
    try:
        with tempfile.TemporaryDirectory() as profile:
            out, err, code = await getProcessOutputAndValue(
                CHROMIUM,
                [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--hide-scrollbars",
                    f"--user-data-dir={profile}",
                    f"--window-size={WINDOW}",
                    f"--screenshot={output}",
                    url,
                ],
                env=dict(os.environ),
                reactor=reactor,
            )
    finally:
        await port.stopListening()
    if code != 0 or not os.path.exists(output):
        raise SystemExit(f"chromium failed ({code}):\n{err.decode(errors='replace')}")
    print(f"wrote {output}")


def main(reactor: Any, output: str = OUTPUT) -> defer.Deferred[None]:
    """
    @param reactor: The real reactor.
    @param output: Where to write the PNG.
    """
    return defer.ensureDeferred(screenshot(reactor, output))


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
