# -*- test-case-name: tests.test_headerrules -*-
"""
Header rules (C{request_headers} / C{response_headers} of a frontend and
of its routes) and request IDs (C{request_id = true}).

Rules apply in order: the frontend's, then the route's; within one table,
C{remove}, then C{set}, then C{add}.  C{remove} removes every line of a
field, C{set} replaces every line of a field by one, C{add} appends a line.
The lines they act on are everything lbtwist would send otherwise: the
client's or the backend's fields, and lbtwist's own forwarding fields
(C{X-Forwarded-*}, C{Via}, C{Forwarded}).  L{compileRules} folds a
sequence of rules into one L{HeaderRules}: the names whose lines are
removed and the lines added at the end.

Hop-by-hop and framing fields are lbtwist's alone: a rule naming one is
ignored here (the configuration refuses it already), and a value never
contains CR, LF or NUL (they are removed from what a placeholder gives).

Pure: no reactor.
"""

from __future__ import annotations

import os
import re
import string
from typing import Mapping, Sequence

from lbtwist.config import FORBIDDEN_RULE_HEADERS, HEADER_PLACEHOLDERS, HeaderRules

__all__ = [
    "REQUEST_ID",
    "CompiledRules",
    "compileRules",
    "requestID",
]

REQUEST_ID = b"X-Request-ID"

_NEVER = frozenset(name.encode("ascii") for name in FORBIDDEN_RULE_HEADERS) | {
    b"proxy-authorization",
    b"proxy",
    b"expect",
}
_VALID_ID = re.compile(rb"[\x21-\x7e]{1,200}\Z")
_UNSAFE = re.compile(r"[\r\n\0]")


class _Template:
    """
    A header value, with placeholders filled in per request.
    """

    __slots__ = ("_text", "_constant")

    def __init__(self, text: str) -> None:
        for _, field, spec, conversion in string.Formatter().parse(text):
            if field is not None and (
                field not in HEADER_PLACEHOLDERS or spec or conversion
            ):
                raise ValueError(f"{text!r}: unknown placeholder {field!r}")
        self._text = text
        self._constant: bytes | None = None
        if "{" not in text and "}" not in text:
            self._constant = _UNSAFE.sub("", text).encode("utf-8")

    def render(self, values: Mapping[str, str]) -> bytes:
        """
        @param values: The value of each placeholder.
        @return: The value, without CR, LF or NUL.
        """
        constant = self._constant
        if constant is not None:
            return constant
        return _UNSAFE.sub("", self._text.format_map(values)).encode("utf-8")


class CompiledRules:
    """
    A sequence of header rules folded into one step: remove every line
    whose name is in L{drop}, then append L{lines}.

    @ivar drop: Lower-case names whose lines are removed.
    @ivar usesValues: Whether any line has a placeholder.
    """

    __slots__ = ("drop", "usesValues", "_lines")

    def __init__(
        self, drop: frozenset[bytes], lines: Sequence[tuple[bytes, _Template]]
    ) -> None:
        self.drop = drop
        self._lines = tuple(lines)
        self.usesValues = any(template._constant is None for _, template in lines)

    def render(self, values: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
        """
        @param values: The value of each placeholder (C{client_ip},
            C{request_id}, C{scheme}, C{host}).
        @return: The lines to append.
        """
        return [(name, template.render(values)) for name, template in self._lines]

    def apply(
        self, headers: Sequence[tuple[bytes, bytes]], values: Mapping[str, str]
    ) -> list[tuple[bytes, bytes]]:
        """
        @param headers: Field lines.
        @param values: The value of each placeholder.
        @return: The lines after the rules.
        """
        drop = self.drop
        kept = (
            [field for field in headers if field[0].lower() not in drop]
            if drop
            else list(headers)
        )
        kept += self.render(values)
        return kept


def compileRules(rules: Sequence[HeaderRules]) -> CompiledRules | None:
    """
    Fold rules, applied in order, into one step.

    @param rules: The rules: the frontend's, then the route's.
    @return: The step, or L{None} if there is nothing to do.
    @raise ValueError: On an unknown placeholder.
    """
    drop: set[bytes] = set()
    lines: list[tuple[bytes, _Template]] = []

    def removing(name: str) -> bytes | None:
        lowered = name.lower().encode("ascii")
        if lowered in _NEVER:
            return None
        drop.add(lowered)
        lines[:] = [line for line in lines if line[0].lower() != lowered]
        return lowered

    for each in rules:
        for name in each.remove:
            removing(name)
        for name, value in each.set:
            if removing(name) is not None:
                lines.append((name.encode("ascii"), _Template(value)))
        for name, value in each.add:
            if name.lower().encode("ascii") not in _NEVER:
                lines.append((name.encode("ascii"), _Template(value)))
    if not drop and not lines:
        return None
    return CompiledRules(frozenset(drop), lines)


def requestID(headers: list[tuple[bytes, bytes]]) -> bytes:
    """
    The request's ID: the client's C{X-Request-ID} if it sent exactly one
    and it is valid (1 to 200 visible ASCII characters, no spaces), else a
    new random one (128 bits, 32 hexadecimal digits), which replaces what
    the client sent in C{headers}.

    @param headers: The request's field lines (changed in place).
    @return: The ID.
    """
    sent = [value for name, value in headers if name.lower() == b"x-request-id"]
    if len(sent) == 1 and _VALID_ID.match(sent[0]) is not None:
        return sent[0]
    if sent:
        headers[:] = [field for field in headers if field[0].lower() != b"x-request-id"]
    new = os.urandom(16).hex().encode("ascii")
    headers.append((REQUEST_ID, new))
    return new
