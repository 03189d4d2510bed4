# -*- test-case-name: tests.test_accesslog -*-
"""
Tests for L{lbtwist.accesslog}.
"""

from __future__ import annotations

import io
import json
import os
import sys

from attrs import evolve
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import _escape as twistedEscape
from twisted.web.http import datetimeToLogString

from lbtwist.accesslog import (
    ACCESS_LOG_FORMATS,
    AccessLog,
    AccessRecord,
    formatCombined,
    formatJSON,
    openAccessLog,
    parseFormat,
)

# 2026-11-24 15:32:55.5 UTC
TIMESTAMP = 1795534375.5

RECORD = AccessRecord(
    timestamp=TIMESTAMP,
    client="127.0.0.1",
    method="GET",
    target="/p",
    version="HTTP/1.1",
    status=200,
    bytes=27,
    duration=0.00125,
    frontend="web",
    pool="app",
    backend="127.0.0.1:9001",
    attempts=1,
    retryReasons=(),
    referer=None,
    userAgent="curl/8",
)

COMBINED = (
    '127.0.0.1 - - [24/Nov/2026:15:32:55 +0000] "GET /p HTTP/1.1" 200 27 "-"'
    ' "curl/8" pool=app backend=127.0.0.1:9001 attempts=1 duration_ms=1.250'
)


class FlushCountingIO(io.StringIO):
    """
    A L{io.StringIO} that counts calls to C{flush}.
    """

    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


class FormatCombinedTests(SynchronousTestCase):
    """
    Tests for L{formatCombined}.
    """

    def test_format(self) -> None:
        """
        A record is Apache's combined format followed by the pool, backend,
        attempts and duration in milliseconds.
        """
        self.assertEqual(formatCombined(RECORD), COMBINED)

    def test_retries(self) -> None:
        """
        When there were retries, their reasons follow, quoted and separated
        by semicolons.
        """
        record = evolve(
            RECORD,
            attempts=3,
            retryReasons=("connection refused", "response timeout"),
        )
        self.assertEqual(
            formatCombined(record),
            COMBINED.replace("attempts=1", "attempts=3")
            + ' retries="connection refused; response timeout"',
        )

    def test_refererAndAgent(self) -> None:
        """
        The C{Referer} and C{User-Agent} are quoted; a missing one is C{-}.
        """
        record = evolve(RECORD, referer="http://example.com/", userAgent=None)
        self.assertIn(' "http://example.com/" "-" pool=', formatCombined(record))

    def test_noBytes(self) -> None:
        """
        A response without body bytes shows C{-} for the size, as Apache's
        C{%b} does.
        """
        record = evolve(RECORD, status=304, bytes=0)
        self.assertIn('"GET /p HTTP/1.1" 304 - "-"', formatCombined(record))

    def test_noBackend(self) -> None:
        """
        A request no backend answered shows C{backend=-}.
        """
        record = evolve(RECORD, status=503, bytes=0, backend=None, attempts=0)
        self.assertIn(" 503 - ", formatCombined(record))
        self.assertIn(
            " pool=app backend=- attempts=0 duration_ms=1.250", formatCombined(record)
        )

    def test_escapesQuotesAndControls(self) -> None:
        """
        Quotes, backslashes, line breaks and other control bytes in the
        request are backslash-escaped, so they cannot end a field or a line.
        """
        record = evolve(
            RECORD,
            target='/a"b\\c\r\n\x00\x7f',
            userAgent='x" 200 1 "y',
            referer="\t",
        )
        line = formatCombined(record)
        self.assertIn('"GET /a\\"b\\\\c\\r\\n\\x00\\x7f HTTP/1.1"', line)
        self.assertIn(' "\\t" "x\\" 200 1 \\"y" pool=', line)
        self.assertNotIn("\n", line)

    def test_escapesLikeTwisted(self) -> None:
        """
        A request's bytes, decoded as ISO-8859-1, are escaped exactly as
        Twisted's own access log escapes them.
        """
        for raw in [b"'", b'"', b"'\"", b"\\'", bytes(range(256))]:
            record = evolve(RECORD, target=raw.decode("latin-1"))
            self.assertIn(
                f'"GET {twistedEscape(raw)} HTTP/1.1"', formatCombined(record)
            )

    def test_escapesWideCharacters(self) -> None:
        """
        Characters beyond U+00FF become C{\\u} and C{\\U} escapes.
        """
        record = evolve(RECORD, userAgent="\u0100\U0001f600")
        self.assertIn(' "\\u0100\\U0001f600" pool=', formatCombined(record))

    def test_quotesOddNames(self) -> None:
        """
        A pool or backend name with a space is quoted and escaped, so that
        the C{key=value} fields stay apart.
        """
        record = evolve(RECORD, pool='my pool"', backend="b=1")
        self.assertIn(' pool="my pool\\"" backend=b=1 ', formatCombined(record))

    def test_escapesRetryReasons(self) -> None:
        """
        Retry reasons are escaped too.
        """
        record = evolve(RECORD, retryReasons=('bad "status" line\n',))
        self.assertTrue(
            formatCombined(record).endswith(' retries="bad \\"status\\" line\\n"')
        )

    def test_timeLikeTwisted(self) -> None:
        """
        The time is written exactly as Twisted's own access log writes it.
        """
        for month in range(12):
            timestamp = TIMESTAMP + month * 31 * 86400 + month * 3661.75
            record = evolve(RECORD, timestamp=timestamp)
            self.assertIn(
                f" - - {datetimeToLogString(timestamp)} ", formatCombined(record)
            )

    def test_timestampUTC(self) -> None:
        """
        The time is in UTC with English month names.
        """
        record = evolve(RECORD, timestamp=0.0)
        self.assertIn(" [01/Jan/1970:00:00:00 +0000] ", formatCombined(record))


