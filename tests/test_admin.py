# -*- test-case-name: tests.test_admin -*-
"""
Tests for L{lbtwist.admin}: every endpoint and error, through L{StubTreq}
(no real sockets).
"""

from __future__ import annotations

import json
import re
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

import lbtwist
from lbtwist.admin import Sessions, adminResource, renderLoginPage, renderStatsPage
from lbtwist.backend import BackendState
from lbtwist.balancer import Balancer, poolsJSON
from lbtwist.config import BackendConfig, FrontendConfig, HealthCheckConfig, PoolConfig
from lbtwist.metrics import metricsRegistry
from lbtwist.pool import BackendPool
from lbtwist.stats import FrontendStats
from lbtwist.strategies import RoundRobin

from .test_balancer import RecordingStateFile, makeBalancer

TOKEN = "s3cret-token"
BASE = "http://127.0.0.1:8081"


class Response:
    """
    What a test needs of a response.

    @ivar code: The status code.
    @ivar headers: The headers, lower-cased names to lists of values.
    @ivar body: The body.
    """

    def __init__(
        self, code: int, headers: dict[bytes, list[bytes]], body: bytes
    ) -> None:
        self.code = code
        self.headers = headers
        self.body = body

    def header(self, name: bytes) -> bytes | None:
        """
        @return: The single value of a header, or L{None}.
        """
        values = self.headers.get(name.lower())
        return None if values is None else values[0]

    def json(self) -> Any:
        """
        @return: The body as JSON.
        """
        return json.loads(self.body)


class AdminTestCase(SynchronousTestCase):
    """
    An admin resource over the balancer of L{makeBalancer}, with a
    L{RecordingStateFile}, on a clock 3600 seconds after the start.
    """

    token: str | None = None

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.stateFile = RecordingStateFile()
        self.balancer = makeBalancer(self.stateFile, clock=self.clock)
        self.clock.advance(3600)
        self.resource = adminResource(
            self.balancer,
            self.clock,
            metricsRegistry(self.balancer, self.clock),
            self.token,
            started=1000,
        )
        self.treq = StubTreq(self.resource)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> Response:
        """
        Make a request to the admin resource.

        @param method: The method.
        @param path: The path, e.g. C{"/api/pools"}.
        @param body: The request body.
        @param headers: More request headers.
        @param token: A bearer token to send.
        @return: The response.
        """
        allHeaders = dict(headers or {})
        if token is not None:
            allHeaders["Authorization"] = f"Bearer {token}"
        d = self.treq.request(
            method,
            BASE + path,
            data=body,
            headers=allHeaders,
            allow_redirects=False,
        )
        response = self.successResultOf(d)
        content = self.successResultOf(response.content())
        headers_ = {
            name.lower(): values for name, values in response.headers.getAllRawHeaders()
        }
        return Response(response.code, headers_, content)

    def assertJSONError(self, response: Response, code: int, message: str) -> None:
        """
        Assert that C{response} is a JSON error with this code and message.
        """
        self.assertEqual(response.code, code, response.body)
        self.assertEqual(response.header(b"content-type"), b"application/json")
        self.assertEqual(response.json(), {"error": message})

    def snapshot(self) -> list[tuple[str, str, str, int]]:
        """
        @return: Every backend's pool, name, state and weight.
        """
        return [
            (backend.pool, backend.name, backend.state.value, backend.weight)
            for pool in self.balancer.pools.values()
            for backend in pool.backends
        ]


