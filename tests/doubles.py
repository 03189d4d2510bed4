"""
Test doubles shared by the in-memory tests of the HTTP proxy.
"""

from __future__ import annotations

from typing import Any

from attrs import define, field
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web._newclient import ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent, IResponse
from twisted.web.resource import Resource
from zope.interface import implementer

from lbtwist.config import parseConfig
from lbtwist.web import ProxySite


@define
class AgentCall:
    """
    One request made through a L{FakeAgent}.
    """

    method: bytes
    uri: bytes
    headers: Headers
    body: bytes | None
    deferred: Deferred[Any]


@implementer(IAgent)
class FakeAgent:
    """
    An L{IAgent} that records requests and lets the test answer them.
    """

    def __init__(self) -> None:
        self.calls: list[AgentCall] = []

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: Any = None,
    ) -> Deferred[Any]:
        body = None
        if bodyProducer is not None:
            collected = StringTransport()
            bodyProducer.startProducing(collected)
            body = collected.value()
        d: Deferred[Any] = Deferred()
        self.calls.append(AgentCall(method, uri, headers or Headers(), body, d))
        return d


class FakeBodyTransport:
    """
    The producer a response body protocol is connected to.
    """

    def __init__(self) -> None:
        self.paused = 0
        self.stopped = False

    def pauseProducing(self) -> None:
        self.paused += 1

    def resumeProducing(self) -> None:
        self.paused -= 1

    def stopProducing(self) -> None:
        self.stopped = True


@implementer(IResponse)
@define
class FakeResponse:
    """
    An L{IResponse} whose body the test delivers by hand.
    """

    code: int = 200
    phrase: bytes = b"OK"
    headers: Headers = field(factory=Headers)
    length: Any = UNKNOWN_LENGTH
    version: tuple[bytes, int, int] = (b"HTTP", 1, 1)
    request: Any = None
    previousResponse: Any = None
    protocol: Any = None
    transport: FakeBodyTransport = field(factory=FakeBodyTransport)

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)

    def setPreviousResponse(self, response: Any) -> None:
        self.previousResponse = response

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def finish(self, reason: Failure | None = None) -> None:
        self.protocol.connectionLost(reason or Failure(ResponseDone()))


def makeConfig(**poolOptions: Any) -> Any:
    """
    A one-frontend, one-pool configuration with two backends and no health
    checks.
    """
    pool: dict[str, Any] = {
        "name": "app",
        "backend": [{"url": "http://127.0.0.1:9001"}, {"url": "http://127.0.0.1:9002"}],
        "health": {"check": "none"},
    }
    frontendOptions = poolOptions.pop("frontend", {})
    pool.update(poolOptions)
    frontend = {"name": "web", "listen": "tcp:8080", "pool": "app"}
    frontend.update(frontendOptions)
    return parseConfig({"frontend": [frontend], "pool": [pool]})


def connect(
    site: ProxySite, reactor: MemoryReactorClock
) -> tuple[Any, StringTransport]:
    """
    Connect a new client to C{site} over a L{StringTransport}.
    """
    channel = site.buildProtocol(IPv4Address("TCP", "10.0.0.1", 50000))
    transport = StringTransport(
        hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
        peerAddress=IPv4Address("TCP", "192.0.2.7", 50000),
    )
    channel.makeConnection(transport)
    return channel, transport


class StaticResource(Resource):
    """
    Answers every request with C{ok} and remembers them.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Any] = []

    def render(self, request: Any) -> bytes:
        self.requests.append(request)
        request.setHeader(b"content-length", b"2")
        return b"ok"
