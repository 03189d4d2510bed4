"""
End-to-end tests of connection limits and the pool queue (C{max_connections},
C{max_queue}, C{queue_timeout}) through a real C{twistd -n lbtwist} on
loopback: HTTP and TCP frontends, the admin API and C{/metrics}.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import tempfile
import threading
import time
import urllib.request
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from .harness import (
    jsonLogRecords,
    Lbtwist,
    Response,
    ScriptedBackend,
    exchange,
    parseResponses,
    request,
    simpleConfig,
)
from .tcpharness import (
    TCPBackend,
    configWith,
    connect,
    readExactly,
    tcpFrontend,
    waitUntil,
)

ADMIN = '\n[admin]\nlisten = "tcp:0:interface=127.0.0.1"\n'


def adminJSON(lb: Lbtwist, path: str) -> Any:
    with urllib.request.urlopen(
        f"http://127.0.0.1:{lb.ports['admin']}{path}", timeout=5
    ) as response:
        return json.loads(response.read())


def metrics(lb: Lbtwist) -> str:
    with urllib.request.urlopen(
        f"http://127.0.0.1:{lb.ports['admin']}/metrics", timeout=5
    ) as response:
        text: str = response.read().decode()
        return text


def disconnect(sock: socket.socket) -> None:
    """
    Close a client socket abruptly (RST), as a client that goes away does;
    a plain close (FIN) only says the client sends nothing more, and an
    HTTP client may still wait for its answer.
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def queueLength(lb: Lbtwist, pool: str = "app") -> int:
    length: int = adminJSON(lb, f"/api/pools/{pool}")["queue"]
    return length


class _Get(threading.Thread):
    """
    A GET sent from a thread; its response is kept.
    """

    def __init__(self, port: int, path: str) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.path = path
        self.response: Response | None = None
        self.finishedAt = 0.0
        self.start()

    def run(self) -> None:
        received, _ = exchange(
            self.port,
            request("GET", self.path, [("Connection", "close")]),
            timeout=10,
        )
        [self.response] = parseResponses(received)
        self.finishedAt = time.monotonic()

    def result(self) -> Response:
        self.join(15)
        assert self.response is not None, f"no response to {self.path}"
        return self.response


class HTTPQueueTests(SynchronousTestCase):
    """
    An HTTP pool whose only backend takes one request at a time.
    """

    def start(self, **pool: object) -> tuple[ScriptedBackend, Lbtwist, str]:
        backend = ScriptedBackend("b1")
        self.addCleanup(backend.close)
        directory = tempfile.mkdtemp(prefix="lbtwist-queue-")
        accessLog = os.path.join(directory, "access.log")
        config = simpleConfig([backend], pool=pool).replace(
            f'url = "{backend.url}"',
            f'url = "{backend.url}"\nmax_connections = 1',
        )
        config += ADMIN + (
            f'\n[settings]\naccess_log = "{accessLog}"\n'
            'access_log_format = "json"\n'
        )
        lb = Lbtwist(self, config)
        return backend, lb, accessLog

    def holdTheSlot(self, lb: Lbtwist, seconds: float) -> _Get:
        """
        Send a slow request and wait until it is in flight.
        """
        slow = _Get(lb.port, f"/script/slow?s={seconds}")
        waitUntil(
            lambda: adminJSON(lb, "/api/pools/app")["backends"][0]["active"] == 1,
            message="the slow request in flight",
        )
        return slow

    def test_queuedRequestServedAfterTheSlotIsFreed(self) -> None:
        """
        While the backend holds its one slot, a second request waits in the
        queue (the admin API shows it) and reaches the backend only once the
        first response is complete.
        """
        backend, lb, _ = self.start()
        pool = adminJSON(lb, "/api/pools/app")
        self.assertEqual(
            (pool["queue"], pool["max_queue"], pool["queue_timeout"]), (0, 1000, 5.0)
        )
        self.assertEqual(pool["backends"][0]["max_connections"], 1)
        slow = self.holdTheSlot(lb, 1.0)
        queued = _Get(lb.port, "/queued")
        waitUntil(lambda: queueLength(lb) == 1, message="one request queued")
        self.assertIn("lbtwist_pool_queue_length{pool=\"app\"} 1.0", metrics(lb))
        self.assertEqual(
            [r.target for r in backend.received], [b"/script/slow?s=1.0"]
        )
        self.assertEqual(slow.result().status, 200)
        response = queued.result()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, b"b1 GET /queued")
        self.assertGreaterEqual(queued.finishedAt, slow.finishedAt)
        self.assertEqual(
            [r.target for r in backend.received],
            [b"/script/slow?s=1.0", b"/queued"],
        )
        self.assertEqual(queueLength(lb), 0)

    def test_queuedPostWithBody(self) -> None:
        """
        A POST whose body arrives while it waits in the queue reaches the
        backend whole once the slot is free: the body is held, not lost.
        """
        backend, lb, _ = self.start()
        slow = self.holdTheSlot(lb, 1.0)
        body = b"x" * 200000
        result: dict[str, Any] = {}

        def post() -> None:
            received, _ = exchange(
                lb.port,
                request(
                    "POST",
                    "/script/sha256",
                    [("Connection", "close")],
                    body,
                ),
                timeout=10,
            )
            [result["response"]] = parseResponses(received, [b"POST"])

        thread = threading.Thread(target=post, daemon=True)
        thread.start()
        waitUntil(lambda: queueLength(lb) == 1, message="the POST queued")
        self.assertEqual(slow.result().status, 200)
        thread.join(15)
        response = result["response"]
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, hashlib.sha256(body).hexdigest().encode() + b" 200000")
        self.assertEqual(queueLength(lb), 0)

    def test_queueTimeout(self) -> None:
        """
        A request that waits longer than C{queue_timeout} gets 503 naming
        the timeout and the pool, in the body, the log and the access log;
        it never reaches the backend, and is counted in C{/metrics}.
        """
        backend, lb, accessLog = self.start(queue_timeout=0.5)
        slow = self.holdTheSlot(lb, 2.0)
        started = time.monotonic()
        response = _Get(lb.port, "/late").result()
        self.assertLess(time.monotonic() - started, 1.8)
        reason = 'queue timeout after 0.5s in pool "app"'
        self.assertEqual(response.status, 503)
        self.assertIn(reason.encode(), response.body)
        lb.waitForLine(reason)
        self.assertEqual(slow.result().status, 200)
        self.assertEqual(
            [r.target for r in backend.received], [b"/script/slow?s=2.0"]
        )
        self.assertIn(
            'lbtwist_pool_queue_timeouts_total{pool="app"} 1.0', metrics(lb)
        )
        self.assertEqual(adminJSON(lb, "/api/pools/app")["queue_timeouts"], 1)

        def logged() -> list[dict[str, Any]]:
            return jsonLogRecords(accessLog)

        waitUntil(lambda: len(logged()) == 2, message="two access log lines")
        [late] = [r for r in logged() if r["target"] == "/late"]
        self.assertEqual((late["status"], late["retry_reasons"]), (503, [reason]))

    def test_queueFull(self) -> None:
        """
        With C{max_queue} requests waiting, the next one gets 503 at once,
        saying the queue is full.
        """
        _, lb, _ = self.start(max_queue=1)
        slow = self.holdTheSlot(lb, 1.5)
        queued = _Get(lb.port, "/queued")
        waitUntil(lambda: queueLength(lb) == 1, message="one request queued")
        response = _Get(lb.port, "/refused").result()
        self.assertEqual(response.status, 503)
        self.assertIn(b'queue full (1 waiting) in pool "app"', response.body)
        self.assertIn('lbtwist_pool_queue_full_total{pool="app"} 1.0', metrics(lb))
        self.assertEqual(slow.result().status, 200)
        self.assertEqual(queued.result().status, 200)

    def test_clientLeavesTheQueue(self) -> None:
        """
        A client that disconnects while its request waits leaves the queue
        at once (the admin API shows 0 again) and its request never reaches
        the backend.
        """
        backend, lb, _ = self.start()
        slow = self.holdTheSlot(lb, 1.5)
        client = socket.create_connection(("127.0.0.1", lb.port), timeout=5)
        client.sendall(request("GET", "/gone", []))
        waitUntil(lambda: queueLength(lb) == 1, message="one request queued")
        disconnect(client)
        waitUntil(lambda: queueLength(lb) == 0, message="the queue to empty")
        self.assertIsNone(slow.response)
        self.assertEqual(slow.result().status, 200)
        after = _Get(lb.port, "/after").result()
        self.assertEqual(after.status, 200)
        self.assertEqual(
            [r.target for r in backend.received],
            [b"/script/slow?s=1.5", b"/after"],
        )


