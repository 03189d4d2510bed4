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

Any other format is a format string with named fields (L{ACCESS_LOG_FIELDS}),
like C{"{client_ip} {method} {path} {status} {duration_ms} {backend}"};
C{{{} and C{}}} are literal braces.  It applies to requests and to TCP-mode
connections alike: a field a record does not have (C{status} of a
connection, C{outcome} of a request) is C{-}.

The log goes to a file (appended to; L{AccessLog.reopen} opens the path
again after it was moved away, for log rotation) or to standard output
(file descriptor 1, one C{write} per line, bypassing twistd's log).
"""

from __future__ import annotations

import json
import os
import re
import string
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from time import gmtime
from typing import Any

from attrs import frozen
from twisted.logger import Logger

_log = Logger()

__all__ = [
    "ACCESS_LOG_FIELDS",
    "ACCESS_LOG_FORMATS",
    "AccessLog",
    "AccessRecord",
    "ConnectionRecord",
    "formatCombined",
    "formatConnectionCombined",
    "formatConnectionJSON",
    "formatJSON",
    "openAccessLog",
    "parseFormat",
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
    @ivar pool: The pool's name, or L{None} for a request no pool served
        (a redirect, or no route matched).
    @ivar backend: The name of the backend that answered last, or L{None}
        if none did.
    @ivar attempts: How many backends were tried.
    @ivar retryReasons: Why each retry was made, e.g.
        C{("connection refused",)}.
    @ivar referer: The C{Referer} header, if any.
    @ivar userAgent: The C{User-Agent} header, if any.
    @ivar requestId: The C{X-Request-ID} header, if any.
    @ivar strategy: The pool's strategy, e.g. C{"random-two"}.
    @ivar choice: Why the last backend tried was chosen, e.g. C{"p2c: app-2
        (2 in flight) over app-1 (5 in flight)"}, or L{None} if none was.
    @ivar headers: The request header fields C{access_log_headers} names,
        as sent (the JSON format's C{headers} object).
    @ivar reason: Why lbtwist answered the request itself, e.g. C{"rate
        limited: client_ip 192.0.2.7"}, or L{None}.
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
    pool: str | None
    backend: str | None
    attempts: int
    retryReasons: tuple[str, ...]
    referer: str | None
    userAgent: str | None
    requestId: str | None = None
    strategy: str | None = None
    choice: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    reason: str | None = None


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


_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


def _logTime(timestamp: float) -> str:
    """
    @return: C{timestamp} as the common log format writes it, exactly as
        twisted.web's C{datetimeToLogString} does:
        C{[10/Nov/2026:14:03:01 +0000]}. (Not imported from twisted.web.http:
        that large module is needed for nothing else.)
    """
    t = gmtime(timestamp)
    return "[%02d/%s/%4d:%02d:%02d:%02d +0000]" % (
        t.tm_mday,
        _MONTHS[t.tm_mon - 1],
        t.tm_year,
        t.tm_hour,
        t.tm_min,
        t.tm_sec,
    )


def formatCombined(record: AccessRecord) -> str:
    """
    Format a record in Apache's combined log format plus lbtwist's fields.

    @param record: The record.
    @return: One line, without the line break.
    """
    line = (
        f"{_orDash(record.client)} - - {_logTime(record.timestamp)}"
        f' "{_escape(record.method)} {_escape(record.target)}'
        f' {_escape(record.version)}"'
        f" {record.status} {record.bytes or '-'}"
        f' "{_orDash(record.referer)}" "{_orDash(record.userAgent)}"'
        f" pool={_word(record.pool)} backend={_word(record.backend)}"
        f" attempts={record.attempts} duration_ms={record.duration * 1000:.3f}"
    )
    if record.reason is not None:
        line += f' reason="{_escape(record.reason)}"'
    return line + _routing(record)


def _routing(record: AccessRecord | ConnectionRecord) -> str:
    """
    The combined formats' last fields: the strategy, why the backend was
    chosen, and why each retry was made.
    """
    line = ""
    if record.strategy is not None:
        line += f" strategy={_word(record.strategy)}"
    if record.choice is not None:
        line += f' choice="{_escape(record.choice)}"'
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
        C{pool}, C{backend}, C{attempts}, C{retry_reasons}, C{strategy},
        C{choice}, C{referer}, C{user_agent} and C{request_id}, and
        C{reason} when lbtwist answered the request itself (see
        L{AccessRecord.reason}).
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
            "strategy": record.strategy,
            "choice": record.choice,
            **({"headers": dict(record.headers)} if record.headers else {}),
            **({"reason": record.reason} if record.reason is not None else {}),
            "referer": record.referer,
            "user_agent": record.userAgent,
            "request_id": record.requestId,
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
    @ivar pool: The pool's name, or L{None} if none was chosen (no SNI
        route matched, or the connection was closed before routing).
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
    @ivar strategy: The pool's strategy, e.g. C{"consistent-hash"}.
    @ivar choice: Why the last backend tried was chosen, or L{None}.
    """

    timestamp: float
    client: str
    frontend: str
    pool: str | None
    backend: str | None
    attempts: int
    retryReasons: tuple[str, ...]
    fromClient: int
    toClient: int
    duration: float
    outcome: str
    strategy: str | None = None
    choice: str | None = None


def formatConnectionCombined(record: ConnectionRecord) -> str:
    """
    Format a connection like L{formatCombined} formats a request: the client,
    the time, C{"TCP <frontend>"} in place of the request line, then
    lbtwist's fields.

    @param record: The record.
    @return: One line, without the line break.
    """
    line = (
        f"{_orDash(record.client)} - - {_logTime(record.timestamp)}"
        f' "TCP {_escape(record.frontend)}"'
        f" pool={_word(record.pool)} backend={_word(record.backend)}"
        f" attempts={record.attempts} from_client={record.fromClient}"
        f" to_client={record.toClient}"
        f" duration_ms={record.duration * 1000:.3f} outcome={_word(record.outcome)}"
    )
    return line + _routing(record)


def formatConnectionJSON(record: ConnectionRecord) -> str:
    """
    Format a connection as one JSON object.

    @param record: The record.
    @return: One line of ASCII JSON, without the line break, with the keys
        C{time} (ISO 8601 UTC, in milliseconds), C{client}, C{frontend},
        C{pool}, C{backend}, C{attempts}, C{retry_reasons}, C{strategy},
        C{choice}, C{from_client}, C{to_client}, C{duration_ms} and
        C{outcome}.
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
            "strategy": record.strategy,
            "choice": record.choice,
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


def _isoTime(timestamp: float) -> str:
    time = datetime.fromtimestamp(timestamp, timezone.utc)
    return time.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _path(target: str) -> str:
    return target.split("?", 1)[0]


def _query(target: str) -> str | None:
    return target.partition("?")[2] or None


_COMMON_FIELDS: dict[str, Callable[[AccessRecord | ConnectionRecord], str]] = {
    "time": lambda r: _isoTime(r.timestamp),
    "time_local": lambda r: _logTime(r.timestamp)[1:-1],
    "timestamp": lambda r: f"{r.timestamp:.3f}",
    "client_ip": lambda r: _orDash(r.client),
    "frontend": lambda r: _orDash(r.frontend),
    "pool": lambda r: _orDash(r.pool),
    "backend": lambda r: _orDash(r.backend),
    "attempts": lambda r: str(r.attempts),
    "retries": lambda r: _orDash("; ".join(r.retryReasons)),
    "strategy": lambda r: _orDash(r.strategy),
    "choice": lambda r: _orDash(r.choice),
    "duration_ms": lambda r: f"{r.duration * 1000:.3f}",
}

_REQUEST_FIELDS: dict[str, Callable[[AccessRecord], str]] = {
    "method": lambda r: _orDash(r.method),
    "target": lambda r: _orDash(r.target),
    "path": lambda r: _orDash(_path(r.target)),
    "query": lambda r: _orDash(_query(r.target)),
    "version": lambda r: _orDash(r.version),
    "status": lambda r: str(r.status),
    "bytes": lambda r: str(r.bytes),
    "referer": lambda r: _orDash(r.referer),
    "user_agent": lambda r: _orDash(r.userAgent),
    "request_id": lambda r: _orDash(r.requestId),
    "reason": lambda r: _orDash(r.reason),
}

_CONNECTION_FIELDS: dict[str, Callable[[ConnectionRecord], str]] = {
    "from_client": lambda r: str(r.fromClient),
    "to_client": lambda r: str(r.toClient),
    "outcome": lambda r: _orDash(r.outcome),
}

ACCESS_LOG_FIELDS: Mapping[str, str] = {
    "time": "when the request or connection ended, ISO 8601 UTC in milliseconds",
    "time_local": "the same, as the combined format writes it "
    "(24/Nov/2026:15:32:55 +0000)",
    "timestamp": "the same, in seconds since the epoch (1795534375.500)",
    "client_ip": "the client's address",
    "frontend": "the frontend's name",
    "pool": "the pool's name",
    "backend": "the name of the backend that answered (or was connected)",
    "attempts": "how many backends were tried",
    "retries": 'why each retry was made, separated by "; "',
    "strategy": "the pool's strategy (random-two)",
    "choice": "why the backend was chosen (p2c: app-2 (1 in flight) over "
    "app-1 (4 in flight))",
    "duration_ms": "milliseconds from the request (connection) to the end "
    "of the response (the close)",
    "method": "HTTP only: the request method",
    "target": "HTTP only: the request target, with the query",
    "path": "HTTP only: the request target without the query",
    "query": "HTTP only: the query, without the ?",
    "version": "HTTP only: the HTTP version (HTTP/1.1)",
    "status": "HTTP only: the status code sent",
    "bytes": "HTTP only: the response body bytes sent",
    "referer": "HTTP only: the Referer header",
    "user_agent": "HTTP only: the User-Agent header",
    "request_id": (
        "HTTP only: the X-Request-ID header (with request_id = true, the "
        "one lbtwist kept or gave)"
    ),
    "reason": "HTTP only: why lbtwist answered the request itself "
    "(rate limited: client_ip 192.0.2.7)",
    "from_client": "TCP only: bytes relayed from the client",
    "to_client": "TCP only: bytes relayed to the client",
    "outcome": "TCP only: how the connection ended (closed, idle timeout...)",
}
"""The fields of a format string, each with what it is; any value taken
from the request is escaped as in the combined format, and a field without
a value is C{-}."""


def parseFormat(fmt: str) -> tuple[tuple[str, str | None], ...]:
    """
    Parse an access log format string.

    @param fmt: E.g. C{"{client_ip} {method} {path} {status}"}; C{{{} and
        C{}}} are literal braces.
    @return: Pairs of literal text and the field that follows it (L{None}
        after the last).
    @raise ValueError: Naming the problem: an unknown field (and listing
        the known ones), a field with a conversion or format spec, an
        unmatched brace, or no field at all.
    """
    try:
        parts = list(string.Formatter().parse(fmt))
    except ValueError as e:
        raise ValueError(f'"{fmt}" is not a valid format string: {e}') from None
    parsed: list[tuple[str, str | None]] = []
    for literal, field, spec, conversion in parts:
        if field is not None:
            if field not in ACCESS_LOG_FIELDS:
                known = ", ".join(ACCESS_LOG_FIELDS)
                raise ValueError(
                    f'has unknown field "{{{field}}}" (fields: {known})'
                )
            if spec or conversion:
                raise ValueError(
                    f'field "{{{field}}}": conversions and format specs '
                    "(!r, :>5) are not supported"
                )
        parsed.append((literal, field))
    if not any(field for _, field in parsed):
        raise ValueError(
            f'"{fmt}" is not "combined", "json" or a format string with '
            "{fields} such as {client_ip} {status}"
        )
    return tuple(parsed)


def _templateFormatters(
    fmt: str,
) -> tuple[Callable[[AccessRecord], str], Callable[[ConnectionRecord], str]]:
    """
    @param fmt: A format string (see L{parseFormat}).
    @return: The function that formats a request in it, and the one that
        formats a connection.
    """
    parts = parseFormat(fmt)

    def formatter(
        fields: Mapping[str, Callable[[Any], str]],
    ) -> Callable[[Any], str]:
        getters = [
            (
                literal,
                None
                if field is None
                else _COMMON_FIELDS.get(field, fields.get(field, lambda r: "-")),
            )
            for literal, field in parts
        ]

        def format(record: Any) -> str:
            return "".join(
                literal + ("" if get is None else get(record))
                for literal, get in getters
            )

        return format

    return formatter(_REQUEST_FIELDS), formatter(_CONNECTION_FIELDS)


def _formatters(
    fmt: str,
) -> tuple[Callable[[AccessRecord], str], Callable[[ConnectionRecord], str]]:
    """
    @param fmt: The name of an access log format, or a format string.
    @return: The function that formats a request in it, and the one that
        formats a connection.
    @raise ValueError: If C{fmt} is neither one of L{ACCESS_LOG_FORMATS} nor
        a valid format string.
    """
    named = ACCESS_LOG_FORMATS.get(fmt)
    if named is not None:
        return named, _CONNECTION_FORMATS[named]
    if "{" not in fmt and "}" not in fmt:
        known = ", ".join(f'"{name}"' for name in ACCESS_LOG_FORMATS)
        raise ValueError(
            f'unknown access log format "{fmt}" (formats: {known}, or a format '
            "string with {fields})"
        )
    return _templateFormatters(fmt)


class AccessLog:
    """
    Writes one line per request (and per TCP-mode connection) in one of
    L{ACCESS_LOG_FORMATS} or in a format string.
    """

    def __init__(
        self,
        write: Callable[[str], object],
        fmt: str = "combined",
        *,
        close: Callable[[], object] = lambda: None,
        reopen: Callable[[], object] = lambda: None,
        headers: Sequence[str] = (),
    ) -> None:
        """
        @param write: Called with each line, line break included.
        @param fmt: C{"combined"}, C{"json"} or a format string.
        @param headers: Request header fields the JSON format records
            (C{access_log_headers}), e.g. for the simulator's C{--replay}.
        @param close: Called by L{AccessLog.close}, e.g. to close the file.
        @param reopen: Called by L{AccessLog.reopen}, e.g. to open the file
            again.
        @raise ValueError: If C{fmt} is not a known format.
        """
        self._write = write
        self.headers = tuple(name.lower().encode("ascii") for name in headers)
        self._format, self._formatConnection = _formatters(fmt)
        self._close = close
        self._reopen = reopen

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
        self._write(self._formatConnection(record) + "\n")

    def reopen(self) -> None:
        """
        Open the log's file again by its path, for log rotation: once the
        file was moved away, the next lines go to a new file.  Does nothing
        for standard output.

        @raise OSError: If the file cannot be opened; lines keep going to
            the file open before.
        """
        self._reopen()

    def close(self) -> None:
        """
        Stop logging: close the file, if the log has one.
        """
        self._close()


class _AppendedFile:
    """
    A file the access log appends to, line buffered, that can be opened
    again by its path.

    @ivar path: The file's path.
    """

    def __init__(self, path: str) -> None:
        """
        @param path: The file's path.
        @raise OSError: If it cannot be opened.
        """
        self.path = path
        self._file = self._open()

    def _open(self) -> Any:
        return open(
            self.path, "a", buffering=1, encoding="utf-8", errors="backslashreplace"
        )

    def write(self, line: str) -> None:
        """
        Append a line.
        """
        self._file.write(line)

    def reopen(self) -> None:
        """
        Open the path again and close the file open before.

        @raise OSError: If it cannot be opened; the file open before stays.
        """
        new = self._open()
        old, self._file = self._file, new
        old.close()

    def close(self) -> None:
        """
        Close the file.
        """
        self._file.close()


class _StandardOutput:
    """
    Standard output as a file descriptor, written to once per line, as
    nginx writes its logs: the lines bypass C{sys.stdout}, which twistd
    replaces with its own log (and its C{[stdout#info]} prefix).  A line
    that cannot be written (standard output closed, a full non-blocking
    pipe) is dropped; the first such failure is logged.
    """

    def __init__(self, fd: int = 1) -> None:
        """
        @param fd: The file descriptor.
        """
        self._fd = fd
        self._failed = False

    def write(self, line: str) -> None:
        """
        Write a line with as few C{write} calls as the descriptor allows.
        """
        data = line.encode("utf-8", "backslashreplace")
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError as e:
            if not self._failed:
                self._failed = True
                _log.error(
                    "access log: cannot write to standard output ({error}); "
                    "dropping access log lines",
                    error=e.strerror or str(e),
                )


def openAccessLog(
    path: str, fmt: str, stdout: int = 1, headers: Sequence[str] = ()
) -> AccessLog:
    """
    Open the access log named in the configuration.

    @param path: C{"-"} for standard output (one C{write} per line, no
        prefix), or a file to append to (line buffered, UTF-8).
    @param fmt: C{"combined"}, C{"json"} or a format string.
    @param stdout: The file descriptor of standard output.
    @param headers: Request header fields the JSON format records.
    @return: The log; L{AccessLog.close} closes its file and
        L{AccessLog.reopen} opens it again.
    @raise ValueError: If C{fmt} is not a known format.
    @raise OSError: If the file cannot be opened.
    """
    if path == "-":
        return AccessLog(_StandardOutput(stdout).write, fmt, headers=headers)
    _formatters(fmt)  # Refuse an unknown format before creating the file.
    file = _AppendedFile(path)
    return AccessLog(
        file.write, fmt, close=file.close, reopen=file.reopen, headers=headers
    )
