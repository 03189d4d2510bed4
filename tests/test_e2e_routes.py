# -*- test-case-name: tests.test_e2e_routes -*-
"""
End-to-end: routes by host and path, C{strip_prefix}, redirects, the 404
of a frontend without a default pool, per-pool body limits, header rules
and request IDs, with real sockets against a real C{twistd -n lbtwist}.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.harness import (
    Client,
    Lbtwist,
    Response,
    ScriptedBackend,
    exchange,
    parseResponses,
    request,
)


def _config(api: ScriptedBackend, static: ScriptedBackend, log: str) -> str:
    return f"""
[settings]
access_log = "{log}"
access_log_format = "json"

[[frontend]]
name = "web"
listen = "tcp:0:interface=127.0.0.1"
request_id = true

[frontend.request_headers]
set = {{ "X-Env" = "prod", "X-Forwarded-Proto" = "{{scheme}}-seen" }}
add = {{ "X-Client" = "{{client_ip}}" }}
remove = ["X-Debug", "Via"]

[frontend.response_headers]
set = {{ "Strict-Transport-Security" = "max-age=31536000" }}
remove = ["X-Backend"]

[[frontend.route]]
host = ["api.example.com", "*.example.org"]
pool = "api"
[frontend.route.request_headers]
add = {{ "X-Trace" = "{{request_id}}", "X-Host" = "{{host}}" }}
[frontend.route.response_headers]
add = {{ "X-Route" = "api" }}

[[frontend.route]]
host = ["old.example.com"]
redirect = "https://new.example.com{{path}}"
redirect_status = 301

[[frontend.route]]
path_prefix = "/moved/"
redirect = "https://{{host}}{{path}}"
redirect_status = 308

[[frontend.route]]
path_prefix = "/static/"
strip_prefix = true
pool = "static"

[[frontend.route]]
path_prefix = "/a/"
pool = "static"

[[frontend.route]]
path_regex = "^/canary/"
methods = ["POST"]
headers = {{ "X-Canary" = "1" }}
pool = "api"

[[frontend.route]]
path_prefix = "/upload/"
pool = "api"

[[frontend]]
name = "edge"
listen = "tcp:0:interface=127.0.0.1"
pool = "api"

[[frontend.route]]
path_prefix = "/a/"
pool = "static"

[[pool]]
name = "api"
connect_timeout = 1.0
[pool.health]
check = "none"
[[pool.backend]]
url = "{api.url}"

