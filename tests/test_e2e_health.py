# -*- test-case-name: tests.test_e2e_health -*-
"""
End-to-end: the health model seen from outside, through a real
C{twistd -n lbtwist} on loopback: traffic cannot mask a failing health
check, and a health endpoint that never answers takes its backend down with
a log line that says "timed out" while the other backends' checks keep
their rhythm.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any, Callable, Mapping

from twisted.trial.unittest import SynchronousTestCase

from tests.harness import (
    Lbtwist,
    ReceivedRequest,
    ScriptedBackend,
    exchange,
    parseResponse,
    request,
    simpleConfig,
)

TOKEN = "e2e-health-token"


class HealthBackend(ScriptedBackend):
    """
    A L{ScriptedBackend} whose C{/healthz} answers with C{healthStatus}, or
    accepts the request and never answers while C{healthStatus} is L{None}.

    @ivar healthStatus: The status C{/healthz} answers, or L{None} to hang.
    """

    def __init__(self, label: str) -> None:
        self.healthStatus: int | None = 200
        self._released = threading.Event()
        super().__init__(label)

    def stop(self) -> None:
        """
        Stop, and let every hanging health check go.
        """
        self._released.set()
        super().stop()

    close = stop

    def _respond(self, connection: Any, received: ReceivedRequest) -> bool:
        if received.target != b"/healthz" or self.healthStatus == 200:
            return super()._respond(connection, received)
        status = self.healthStatus
        if status is None:
            self._released.wait(30)
            return False
        self._send(connection, self._simple(status, b"sick", close=True))
        return False


def withAdmin(config: str) -> str:
    """
    @return: C{config} with an admin listener on an OS-chosen loopback port.
    """
    return config + (
        f'\n[admin]\nlisten = "tcp:0:interface=127.0.0.1"\ntoken = "{TOKEN}"\n'
    )


def backendStates(lb: Lbtwist) -> dict[str, dict[str, Any]]:
    """
    @return: Every backend of pool C{app} by name, from the admin JSON API.
    """
    req = urllib.request.Request(f"http://127.0.0.1:{lb.ports['admin']}/api/pools")
    req.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(req, timeout=5) as response:
        pools = json.loads(response.read())["pools"]
    return {b["name"]: b for pool in pools for b in pool["backends"]}


def waitFor(predicate: Callable[[], bool], timeout: float) -> float | None:
    """
    Poll C{predicate} every 20 ms for up to C{timeout} seconds.

    @return: The seconds it took to become true, or L{None}.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.02)
    return None


def start(
    case: SynchronousTestCase, health: Mapping[str, object]
) -> tuple[Lbtwist, HealthBackend, HealthBackend]:
    """
    Start two backends C{good} and C{bad} and lbtwist in front of them with
    C{health}, and wait until both are up.
    """
    good, bad = HealthBackend("good"), HealthBackend("bad")
    case.addCleanup(good.stop)
    case.addCleanup(bad.stop)
    pool = {"connect_timeout": 1.0, "response_timeout": 2.0}
    config = simpleConfig([good, bad], pool=pool, health=health)
    config = config.replace(
        f'url = "{good.url}"', f'url = "{good.url}"\nname = "good"'
    ).replace(f'url = "{bad.url}"', f'url = "{bad.url}"\nname = "bad"')
    lb = Lbtwist(case, withAdmin(config))
    up = waitFor(
        lambda: all(b["state"] == "up" for b in backendStates(lb).values()), 5.0
    )
    case.assertIsNotNone(up, lb.output())
    return lb, good, bad


class _Traffic:
    """
    A client thread that sends one C{GET /} every C{period} seconds and
    records which backend answered each (or the status it got otherwise).
    """

    def __init__(self, port: int, period: float) -> None:
        self.port = port
        self.period = period
        self.answers: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                data, _ = exchange(self.port, request("GET", "/", close=True), 3.0)
                response, _ = parseResponse(data)
                backend = response.header(b"x-backend")
                if response.status == 200 and backend is not None:
                    answer = backend.decode()
                else:
                    answer = f"status {response.status}"
            except (OSError, ValueError) as e:
                answer = f"error {e}"
            self.answers.append((started, answer))
            self._stop.wait(max(0.0, self.period - (time.monotonic() - started)))

    def stop(self) -> None:
        """
        Stop sending and wait for the thread.
        """
        self._stop.set()
        self._thread.join(5)

    def since(self, when: float) -> list[str]:
        """
        @return: The answers to requests started at C{when} or later.
        """
        return [answer for started, answer in list(self.answers) if started >= when]


