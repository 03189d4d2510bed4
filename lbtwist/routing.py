# -*- test-case-name: tests.test_routing -*-
"""
Which route of an HTTP frontend a request takes (C{[[frontend.route]]}):
the first route, in file order, whose every condition holds.

  - C{host}: the request's host name (the C{Host} field, or the authority
    of an absolute-form target), lower-cased, without its port or a
    trailing dot (L{hostName}); C{"*.example.org"} matches exactly one more
    label (C{a.example.org}, not C{example.org} nor C{a.b.example.org}).
  - C{path_prefix} / C{path_regex}: the request's path, decoded and
    normalised (L{normalisePath}): C{/a/../admin}, C{/a/%2e%2e/admin} and
    C{//admin} are all C{/admin} to a route, so that a prefix route can be
    neither slipped into nor slipped past by how the path is written.
  - C{methods}: the method, exactly (methods are case-sensitive).
  - C{headers}: a field line with exactly this value.

What the backend receives is never the normalised path: it is the target
as the client sent it, or, for a C{strip_prefix} route, that target less
the prefix (L{strippedTarget}).

Pure: no reactor, no I/O.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Generic, Sequence, TypeVar

if TYPE_CHECKING:
    from lbtwist.config import RouteConfig

__all__ = [
    "InvalidPath",
    "Route",
    "Router",
    "hostName",
    "normalisePath",
    "strippedTarget",
]

_UNRESERVED = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)
_TRIPLET = re.compile(r"%([0-9A-Fa-f]{2})")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SLASHES = re.compile(r"//+")


class InvalidPath(ValueError):
    """
    A request path with a C{%} not followed by two hexadecimal digits: it
    cannot be normalised, so it is refused (400) rather than guessed at.
    """


def _decodeTriplet(match: re.Match[str]) -> str:
    """
    A percent-encoded octet: the character if it is unreserved (RFC 3986
    2.3), else the triplet with upper-case hexadecimal digits (6.2.2.1).
    """
    hexadecimal = match.group(1)
    character = chr(int(hexadecimal, 16))
    if character in _UNRESERVED:
        return character
    return "%" + hexadecimal.upper()


def _removeDotSegments(path: str) -> str:
    """
    RFC 3986 5.2.4 for an absolute path without empty segments (but maybe
    a trailing slash): C{.} segments go, C{..} removes the segment before
    it (never above the root).
    """
    segments = path.split("/")
    kept: list[str] = []
    for segment in segments[1:]:
        if segment == "..":
            if kept:
                kept.pop()
        elif segment != ".":
            kept.append(segment)
    result = "/" + "/".join(kept)
    if kept and segments[-1] in (".", ".."):
        result += "/"
    return result


def normalisePath(path: str) -> str:
    """
    The path a route matches (the target's path, without the query):

      1. percent-encoded unreserved characters are decoded (C{%2e} is
         C{.}, C{%41} is C{A}); every other triplet stays encoded, with
         upper-case digits, so that an encoded slash C{%2F} is never a
         separator;
      2. runs of slashes become one (C{//admin} is C{/admin}, as nginx's
         C{merge_slashes});
      3. dot segments are removed (RFC 3986 5.2.4): C{/a/../admin} is
         C{/admin}; C{..} never goes above the root.

    Normalising a normalised path changes nothing.  A path that does not
    start with C{/} (C{*}) is returned as it is.

    @param path: The path as sent (ASCII).
    @return: The normalised path.
    @raise InvalidPath: If a C{%} is not followed by two hexadecimal digits.
    """
    if path[:1] != "/":
        return path
    if "%" in path:
        if _BAD_PERCENT.search(path) is not None:
            raise InvalidPath(path)
        path = _TRIPLET.sub(_decodeTriplet, path)
    if "//" in path:
        path = _SLASHES.sub("/", path)
    if "/." in path:
        path = _removeDotSegments(path)
    return path


def hostName(host: bytes | None) -> str | None:
    """
    The host name of a C{Host} value, as routes compare it.

    @param host: A valid C{Host} value (see
        L{lbtwist._http.server.validHost}), or L{None}.
    @return: It lower-cased, without the port or a trailing dot (an IPv6
        literal keeps its brackets), or L{None}.
    """
    if host is None:
        return None
    text = host.decode("ascii", "replace").lower()
    if text[:1] == "[":
        return text[: text.find("]") + 1]
    return text.partition(":")[0].rstrip(".")


def strippedTarget(target: bytes, prefix: str) -> bytes | None:
    """
    The target a C{strip_prefix} route sends upstream: the target as sent,
    less the prefix, starting with C{/} and keeping the query.

    The prefix is removed from the path as sent, never from the normalised
    one: if the path as sent does not start with the prefix (it matched
    only once normalised, e.g. C{/x/../api/v}), or if what is left does not
    mean what the normalised path less the prefix means (C{/api/../api/v}
    would leave C{/../api/v}), there is no target to send.

    @param target: The origin-form target as sent (ASCII).
    @param prefix: The route's C{path_prefix}, which the normalised path
        starts with.
    @return: The target to send, or L{None}: the request must be refused.
    """
    raw = target.decode("ascii", "replace")
    path, question, query = raw.partition("?")
    if not path.startswith(prefix):
        return None
    rest = path[len(prefix) :]
    if rest[:1] != "/":
        rest = "/" + rest
    expected = normalisePath(path)[len(prefix) :]
    if expected[:1] != "/":
        expected = "/" + expected
    if normalisePath(rest) != expected:
        return None
    return (rest + question + query).encode("ascii")


_T = TypeVar("_T")


class Route(Generic[_T]):
    """
    One route, ready to match requests.

    @ivar config: The route's configuration.
    @ivar destination: What the route leads to (for its owner).
    """

    __slots__ = (
        "config",
        "destination",
        "_hosts",
        "_parents",
        "_prefix",
        "_regex",
        "_methods",
        "_headers",
    )

    def __init__(self, config: RouteConfig, destination: _T) -> None:
        """
        @param config: The route's configuration.
        @param destination: What the route leads to.
        """
        self.config = config
        self.destination = destination
        hosts = [name for name in config.host if not name.startswith("*.")]
        parents = [name[2:] for name in config.host if name.startswith("*.")]
        self._hosts = frozenset(hosts) if config.host else None
        self._parents = frozenset(parents)
        self._prefix = config.path_prefix
        self._regex = (
            None if config.path_regex is None else re.compile(config.path_regex).search
        )
        self._methods = (
            frozenset(method.encode("ascii") for method in config.methods)
            if config.methods
            else None
        )
        self._headers = tuple(
            (name.encode("ascii"), value.encode("utf-8"))
            for name, value in config.headers
        )

    @property
    def usesPath(self) -> bool:
        """
        Whether the route looks at the path.
        """
        return self._prefix is not None or self._regex is not None

    def matches(
        self,
        method: bytes,
        host: str | None,
        parent: str | None,
        path: str,
        headers: Sequence[tuple[bytes, bytes]],
    ) -> bool:
        """
        @param method: The request's method.
        @param host: Its host name (L{hostName}).
        @param parent: The host name less its first label, or L{None}.
        @param path: Its normalised path (L{normalisePath}).
        @param headers: Its field lines.
        @return: Whether every condition of the route holds.
        """
        methods = self._methods
        if methods is not None and method not in methods:
            return False
        hosts = self._hosts
        if hosts is not None and host not in hosts and parent not in self._parents:
            return False
        prefix = self._prefix
        if prefix is not None and not path.startswith(prefix):
            return False
        regex = self._regex
        if regex is not None and regex(path) is None:
            return False
        for wanted, value in self._headers:
            for name, sent in headers:
                if sent == value and name.lower() == wanted:
                    break
            else:
                return False
        return True


class Router(Generic[_T]):
    """
    The routes of one frontend: the first that matches a request wins.
    """

    __slots__ = ("routes", "_usesPath", "_usesHost")

    def __init__(self, routes: Sequence[Route[_T]]) -> None:
        """
        @param routes: The routes, in file order.
        """
        self.routes = tuple(routes)
        self._usesPath = any(route.usesPath for route in routes)
        self._usesHost = any(route.config.host for route in routes)

    def match(
        self,
        method: bytes,
        target: bytes,
        host: bytes | None,
        headers: Sequence[tuple[bytes, bytes]],
    ) -> Route[_T] | None:
        """
        The route a request takes.

        @param method: The request's method.
        @param target: Its origin-form target as sent (or C{*}).
        @param host: Its C{Host} value, or L{None}.
        @param headers: Its field lines.
        @return: The first route that matches, or L{None}.
        @raise InvalidPath: If the path cannot be normalised (the request
            must be refused).
        """
        routes = self.routes
        if not routes:
            return None
        path = ""
        if self._usesPath:
            raw = target.decode("ascii", "replace")
            question = raw.find("?")
            path = normalisePath(raw if question < 0 else raw[:question])
        name = parent = None
        if self._usesHost:
            name = hostName(host)
            if name is not None:
                dot = name.find(".")
                if dot > 0:
                    parent = name[dot + 1 :]
        for route in routes:
            if route.matches(method, name, parent, path, headers):
                return route
        return None
