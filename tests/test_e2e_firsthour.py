# -*- test-case-name: tests.test_e2e_firsthour -*-
"""
End-to-end tests of an operator's first hour with a real C{twistd -n
lbtwist} in front of real C{python -m http.server} backends: the README's
quick start works as written, backends without a C{[pool.health]} table are
checked over TCP (C{http.server} answers 404 on C{/healthz}), a failing HTTP
check says why (log, 503 page, API), health probes leave no factory noise in
the log, and the first clients of a socket-activated lbtwist wait for the
first checks instead of getting 503.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from .harness import PROJECT_ROOT, Lbtwist

TOKEN = "first-hour-token"

README = os.path.join(PROJECT_ROOT, "README.rst")

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


class HTTPServer:
    """
    A C{python -m http.server} on an OS-chosen loopback port, serving a
    directory of its own that holds C{who.txt} with its name.

    @ivar port: The port it listens on.
    """

    def __init__(self, case: SynchronousTestCase, name: str) -> None:
        """
        Start it and wait until it listens; stopping is a cleanup of
        C{case}.
        """
        self.directory = tempfile.mkdtemp(prefix="lbtwist-http-server-")
        case.addCleanup(shutil.rmtree, self.directory, True)
        with open(os.path.join(self.directory, "who.txt"), "w") as f:
            f.write(name)
        self.process = subprocess.Popen(
            [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1"],
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        case.addCleanup(self.stop)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode("ascii", "replace")
        found = re.search(r" port (\d+)", line)
        if found is None:
            raise AssertionError(f"http.server did not say its port: {line!r}")
        self.port = int(found.group(1))

    def stop(self) -> None:
        """
        Stop the server.
        """
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def readmeQuickStart() -> str:
    """
    @return: The first C{toml} code block of the README's "Starting
        lbtwist" section, verbatim (without the block's indentation).
    """
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text.split("\nStarting lbtwist\n", 1)[1]
    section = re.split(r"\n[^\n]+\n-{3,}\n", section, maxsplit=1)[0]
    block = section.split(".. code-block:: toml\n\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines)).strip() + "\n"


def get(port: int, path: str = "/") -> tuple[int, bytes]:
    """
    @return: The status and body of one C{GET} on a new connection.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def apiBackends(lb: Lbtwist) -> dict[str, dict[str, Any]]:
    """
    @return: Every backend of pool C{app} by name, from the admin JSON API.
    """
    req = urllib.request.Request(f"http://127.0.0.1:{lb.ports['admin']}/api/pools")
    req.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(req, timeout=5) as response:
        pools = json.loads(response.read())["pools"]
    return {b["name"]: b for pool in pools for b in pool["backends"]}


def issueConfig(one: HTTPServer, two: HTTPServer, health: str = "") -> str:
    """
    The configuration of the issue's first run: one frontend, one pool of
    two C{http.server} backends, no C{[pool.health]} table unless
    C{health} adds one; and an admin listener.
    """
    return f"""
[[frontend]]
name = "web"
listen = "tcp:0:interface=127.0.0.1"
pool = "app"

[[pool]]
name = "app"
{health}
[[pool.backend]]
url = "http://127.0.0.1:{one.port}"

[[pool.backend]]
url = "http://127.0.0.1:{two.port}"

[admin]
listen = "tcp:0:interface=127.0.0.1"
token = "{TOKEN}"
"""


class QuickStartTests(SynchronousTestCase):
    """
    The README's quick start and the issue's first run.
    """

    def test_readmeQuickStartWorksAsWritten(self) -> None:
        """
        The README's quick-start file, with only its ports changed (the
        frontend's C{tcp:8080} to an OS-chosen port, the backends' 9001
        and 9002 to the ports the two C{http.server}s got), serves 200 from
        both backends through C{twistd -n lbtwist}.
        """
        written = readmeQuickStart()
        self.assertIn('url = "http://127.0.0.1:9001"', written)
        self.assertIn('url = "http://127.0.0.1:9002"', written)
        self.assertIn('listen = "tcp:8080:interface=127.0.0.1"', written)
        self.assertNotIn("[pool.health]", written)
        one, two = HTTPServer(self, "one"), HTTPServer(self, "two")
        config = (
            written.replace("tcp:8080:", "tcp:0:")
            .replace("127.0.0.1:9001", f"127.0.0.1:{one.port}")
            .replace("127.0.0.1:9002", f"127.0.0.1:{two.port}")
        )
        lb = Lbtwist(self, config)
        answers = [get(lb.port, "/who.txt") for _ in range(4)]
        self.assertEqual({status for status, _ in answers}, {200}, lb.output())
        self.assertEqual({body for _, body in answers}, {b"one", b"two"})
        status, body = get(lb.port, "/")
        self.assertEqual(status, 200)
        self.assertIn(b"who.txt", body)

    def test_issueScenarioServes(self) -> None:
        """
        The issue's first run: no C{[pool.health]} table and backends that
        answer 404 on C{/healthz}. The backends are checked over TCP, come
        up, and requests get 200 instead of 503.
        """
        one, two = HTTPServer(self, "one"), HTTPServer(self, "two")
        self.assertEqual(get(one.port, "/healthz")[0], 404)
        lb = Lbtwist(self, issueConfig(one, two))
        answers = [get(lb.port, "/who.txt") for _ in range(4)]
        self.assertEqual([status for status, _ in answers], [200] * 4, lb.output())
        self.assertEqual({body for _, body in answers}, {b"one", b"two"})
        backends = apiBackends(lb)
        self.assertEqual(
            {b["state"] for b in backends.values()}, {"up"}, json.dumps(backends)
        )
        self.assertEqual(
            {b["health"]["detail"] for b in backends.values()}, {"connected"}
        )