class StatsPageTests(AdminTestCase):
    """
    Tests for C{GET /}.
    """

    def test_page(self) -> None:
        """
        The page is UTF-8 HTML that refreshes itself every 5 seconds and
        shows the version, the uptime, every frontend, pool and backend.
        """
        response = self.request("GET", "/")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.header(b"content-type"), b"text/html; charset=utf-8")
        self.assertEqual(response.header(b"cache-control"), b"no-store")
        self.assertIn(
            b"default-src 'none'", response.header(b"content-security-policy") or b""
        )
        page = response.body.decode("utf-8")
        self.assertTrue(page.startswith("<!DOCTYPE html>"))
        self.assertIn('<meta http-equiv="refresh" content="5">', page)
        self.assertIn(lbtwist.__version__, page)
        self.assertIn("uptime <b>1h 0m 0s</b>", page)
        for text in ["Frontends", "web", "tcp:8080", "Pool app", "Pool api"]:
            self.assertIn(text, page)
        for url in ["http://127.0.0.1:9001", "http://127.0.0.1:9101"]:
            self.assertIn(url, page)
        self.assertNotIn("<script", page)

    def test_head(self) -> None:
        """
        C{HEAD /} is answered like C{GET /}, without a body.
        """
        response = self.request("HEAD", "/")
        self.assertEqual((response.code, response.body), (200, b""))

    def test_statesAndButtons(self) -> None:
        """
        Each backend's state cell has its state's class, and the buttons
        that would change nothing are disabled.
        """
        self.balancer.drain("app", "a")
        self.balancer.disable("app", "b")
        page = self.request("GET", "/").body.decode()
        self.assertIn('<td class="state draining"><span class="runtime"', page)
        self.assertIn('<td class="state disabled"><span class="runtime"', page)
        self.assertIn('<td class="state up">up<span', page)

        def button(backend: str, action: str, disabled: bool) -> str:
            return (
                f'<form method="post" action="/pools/app/backends/{backend}/'
                f'{action}"><button type="submit" title="[^"]*"'
                f'{" disabled" if disabled else ""}>'
                f"{action.capitalize()}</button></form>"
            )

        for backend, action, disabled in [
            ("a", "drain", True),
            ("a", "enable", False),
            ("a", "reset", False),
            ("c", "enable", True),
            ("c", "reset", True),
        ]:
            self.assertRegex(page, button(backend, action, disabled))

    def test_latencyAndChecks(self) -> None:
        """
        Latency is shown in milliseconds with one decimal, or a dash when
        unknown; the last check with its result, detail and age, or
        "never".
        """
        backend = self.balancer.backend("app", "a")
        backend.stats.recordResponse(200, 0.01234, self.clock.seconds())
        backend.checkResult(False, "HTTP 500", self.clock.seconds() - 3)
        page = self.request("GET", "/").body.decode()
        self.assertIn('<td class="num">12.3 ms</td>', page)
        self.assertIn('<td class="num muted">–</td>', page)
        self.assertIn(
            '<span class="fail">✗</span> HTTP 500 <span class="muted">· 3 s ago</span>',
            page,
        )
        self.assertIn('<span class="muted">no check yet</span>', page)

    def test_countsHighlighted(self) -> None:
        """
        Counts are right-aligned with thousands separators; non-zero 5xx
        and failure counts are highlighted.
        """
        backend = self.balancer.backend("app", "c")
        backend.requests = 12345
        backend.stats.recordResponse(502, 0.1, self.clock.seconds())
        page = self.request("GET", "/").body.decode()
        self.assertIn('<td class="num">12,345</td>', page)
        self.assertIn('<td class="num bad">1</td>', page)

    def test_frontends(self) -> None:
        """
        The frontends table shows connections, bytes (for humans, exact in
        the tooltip) and responses by class.
        """
        [(frontend, stats)] = self.balancer.frontends
        stats.connectionOpened()
        stats.received(2048)
        stats.sent(5 * 1024 * 1024 + 1)
        stats.recordResponse(200)
        stats.recordResponse(503)
        page = self.request("GET", "/").body.decode()
        self.assertIn('<td class="num" title="2,048 bytes">2.0 KiB</td>', page)
        self.assertIn('<td class="num" title="5,242,881 bytes">5.0 MiB</td>', page)
        self.assertIn('<td class="num bad">1</td>', page)

    def test_namesEscaped(self) -> None:
        """
        Every name on the page is HTML-escaped, and names in form actions
        are percent-encoded.
        """
        evil = '<img src=x onerror="alert(1)">&'
        backend = BackendConfig(
            url="http://127.0.0.1:9001",
            scheme="http",
            host="127.0.0.1",
            port=9001,
            name=evil,
        )
        pool = BackendPool(
            PoolConfig(
                name="a/b <c>",
                backends=(backend,),
                health=HealthCheckConfig(check="none"),
            )
        )
        frontend = FrontendConfig(name="<fe>", listen=("tcp:80",), pool="a/b <c>")
        balancer = Balancer([pool], [(frontend, FrontendStats())], self.clock, None)
        pool.backends[0].reason = "<reason>"
        page = renderStatsPage(balancer, self.clock.seconds(), 1000)
        self.assertNotIn("<img", page)
        self.assertNotIn("<fe>", page)
        self.assertNotIn("<c>", page)
        self.assertNotIn("<reason>", page)
        self.assertIn("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;", page)
        self.assertIn(
            'action="/pools/a%2Fb%20%3Cc%3E/backends/'
            '%3Cimg%20src%3Dx%20onerror%3D%22alert%281%29%22%3E%26/drain"',
            page,
        )

    def test_wrongMethod(self) -> None:
        """
        Only C{GET} and C{HEAD} are allowed on the page.
        """
        response = self.request("POST", "/")
        self.assertJSONError(
            response, 405, "method POST not allowed here (allowed: GET, HEAD)"
        )
        self.assertEqual(response.header(b"allow"), b"GET, HEAD")

    def test_unknownPage(self) -> None:
        """
        An unknown path is a JSON 404.
        """
        self.assertJSONError(self.request("GET", "/nope"), 404, "no such page: /nope")
        self.assertJSONError(self.request("GET", "/api"), 404, "no such page: /api")
        self.assertJSONError(
            self.request("GET", "/api/other"), 404, "no such page: /api/other"
        )


