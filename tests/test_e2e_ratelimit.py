"""
End-to-end tests of C{[frontend.rate_limit]} through a real
C{twistd -n lbtwist}: 429 with C{Retry-After} beyond the burst, recovery
once the bucket refilled, header keys limited separately, clients behind a
trusted proxy limited by their own address, the access log's reason, the
C{/metrics} counter, and buckets kept across a reload that leaves the rate
limit as it is.
"""

from __future__ import annotations

import json
import os
import re
import signal
import tempfile
import time
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from .harness import Client, Lbtwist, Response, ScriptedBackend, request


def configText(backend: ScriptedBackend, directory: str) -> str:
    """
    Three frontends on one pool, each with a rate limit of 2 requests per
    second and a burst of 2: C{web} by client address, C{api} by
    C{X-Api-Key}, C{proxied} by client address behind a trusted proxy
    (127.0.0.1, where the tests connect from).
    """
    limit = "requests_per_second = 2\nburst = 2\n"
    frontends = ""
    for name, extra, key in [
        ("web", "", ""),
        ("api", "", 'key = "header:X-Api-Key"\n'),
        ("proxied", 'trusted_proxies = ["127.0.0.1"]\n', ""),
    ]:
        frontends += (
            f'[[frontend]]\nname = "{name}"\nlisten = "tcp:0:interface=127.0.0.1"\n'
            f'pool = "app"\n{extra}[frontend.rate_limit]\n{limit}{key}\n'
        )
    log = os.path.join(directory, "access.log")
    return frontends + f"""
[[pool]]
name = "app"
[pool.health]
check = "none"
[[pool.backend]]
url = "{backend.url}"

[admin]
listen = "tcp:0:interface=127.0.0.1"

[settings]
access_log = "{log}"
access_log_format = "json"
"""


def burst(port: int, count: int, headers: list[tuple[str, str]] = []) -> list[Response]:
    """
    Send C{count} GETs pipelined in one write on one connection, so that
    they arrive within milliseconds, and read their responses.
    """
    client = Client(port)
    try:
        client.send(b"".join(request("GET", "/x", headers) for _ in range(count)))
        return [client.readResponse() for _ in range(count)]
    finally:
        client.sock.close()


def statuses(responses: list[Response]) -> list[int]:
    return [response.status for response in responses]


