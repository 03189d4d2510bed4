# -*- test-case-name: tests.test_statefile -*-
"""
Tests for L{lbtwist.statefile}.
"""

from __future__ import annotations

import json
import os
from unittest import mock

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from lbtwist.statefile import StateFile


class StateFileTests(SynchronousTestCase):
    """
    Tests for L{StateFile}.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.path = os.path.join(self.directory, "lbtwist.state.json")
        self.stateFile = StateFile(self.path)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def write(self, data: bytes) -> None:
        """
        Write the state file's raw contents.
        """
        with open(self.path, "wb") as f:
            f.write(data)

    def levels(self) -> list[LogLevel]:
        """
        @return: The levels of the events logged so far.
        """
        return [event["log_level"] for event in self.events]

    def test_missingFileIsEmpty(self) -> None:
        """
        A state file that does not exist holds no overrides, and that is not
        an error.
        """
        self.assertEqual(self.stateFile.load(), {})
        self.assertEqual(self.levels(), [])

    def test_roundTrip(self) -> None:
        """
        What is saved is loaded back.
        """
        overrides: dict[str, dict[str, dict[str, object]]] = {
            "app": {"b1": {"state": "draining"}, "b2": {"weight": 3}},
            "api": {"x": {"state": "disabled", "weight": 7}},
        }
        self.stateFile.save(overrides)
        self.assertEqual(self.stateFile.load(), overrides)

    def test_fileFormat(self) -> None:
        """
        The file is a JSON object with the overrides under C{"pools"};
        pools without overrides are left out.
        """
        self.stateFile.save({"app": {"b1": {"state": "draining"}}, "empty": {}})
        with open(self.path) as f:
            self.assertEqual(
                json.load(f), {"pools": {"app": {"b1": {"state": "draining"}}}}
            )

    def test_corruptFile(self) -> None:
        """
        A file that is not JSON is ignored with a logged error.
        """
        self.write(b'{"pools": {"app": ')
        self.assertEqual(self.stateFile.load(), {})
        self.assertEqual(self.levels(), [LogLevel.error])
        self.assertEqual(self.events[0]["path"], self.path)

    def test_notAnObject(self) -> None:
        """
        JSON without a C{"pools"} object is ignored with a logged error.
        """
        for data in [b"[]", b"{}", b'{"pools": [1]}', b"\xff\xfe"]:
            self.write(data)
            self.assertEqual(self.stateFile.load(), {}, data)
        self.assertEqual(self.levels(), [LogLevel.error] * 4)

    def test_invalidEntriesSkipped(self) -> None:
        """
        Invalid pools, overrides and keys are skipped with a warning; the
        valid ones are kept.
        """
        self.write(
            json.dumps(
                {
                    "pools": {
                        "bad-pool": [1],
                        "app": {
                            "b1": {"state": "draining", "weight": 0},
                            "b2": {"state": "up"},
                            "b3": "draining",
                            "b4": {"weight": 2, "state": "disabled", "extra": 1},
                            "b5": {"weight": True},
                        },
                    }
                }
            ).encode()
        )
        self.assertEqual(
            self.stateFile.load(),
            {
                "app": {
                    "b1": {"state": "draining"},
                    "b4": {"state": "disabled", "weight": 2},
                }
            },
        )
        self.assertEqual(self.levels(), [LogLevel.warn] * 5)

    def test_saveReplacesAtomically(self) -> None:
        """
        Saving writes a temporary file in the same directory and renames it
        over the state file; no temporary file is left behind.
        """
        self.stateFile.save({"app": {"b1": {"state": "draining"}}})
        replaced = []
        realReplace = os.replace

        def replace(source: str, destination: str) -> None:
            with open(source) as f:
                replaced.append((os.path.dirname(source), destination, json.load(f)))
            with open(destination) as f:
                # The old contents are intact until the rename.
                self.assertEqual(
                    json.load(f)["pools"]["app"]["b1"]["state"], "draining"
                )
            realReplace(source, destination)

        with mock.patch("os.replace", replace):
            self.stateFile.save({"app": {"b1": {"state": "disabled"}}})
        self.assertEqual(
            replaced,
            [
                (
                    self.directory,
                    self.path,
                    {"pools": {"app": {"b1": {"state": "disabled"}}}},
                )
            ],
        )
        self.assertEqual(os.listdir(self.directory), ["lbtwist.state.json"])

    def test_failedSaveKeepsOldFile(self) -> None:
        """
        If the rename fails, the old file is untouched, the temporary file
        is removed, and the error is raised.
        """
        self.stateFile.save({"app": {"b1": {"state": "draining"}}})

        def replace(source: str, destination: str) -> None:
            raise OSError("disk full")

        with mock.patch("os.replace", replace):
            self.assertRaises(
                OSError, self.stateFile.save, {"app": {"b1": {"weight": 2}}}
            )
        self.assertEqual(os.listdir(self.directory), ["lbtwist.state.json"])
        self.assertEqual(self.stateFile.load(), {"app": {"b1": {"state": "draining"}}})

    def test_saveIntoMissingDirectory(self) -> None:
        """
        Saving into a directory that does not exist raises L{OSError}.
        """
        stateFile = StateFile(os.path.join(self.directory, "nope", "state.json"))
        self.assertRaises(OSError, stateFile.save, {})
