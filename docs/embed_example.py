"""
An application that embeds lbtwist in its own twisted.web site: it serves
C{/} itself and proxies everything under C{/api/} to a pool of backends.

    python docs/embed_example.py [--port PORT] URL [URL ...]

e.g. C{python docs/embed_example.py --port 8080 http://127.0.0.1:9001
http://127.0.0.1:9002,weight=2}.  See docs/embedding.rst.
"""

import argparse
import sys

from twisted.internet.defer import Deferred
from twisted.internet.task import react
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from lbtwist.config import HealthCheckConfig, PoolConfig, parseBackendSpec
from lbtwist.pool import BackendPool
from lbtwist.web import BackendConnections, PoolResource


def main(reactor, *argv):
    parser = argparse.ArgumentParser(description="serve / and proxy /api/")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("backends", nargs="+", metavar="URL")
    options = parser.parse_args(argv)
    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(sys.stderr)], redirectStandardIO=False
    )

    # The pool: its backends, balancing strategy, retries and timeouts.
    # check="none": no active health checks, a backend that fails real
    # requests is skipped for passive_cooldown seconds.
    poolConfig = PoolConfig(
        name="api",
        backends=tuple(
            parseBackendSpec(url, index)
            for index, url in enumerate(options.backends, 1)
        ),
        health=HealthCheckConfig(check="none"),
    )
    pool = BackendPool(poolConfig)
    connections = BackendConnections(reactor, poolConfig)

    # The application's own resource tree, with the proxy at /api/.  The
    # backends see the full target: GET /api/x reaches them as /api/x.
    root = Resource()
    root.putChild(b"", Data(b"Hello from the application.\n", "text/plain"))
    root.putChild(b"api", PoolResource(reactor, pool, connections))

    port = reactor.listenTCP(options.port, Site(root), interface="127.0.0.1")
    address = port.getHost()
    print(f"listening on {address.host}:{address.port}", flush=True)
    return Deferred()  # serve until interrupted


if __name__ == "__main__":
    react(main, sys.argv[1:])