class TCPQueueTests(SynchronousTestCase):
    """
    A TCP pool whose only backend takes one connection at a time.
    """

    def test_connectionWaitsForTheSlot(self) -> None:
        """
        A second connection waits in the queue while the first is open (the
        backend accepts only one), then is relayed, with the bytes it sent
        while waiting; a third that gives up while waiting leaves the queue.
        """
        backend = TCPBackend("echo")
        self.addCleanup(backend.close)
        frontend, pool = tcpFrontend("db", [backend])
        pool["backends"] = [{"url": backend.url, "max_connections": 1}]
        lb = Lbtwist(self, configWith((frontend, pool), admin=True))
        first = connect(lb.ports["db"])
        first.sendall(b"one")
        self.assertEqual(readExactly(first, 3), b"one")
        second = connect(lb.ports["db"])
        second.sendall(b"two")
        waitUntil(lambda: queueLength(lb, "db") == 1, message="one queued")
        third = connect(lb.ports["db"])
        waitUntil(lambda: queueLength(lb, "db") == 2, message="two queued")
        disconnect(third)
        waitUntil(lambda: queueLength(lb, "db") == 1, message="the third to leave")
        self.assertEqual(backend.accepted, 1)
        first.close()
        self.assertEqual(readExactly(second, 3), b"two")
        self.assertEqual(backend.accepted, 2)
        self.assertEqual(queueLength(lb, "db"), 0)
        second.close()

    def test_queueTimeoutClosesTheConnection(self) -> None:
        """
        A connection that waits longer than C{queue_timeout} is closed, and
        the log says why.
        """
        backend = TCPBackend("echo")
        self.addCleanup(backend.close)
        frontend, pool = tcpFrontend("db", [backend], queue_timeout=0.3)
        pool["backends"] = [{"url": backend.url, "max_connections": 1}]
        lb = Lbtwist(self, configWith((frontend, pool), admin=True))
        first = connect(lb.ports["db"])
        first.sendall(b"one")
        self.assertEqual(readExactly(first, 3), b"one")
        late = connect(lb.ports["db"])
        late.settimeout(5)
        self.assertEqual(late.recv(10), b"")
        lb.waitForLine('queue timeout after 0.3s in pool "db"')
        self.assertEqual(backend.accepted, 1)
        first.close()
        late.close()