class RateLimitTests(SynchronousTestCase):
    """
    One lbtwist with three rate-limited frontends.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.backend = ScriptedBackend("b1")
        cls.addClassCleanup(cls.backend.close)
        cls.directory = tempfile.mkdtemp(prefix="lbtwist-ratelimit-")
        cls.lb = Lbtwist(cls, configText(cls.backend, cls.directory))

    def rateLimited(self, frontend: str) -> float:
        """
        @return: C{lbtwist_frontend_rate_limited_total} of C{frontend}, from
            C{/metrics}.
        """
        url = f"http://127.0.0.1:{self.lb.ports['admin']}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        match = re.search(
            r'^lbtwist_frontend_rate_limited_total\{frontend="%s"\} (\S+)$' % frontend,
            text,
            re.M,
        )
        assert match is not None, text
        return float(match.group(1))

    def refusals(self, frontend: str, count: int) -> list[dict[str, object]]:
        """
        @return: The access log's 429 lines of C{frontend}, once there are
            at least C{count}.
        """
        path = os.path.join(self.directory, "access.log")
        deadline = time.monotonic() + 5
        lines: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            with open(path) as f:
                lines = [json.loads(line) for line in f if line.strip()]
            lines = [
                line
                for line in lines
                if line["frontend"] == frontend and line["status"] == 429
            ]
            if len(lines) >= count:
                break
            time.sleep(0.05)
        return lines

    def test_limitThenRecovery(self) -> None:
        """
        Beyond the burst a request gets 429 with C{Retry-After} and a short
        body, without reaching the backend; after C{Retry-After} seconds
        requests pass again; the access log says why and /metrics counts it.
        """
        before = self.rateLimited("web")
        received = len(self.backend.received)
        port = self.lb.ports["web"]
        responses = burst(port, 3)
        self.assertEqual(statuses(responses), [200, 200, 429])
        refused = responses[2]
        self.assertEqual(refused.header(b"retry-after"), b"1")
        self.assertEqual(refused.body, b"429 Too Many Requests\nretry after 1 s\n")
        self.assertEqual(len(self.backend.received), received + 2)
        self.assertEqual(self.rateLimited("web"), before + 1)
        [record] = self.refusals("web", 1)
        self.assertEqual(
            (record["backend"], record["attempts"], record["reason"]),
            (None, 0, "rate limited: client_ip 127.0.0.1"),
        )
        time.sleep(int(refused.header(b"retry-after") or b"0"))
        self.assertEqual(statuses(burst(port, 1)), [200])

    def test_headerKeys(self) -> None:
        """
        With C{key = "header:X-Api-Key"} each key has its own bucket, and
        requests without the header share their client address's bucket.
        """
        before = self.rateLimited("api")
        port = self.lb.ports["api"]
        self.assertEqual(
            statuses(burst(port, 3, [("X-Api-Key", "one")])), [200, 200, 429]
        )
        self.assertEqual(
            statuses(burst(port, 3, [("X-Api-Key", "two")])), [200, 200, 429]
        )
        self.assertEqual(statuses(burst(port, 3)), [200, 200, 429])
        self.assertEqual(self.rateLimited("api"), before + 3)

    def test_trustedProxy(self) -> None:
        """
        Behind a trusted proxy, each client named by C{X-Forwarded-For} has
        its own bucket; what the client itself put before in the field does
        not count.
        """
        port = self.lb.ports["proxied"]
        self.assertEqual(
            statuses(burst(port, 3, [("X-Forwarded-For", "192.0.2.1")])),
            [200, 200, 429],
        )
        self.assertEqual(
            statuses(burst(port, 3, [("X-Forwarded-For", "192.0.2.1, 192.0.2.2")])),
            [200, 200, 429],
        )
        self.assertEqual(
            [line["reason"] for line in self.refusals("proxied", 2)],
            ["rate limited: client_ip 192.0.2.1", "rate limited: client_ip 192.0.2.2"],
        )


class ReloadTests(SynchronousTestCase):
    """
    A reload keeps the buckets of a frontend whose rate limit is unchanged.
    """

    def setUp(self) -> None:
        self.backend = ScriptedBackend("b1")
        self.addCleanup(self.backend.close)
        self.lb = Lbtwist(self, self.config(burst=1, retries=2))

    def config(self, burst: int, retries: int) -> str:
        return f"""
[[frontend]]
name = "web"
listen = "tcp:0:interface=127.0.0.1"
pool = "app"
[frontend.rate_limit]
requests_per_second = 0.1
burst = {burst}

[[pool]]
name = "app"
retries = {retries}
[pool.health]
check = "none"
[[pool.backend]]
url = "{self.backend.url}"
"""

    def reload(self, text: str) -> None:
        mark = self.lb.mark()
        with open(self.lb.configPath, "w") as f:
            f.write(text)
        self.lb.process.send_signal(signal.SIGHUP)
        self.lb.waitForLine(re.compile("configuration reloaded"), 10, since=mark)

    def test_bucketsKept(self) -> None:
        """
        After a reload that changes another setting, a client over the limit
        stays over it; after one that changes the rate limit, its bucket
        starts full.
        """
        port = self.lb.port
        responses = burst(port, 2)
        self.assertEqual(statuses(responses), [200, 429])
        self.assertEqual(responses[1].header(b"retry-after"), b"10")
        self.reload(self.config(burst=1, retries=1))
        self.assertEqual(statuses(burst(port, 1)), [429])
        self.reload(self.config(burst=2, retries=1))
        self.assertEqual(statuses(burst(port, 3)), [200, 200, 429])