class FormatJSONTests(SynchronousTestCase):
    """
    Tests for L{formatJSON}.
    """

    def test_format(self) -> None:
        """
        A record is one compact JSON object with the documented keys.
        """
        self.assertEqual(
            formatJSON(RECORD),
            '{"time":"2026-11-24T15:32:55.500Z","client":"127.0.0.1",'
            '"method":"GET","target":"/p","status":200,"bytes":27,'
            '"duration_ms":1.25,"frontend":"web","pool":"app",'
            '"backend":"127.0.0.1:9001","attempts":1,"retry_reasons":[],'
            '"strategy":null,"choice":null,'
            '"referer":null,"user_agent":"curl/8","request_id":null}',
        )

    def test_requestId(self) -> None:
        """
        The request's C{X-Request-ID} is the C{request_id} key; a request
        no pool served has a C{null} pool.
        """
        record = json.loads(formatJSON(evolve(RECORD, requestId="abc", pool=None)))
        self.assertEqual(record["request_id"], "abc")
        self.assertIsNone(record["pool"])

    def test_retriesAndNulls(self) -> None:
        """
        Retry reasons are a list; a missing backend is C{null}.
        """
        record = evolve(
            RECORD,
            backend=None,
            attempts=2,
            retryReasons=("connection refused", "connect timeout"),
            referer="http://example.com/",
        )
        parsed = json.loads(formatJSON(record))
        self.assertEqual(
            (parsed["backend"], parsed["attempts"], parsed["retry_reasons"]),
            (None, 2, ["connection refused", "connect timeout"]),
        )
        self.assertEqual(parsed["referer"], "http://example.com/")

    def test_asciiOnly(self) -> None:
        """
        Control and non-ASCII characters are escaped, so a record is one
        ASCII line, and they parse back unchanged.
        """
        target = '/\u00e9"\n\u2028\x00'
        line = formatJSON(evolve(RECORD, target=target))
        self.assertTrue(line.isascii())
        self.assertNotIn("\n", line)
        self.assertEqual(json.loads(line)["target"], target)

    def test_durationRounded(self) -> None:
        """
        The duration is in milliseconds, to the microsecond.
        """
        record = evolve(RECORD, duration=1.2345678)
        self.assertEqual(json.loads(formatJSON(record))["duration_ms"], 1234.568)


