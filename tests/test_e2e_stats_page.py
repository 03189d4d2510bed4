"""
The stats page in a real browser: headless Chromium (Debian's C{chromium})
against a real C{twistd -n lbtwist} measures where every backend's buttons
are laid out, at 1280 and at 1024 CSS pixels.

Skipped when Chromium is missing, except with C{CI=true}, where that is a
failure (C{.ci/run} installs it).
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from . import chromium
from .chromium import HeadlessChromium, chromiumOrSkip
from .harness import Lbtwist, ScriptedBackend, closedPort

# Every button of every backend row, with its box, and whether it is the
# element a click at its centre reaches once it is scrolled into view
# vertically (nothing covers or clips it).
_MEASURE = """
(() => {
  const viewport = document.documentElement.clientWidth;
  const rows = [...document.querySelectorAll("table.backends tbody tr")];
  const buttons = [];
  for (const row of rows) {
    const name = row.querySelector("td.backend .name").textContent;
    for (const button of row.querySelectorAll("td.actions button")) {
      button.scrollIntoView({block: "center", inline: "nearest"});
      const box = button.getBoundingClientRect();
      const hit = document.elementFromPoint(
        box.left + box.width / 2, box.top + box.height / 2);
      buttons.push({
        backend: name,
        label: button.textContent,
        left: box.left, right: box.right, width: box.width, height: box.height,
        reachable: hit === button || button.contains(hit),
      });
    }
  }
  window.scrollTo(0, 0);
  return {
    viewport: viewport,
    scrollWidth: document.documentElement.scrollWidth,
    scrollX: window.scrollX,
    rows: rows.length,
    buttons: buttons,
  };
})()
"""

LONG_NAME = "checkout-service-eu-west-1-canary-instance-with-a-very-long-name"


class StatsPageLayoutTests(SynchronousTestCase):
    """
    The stats page fits a 1280 px window with every button visible, and
    stays usable at 1024 px.
    """

    def setUp(self) -> None:
        chromiumOrSkip()
        self.backends = [ScriptedBackend(f"b{i}") for i in range(3)]
        for backend in self.backends:
            self.addCleanup(backend.close)
        down = [closedPort(), closedPort()]
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        state = os.path.join(os.path.abspath(self.directory), "state.json")
        with open(state, "w") as f:
            json.dump(
                {
                    "pools": {
                        "app": {
                            "one": {"weight": 7},
                            LONG_NAME: {"state": "draining"},
                        }
                    }
                },
                f,
            )
        names = ["one", LONG_NAME, "b2-" + "x" * 40]
        backendTables = "".join(
            f'[[pool.backend]]\nname = "{name}"\nurl = "{backend.url}"\nweight = 2\n'
            # Wide limits: "0/100,000" in the Active column.
            "max_connections = 100000\n"
            for name, backend in zip(names, self.backends)
        ) + "".join(
            f'[[pool.backend]]\nname = "down-{index}"\n'
            f'url = "http://127.0.0.1:{port}"\n'
            for index, port in enumerate(down)
        )
        config = f"""
[[frontend]]
name = "web"
listen = "tcp:0:interface=127.0.0.1"
pool = "app"

[[pool]]
name = "app"
strategy = "weighted-round-robin"
[pool.health]
check = "tcp"
interval = 0.2
timeout = 1.0
{backendTables}
[[frontend]]
name = "api"
listen = "tcp:0:interface=127.0.0.1"
pool = "api"

[[pool]]
name = "api"
[pool.health]
check = "none"
[[pool.backend]]
url = "{self.backends[0].url}"

[admin]
listen = "tcp:0:interface=127.0.0.1"

