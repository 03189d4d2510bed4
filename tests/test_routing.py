# -*- test-case-name: tests.test_routing -*-
"""
Tests for L{lbtwist.routing}: path normalisation, host names, matching and
stripping prefixes.
"""

from __future__ import annotations

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lbtwist.config import RouteConfig
from lbtwist.routing import (
    InvalidPath,
    Route,
    Router,
    hostName,
    normalisePath,
    strippedTarget,
)

# Path pieces that exercise dot segments, slashes and percent-encoding.
_PIECES = st.sampled_from(
    [
        "/", "//", ".", "..", "%2e", "%2E", "%2e%2e", ".%2e", "%2F", "%2f",
        "a", "b", "admin", "%61", "%7E", "~", "%25", "%252e", "-", "_",
    ]
)
_PATHS = st.lists(_PIECES, max_size=12).map(lambda pieces: "/" + "".join(pieces))


class NormalisePathTests(SynchronousTestCase):
    """
    Tests for L{normalisePath}.
    """

    def test_dotSegments(self) -> None:
        """
        Dot segments are removed as RFC 3986 5.2.4 says, never above the
        root.
        """
        for path, expected in [
            ("/a/../admin", "/admin"),
            ("/a/./b", "/a/b"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/..", "/"),
            ("/../../x", "/x"),
            ("/a/...", "/a/..."),
            ("/.a/b", "/.a/b"),
        ]:
            self.assertEqual(normalisePath(path), expected, path)

    def test_percentEncodedDots(self) -> None:
        """
        C{%2e} and C{%2E} are dots, so they make dot segments.
        """
        for path in ("/a/%2e%2e/admin", "/a/%2E%2E/admin", "/a/.%2e/admin", "/a/%2e./admin"):
            self.assertEqual(normalisePath(path), "/admin", path)

    def test_unreservedDecodedOthersKept(self) -> None:
        """
        Unreserved characters are decoded; other triplets stay encoded,
        upper-cased: an encoded slash never becomes a separator.
        """
        self.assertEqual(normalisePath("/%61%7e/b%2fc"), "/a~/b%2Fc")
        self.assertEqual(normalisePath("/a%2F..%2Fadmin"), "/a%2F..%2Fadmin")
        self.assertEqual(normalisePath("/%252e%252e/x"), "/%252e%252e/x")

    def test_slashesMerged(self) -> None:
        """
        Runs of slashes are one slash.
        """
        self.assertEqual(normalisePath("//admin///x/"), "/admin/x/")

    def test_invalidPercent(self) -> None:
        """
        A C{%} not followed by two hexadecimal digits is refused.
        """
        for path in ("/a%", "/a%2", "/%zz", "/%%41"):
            self.assertRaises(InvalidPath, normalisePath, path)

    def test_asterisk(self) -> None:
        """
        C{*} (C{OPTIONS *}) is left as it is.
        """
        self.assertEqual(normalisePath("*"), "*")

    @settings(max_examples=500, deadline=None)
    @given(_PATHS)
    def test_idempotent(self, path: str) -> None:
        """
        Normalising a normalised path changes nothing, and the result is an
        absolute path without dot segments or empty segments (but a
        trailing slash).
        """
        once = normalisePath(path)
        self.assertEqual(normalisePath(once), once)
        self.assertTrue(once.startswith("/"))
        segments = once.split("/")[1:]
        self.assertNotIn(".", segments)
        self.assertNotIn("..", segments)
        self.assertNotIn("", segments[:-1])

    @settings(max_examples=500, deadline=None)
    @given(_PATHS)
    def test_prefixNotBypassed(self, path: str) -> None:
        """
        However a path is written, it matches a prefix route exactly when
        the path a backend resolves (decoding unreserved characters and
        removing dot segments, as servers do) starts with the prefix: a
        prefix route can be neither slipped into nor slipped past.
        """
        route = Route(RouteConfig(path_prefix="/a/", pool="p"), "p")
        router = Router([route])
        matched = router.match(b"GET", path.encode(), None, []) is route
        resolved = _resolve(path)
        self.assertEqual(matched, resolved.startswith("/a/"), (path, resolved))


def _resolve(path: str) -> str:
    """
    How a typical backend resolves a path, written independently of
    L{normalisePath}: decode the unreserved triplets, split on C{/},
    drop empty and C{.} segments, C{..} pops.
    """
    decoded = []
    index = 0
    while index < len(path):
        if path[index] == "%":
            character = chr(int(path[index + 1 : index + 3], 16))
            if character.isalnum() or character in "-._~":
                decoded.append(character)
            else:
                decoded.append("%" + path[index + 1 : index + 3].upper())
            index += 3
        else:
            decoded.append(path[index])
            index += 1
    stack: list[str] = []
    segments = "".join(decoded).split("/")
    for segment in segments:
        if segment == "..":
            if stack:
                stack.pop()
        elif segment not in ("", "."):
            stack.append(segment)
    trailing = segments[-1] in ("", ".", "..") and stack
    return "/" + "/".join(stack) + ("/" if trailing else "")


class HostNameTests(SynchronousTestCase):
    """
    Tests for L{hostName}.
    """

    def test_hostName(self) -> None:
        """
        Lower-cased, without the port or a trailing dot; IPv6 keeps its
        brackets.
        """
        self.assertEqual(hostName(b"API.Example.com:8080"), "api.example.com")
        self.assertEqual(hostName(b"example.com."), "example.com")
        self.assertEqual(hostName(b"[::1]:80"), "[::1]")
        self.assertEqual(hostName(b"10.0.0.1"), "10.0.0.1")
        self.assertIsNone(hostName(None))


class RouterTests(SynchronousTestCase):
    """
    Tests for L{Router} and L{Route}.
    """

    def match(self, router: Router[str], method: bytes = b"GET", target: bytes = b"/",
              host: bytes | None = b"h", headers: list[tuple[bytes, bytes]] | None = None) -> str | None:
        route = router.match(method, target, host, headers or [])
        return None if route is None else route.destination

    def test_firstMatchWins(self) -> None:
        """
        Routes are tried in order; the first that matches wins.
        """
        router = Router(
            [
                Route(RouteConfig(path_prefix="/api/", pool="p"), "first"),
                Route(RouteConfig(path_prefix="/", pool="p"), "second"),
            ]
        )
        self.assertEqual(self.match(router, target=b"/api/x"), "first")
        self.assertEqual(self.match(router, target=b"/other"), "second")

    def test_hosts(self) -> None:
        """
        Exact names match whatever the case and port; C{*.name} matches one
        more label only.
        """
        router = Router(
            [Route(RouteConfig(host=("api.example.com", "*.example.org"), pool="p"), "r")]
        )
        for host in (b"api.example.com", b"API.EXAMPLE.COM:81", b"x.example.org", b"x.example.org."):
            self.assertEqual(self.match(router, host=host), "r", host)
        for host in (b"example.org", b"a.b.example.org", b"api.example.com.evil", None):
            self.assertIsNone(self.match(router, host=host), host)

    def test_regexOnNormalisedPath(self) -> None:
        """
        C{path_regex} searches the normalised path, not the query.
        """
        router = Router([Route(RouteConfig(path_regex=r"^/v[0-9]+/", pool="p"), "r")])
        self.assertEqual(self.match(router, target=b"/x/../v2/a"), "r")
        self.assertEqual(self.match(router, target=b"/%76%32/a"), "r")
        self.assertIsNone(self.match(router, target=b"/a?/v2/"))

    def test_methodsAndHeaders(self) -> None:
        """
        C{methods} are exact; C{headers} need a line with exactly the value
        (names case-insensitive).
        """
        router = Router(
            [
                Route(
                    RouteConfig(methods=("POST",), headers=(("x-canary", "1"),), pool="p"),
                    "r",
                )
            ]
        )
        self.assertEqual(
            self.match(router, b"POST", headers=[(b"X-Other", b"1"), (b"X-CANARY", b"1")]), "r"
        )
        self.assertIsNone(self.match(router, b"post", headers=[(b"X-Canary", b"1")]))
        self.assertIsNone(self.match(router, b"POST", headers=[(b"X-Canary", b"1 ")]))
        self.assertIsNone(self.match(router, b"POST"))

    def test_invalidPath(self) -> None:
        """
        A path that cannot be normalised raises L{InvalidPath} when a route
        looks at paths, and is ignored when none does.
        """
        router = Router([Route(RouteConfig(path_prefix="/a", pool="p"), "r")])
        self.assertRaises(InvalidPath, router.match, b"GET", b"/a%zz", None, [])
        hostOnly = Router([Route(RouteConfig(host=("h",), pool="p"), "r")])
        self.assertEqual(self.match(hostOnly, target=b"/a%zz"), "r")


class StrippedTargetTests(SynchronousTestCase):
    """
    Tests for L{strippedTarget}.
    """

    def test_stripped(self) -> None:
        """
        The prefix is removed from the target as sent, which keeps its
        encoding and its query and starts with C{/}.
        """
        self.assertEqual(strippedTarget(b"/api/users?x=1", "/api/"), b"/users?x=1")
        self.assertEqual(strippedTarget(b"/api/users", "/api"), b"/users")
        self.assertEqual(strippedTarget(b"/api/", "/api/"), b"/")
        self.assertEqual(strippedTarget(b"/api/%7Eu/a%2Fb", "/api/"), b"/%7Eu/a%2Fb")
        self.assertEqual(strippedTarget(b"/api/./x", "/api/"), b"/./x")

    def test_inconsistent(self) -> None:
        """
        No target when the path as sent does not start with the prefix, or
        when its rest means something else than the normalised rest.
        """
        for target in (b"/x/../api/v", b"//api/v", b"/%61pi/v", b"/api/../api/v", b"/api/x/../../v"):
            self.assertIsNone(strippedTarget(target, "/api/"), target)

    @settings(max_examples=300, deadline=None)
    @given(_PATHS)
    def test_meansTheNormalisedRest(self, path: str) -> None:
        """
        When there is a stripped target, it normalises to the normalised
        path less the prefix.
        """
        normal = normalisePath(path)
        if not normal.startswith("/a/"):
            return
        stripped = strippedTarget(path.encode(), "/a/")
        if stripped is not None:
            self.assertEqual(normalisePath(stripped.decode()), normal[2:])