[[pool]]
name = "static"
connect_timeout = 1.0
max_body_size = 100
[pool.health]
check = "none"
[[pool.backend]]
url = "{static.url}"
"""


class RoutesTests(SynchronousTestCase):
    """
    A frontend with routes sends each request where its first matching
    route leads.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.api = ScriptedBackend("api")
        cls.addClassCleanup(cls.api.close)
        cls.static = ScriptedBackend("static")
        cls.addClassCleanup(cls.static.close)
        cls.lb = Lbtwist(cls, _config(cls.api, cls.static, "access.log"))
        cls.log = os.path.join(cls.lb.directory, "access.log")
        cls.web = cls.lb.ports["web"]
        cls.edge = cls.lb.ports["edge"]

    def setUp(self) -> None:
        self.api.clear()
        self.static.clear()
        self.logged = len(self.lines())

    def lines(self) -> list[str]:
        """
        The access log's lines so far.
        """
        if not os.path.exists(self.log):
            return []
        with open(self.log) as f:
            text = f.read()
        # Only complete lines: the last one may still be being written.
        return [line for line in text[: text.rfind("\n") + 1].splitlines() if line]

    def get(
        self,
        target: str,
        host: str = "lb.example",
        port: int | None = None,
        method: str = "GET",
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
    ) -> Response:
        """
        Send one request on a new connection; return its response.
        """
        client = Client(self.web if port is None else port)
        self.addCleanup(client.close)
        client.send(request(method, target, headers, body, host=host))
        return client.readResponse(method.encode("ascii"))

    def recordFor(self, target: str) -> dict[str, object]:
        """
        The access log record of this test's request for C{target}, once
        written.
        """
        deadline = time.monotonic() + 5
        while True:
            records = [json.loads(line) for line in self.lines()[self.logged :]]
            found = [record for record in records if record["target"] == target]
            if found:
                (record,) = found
                return record
            if time.monotonic() > deadline:
                raise AssertionError(f"no access log record for {target}: {records}")
            time.sleep(0.02)

    def test_hostRouting(self) -> None:
        """
        An exact host and a one-label wildcard reach the api pool, the port
        and case of C{Host} ignored; a host two labels under the wildcard,
        or the wildcard's own domain, does not match (and, with no default
        pool, gets 404).
        """
        for host in ("api.example.com", "API.Example.com:8080", "a.example.org"):
            response = self.get("/x", host=host)
            self.assertEqual(response.status, 200, host)
            self.assertTrue(response.body.startswith(b"api GET /x"), response.body)
        for host in ("a.b.example.org", "example.org"):
            self.assertEqual(self.get("/x", host=host).status, 404, host)
        self.assertEqual(len(self.api.received), 3)
        self.assertEqual(self.static.received, [])

    def test_pathRoutingAndStripPrefix(self) -> None:
        """
        C{/static/...} reaches the static pool with the prefix stripped
        (the query kept); C{/a/...} reaches it unchanged.
        """
        response = self.get("/static/css/site.css?v=3")
        self.assertEqual(response.body, b"static GET /css/site.css?v=3")
        response = self.get("/static/")
        self.assertEqual(response.body, b"static GET /")
        response = self.get("/a/page")
        self.assertEqual(response.body, b"static GET /a/page")
        self.assertEqual(
            [r.target for r in self.static.received],
            [b"/css/site.css?v=3", b"/", b"/a/page"],
        )

    def test_percentEncodedTargetSentAsSent(self) -> None:
        """
        The path matched is decoded, but the backend receives the target
        exactly as the client sent it (less the stripped prefix).
        """
        response = self.get("/%61/b%2Fc")
        self.assertEqual(response.body, b"static GET /%61/b%2Fc")
        response = self.get("/static/%7Euser/x")
        self.assertEqual(response.body, b"static GET /%7Euser/x")

    def test_pathTraversal(self) -> None:
        """
        Dot segments, plain or percent-encoded, cannot take a request into
        a prefix route's pool: on a frontend without a default pool they
        get 404, on one with a default pool they go there; nothing reaches
        the prefix route's pool.
        """
        for target in ("/a/../admin", "/a/%2e%2e/admin", "/a/%2E%2E/admin", "/a/./../admin"):
            self.assertEqual(self.get(target).status, 404, target)
            response = self.get(target, port=self.edge)
            self.assertEqual(response.status, 200, target)
            self.assertEqual(response.body, b"api GET " + target.encode(), target)
        self.assertEqual(self.static.received, [])

    def test_stripPrefixRefusesInconsistentPath(self) -> None:
        """
        A C{strip_prefix} route whose path as sent does not start with the
        prefix (it did only once normalised), or whose rest would mean
        something else once stripped, gets 400: lbtwist never forwards a
        differently-normalised path.
        """
        for target in ("/x/../static/y", "/static/../static/y", "//static/y"):
            self.assertEqual(self.get(target).status, 400, target)
        self.assertEqual(self.static.received, [])

    def test_invalidPercentEncoding(self) -> None:
        """
        A path with a C{%} not followed by two hexadecimal digits cannot
        be matched safely: 400.
        """
        self.assertEqual(self.get("/a/%zz").status, 400)
        self.assertEqual(self.static.received, [])

    def test_notFoundWithoutDefaultPool(self) -> None:
        """
        A request no route matches, on a frontend without a default pool,
        gets 404, logged without a pool, with its request ID.
        """
        response = self.get("/nowhere")
        self.assertEqual(response.status, 404)
        self.assertTrue(response.header(b"content-type").startswith(b"text/plain"))
        requestId = response.header(b"x-request-id")
        self.assertIsNotNone(requestId)
        record = self.recordFor("/nowhere")
        self.assertEqual(
            (record["status"], record["pool"], record["request_id"]),
            (404, None, requestId.decode()),
        )

    def test_methodsAndHeaders(self) -> None:
        """
        A route with C{methods} and C{headers} matches only requests with
        one of those methods and that exact header value.
        """
        matching = self.get("/canary/x", method="POST", headers=[("X-Canary", "1")], body=b"")
        self.assertEqual(matching.body, b"api POST /canary/x")
        for method, value in (("GET", "1"), ("POST", "2")):
            response = self.get("/canary/x", method=method, headers=[("X-Canary", value)], body=b"")
            self.assertEqual(response.status, 404, (method, value))

    def test_redirects(self) -> None:
        """
        Redirect routes answer at once with their status and a C{Location}
        made from the template (C{{path}} keeps the query, C{{host}} has
        no port); no backend is involved; the access log has them.
        """
        response = self.get("/p/q?x=1", host="old.example.com")
        self.assertEqual(response.status, 301)
        self.assertEqual(response.header(b"location"), b"https://new.example.com/p/q?x=1")
        self.assertEqual(response.header(b"content-length"), b"0")
        response = self.get("/moved/here?y=2", host="www.example.net:8080")
        self.assertEqual(response.status, 308)
        self.assertEqual(response.header(b"location"), b"https://www.example.net/moved/here?y=2")
        self.assertEqual(
            response.header(b"strict-transport-security"), b"max-age=31536000"
        )
        self.assertEqual(self.api.received + self.static.received, [])
        first = self.recordFor("/p/q?x=1")
        self.assertEqual((first["status"], first["pool"], first["backend"]), (301, None, None))
        second = self.recordFor("/moved/here?y=2")
        self.assertEqual(second["status"], 308)

    def test_poolBodyLimit(self) -> None:
        """
        The body limit is the pool's that the route leads to: 413 at once
        for the static pool (100 bytes), the same body reaches the api pool.
        """
        body = b"x" * 200
        received, _ = exchange(self.web, request("POST", "/a/up", body=body), timeout=3)
        self.assertEqual([r.status for r in parseResponses(received)], [413])
        chunked = request(
            "POST",
            "/a/up",
            [("Transfer-Encoding", "chunked")],
            b"c8\r\n" + body + b"\r\n0\r\n\r\n",
        )
        received, _ = exchange(self.web, chunked, timeout=3)
        self.assertEqual([r.status for r in parseResponses(received)], [413])
        self.assertEqual(self.static.received, [])
        response = self.get("/upload/x", method="POST", body=body)
        self.assertEqual(response.status, 200)
        self.assertEqual(self.api.received[-1].body, body)

    def test_requestHeaderRules(self) -> None:
        """
        Request rules go upstream: the frontend's, then the route's;
        C{set} replaces every line (lbtwist's own forwarding field too),
        C{add} appends one, C{remove} removes every line (lbtwist's C{Via}
        too); placeholders are filled in.
        """
        self.get(
            "/x",
            host="api.example.com:8080",
            headers=[("X-Env", "dev"), ("X-Env", "qa"), ("X-Debug", "1"), ("X-Debug", "2")],
        )
        (received,) = self.api.received
        self.assertEqual(received.headerValues(b"x-env"), [b"prod"])
        self.assertEqual(received.headerValues(b"x-debug"), [])
        self.assertEqual(received.headerValues(b"via"), [])
        self.assertEqual(received.headerValues(b"x-forwarded-proto"), [b"http-seen"])
        self.assertEqual(received.headerValues(b"x-client"), [b"127.0.0.1"])
        self.assertEqual(received.headerValues(b"x-host"), [b"api.example.com"])
        self.assertEqual(received.headerValues(b"host"), [b"api.example.com:8080"])
        self.assertEqual(received.headerValues(b"x-forwarded-for"), [b"127.0.0.1"])
        requestId = received.header(b"x-request-id")
        self.assertEqual(received.headerValues(b"x-trace"), [requestId])

    def test_responseHeaderRules(self) -> None:
        """
        Response rules apply to what goes to the client: the frontend's
        (C{set}, C{remove} of the backend's C{X-Backend}), then the route's.
        """
        response = self.get("/x", host="api.example.com")
        self.assertEqual(response.header(b"strict-transport-security"), b"max-age=31536000")
        self.assertEqual(response.headerValues(b"x-backend"), [])
        self.assertEqual(response.headerValues(b"x-route"), [b"api"])
        response = self.get("/a/x")
        self.assertEqual(response.headerValues(b"x-route"), [])
        self.assertEqual(response.header(b"strict-transport-security"), b"max-age=31536000")

    def test_requestIdGenerated(self) -> None:
        """
        Without an incoming C{X-Request-ID}, lbtwist makes one (32 hex
        digits), sends it upstream, echoes it and logs it.
        """
        response = self.get("/a/generated")
        requestId = response.header(b"x-request-id")
        self.assertRegex(requestId.decode(), r"\A[0-9a-f]{32}\Z")
        self.assertEqual(self.static.received[0].headerValues(b"x-request-id"), [requestId])
        record = self.recordFor("/a/generated")
        self.assertEqual((record["request_id"], record["pool"]), (requestId.decode(), "static"))

    def test_requestIdKept(self) -> None:
        """
        A valid incoming C{X-Request-ID} is kept: upstream, echoed, logged.
        """
        response = self.get("/a/kept", headers=[("X-Request-ID", "trace-42")])
        self.assertEqual(response.headerValues(b"x-request-id"), [b"trace-42"])
        self.assertEqual(self.static.received[0].headerValues(b"x-request-id"), [b"trace-42"])
        record = self.recordFor("/a/kept")
        self.assertEqual(record["request_id"], "trace-42")

    def test_requestIdInvalidReplaced(self) -> None:
        """
        An invalid incoming C{X-Request-ID} (too long, or sent twice) is
        replaced by a new one.
        """
        for headers in (
            [("X-Request-ID", "x" * 201)],
            [("X-Request-ID", "a"), ("X-Request-ID", "b")],
        ):
            self.static.clear()
            response = self.get("/a/x", headers=headers)
            requestId = response.header(b"x-request-id")
            self.assertRegex(requestId.decode(), r"\A[0-9a-f]{32}\Z")
            self.assertEqual(
                self.static.received[0].headerValues(b"x-request-id"), [requestId]
            )

    def test_keepAliveRequestsRoutedEach(self) -> None:
        """
        Pipelined requests on one connection are each routed on their own.
        """
        client = Client(self.web)
        self.addCleanup(client.close)
        client.send(request("GET", "/a/1") + request("GET", "/x", host="api.example.com"))
        first = client.readResponse()
        second = client.readResponse()
        self.assertEqual((first.body, second.body), (b"static GET /a/1", b"api GET /x"))


