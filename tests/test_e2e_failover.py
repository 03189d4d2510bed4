# -*- test-case-name: tests.test_e2e_failover -*-
"""
End-to-end: failure handling (proxy-rules.md, "Failure handling"): retries,
502/503/504, passive and active health, a backend killed under load.
"""

from __future__ import annotations

import re
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.harness import (
    Client,
    Lbtwist,
    Response,
    ScriptedBackend,
    closedPort,
    exchange,
    parseResponse,
    request,
    simpleConfig,
)


def _once(
    port: int, method: str, target: str, body: bytes | None = None, timeout: float = 5.0
) -> Response:
    """
    Send one request with C{Connection: close} and parse its response.
    """
    data, _ = exchange(
        port, request(method, target, body=body, close=True), timeout=timeout
    )
    return parseResponse(data, method.encode())[0]


def _assertPlain(testCase: SynchronousTestCase, response: Response) -> None:
    testCase.assertTrue(
        (response.header(b"content-type") or b"").startswith(b"text/plain"),
        response.headers,
    )


class RefusedConnectionRetryTests(SynchronousTestCase):
    """
    A refused connection (nothing sent yet) is retried on another backend for
    any method.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.backend = ScriptedBackend("b1")
        cls.addClassCleanup(cls.backend.close)
        cls.dead = closedPort()
        cls.lb = Lbtwist(
            cls,
            simpleConfig(
                [cls.dead, cls.backend],
                pool={"retries": 2, "strategy": "round-robin"},
                health={"check": "none", "passive_fall": 100},
            ),
        )

    def test_retriesRefusedConnectionForEveryMethod(self) -> None:
        """
        With a refusing backend first in the pool, every GET, POST and PATCH
        succeeds on the live backend.
        """
        statuses = []
        for i in range(6):
            for method in ("GET", "POST", "PATCH"):
                response = _once(
                    self.lb.port,
                    method,
                    f"/refused/{method}/{i}",
                    body=None if method == "GET" else b"payload",
                )
                statuses.append((method, i, response.status, response.body))
        self.assertEqual(
            statuses,
            [
                (method, i, 200, f"b1 {method} /refused/{method}/{i}".encode())
                for i in range(6)
                for method in ("GET", "POST", "PATCH")
            ],
        )
        for received in self.backend.requestsFor(b"/refused/P"):
            self.assertEqual(received.body, b"payload")


class AfterSendFailureTests(SynchronousTestCase):
    """
    A backend that resets the connection after reading the request: idempotent
    requests are retried elsewhere, POST and PATCH are not replayed.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.bad = ScriptedBackend("bad", behaviour="reset")
        cls.addClassCleanup(cls.bad.close)
        cls.good = ScriptedBackend("good")
        cls.addClassCleanup(cls.good.close)
        cls.lb = Lbtwist(
            cls,
            simpleConfig(
                [cls.bad, cls.good],
                pool={"retries": 2, "strategy": "round-robin"},
                health={"check": "none", "passive_fall": 100},
            ),
        )

    def test_retriesIdempotentMethodsOnAnotherBackend(self) -> None:
        """
        GET, HEAD, PUT, DELETE and OPTIONS that the bad backend reset all
        succeed on the good one, each tried at most once per backend.
        """
        results = []
        for i in range(4):
            for method in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS"):
                target = f"/idem/{method}/{i}"
                response = _once(
                    self.lb.port,
                    method,
                    target,
                    body=b"replayable" if method == "PUT" else None,
                )
                results.append((target, response.status))
        self.assertEqual(
            [status for _, status in results], [200] * len(results), results
        )
        badTargets = [r.target for r in self.bad.requestsFor(b"/idem/")]
        self.assertTrue(
            badTargets, "the bad backend never got a request: nothing was retried"
        )
        self.assertEqual(
            len(badTargets), len(set(badTargets)), "retried on the same backend"
        )
        for target in badTargets:
            [retried] = self.good.requestsFor(target)
            if retried.method == b"PUT":
                self.assertEqual(retried.body, b"replayable")

    def test_doesNotReplayPostOrPatch(self) -> None:
        """
        A POST or PATCH the bad backend reset gets 502 and is never sent to the
        good backend.
        """
        results = {}
        for i in range(4):
            for method in ("POST", "PATCH"):
                target = f"/unsafe/{method}/{i}"
                results[target.encode()] = _once(
                    self.lb.port, method, target, body=b"once only"
                )
        badTargets = {r.target for r in self.bad.requestsFor(b"/unsafe/")}
        self.assertTrue(badTargets, "the bad backend never got a POST")
        for target, response in results.items():
            if target in badTargets:
                self.assertEqual(response.status, 502, target)
                _assertPlain(self, response)
                self.assertEqual(
                    self.good.requestsFor(target), [], f"{target!r} was replayed"
                )
            else:
                self.assertEqual(response.status, 200, target)


