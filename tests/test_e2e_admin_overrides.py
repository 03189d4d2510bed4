"""
End-to-end tests of runtime overrides, backends named by address, the
login form and C{token_file}, through a real C{twistd -n lbtwist}.
"""

from __future__ import annotations

import json
import os
import re
import signal
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from .harness import Lbtwist, ScriptedBackend

TOKEN = "e2e-overrides-token"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, Any]:
    """
    Make one request to the admin listener, without following redirects.

    @return: The status, the body and the headers.
    """
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, method=method,
        headers=headers or {},
    )
    try:
        with _opener.open(req, timeout=5) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def poolConfig(b1: ScriptedBackend, b2: ScriptedBackend, weight: int) -> str:
    return f"""
[[frontend]]
name = "web"
listen = "tcp:0:interface=127.0.0.1"
pool = "app"

[[pool]]
name = "app"
strategy = "weighted-round-robin"
[pool.health]
check = "none"
[[pool.backend]]
name = "one"
url = "{b1.url}"
weight = {weight}
[[pool.backend]]
name = "two"
url = "{b2.url}"

[[frontend]]
name = "rr"
listen = "tcp:0:interface=127.0.0.1"
pool = "rr"

[[pool]]
name = "rr"
[pool.health]
check = "none"
[[pool.backend]]
url = "{b1.url}"
"""


class OverrideTests(SynchronousTestCase):
    """
    A weight set at runtime survives a config edit and a reload, says so
    in the log, and goes away with C{DELETE .../overrides}.
    """

    def setUp(self) -> None:
        self.b1 = ScriptedBackend("b1")
        self.b2 = ScriptedBackend("b2")
        self.addCleanup(self.b1.close)
        self.addCleanup(self.b2.close)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.stateFile = os.path.join(directory, "state.json")
        self.lb = Lbtwist(self, self.config(5))
        self.port = self.lb.ports["admin"]

    def config(self, weight: int) -> str:
        return poolConfig(self.b1, self.b2, weight) + (
            '\n[admin]\nlisten = "tcp:0:interface=127.0.0.1"\n'
            f'[settings]\nstate_file = "{self.stateFile}"\n'
        )

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        status, raw, _ = call(self.port, method, path, data)
        return status, json.loads(raw)

    def reload(self, text: str) -> int:
        mark = self.lb.mark()
        with open(self.lb.configPath, "w") as f:
            f.write(text)
        self.lb.process.send_signal(signal.SIGHUP)
        self.lb.waitForLine(re.compile("configuration reloaded|reload failed"), 10, since=mark)
        return mark

    def test_overrideKeptAndLoggedOnReload(self) -> None:
        """
        After C{PUT weight} 3, editing the file's weight to 8 and reloading
        keeps 3 and logs exactly one line saying so; the JSON API shows
        both values; C{DELETE .../overrides} (by address) returns to 8 and
        empties the state file.
        """
        status, view = self.api("PUT", "/api/pools/app/backends/one/weight", {"weight": 3})
        self.assertEqual((status, view["weight"], view["overrides"]), (200, 3, {"weight": 3}))
        mark = self.reload(self.config(8))
        self.lb.waitForLine("configuration reloaded", 10, since=mark)
        lines = [
            line for line in self.lb.lines[mark:] if "from the state file overrides" in line
        ]
        address = self.b1.address
        self.assertEqual(len(lines), 1, self.lb.output())
        self.assertIn(
            f"app/one ({address}): weight 3 from the state file overrides 8 from "
            "lbtwist.toml",
            lines[0],
        )
        status, view = self.api("GET", "/api/pools/app/backends/one")
        self.assertEqual(
            (view["weight"], view["configured_weight"], view["overrides"]),
            (3, 8, {"weight": 3}),
        )
        status, view = self.api("DELETE", f"/api/pools/app/backends/{address}/overrides")
        self.assertEqual(
            (status, view["name"], view["weight"], view["overrides"]), (200, "one", 8, {})
        )
        with open(self.stateFile) as f:
            self.assertEqual(json.load(f), {"pools": {}})
        mark = self.reload(self.config(8))
        self.assertFalse(
            [line for line in self.lb.lines[mark:] if "overrides" in line]
        )

    def test_stateOverrideLoggedAtStart(self) -> None:
        """
        A drained backend stays drained after a restart, and the start logs
        the state override.
        """
        status, _ = self.api("POST", f"/api/pools/app/backends/{self.b2.address}/drain")
        self.assertEqual(status, 200)
        self.lb.stop()
        self.lb = Lbtwist(self, self.config(5))
        self.port = self.lb.ports["admin"]
        self.lb.waitForLine(
            re.escape(
                f"app/two ({self.b2.address}): state draining from the state file "
                "overrides enabled from lbtwist.toml"
            )
        )
        self.assertEqual(self.api("GET", "/api/pools/app/backends/two")[1]["state"], "draining")

    def test_weightOnRoundRobin(self) -> None:
        """
        C{PUT weight} on a round-robin pool is a 409 saying that it ignores
        weights, and changes nothing.
        """
        status, view = self.api(
            "PUT", f"/api/pools/rr/backends/{self.b1.address}/weight", {"weight": 4}
        )
        self.assertEqual(status, 409)
        self.assertEqual(
            view["error"],
            'pool "rr" uses the round-robin strategy, which ignores weights; use '
            "weighted-round-robin or least-connections to weight its backends",
        )
        self.assertEqual(self.api("GET", "/api/pools/rr")[1]["backends"][0]["weight"], 1)


