# -*- test-case-name: tests.test_accesslog -*-
"""
The access log: one line per request.

Two formats.  C{"combined"} is Apache's combined log format::

    127.0.0.1 - - [24/Nov/2026:15:32:55 +0000] "GET /p HTTP/1.1" 200 27 "-" "curl/8"

followed on the same line by lbtwist's own fields::

     pool=app backend=127.0.0.1:9001 attempts=1 duration_ms=1.234

and by C{ retries="connection refused; response timeout"} when the request
was retried.  Every text taken from the request is escaped the way
Twisted's own access log escapes it (quotes, backslashes, control and
non-ASCII bytes become backslash escapes), so no request can break a line or
forge a field.  C{"json"} is one compact JSON object per line, ASCII only.

TCP-mode frontends log one line per connection, when it closes (a
L{ConnectionRecord}), in the same two formats::

    127.0.0.1 - - [24/Nov/2026:15:32:55 +0000] "TCP pg" pool=pg backend=127.0.0.1:5432 attempts=1 from_client=123 to_client=456 duration_ms=12.300 outcome=closed
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from datetime import datetime, timezone

from attrs import frozen
from twisted.web.http import datetimeToLogString

__all__ = [
    "ACCESS_LOG_FORMATS",
    "AccessLog",
    "AccessRecord",
    "ConnectionRecord",
    "formatCombined",
    "formatConnectionCombined",
    "formatConnectionJSON",
    "formatJSON",
    "openAccessLog",
]


@frozen
class AccessRecord:
    """
    One request, as the access log records it.

    @ivar timestamp: When the response was finished, in seconds since the
        epoch.
    @ivar client: The client's address, e.g. C{"192.0.2.7"}.
    @ivar method: The request method, e.g. C{"GET"}.
    @ivar target: The request target, e.g. C{"/index.html?q=1"}.
    @ivar version: The HTTP version, e.g. C{"HTTP/1.1"}.
    @ivar status: The status code sent to the client.
    @ivar bytes: The response body bytes sent to the client.
    @ivar duration: Seconds from the request to the end of the response.
    @ivar frontend: The frontend's name.
    @ivar pool: The pool's name.
    @ivar backend: The name of the backend that answered last, or L{None}
        if none did.
    @ivar attempts: How many backends were tried.
    @ivar retryReasons: Why each retry was made, e.g.
        C{("connection refused",)}.
    @ivar referer: The C{Referer} header, if any.
    @ivar userAgent: The C{User-Agent} header, if any.
    """

    timestamp: float
    client: str
    method: str
    target: str
    version: str
    status: int
    bytes: int
    duration: float
    frontend: str
    pool: str
    backend: str | None
    attempts: int
    retryReasons: tuple[str, ...]
    referer: str | None
    userAgent: str | None


_UNSAFE = re.compile(r'[^\x20-\x7e]|["\\]')
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escapeCharacter(match: re.Match[str]) -> str:
    """
    @param match: One character that may not appear in a log field as is.
    @return: Its backslash escape.
    """
    character = match.group()
    code = ord(character)
    if character in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[character]
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _escape(text: str) -> str:
    """
    Escape text for a double-quoted log field.

    The request's bytes arrive decoded as ISO-8859-1, and come out as
    L{twisted.web.http._escape} writes them: like Python's C{repr} of the
    bytes, with double quotes escaped too.  Characters beyond U+00FF (from
    the configuration) become C{\\uXXXX}.

    @param text: The text.
    @return: Printable ASCII with every C{"} and C{\\} escaped.
    """
    return _UNSAFE.sub(_escapeCharacter, text)


def _orDash(text: str | None) -> str:
    """
    @param text: Some text, or L{None}.
    @return: It escaped, or C{"-"} if it is L{None} or empty.
    """
    return _escape(text) if text else "-"


def _word(text: str | None) -> str:
    """
    Escape text for an unquoted C{key=value} field.

    @param text: Some text, or L{None}.
    @return: It escaped (and quoted if it has a space or is empty), or
        C{"-"} for L{None}.
    """
    if text is None:
        return "-"
    escaped = _escape(text)
    return f'"{escaped}"' if " " in escaped or not escaped else escaped


def formatCombined(record: AccessRecord) -> str:
    """
    Format a record in Apache's combined log format plus lbtwist's fields.

    @param record: The record.
    @return: One line, without the line break.
    """
    line = (
        f"{_orDash(record.client)} - - {datetimeToLogString(record.timestamp)}"
        f' "{_escape(record.method)} {_escape(record.target)}'
        f' {_escape(record.version)}"'
        f" {record.status} {record.bytes or '-'}"
        f' "{_orDash(record.referer)}" "{_orDash(record.userAgent)}"'
        f" pool={_word(record.pool)} backend={_word(record.backend)}"
        f" attempts={record.attempts} duration_ms={record.duration * 1000:.3f}"
    )
    if record.retryReasons:
        line += f' retries="{_escape("; ".join(record.retryReasons))}"'
    return line


def formatJSON(record: AccessRecord) -> str:
    """
    Format a record as one JSON object.

    @param record: The record.
    @return: One line of ASCII JSON, without the line break, with the keys
        C{time} (ISO 8601 UTC, in milliseconds), C{client}, C{method},
        C{target}, C{status}, C{bytes}, C{duration_ms}, C{frontend},
        C{pool}, C{backend}, C{attempts}, C{retry_reasons}, C{referer} and
        C{user_agent}.
    """
    time = datetime.fromtimestamp(record.timestamp, timezone.utc)
    return json.dumps(
        {
            "time": time.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "client": record.client,
            "method": record.method,
            "target": record.target,
            "status": record.status,
            "bytes": record.bytes,
            "duration_ms": round(record.duration * 1000, 3),
            "frontend": record.frontend,
            "pool": record.pool,
            "backend": record.backend,
            "attempts": record.attempts,
            "retry_reasons": list(record.retryReasons),
            "referer": record.referer,
            "user_agent": record.userAgent,
        },
        ensure_ascii=True,
        separators=(",", ":"),
    )


@frozen
class ConnectionRecord:
    """
    One TCP-mode connection, as the access log records it.

    @ivar timestamp: When the connection closed, in seconds since the epoch.
    @ivar client: The client's address, e.g. C{"192.0.2.7"} (the original
        client's with C{accept_proxy}).
    @ivar frontend: The frontend's name.
    @ivar pool: The pool's name.
    @ivar backend: The name of the backend the connection was relayed to,
        or L{None} if none could be connected.
    @ivar attempts: How many backends were tried.
    @ivar retryReasons: Why each failed attempt failed, e.g.
        C{("127.0.0.1:5432: connection refused",)}.
    @ivar fromClient: Bytes relayed from the client to the backend.
    @ivar toClient: Bytes relayed from the backend to the client.
    @ivar duration: Seconds from the client's connection to the close.
    @ivar outcome: How it ended, e.g. C{"closed"}, C{"idle timeout"},
        C{"client aborted"}, C{"no backend available"}, C{"connect failed"}.
    """

    timestamp: float
    client: str
    frontend: str
    pool: str
    backend: str | None
    attempts: int
    retryReasons: tuple[str, ...]
    fromClient: int
    toClient: int
    duration: float
    outcome: str


def formatConnectionCombined(record: ConnectionRecord) -> str:
    """
    Format a connection like L{formatCombined} formats a request: the client,
    the time, C{"TCP <frontend>"} in place of the request line, then
    lbtwist's fields.

    @param record: The record.
    @return: One line, without the line break.
    """
    line = (
        f"{_orDash(record.client)} - - {datetimeToLogString(record.timestamp)}"
        f' "TCP {_escape(record.frontend)}"'
        f" pool={_word(record.pool)} backend={_word(record.backend)}"
        f" attempts={record.attempts} from_client={record.fromClient}"
        f" to_client={record.toClient}"
        f" duration_ms={record.duration * 1000:.3f} outcome={_word(record.outcome)}"
    )
    if record.retryReasons:
        line += f' retries="{_escape("; ".join(record.retryReasons))}"'
    return line


def formatConnectionJSON(record: ConnectionRecord) -> str:
    """
    Format a connection as one JSON object.

    @param record: The record.
    @return: One line of ASCII JSON, without the line break, with the keys
        C{time} (ISO 8601 UTC, in milliseconds), C{client}, C{frontend},
        C{pool}, C{backend}, C{attempts}, C{retry_reasons}, C{from_client},
        C{to_client}, C{duration_ms} and C{outcome}.
    """
    time = datetime.fromtimestamp(record.timestamp, timezone.utc)
    return json.dumps(
        {
            "time": time.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "client": record.client,
            "frontend": record.frontend,
            "pool": record.pool,
            "backend": record.backend,
            "attempts": record.attempts,
            "retry_reasons": list(record.retryReasons),
            "from_client": record.fromClient,
            "to_client": record.toClient,
            "duration_ms": round(record.duration * 1000, 3),
            "outcome": record.outcome,
        },
        ensure_ascii=True,
        separators=(",", ":"),
    )


ACCESS_LOG_FORMATS: dict[str, Callable[[AccessRecord], str]] = {
    "combined": formatCombined,
    "json": formatJSON,
}
"""The access log formats by name."""


_CONNECTION_FORMATS: dict[
    Callable[[AccessRecord], str], Callable[[ConnectionRecord], str]
] = {
    formatCombined: formatConnectionCombined,
    formatJSON: formatConnectionJSON,
}
"""The connection format that goes with each request format."""


def _formatter(fmt: str) -> Callable[[AccessRecord], str]:
    """
    @param fmt: The name of an access log format.
    @return: The function that formats a record in it.
    @raise ValueError: If C{fmt} is not one of L{ACCESS_LOG_FORMATS}.
    """
    try:
        return ACCESS_LOG_FORMATS[fmt]
    except KeyError:
        known = ", ".join(f'"{name}"' for name in ACCESS_LOG_FORMATS)
        raise ValueError(
            f'unknown access log format "{fmt}" (formats: {known})'
        ) from None


class AccessLog:
    """
    Writes one line per request in one of L{ACCESS_LOG_FORMATS}.
    """

    def __init__(
        self,
        write: Callable[[str], object],
        fmt: str = "combined",
        *,
        close: Callable[[], object] = lambda: None,
    ) -> None:
        """
        @param write: Called with each line, line break included.
        @param fmt: C{"combined"} or C{"json"}.
        @param close: Called by L{AccessLog.close}, e.g. to close the file.
        @raise ValueError: If C{fmt} is not a known format.
        """
        self._write = write
        self._format = _formatter(fmt)
        self._close = close

    def log(self, record: AccessRecord) -> None:
        """
        Write a record as one line.

        @param record: The record.
        """
        self._write(self._format(record) + "\n")

    def logConnection(self, record: ConnectionRecord) -> None:
        """
        Write a TCP-mode connection as one line, in the format that goes with
        the log's request format.

        @param record: The record.
        """
        self._write(_CONNECTION_FORMATS[self._format](record) + "\n")

    def close(self) -> None:
        """
        Stop logging: close the file, if the log has one.
        """
        self._close()


def _writeStdout(line: str) -> None:
    """
    Write a line to the current C{sys.stdout} and flush it.

    @param line: The line.
    """
    sys.stdout.write(line)
    sys.stdout.flush()


def openAccessLog(path: str, fmt: str) -> AccessLog:
    """
    Open the access log named in the configuration.

    @param path: C{"-"} for standard output (flushed after every line), or
        a file to append to (line buffered, UTF-8).
    @param fmt: C{"combined"} or C{"json"}.
    @return: The log; L{AccessLog.close} closes its file.
    @raise ValueError: If C{fmt} is not a known format.
    @raise OSError: If the file cannot be opened.
    """
    if path == "-":
        return AccessLog(_writeStdout, fmt)
    _formatter(fmt)  # Refuse an unknown format before creating the file.
    file = open(path, "a", buffering=1, encoding="utf-8", errors="backslashreplace")
    return AccessLog(file.write, fmt, close=file.close)
