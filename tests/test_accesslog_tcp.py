# -*- test-case-name: tests.test_accesslog_tcp -*-
"""
Tests for the TCP-mode part of L{lbtwist.accesslog}: L{ConnectionRecord}
and its two formats.
"""

from __future__ import annotations

import json

from attrs import evolve
from twisted.trial.unittest import SynchronousTestCase

from lbtwist.accesslog import (
    AccessLog,
    ConnectionRecord,
    formatConnectionCombined,
    formatConnectionJSON,
)

# 2026-11-24 15:32:55.5 UTC
TIMESTAMP = 1795534375.5

RECORD = ConnectionRecord(
    timestamp=TIMESTAMP,
    client="127.0.0.1",
    frontend="pg",
    pool="pg",
    backend="127.0.0.1:5432",
    attempts=1,
    retryReasons=(),
    fromClient=123,
    toClient=456,
    duration=0.0123,
    outcome="closed",
)

COMBINED = (
    '127.0.0.1 - - [24/Nov/2026:15:32:55 +0000] "TCP pg" pool=pg'
    " backend=127.0.0.1:5432 attempts=1 from_client=123 to_client=456"
    " duration_ms=12.300 outcome=closed"
)


class FormatConnectionCombinedTests(SynchronousTestCase):
    """
    Tests for L{formatConnectionCombined}.
    """

    def test_format(self) -> None:
        """
        A connection is one combined-like line with lbtwist's fields.
        """
        self.assertEqual(formatConnectionCombined(RECORD), COMBINED)

    def test_noBackend(self) -> None:
        """
        A connection that reached no backend has C{backend=-}, a quoted
        outcome and the failed attempts' reasons.
        """
        record = evolve(
            RECORD,
            backend=None,
            attempts=2,
            retryReasons=("a: connection refused", "b: connect timeout"),
            fromClient=0,
            toClient=0,
            outcome="connect failed",
        )
        self.assertEqual(
            formatConnectionCombined(record),
            '127.0.0.1 - - [24/Nov/2026:15:32:55 +0000] "TCP pg" pool=pg backend=-'
            " attempts=2 from_client=0 to_client=0 duration_ms=12.300"
            ' outcome="connect failed"'
            ' retries="a: connection refused; b: connect timeout"',
        )

    def test_escaped(self) -> None:
        """
        Names cannot break the line or forge a field.
        """
        record = evolve(RECORD, frontend='a"b\nc', pool="p q")
        line = formatConnectionCombined(record)
        self.assertIn('"TCP a\\"b\\nc"', line)
        self.assertIn('pool="p q"', line)
        self.assertNotIn("\n", line)


class FormatConnectionJSONTests(SynchronousTestCase):
    """
    Tests for L{formatConnectionJSON}.
    """

    def test_format(self) -> None:
        """
        A connection is one JSON object with the documented keys.
        """
        self.assertEqual(
            json.loads(formatConnectionJSON(RECORD)),
            {
                "time": "2026-11-24T15:32:55.500Z",
                "client": "127.0.0.1",
                "frontend": "pg",
                "pool": "pg",
                "backend": "127.0.0.1:5432",
                "attempts": 1,
                "retry_reasons": [],
                "strategy": None,
                "choice": None,
                "from_client": 123,
                "to_client": 456,
                "duration_ms": 12.3,
                "outcome": "closed",
            },
        )

    def test_ascii(self) -> None:
        """
        The line is ASCII.
        """
        line = formatConnectionJSON(evolve(RECORD, frontend="caf\u00e9"))
        self.assertTrue(line.isascii())
        self.assertEqual(json.loads(line)["frontend"], "caf\u00e9")


class LogConnectionTests(SynchronousTestCase):
    """
    Tests for L{AccessLog.logConnection}.
    """

    def test_formats(self) -> None:
        """
        A connection is written in the format that goes with the log's.
        """
        for fmt, expected in (
            ("combined", COMBINED),
            ("json", formatConnectionJSON(RECORD)),
        ):
            lines: list[str] = []
            AccessLog(lines.append, fmt).logConnection(RECORD)
            self.assertEqual(lines, [expected + "\n"])
