"""
End-to-end tests of what an operator meets first, through a real
C{twistd -n lbtwist}: start-up failures as one line with exit status 1,
C{--version}, the access log reopened on SIGUSR1 and SIGHUP after it was
moved away, C{access_log = "-"} without twistd's prefix, format strings,
and the environment expanded in the configuration file.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from unittest import mock

from twisted.trial.unittest import SynchronousTestCase

from lbtwist import __version__

from .harness import PROJECT_ROOT, Lbtwist, ScriptedBackend, webConfig
from .test_e2e_reload_tx import get, waitFor

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def twistd(*arguments: str, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """
    Run C{twistd -n --pidfile= lbtwist ARGUMENTS} until it exits.

    @return: The finished process, standard error merged into standard
        output.
    """
    env = dict(os.environ, PYTHONPATH=PROJECT_ROOT)
    return subprocess.run(
        [TWISTD, "-n", "--pidfile=", "lbtwist", *arguments],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
    )


# twistd's own start-up lines, before lbtwist's, and the line Twisted logs
# for every port it binds (here, the frontend bound before the admin port
# failed); lbtwist cannot silence them through Twisted's public API.
_TWISTD_PREAMBLE = re.compile(
    r"UnixAppLogger#info\] (twistd .* starting up|reactor class)"
    r"|\[-\] HTTPFrontend starting on \d+$"
)


class StartupFailureTests(SynchronousTestCase):
    """
    Every start-up failure is one line naming the cause, and exit status 1.
    """

    def assertOneLine(
        self, result: subprocess.CompletedProcess[str], expected: str
    ) -> None:
        """
        Assert that the process exited 1 and that, apart from twistd's own
        start-up lines, its output is one line containing C{expected}, with
        no traceback and nothing claiming to listen.
        """
        self.assertEqual(result.returncode, 1, result.stdout)
        self.assertNotIn("Traceback", result.stdout)
        self.assertNotIn("listening on", result.stdout)
        lines = [
            line
            for line in result.stdout.splitlines()
            if not _TWISTD_PREAMBLE.search(line)
        ]
        self.assertEqual(len(lines), 1, result.stdout)
        self.assertIn(expected, lines[0])

    def taken(self) -> int:
        """
        A loopback port this test holds, listening.
        """
        sock = socket.socket()
        self.addCleanup(sock.close)
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port: int = sock.getsockname()[1]
        return port

    def test_frontendPortInUse(self) -> None:
        """
        A frontend port in use: one line naming the frontend, the endpoint
        and the cause.
        """
        port = self.taken()
        config = os.path.join(self.mktemp() + ".toml")
        with open(config, "w") as f:
            f.write(
                webConfig([]).replace("tcp:0:", f"tcp:{port}:")
                + '[[pool.backend]]\nurl = "http://127.0.0.1:9"\n'
            )
        self.assertOneLine(
            twistd("--config", config),
            f'frontend "web": cannot listen on tcp:{port}:interface=127.0.0.1: '
            "address already in use",
        )

    def test_adminPortInUse(self) -> None:
        """
        The admin port in use: one line naming the admin listener.
        """
        port = self.taken()
        self.assertOneLine(
            twistd(
                "--listen", "tcp:0:interface=127.0.0.1",
                "--backend", "http://127.0.0.1:9",
                "--admin", f"tcp:{port}:interface=127.0.0.1",
            ),
            f"admin: cannot listen on tcp:{port}:interface=127.0.0.1: "
            "address already in use",
        )

    def test_badOption(self) -> None:
        """
        A bad option: one line, not the usage text.
        """
        self.assertOneLine(
            twistd("--bogus"),
            "twistd lbtwist: error: option --bogus not recognized "
            "(see twistd lbtwist --help)",
        )

    def test_barePort(self) -> None:
        """
        C{--listen 8080} suggests C{tcp:8080}.
        """
        self.assertOneLine(
            twistd("--listen", "8080", "--backend", "http://127.0.0.1:9"),
            'twistd lbtwist: error: --listen "8080" is not an endpoint '
            'description; did you mean "tcp:8080"?',
        )

    def test_badFile(self) -> None:
        """
        A bad configuration file: one line naming the file, section and key.
        """
        config = self.mktemp() + ".toml"
        with open(config, "w") as f:
            f.write(webConfig([]) + '[[pool.backend]]\nurl = "http://127.0.0.1:9"\nweight = 0\n')
        self.assertOneLine(
            twistd("--config", config),
            f'{config}: pool "app" backend 1: weight must be a positive integer',
        )

    def test_accessLogCannotBeOpened(self) -> None:
        """
        An access log file that cannot be opened: one line naming it.
        """
        missing = os.path.abspath(os.path.join(self.mktemp(), "access.log"))
        config = self.mktemp() + ".toml"
        with open(config, "w") as f:
            f.write(
                webConfig([]) + '[[pool.backend]]\nurl = "http://127.0.0.1:9"\n'
                f'[settings]\naccess_log = "{missing}"\n'
            )
        self.assertOneLine(
            twistd("--config", config),
            f"twistd lbtwist: error: [settings] access_log: cannot open {missing}: "
            "no such file or directory",
        )

    def test_unsetEnvironmentVariable(self) -> None:
        """
        A file naming an unset environment variable: one line naming the key
        and the variable.
        """
        config = self.mktemp() + ".toml"
        with open(config, "w") as f:
            f.write(
                webConfig([])
                + '[[pool.backend]]\nurl = "http://${LBTWIST_TEST_UNSET_HOST}:9"\n'
            )
        self.assertOneLine(
            twistd("--config", config),
            'pool "app" backend 1: url: environment variable '
            "LBTWIST_TEST_UNSET_HOST is not set",
        )

    def test_version(self) -> None:
        """
        C{--version} prints lbtwist's version and exits 0; so does
        C{python -m lbtwist --version}.
        """
        result = twistd("--version")
        self.assertEqual(result.returncode, 0, result.stdout)
        self.assertRegex(result.stdout, rf"^lbtwist {re.escape(__version__)} \(Twisted ")
        self.assertEqual(len(result.stdout.splitlines()), 1)
        module = subprocess.run(
            [sys.executable, "-m", "lbtwist", "--version"],
            env=dict(os.environ, PYTHONPATH=PROJECT_ROOT),
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual((module.returncode, module.stdout), (0, result.stdout))


class AccessLogTests(SynchronousTestCase):
    """
    The access log: rotation, standard output, format strings.
    """

    def setUp(self) -> None:
        self.backend = ScriptedBackend("a1")
        self.addCleanup(self.backend.close)

    def start(self, settings: str) -> Lbtwist:
        return Lbtwist(self, webConfig([self.backend]) + "[settings]\n" + settings)

    def assertRotates(self, signum: signal.Signals) -> None:
        """
        After the log was moved away and C{signum} sent, the next request's
        line goes to a new file at the path; the moved file has the lines
        before.
        """
        directory = os.path.abspath(self.mktemp())
        os.mkdir(directory)
        path = os.path.join(directory, "access.log")
        lb = self.start(f'access_log = "{path}"\naccess_log_format = "json"\n')
        get(lb.port)
        waitFor(lambda: os.path.exists(path) and os.path.getsize(path) > 0, 5, "first line")
        os.rename(path, path + ".1")
        mark = lb.mark()
        lb.process.send_signal(signum)
        lb.waitForLine(re.escape(f"reopened the access log {path}"), since=mark)
        get(lb.port)
        waitFor(lambda: os.path.exists(path) and os.path.getsize(path) > 0, 5, "new file")
        with open(path + ".1") as f:
            self.assertEqual(len(f.readlines()), 1)
        with open(path) as f:
            [line] = f.readlines()
        self.assertEqual(json.loads(line)["status"], 200)

    def test_reopenOnUSR1(self) -> None:
        """
        SIGUSR1 reopens the access log.
        """
        self.assertRotates(signal.SIGUSR1)

    def test_reopenOnHUP(self) -> None:
        """
        SIGHUP reopens the access log (and reloads).
        """
        self.assertRotates(signal.SIGHUP)

    def test_stdoutBareLines(self) -> None:
        """
        C{access_log = "-"} writes bare lines to standard output, in a
        format string's fields, without twistd's log prefix.
        """
        lb = self.start(
            'access_log = "-"\n'
            'access_log_format = "{client_ip} {method} {path} {status} {backend} '
            '{request_id} {{x}}"\n'
        )
        sock = socket.create_connection(("127.0.0.1", lb.port), timeout=5)
        try:
            sock.sendall(
                b"GET /hello?q=1 HTTP/1.1\r\nHost: lb\r\nX-Request-ID: r-42\r\n"
                b"Connection: close\r\n\r\n"
            )
            while sock.recv(65536):
                pass
        finally:
            sock.close()
        _, found = lb.waitForLine(r"GET /hello")  # type: ignore[misc]
        self.assertEqual(found.string, "127.0.0.1 GET /hello 200 a1 r-42 {x}")


class EnvironmentTests(SynchronousTestCase):
    """
    The environment in the configuration file.
    """

    def test_expandedAtStartAndReload(self) -> None:
        """
        C{${NAME}} and C{${NAME:-default}} are expanded from the process's
        environment at start and again at a reload.
        """
        backend = ScriptedBackend("a1")
        self.addCleanup(backend.close)
        text = (
            webConfig([])
            .replace('listen = "tcp:0:interface=127.0.0.1"',
                     'listen = "tcp:${LBTWIST_TEST_PORT:-0}:interface=${LBTWIST_TEST_IP}"')
            + '[[pool.backend]]\nurl = "http://${LBTWIST_TEST_IP}:'
            + str(backend.port) + '"\nname = "a1"\n'
        )
        with mock.patch.dict(os.environ, {"LBTWIST_TEST_IP": "127.0.0.1"}):
            lb = Lbtwist(self, text)
        self.assertEqual(get(lb.port), b"a1")
        with open(lb.configPath, "a") as f:
            f.write('[[pool.backend]]\nurl = "http://${LBTWIST_TEST_NOPE}:1"\n')
        mark = lb.mark()
        lb.process.send_signal(signal.SIGHUP)
        lb.waitForLine(
            r"reload failed.*pool \"app\" backend 2: url: environment variable "
            r"LBTWIST_TEST_NOPE is not set",
            since=mark,
        )
        self.assertEqual(get(lb.port), b"a1")


class TwistdLogfileTests(SynchronousTestCase):
    """
    With twistd's C{--logfile}, SIGUSR1 still rotates it as twistd does.
    """

    def test_usr1RotatesBoth(self) -> None:
        """
        SIGUSR1 reopens the access log and then calls twistd's own handler,
        which rotates its log file (C{twistd.log} to C{twistd.log.1}).
        """
        directory = os.path.abspath(self.mktemp())
        os.mkdir(directory)
        config = os.path.join(directory, "lbtwist.toml")
        with open(config, "w") as f:
            f.write(
                webConfig([]) + '[[pool.backend]]\nurl = "http://127.0.0.1:9"\n'
                '[settings]\naccess_log = "access.log"\n'
            )
        process = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "--logfile=twistd.log", "lbtwist",
             "--config", config],
            env=dict(os.environ, PYTHONPATH=PROJECT_ROOT),
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def stop() -> None:
            process.terminate()
            process.wait(10)

        self.addCleanup(stop)
        log = os.path.join(directory, "twistd.log")

        def logged(text: str, path: str = log) -> bool:
            try:
                with open(path) as f:
                    return text in f.read()
            except FileNotFoundError:
                return False

        waitFor(lambda: logged("frontend web listening on"), 20, "listening")
        os.rename(
            os.path.join(directory, "access.log"),
            os.path.join(directory, "access.log.1"),
        )
        process.send_signal(signal.SIGUSR1)
        waitFor(lambda: os.path.exists(log + ".1"), 5, "twistd.log rotated")
        self.assertTrue(os.path.exists(os.path.join(directory, "access.log")))
        self.assertTrue(logged("reopened the access log access.log", log + ".1"))
