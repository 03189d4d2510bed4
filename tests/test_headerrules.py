# -*- test-case-name: tests.test_headerrules -*-
"""
Tests for L{lbtwist.headerrules}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from lbtwist._http.headers import ForwardingPolicy, requestHead
from lbtwist.config import HeaderRules
from lbtwist.headerrules import compileRules, requestID

VALUES = {"client_ip": "192.0.2.7", "request_id": "r1", "scheme": "https", "host": "a.example"}


class CompileRulesTests(SynchronousTestCase):
    """
    Tests for L{compileRules}.
    """

    def test_nothing(self) -> None:
        """
        No rules: nothing to do.
        """
        self.assertIsNone(compileRules([HeaderRules(), HeaderRules()]))

    def test_setAddRemove(self) -> None:
        """
        C{set} replaces every line of a field, C{add} appends one,
        C{remove} removes every line; placeholders are filled in.
        """
        rules = compileRules(
            [
                HeaderRules(
                    set=(("X-Env", "prod"),),
                    add=(("X-Trace", "{request_id}@{client_ip}"),),
                    remove=("X-Debug",),
                )
            ]
        )
        assert rules is not None
        headers = [(b"X-Env", b"dev"), (b"x-env", b"qa"), (b"X-Debug", b"1"), (b"X-Trace", b"t")]
        self.assertEqual(
            rules.apply(headers, VALUES),
            [(b"X-Trace", b"t"), (b"X-Env", b"prod"), (b"X-Trace", b"r1@192.0.2.7")],
        )

    def test_routeAfterFrontend(self) -> None:
        """
        Later rules act on what earlier ones added: a route's C{remove}
        removes the frontend's C{add}; a route's C{add} keeps the
        frontend's C{set}.
        """
        rules = compileRules(
            [
                HeaderRules(set=(("X-A", "1"),), add=(("X-B", "1"),)),
                HeaderRules(add=(("X-A", "2"),), remove=("x-b",)),
            ]
        )
        assert rules is not None
        self.assertEqual(
            rules.apply([(b"X-B", b"client")], VALUES), [(b"X-A", b"1"), (b"X-A", b"2")]
        )

    def test_hopByHopIgnored(self) -> None:
        """
        Rules naming hop-by-hop or framing fields (which the configuration
        refuses) do nothing.
        """
        rules = compileRules(
            [
                HeaderRules(
                    set=(("Connection", "close"), ("Content-Length", "0")),
                    add=(("Transfer-Encoding", "chunked"),),
                    remove=("TE",),
                )
            ]
        )
        self.assertIsNone(rules)

    def test_noLineBreaks(self) -> None:
        """
        A value never contains CR, LF or NUL, whatever a placeholder gives.
        """
        rules = compileRules([HeaderRules(set=(("X-Host", "{host}"),))])
        assert rules is not None
        self.assertEqual(
            rules.render(dict(VALUES, host="a\r\nX-Evil: 1\0")), [(b"X-Host", b"aX-Evil: 1")]
        )

    def test_unknownPlaceholder(self) -> None:
        """
        An unknown placeholder is refused when the rules are compiled.
        """
        self.assertRaises(ValueError, compileRules, [HeaderRules(set=(("X", "{nope}"),))])

    def test_requestHead(self) -> None:
        """
        In the request head, rules apply after lbtwist's own policy: they
        can replace or remove its forwarding fields, and never the framing.
        """
        rules = compileRules(
            [HeaderRules(set=(("X-Forwarded-Proto", "{scheme}"),), remove=("Via", "X-Forwarded-Host"))]
        )
        assert rules is not None
        head = b"".join(
            requestHead(
                b"POST",
                b"/p",
                [(b"Host", b"a.example"), (b"X-Forwarded-Proto", b"spoofed")],
                frozenset(),
                "192.0.2.7",
                False,
                ForwardingPolicy(),
                3,
                True,
                rules=(rules.drop, rules.render(VALUES)),
            )
        )
        self.assertEqual(
            head,
            b"POST /p HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-For: 192.0.2.7\r\n"
            b"X-Forwarded-Proto: https\r\nContent-Length: 3\r\n\r\n",
        )


class RequestIDTests(SynchronousTestCase):
    """
    Tests for L{requestID}.
    """

    def test_keptWhenValid(self) -> None:
        """
        One valid C{X-Request-ID} is kept as it is.
        """
        headers = [(b"x-request-id", b"abc-123/xyz")]
        self.assertEqual(requestID(headers), b"abc-123/xyz")
        self.assertEqual(headers, [(b"x-request-id", b"abc-123/xyz")])

    def test_generated(self) -> None:
        """
        None sent, an invalid one (empty, a space, too long, not ASCII) or
        more than one: a new 128-bit ID replaces them.
        """
        for sent in ([], [b""], [b"a b"], [b"x" * 201], [b"caf\xc3\xa9"], [b"a", b"b"]):
            headers = [(b"Host", b"h")] + [(b"X-Request-ID", value) for value in sent]
            new = requestID(headers)
            self.assertRegex(new.decode(), r"\A[0-9a-f]{32}\Z")
            self.assertEqual(headers, [(b"Host", b"h"), (b"X-Request-ID", new)])
        self.assertNotEqual(requestID([]), requestID([]))

    def test_longestValid(self) -> None:
        """
        200 characters is valid.
        """
        self.assertEqual(requestID([(b"X-Request-ID", b"x" * 200)]), b"x" * 200)
