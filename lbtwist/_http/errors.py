# -*- test-case-name: tests.test_http_server -*-
"""
lbtwist's own error responses: short plain text naming the status, never
echoing request data.
"""

from __future__ import annotations

__all__ = ["PHRASES", "errorBody", "errorResponse"]

PHRASES = {
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    409: b"Conflict",
    413: b"Content Too Large",
    414: b"URI Too Long",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}


def errorBody(code: int, detail: str | None = None) -> tuple[bytes, bytes]:
    """
    The reason phrase and body of one of lbtwist's own error responses.

    @param code: A status code of L{PHRASES}.
    @param detail: One line of lbtwist's own words to add, e.g. why no
        backend is available; never request data.  Control characters
        become spaces.
    @return: C{(phrase, body)}, e.g. C{(b"Bad Gateway", b"502 Bad Gateway\\n")}.
    """
    phrase = PHRASES[code]
    body = b"%d %s\n" % (code, phrase)
    if detail:
        line = "".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in detail)
        body += line.encode("utf-8", "replace") + b"\n"
    return phrase, body


def errorResponse(code: int, close: bool = True) -> bytes:
    """
    A complete HTTP/1.1 error response.

    @param code: A status code of L{PHRASES}.
    @param close: Whether to announce C{Connection: close}.
    @return: The response bytes.
    """
    phrase, body = errorBody(code)
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (code, phrase),
            b"Content-Type: text/plain; charset=utf-8\r\n",
            b"Content-Length: %d\r\n" % (len(body),),
            b"Connection: close\r\n" if close else b"",
            b"\r\n",
            body,
        ]
    )