class AccessLogTests(SynchronousTestCase):
    """
    Tests for L{AccessLog}.
    """

    def test_combinedByDefault(self) -> None:
        """
        Each record is written as one combined line with a line break.
        """
        lines: list[str] = []
        log = AccessLog(lines.append)
        log.log(RECORD)
        log.log(RECORD)
        self.assertEqual(lines, [COMBINED + "\n", COMBINED + "\n"])

    def test_json(self) -> None:
        """
        With C{fmt="json"} each record is written as one JSON line.
        """
        lines: list[str] = []
        AccessLog(lines.append, "json").log(RECORD)
        self.assertEqual(lines, [formatJSON(RECORD) + "\n"])

    def test_unknownFormat(self) -> None:
        """
        An unknown format is refused, naming the known ones.
        """
        error = self.assertRaises(ValueError, AccessLog, print, "apache")
        self.assertEqual(
            str(error),
            'unknown access log format "apache" (formats: "combined", "json", '
            "or a format string with {fields})",
        )

    def test_formats(self) -> None:
        """
        The formats are C{combined} and C{json}.
        """
        self.assertEqual(
            ACCESS_LOG_FORMATS, {"combined": formatCombined, "json": formatJSON}
        )

    def test_close(self) -> None:
        """
        L{AccessLog.close} calls the C{close} given, and nothing by default.
        """
        closed: list[bool] = []
        AccessLog(print, close=lambda: closed.append(True)).close()
        AccessLog(print).close()
        self.assertEqual(closed, [True])