class AllBackendsFailTests(SynchronousTestCase):
    """
    Exhausted retries: 502 for connection failures, 504 for timeouts.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.slow1 = ScriptedBackend("s1")
        cls.addClassCleanup(cls.slow1.close)
        cls.slow2 = ScriptedBackend("s2")
        cls.addClassCleanup(cls.slow2.close)
        cls.lb = Lbtwist(
            cls,
            simpleConfig(
                [cls.slow1, cls.slow2],
                pool={"retries": 2, "response_timeout": 0.5, "connect_timeout": 0.5},
                health={"check": "none", "passive_fall": 100},
            ),
        )
        cls.refusing = Lbtwist(
            cls,
            simpleConfig(
                [closedPort(), closedPort()],
                pool={"retries": 2},
                health={"check": "none", "passive_fall": 100},
            ),
        )

    def test_allRefusedGives502(self) -> None:
        """
        When every backend refuses connections, the request gets a plain 502.
        """
        start = time.monotonic()
        response = _once(self.refusing.port, "GET", "/nothing")
        self.assertEqual(response.status, 502)
        _assertPlain(self, response)
        self.assertLess(time.monotonic() - start, 2)

    def test_timeoutsGive504(self) -> None:
        """
        When every attempt times out waiting for response headers, the request
        gets a plain 504, each backend tried at most once.
        """
        start = time.monotonic()
        target = b"/script/slow?s=5&get=1"
        response = _once(self.lb.port, "GET", target.decode(), timeout=6)
        elapsed = time.monotonic() - start
        self.assertEqual(response.status, 504)
        _assertPlain(self, response)
        self.assertLess(elapsed, 3)
        perBackend = [len(b.requestsFor(target)) for b in (self.slow1, self.slow2)]
        self.assertEqual(
            perBackend,
            [1, 1],
            "expected one attempt on each backend (retried, never on the same one)",
        )

    def test_closeWithoutAnswerIsRetriedThen502(self) -> None:
        """
        A GET that every backend reads and closes without answering is tried
        once per backend, then gets a plain 502.
        """
        target = b"/script/close?get=1"
        response = _once(self.lb.port, "GET", target.decode())
        self.assertEqual(response.status, 502)
        _assertPlain(self, response)
        self.assertEqual(
            [len(b.requestsFor(target)) for b in (self.slow1, self.slow2)], [1, 1]
        )

    def test_noRetryOnceResponseStarted(self) -> None:
        """
        A GET whose response died mid-body is not retried (part of it already
        reached the client): one attempt, truncated response, aborted client.
        """
        target = b"/script/truncated-cl?get=1"
        data, ending = exchange(self.lb.port, request("GET", target), timeout=3)
        self.assertIn(ending, ("eof", "reset"))
        response, _ = parseResponse(data)
        self.assertFalse(response.complete)
        self.assertEqual(
            sum(len(b.requestsFor(target)) for b in (self.slow1, self.slow2)), 1
        )

    def test_postTimeoutIsNotReplayed(self) -> None:
        """
        A POST that timed out after being sent gets 504 and is tried only once.
        """
        response = _once(
            self.lb.port, "POST", "/script/slow?s=5&post=1", body=b"x", timeout=6
        )
        self.assertEqual(response.status, 504)
        attempts = self.slow1.requestsFor(
            b"/script/slow?s=5&post=1"
        ) + self.slow2.requestsFor(b"/script/slow?s=5&post=1")
        self.assertEqual(len(attempts), 1)


class NoBackendAvailableTests(SynchronousTestCase):
    """
    With every backend down, requests get 503 at once.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.lb = Lbtwist(
            cls,
            simpleConfig(
                [closedPort(), closedPort()],
                health={
                    "check": "tcp",
                    "interval": 0.2,
                    "timeout": 0.2,
                    "rise": 1,
                    "fall": 1,
                },
            ),
        )

    def test_answers503AtOnce(self) -> None:
        """
        No available backend: a plain 503 in well under a second, no hang.
        """
        time.sleep(0.5)
        for _ in range(3):
            start = time.monotonic()
            response = _once(self.lb.port, "GET", "/anything", timeout=3)
            self.assertEqual(response.status, 503)
            _assertPlain(self, response)
            self.assertLess(time.monotonic() - start, 1.0)