class RoutesCheckTests(SynchronousTestCase):
    """
    C{python -m lbtwist check} rejects bad routes.
    """

    def test_unknownPoolRefused(self) -> None:
        """
        A route naming an unknown pool: lbtwist does not start, and says why.
        """
        import subprocess
        import sys
        import tempfile

        from tests.harness import PROJECT_ROOT

        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "lb.toml")
            with open(path, "w") as f:
                f.write(
                    '[[frontend]]\nlisten = "tcp:0"\n'
                    '[[frontend.route]]\npath_prefix = "/"\npool = "nope"\n'
                    '[[pool]]\nname = "app"\n[[pool.backend]]\nurl = "http://127.0.0.1:1"\n'
                )
            result = subprocess.run(
                [sys.executable, "-m", "lbtwist", "check", path],
                capture_output=True,
                text=True,
                cwd=PROJECT_ROOT,
            )
        self.assertNotEqual(result.returncode, 0)
        self.assertTrue(
            re.search(r'route 1: pool "nope" is not defined', result.stdout + result.stderr),
            result.stdout + result.stderr,
        )


class RoutesReloadTests(SynchronousTestCase):
    """
    Routes follow the configuration file across a reload (SIGHUP) without
    the frontend stopping.
    """

    def test_reloadChangesRoutes(self) -> None:
        """
        A reload that moves C{/v1/} from one pool to another, adds a
        redirect and turns on request IDs takes effect for the next
        requests on the same keep-alive connection.
        """
        first = ScriptedBackend("first")
        second = ScriptedBackend("second")
        for backend in (first, second):
            self.addCleanup(backend.stop)

        def config(v1: str, extra: str = "") -> str:
            return (
                '[[frontend]]\nname = "web"\nlisten = "tcp:0:interface=127.0.0.1"\n'
                f'pool = "first"\n{extra}'
                f'[[frontend.route]]\npath_prefix = "/v1/"\npool = "{v1}"\n'
                '[[pool]]\nname = "first"\n[pool.health]\ncheck = "none"\n'
                f'[[pool.backend]]\nurl = "{first.url}"\n'
                '[[pool]]\nname = "second"\n[pool.health]\ncheck = "none"\n'
                f'[[pool.backend]]\nurl = "{second.url}"\n'
            )

        lb = Lbtwist(self, config("first"))
        client = Client(lb.port)
        self.addCleanup(client.close)
        client.send(request("GET", "/v1/a"))
        self.assertEqual(client.readResponse().body, b"first GET /v1/a")

        mark = lb.mark()
        with open(lb.configPath, "w") as f:
            f.write(
                config(
                    "second",
                    'request_id = true\n[[frontend.route]]\nhost = ["old.example"]\n'
                    'redirect = "https://new.example{path}"\n',
                )
            )
        lb.process.send_signal(signal.SIGHUP)
        lb.waitForLine(re.compile("configuration reloaded"), 10, since=mark)

        client.send(request("GET", "/v1/b"))
        response = client.readResponse()
        self.assertEqual(response.body, b"second GET /v1/b")
        self.assertIsNotNone(response.header(b"x-request-id"))
        client.send(request("GET", "/x?y=1", host="old.example"))
        redirect = client.readResponse()
        self.assertEqual(
            (redirect.status, redirect.header(b"location")),
            (301, b"https://new.example/x?y=1"),
        )
        client.send(request("GET", "/other"))
        self.assertEqual(client.readResponse().body, b"first GET /other")
