# -*- test-case-name: tests.test_clienthello -*-
"""
Tests for L{lbtwist.clienthello}: real ClientHellos made by Python's C{ssl}
and by pyOpenSSL (TLS 1.2 and 1.3), split across records and TCP segments,
hand-built malformed ones, and properties over arbitrary bytes.
"""

from __future__ import annotations

import ssl
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from OpenSSL import SSL
from twisted.trial.unittest import SynchronousTestCase

from lbtwist.clienthello import (
    MAX_CLIENT_HELLO,
    ClientHello,
    ClientHelloReader,
    InvalidClientHello,
    NotTLS,
    parseClientHelloBody,
)


def realHello(serverName: str | None, maximum: ssl.TLSVersion | None = None) -> bytes:
    """
    @return: The first flight of Python's C{ssl} client (a ClientHello in
        one record), driven through memory BIOs.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if maximum is not None:
        context.maximum_version = maximum
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname=serverName)
    try:
        client.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def pyOpenSSLHello(serverName: bytes | None, maximum: int | None = None) -> bytes:
    """
    @return: The first flight of a pyOpenSSL client without a socket.
    """
    context = SSL.Context(SSL.TLS_METHOD)
    if maximum is not None:
        context.set_max_proto_version(maximum)
    connection = SSL.Connection(context, None)
    if serverName is not None:
        connection.set_tlsext_host_name(serverName)
    connection.set_connect_state()
    try:
        connection.do_handshake()
    except SSL.WantReadError:
        pass
    return connection.bio_read(65536)


def record(fragment: bytes, kind: int = 22, version: bytes = b"\x03\x01") -> bytes:
    """
    @return: One TLS record.
    """
    return bytes([kind]) + version + struct.pack("!H", len(fragment)) + fragment


def message(body: bytes, kind: int = 1) -> bytes:
    """
    @return: A handshake message (a ClientHello by default).
    """
    return bytes([kind]) + len(body).to_bytes(3, "big") + body


def extension(kind: int, data: bytes) -> bytes:
    """
    @return: One extension.
    """
    return struct.pack("!HH", kind, len(data)) + data


def serverNameData(*names: bytes, nameType: int = 0) -> bytes:
    """
    @return: The data of a C{server_name} extension listing C{names}.
    """
    entries = b"".join(
        bytes([nameType]) + struct.pack("!H", len(name)) + name for name in names
    )
    return struct.pack("!H", len(entries)) + entries


def body(
    version: bytes = b"\x03\x03",
    sessionID: bytes = b"\x00" * 32,
    suites: bytes = b"\x13\x01\x13\x02",
    compression: bytes = b"\x00",
    extensions: bytes | None = b"",
) -> bytes:
    """
    @return: A ClientHello body; C{extensions=None} leaves the extensions
        block out altogether (allowed before TLS 1.3).
    """
    data = (
        version
        + b"\x2a" * 32
        + bytes([len(sessionID)])
        + sessionID
        + struct.pack("!H", len(suites))
        + suites
        + bytes([len(compression)])
        + compression
    )
    if extensions is not None:
        data += struct.pack("!H", len(extensions)) + extensions
    return data


def handshakeOf(hello: bytes) -> bytes:
    """
    @return: The handshake bytes of a ClientHello in one record.
    """
    length = struct.unpack("!H", hello[3:5])[0]
    assert len(hello) == 5 + length, "one record"
    return hello[5:]


def refragment(hello: bytes, sizes: list[int]) -> bytes:
    """
    @return: The same ClientHello carried in records of C{sizes} bytes (the
        last one takes what is left).
    """
    handshake = handshakeOf(hello)
    records = []
    for size in sizes:
        if not handshake:
            break
        records.append(record(handshake[:size]))
        handshake = handshake[size:]
    if handshake:
        records.append(record(handshake))
    return b"".join(records)


def feedAll(data: bytes, pieces: list[int] | None = None) -> ClientHello | None:
    """
    Feed C{data} to a new reader in pieces of the given sizes (the rest in
    one last piece).

    @return: What the reader answered last.
    """
    reader = ClientHelloReader()
    result = None
    offset = 0
    for size in pieces or []:
        result = reader.feed(data[offset : offset + size])
        offset += size
        if result is not None:
            return result
    return reader.feed(data[offset:])


HELLO_13 = realHello("a.example")
HELLO_12 = realHello("x.b.example", ssl.TLSVersion.TLSv1_2)


class RealClientHelloTests(SynchronousTestCase):
    """
    ClientHellos made by real TLS clients.
    """

    def test_serverNames(self) -> None:
        """
        The server name of a TLS 1.3 and a TLS 1.2 ClientHello is read, in
        lower case.
        """
        for name, maximum, expected in [
            ("a.example", None, "a.example"),
            ("x.b.example", ssl.TLSVersion.TLSv1_2, "x.b.example"),
            ("Mixed.CASE.example", None, "mixed.case.example"),
            ("under_score.example", ssl.TLSVersion.TLSv1_3, "under_score.example"),
            ("a.example.", None, "a.example"),
        ]:
            hello = realHello(name, maximum)
            self.assertEqual(
                ClientHelloReader().feed(hello), ClientHello(expected), name
            )

    def test_pyOpenSSL(self) -> None:
        """
        pyOpenSSL's ClientHellos (TLS 1.2 and 1.3) are read too.
        """
        for maximum in (SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION):
            hello = pyOpenSSLHello(b"db.example", maximum)
            self.assertEqual(ClientHelloReader().feed(hello), ClientHello("db.example"))
            self.assertEqual(
                ClientHelloReader().feed(pyOpenSSLHello(None, maximum)),
                ClientHello(None),
            )

    def test_noServerName(self) -> None:
        """
        A ClientHello without SNI (no name, or an IP address, for which
        clients send none) has no server name.
        """
        for name in (None, "127.0.0.1", "::1"):
            self.assertEqual(
                ClientHelloReader().feed(realHello(name)), ClientHello(None), name
            )

    def test_byteByByte(self) -> None:
        """
        Fed one byte at a time, the reader answers L{None} until the last
        byte, then the ClientHello.
        """
        for hello in (HELLO_13, HELLO_12):
            reader = ClientHelloReader()
            answers = [reader.feed(hello[i : i + 1]) for i in range(len(hello))]
            self.assertEqual(answers[:-1], [None] * (len(hello) - 1))
            self.assertEqual(answers[-1], ClientHelloReader().feed(hello))

    def test_everyPrefixNeedsMore(self) -> None:
        """
        Every truncation of a valid ClientHello asks for more bytes rather
        than failing.
        """
        for end in range(len(HELLO_12)):
            self.assertIsNone(ClientHelloReader().feed(HELLO_12[:end]))

    def test_manyRecords(self) -> None:
        """
        A ClientHello split across several records (even one byte each)
        reads the same.
        """
        for sizes in ([1] * 600, [4, 1, 100], [50] * 20, [3]):
            self.assertEqual(
                ClientHelloReader().feed(refragment(HELLO_13, sizes)),
                ClientHello("a.example"),
                sizes[:5],
            )

    def test_bytesAfterTheClientHello(self) -> None:
        """
        What follows the ClientHello (a ChangeCipherSpec, early data, or
        the next handshake message in the same record) does not matter.
        """
        ccs = record(b"\x01", kind=20, version=b"\x03\x03")
        self.assertEqual(
            ClientHelloReader().feed(HELLO_13 + ccs + b"junk"),
            ClientHello("a.example"),
        )
        trailing = record(handshakeOf(HELLO_13) + message(b"\x00" * 4, kind=5))
        self.assertEqual(ClientHelloReader().feed(trailing), ClientHello("a.example"))

    @settings(max_examples=200, deadline=None)
    @given(
        hello=st.sampled_from([HELLO_13, HELLO_12]),
        records=st.lists(st.integers(1, 300), max_size=20),
        segments=st.lists(st.integers(0, 300), max_size=30),
    )
    def test_splitsDoNotMatter(
        self, hello: bytes, records: list[int], segments: list[int]
    ) -> None:
        """
        However the ClientHello is split into records and the records into
        TCP segments, the result is the same.
        """
        expected = ClientHelloReader().feed(hello)
        self.assertEqual(feedAll(refragment(hello, records), segments), expected)


class NotTLSTests(SynchronousTestCase):
    """
    Connections that do not start with a TLS handshake record.
    """

    def test_firstByte(self) -> None:
        """
        The first byte decides: an HTTP request, an SSLv2-style hello, an
        application data record, or a lone NUL is not TLS.
        """
        for data in (
            b"G",
            b"GET / HTTP/1.1\r\n",
            b"\x80\x2e\x01",
            record(b"x", 23),
            b"\0",
        ):
            with self.assertRaises(NotTLS):
                ClientHelloReader().feed(data)

    def test_nothingYet(self) -> None:
        """
        Empty reads decide nothing.
        """
        reader = ClientHelloReader()
        self.assertIsNone(reader.feed(b""))
        with self.assertRaises(NotTLS):
            reader.feed(b"SSH-2.0-OpenSSH_9.6\r\n")


class MalformedRecordTests(SynchronousTestCase):
    """
    Records that cannot carry a ClientHello.
    """

    def assertInvalid(self, data: bytes, reason: str) -> None:
        """
        Feeding C{data} raises L{InvalidClientHello} (not L{NotTLS}) with
        C{reason}.
        """
        with self.assertRaises(InvalidClientHello) as caught:
            ClientHelloReader().feed(data)
        self.assertNotIsInstance(caught.exception, NotTLS)
        self.assertEqual(caught.exception.reason, reason)

    def test_otherRecordBeforeTheEnd(self) -> None:
        """
        An alert record before the ClientHello is complete is refused.
        """
        first = refragment(HELLO_13, [10])[:15]
        self.assertInvalid(
            first + record(b"\x02\x28", kind=21),
            "record of type 21 before the ClientHello is complete",
        )

    def test_recordVersion(self) -> None:
        """
        A record whose version is not 3.x is refused.
        """
        self.assertInvalid(
            record(b"x", version=b"\x02\x00"), "record version is not TLS"
        )

    def test_emptyRecord(self) -> None:
        """
        An empty handshake record is refused (RFC 8446, section 5.1).
        """
        self.assertInvalid(record(b""), "bad record length 0")

    def test_recordTooLong(self) -> None:
        """
        A record longer than 2^14 bytes is refused from its header.
        """
        self.assertInvalid(b"\x16\x03\x01\x40\x01", "bad record length 16385")

    def test_notAClientHello(self) -> None:
        """
        A first handshake message other than a ClientHello is refused.
        """
        self.assertInvalid(
            record(message(b"\x03\x03", kind=2)),
            "first handshake message has type 2, not ClientHello",
        )

    def test_tooLarge(self) -> None:
        """
        A ClientHello announced larger than the limit is refused from its
        header, before it is read.
        """
        header = message(b"")[:1] + (MAX_CLIENT_HELLO).to_bytes(3, "big")
        self.assertInvalid(
            record(header), f"ClientHello longer than {MAX_CLIENT_HELLO} bytes"
        )

    def test_limitCountsRecordHeaders(self) -> None:
        """
        At most C{limit} bytes are read, record headers included: a
        ClientHello in tiny records that would need more is refused.
        """
        hello = refragment(HELLO_13, [1] * 600)
        with self.assertRaises(InvalidClientHello) as caught:
            ClientHelloReader(limit=2000).feed(hello)
        self.assertEqual(caught.exception.reason, "ClientHello longer than 2000 bytes")
        self.assertEqual(
            ClientHelloReader(limit=len(hello)).feed(hello), ClientHello("a.example")
        )

    def test_linearTime(self) -> None:
        """
        A ClientHello of a thousand one-byte records, fed one byte at a
        time, is read (the reader does not rescan what it read).
        """
        big = message(
            body(
                extensions=extension(0, serverNameData(b"a.example"))
                + extension(21, b"\0" * 2500)
            )
        )
        data = b"".join(record(big[i : i + 1]) for i in range(len(big)))
        self.assertLess(len(data), MAX_CLIENT_HELLO)
        reader = ClientHelloReader()
        answers = [reader.feed(data[i : i + 1]) for i in range(len(data))]
        self.assertEqual(answers[-1], ClientHello("a.example"))


class MalformedBodyTests(SynchronousTestCase):
    """
    ClientHello bodies that are not well formed.
    """

    def assertInvalid(self, data: bytes, reason: str) -> None:
        """
        Parsing C{data} as a ClientHello body, alone and through a reader,
        raises L{InvalidClientHello} with C{reason}.
        """
        with self.assertRaises(InvalidClientHello) as caught:
            parseClientHelloBody(data)
        self.assertEqual(caught.exception.reason, reason)
        with self.assertRaises(InvalidClientHello) as caught:
            ClientHelloReader().feed(record(message(data)))
        self.assertEqual(caught.exception.reason, reason)

    def test_wellFormed(self) -> None:
        """
        The hand-built body this class breaks is valid, with or without
        an extensions block.
        """
        sni = extension(0, serverNameData(b"Hand.Built.example"))
        self.assertEqual(
            parseClientHelloBody(
                body(extensions=extension(10, b"\x00\x02\x00\x1d") + sni)
            ),
            ClientHello("hand.built.example"),
        )
        self.assertEqual(parseClientHelloBody(body(extensions=None)), ClientHello(None))
        self.assertEqual(parseClientHelloBody(body()), ClientHello(None))

    def test_fields(self) -> None:
        """
        Each fixed field is checked.
        """
        self.assertInvalid(body(version=b"\x02\x00"), "legacy_version is not TLS")
        self.assertInvalid(
            body(sessionID=b"\x00" * 33), "legacy_session_id longer than 32 bytes"
        )
        self.assertInvalid(body(suites=b""), "bad cipher_suites length")
        self.assertInvalid(body(suites=b"\x13\x01\x13"), "bad cipher_suites length")
        self.assertInvalid(body(compression=b""), "no legacy_compression_methods")
        self.assertInvalid(body()[:20], "truncated random")
        self.assertInvalid(body() + b"\x00", "bytes after the extensions")

    def test_truncatedExtensions(self) -> None:
        """
        Extensions whose lengths do not add up are refused.
        """
        sni = extension(0, serverNameData(b"a.example"))
        whole = body(extensions=sni)
        self.assertInvalid(whole[:-1], "truncated extensions")
        self.assertInvalid(body(extensions=sni[:-1]), "truncated extension")
        self.assertInvalid(body(extensions=b"\x00"), "truncated extension type")

    def test_duplicateExtension(self) -> None:
        """
        An extension sent twice is refused (RFC 8446, section 4.2).
        """
        sni = extension(0, serverNameData(b"a.example"))
        self.assertInvalid(body(extensions=sni + sni), "extension 0 twice")

    def test_serverName(self) -> None:
        """
        The C{server_name} extension must hold exactly one host name, and
        nothing else.
        """
        cases = [
            (serverNameData(b"a.example", b"b.example"), "more than one server_name"),
            (
                serverNameData(b"a.example", nameType=1),
                "server_name is not a host_name",
            ),
            (serverNameData(b""), "server_name is not a host name"),
            (serverNameData(b"a example"), "server_name is not a host name"),
            (serverNameData(b"a.example\x00.evil"), "server_name is not a host name"),
            (serverNameData(b"a..example"), "server_name is not a host name"),
            (serverNameData(b"\xc3\xa9.example"), "server_name is not a host name"),
            (serverNameData(b"a" * 256), "server_name is not a host name"),
            (
                serverNameData(b"a.example") + b"\x00",
                "bytes after the server_name list",
            ),
            (b"", "truncated server_name list"),
            (b"\x00\x00", "truncated server_name type"),
            (b"\x00\x04\x00\x00\x09a", "truncated host_name"),
        ]
        for data, reason in cases:
            self.assertInvalid(body(extensions=extension(0, data)), reason)


class PropertyTests(SynchronousTestCase):
    """
    Whatever the bytes, the reader answers or raises its own error.
    """

    def assertOnlyOwnError(self, data: bytes, pieces: list[int]) -> None:
        """
        Feeding C{data} in C{pieces} returns or raises L{InvalidClientHello}.
        """
        try:
            feedAll(data, pieces)
        except InvalidClientHello:
            pass

    @settings(max_examples=300, deadline=None)
    @given(
        data=st.binary(max_size=600), pieces=st.lists(st.integers(0, 50), max_size=10)
    )
    def test_arbitraryBytes(self, data: bytes, pieces: list[int]) -> None:
        """
        Arbitrary bytes, and arbitrary bytes in a handshake record, never
        raise anything else.
        """
        self.assertOnlyOwnError(data, pieces)
        self.assertOnlyOwnError(record(data[:16384] or b"\x01"), pieces)
        self.assertOnlyOwnError(record(message(data)), pieces)

    @settings(max_examples=500, deadline=None)
    @given(
        hello=st.sampled_from([HELLO_13, HELLO_12]),
        flips=st.lists(
            st.tuples(st.integers(0, 600), st.integers(0, 255)), min_size=1, max_size=4
        ),
        cut=st.integers(0, 600),
    )
    def test_mutatedRealHellos(
        self, hello: bytes, flips: list[tuple[int, int]], cut: int
    ) -> None:
        """
        A real ClientHello with bytes changed, then cut short, is read or
        refused with L{InvalidClientHello}, never anything else.
        """
        mutated = bytearray(hello)
        for position, value in flips:
            mutated[position % len(mutated)] = value
        self.assertOnlyOwnError(bytes(mutated[: max(cut, 1)]), [])
        self.assertOnlyOwnError(bytes(mutated), [7, 3])

    @settings(max_examples=200, deadline=None)
    @given(
        names=st.lists(
            st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True),
            min_size=1,
            max_size=5,
        ),
        segments=st.lists(st.integers(1, 40), max_size=10),
    )
    def test_builtNamesRoundTrip(self, names: list[str], segments: list[int]) -> None:
        """
        The host name of a hand-built ClientHello comes back as it was put
        in, however the bytes are split.
        """
        name = ".".join(names)
        data = record(
            message(body(extensions=extension(0, serverNameData(name.encode()))))
        )
        self.assertEqual(feedAll(data, segments), ClientHello(name))