class PassiveDetectionTests(SynchronousTestCase):
    """
    With active checks off, connection failures on real traffic count toward
    C{passive_fall}.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.backend = ScriptedBackend("b1")
        cls.addClassCleanup(cls.backend.close)
        cls.dead = closedPort()
        cls.lb = Lbtwist(
            cls,
            simpleConfig(
                [cls.dead, cls.backend],
                pool={"retries": 1, "passive_cooldown": 30.0},
                health={"check": "none", "passive_fall": 2},
            ),
        )

    def test_marksRefusingBackendDown(self) -> None:
        """
        After C{passive_fall} refused connections the log says the backend is
        down, and later requests no longer try it.
        """
        for i in range(6):
            self.assertEqual(_once(self.lb.port, "GET", f"/passive/{i}").status, 200)
        self.lb.waitForLine(
            re.escape(f"backend app/127.0.0.1:{self.dead} is down"), timeout=3
        )
        before = self.lb.mark()
        for i in range(4):
            self.assertEqual(_once(self.lb.port, "GET", f"/after-down/{i}").status, 200)
        self.assertIsNone(
            self.lb.waitForLine(
                re.escape(f"127.0.0.1:{self.dead}"),
                timeout=0.3,
                since=before,
                allowMissing=True,
            )
        )


class PassiveTimeoutTests(SynchronousTestCase):
    """
    With active checks off, response timeouts on real traffic count toward
    C{passive_fall}.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.slow = ScriptedBackend("slow", behaviour="slow")
        cls.addClassCleanup(cls.slow.close)
        cls.good = ScriptedBackend("good")
        cls.addClassCleanup(cls.good.close)
        cls.lb = Lbtwist(
            cls,
            simpleConfig(
                [cls.slow, cls.good],
                pool={"retries": 1, "response_timeout": 0.3, "passive_cooldown": 30.0},
                health={"check": "none", "passive_fall": 2},
            ),
        )

    def test_marksSlowBackendDown(self) -> None:
        """
        GETs that time out on the slow backend are retried on the good one and
        after C{passive_fall} timeouts the slow backend is logged down.
        """
        for i in range(5):
            response = _once(self.lb.port, "GET", f"/timeout/{i}")
            self.assertEqual(
                (response.status, response.body),
                (200, f"good GET /timeout/{i}".encode()),
            )
        self.lb.waitForLine(
            re.escape(f"backend app/{self.slow.address} is down"), timeout=3
        )
        self.assertLessEqual(len(self.slow.requestsFor(b"/timeout/")), 2)


