# -*- test-case-name: tests.test_e2e_strategies -*-
"""
End-to-end: the strategies beyond round robin through a real
C{twistd -n lbtwist} on loopback: sticky cookies across requests and after
the sticky backend goes away, slow start in the split of 1,000 requests,
peak-EWMA moving traffic away from a backend that turns slow, consistent
hashing keeping a key on one backend, the C{explain} API agreeing with the
next real request, and the access log saying why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.harness import (
    jsonLogRecords,
    PROJECT_ROOT,
    Client,
    Lbtwist,
    ReceivedRequest,
    ScriptedBackend,
    configText,
    request,
)

TOKEN = "e2e-strategies-token"


class SlowBackend(ScriptedBackend):
    """
    A L{ScriptedBackend} that waits C{delay} seconds before each answer
    (not for health checks).

    @ivar delay: Seconds to wait before answering.
    """

    delay = 0.0

    def _respond(self, connection: Any, received: ReceivedRequest) -> bool:
        if received.target != b"/healthz" and self.delay:
            time.sleep(self.delay)
        return super()._respond(connection, received)


def config(
    backends: list[ScriptedBackend],
    pool: dict[str, object],
    health: dict[str, object] | None = None,
    admin: bool = False,
    accessLog: str | None = None,
) -> str:
    """
    One frontend C{web} in front of one pool C{app} of C{backends} named
    C{b1}, C{b2}...; optionally an admin listener and an access log.
    """
    poolTable: dict[str, object] = {
        "name": "app",
        "connect_timeout": 1.0,
        "response_timeout": 10.0,
        **pool,
        "health": health or {"check": "none"},
        "backends": [
            {"url": backend.url, "name": f"b{index}"}
            for index, backend in enumerate(backends, 1)
        ],
    }
    text = configText(
        [{"name": "web", "listen": "tcp:0:interface=127.0.0.1", "pool": "app"}],
        [poolTable],
    )
    if admin:
        text += f'\n[admin]\nlisten = "tcp:0:interface=127.0.0.1"\ntoken = "{TOKEN}"\n'
    if accessLog is not None:
        text += (
            f'\n[settings]\naccess_log = "{accessLog}"\naccess_log_format = "json"\n'
        )
    return text


def servedBy(client: Client, headers: list[tuple[str, str]] | None = None) -> tuple[str, Any]:
    """
    Send one GET on C{client}'s connection.

    @return: The label of the backend that answered, and the response.
    """
    client.send(request("GET", "/", headers=headers))
    response = client.readResponse()
    assert response.status == 200, response
    return response.body.split(b" ")[0].decode(), response


def explain(lb: Lbtwist, query: str = "") -> Any:
    """
    @return: The JSON of C{/api/pools/app/explain?QUERY}.
    """
    url = f"http://127.0.0.1:{lb.ports['admin']}/api/pools/app/explain?{query}"
    req = urllib.request.Request(url)
    req.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(req, timeout=5) as response:
        return json.load(response)


def accessLogRecords(path: str, count: int, timeout: float = 5.0) -> list[Any]:
    """
    Wait until a JSON access log has C{count} records (or C{timeout}
    seconds have passed).

    @return: The records read.
    """
    deadline = time.monotonic() + timeout
    records: list[Any] = []
    while time.monotonic() < deadline:
        records = jsonLogRecords(path)
        if len(records) >= count:
            break
        time.sleep(0.05)
    return records


class StickyCookieTests(SynchronousTestCase):
    """
    C{sticky_cookie}: a client stays on the backend that first served it.
    """

    def test_stickyAcrossRequestsAndAfterBackendGoesAway(self) -> None:
        """
        The first response sets a signed cookie; requests carrying it go to
        the same backend without a new cookie; when that backend dies the
        request goes elsewhere and the cookie is re-issued; a forged cookie
        is ignored without an error.
        """
        backends = [ScriptedBackend(f"s{i}") for i in (1, 2, 3)]
        for backend in backends:
            self.addCleanup(backend.stop)
        lb = Lbtwist(self, config(backends, {"sticky_cookie": "lb"}))
        client = Client(lb.port)
        self.addCleanup(client.close)
        first, response = servedBy(client)
        cookie = response.header(b"set-cookie")
        assert cookie is not None
        self.assertTrue(cookie.startswith(b"lb="))
        self.assertIn(b"; HttpOnly; SameSite=Lax", cookie)
        value = cookie.split(b";")[0].decode()
        for _ in range(5):
            label, response = servedBy(client, [("Cookie", f"other=1; {value}")])
            self.assertEqual(label, first)
            self.assertIsNone(response.header(b"set-cookie"))

        backends[int(first[1:]) - 1].stop()
        second, response = servedBy(client, [("Cookie", value)])
        self.assertNotEqual(second, first)
        renewed = response.header(b"set-cookie")
        assert renewed is not None
        value = renewed.split(b";")[0].decode()
        label, response = servedBy(client, [("Cookie", value)])
        self.assertEqual(label, second)

        forged = value[:-2] + ("AA" if not value.endswith("AA") else "BB")
        label, response = servedBy(client, [("Cookie", forged)])
        self.assertIsNotNone(response.header(b"set-cookie"))


class SlowStartTests(SynchronousTestCase):
    """
    C{slow_start}: a backend that comes up gets a small, growing share.
    """

    def test_splitOfAThousandRequests(self) -> None:
        """
        A backend that has just come up, next to one that has been up for
        longer than C{slow_start = 5}, gets well under half of the next
        1,000 requests (its weight ramps from 10% as they are sent).
        """
        late = ScriptedBackend("late")
        early = ScriptedBackend("early")
        for backend in (late, early):
            self.addCleanup(backend.stop)
        late.stop()
        lb = Lbtwist(
            self,
            config(
                [early, late],
                {"strategy": "weighted-round-robin", "slow_start": 5.0},
                {"check": "tcp", "interval": 0.2, "timeout": 0.5, "rise": 1},
            ),
        )
        lb.waitForLine(r"backend app/b1 \(.*\) is up", 10)
        # Past the early backend's own slow start.
        time.sleep(5.0)
        mark = lb.mark()
        late.start()
        lb.waitForLine(r"backend app/b2 \(.*\) is up", 10, since=mark)
        client = Client(lb.port)
        self.addCleanup(client.close)
        started = time.monotonic()
        counts = Counter(servedBy(client)[0] for _ in range(1000))
        elapsed = time.monotonic() - started
        self.assertEqual(sum(counts.values()), 1000)
        self.assertGreater(counts["late"], 50)
        if elapsed < 2.5:
            # Its weight was at most 10% + 90% * 2.5 / 5 = 55% of the
            # early one's: at most 35% of the requests.
            self.assertLess(counts["late"], 350, elapsed)


class PeakEWMATests(SynchronousTestCase):
    """
    C{peak-ewma}: traffic moves away from a backend that turns slow.
    """

    def test_movesAwayFromSlowBackend(self) -> None:
        """
        With three backends at about 1 ms, each gets a fair share; when one
        turns to 50 ms it gets less than a tenth of the next requests.
        """
        backends = [SlowBackend(f"e{i}") for i in (1, 2, 3)]
        for backend in backends:
            backend.delay = 0.001
            self.addCleanup(backend.stop)
        lb = Lbtwist(self, config(backends, {"strategy": "peak-ewma"}))
        client = Client(lb.port)
        self.addCleanup(client.close)
        before = Counter(servedBy(client)[0] for _ in range(150))
        self.assertEqual(set(before), {"e1", "e2", "e3"})
        backends[0].delay = 0.050
        after = Counter(servedBy(client)[0] for _ in range(200))
        self.assertLess(after["e1"], 20)


class ConsistentHashTests(SynchronousTestCase):
    """
    C{consistent-hash}: a key stays on one backend; C{explain} agrees.
    """

    def test_keyStaysAndExplainAgrees(self) -> None:
        """
        Requests with the same C{X-User} go to one backend, the one
        C{explain} names for that user; different users spread out.
        """
        backends = [ScriptedBackend(f"h{i}") for i in (1, 2, 3)]
        for backend in backends:
            self.addCleanup(backend.stop)
        lb = Lbtwist(
            self,
            config(
                backends,
                {"strategy": "consistent-hash", "hash_key": "header:X-User"},
                admin=True,
            ),
        )
        client = Client(lb.port)
        self.addCleanup(client.close)
        owners = {}
        for user in ("ann", "bob", "cy", "dee", "eve", "fay"):
            answer = explain(lb, "header.X-User=" + user)
            self.assertEqual(answer["key"], user)
            labels = {servedBy(client, [("X-User", user)])[0] for _ in range(5)}
            self.assertEqual(labels, {"h" + answer["backend"][1:]})
            self.assertEqual(answer["why"], f"hash -> {answer['backend']}")
            owners[user] = answer["backend"]
        self.assertGreater(len(set(owners.values())), 1)


class ExplainTests(SynchronousTestCase):
    """
    C{explain} agrees with the next real request, and the access log says
    why each request went where it went.
    """

    def test_explainThenRequest(self) -> None:
        """
        For a round robin pool, the backend C{explain} names is the one the
        next request reaches, every time; the access log's C{choice} is the
        explanation.
        """
        backends = [ScriptedBackend(f"r{i}") for i in (1, 2, 3)]
        for backend in backends:
            self.addCleanup(backend.stop)
        lb = Lbtwist(
            self,
            config(
                backends,
                {"strategy": "round-robin"},
                admin=True,
                accessLog="access.log",
            ),
        )
        client = Client(lb.port)
        self.addCleanup(client.close)
        explained = []
        for _ in range(6):
            answer = explain(lb)
            label, _ = servedBy(client)
            self.assertEqual(label, "r" + answer["backend"][1:])
            explained.append(answer["why"])
        self.assertEqual(
            explained,
            [f"round robin: b{i}" for i in (1, 2, 3, 1, 2, 3)],
        )
        records = accessLogRecords(f"{lb.directory}/access.log", 6)
        self.assertEqual(
            [(r["strategy"], r["choice"]) for r in records],
            [("round-robin", why) for why in explained],
        )


class ReplayTests(SynchronousTestCase):
    """
    C{python -m lbtwist simulate --replay} reads the JSON access log of a
    real lbtwist.
    """

    def test_replayRealLog(self) -> None:
        """
        The requests lbtwist logged, with the header it was told to record,
        are replayed: a consistent-hash run by that header reports every
        request answered and the keys moved.
        """
        backends = [ScriptedBackend(f"p{i}") for i in (1, 2, 3)]
        for backend in backends:
            self.addCleanup(backend.stop)
        text = config(backends, {}, accessLog="access.log").replace(
            'access_log_format = "json"',
            'access_log_format = "json"\naccess_log_headers = ["X-User"]',
        )
        lb = Lbtwist(self, text)
        client = Client(lb.port)
        self.addCleanup(client.close)
        for index in range(60):
            servedBy(client, [("X-User", f"user{index % 12}")])
        path = f"{lb.directory}/access.log"
        records = accessLogRecords(path, 60)
        self.assertEqual(records[0]["headers"], {"X-User": "user0"})
        simulated = text.replace(
            'name = "app"', 'name = "app"\nstrategy = "consistent-hash"\n'
            'hash_key = "header:X-User"', 1
        )
        configPath = f"{lb.directory}/simulated.toml"
        with open(configPath, "w") as f:
            f.write(simulated)
        result = subprocess.run(
            [sys.executable, "-m", "lbtwist", "simulate", configPath, "--replay", path],
            capture_output=True,
            env=dict(os.environ, PYTHONPATH=PROJECT_ROOT),
            timeout=120,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        report = result.stdout.decode()
        self.assertTrue(report.startswith("replay of 60 log lines, seed 1\n"), report)
        self.assertIn('pool "app", strategy consistent-hash\n', report)
        self.assertIn("; 60 answered, failed: 0 x 502, 0 x 503;", report)
        self.assertIn("keys moved: ", report)
