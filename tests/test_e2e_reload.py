"""
End-to-end tests of reloading the configuration on SIGHUP through a real
C{twistd -n lbtwist}.
"""

from __future__ import annotations

import re
import signal
import socket
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from .harness import Lbtwist, ScriptedBackend, parseResponses, request, webConfig


def configText(
    backends: list[ScriptedBackend], extraFrontend: bool = False, weight: int = 1
) -> str:
    text = webConfig(backends, weight)
    if extraFrontend:
        text += '\n[[frontend]]\nname = "extra"\nlisten = "tcp:0:interface=127.0.0.1"\npool = "app"\n'
    return text


class LoadLoop:
    """
    Sequential GETs over one keep-alive connection (reconnecting when the
    server closes it), in a thread, recording every outcome.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.statuses: list[int] = []
        self.labels: list[bytes] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sock = None
        buffered = b""
        while not self._stop.is_set():
            try:
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                    buffered = b""
                sock.sendall(request("GET", "/load"))
                while True:
                    try:
                        responses = parseResponses(buffered)
                    except Exception:
                        responses = []
                    if responses and responses[0].complete:
                        break
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed mid-response")
                    buffered += chunk
                response = responses[0]
                buffered = b""
                self.statuses.append(response.status)
                self.labels.append(response.body.split(b" ")[0])
                if b"close" in response.connectionTokens():
                    sock.close()
                    sock = None
            except Exception as e:
                self.errors.append(repr(e))
                if sock is not None:
                    sock.close()
                sock = None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


class ReloadTests(SynchronousTestCase):
    """
    SIGHUP re-reads the file.
    """

    def setUp(self) -> None:
        self.sets = [
            [ScriptedBackend("a1"), ScriptedBackend("a2")],
            [ScriptedBackend("b1"), ScriptedBackend("b2")],
        ]
        for backends in self.sets:
            for backend in backends:
                self.addCleanup(backend.close)
        self.lb = Lbtwist(self, configText(self.sets[0]))

    def reload(self, text: str) -> None:
        mark = self.lb.mark()
        with open(self.lb.configPath, "w") as f:
            f.write(text)
        self.lb.process.send_signal(signal.SIGHUP)
        self.lb.waitForLine(
            re.compile("configuration reloaded|reload failed"), 10, since=mark
        )

    def test_reloadsUnderLoadLoseNothing(self) -> None:
        """
        Ten reloads alternating two backend sets under a steady load of GETs
        fail or refuse no request, and each reload sends new requests to the
        new set at once.
        """
        loops = [LoadLoop(self.lb.port) for _ in range(2)]
        try:
            for number in range(10):
                backends = self.sets[(number + 1) % 2]
                self.reload(configText(backends))
                # The request in flight at the switch may finish on the old
                # set; the three after it must all reach the new one.
                start = len(loops[0].labels)
                deadline = time.monotonic() + 10
                while len(loops[0].labels) < start + 4 and time.monotonic() < deadline:
                    time.sleep(0.01)
                recent = set(loops[0].labels[start + 1 : start + 4])
                self.assertEqual(len(loops[0].labels[start + 1 : start + 4]), 3)
                self.assertTrue(
                    recent <= {b.label.encode() for b in backends}, (number, recent)
                )
        finally:
            for loop in loops:
                loop.stop()
        total = sum(len(loop.statuses) for loop in loops)
        print(f"\n[reload] {total} requests across 10 reloads")
        self.assertGreater(total, 100)
        for loop in loops:
            self.assertEqual(loop.errors, [])
            self.assertEqual(set(loop.statuses), {200})

    def test_invalidFileKeepsServing(self) -> None:
        """
        An invalid file is rejected with an error naming the key, and the
        running configuration keeps serving.
        """
        mark = self.lb.mark()
        self.reload(configText(self.sets[1], weight=0))
        self.lb.waitForLine(
            re.compile(r'reload failed.*pool "app" backend 1: weight must be a positive integer'),
            5,
            since=mark,
        )
        loop = LoadLoop(self.lb.port)
        time.sleep(0.3)
        loop.stop()
        self.assertEqual(set(loop.labels), {b"a1", b"a2"})
        self.assertEqual(set(loop.statuses), {200})

    def test_frontendsStartAndStop(self) -> None:
        """
        A frontend added by a reload starts listening; removed, it stops.
        """
        mark = self.lb.mark()
        self.reload(configText(self.sets[0], extraFrontend=True))
        _, match = self.lb.waitForLine(
            re.compile(r"frontend extra listening on 127\.0\.0\.1:(\d+)"), 5, since=mark
        )
        port = int(match.group(1))
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(request("GET", "/x", [("Connection", "close")]))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        sock.close()
        self.assertEqual(parseResponses(data)[0].status, 200)
        self.reload(configText(self.sets[0]))
        time.sleep(0.3)
        self.assertRaises(OSError, socket.create_connection, ("127.0.0.1", port), 2)
        loop = LoadLoop(self.lb.port)
        time.sleep(0.2)
        loop.stop()
        self.assertEqual(set(loop.statuses), {200})

    def test_inFlightFinishesOnOldBackends(self) -> None:
        """
        A request in flight during a reload finishes on the backend it
        started on, while new requests go to the new set.
        """
        sock = socket.create_connection(("127.0.0.1", self.lb.port), timeout=10)
        self.addCleanup(sock.close)
        sock.sendall(request("GET", "/script/slow?s=1.5", [("Connection", "close")]))
        time.sleep(0.3)
        self.reload(configText(self.sets[1]))
        loop = LoadLoop(self.lb.port)
        time.sleep(0.2)
        loop.stop()
        self.assertEqual(set(loop.labels) - {b"b1", b"b2"}, set())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        [response] = parseResponses(data)
        self.assertEqual(response.status, 200)
        self.assertIn(response.body.split(b" ")[0], {b"a1", b"a2"})