class LoginTests(SynchronousTestCase):
    """
    With a token (read from C{token_file}, relative to the configuration
    file), a browser logs in with the form; API clients use the bearer
    token.
    """

    def setUp(self) -> None:
        self.b1 = ScriptedBackend("b1")
        self.b2 = ScriptedBackend("b2")
        self.addCleanup(self.b1.close)
        self.addCleanup(self.b2.close)
        config = poolConfig(self.b1, self.b2, 1) + (
            '\n[admin]\nlisten = "tcp:0:interface=127.0.0.1"\n'
            'token_file = "secrets/admin.token"\n'
        )
        self.lb = Lbtwist(
            self, config, files={"secrets/admin.token": TOKEN + "\n"}
        )
        self.port = self.lb.ports["admin"]

    def login(self, token: str) -> tuple[int, bytes, Any]:
        body = urllib.parse.urlencode({"token": token}).encode()
        return call(
            self.port,
            "POST",
            "/login",
            body,
            {"Content-Type": "application/x-www-form-urlencoded"},
        )

    def test_browserLogin(self) -> None:
        """
        A browser gets the login form (401); the right token gets a session
        cookie that opens the page and runs its buttons; a wrong token gets
        the form again and no cookie; a forged cookie is refused; logging
        out removes the cookie.
        """
        browser = {"Accept": "text/html"}
        status, body, _ = call(self.port, "GET", "/", headers=browser)
        self.assertEqual(status, 401)
        self.assertIn(b'action="/login"', body)

        status, body, headers = self.login("wrong")
        self.assertEqual(status, 401)
        self.assertIsNone(headers.get("Set-Cookie"))

        status, _, headers = self.login(TOKEN)
        self.assertEqual((status, headers["Location"]), (303, "/"))
        setCookie = headers["Set-Cookie"]
        for attribute in ["HttpOnly", "SameSite=Strict", "Max-Age=43200", "Path=/"]:
            self.assertIn(attribute, setCookie)
        cookie = setCookie.split(";")[0]
        status, body, _ = call(self.port, "GET", "/", headers={**browser, "Cookie": cookie})
        self.assertEqual(status, 200)
        self.assertIn(b"Pool app", body)
        status, _, _ = call(
            self.port, "POST", "/pools/app/backends/one/drain", b"",
            {"Cookie": cookie, "Origin": f"http://127.0.0.1:{self.port}"},
        )
        self.assertEqual(status, 303)

        name, value = cookie.split("=", 1)
        expiry, nonce, signature = value.split(".")
        for forged in [
            f"{name}={int(expiry) + 3600}.{nonce}.{signature}",
            f"{name}={expiry}.{nonce}.{signature[::-1]}",
        ]:
            status, _, _ = call(self.port, "GET", "/", headers={**browser, "Cookie": forged})
            self.assertEqual(status, 401, forged)

        status, _, headers = call(self.port, "POST", "/logout", b"", {"Cookie": cookie})
        self.assertEqual((status, headers["Location"]), (303, "/login"))
        self.assertIn("Max-Age=0", headers["Set-Cookie"])

    def test_movedExpiryRefused(self) -> None:
        """
        A cookie whose expiry was changed (here: into the past) no longer
        matches its signature and is refused; the unchanged one works.
        (Expiry after 12 hours is checked on a task.Clock in
        tests.test_admin.LoginTests.test_expiredAndForged.)
        """
        status, _, headers = self.login(TOKEN)
        cookie = headers["Set-Cookie"].split(";")[0]
        name, value = cookie.split("=", 1)
        expiry, nonce, signature = value.split(".")
        past = f"{name}={int(expiry) - 86400}.{nonce}.{signature}"
        self.assertEqual(call(self.port, "GET", "/api/pools", headers={"Cookie": past})[0], 401)
        self.assertEqual(call(self.port, "GET", "/api/pools", headers={"Cookie": cookie})[0], 200)

    def test_bearerForAPI(self) -> None:
        """
        The API still takes the bearer token from the file, and answers
        JSON 401 without it.
        """
        status, body, _ = call(
            self.port, "GET", "/api/pools", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["pools"][0]["name"], "app")
        status, body, headers = call(self.port, "GET", "/api/pools")
        self.assertEqual((status, json.loads(body)), (401, {"error": "missing bearer token"}))
        status, _, _ = call(
            self.port, "GET", "/api/pools", headers={"Authorization": "Bearer wrong"}
        )
        self.assertEqual(status, 401)