class PoolsAPITests(AdminTestCase):
    """
    Tests for C{/api/pools}.
    """

    def test_pools(self) -> None:
        """
        C{GET /api/pools} is every pool and backend as JSON.
        """
        self.balancer.drain("api", "x")
        for path in ["/api/pools", "/api/pools/"]:
            response = self.request("GET", path)
            self.assertEqual(response.code, 200)
            self.assertEqual(response.header(b"content-type"), b"application/json")
            self.assertEqual(
                response.json(), poolsJSON(self.balancer, self.clock.seconds())
            )
        [app, api] = response.json()["pools"]
        self.assertEqual(
            (app["name"], app["strategy"], app["uses_weights"]),
            ("app", "weighted-round-robin", True),
        )
        self.assertEqual(
            [(b["name"], b["state"]) for b in api["backends"]], [("x", "draining")]
        )
        self.assertEqual(
            (
                app["queue"],
                app["max_queue"],
                app["queue_timeout"],
                app["queue_timeouts"],
                app["queue_full"],
                app["backends"][0]["max_connections"],
            ),
            (0, 1000, 5.0, 0, 0, None),
        )
        self.assertEqual(
            set(app["backends"][0]),
            {
                "name",
                "url",
                "address",
                "weight",
                "state",
                "reason",
                "active",
                "max_connections",
                "requests",
                "failures",
                "failures_by_reason",
                "responses",
                "server_errors",
                "latency_p50_ms",
                "latency_p99_ms",
                "health",
                "configured_weight",
                "overrides",
                "state_since",
                "state_seconds",
                "check_history",
            },
        )

    def test_onePoolAndBackend(self) -> None:
        """
        C{GET /api/pools/<pool>} and C{GET /api/pools/<pool>/backends/<b>}
        show one pool and one backend.
        """
        pool = self.request("GET", "/api/pools/api").json()
        self.assertEqual((pool["name"], len(pool["backends"])), ("api", 1))
        backend = self.request("GET", "/api/pools/app/backends/b").json()
        self.assertEqual((backend["name"], backend["weight"]), ("b", 2))

    def test_unknownPoolOrBackend(self) -> None:
        """
        An unknown pool or backend is a 404 naming it.
        """
        self.assertJSONError(
            self.request("GET", "/api/pools/nope"), 404, 'unknown pool "nope"'
        )
        self.assertJSONError(
            self.request("GET", "/api/pools/app/backends/nope"),
            404,
            'pool "app" has no backend "nope"',
        )
        self.assertJSONError(
            self.request("GET", "/api/pools/app/other/a"),
            404,
            "no such API path: /api/pools/app/other/a",
        )

    def test_wrongMethodOnList(self) -> None:
        """
        Only C{GET} and C{HEAD} are allowed on C{/api/pools}.
        """
        response = self.request("DELETE", "/api/pools")
        self.assertJSONError(
            response, 405, "method DELETE not allowed here (allowed: GET, HEAD)"
        )
        self.assertEqual(response.header(b"allow"), b"GET, HEAD")

    def test_drain(self) -> None:
        """
        C{POST .../drain} drains the backend and answers with its JSON, with
        its state and active count; the change is persisted.
        """
        self.balancer.backend("app", "a").active = 3
        response = self.request("POST", "/api/pools/app/backends/a/drain")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.header(b"content-type"), b"application/json")
        body = response.json()
        self.assertEqual(
            (body["name"], body["state"], body["active"]), ("a", "draining", 3)
        )
        self.assertEqual(self.stateFile.saved, [{"app": {"a": {"state": "draining"}}}])

    def test_disableAndEnable(self) -> None:
        """
        C{POST .../disable} and C{POST .../enable} disable and enable the
        backend.
        """
        response = self.request("POST", "/api/pools/api/backends/x/disable")
        self.assertEqual((response.code, response.json()["state"]), (200, "disabled"))
        self.assertIs(self.balancer.backend("api", "x").state, BackendState.DISABLED)
        response = self.request("POST", "/api/pools/api/backends/x/enable")
        self.assertEqual((response.code, response.json()["state"]), (200, "up"))
        self.assertEqual(self.stateFile.saved[-1], {})

    def test_weight(self) -> None:
        """
        C{PUT .../weight} with C{{"weight": N}} sets the weight and answers
        with the backend's JSON.
        """
        response = self.request(
            "PUT",
            "/api/pools/app/backends/c/weight",
            json.dumps({"weight": 9}).encode(),
            {"Content-Type": "application/json"},
        )
        self.assertEqual((response.code, response.json()["weight"]), (200, 9))
        self.assertEqual(self.balancer.backend("app", "c").weight, 9)
        self.assertEqual(self.stateFile.saved, [{"app": {"c": {"weight": 9}}}])

    def test_badWeight(self) -> None:
        """
        A bad body or weight is a 400 and changes nothing.
        """
        before = self.snapshot()
        shape = 'the body must be JSON like {"weight": 3}'
        positive = "weight must be a positive integer"
        for body, message in [
            (b"", shape),
            (b"nope", shape),
            (b"[1]", shape),
            (b"{}", shape),
            (b'{"weight": 0}', positive),
            (b'{"weight": -3}', positive),
            (b'{"weight": "2"}', positive),
            (b'{"weight": true}', positive),
            (b'{"weight": 2.5}', positive),
            (b'{"weight": null}', positive),
        ]:
            response = self.request("PUT", "/api/pools/app/backends/a/weight", body)
            self.assertJSONError(response, 400, message)
        self.assertEqual(self.snapshot(), before)
        self.assertEqual(self.stateFile.saved, [])

    def test_unknownNamesChangeNothing(self) -> None:
        """
        Operations on an unknown pool or backend are 404s naming it, and
        change nothing.
        """
        before = self.snapshot()
        for action in ["drain", "disable", "enable"]:
            self.assertJSONError(
                self.request("POST", f"/api/pools/nope/backends/a/{action}"),
                404,
                'unknown pool "nope"',
            )
            self.assertJSONError(
                self.request("POST", f"/api/pools/app/backends/nope/{action}"),
                404,
                'pool "app" has no backend "nope"',
            )
        self.assertJSONError(
            self.request(
                "PUT", "/api/pools/app/backends/nope/weight", b'{"weight": 2}'
            ),
            404,
            'pool "app" has no backend "nope"',
        )
        self.assertEqual(self.snapshot(), before)
        self.assertEqual(self.stateFile.saved, [])

    def test_unknownOperation(self) -> None:
        """
        An unknown operation is a 404.
        """
        self.assertJSONError(
            self.request("POST", "/api/pools/app/backends/a/reboot"),
            404,
            'no such operation: "reboot"',
        )

    def test_wrongMethodOnOperations(self) -> None:
        """
        Operations need C{POST} (C{PUT} for the weight); another method is
        a 405 with C{Allow}, and changes nothing.
        """
        before = self.snapshot()
        for method, path, allowed in [
            ("GET", "/api/pools/app/backends/a/drain", b"POST"),
            ("PUT", "/api/pools/app/backends/a/disable", b"POST"),
            ("POST", "/api/pools/app/backends/a/weight", b"PUT"),
            ("POST", "/api/pools/app/backends/a", b"GET, HEAD"),
        ]:
            response = self.request(method, path, b'{"weight": 3}')
            self.assertEqual(response.code, 405, (method, path))
            self.assertEqual(response.header(b"allow"), allowed)
            self.assertIn("error", response.json())
        self.assertEqual(self.snapshot(), before)

    def test_quotedNames(self) -> None:
        """
        Percent-encoded names in the path are decoded.
        """
        backend = BackendConfig(
            url="http://127.0.0.1:9001",
            scheme="http",
            host="127.0.0.1",
            port=9001,
            name="web 1/α",
        )
        pool = BackendPool(PoolConfig(name="my pool", backends=(backend,)))
        balancer = Balancer([pool], [], self.clock, None)
        registry = metricsRegistry(balancer, self.clock)
        self.treq = StubTreq(adminResource(balancer, self.clock, registry, None))
        response = self.request(
            "POST", "/api/pools/my%20pool/backends/web%201%2F%CE%B1/drain"
        )
        self.assertEqual((response.code, response.json()["name"]), (200, "web 1/α"))

    def test_crossOriginRefused(self) -> None:
        """
        A post whose C{Origin} is not the admin listener itself (a web page
        elsewhere) is a 403 and changes nothing; the same origin is allowed.
        """
        before = self.snapshot()
        for origin in ["http://evil.example", "null", "http://127.0.0.1:9999"]:
            response = self.request(
                "POST", "/api/pools/app/backends/a/drain", headers={"Origin": origin}
            )
            self.assertJSONError(response, 403, "cross-origin request refused")
        self.assertEqual(self.snapshot(), before)
        response = self.request(
            "POST", "/api/pools/app/backends/a/drain", headers={"Origin": BASE}
        )
        self.assertEqual(response.code, 200)


