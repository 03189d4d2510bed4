"""
Tests for L{lbtwist.tap} and the twistd plugin: option parsing, the service
tree, plugin discovery and a real C{twistd} refusing a bad file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from lbtwist.health import HealthCheck
from lbtwist.service import FrontendListener, makeService
from lbtwist.tap import Options
from tests.harness import closedPort

ROOT = Path(__file__).resolve().parent.parent
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")

GOOD = """
[[frontend]]
name = "web"
listen = ["tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1"]
pool = "app"

[[pool]]
name = "app"
[pool.health]
check = "tcp"
[[pool.backend]]
url = "http://127.0.0.1:9001"
[[pool.backend]]
url = "http://127.0.0.1:9002"
"""

BAD = GOOD.replace(
    'url = "http://127.0.0.1:9002"', 'url = "http://127.0.0.1:9002"\nweight = 0'
)


class OptionsTests(SynchronousTestCase):
    """
    Parsing C{twistd lbtwist} options.
    """

    def write(self, text: str) -> str:
        path = self.mktemp()
        Path(path).write_text(text)
        return path

    def test_configFile(self) -> None:
        """
        C{--config} reads and validates the file.
        """
        options = Options()
        options.parseOptions(["--config", self.write(GOOD)])
        self.assertEqual(options["parsed"].pools[0].name, "app")

    def test_badConfigFile(self) -> None:
        """
        A bad file is a usage error naming the section and key.
        """
        options = Options()
        e = self.assertRaises(
            UsageError, options.parseOptions, ["--config", self.write(BAD)]
        )
        self.assertIn('pool "app" backend 2: weight must be a positive integer', str(e))

    def test_quickForm(self) -> None:
        """
        C{--listen} and C{--backend} repeat; weights and strategy apply.
        """
        options = Options()
        options.parseOptions(
            [
                "--listen",
                "tcp:8080",
                "--listen",
                "tcp:8081",
                "--backend",
                "http://127.0.0.1:9001",
                "--backend",
                "http://127.0.0.1:9002,weight=3",
                "--strategy",
                "weighted-round-robin",
                "--health-path",
                "/healthz",
            ]
        )
        config = options["parsed"]
        self.assertEqual(config.frontends[0].listen, ("tcp:8080", "tcp:8081"))
        pool = config.pools[0]
        self.assertEqual([b.weight for b in pool.backends], [1, 3])
        self.assertEqual(pool.strategy, "weighted-round-robin")
        self.assertEqual((pool.health.check, pool.health.path), ("http", "/healthz"))

    def test_nothingGiven(self) -> None:
        """
        Without any configuration the error says what to give.
        """
        e = self.assertRaises(UsageError, Options().parseOptions, [])
        self.assertIn("--config", str(e))

    def test_conflictingForms(self) -> None:
        """
        A file and the quick form together are refused.
        """
        self.assertRaises(
            UsageError,
            Options().parseOptions,
            ["--config", self.write(GOOD), "--backend", "http://127.0.0.1:1"],
        )

    def test_demo(self) -> None:
        """
        C{--demo} balances the three demo backends on 127.0.0.1:8080.
        """
        options = Options()
        options.parseOptions(["--demo"])
        config = options["parsed"]
        self.assertEqual(config.frontends[0].listen, ("tcp:8080:interface=127.0.0.1",))
        self.assertEqual(
            [b.address for b in config.pools[0].backends],
            ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"],
        )


class TwistdOptionsTests(SynchronousTestCase):
    """
    The options as twistd parses them: as its C{lbtwist} subcommand.
    """

    def parseUnderTwistd(self, *arguments: str) -> tuple[int | str | None, str, str]:
        """
        Parse C{twistd lbtwist ARGUMENTS} as twistd does, capturing standard
        output and error.

        @return: The exit code, standard output and standard error.
        """
        from io import StringIO

        from twisted.scripts.twistd import ServerOptions

        out, err = StringIO(), StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        exit = self.assertRaises(
            SystemExit, ServerOptions().parseOptions, ["lbtwist", *arguments]
        )
        return exit.code, out.getvalue(), err.getvalue()

    def test_badOptionIsOneLine(self) -> None:
        """
        Under twistd an unknown option is one line on standard error and
        exit status 1, without the usage text.
        """
        self.assertEqual(
            self.parseUnderTwistd("--bogus"),
            (
                1,
                "",
                "twistd lbtwist: error: option --bogus not recognized "
                "(see twistd lbtwist --help)\n",
            ),
        )

    def test_badConfigurationIsOneLine(self) -> None:
        """
        Under twistd a bad configuration is one line naming the file and key.
        """
        path = self.mktemp()
        Path(path).write_text(BAD)
        code, out, err = self.parseUnderTwistd("--config", path)
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(
            err,
            f'twistd lbtwist: error: {path}: pool "app" backend 2: weight must be '
            "a positive integer (see twistd lbtwist --help)\n",
        )

    def test_listenSuggestion(self) -> None:
        """
        C{--listen 8080} suggests C{tcp:8080}.
        """
        code, out, err = self.parseUnderTwistd(
            "--listen", "8080", "--backend", "http://127.0.0.1:9001"
        )
        self.assertEqual(code, 1)
        self.assertIn('did you mean "tcp:8080"?', err)
        self.assertEqual(len(err.splitlines()), 1)

    def test_version(self) -> None:
        """
        C{--version} prints lbtwist's version and exits 0.
        """
        from lbtwist import __version__

        code, out, err = self.parseUnderTwistd("--version")
        self.assertEqual((code, err), (0, ""))
        self.assertTrue(out.startswith(f"lbtwist {__version__} (Twisted "), out)

    def test_outsideTwistdRaises(self) -> None:
        """
        Parsed on their own, bad options raise L{UsageError} as usual.
        """
        self.assertRaises(UsageError, Options().parseOptions, ["--bogus"])


class ServiceTreeTests(SynchronousTestCase):
    """
    The service tree built from a configuration.
    """

    def test_listenersAndHealthChecks(self) -> None:
        """
        One listener per endpoint and one health check per backend; starting
        the tree listens and probes.
        """
        options = Options()
        path = self.mktemp()
        Path(path).write_text(GOOD)
        options.parseOptions(["--config", path])
        reactor = MemoryReactorClock()
        root = makeService(options["parsed"], reactor)
        services = list(root)
        self.assertEqual(
            len([s for s in services if isinstance(s, FrontendListener)]), 2
        )
        self.assertEqual(len([s for s in services if isinstance(s, HealthCheck)]), 2)
        root.privilegedStartService()
        root.startService()
        self.assertEqual(len(reactor.tcpServers), 2)
        self.assertEqual(sorted(c[1] for c in reactor.tcpClients), [9001, 9002])
        root.stopService()


    def test_tapExitsOnListenError(self) -> None:
        """
        The service the plugin gives twistd holds the load balancer; a
        listener that cannot listen is logged as one critical line and
        twistd exits with status 1.
        """
        from twisted.application.service import Service
        from twisted.logger import LogLevel, formatEvent, globalLogPublisher

        from lbtwist.listener import ListenError
        from lbtwist.service import LoadBalancer
        from lbtwist.tap import OneLineStartFailure, makeService as tapService

        options = Options()
        path = self.mktemp()
        Path(path).write_text(GOOD)
        options.parseOptions(["--config", path])
        self.patch(signal, "signal", lambda *args: None)
        top = tapService(options)
        self.assertIsInstance(top, OneLineStartFailure)
        self.assertEqual([type(s) for s in top], [LoadBalancer])

        class Refusing(Service):
            def privilegedStartService(self) -> None:
                raise ListenError(
                    'frontend "web": cannot listen on tcp:80: permission denied'
                )

        top = OneLineStartFailure()
        Refusing().setServiceParent(top)
        events: list[Any] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        exit = self.assertRaises(SystemExit, top.privilegedStartService)
        self.assertEqual(exit.code, 1)
        [critical] = [e for e in events if e["log_level"] is LogLevel.critical]
        self.assertEqual(
            formatEvent(critical),
            'frontend "web": cannot listen on tcp:80: permission denied',
        )


    def test_demoBackends(self) -> None:
        """
        With C{--demo}, the service the plugin gives twistd also holds the
        three demo backends.
        """
        from lbtwist.listener import Listener
        from lbtwist.service import LoadBalancer
        from lbtwist.tap import makeService as tapService

        options = Options()
        options.parseOptions(["--demo"])
        self.patch(signal, "signal", lambda *args: None)
        [root] = tapService(options)
        self.assertIsInstance(root, LoadBalancer)
        demos = [s for s in root if type(s) is Listener]
        self.assertEqual(
            [d.description for d in demos], ["tcp:9001", "tcp:9002", "tcp:9003"]
        )


    def test_tapFreezesHeap(self) -> None:
        """
        The plugin owns the process: it asks the load balancer to freeze
        what start-up made (L{LoadBalancer.freezeHeap}).
        """
        from lbtwist.service import LoadBalancer
        from lbtwist.tap import makeService as tapService

        asked: list[LoadBalancer] = []
        self.patch(LoadBalancer, "freezeHeap", lambda lb: asked.append(lb))
        self.patch(signal, "signal", lambda *args: None)
        options = Options()
        options.parseOptions(["--listen", "tcp:8080", "--backend", "http://127.0.0.1:9001"])
        [root] = tapService(options)
        self.assertEqual(asked, [root])


_STARTED_MODULES = """
import json, sys
from twisted.internet import reactor
from lbtwist.tap import Options, makeService