class PassiveCooldownTests(SynchronousTestCase):
    """
    With active checks off, a passively failed backend is tried again after
    C{passive_cooldown}.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.backend = ScriptedBackend("b1")
        cls.addClassCleanup(cls.backend.close)
        cls.dead = closedPort()
        cls.lb = Lbtwist(
            cls,
            simpleConfig(
                [cls.dead, cls.backend],
                pool={"retries": 1, "passive_cooldown": 1.0},
                health={"check": "none", "passive_fall": 1},
            ),
        )

    def test_rejoinsAfterCooldown(self) -> None:
        """
        A backend marked down by refused connections gets traffic again once it
        is back and the cool-down has passed.
        """
        for i in range(3):
            self.assertEqual(_once(self.lb.port, "GET", f"/before/{i}").status, 200)
        self.lb.waitForLine(
            re.escape(f"backend app/127.0.0.1:{self.dead} is down"), timeout=3
        )
        revived = ScriptedBackend("revived", port=self.dead)
        self.addCleanup(revived.close)
        time.sleep(1.2)
        bodies = [
            _once(self.lb.port, "GET", f"/after/{i}").body.split()[0] for i in range(6)
        ]
        self.assertIn(b"revived", bodies)


class ActiveHealthTests(SynchronousTestCase):
    """
    Active HTTP checks take a dead backend out and bring it back.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.b1 = ScriptedBackend("b1")
        cls.addClassCleanup(cls.b1.close)
        cls.b2 = ScriptedBackend("b2")
        cls.addClassCleanup(cls.b2.close)
        cls.lb = Lbtwist(
            cls,
            simpleConfig(
                [cls.b1, cls.b2],
                pool={"retries": 2},
                health={
                    "check": "http",
                    "path": "/healthz",
                    "interval": 0.2,
                    "timeout": 0.5,
                    "rise": 1,
                    "fall": 1,
                },
            ),
        )
        for backend in (cls.b1, cls.b2):
            cls.lb.waitForLine(
                re.escape(f"backend app/{backend.address} is up"), timeout=5
            )

    def test_downBackendRejoinsThroughActiveChecks(self) -> None:
        """
        A stopped backend is marked down and gets no traffic; restarted, it is
        marked up by the checks and gets traffic again.
        """
        mark = self.lb.mark()
        self.b2.stop()
        self.addCleanup(self.b2.start)
        self.lb.waitForLine(
            re.escape(f"backend app/{self.b2.address} is down"), timeout=3, since=mark
        )
        bodies = {
            _once(self.lb.port, "GET", f"/while-down/{i}").body.split()[0]
            for i in range(6)
        }
        self.assertEqual(bodies, {b"b1"})
        mark = self.lb.mark()
        self.b2.start()
        self.lb.waitForLine(
            re.escape(f"backend app/{self.b2.address} is up"), timeout=3, since=mark
        )
        bodies = {
            _once(self.lb.port, "GET", f"/after-up/{i}").body.split()[0]
            for i in range(6)
        }
        self.assertEqual(bodies, {b"b1", b"b2"})


class KillUnderLoadTests(SynchronousTestCase):
    """
    Killing one of three backends under steady GET load loses no request.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.backends = [ScriptedBackend(f"b{i}") for i in (1, 2, 3)]
        for backend in cls.backends:
            cls.addClassCleanup(backend.close)
        cls.lb = Lbtwist(
            cls,
            simpleConfig(
                cls.backends,
                pool={"retries": 2, "strategy": "round-robin"},
                health={
                    "check": "http",
                    "path": "/healthz",
                    "interval": 0.2,
                    "timeout": 0.5,
                    "rise": 2,
                    "fall": 2,
                },
            ),
        )
        for backend in cls.backends:
            cls.lb.waitForLine(
                re.escape(f"backend app/{backend.address} is up"), timeout=5
            )

    def test_killingABackendLosesNoRequest(self) -> None:
        """
        300 sequential GETs over three keep-alive client connections all get
        200 while one backend is killed a third of the way through.
        """
        clients = [Client(self.lb.port, timeout=5) for _ in range(3)]
        for client in clients:
            self.addCleanup(client.close)
        failures = []
        served = {b"b1": 0, b"b2": 0, b"b3": 0}
        for i in range(300):
            if i == 100:
                self.backends[1].stop()
            client = clients[i % 3]
            try:
                response = client.request(f"/load/{i}")
            except Exception as e:
                failures.append((i, repr(e)))
                clients[i % 3] = Client(self.lb.port, timeout=5)
                self.addCleanup(clients[i % 3].close)
                continue
            if (
                response.status != 200
                or response.body
                != f"{response.body.split()[0].decode()} GET /load/{i}".encode()
            ):
                failures.append((i, response.status, response.body))
                continue
            served[response.body.split()[0]] += 1
        self.assertEqual(failures, [])
        self.assertGreater(served[b"b2"], 0)
        self.assertEqual(sum(served.values()), 300)
        killed = self.backends[1].requestsFor(b"/load/")
        self.assertTrue(
            all(int(r.target.rsplit(b"/", 1)[1]) <= 100 for r in killed),
            "the killed backend got requests",
        )