class FormTests(AdminTestCase):
    """
    Tests for the page's buttons, C{POST /pools/<pool>/backends/<b>/<action>}.
    """

    def test_actionsRedirect(self) -> None:
        """
        Each button runs its operation and is answered with a 303 to the
        page.
        """
        for action, state in [
            ("drain", "draining"),
            ("disable", "disabled"),
            ("enable", "up"),
        ]:
            response = self.request(
                "POST",
                f"/pools/app/backends/b/{action}",
                b"",
                {"Origin": BASE, "Content-Type": "application/x-www-form-urlencoded"},
            )
            self.assertEqual(response.code, 303)
            self.assertEqual(response.header(b"location"), b"/")
            self.assertEqual(self.balancer.backend("app", "b").state.value, state)

    def test_errors(self) -> None:
        """
        Unknown names are 404s, other methods 405s, unknown actions 404s and
        cross-origin posts 403s; none changes anything.
        """
        before = self.snapshot()
        self.assertJSONError(
            self.request("POST", "/pools/nope/backends/a/drain"),
            404,
            'unknown pool "nope"',
        )
        self.assertJSONError(
            self.request("POST", "/pools/app/backends/nope/drain"),
            404,
            'pool "app" has no backend "nope"',
        )
        self.assertJSONError(
            self.request("POST", "/pools/app/backends/a/weight"),
            404,
            "no such page: /pools/app/backends/a/weight",
        )
        self.assertEqual(self.request("GET", "/pools/app/backends/a/drain").code, 405)
        self.assertJSONError(
            self.request(
                "POST",
                "/pools/app/backends/a/drain",
                headers={"Origin": "http://evil.example"},
            ),
            403,
            "cross-origin request refused",
        )
        self.assertEqual(self.snapshot(), before)


class MetricsTests(AdminTestCase):
    """
    Tests for C{GET /metrics}.
    """

    def test_metrics(self) -> None:
        """
        The metrics are in the Prometheus text format.
        """
        self.balancer.drain("app", "a")
        response = self.request("GET", "/metrics")
        self.assertEqual(response.code, 200)
        self.assertTrue(
            (response.header(b"content-type") or b"").startswith(b"text/plain")
        )
        self.assertIn(b'lbtwist_backend_up{backend="a",pool="app"} 0.0', response.body)
        self.assertIn(b'lbtwist_backend_up{backend="b",pool="app"} 1.0', response.body)
        self.assertIn(
            b'lbtwist_frontend_connections_total{frontend="web"}', response.body
        )

    def test_wrongMethod(self) -> None:
        """
        Only C{GET} and C{HEAD} are allowed.
        """
        self.assertEqual(self.request("POST", "/metrics").code, 405)