class MaskedHealthCheckTests(SynchronousTestCase):
    """
    Traffic that succeeds does not mask a failing health check.
    """

    def test_failingCheckWinsOverTraffic(self) -> None:
        """
        With C{interval = 0.2, fall = 2} and a GET every 100 ms, a backend
        whose C{/healthz} answers 500 while C{/} answers 200 is out within
        1 s, and back after C{rise} passing checks once C{/healthz} answers
        200 again.
        """
        health = {
            "check": "http",
            "interval": 0.2,
            "timeout": 0.5,
            "fall": 2,
            "rise": 2,
        }
        lb, good, bad = start(self, health)
        traffic = _Traffic(lb.port, 0.1)
        self.addCleanup(traffic.stop)
        time.sleep(0.5)
        self.assertIn("bad", traffic.since(0.0))

        mark = lb.mark()
        sickSince = time.monotonic()
        bad.healthStatus = 500
        took = waitFor(lambda: backendStates(lb)["bad"]["state"] == "down", 3.0)
        self.assertIsNotNone(took, lb.output())
        assert took is not None
        self.assertLess(took, 1.0)
        lb.waitForLine(
            r"backend app/bad \(\S+\) is down: 2 consecutive failures \(HTTP 500", 1.0, mark
        )
        # Traffic was running, and reached the bad backend, all along.
        self.assertIn("bad", traffic.since(sickSince))
        # Once out, it gets no more traffic; the good one answers everything.
        outSince = time.monotonic() + 0.1
        time.sleep(0.8)
        answers = traffic.since(outSince)
        self.assertGreater(len(answers), 4)
        self.assertEqual(set(answers), {"good"})
        self.assertEqual(backendStates(lb)["bad"]["state"], "down")

        mark = lb.mark()
        bad.healthStatus = 200
        back = waitFor(lambda: backendStates(lb)["bad"]["state"] == "up", 3.0)
        self.assertIsNotNone(back, lb.output())
        lb.waitForLine(
            r"backend app/bad \(\S+\) is up: 2 consecutive successes \(HTTP 200\)", 1.0, mark
        )
        upSince = time.monotonic()
        self.assertIsNotNone(
            waitFor(lambda: "bad" in traffic.since(upSince), 2.0), traffic.answers
        )
        traffic.stop()
        self.assertEqual(
            [a for _, a in traffic.answers if a not in ("good", "bad")], []
        )


class HangingHealthCheckTests(SynchronousTestCase):
    """
    A health endpoint that accepts connections and never answers.
    """

    def test_hangingCheckTimesOut(self) -> None:
        """
        The backend goes down within C{fall * (interval + timeout) + 1}
        seconds, the log line says "timed out", and the other backend's
        checks keep their rhythm: it stays up.
        """
        interval, timeout, fall = 0.5, 0.5, 2
        health = {
            "check": "http",
            "interval": interval,
            "timeout": timeout,
            "fall": fall,
        }
        lb, good, bad = start(self, health)
        mark = lb.mark()
        goodChecks = good.healthChecks
        hangingSince = time.monotonic()
        bad.healthStatus = None
        bound = fall * (interval + timeout) + 1.0
        took = waitFor(lambda: backendStates(lb)["bad"]["state"] == "down", bound)
        self.assertIsNotNone(took, lb.output())
        found = lb.waitForLine(r"backend app/.+ is down: .*", 1.0, mark)
        assert found is not None
        line = found[1].string
        self.assertIn("timed out", line)
        self.assertIn(bad.address, line)

        # The good backend's checks kept their rhythm while the bad one hung,
        # and go on.
        time.sleep(max(0.0, 3.0 - (time.monotonic() - hangingSince)))
        elapsed = time.monotonic() - hangingSince
        checks = good.healthChecks - goodChecks
        self.assertGreaterEqual(checks, int(elapsed / interval) - 1, elapsed)
        states = backendStates(lb)
        self.assertEqual(states["good"]["state"], "up")
        self.assertEqual(states["bad"]["state"], "down")
        self.assertIn("timed out", states["bad"]["health"]["detail"])
        # The hanging backend's checks go on too: each times out.
        self.assertNotIn("is up", "\n".join(lb.lines[mark:]))

        data, _ = exchange(lb.port, request("GET", "/", close=True), 3.0)
        response, _ = parseResponse(data)
        self.assertEqual(response.header(b"x-backend"), b"good")

