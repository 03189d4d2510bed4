# -*- test-case-name: tests.test_e2e_fuzz -*-
"""
End-to-end differential fuzz of request framing (proxy-rules.md, "Requests
from clients" and "What goes upstream"): mutated requests (duplicated,
re-cased and conflicting C{Content-Length}, C{Transfer-Encoding} and C{Host}
lines, stray CR/LF/NUL/SP/HTAB, wrong chunk sizes, odd versions, pipelined
pairs) go through one real C{twistd -n lbtwist} to a recording raw backend
that parses everything it receives strictly.

The invariant: every byte the backend receives parses strictly as a
sequence of whole requests (nothing left over, nothing smuggled from a body,
each client request at most once), and the client gets backend responses or
lbtwist errors (400/413/414/431/501/505), never a hang.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field

from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.harness import Lbtwist, Response, parseResponse, simpleConfig

# Examples and wall-clock budget of the fuzz run (environment overrides).
MAX_EXAMPLES = int(os.environ.get("LBTWIST_FUZZ_EXAMPLES", "2000"))
BUDGET_SECONDS = float(os.environ.get("LBTWIST_FUZZ_SECONDS", "35"))
# Seconds one exchange may take before it counts as a hang.
EXCHANGE_TIMEOUT = 3.0

LBTWIST_ERRORS = {400, 413, 414, 431, 501, 505}
BACKEND_MARK = b"x-fuzz-backend"


# --------------------------------------------------------------------------
# A strict HTTP/1.1 request parser


class NeedMore(Exception):
    """
    The bytes are a valid prefix of a request but not a whole one.
    """


class Invalid(Exception):
    """
    The bytes are not a strictly valid request.
    """


_TCHAR = frozenset(
    b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
_VALUE_BYTES = frozenset(range(0x21, 0x7F)) | frozenset(range(0x80, 0x100)) | {
    0x20,
    0x09,
}
_HOST = re.compile(rb"\A(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)(:[0-9]{1,5})?\Z")
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_CHUNK_LINE = re.compile(
    rb"\A([0-9A-Fa-f]{1,16})((?:;" + _TOKEN + rb"(?:=(?:" + _TOKEN + rb"|" + _QUOTED
    + rb"))?)*)\Z"
)


@dataclass
class StrictRequest:
    """
    One request that parsed strictly.
    """

    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes


def _headerLines(lines: list[bytes], where: str) -> list[tuple[bytes, bytes]]:
    headers = []
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not name or not set(name) <= _TCHAR:
            raise Invalid(f"bad {where} line {line!r}")
        value = value.strip(b" \t")
        if not set(value) <= _VALUE_BYTES:
            raise Invalid(f"bad {where} value {line!r}")
        headers.append((name.lower(), value))
    return headers


def _line(data: bytes, position: int) -> tuple[bytes, int]:
    end = data.find(b"\r\n", position)
    if end < 0:
        if len(data) - position > 4096:
            raise Invalid("line too long")
        rest = data[position:]
        if b"\n" in rest or b"\r" in rest[:-1]:
            raise Invalid(f"bare CR or LF in {rest!r}")
        raise NeedMore()
    line = data[position:end]
    if b"\r" in line or b"\n" in line:
        raise Invalid(f"bare CR or LF in {line!r}")
    return line, end + 2


def parseStrict(data: bytes) -> tuple[StrictRequest, int]:
    """
    Parse one request at the start of C{data} by strict RFC 9112 rules:
    C{method SP origin-form SP HTTP/1.x}, token names, clean values, exactly
    one valid C{Host}, at most one of C{Content-Length} (digits, one line)
    and C{Transfer-Encoding} (exactly C{chunked}, HTTP/1.1 only), valid
    chunked framing.

    @return: the request and how many bytes it used.
    @raise NeedMore: if C{data} is a valid but incomplete prefix.
    @raise Invalid: if it is not valid.
    """
    position = 0
    lines = []
    while True:
        line, position = _line(data, position)
        if not line:
            break
        lines.append(line)
        if len(lines) > 200:
            raise Invalid("too many header lines")
    if not lines:
        raise Invalid("empty line before the request line")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise Invalid(f"bad request line {lines[0]!r}")
    method, target, version = parts
    if not method or not set(method) <= _TCHAR:
        raise Invalid(f"bad method {method!r}")
    if not target.startswith(b"/") or not all(0x21 <= c < 0x7F for c in target):
        raise Invalid(f"bad target {target!r}")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise Invalid(f"bad version {version!r}")
    headers = _headerLines(lines[1:], "header")
    values: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        values.setdefault(name, []).append(value)
    hosts = values.get(b"host", [])
    if len(hosts) != 1 or not _HOST.match(hosts[0]):
        raise Invalid(f"Host lines {hosts!r}")
    lengths = values.get(b"content-length", [])
    codings = values.get(b"transfer-encoding", [])
    if lengths and codings:
        raise Invalid("both Content-Length and Transfer-Encoding")
    if len(lengths) > 1 or len(codings) > 1:
        raise Invalid(f"repeated framing {lengths!r} {codings!r}")
    if lengths:
        if not re.fullmatch(rb"[0-9]{1,15}", lengths[0]):
            raise Invalid(f"bad Content-Length {lengths[0]!r}")
        end = position + int(lengths[0])
        if len(data) < end:
            raise NeedMore()
        return StrictRequest(method, target, version, headers, data[position:end]), end
    if not codings:
        return StrictRequest(method, target, version, headers, b""), position
    if codings[0].lower() != b"chunked" or version != b"HTTP/1.1":
        raise Invalid(f"bad Transfer-Encoding {codings[0]!r} in {version!r}")
    body = bytearray()
    while True:
        line, position = _line(data, position)
        found = _CHUNK_LINE.match(line)
        if not found:
            raise Invalid(f"bad chunk line {line!r}")
        size = int(found.group(1), 16)
        if size == 0:
            trailers = []
            while True:
                line, position = _line(data, position)
                if not line:
                    break
                trailers.append(line)
            for name, _ in _headerLines(trailers, "trailer"):
                if name in (b"content-length", b"transfer-encoding", b"host"):
                    raise Invalid(f"framing field {name!r} in trailers")
            return StrictRequest(method, target, version, headers, bytes(body)), position
        if len(data) < position + size + 2:
            if len(data) > position + size and data[position + size] != 0x0D:
                raise Invalid("chunk data not followed by CRLF")
            raise NeedMore()
        if data[position + size : position + size + 2] != b"\r\n":
            raise Invalid("chunk data not followed by CRLF")
        body += data[position : position + size]
        position += size + 2


# --------------------------------------------------------------------------
# The recording backend


class RecordingBackend:
    """
    A raw backend that parses every connection's bytes with L{parseStrict}
    as they arrive, answers each whole request with a marked 200, and
    records what it saw.

    @ivar violations: C{(connection, reason, bytes)} for every byte stream
        that did not parse strictly (the connection is then closed).
    @ivar targets: every request target received, in order.
    """

    def __init__(self) -> None:
        self.violations: list[tuple[int, str, bytes]] = []
        self.targets: list[bytes] = []
        self.truncated = 0
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(512)
        self.port = self._listener.getsockname()[1]
        self._count = 0
        self._open: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            socks = list(self._open)
        for sock in socks:
            try:
                sock.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._count += 1
                number = self._count
                self._open.add(sock)
            sock.settimeout(30)
            threading.Thread(target=self._serve, args=(sock, number), daemon=True).start()

    def _violation(self, number: int, reason: str, data: bytes) -> None:
        with self._lock:
            self.violations.append((number, reason, data[:2000]))

    def _serve(self, sock: socket.socket, number: int) -> None:
        buffer = b""
        try:
            while True:
                try:
                    chunk = sock.recv(65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    if buffer:
                        # A valid prefix cut off by lbtwist (a client aborted
                        # mid-body) is allowed; anything else is not.
                        try:
                            parseStrict(buffer)
                        except NeedMore:
                            with self._lock:
                                self.truncated += 1
                        except Invalid as e:
                            self._violation(number, str(e), buffer)
                        else:
                            self._violation(number, "unparsed request at EOF", buffer)
                    return
                buffer += chunk
                while buffer:
                    try:
                        parsed, used = parseStrict(buffer)
                    except NeedMore:
                        break
                    except Invalid as e:
                        self._violation(number, str(e), buffer)
                        return
                    buffer = buffer[used:]
                    with self._lock:
                        self.targets.append(parsed.target)
                    if b"smuggled" in parsed.target or not parsed.target.startswith(
                        b"/fz/"
                    ):
                        self._violation(number, "unexpected target", parsed.target)
                    close = any(
                        name == b"connection"
                        and b"close" in [t.strip().lower() for t in value.split(b",")]
                        for name, value in parsed.headers
                    )
                    sock.sendall(
                        b"HTTP/1.1 200 OK\r\nX-Fuzz-Backend: 1\r\nContent-Length: 2\r\n"
                        + (b"Connection: close\r\n" if close else b"")
                        + b"\r\n"
                        + (b"" if parsed.method == b"HEAD" else b"ok")
                    )
                    if close:
                        return
        finally:
            with self._lock:
                self._open.discard(sock)
            sock.close()


# --------------------------------------------------------------------------
# Generating mutated requests

_BODIES = [
    b"",
    b"hello",
    b"0\r\n\r\n",
    b"GET /smuggled HTTP/1.1\r\nHost: lb.example\r\n\r\n",
    b"5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: lb.example\r\n\r\n",
    b"x" * 300,
]
_CL_VALUES = [b"0", b"5", b"+5", b"05", b"5 ", b"0x5", b"-1", b"", b"5, 5", b"5,6",
              b"99999999999999999999", b"LEN", b"LEN+1", b"LEN-1", b"1 2"]
_TE_VALUES = [b"chunked", b"Chunked", b"chunked, chunked", b"identity", b"gzip, chunked",
              b"chunked, gzip", b"xchunked", b" chunked", b"chunked\x00", b"chunked;q=1",
              b"\x0bchunked", b"gzip"]
_HOST_VALUES = [b"lb.example", b"other.example", b"", b"a b", b"lb.example:80",
                b"lb.example:x", b"a/b", b"user@lb.example", b"lb.example\x00"]
_VERSIONS = [b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"http/1.1", b"HTTP/1.10",
             b"HTTP/1", b"HTTP/1.1 ", b"HTTP/0.9", b"HTTP/1.1\x00"]
_FRAMING_NAMES = [b"Content-Length", b"Transfer-Encoding", b"Host"]
_INSERTS = [b"\r", b"\n", b"\x00", b" ", b"\t", b"\r\n", b"\r\n\r\n", b"\x0b"]


@dataclass
class RequestSpec:
    """
    One base request and the structured mutations to apply to it.
    """

    method: bytes
    framing: str
    body: bytes
    splits: list[int]
    mutations: list[tuple]  # type: ignore[type-arg]


@dataclass
class Case:
    """
    One fuzz example: one or two requests, then byte-level mutations.
    """

    requests: list[RequestSpec]
    byteMutations: list[tuple[float, bytes, str]] = field(default_factory=list)


_mutation = st.one_of(
    st.tuples(st.just("add"), st.just(b"Content-Length"), st.sampled_from(_CL_VALUES)),
    st.tuples(st.just("add"), st.just(b"Transfer-Encoding"), st.sampled_from(_TE_VALUES)),
    st.tuples(st.just("add"), st.just(b"Host"), st.sampled_from(_HOST_VALUES)),
    st.tuples(st.just("dup"), st.sampled_from(_FRAMING_NAMES)),
    st.tuples(st.just("remove"), st.sampled_from(_FRAMING_NAMES)),
    st.tuples(st.just("case"), st.sampled_from(_FRAMING_NAMES)),
    st.tuples(
        st.just("space"), st.sampled_from(_FRAMING_NAMES), st.sampled_from([b" ", b"\t"])
    ),
    st.tuples(
        st.just("valuespace"),
        st.sampled_from(_FRAMING_NAMES),
        st.sampled_from([b"", b" ", b"\t", b"  "]),
        st.sampled_from([b"", b" ", b"\t", b"\x00", b"\r", b"\x0c"]),
    ),
    st.tuples(st.just("version"), st.sampled_from(_VERSIONS)),
    st.tuples(
        st.just("chunksize"),
        st.sampled_from(["plus1", "minus1", "plus10", "zero", "lead0", "upper",
                         "0x", "ext", "quotedext", "badext", "space", "neg", "huge"]),
    ),
    st.tuples(
        st.just("last"),
        st.sampled_from(["drop", "00", "ext", "trailer", "trailercl", "noend", "lf"]),
    ),
    st.tuples(st.just("method"), st.sampled_from([b"get", b"G\x00T", b"POST", b"HEAD"])),
)


@st.composite
def _requestSpec(draw: st.DrawFn) -> RequestSpec:
    framing = draw(st.sampled_from(["none", "cl", "chunked"]))
    method = b"GET" if framing == "none" else draw(st.sampled_from([b"POST", b"PUT"]))
    body = b"" if framing == "none" else draw(st.sampled_from(_BODIES))
    splits = sorted(
        draw(st.lists(st.integers(0, max(0, len(body))), max_size=2, unique=True))
    )
    mutations = draw(st.lists(_mutation, max_size=3))
    return RequestSpec(method, framing, body, splits, mutations)


_cases = st.builds(
    Case,
    st.lists(_requestSpec(), min_size=1, max_size=2),
    st.lists(
        st.tuples(
            st.floats(0, 1, allow_nan=False),
            st.sampled_from(_INSERTS),
            st.sampled_from(["insert", "replace"]),
        ),
        max_size=2,
    ),
)


def _chunks(body: bytes, splits: list[int]) -> list[bytes]:
    edges = [0] + [s for s in splits if 0 < s < len(body)] + [len(body)]
    return [body[a:b] for a, b in zip(edges, edges[1:]) if b > a]


def serialize(spec: RequestSpec, target: bytes, last: bool = False) -> bytes:
    """
    The bytes of one request with its mutations applied; the C{last} one of
    an example says C{Connection: close}.
    """
    method, version = spec.method, b"HTTP/1.1"
    headers: list[list[bytes]] = [[b"Host", b": ", b"lb.example", b""]]
    headers.append([b"X-Fuzz", b": ", b"1", b""])
    if last:
        headers.append([b"Connection", b": ", b"close", b""])
    if spec.framing == "cl":
        headers.append([b"Content-Length", b": ", b"LEN", b""])
    elif spec.framing == "chunked":
        headers.append([b"Transfer-Encoding", b": ", b"chunked", b""])
    pieces = _chunks(spec.body, spec.splits)
    sizeLines = [b"%x" % (len(p),) for p in pieces]
    last = [b"0\r\n", b"\r\n"]
    for mutation in spec.mutations:
        kind = mutation[0]
        if kind == "add":
            headers.append([mutation[1], b": ", mutation[2], b""])
        elif kind in ("dup", "remove", "case", "space", "valuespace"):
            matching = [h for h in headers if h[0].lower() == mutation[1].lower()]
            if not matching:
                continue
            if kind == "dup":
                headers.append(list(matching[0]))
            elif kind == "remove":
                headers.remove(matching[0])
            elif kind == "case":
                matching[0][0] = matching[0][0].swapcase()
            elif kind == "space":
                matching[0][1] = mutation[2] + b": "
            else:
                matching[0][1] = b":" + mutation[2]
                matching[0][3] = mutation[3]
        elif kind == "version":
            version = mutation[1]
        elif kind == "method":
            method = mutation[1]
        elif kind == "chunksize" and sizeLines:
            size = len(pieces[0])
            variant = mutation[1]
            sizeLines[0] = {
                "plus1": b"%x" % (size + 1,),
                "minus1": b"%x" % (max(0, size - 1),),
                "plus10": b"%x" % (size + 10,),
                "zero": b"0",
                "lead0": b"000%x" % (size,),
                "upper": b"%X" % (size,),
                "0x": b"0x%x" % (size,),
                "ext": b"%x;a=b" % (size,),
                "quotedext": b'%x;a="q\\\\"' % (size,),
                "badext": b"%x;a=\x01" % (size,),
                "space": b"%x " % (size,),
                "neg": b"-%x" % (size,),
                "huge": b"f" * 17,
            }[variant]
        elif kind == "last":
            last = {
                "drop": [],
                "00": [b"00\r\n", b"\r\n"],
                "ext": [b"0;x=1\r\n", b"\r\n"],
                "trailer": [b"0\r\n", b"X-Trailer: 1\r\n", b"\r\n"],
                "trailercl": [b"0\r\n", b"Content-Length: 5\r\n", b"\r\n"],
                "noend": [b"0\r\n"],
                "lf": [b"0\n", b"\n"],
            }[mutation[1]]
    if spec.framing == "chunked":
        body = b"".join(
            line + b"\r\n" + piece + b"\r\n" for line, piece in zip(sizeLines, pieces)
        ) + b"".join(last)
    else:
        body = spec.body
    out = [method + b" " + target + b" " + version + b"\r\n"]
    for name, separator, value, suffix in headers:
        value = (
            value.replace(b"LEN+1", b"%d" % (len(body) + 1,))
            .replace(b"LEN-1", b"%d" % (max(0, len(body) - 1),))
            .replace(b"LEN", b"%d" % (len(body),))
        )
        out.append(name + separator + value + suffix + b"\r\n")
    out.append(b"\r\n")
    return b"".join(out) + body


def build(case: Case, example: int) -> bytes:
    """
    The bytes of a whole example: its requests with targets
    C{/fz/<example>/<index>}, then the byte-level mutations.
    """
    data = b"".join(
        serialize(
            spec,
            b"/fz/%d/%d" % (example, index),
            last=index == len(case.requests) - 1,
        )
        for index, spec in enumerate(case.requests)
    )
    for fraction, inserted, how in case.byteMutations:
        position = min(len(data) - 1, int(fraction * len(data)))
        if how == "insert":
            data = data[:position] + inserted + data[position:]
        else:
            data = data[:position] + inserted + data[position + 1 :]
    return data


# --------------------------------------------------------------------------
# The fuzz test


def wholeRequests(data: bytes) -> int:
    """
    @return: how many strictly valid requests C{data} is made of, or 0 if it
        is not entirely made of them.
    """
    count = 0
    while data:
        try:
            _, used = parseStrict(data)
        except (NeedMore, Invalid):
            return 0
        data = data[used:]
        count += 1
    return count


def clientTargets(data: bytes) -> list[bytes]:
    """
    @return: the targets of the strictly valid requests C{data} begins
        with: requests the client itself sent (a body that lost its framing
        by a mutation is one of them, not a smuggled request).
    """
    targets = []
    while data:
        try:
            parsed, used = parseStrict(data)
        except (NeedMore, Invalid):
            break
        targets.append(parsed.target)
        data = data[used:]
    return targets


def _exchange(port: int, data: bytes, patience: float) -> tuple[bytes, str]:
    """
    Send C{data} and read until EOF or reset; if neither came after
    C{patience} seconds (lbtwist may rightly be waiting for the rest of a
    body), half-close and wait until L{EXCHANGE_TIMEOUT} in total.
    """
    start = time.monotonic()
    deadline = start + EXCHANGE_TIMEOUT
    halfClosed = False
    received = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=EXCHANGE_TIMEOUT) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass
        while True:
            now = time.monotonic()
            if not halfClosed and now - start >= patience:
                halfClosed = True
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            remaining = deadline - now
            if not halfClosed:
                remaining = min(remaining, start + patience - now)
            if remaining <= 0:
                return bytes(received), "timeout"
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                if halfClosed:
                    return bytes(received), "timeout"
                continue
            except OSError:
                return bytes(received), "reset"
            if not chunk:
                return bytes(received), "eof"
            received += chunk


class DifferentialFuzzTests(SynchronousTestCase):
    """
    Mutated requests through lbtwist never reach the backend as anything but
    strictly valid, whole, unsmuggled requests.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.backend = RecordingBackend()
        cls.addClassCleanup(cls.backend.close)
        cls.lb = Lbtwist(
            cls,
            simpleConfig(
                [cls.backend.port],
                frontend={"header_timeout": 2.0, "idle_timeout": 2.0},
                pool={"retries": 0, "max_body_size": 100000},
                health={"check": "none", "passive_fall": 1000000},
            ),
        )

    def parseAll(self, received: bytes, methods: list[bytes]) -> list[Response]:
        """
        Parse every response in C{received}; an lbtwist error page sent with
        a body after a HEAD it refused is tolerated (the connection closes
        after it anyway).
        """
        responses = []
        rest = received
        while rest:
            method = methods[len(responses)] if len(responses) < len(methods) else b"GET"
            candidates = []
            for m in dict.fromkeys([method, b"GET"]):
                try:
                    response, after = parseResponse(rest, m)
                except ValueError:
                    continue
                if m != method and response.status not in LBTWIST_ERRORS:
                    continue
                candidates.append((response, after))
            good = [c for c in candidates if not c[1] or c[1].startswith(b"HTTP/")]
            if not good:
                self.fail(f"unparseable response bytes {received!r}")
            response, rest = good[0]
            responses.append(response)
        return responses

    def check(self, case: Case, example: int) -> None:
        """
        Run one example and assert the invariant.
        """
        data = build(case, example)
        note(f"sent: {data!r}")
        before = len(self.backend.violations)
        whole = wholeRequests(data)
        # Whole valid requests, the last with Connection: close, must be
        # answered and the connection closed without any help; otherwise
        # half-close after 50 ms so that a proxy waiting for more body
        # bytes sees the end.
        received, ending = _exchange(
            self.lb.port, data, EXCHANGE_TIMEOUT if whole else 0.05
        )
        note(f"received ({ending}): {received!r}")
        self.assertNotEqual(ending, "timeout", "lbtwist left the client hanging")
        methods = [
            b"HEAD" if line.startswith(b"HEAD ") else b"GET"
            for line in data.split(b"\r\n")
            if b" /fz/" in line
        ]
        responses = self.parseAll(received, methods)
        for response in responses:
            fromBackend = any(k.lower() == BACKEND_MARK for k, _ in response.headers)
            self.assertTrue(
                fromBackend or response.status in LBTWIST_ERRORS,
                f"unexpected {response.status} response {response.raw[:300]!r}",
            )
        if whole:
            self.assertTrue(
                [r for r in responses if r.complete], "a valid request got no response"
            )
        # Give the backend's thread a moment to parse what lbtwist sent.
        time.sleep(0.002)
        sentByClient = set(clientTargets(data))
        with self.backend._lock:
            violations = self.backend.violations
            violations[before:] = [
                v
                for v in violations[before:]
                if not (v[1] == "unexpected target" and v[2] in sentByClient)
            ]
        self.assertEqual(self.backend.violations[before:], [])

    def test_mutatedRequestsNeverDesynchronize(self) -> None:
        """
        About 2000 mutated requests and pipelined pairs each reach the backend
        only as strictly valid whole requests, each at most once, and each
        client gets backend responses or lbtwist errors, never a hang.
        """
        counter = [0]
        start = time.monotonic()
        skipped = [0]

        @settings(
            max_examples=MAX_EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(_cases)
        def run(case: Case) -> None:
            if time.monotonic() - start > BUDGET_SECONDS:
                skipped[0] += 1
                return
            counter[0] += 1
            self.check(case, counter[0])

        run()
        time.sleep(0.3)
        print(
            f"\n[fuzz]  {counter[0]} examples sent in {time.monotonic() - start:.1f}s "
            f"({skipped[0]} skipped over budget), {len(self.backend.targets)} "
            f"requests reached the backend, {self.backend.truncated} truncated"
        )
        self.assertEqual(self.backend.violations, [])
        targets = self.backend.targets
        # The run only means something if many examples reached the backend.
        self.assertGreater(len(targets), counter[0] // 4, "too few requests proxied")
        self.assertEqual(
            sorted(
                t
                for t in set(targets)
                if targets.count(t) > 1 and t.startswith(b"/fz/")
            ),
            [],
            "a request reached the backend twice",
        )