class TokenTests(AdminTestCase):
    """
    With a token, every request needs C{Authorization: Bearer <token>}.
    """

    token = TOKEN

    REQUESTS = [
        ("GET", "/"),
        ("GET", "/api/pools"),
        ("GET", "/metrics"),
        ("GET", "/nope"),
        ("POST", "/api/pools/app/backends/a/drain"),
        ("PUT", "/api/pools/app/backends/a/weight"),
        ("POST", "/pools/app/backends/a/disable"),
    ]

    def test_missingToken(self) -> None:
        """
        Without a token, every URL is a 401 with C{WWW-Authenticate}, and
        nothing changes.
        """
        before = self.snapshot()
        for method, path in self.REQUESTS:
            response = self.request(method, path, b'{"weight": 5}')
            self.assertJSONError(response, 401, "missing bearer token")
            self.assertEqual(
                response.header(b"www-authenticate"), b'Bearer realm="lbtwist"'
            )
        self.assertEqual(self.snapshot(), before)
        self.assertEqual(self.stateFile.saved, [])

    def test_wrongToken(self) -> None:
        """
        A wrong token, or another scheme, is a 401 and changes nothing.
        """
        before = self.snapshot()
        for method, path in self.REQUESTS:
            response = self.request(method, path, b'{"weight": 5}', token="wrong")
            self.assertJSONError(response, 401, "invalid token")
            self.assertEqual(
                response.header(b"www-authenticate"),
                b'Bearer realm="lbtwist", error="invalid_token"',
            )
            response = self.request(
                method, path, headers={"Authorization": f"Basic {TOKEN}"}
            )
            self.assertJSONError(response, 401, "missing bearer token")
        self.assertEqual(self.snapshot(), before)

    def test_rightToken(self) -> None:
        """
        With the right token, every URL works.
        """
        self.assertEqual(self.request("GET", "/", token=TOKEN).code, 200)
        self.assertEqual(self.request("GET", "/api/pools", token=TOKEN).code, 200)
        self.assertEqual(self.request("GET", "/metrics", token=TOKEN).code, 200)
        self.assertEqual(self.request("GET", "/nope", token=TOKEN).code, 404)
        response = self.request("POST", "/api/pools/app/backends/a/drain", token=TOKEN)
        self.assertEqual((response.code, response.json()["state"]), (200, "draining"))
        response = self.request(
            "PUT", "/api/pools/app/backends/a/weight", b'{"weight": 5}', token=TOKEN
        )
        self.assertEqual((response.code, response.json()["weight"]), (200, 5))
        response = self.request("POST", "/pools/app/backends/b/disable", token=TOKEN)
        self.assertEqual(response.code, 303)
        self.assertEqual(
            self.snapshot()[:3],
            [
                ("app", "a", "draining", 5),
                ("app", "b", "disabled", 2),
                ("app", "c", "up", 1),
            ],
        )

    def test_schemeCaseInsensitive(self) -> None:
        """
        The C{Bearer} scheme is matched without regard to case.
        """
        response = self.request(
            "GET", "/api/pools", headers={"Authorization": f"bearer {TOKEN}"}
        )
        self.assertEqual(response.code, 200)


class FormattingTests(SynchronousTestCase):
    """
    Tests for the page's number formatting.
    """

    def test_uptime(self) -> None:
        """
        The uptime is in days, hours, minutes and seconds as needed.
        """
        balancer = makeBalancer()
        for seconds, text in [
            (42, "42s"),
            (125, "2m 5s"),
            (3 * 3600 + 61, "3h 1m 1s"),
            (2 * 86400 + 3 * 3600 + 240, "2d 3h 4m"),
        ]:
            page = renderStatsPage(balancer, 1000 + seconds, 1000)
            self.assertIn(f"uptime <b>{text}</b>", page)

    def test_checkAge(self) -> None:
        """
        The check age is in seconds, then minutes, then hours.
        """
        balancer = makeBalancer()
        backend = balancer.backend("app", "a")
        backend.lastCheckOk, backend.lastCheckDetail = True, "HTTP 200"
        for age, text in [
            (0, "0 s ago"),
            (119, "119 s ago"),
            (600, "10 min ago"),
            (7200, "2 h ago"),
        ]:
            backend.lastCheckAt = 5000 - age
            page = renderStatsPage(balancer, 5000, 1000)
            self.assertIn(f'<span class="muted">· {text}</span>', page)


class AddressRouteTests(AdminTestCase):
    """
    Every route that takes a backend takes its C{host:port} as well as its
    name.
    """

    def test_everyRouteKind(self) -> None:
        """
        Show, POST operations, PUT weight, DELETE overrides and the page's
        forms all find C{127.0.0.1:9001} as backend C{a}.
        """
        address = "127.0.0.1:9001"
        response = self.request("GET", f"/api/pools/app/backends/{address}")
        self.assertEqual((response.code, response.json()["name"]), (200, "a"))
        response = self.request("POST", f"/api/pools/app/backends/{address}/drain")
        self.assertEqual(
            (response.code, response.json()["state"]), (200, "draining")
        )
        response = self.request(
            "PUT", f"/api/pools/app/backends/{address}/weight", b'{"weight": 4}'
        )
        self.assertEqual(
            (response.code, response.json()["overrides"]),
            (200, {"state": "draining", "weight": 4}),
        )
        response = self.request("DELETE", f"/api/pools/app/backends/{address}/overrides")
        self.assertEqual(
            (response.code, response.json()["weight"], response.json()["state"]),
            (200, 1, "up"),
        )
        response = self.request("POST", f"/pools/app/backends/{address}/disable")
        self.assertEqual(response.code, 303)
        self.assertEqual(self.balancer.backend("app", "a").state.value, "disabled")
        self.assertEqual(self.stateFile.saved[-1], {"app": {"a": {"state": "disabled"}}})

    def test_ipv6AndUnknown(self) -> None:
        """
        A bracketed IPv6 address, percent-encoded or not, is an address; an
        address no backend has is a 404.
        """
        self.assertJSONError(
            self.request("GET", "/api/pools/app/backends/%5B::1%5D:9001"),
            404,
            'pool "app" has no backend "[::1]:9001"',
        )
        self.assertJSONError(
            self.request("POST", "/api/pools/app/backends/127.0.0.1:9999/drain"),
            404,
            'pool "app" has no backend "127.0.0.1:9999"',
        )