class OpenAccessLogTests(SynchronousTestCase):
    """
    Tests for L{openAccessLog}.
    """

    def pipe(self) -> tuple[int, int]:
        """
        A pipe standing in for standard output, closed after the test.

        @return: Its reading and writing ends.
        """
        readEnd, writeEnd = os.pipe()
        self.addCleanup(os.close, readEnd)
        self.addCleanup(os.close, writeEnd)
        return readEnd, writeEnd

    def test_stdout(self) -> None:
        """
        C{"-"} writes every line to standard output's file descriptor as it
        is logged, not to C{sys.stdout} (which twistd replaces with its own
        log, prefixing every line).
        """
        readEnd, writeEnd = self.pipe()
        stdout = FlushCountingIO()
        self.patch(sys, "stdout", stdout)
        log = openAccessLog("-", "combined", stdout=writeEnd)
        log.log(RECORD)
        self.assertEqual(os.read(readEnd, 4096), (COMBINED + "\n").encode())
        log.log(RECORD)
        self.assertEqual(os.read(readEnd, 4096), (COMBINED + "\n").encode())
        self.assertEqual(stdout.getvalue(), "")
        log.reopen()
        log.close()

    def test_stdoutFailureLoggedOnce(self) -> None:
        """
        Lines that cannot be written to standard output are dropped; the
        first failure is logged, once.
        """
        readEnd, writeEnd = os.pipe()
        os.close(readEnd)
        self.addCleanup(os.close, writeEnd)
        log = openAccessLog("-", "json", stdout=writeEnd)
        with capturedLogs() as events:
            log.log(RECORD)
            log.log(RECORD)
        errors = [e for e in events if e["log_level"] is LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertIn("cannot write to standard output", formatEvent(errors[0]))

    def test_file(self) -> None:
        """
        A path is appended to, and each line is in the file as soon as it is
        logged.
        """
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as file:
            file.write("earlier\n")
        log = openAccessLog(path, "combined")
        self.addCleanup(log.close)
        log.log(RECORD)
        with open(path, encoding="utf-8") as file:
            self.assertEqual(file.read(), "earlier\n" + COMBINED + "\n")

    def test_fileJSON(self) -> None:
        """
        A file log in the JSON format holds one object per line.
        """
        path = self.mktemp()
        log = openAccessLog(path, "json")
        log.log(RECORD)
        log.log(evolve(RECORD, status=404))
        log.close()
        with open(path, encoding="utf-8") as file:
            statuses = [json.loads(line)["status"] for line in file]
        self.assertEqual(statuses, [200, 404])

    def test_unknownFormat(self) -> None:
        """
        An unknown format is refused before the file is created.
        """
        path = self.mktemp()
        self.assertRaises(ValueError, openAccessLog, path, "xml")
        self.assertFalse(os.path.exists(path))

    def test_reopen(self) -> None:
        """
        After the file was moved away, L{AccessLog.reopen} makes the next
        lines go to a new file at the path; the moved file keeps the lines
        before.
        """
        path = self.mktemp()
        log = openAccessLog(path, "combined")
        self.addCleanup(log.close)
        log.log(RECORD)
        os.rename(path, path + ".1")
        log.log(evolve(RECORD, status=201))
        log.reopen()
        log.log(evolve(RECORD, status=202))
        with open(path + ".1", encoding="utf-8") as file:
            self.assertEqual([line.split()[8] for line in file], ["200", "201"])
        with open(path, encoding="utf-8") as file:
            self.assertEqual([line.split()[8] for line in file], ["202"])

    def test_reopenFails(self) -> None:
        """
        When the path cannot be opened again, L{AccessLog.reopen} raises
        L{OSError} and lines keep going to the file open before.
        """
        directory = self.mktemp()
        os.mkdir(directory)
        path = os.path.join(directory, "access.log")
        log = openAccessLog(path, "combined")
        self.addCleanup(log.close)
        os.rename(path, path + ".1")
        moved = directory + "-moved"
        os.rename(directory, moved)
        self.assertRaises(OSError, log.reopen)
        log.log(RECORD)
        with open(os.path.join(moved, "access.log.1"), encoding="utf-8") as file:
            self.assertEqual(file.read(), COMBINED + "\n")

    def test_formatString(self) -> None:
        """
        A format string writes the fields it names.
        """
        path = self.mktemp()
        log = openAccessLog(path, "{client_ip} {method} {path} {status}")
        log.log(evolve(RECORD, target="/p?q=1"))
        log.close()
        with open(path, encoding="utf-8") as file:
            self.assertEqual(file.read(), "127.0.0.1 GET /p 200\n")

    def test_unopenable(self) -> None:
        """
        A file that cannot be opened raises L{OSError}.
        """
        path = os.path.join(self.mktemp(), "missing", "access.log")
        self.assertRaises(OSError, openAccessLog, path, "combined")


class FormatStringTests(SynchronousTestCase):
    """
    Tests for access log format strings (L{parseFormat} and L{AccessLog}
    with one).
    """

    def line(self, fmt: str, record: AccessRecord = RECORD) -> str:
        lines: list[str] = []
        AccessLog(lines.append, fmt).log(record)
        [line] = lines
        return line

    def test_fields(self) -> None:
        """
        Each field of a request is written, escaped like the combined format.
        """
        record = evolve(
            RECORD,
            target="/a b?x=1",
            referer='say "hi"',
            requestId="abc-123",
            retryReasons=("connection refused",),
            attempts=2,
        )
        self.assertEqual(
            self.line(
                "{client_ip} {method} {target} {path} {query} {version} {status}"
                " {bytes} {duration_ms} {frontend} {pool} {backend} {attempts}"
                " {referer} {user_agent} {request_id} {retries}",
                record,
            ),
            '127.0.0.1 GET /a b?x=1 /a b x=1 HTTP/1.1 200 27 1.250 web app'
            ' 127.0.0.1:9001 2 say \\"hi\\" curl/8 abc-123 connection refused\n',
        )

    def test_times(self) -> None:
        """
        C{time} is ISO 8601 UTC, C{time_local} as in the combined format,
        C{timestamp} seconds since the epoch.
        """
        self.assertEqual(
            self.line("{time}|{time_local}|{timestamp}"),
            "2026-11-24T15:32:55.500Z|24/Nov/2026:15:32:55 +0000|1795534375.500\n",
        )

    def test_missingValuesAreDashes(self) -> None:
        """
        A field without a value (no backend, no query, no request ID) is
        C{-}, and so is a TCP-only field of a request.
        """
        self.assertEqual(
            self.line(
                "{backend} {query} {request_id} {outcome}",
                evolve(RECORD, backend=None),
            ),
            "- - - -\n",
        )

    def test_connection(self) -> None:
        """
        The same format string writes TCP-mode connections: their own fields,
        the common ones, and C{-} for HTTP-only ones.
        """
        from tests.test_accesslog_tcp import RECORD as CONNECTION

        lines: list[str] = []
        AccessLog(
            lines.append,
            "{client_ip} {frontend} {backend} {status} {from_client} {to_client}"
            " {outcome} {duration_ms}",
        ).logConnection(CONNECTION)
        self.assertEqual(
            lines, ["127.0.0.1 pg 127.0.0.1:5432 - 123 456 closed 12.300\n"]
        )

    def test_literalBraces(self) -> None:
        """
        C{{{} and C{}}} are literal braces.
        """
        self.assertEqual(self.line("{{{status}}}"), "{200}\n")

    def test_unknownField(self) -> None:
        """
        An unknown field is refused, naming it and the known ones.
        """
        error = self.assertRaises(ValueError, parseFormat, "{client_ip} {colour}")
        self.assertIn('unknown field "{colour}"', str(error))
        self.assertIn("client_ip, frontend", str(error))

    def test_badFormatStrings(self) -> None:
        """
        An unmatched brace, a format spec, a positional field and a string
        without fields are refused.
        """
        for fmt, expected in [
            ("{status", "not a valid format string"),
            ("{status:>5}", "format specs"),
            ("{status!r}", "format specs"),
            ("{}", 'unknown field "{}"'),
            ("plain", "is not \"combined\", \"json\" or a format string"),
        ]:
            error = self.assertRaises(ValueError, parseFormat, fmt)
            self.assertIn(expected, str(error), fmt)


class RoutingFieldsTests(SynchronousTestCase):
    """
    Every format says the strategy, why the backend was chosen, and why
    each retry was made.
    """

    routed = evolve(
        RECORD,
        strategy="random-two",
        choice="p2c: app-2 (2 in flight) over app-1 (5 in flight)",
        retryReasons=("app-3: connection refused",),
        attempts=2,
    )

    def test_combined(self) -> None:
        """
        The combined format ends with C{strategy=}, a quoted C{choice} and
        the quoted retries.
        """
        self.assertTrue(
            formatCombined(self.routed).endswith(
                ' attempts=2 duration_ms=1.250 strategy=random-two choice="p2c: '
                'app-2 (2 in flight) over app-1 (5 in flight)" retries="app-3: '
                'connection refused"'
            )
        )

    def test_json(self) -> None:
        """
        JSON has the keys C{strategy} and C{choice}.
        """
        parsed = json.loads(formatJSON(self.routed))
        self.assertEqual(
            (parsed["strategy"], parsed["choice"], parsed["retry_reasons"]),
            (
                "random-two",
                "p2c: app-2 (2 in flight) over app-1 (5 in flight)",
                ["app-3: connection refused"],
            ),
        )

    def test_formatString(self) -> None:
        """
        A format string may name C{strategy} and C{choice}; without them a
        record gives C{-}.
        """
        lines: list[str] = []
        log = AccessLog(lines.append, "{strategy} [{choice}]")
        log.log(self.routed)
        log.log(RECORD)
        self.assertEqual(
            lines,
            [
                "random-two [p2c: app-2 (2 in flight) over app-1 (5 in flight)]\n",
                "- [-]\n",
            ],
        )


class RecordedHeadersTests(SynchronousTestCase):
    """
    C{access_log_headers}: the JSON format records the named request
    headers.
    """

    def test_jsonHeaders(self) -> None:
        """
        A record with headers has a C{headers} object; one without has no
        such key.
        """
        record = evolve(RECORD, headers=(("X-User", "ann"),))
        self.assertEqual(json.loads(formatJSON(record))["headers"], {"X-User": "ann"})
        self.assertNotIn("headers", json.loads(formatJSON(RECORD)))

    def test_namesLowered(self) -> None:
        """
        The log keeps the names it records in lower case, to match any
        spelling.
        """
        log = AccessLog(lambda line: None, "json", headers=["X-User"])
        self.assertEqual(log.headers, (b"x-user",))