[settings]
state_file = "{state}"
"""
        self.lb = Lbtwist(self, config)
        self.url = f"http://127.0.0.1:{self.lb.ports['admin']}/"
        self.waitForChecks()
        self.browser = HeadlessChromium()
        self.addCleanup(self.browser.close)

    def waitForChecks(self) -> None:
        """
        Wait until every backend of C{app} has had three checks, so that
        the page shows up and down backends and a check history.
        """
        deadline = time.monotonic() + 15
        while True:
            with urllib.request.urlopen(self.url + "api/pools/app", timeout=5) as r:
                backends = json.load(r)["backends"]
            if all(len(b["check_history"]) >= 3 for b in backends):
                states = [b["state"] for b in backends]
                self.assertEqual(states, ["up", "draining", "up", "down", "down"])
                return
            if time.monotonic() > deadline:
                self.fail(f"no three checks per backend in time: {backends}")
            time.sleep(0.1)

    def measure(self, width: int) -> dict[str, Any]:
        """
        @param width: The window's width.
        @return: What L{_MEASURE} finds on the page at that width.
        """
        self.browser.open(self.url, width, 900)
        result: dict[str, Any] = self.browser.evaluate(_MEASURE)
        return result

    def assertButtonsInside(self, found: dict[str, Any]) -> None:
        """
        Every backend row has its four buttons, each of them inside the
        viewport horizontally and reachable by a click.
        """
        self.assertEqual(found["rows"], 6)
        self.assertEqual(len(found["buttons"]), 6 * 4)
        for button in found["buttons"]:
            where = f"{button['backend']} {button['label']}: {button}"
            self.assertGreater(button["width"], 20, where)
            self.assertGreater(button["height"], 10, where)
            self.assertGreaterEqual(button["left"], 0, where)
            self.assertLessEqual(button["right"], found["viewport"], where)
            self.assertTrue(button["reachable"], where)

    def test_fits1280(self) -> None:
        """
        At 1280x900 the page does not scroll sideways and every backend
        row's Drain, Disable, Enable and Reset buttons are inside the
        viewport; the page shows the override and the check history.
        """
        found = self.measure(1280)
        self.assertEqual(found["viewport"], 1280)
        self.assertLessEqual(found["scrollWidth"], found["viewport"])
        self.assertButtonsInside(found)
        marks = self.browser.evaluate(
            "[...document.querySelectorAll('.history i.passed, .history i.failed')]"
            ".length"
        )
        self.assertGreater(marks, 5)
        weight = self.browser.evaluate(
            "document.querySelector('span.runtime[title^=\"set at runtime\"]')"
            ".textContent"
        )
        self.assertEqual(weight, "7*")
        heading = self.browser.evaluate(
            "[...document.querySelectorAll('h2')].map(h => h.textContent).join()"
        )
        self.assertIn("queue 0 of 1,000 max, 5 s timeout", heading)
        active = self.browser.evaluate(
            "[...document.querySelectorAll('td[title*=\"max_connections\"]')]"
            ".map(td => td.textContent)"
        )
        self.assertEqual(active, ["0/100,000"] * 3)

    def test_usableAt1024(self) -> None:
        """
        At 1024 px every button is still inside the viewport and reachable.
        """
        found = self.measure(1024)
        self.assertEqual(found["viewport"], 1024)
        self.assertButtonsInside(found)


class ChromiumOrSkipTests(SynchronousTestCase):
    """
    Without Chromium the browser tests skip, except in CI.
    """

    def setUp(self) -> None:
        self.patch(chromium, "CHROMIUM", os.path.abspath(self.mktemp()))

    def test_skipsOutsideCI(self) -> None:
        """
        Without Chromium and without C{CI=true}, the test is skipped with a
        reason naming the browser and its package.
        """
        self.patch(os, "environ", {k: v for k, v in os.environ.items() if k != "CI"})
        e = self.assertRaises(SkipTest, chromiumOrSkip)
        self.assertIn("Debian package chromium", str(e))

    def test_failsInCI(self) -> None:
        """
        Without Chromium and with C{CI=true}, the test fails.
        """
        self.patch(os, "environ", dict(os.environ, CI="true"))
        e = self.assertRaises(AssertionError, chromiumOrSkip)
        self.assertIn("CI=true", str(e))