class OverridesAPITests(AdminTestCase):
    """
    C{DELETE .../overrides}, the Reset button, and the marks of overridden
    values.
    """

    def test_delete(self) -> None:
        """
        C{DELETE .../overrides} answers the backend's JSON with its
        configured weight and state, and empties its override.
        """
        self.balancer.setWeight("app", "b", 7)
        self.balancer.disable("app", "b")
        response = self.request("DELETE", "/api/pools/app/backends/b/overrides")
        self.assertEqual(response.code, 200)
        view = response.json()
        self.assertEqual(
            (view["weight"], view["configured_weight"], view["state"], view["overrides"]),
            (2, 2, "up", {}),
        )
        self.assertEqual(self.stateFile.saved[-1], {})

    def test_deleteMethods(self) -> None:
        """
        Only C{DELETE} is allowed on C{.../overrides}; a cross-origin one is
        refused.
        """
        response = self.request("POST", "/api/pools/app/backends/b/overrides")
        self.assertJSONError(
            response, 405, "method POST not allowed here (allowed: DELETE)"
        )
        self.balancer.drain("app", "b")
        response = self.request(
            "DELETE",
            "/api/pools/app/backends/b/overrides",
            headers={"Origin": "http://evil.example", "Host": "127.0.0.1:8081"},
        )
        self.assertJSONError(response, 403, "cross-origin request refused")
        self.assertEqual(self.balancer.backend("app", "b").state.value, "draining")

    def test_resetButton(self) -> None:
        """
        The page's Reset button does what C{DELETE .../overrides} does and
        redirects to the page; a cross-origin post is refused.
        """
        self.balancer.setWeight("app", "c", 3)
        response = self.request(
            "POST",
            "/pools/app/backends/c/reset",
            headers={"Origin": "http://other.example:8081", "Host": "127.0.0.1:8081"},
        )
        self.assertEqual(response.code, 403)
        self.assertEqual(self.balancer.backend("app", "c").weight, 3)
        response = self.request("POST", "/pools/app/backends/c/reset")
        self.assertEqual((response.code, response.header(b"location")), (303, b"/"))
        self.assertEqual(self.balancer.backend("app", "c").weight, 1)
        self.assertEqual(self.stateFile.saved[-1], {})

    def test_pageMarksOverrides(self) -> None:
        """
        An overridden weight is shown with an asterisk and a title naming
        the configured weight; an overridden state too.
        """
        self.balancer.setWeight("app", "b", 5)
        self.balancer.drain("app", "c")
        page = self.request("GET", "/").body.decode()
        self.assertIn(
            '<span class="runtime" title="set at runtime; configured 2">5*</span>', page
        )
        self.assertIn(
            '<span class="runtime" title="set at runtime; configured: enabled">'
            "draining*</span>",
            page,
        )

    def test_weightIgnored(self) -> None:
        """
        C{PUT weight} on a pool whose strategy ignores weights is a 409
        with a JSON error saying so.
        """
        self.balancer.pools["app"].strategy = RoundRobin()
        response = self.request(
            "PUT", "/api/pools/app/backends/a/weight", b'{"weight": 4}'
        )
        self.assertEqual(response.code, 409)
        self.assertIn("ignores weights", response.json()["error"])
        self.assertEqual(self.balancer.backend("app", "a").weight, 1)


class PageHistoryTests(AdminTestCase):
    """
    The page shows the time in the current state and the check history.
    """

    def test_stateSinceAndHistory(self) -> None:
        """
        The state cell says for how long; the check cell has a mark per
        remembered check, with its age and detail as a title, and grey
        marks for the checks not yet made.
        """
        backend = self.balancer.backend("app", "a")
        now = self.clock.seconds()
        backend.setState(BackendState.DOWN, "3 consecutive failures", now - 125)
        backend.checkResult(True, "HTTP 200", now - 4)
        backend.setState(BackendState.DOWN, "3 consecutive failures", now - 125)
        backend.checkResult(False, "connection refused", now - 2)
        page = self.request("GET", "/").body.decode()
        # A failed check of a down backend becomes its reason.
        self.assertIn(
            'for 2m 5s</span><span class="reason">connection refused</span>', page
        )
        self.assertIn(
            '<span class="history"><i class="passed" title="4 s ago: passed, '
            'HTTP 200"></i><i class="failed" title="2 s ago: failed, '
            'connection refused"></i>' + '<i class="none" title="no check yet"></i>' * 8,
            page,
        )