class FailingHTTPCheckTests(SynchronousTestCase):
    """
    An HTTP check that the backends fail says why, everywhere an operator
    looks.
    """

    @classmethod
    def setUpClass(cls) -> None:
        case = cls("test_503SaysWhy")
        cls.one, cls.two = HTTPServer(case, "one"), HTTPServer(case, "two")
        cls.addClassCleanup(case.doCleanups)
        # path without check: an HTTP check (see the README's table).
        health = '[pool.health]\npath = "/healthz"\ninterval = 0.2\ntimeout = 0.5\n'
        cls.lb = Lbtwist(cls, issueConfig(cls.one, cls.two, health))
        cls.reason = "HTTP 404 on GET /healthz (expected 200-399)"
        cls.lb.waitForLine(re.escape(cls.reason), timeout=5)

    def test_503SaysWhy(self) -> None:
        """
        The 503 page and its log line name the pool, how many backends are
        down, and the first one's reason.
        """
        mark = self.lb.mark()
        status, body = get(self.lb.port, "/")
        self.assertEqual(status, 503)
        why = (
            f'no backend available in pool "app": 2 of 2 down '
            f"(127.0.0.1:{self.one.port}: {self.reason})"
        )
        self.assertEqual(body, f"503 Service Unavailable\n{why}\n".encode())
        self.lb.waitForLine(
            re.escape(f"GET /: answering 503 after 0 attempt(s): {why}"),
            timeout=5,
            since=mark,
        )

    def test_reasonInTheAPI(self) -> None:
        """
        The API shows each backend's last failed check as its reason, not
        "waiting for first health check".
        """
        backends = apiBackends(self.lb)
        self.assertEqual(
            {b["reason"] for b in backends.values()}, {self.reason}, json.dumps(backends)
        )

    def test_failedChecksLoggedOncePerMinute(self) -> None:
        """
        Over many failed checks (every 0.2 s), each backend's failure is
        logged once, naming it as pool/address.
        """
        time.sleep(1.5)
        lines = [
            line
            for line in self.lb.output().splitlines()
            if "health check failed" in line
        ]
        self.assertEqual(len(lines), 2, "\n".join(lines))
        for server in (self.one, self.two):
            self.assertEqual(
                sum(
                    f"backend app/127.0.0.1:{server.port} is down: health check "
                    f"failed: {self.reason} (1 failed in a row)" in line
                    for line in lines
                ),
                1,
            )


class QuietLogTests(SynchronousTestCase):
    """
    Health probes leave nothing in the log while nothing changes.
    """

    def test_noFactoryNoise(self) -> None:
        """
        TCP checks of an HTTP pool and of a TCP pool, and HTTP checks,
        every 0.1 s for a second: no C{Starting factory} or C{Stopping
        factory} line, and no line at all once every backend is up.
        """
        one, two = HTTPServer(self, "one"), HTTPServer(self, "two")
        backends = "".join(
            f'[[pool.backend]]\nurl = "{{scheme}}://127.0.0.1:{server.port}"\n'
            f'name = "{name}"\n'
            for name, server in (("one", one), ("two", two))
        )
        config = f"""
[[frontend]]
name = "web"
listen = "tcp:0:interface=127.0.0.1"
pool = "app"

[[frontend]]
name = "raw"
listen = "tcp:0:interface=127.0.0.1"
pool = "raw"
mode = "tcp"

[[frontend]]
name = "checked"
listen = "tcp:0:interface=127.0.0.1"
pool = "checked"

[[pool]]
name = "app"
[pool.health]
interval = 0.1
{backends.format(scheme="http")}
[[pool]]
name = "raw"
[pool.health]
interval = 0.1
{backends.format(scheme="tcp")}
[[pool]]
name = "checked"
[pool.health]
check = "http"
path = "/who.txt"
interval = 0.1
{backends.format(scheme="http")}
"""
        lb = Lbtwist(self, config)
        for pool in ("app", "raw", "checked"):
            for name in ("one", "two"):
                lb.waitForLine(re.escape(f"backend {pool}/{name} (127.0.0.1:"), 5)
        self.assertEqual(get(lb.ports["checked"], "/who.txt")[0], 200)
        mark = lb.mark()
        time.sleep(1.2)
        output = lb.output()
        self.assertNotIn("Starting factory", output)
        self.assertNotIn("Stopping factory", output)
        self.assertEqual(lb.lines[mark:], [])


