"""
Tests for L{lbtwist.tap} and the twistd plugin: option parsing, the service
tree, plugin discovery and a real C{twistd} refusing a bad file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from lbtwist.health import HealthCheck
from lbtwist.service import FrontendListener, makeService
from lbtwist.tap import Options

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