options = Options()
options.parseOptions(sys.argv[1:])
service = makeService(options)
service.privilegedStartService()
service.startService()

def report():
    print(json.dumps(sorted(sys.modules)))
    reactor.stop()

reactor.callLater(0.5, report)
reactor.run()
"""
"""
Starts lbtwist as C{twistd lbtwist ARGS} does (on the real reactor, health
checks probing for half a second), then prints the names of the modules
loaded.
"""

_OPTIONAL = [
    "lbtwist.admin",
    "lbtwist.metrics",
    "prometheus_client",
    "lbtwist.demo",
    "lbtwist.tcp",
    "twisted.web.server",
    "twisted.web.client",
    "twisted.web.http",
    "tomllib",
]
"""
What lbtwist imports only for a configuration that uses it: the admin
listener, the demo, TCP frontends, twisted.web's Site (admin, demo and
embedding), its HTTP client (HTTP health checks) and a configuration file.
"""


class StartupImportsTests(SynchronousTestCase):
    """
    lbtwist imports what its configuration uses: each module loaded costs
    memory for the whole life of the process.
    """

    def startedModules(self, *args: str) -> set[str]:
        """
        @return: The modules loaded by a new process that started lbtwist
            with the C{twistd lbtwist} options C{args}.
        """
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT)
        result = subprocess.run(
            [sys.executable, "-c", _STARTED_MODULES, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        modules: list[str] = json.loads(result.stdout.splitlines()[-1])
        self.assertIn("lbtwist.service", modules)
        return set(modules)

    def test_quickFormLeavesOutUnusedFeatures(self) -> None:
        """
        The quick form with TCP health checks (as the benchmark starts
        lbtwist) loads none of the optional modules.
        """
        backends = []
        for port in (closedPort(), closedPort(), closedPort()):
            backends += ["--backend", f"http://127.0.0.1:{port}"]
        modules = self.startedModules(
            "--listen", "tcp:0:interface=127.0.0.1", *backends
        )
        self.assertEqual(sorted(modules.intersection(_OPTIONAL)), [])

    def test_featuresLoadWhenConfigured(self) -> None:
        """
        A configuration file with C{[admin]}, HTTP health checks and a TCP
        frontend loads the modules they need.
        """
        path = self.mktemp()
        Path(path).write_text(
            f"""
