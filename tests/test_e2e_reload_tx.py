"""
End-to-end tests of a reload as a transaction through a real
C{twistd -n lbtwist}: a reload that fails before the switch leaves the
running configuration serving.
"""

from __future__ import annotations

import re
import signal
import socket

from twisted.trial.unittest import SynchronousTestCase

from .harness import Lbtwist, ScriptedBackend, parseResponses, request, webConfig


def get(port: int) -> bytes:
    """
    One GET to C{127.0.0.1:port}; the label of the backend that answered.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        sock.sendall(request("GET", "/x", [("Connection", "close")]))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    finally:
        sock.close()
    response = parseResponses(data)[0]
    assert response.status == 200, response.status
    return response.body.split(b" ")[0]


class ReloadTransactionTests(SynchronousTestCase):
    """
    A reload whose new frontend cannot bind changes nothing.
    """

    def setUp(self) -> None:
        self.old = [ScriptedBackend("a1")]
        self.new = [ScriptedBackend("b1")]
        for backend in self.old + self.new:
            self.addCleanup(backend.close)
        self.lb = Lbtwist(self, webConfig(self.old))

    def reload(self, text: str) -> int:
        mark = self.lb.mark()
        with open(self.lb.configPath, "w") as f:
            f.write(text)
        self.lb.process.send_signal(signal.SIGHUP)
        self.lb.waitForLine(
            re.compile("configuration reloaded|reload failed"), 10, since=mark
        )
        return mark

    def test_portTakenKeepsServing(self) -> None:
        """
        A reload moving the frontend to a port already taken fails naming the
        port, the old frontend and backends keep serving, and a following
        good reload (once the port is free) works.
        """
        blocker = socket.socket()
        self.addCleanup(blocker.close)
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        taken = blocker.getsockname()[1]
        moved = webConfig(self.new).replace(
            "tcp:0:interface=127.0.0.1", f"tcp:{taken}:interface=127.0.0.1"
        )
        mark = self.reload(moved)
        self.lb.waitForLine(
            re.compile(
                r"reload failed, the running configuration keeps serving: "
                rf'frontend "web": cannot listen on tcp:{taken}:interface=127\.0\.0\.1'
            ),
            5,
            since=mark,
        )
        self.assertNotIn("configuration reloaded", "\n".join(self.lb.lines[mark:]))
        self.assertEqual({get(self.lb.port) for _ in range(4)}, {b"a1"})

        blocker.close()
        mark = self.reload(moved)
        self.lb.waitForLine(re.compile("configuration reloaded"), 5, since=mark)
        self.assertEqual({get(taken) for _ in range(4)}, {b"b1"})
        self.assertRaises(OSError, socket.create_connection, ("127.0.0.1", self.lb.port), 2)
