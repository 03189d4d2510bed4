"""
Tests for L{lbtwist.upgrade}: which requests are tunnelled, and the 101
head sent to the client. (The tunnels themselves are tested end to end in
C{test_e2e_websocket}.)
"""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from lbtwist.pool import BackendPool
from lbtwist.upgrade import _switchingHead, upgradeProtocols
from lbtwist.web import PoolResource, ProxySite

from .doubles import FakeAgent, connect, makeConfig


class UpgradeProtocolsTests(SynchronousTestCase):
    """
    L{upgradeProtocols} picks the requests lbtwist tunnels.
    """

    def requestFor(self, head: bytes) -> Any:
        reactor = MemoryReactorClock()
        config = makeConfig()
        pool = BackendPool(config.pools[0])
        seen: list[Any] = []

        def upgrade(request: Any, pool: BackendPool) -> bool:
            seen.append(request)
            return True

        resource = PoolResource(reactor, pool, FakeAgent(), upgrade)
        site = ProxySite(resource, config.frontends[0], 1000, reactor)
        channel, transport = connect(site, reactor)
        channel.dataReceived(head)
        [request] = seen
        return request

    def test_websocket(self) -> None:
        """
        An HTTP/1.1 request with C{Connection: Upgrade} and C{Upgrade:
        websocket} is tunnelled.
        """
        request = self.requestFor(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n"
            b"Upgrade: websocket\r\n\r\n"
        )
        self.assertEqual(upgradeProtocols(request), [b"websocket"])

    def test_notTunnelled(self) -> None:
        """
        HTTP/1.0, C{h2c}, a missing C{upgrade} connection option or a body
        mean an ordinary request.
        """
        for head in [
            b"GET /ws HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Content-Length: 2\r\n\r\nhi",
        ]:
            self.assertEqual(upgradeProtocols(self.requestFor(head)), [], head)


class SwitchingHeadTests(SynchronousTestCase):
    """
    The 101 head relayed to the client.
    """

    def test_hopByHopReplaced(self) -> None:
        """
        The backend's end-to-end fields are kept, its hop-by-hop fields are
        replaced by C{Connection: Upgrade} and its C{Upgrade}, and C{Via} is
        added.
        """
        head = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade, X-Private\r\nKeep-Alive: 5\r\n"
            b"Sec-WebSocket-Accept: abc=\r\n\r\n"
        )
        self.assertEqual(
            _switchingHead(head),
            b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: abc=\r\n"
            b"Connection: Upgrade\r\nUpgrade: websocket\r\nVia: 1.1 lbtwist\r\n\r\n",
        )