def freePort() -> int:
    """
    @return: A loopback TCP port that was free a moment ago.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class SocketActivated:
    """
    A C{twistd -n lbtwist} started the way systemd's socket activation
    starts it: its listening sockets are inherited as descriptors 3, 4...
    (C{LISTEN_FDS}, C{LISTEN_PID}). With C{systemd-socket-activate}
    installed, that tool owns the sockets and starts lbtwist on the first
    connection; without it the sockets are bound here and passed the same
    way.

    @ivar ports: The ports of the inherited sockets, in descriptor order.
    """

    def __init__(self, case: SynchronousTestCase, config: str, count: int) -> None:
        directory = tempfile.mkdtemp(prefix="lbtwist-activated-")
        case.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "lbtwist.toml")
        with open(path, "w") as f:
            f.write(config)
        command = [TWISTD, "-n", "--pidfile=", "--logfile=-", "lbtwist", "--config", path]
        env = dict(os.environ, PYTHONPATH=PROJECT_ROOT, PYTHONUNBUFFERED="1")
        self.lines: list[str] = []
        self._sockets: list[socket.socket] = []
        tool = shutil.which("systemd-socket-activate")
        if tool is not None:
            self.ports = [freePort() for _ in range(count)]
            # Twisted reads the descriptors only with their names
            # (LISTEN_FDNAMES), which systemd >= 227 always sets.
            names = ":".join(f"fd{index}" for index in range(count))
            argv = [tool, f"--fdname={names}"]
            argv += [f"--listen=127.0.0.1:{port}" for port in self.ports]
            argv += ["-E", "PYTHONPATH", "-E", "PYTHONUNBUFFERED", *command]
            self._start(case, argv, env, None)
            for port in self.ports:
                self.waitFor(f"Listening on 127.0.0.1:{port}")
        else:
            for _ in range(count):
                s = socket.socket()
                s.bind(("127.0.0.1", 0))
                s.listen(16)
                self._sockets.append(s)
            self.ports = [s.getsockname()[1] for s in self._sockets]
            env["LISTEN_FDS"] = str(count)
            env["LISTEN_FDNAMES"] = ":".join(f"fd{index}" for index in range(count))

            def inherit() -> None:
                for index, s in enumerate(self._sockets):
                    os.dup2(s.fileno(), 3 + index)

            argv = ["sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh", *command]
            self._start(case, argv, env, inherit)

    def _start(
        self, case: SynchronousTestCase, argv: list[str], env: dict[str, str], preexec: Any
    ) -> None:
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=preexec,
            close_fds=preexec is None,
        )
        case.addCleanup(self.stop)
        self._condition = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            with self._condition:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._condition.notify_all()

    def output(self) -> str:
        """
        @return: Everything written so far.
        """
        with self._condition:
            return "\n".join(self.lines)

    def waitFor(self, text: str, timeout: float = 10.0) -> None:
        """
        Wait until a line contains C{text}.
        """
        deadline = time.monotonic() + timeout
        with self._condition:
            while not any(text in line for line in self.lines):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {text!r} in:\n" + "\n".join(self.lines))
                self._condition.wait(min(remaining, 0.2))

    def stop(self) -> None:
        """
        SIGTERM, then SIGKILL after 10 s; close the sockets bound here.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._reader.join(5)
        for s in self._sockets:
            s.close()
        if self.process.stdout is not None:
            self.process.stdout.close()


class SocketActivationTests(SynchronousTestCase):
    """
    The first clients of a socket-activated lbtwist wait for the first
    round of checks instead of getting 503.
    """

    def test_firstClientsGetServed(self) -> None:
        """
        A TCP client connects the moment the sockets exist (with
        C{systemd-socket-activate}, its connection is what starts lbtwist),
        and an HTTP client right after: both are served by a backend, over
        a TCP frontend and an HTTP frontend whose backends start down.
        """
        one, two = HTTPServer(self, "one"), HTTPServer(self, "two")
        backends = "".join(
            f'[[pool.backend]]\nurl = "{{scheme}}://127.0.0.1:{server.port}"\n'
            for server in (one, two)
        )
        config = f"""
[[frontend]]
name = "raw"
listen = "systemd:domain=INET:index=0"
pool = "raw"
mode = "tcp"

[[frontend]]
name = "web"
listen = "systemd:domain=INET:index=1"
pool = "app"

[[pool]]
name = "raw"
{backends.format(scheme="tcp")}
[[pool]]
name = "app"
{backends.format(scheme="http")}
"""
        lb = SocketActivated(self, config, 2)
        rawPort, webPort = lb.ports
        with socket.create_connection(("127.0.0.1", rawPort), timeout=10) as raw:
            raw.sendall(b"GET /who.txt HTTP/1.0\r\nHost: x\r\n\r\n")
            try:
                status, body = get(webPort, "/who.txt")
            except OSError as e:
                raise AssertionError(f"{e}:\n{lb.output()}") from e
            received = b""
            while chunk := raw.recv(65536):
                received += chunk
        self.assertEqual((status, body in (b"one", b"two")), (200, True), lb.output())
        self.assertRegex(received, rb"^HTTP/1\.[01] 200 ")
        self.assertIn(received[-3:], (b"one", b"two"))
        self.assertNotIn("no backend available", lb.output())
