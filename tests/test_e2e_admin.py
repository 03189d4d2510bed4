"""
End-to-end tests of the admin listener, access log and runtime drain
through a real C{twistd -n lbtwist} on loopback.
"""

from __future__ import annotations

import json
import os
import tempfile
import urllib.error
import urllib.request
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from .harness import (
    jsonLogRecords,
    Lbtwist,
    ScriptedBackend,
    exchange,
    parseResponses,
    request,
    webConfig,
)

TOKEN = "e2e-token"


def configText(b1: ScriptedBackend, b2: ScriptedBackend, directory: str) -> str:
    pool = webConfig([b1, b2]).replace(
        'name = "app"\n', 'name = "app"\nstrategy = "weighted-round-robin"\n', 1
    )
    return pool + f"""
[admin]
listen = "tcp:0:interface=127.0.0.1"
token = "{TOKEN}"

[settings]
access_log = "{os.path.join(directory, 'access.log')}"
access_log_format = "json"
state_file = "{os.path.join(directory, 'state.json')}"
"""


class AdminTests(SynchronousTestCase):
    """
    The admin API, metrics, page, access log and persistence of runtime
    changes.
    """

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="lbtwist-admin-")
        self.b1 = ScriptedBackend("b1")
        self.b2 = ScriptedBackend("b2")
        self.addCleanup(self.b1.close)
        self.addCleanup(self.b2.close)
        self.lb = self.start()

    def start(self) -> Lbtwist:
        return Lbtwist(self, configText(self.b1, self.b2, self.directory))

    def admin(
        self, method: str, path: str, body: Any = None, token: str | None = TOKEN,
        lb: Lbtwist | None = None,
    ) -> tuple[int, bytes, dict[str, str]]:
        port = (lb or self.lb).ports["admin"]
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}", data=data, method=method
        )
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=5) as response:
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read(), dict(e.headers)

    def get(self, n: int) -> list[bytes]:
        bodies = []
        for _ in range(n):
            received, _ = exchange(
                self.lb.ports["web"],
                request("GET", "/x", [("Connection", "close")]),
                timeout=5,
            )
            [response] = parseResponses(received)
            self.assertEqual(response.status, 200)
            bodies.append(response.body)
        return bodies

    def pools(self) -> dict[str, Any]:
        status, body, _ = self.admin("GET", "/api/pools")
        self.assertEqual(status, 200)
        result: dict[str, Any] = json.loads(body)
        return result

    def test_tokenRequired(self) -> None:
        """
        Without the token, or with a wrong one, every admin URL is a 401.
        """
        for path in ["/", "/api/pools", "/metrics"]:
            for token in [None, "wrong"]:
                status, body, headers = self.admin("GET", path, token=token)
                self.assertEqual(status, 401, (path, token))
        status, _, _ = self.admin(
            "POST", "/api/pools/app/backends/b1/drain", token="wrong"
        )
        self.assertEqual(status, 401)
        self.assertEqual(
            [b["state"] for b in self.pools()["pools"][0]["backends"]], ["up", "up"]
        )

    def test_poolsCountRequests(self) -> None:
        """
        The JSON API lists every backend with its counters.
        """
        self.get(4)
        [pool] = self.pools()["pools"]
        self.assertEqual(pool["name"], "app")
        self.assertEqual(pool["strategy"], "weighted-round-robin")
        self.assertEqual(
            [(b["name"], b["url"], b["weight"], b["state"], b["requests"], b["active"])
             for b in pool["backends"]],
            [("b1", self.b1.url, 1, "up", 2, 0), ("b2", self.b2.url, 1, "up", 2, 0)],
        )
        for backend in pool["backends"]:
            self.assertEqual(set(backend["health"]), {"ok", "checked_at", "detail"})

    def test_drainPersistsAcrossRestart(self) -> None:
        """
        A drained backend gets no new requests, and stays drained after a
        restart until it is enabled again.
        """
        status, body, _ = self.admin("POST", "/api/pools/app/backends/b1/drain")
        self.assertEqual(status, 200)
        drained = json.loads(body)
        self.assertEqual((drained["name"], drained["state"]), ("b1", "draining"))
        self.assertIn("active", drained)
        self.assertEqual(set(self.get(4)), {b"b2 GET /x"})
        self.lb.stop()
        self.lb = self.start()
        self.assertEqual(
            [b["state"] for b in self.pools()["pools"][0]["backends"]],
            ["draining", "up"],
        )
        status, body, _ = self.admin("POST", "/api/pools/app/backends/b1/enable")
        self.assertEqual((status, json.loads(body)["state"]), (200, "up"))
        self.assertEqual(len(set(self.get(4))), 2)

    def test_weightAndErrors(self) -> None:
        """
        PUT weight changes it; bad weights, unknown pools and backends are
        refused with JSON errors and change nothing.
        """
        status, body, _ = self.admin(
            "PUT", "/api/pools/app/backends/b2/weight", {"weight": 3}
        )
        self.assertEqual((status, json.loads(body)["weight"]), (200, 3))
        for bad in [{"weight": 0}, {"weight": "2"}, {"weight": True}, {}, [1]]:
            status, body, _ = self.admin(
                "PUT", "/api/pools/app/backends/b2/weight", bad
            )
            self.assertEqual(status, 400, bad)
            self.assertIn("error", json.loads(body))
        status, body, _ = self.admin("POST", "/api/pools/nope/backends/b1/drain")
        self.assertEqual(status, 404)
        self.assertIn("nope", json.loads(body)["error"])
        status, body, _ = self.admin("POST", "/api/pools/app/backends/nope/disable")
        self.assertEqual(status, 404)
        self.assertEqual(
            [(b["state"], b["weight"]) for b in self.pools()["pools"][0]["backends"]],
            [("up", 1), ("up", 3)],
        )

    def test_metricsAndPage(self) -> None:
        """
        The metrics and the stats page show the backends and their counts.
        """
        self.get(2)
        status, body, headers = self.admin("GET", "/metrics")
        self.assertEqual(status, 200)
        text = body.decode()
        self.assertIn('lbtwist_backend_requests_total{backend="b1",pool="app"} 1.0', text)
        self.assertIn('lbtwist_backend_up{backend="b2",pool="app"} 1.0', text)
        self.assertIn('lbtwist_frontend_connections_total{frontend="web"}', text)
        status, body, headers = self.admin("GET", "/")
        self.assertEqual(status, 200)
        self.assertIn("text/html", headers.get("Content-Type", ""))
        for name in [b"b1", b"b2", b"app", b"web"]:
            self.assertIn(name, body)

    def test_accessLog(self) -> None:
        """
        Every request is one JSON line with the pool, backend and attempts;
        a refused request is logged too.
        """
        self.get(2)
        exchange(self.lb.ports["web"], b"GET / HTTP/1.1\r\n\r\n", timeout=5)
        path = os.path.join(self.directory, "access.log")
        lines = []
        for _ in range(50):
            lines = jsonLogRecords(path)
            if len(lines) >= 3:
                break
            import time

            time.sleep(0.1)
        self.assertEqual(len(lines), 3)
        first = lines[0]
        self.assertEqual(
            (first["method"], first["target"], first["status"], first["pool"],
             first["backend"], first["attempts"], first["client"]),
            ("GET", "/x", 200, "app", "b1", 1, "127.0.0.1"),
        )
        self.assertEqual(lines[2]["status"], 400)