[[frontend]]
name = "web"
listen = ["tcp:0:interface=127.0.0.1"]
pool = "app"

[[frontend]]
name = "db"
mode = "tcp"
listen = ["tcp:0:interface=127.0.0.1"]
pool = "db"

[[pool]]
name = "app"
[pool.health]
check = "http"
path = "/healthz"
[[pool.backend]]
url = "http://127.0.0.1:{closedPort()}"

[[pool]]
name = "db"
[[pool.backend]]
url = "tcp://127.0.0.1:{closedPort()}"

[admin]
listen = "tcp:0:interface=127.0.0.1"
"""
        )
        modules = self.startedModules("--config", path)
        self.assertEqual(
            sorted(modules.intersection(_OPTIONAL)),
            sorted(set(_OPTIONAL) - {"lbtwist.demo"}),
        )

    def test_adminOnlyLoadsAdmin(self) -> None:
        """
        The quick form with C{--admin} loads the admin pages, their metrics
        and twisted.web's Site, and nothing else optional.
        """
        modules = self.startedModules(
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--backend",
            f"http://127.0.0.1:{closedPort()}",
            "--admin",
            "tcp:0:interface=127.0.0.1",
        )
        self.assertEqual(
            sorted(modules.intersection(_OPTIONAL)),
            [
                "lbtwist.admin",
                "lbtwist.metrics",
                "prometheus_client",
                "twisted.web.http",
                "twisted.web.server",
            ],
        )


class PluginTests(SynchronousTestCase):
    """
    twistd finds the plugin and refuses bad configuration before binding.
    """

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT)
        return env

    def test_discovered(self) -> None:
        """
        The plugin is an L{IServiceMaker} named C{lbtwist}.
        """
        from twisted import plugins

        names = [p.tapname for p in getPlugins(IServiceMaker, plugins)]
        self.assertIn("lbtwist", names)

    def test_twistdHelp(self) -> None:
        """
        C{twistd lbtwist --help} lists the contract options.
        """
        result = subprocess.run(
            [TWISTD, "lbtwist", "--help"],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        for option in [
            "--config",
            "--listen",
            "--backend",
            "--strategy",
            "--health-path",
            "--demo",
        ]:
            self.assertIn(option, result.stdout)

    def test_installedPluginFound(self) -> None:
        """
        Once lbtwist is installed (C{pip install .}), C{twistd lbtwist
        --help} works from any directory without the checkout on the path.
        """
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        result = subprocess.run(
            [TWISTD, "lbtwist", "--help"],
            env=env, cwd="/", capture_output=True,
            text=True, timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("--backend", result.stdout)
        # Every module of the package is installed, the data path included.
        result = subprocess.run(
            [sys.executable, "-c", "import lbtwist.service, lbtwist._http.server"],
            env=env, cwd="/", capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)

    def test_twistdRefusesBadFile(self) -> None:
        """
        C{twistd -n lbtwist --config bad.toml} exits non-zero with the error,
        without starting.
        """
        path = self.mktemp()
        Path(path).write_text(BAD)
        result = subprocess.run(
            [TWISTD, "-n", "--pidfile=", "lbtwist", "--config", path],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertNotEqual(result.returncode, 0)
        output = result.stdout + result.stderr
        self.assertIn('pool "app" backend 2: weight must be a positive integer', output)
        self.assertNotIn("listening on", output)