class LoginTests(AdminTestCase):
    """
    With a token, a browser logs in with a form and gets a signed session
    cookie; API clients keep the bearer token.
    """

    token = TOKEN
    BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}

    def login(self, token: str = TOKEN, headers: dict[str, str] | None = None) -> Response:
        """
        Post the login form.
        """
        return self.request(
            "POST",
            "/login",
            f"token={token}".encode(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                **(headers or {}),
            },
        )

    def cookie(self, response: Response) -> str:
        """
        @return: The C{name=value} of the session cookie C{response} sets.
        """
        [header] = response.headers[b"set-cookie"]
        return header.decode().split(";")[0]

    def test_browserGetsLoginForm(self) -> None:
        """
        A browser asking for the page without credentials gets the login
        form with status 401; an API client gets a JSON 401.
        """
        response = self.request("GET", "/", headers=self.BROWSER)
        self.assertEqual(response.code, 401)
        self.assertEqual(response.header(b"content-type"), b"text/html; charset=utf-8")
        self.assertIn(b'<form class="login" method="post" action="/login">', response.body)
        self.assertIn(b'type="password"', response.body)
        response = self.request("GET", "/api/pools", headers=self.BROWSER)
        self.assertJSONError(response, 401, "missing bearer token")
        self.assertEqual(self.request("GET", "/login").code, 200)

    def test_login(self) -> None:
        """
        The right token sets a C{Secure}, C{HttpOnly}, C{SameSite=Strict}
        session cookie for 12 hours and redirects to the page, which the
        cookie then opens, with a log-out button.
        """
        response = self.login()
        self.assertEqual((response.code, response.header(b"location")), (303, b"/"))
        [header] = response.headers[b"set-cookie"]
        self.assertEqual(
            header.split(b"; ")[1:],
            [b"Path=/", b"Max-Age=43200", b"Secure", b"HttpOnly", b"SameSite=Strict"],
        )
        cookie = {"Cookie": self.cookie(response)}
        page = self.request("GET", "/", headers={**self.BROWSER, **cookie})
        self.assertEqual(page.code, 200)
        self.assertIn(b'<form method="post" action="/logout">', page.body)
        self.assertEqual(self.request("GET", "/api/pools", headers=cookie).code, 200)
        response = self.request("POST", "/pools/app/backends/a/drain", headers=cookie)
        self.assertEqual(response.code, 303)
        self.assertEqual(self.balancer.backend("app", "a").state.value, "draining")

    def test_wrongToken(self) -> None:
        """
        A wrong token shows the form again with status 401 and no cookie.
        """
        response = self.login("wrong")
        self.assertEqual(response.code, 401)
        self.assertIn(b"Wrong token.", response.body)
        self.assertNotIn(b"set-cookie", response.headers)

    def test_crossOriginLogin(self) -> None:
        """
        A login form posted from another origin is refused.
        """
        response = self.login(
            headers={"Origin": "http://evil.example", "Host": "127.0.0.1:8081"}
        )
        self.assertJSONError(response, 403, "cross-origin request refused")

    def test_expiredAndForged(self) -> None:
        """
        A cookie is refused after 12 hours, and so is one whose expiry or
        signature was changed.
        """
        cookie = self.cookie(self.login())
        name, value = cookie.split("=", 1)
        expiry, nonce, signature = value.split(".")
        forged = [
            f"{name}={int(expiry) + 86400}.{nonce}.{signature}",
            f"{name}={expiry}.{nonce}.{'0' * len(signature)}",
            f"{name}={expiry}.{nonce}",
            f"{name}=garbage",
        ]
        for each in forged:
            response = self.request("GET", "/api/pools", headers={"Cookie": each})
            self.assertEqual(response.code, 401, each)
        self.clock.advance(12 * 3600 - 1)
        self.assertEqual(
            self.request("GET", "/api/pools", headers={"Cookie": cookie}).code, 200
        )
        self.clock.advance(1)
        self.assertEqual(
            self.request("GET", "/api/pools", headers={"Cookie": cookie}).code, 401
        )

    def test_otherProcessCookie(self) -> None:
        """
        A cookie signed by another process (another key) is refused.
        """
        other = Sessions(self.clock)
        cookie = "lbtwist_session=" + other.issue().decode()
        response = self.request("GET", "/api/pools", headers={"Cookie": cookie})
        self.assertEqual(response.code, 401)

    def test_logout(self) -> None:
        """
        C{POST /logout} removes the cookie and redirects to the login form.
        """
        response = self.request("POST", "/logout")
        self.assertEqual(
            (response.code, response.header(b"location")), (303, b"/login")
        )
        [header] = response.headers[b"set-cookie"]
        self.assertTrue(header.startswith(b"lbtwist_session=; Path=/; Max-Age=0"))
        self.assertEqual(self.request("GET", "/logout").code, 405)

    def test_plainHTTPWarning(self) -> None:
        """
        The login page warns that the cookie will not stick when it is
        served over plain HTTP to a host that is not loopback; over TLS or
        on a loopback host it does not.
        """
        for host, secure, warned in [
            (b"10.0.0.5:8081", False, True),
            (b"admin.example", False, True),
            (b"admin.example", True, False),
            (b"127.0.0.1:8081", False, False),
            (b"localhost:8081", False, False),
            (b"[::1]:8081", False, False),
        ]:
            with self.subTest(host=host, secure=secure):
                request = DummyRequest([])
                request.requestHeaders.setRawHeaders(b"host", [host])
                request.isSecure = lambda: secure  # type: ignore[method-assign]
                body = self.resource.getChildWithDefault(b"login", request).render(
                    request
                )
                self.assertEqual(b"browsers keep the login cookie only" in body, warned)

    def test_bearerStillWorks(self) -> None:
        """
        The bearer token still opens everything, the page included.
        """
        self.assertEqual(self.request("GET", "/", token=TOKEN).code, 200)
        self.assertEqual(self.request("GET", "/api/pools", token=TOKEN).code, 200)


class LoginPageTests(SynchronousTestCase):
    """
    Tests for L{renderLoginPage}.
    """

    def test_problemEscaped(self) -> None:
        """
        The problem text is escaped.
        """
        page = renderLoginPage("<b>no</b>")
        self.assertIn("&lt;b&gt;no&lt;/b&gt;", page)
        self.assertNotIn("<script", page)


