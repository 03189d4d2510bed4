# -*- test-case-name: tests.test_simulate -*-
"""
Tests for L{lbtwist.simulate} and C{python -m lbtwist simulate}.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from lbtwist.__main__ import main
from lbtwist.config import parseConfig
from lbtwist.simulate import (
    FailureWindow,
    Latency,
    SimulationError,
    parseFailure,
    parseLatency,
    poissonArrivals,
    replayArrivals,
    simulatePool,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent

CONFIG = """
[[frontend]]
name = "web"
listen = "tcp:8080"
pool = "app"

[[pool]]
name = "app"
strategy = "consistent-hash"
hash_key = "header:X-User"

[[pool.backend]]
url = "http://127.0.0.1:9001"
name = "app-1"

[[pool.backend]]
url = "http://127.0.0.1:9002"
name = "app-2"

[[pool.backend]]
url = "http://127.0.0.1:9003"
name = "app-3"
"""


def pool(strategy: str = "round-robin", **keys: Any) -> Any:
    """
    @return: A pool of three backends C{app-1} to C{app-3}.
    """
    document = {
        "frontend": [{"name": "web", "listen": "tcp:8080", "pool": "app"}],
        "pool": [
            {
                "name": "app",
                "strategy": strategy,
                "backend": [
                    {"url": f"http://127.0.0.1:900{i}", "name": f"app-{i}"}
                    for i in (1, 2, 3)
                ],
                **keys,
            }
        ],
    }
    return parseConfig(document).pools[0]


class ParsingTests(SynchronousTestCase):
    """
    Latency distributions and failure windows.
    """

    def test_latencies(self) -> None:
        """
        Fixed, lognormal and exponential latencies, in s, ms or us.
        """
        self.assertEqual(parseLatency("5ms"), Latency("fixed", 0.005))
        self.assertEqual(parseLatency("0.5s"), Latency("fixed", 0.5))
        self.assertEqual(
            parseLatency("lognormal:20ms:0.5"), Latency("lognormal", 0.02, 0.5)
        )
        self.assertEqual(parseLatency("exp:300us"), Latency("exponential", 0.0003))

    def test_latencyErrors(self) -> None:
        """
        A latency without a unit, an unknown distribution or a bad shape is
        refused with an example of the right form.
        """
        for text, message in [
            ("5", '--latency: "5" is not a duration such as 20ms, 0.5s or 300us'),
            ("gauss:5ms", '--latency: "gauss:5ms" is not 5ms, lognormal:20ms:0.5 or exp:20ms'),
            (
                "lognormal:5ms:x",
                '--latency: lognormal shape "x" must be a number from 0 to 5',
            ),
        ]:
            with self.subTest(text=text):
                error = self.assertRaises(SimulationError, parseLatency, text)
                self.assertEqual(str(error), message)

    def test_samples(self) -> None:
        """
        A lognormal's median is its scale; an exponential's draw follows its
        uniform number.
        """
        self.assertEqual(Latency("lognormal", 0.02, 0.5).sample(0.3, 0.0), 0.02)
        self.assertEqual(Latency("fixed", 0.02).sample(0.9, 2.0), 0.02)
        self.assertEqual(Latency("exponential", 1.0).sample(0.0, 0.0), 0.0)

    def test_failures(self) -> None:
        """
        A window has a start and a later end.
        """
        self.assertEqual(parseFailure("30s-60s"), FailureWindow(30.0, 60.0))
        self.assertTrue(FailureWindow(1.0, 2.0).covers(1.0))
        self.assertFalse(FailureWindow(1.0, 2.0).covers(2.0))
        self.assertRaises(SimulationError, parseFailure, "60s-30s")
        self.assertRaises(SimulationError, parseFailure, "30s")


class SimulatePoolTests(SynchronousTestCase):
    """
    L{simulatePool} runs lbtwist's pool and strategies on a clock.
    """

    def test_roundRobinSplitsEvenly(self) -> None:
        """
        Round robin gives each of three equal backends a third of the
        requests, and every request is answered.
        """
        arrivals = list(poissonArrivals(3000, 1000.0, 100, 1))
        outcome = simulatePool(pool(), "round-robin", arrivals, {}, {}, 0, 1)
        self.assertEqual([requests for _, requests, _, _ in outcome.backends], [1000] * 3)
        self.assertEqual(len(outcome.latencies), 3000)
        self.assertEqual(outcome.statuses, ((502, 0), (503, 0)))

    def test_failingBackendIsTakenOut(self) -> None:
        """
        A backend that refuses connections costs a few retried attempts,
        then passive and active checks take it out; no request fails.
        """
        arrivals = list(poissonArrivals(4000, 1000.0, 100, 1))
        outcome = simulatePool(
            pool(),
            "round-robin",
            arrivals,
            {},
            {"app-3": [FailureWindow(1.0, 3.0)]},
            0,
            1,
        )
        refused = {name: refused for name, _, _, refused in outcome.backends}
        self.assertEqual(refused["app-1"] + refused["app-2"], 0)
        # passive_fall = 3 in a row; one request app-3 had taken before the
        # window answered in between and reset the count.
        self.assertEqual(refused["app-3"], 4)
        self.assertEqual(outcome.hitFailing, 4)
        self.assertEqual(outcome.statuses, ((502, 0), (503, 0)))
        self.assertEqual(len(outcome.latencies), 4000)

    def test_peakEWMAAvoidsSlowBackend(self) -> None:
        """
        With one backend at 50 ms and two at 1 ms, peak-EWMA sends the slow
        one a small share; round robin gives it a third.
        """
        arrivals = list(poissonArrivals(3000, 500.0, 100, 1))
        latencies = {
            "app-1": Latency("fixed", 0.050),
            "app-2": Latency("fixed", 0.001),
            "app-3": Latency("fixed", 0.001),
        }
        ewma = simulatePool(pool(), "peak-ewma", arrivals, latencies, {}, 0, 1)
        slow = dict((name, n) for name, n, _, _ in ewma.backends)["app-1"]
        self.assertLess(slow, 3000 * 0.05)

    def test_consistentHashReportsKeysMoved(self) -> None:
        """
        Consistent hashing reports how many keys move on a membership
        change, near the ideal third and quarter.
        """
        arrivals = list(poissonArrivals(3000, 1000.0, 1000, 1))
        outcome = simulatePool(
            pool("consistent-hash", hash_key="header:X-User"),
            "consistent-hash",
            arrivals,
            {},
            {},
            0,
            1,
        )
        assert outcome.moved is not None
        removed, added = outcome.moved
        self.assertLess(abs(removed - 1 / 3), 0.2 / 3)
        self.assertLess(abs(added - 1 / 4), 0.2 / 4)

    def test_concurrencyQueues(self) -> None:
        """
        With one request at a time per backend, requests wait in line and
        clients see more than the service time.
        """
        arrivals = list(poissonArrivals(600, 400.0, 10, 1))
        latencies = {name: Latency("fixed", 0.005) for name in ("app-1", "app-2", "app-3")}
        outcome = simulatePool(pool(), "round-robin", arrivals, latencies, {}, 1, 1)
        self.assertEqual(outcome.latencies[0], 0.005)
        self.assertGreater(outcome.latencies[-1], 0.005)


class ReplayTests(SynchronousTestCase):
    """
    L{replayArrivals} reads lbtwist's JSON access log.
    """

    def test_arrivalsFromLog(self) -> None:
        """
        Each record of the pool becomes an arrival at its start time (end
        minus duration), with its client, target and latency.
        """
        lines = [
            json.dumps(
                {
                    "time": "2026-11-30T10:00:01.000Z",
                    "client": "10.0.0.2",
                    "method": "GET",
                    "target": "/b",
                    "pool": "app",
                    "duration_ms": 500.0,
                }
            ),
            json.dumps(
                {
                    "time": "2026-11-30T10:00:00.100Z",
                    "client": "10.0.0.1",
                    "target": "/a",
                    "pool": "app",
                    "duration_ms": 100.0,
                }
            ),
            json.dumps({"time": "2026-11-30T10:00:00Z", "pool": "other", "target": "/"}),
            "",
        ]
        arrivals = replayArrivals(io.StringIO("\n".join(lines)), "app", 1)
        self.assertEqual(
            [(a.at, a.clientAddress.host, a.target, a.observed) for a in arrivals],
            [(0.0, "10.0.0.1", b"/a", 0.1), (0.5, "10.0.0.2", b"/b", 0.5)],
        )

    def test_badLines(self) -> None:
        """
        A line that is not a record, or a log without the pool, is an error
        naming the line.
        """
        error = self.assertRaises(
            SimulationError, replayArrivals, io.StringIO("{}\nnot json\n"), "app", 1
        )
        self.assertTrue(str(error).startswith("--replay: line 2 is not a JSON"))
        error = self.assertRaises(
            SimulationError, replayArrivals, io.StringIO("{}\n"), "app", 1
        )
        self.assertEqual(str(error), '--replay: no request of pool "app" in the log')


class CommandTests(SynchronousTestCase):
    """
    C{python -m lbtwist simulate}.
    """

    def runMain(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            status = main(list(argv))
        return status, out.getvalue(), err.getvalue()

    def config(self, text: str = CONFIG) -> str:
        path = str(self.mktemp())
        Path(path).write_text(text)
        return path

    def test_sameSeedSameReport(self) -> None:
        """
        Two runs in separate processes with the same seed print the same
        report byte for byte; another seed prints another.
        """
        path = self.config()
        argv = [
            sys.executable, "-m", "lbtwist", "simulate", path, "--requests", "3000",
            "--strategy", "all", "--latency", "app-2=lognormal:30ms:0.5",
            "--fail", "app-3@1s-2s",
        ]
        env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
        outputs = []
        for seed, hashSeed in (("1", "1"), ("1", "2"), ("2", "1")):
            env["PYTHONHASHSEED"] = hashSeed
            result = subprocess.run(
                argv + ["--seed", seed], env=env, capture_output=True, timeout=120
            )
            self.assertEqual(result.returncode, 0, result.stderr)
            outputs.append(result.stdout)
        self.assertEqual(outputs[0], outputs[1])
        self.assertNotEqual(outputs[0], outputs[2])
        text = outputs[0].decode()
        for name in ("round-robin", "least-connections", "random-two", "consistent-hash", "peak-ewma"):
            self.assertIn(f'pool "app", strategy {name}\n', text)
        self.assertIn("keys moved: ", text)

    def test_reportShape(self) -> None:
        """
        The report has a header, a row per backend and a line for clients.
        """
        status, out, err = self.runMain(
            "simulate", self.config(), "--requests", "300", "--strategy", "round-robin",
            "--latency", "app-1=5ms", "--latency", "app-2=5ms", "--latency", "app-3=5ms",
        )
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(
            out.splitlines()[:8],
            [
                "300 requests at 2000/s from 1000 clients, seed 1",
                "",
                'pool "app", strategy round-robin',
                "  backend  requests   share  peak in flight  refused while failing",
                "  app-1         100   33.3%               6                      0",
                "  app-2         100   33.3%               6                      0",
                "  app-3         100   33.3%               6                      0",
                "  clients: p50 5.00 ms, p99 5.00 ms; 300 answered, failed: 0 x 502, "
                "0 x 503; 0 hit a failing backend",
            ],
        )

    def test_errors(self) -> None:
        """
        Bad options are one line on stderr and status 1.
        """
        path = self.config()
        for argv, message in [
            (["--strategy", "fastest"], '--strategy "fastest" is not one of'),
            (["--latency", "app-9=5ms"], '--latency: no backend named "app-9"'),
            (["--latency", "app-1"], '--latency: "app-1" is not of the form app-1=5ms'),
            (["--fail", "app-1@x"], '--fail: "x" is not a window such as 30s-60s'),
            (["--requests", "0"], "--requests, --rate and --clients must be positive"),
            (["--replay", "/nonexistent/log"], "--replay: cannot read /nonexistent/log"),
        ]:
            with self.subTest(argv=argv):
                status, out, err = self.runMain("simulate", path, *argv)
                self.assertEqual(status, 1)
                self.assertEqual(out, "")
                self.assertTrue(
                    err.startswith("python -m lbtwist simulate: error: " + message), err
                )
                self.assertEqual(err.count("\n"), 1)

    def test_badConfig(self) -> None:
        """
        A bad configuration file is refused as C{check} would.
        """
        status, out, err = self.runMain(
            "simulate", self.config(CONFIG.replace('"header:X-User"', '"ip"'))
        )
        self.assertEqual(status, 1)
        self.assertIn('error: pool "app": hash_key "ip" is not one of', err)

    def test_replay(self) -> None:
        """
        A JSON access log is replayed with its arrival times and latencies.
        """
        log = Path(self.mktemp())
        log.write_text(
            "\n".join(
                json.dumps(
                    {
                        "time": f"2026-11-30T10:00:0{i}.000Z",
                        "client": f"10.0.0.{i}",
                        "target": "/",
                        "pool": "app",
                        "duration_ms": 20.0,
                    }
                )
                for i in range(1, 7)
            )
        )
        status, out, err = self.runMain(
            "simulate", self.config(), "--replay", str(log), "--strategy", "round-robin"
        )
        self.assertEqual((status, err), (0, ""))
        self.assertTrue(out.startswith("replay of 6 log lines, seed 1\n"))
        self.assertIn("clients: p50 20.00 ms, p99 20.00 ms; 6 answered", out)

    def test_plot(self) -> None:
        """
        C{--plot} writes a PNG.
        """
        try:
            import matplotlib  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
        except ImportError:
            if os.environ.get("CI"):
                raise
            raise SkipTest("matplotlib is not installed")
        picture = Path(self.mktemp() + ".png")
        status, out, err = self.runMain(
            "simulate", self.config(), "--requests", "500", "--plot", str(picture)
        )
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(picture.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")

    def test_plotWithoutMatplotlib(self) -> None:
        """
        Without matplotlib, C{--plot} says how to install it.
        """
        saved = sys.modules.get("matplotlib")
        sys.modules["matplotlib"] = None  # type: ignore[assignment]
        try:
            status, out, err = self.runMain(
                "simulate", self.config(), "--requests", "100", "--plot", "x.png"
            )
        finally:
            if saved is None:
                del sys.modules["matplotlib"]
            else:
                sys.modules["matplotlib"] = saved
        self.assertEqual(status, 1)
        self.assertEqual(
            err,
            "python -m lbtwist simulate: error: --plot needs matplotlib: "
            "pip install 'lbtwist[plot]'\n",
        )


class ReadmeRunTests(SynchronousTestCase):
    """
    The simulator run the README shows ("Choosing a strategy") prints
    exactly what the README says it prints.
    """

    def test_readmeRun(self) -> None:
        """
        Running the README's command (without C{--plot}) gives the README's
        report, byte for byte.
        """
        readme = (PROJECT_ROOT / "README.rst").read_text()
        section = readme[readme.index("Choosing a strategy\n") :]
        command = section[section.index("    python -m lbtwist simulate") :]
        command = command[: command.index("\n\n")]
        argv = command.replace("\\\n", " ").split()
        self.assertEqual(argv[:4], ["python", "-m", "lbtwist", "simulate"])
        plot = argv.index("--plot")
        argv = argv[:plot] + argv[plot + 2 :]
        argv[0] = sys.executable
        argv[4] = str(PROJECT_ROOT / argv[4])
        block = section[section.index(".. code-block:: text\n\n") :].split("\n")[2:]
        expected = []
        for line in block:
            if line and not line.startswith("    "):
                break
            expected.append(line[4:])
        result = subprocess.run(
            argv,
            capture_output=True,
            env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)),
            timeout=300,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(
            result.stdout.decode(), "\n".join(expected).rstrip("\n") + "\n"
        )