class ExplainTests(AdminTestCase):
    """
    C{GET /api/pools/{pool}/explain}: which backend a request would get now
    and why, without sending traffic.
    """

    def addPool(self, **keys: Any) -> BackendPool:
        """
        Add a pool C{p} of backends C{p1} to C{p3} to the balancer.
        """
        backends = tuple(
            BackendConfig(
                url=f"http://127.0.0.1:{9200 + i}",
                scheme="http",
                host="127.0.0.1",
                port=9200 + i,
                name=f"p{i}",
            )
            for i in (1, 2, 3)
        )
        config = PoolConfig(
            name="p", backends=backends, health=HealthCheckConfig(check="none"), **keys
        )
        pool = BackendPool(config)
        self.balancer.pools["p"] = pool
        return pool

    def test_agreesWithTheNextChoice(self) -> None:
        """
        Asking twice gives the same answer (the strategy does not move), and
        the next real choice is the one explained.
        """
        first = self.request("GET", "/api/pools/app/explain").json()
        second = self.request("GET", "/api/pools/app/explain").json()
        self.assertEqual(first, second)
        pool = self.balancer.pools["app"]
        choice = pool.choose(self.clock.seconds())
        assert choice is not None
        self.assertEqual((first["backend"], first["why"]), (choice.backend.name, choice.why))
        self.assertEqual(first["strategy"], "weighted-round-robin")
        self.assertEqual(
            [(b["name"], b["weight"], b["effective_weight"]) for b in first["backends"]],
            [("a", 1, 1), ("b", 2, 2), ("c", 1, 1)],
        )

    def test_byClientAddress(self) -> None:
        """
        A consistent-hash pool explains by the request's key, read as the
        pool's C{hash_key} says; C{key} gives the key itself.
        """
        pool = self.addPool(strategy="consistent-hash")
        owner = pool.strategy.table(pool.backends).lookup(b"10.0.0.7")  # type: ignore[attr-defined]
        answer = self.request("GET", "/api/pools/p/explain?client_ip=10.0.0.7").json()
        self.assertEqual(
            (answer["key"], answer["hash_key"], answer["backend"], answer["why"]),
            ("10.0.0.7", "client_ip", owner, f"hash -> {owner}"),
        )
        byKey = self.request("GET", "/api/pools/p/explain?key=10.0.0.7").json()
        self.assertEqual(byKey["backend"], owner)

    def test_byHeader(self) -> None:
        """
        A header key is read from C{header.NAME}; without it the request
        is placed as random-two would.
        """
        pool = self.addPool(strategy="consistent-hash", hash_key="header:X-User")
        owner = pool.strategy.table(pool.backends).lookup(b"ann")  # type: ignore[attr-defined]
        answer = self.request("GET", "/api/pools/p/explain?header.X-User=ann").json()
        self.assertEqual((answer["key"], answer["backend"]), ("ann", owner))
        keyless = self.request("GET", "/api/pools/p/explain").json()
        self.assertIsNone(keyless["key"])
        self.assertTrue(keyless["why"].startswith("p2c: "), keyless["why"])

    def test_sticky(self) -> None:
        """
        C{sticky=NAME} explains a request carrying a valid sticky cookie for
        that backend; a backend that is not available is passed over.
        """
        pool = self.addPool(sticky_cookie="lb")
        answer = self.request("GET", "/api/pools/p/explain?sticky=p3").json()
        self.assertEqual((answer["backend"], answer["why"]), ("p3", "sticky cookie: p3"))
        pool.backend("p3").setState(BackendState.DISABLED, "test", 0)
        answer = self.request("GET", "/api/pools/p/explain?sticky=p3").json()
        self.assertEqual(answer["backend"], "p1")
        self.assertEqual(answer["why"], "round robin: p1; sticky cookie for p3 not usable")

    def test_slowStart(self) -> None:
        """
        A backend in slow start shows its effective weight, and the
        explanation says so.
        """
        pool = self.addPool(strategy="weighted-round-robin", slow_start=100.0)
        now = self.clock.seconds()
        for backend in pool.backends:
            backend.setState(BackendState.DOWN, "test", now - 200)
            backend.setState(BackendState.UP, "test", now - 200)
        pool.backend("p1").setState(BackendState.DOWN, "test", now - 50)
        pool.backend("p1").setState(BackendState.UP, "test", now - 50)
        answer = self.request("GET", "/api/pools/p/explain").json()
        self.assertEqual(
            [b["effective_weight"] for b in answer["backends"]], [0.55, 1, 1]
        )

    def test_noneAvailable(self) -> None:
        """
        With every backend out, the answer has no backend and says why.
        """
        pool = self.addPool()
        for backend in pool.backends:
            backend.setState(BackendState.DISABLED, "maintenance", 0)
        answer = self.request("GET", "/api/pools/p/explain").json()
        self.assertIsNone(answer["backend"])
        self.assertEqual(
            answer["why"],
            'no backend available in pool "p": 3 of 3 disabled (p1: maintenance)',
        )

    def test_errors(self) -> None:
        """
        An unknown pool is 404, a write 405, and an unknown parameter or a
        bad address 400.
        """
        self.assertJSONError(
            self.request("GET", "/api/pools/nope/explain"), 404, 'unknown pool "nope"'
        )
        self.assertEqual(self.request("POST", "/api/pools/app/explain").code, 405)
        self.assertJSONError(
            self.request("GET", "/api/pools/app/explain?colour=red"),
            400,
            'unknown parameter "colour": use key, client_ip, path, header.NAME, '
            "cookie.NAME or sticky",
        )
        self.assertJSONError(
            self.request("GET", "/api/pools/app/explain?client_ip=nowhere"),
            400,
            'client_ip "nowhere" is not an IP address',
        )
