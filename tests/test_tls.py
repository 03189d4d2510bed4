"""
Tests for L{lbtwist.tls}: certificates generated at test time, TLS
connections in memory (L{twisted.test.iosim}).
"""

from __future__ import annotations

import datetime
import os
import tempfile
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    ISSLTransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from lbtwist.config import FrontendTLSConfig, PoolConfig, parseBackendSpec
from lbtwist.tls import (
    ALPN_HTTP,
    BackendTLS,
    CertificateError,
    SNIServerCreator,
    TLSServerFactory,
    checkCAFile,
    chooseCertificate,
    describeTLSFailure,
    loadServerCertificate,
    matchesServerName,
    serverTLSFactory,
)

# Certificates, generated at test time.

_NOW = datetime.datetime.now(datetime.timezone.utc)
_DAY = datetime.timedelta(days=1)


class Issued:
    """
    A private key and its certificate.
    """

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate):
        self.key = key
        self.cert = cert

    def keyPEM(self) -> bytes:
        """
        @return: The private key in PEM (PKCS#8).
        """
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def certPEM(self) -> bytes:
        """
        @return: The certificate in PEM.
        """
        return self.cert.public_bytes(serialization.Encoding.PEM)


def makeCA(name: str = "lbtwist test CA") -> Issued:
    """
    @return: A self-signed CA certificate valid from yesterday for a year.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOW - _DAY)
        .not_valid_after(_NOW + 365 * _DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        )
        .sign(key, hashes.SHA256())
    )
    return Issued(key, cert)


def makeLeaf(
    ca: Issued,
    names: Sequence[str],
    expired: bool = False,
    addresses: Sequence[str] = (),
) -> Issued:
    """
    @param ca: The issuer.
    @param names: DNS names (the first is also the common name).
    @param expired: Whether it expired yesterday.
    @param addresses: IP addresses for the subjectAltName.
    @return: A server certificate issued by C{ca}.
    """
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    common = names[0] if names else addresses[0]
    alternatives: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alternatives += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    notAfter = _NOW - _DAY if expired else _NOW + 30 * _DAY
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOW - 10 * _DAY)
        .not_valid_after(notAfter)
        .add_extension(x509.SubjectAlternativeName(alternatives), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(key, cert)


def serverPEM(leaf: Issued, ca: Issued | None = None) -> bytes:
    """
    @return: A frontend's PEM file: key, certificate, then C{ca} as chain.
    """
    return leaf.keyPEM() + leaf.certPEM() + (ca.certPEM() if ca else b"")


def writeFile(directory: str, name: str, data: bytes) -> str:
    """
    @return: The path of a new file C{name} in C{directory} holding C{data}.
    """
    path = os.path.join(directory, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


class Certificates:
    """
    A CA and certificates for C{a.example}, C{*.b.example} and an expired
    C{old.example}, written to a temporary directory.
    """

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="lbtwist-tls-")
        self.ca = makeCA()
        self.a = makeLeaf(
            self.ca, ["a.example", "www.a.example"], addresses=["127.0.0.1"]
        )
        self.b = makeLeaf(self.ca, ["*.b.example"])
        self.old = makeLeaf(
            self.ca, ["old.example"], expired=True, addresses=["127.0.0.1"]
        )
        self.aPath = writeFile(self.directory, "a.pem", serverPEM(self.a, self.ca))
        self.bPath = writeFile(self.directory, "b.pem", serverPEM(self.b, self.ca))
        self.oldPath = writeFile(self.directory, "old.pem", serverPEM(self.old))
        self.caPath = writeFile(self.directory, "ca.pem", self.ca.certPEM())

    def cleanUp(self) -> None:
        """
        Remove the directory.
        """
        import shutil

        shutil.rmtree(self.directory, ignore_errors=True)


# In-memory connections.


@implementer(IOpenSSLClientConnectionCreator)
class _TestClient:
    """
    A client creator that verifies nothing, with optional SNI, ALPN and
    maximum version.
    """

    def __init__(
        self,
        serverName: bytes | None = None,
        alpn: Sequence[bytes] = (),
        maxVersion: int | None = None,
    ) -> None:
        self.serverName = serverName
        self.alpn = alpn
        self.maxVersion = maxVersion

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        context = SSL.Context(SSL.TLS_METHOD)
        if self.maxVersion is not None:
            context.set_min_proto_version(0)
            context.set_max_proto_version(self.maxVersion)
            context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
        if self.alpn:
            context.set_alpn_protos(list(self.alpn))
        connection = SSL.Connection(context, None)
        if self.serverName is not None:
            connection.set_tlsext_host_name(self.serverName)
        return connection


@implementer(IHandshakeListener)
class _Recorder(Protocol):
    """
    Records the handshake, the peer's certificate, the ALPN result, the data
    and how the connection ended.
    """

    def __init__(self) -> None:
        self.handshook = False
        self.peer: x509.Certificate | None = None
        self.negotiated: bytes | None = None
        self.secure = False
        self.lost: Failure | None = None
        self.received = b""

    def connectionMade(self) -> None:
        self.secure = ISSLTransport.providedBy(self.transport)

    def handshakeCompleted(self) -> None:
        self.handshook = True
        peer = self.transport.getPeerCertificate()  # type: ignore[union-attr]
        self.peer = peer.to_cryptography() if peer is not None else None
        self.negotiated = self.transport.negotiatedProtocol  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:
        self.lost = reason


_CLIENT_CLOCK = Clock()
"""Flushes the test clients' aggregated small writes (see L{_write})."""


def _write(protocol: _Recorder, data: bytes, pump: iosim.IOPump) -> None:
    """
    Write from a test client and deliver it.
    """
    protocol.transport.write(data)  # type: ignore[union-attr]
    _CLIENT_CLOCK.advance(0)
    pump.flush()


def _connect(
    serverFactory: Any, clientCreator: Any
) -> tuple[_Recorder, _Recorder, iosim.IOPump]:
    """
    Connect a TLS client to a server factory in memory and pump until
    nothing moves.

    @return: The server's and the client's application protocols, and the
        pump.
    """
    server = serverFactory.buildProtocol(None)
    clientApp = _Recorder()
    client = TLSMemoryBIOFactory(
        clientCreator, True, Factory.forProtocol(lambda: clientApp), _CLIENT_CLOCK
    ).buildProtocol(None)
    pump = iosim.connect(
        server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client)
    )
    pump.flush()
    serverApp = server.wrappedProtocol
    return serverApp, clientApp, pump


def _commonName(cert: x509.Certificate | None) -> str:
    assert cert is not None
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


class _CertificatesTestCase(SynchronousTestCase):
    """
    Makes L{Certificates} once per test.
    """

    def setUp(self) -> None:
        self.certs = Certificates()
        self.addCleanup(self.certs.cleanUp)

    def serverFactory(
        self,
        paths: Sequence[str] | None = None,
        minVersion: str = "1.2",
        protocols: Sequence[bytes] = ALPN_HTTP,
        clock: Clock | None = None,
        timeout: float = 10.0,
    ) -> TLSServerFactory:
        """
        @return: A TLS server factory in front of L{_Recorder}s, serving
            C{a.example} then C{*.b.example} by default.
        """
        tls = FrontendTLSConfig(
            certificates=tuple(paths or (self.certs.aPath, self.certs.bPath)),
            min_version=minVersion,
            handshake_timeout=timeout,
        )
        return serverTLSFactory(
            clock or Clock(), "https", tls, Factory.forProtocol(_Recorder), protocols
        )


class LoadServerCertificateTests(_CertificatesTestCase):
    """
    L{loadServerCertificate} reads a key, a certificate and a chain.
    """

    def test_loadsKeyCertificateAndChain(self) -> None:
        """
        The key, the first certificate, the chain after it and the DNS names
        are loaded.
        """
        loaded = loadServerCertificate(self.certs.aPath)
        self.assertEqual(loaded.names, ("a.example", "www.a.example"))
        self.assertEqual(loaded.certificate, self.certs.a.cert)
        self.assertEqual(loaded.chain, (self.certs.ca.cert,))

    def test_errors(self) -> None:
        """
        A missing file, a missing key or certificate and a key of another
        certificate are refused, saying which.
        """
        d = self.certs.directory
        a, b = self.certs.a, self.certs.b
        cases = [
            (os.path.join(d, "nope.pem"), "cannot read: No such file or directory"),
            (writeFile(d, "k.pem", a.keyPEM()), "no certificate"),
            (writeFile(d, "c.pem", a.certPEM()), "no private key"),
            (writeFile(d, "m.pem", b.keyPEM() + a.certPEM()), "does not match"),
            (writeFile(d, "2.pem", a.keyPEM() * 2 + a.certPEM()), "more than one"),
        ]
        for path, problem in cases:
            with self.subTest(problem=problem):
                error = self.assertRaises(CertificateError, loadServerCertificate, path)
                self.assertIn(problem, error.reason)

    def test_caFile(self) -> None:
        """
        A CA file needs at least one certificate.
        """
        checkCAFile(self.certs.caPath)
        empty = writeFile(self.certs.directory, "empty.pem", b"nothing\n")
        error = self.assertRaises(CertificateError, checkCAFile, empty)
        self.assertIn("no certificate", error.reason)


class ServerNameTests(SynchronousTestCase):
    """
    Matching server names to certificate names.
    """

    def test_matches(self) -> None:
        """
        Names match exactly (ignoring case and a final dot); a wildcard
        matches one label.
        """
        self.assertTrue(matchesServerName("a.example", "A.Example."))
        self.assertTrue(matchesServerName("*.b.example", "x.b.example"))
        self.assertFalse(matchesServerName("*.b.example", "b.example"))
        self.assertFalse(matchesServerName("*.b.example", "y.x.b.example"))
        self.assertFalse(matchesServerName("*.b.example", ".b.example"))
        self.assertFalse(matchesServerName("a.example", "b.example"))


class TerminationTests(_CertificatesTestCase):
    """
    L{SNIServerCreator} behind L{TLSServerFactory}, with in-memory clients.
    """

    def test_chooseCertificate(self) -> None:
        """
        Exact names win over wildcards; unknown and absent names get the
        first certificate.
        """
        a = loadServerCertificate(self.certs.aPath)
        b = loadServerCertificate(self.certs.bPath)
        wide = loadServerCertificate(
            writeFile(
                self.certs.directory,
                "wide.pem",
                serverPEM(makeLeaf(self.certs.ca, ["*.a.example"])),
            )
        )
        self.assertEqual(chooseCertificate([a, b], "x.b.example"), 1)
        self.assertEqual(chooseCertificate([a, b], "nowhere.example"), 0)
        self.assertEqual(chooseCertificate([a, b], None), 0)
        self.assertEqual(chooseCertificate([wide, a], "www.a.example"), 1)

    def test_sniSelectsCertificate(self) -> None:
        """
        The client's server name picks the certificate, wildcards included.
        """
        for name, expected in [
            (b"a.example", "a.example"),
            (b"www.a.example", "a.example"),
            (b"shop.b.example", "*.b.example"),
        ]:
            with self.subTest(name=name):
                server, client, _ = _connect(self.serverFactory(), _TestClient(name))
                self.assertTrue(client.handshook)
                self.assertEqual(_commonName(client.peer), expected)

    def test_unknownOrAbsentNameGetsFirst(self) -> None:
        """
        An unknown server name, or none, gets the first certificate.
        """
        for name in [b"nowhere.example", b"b.example", None]:
            with self.subTest(name=name):
                _, client, _ = _connect(
                    self.serverFactory([self.certs.bPath, self.certs.aPath]),
                    _TestClient(name),
                )
                self.assertTrue(client.handshook)
                self.assertEqual(_commonName(client.peer), "*.b.example")

    def test_applicationSeesSecureTransport(self) -> None:
        """
        The frontend's protocol gets a transport providing L{ISSLTransport}
        (what C{request.isSecure()} asks) and the decrypted bytes.
        """
        server, client, pump = _connect(self.serverFactory(), _TestClient(b"a.example"))
        _write(client, b"GET / HTTP/1.1\r\n", pump)
        self.assertTrue(server.secure)
        self.assertEqual(server.received, b"GET / HTTP/1.1\r\n")

    def test_alpnSelectsHTTP11(self) -> None:
        """
        HTTP frontends select C{http/1.1} by ALPN, even if C{h2} is offered
        first.
        """
        _, client, _ = _connect(
            self.serverFactory(), _TestClient(b"a.example", [b"h2", b"http/1.1"])
        )
        self.assertTrue(client.handshook)
        self.assertEqual(client.negotiated, b"http/1.1")

    def test_tcpFrontendSelectsNoProtocol(self) -> None:
        """
        A TCP frontend selects nothing by ALPN, and the handshake still
        succeeds for a client that offers protocols.
        """
        _, client, _ = _connect(
            self.serverFactory(protocols=()), _TestClient(b"a.example", [b"h2"])
        )
        self.assertTrue(client.handshook)
        self.assertIsNone(client.negotiated)

    def test_tls11Refused(self) -> None:
        """
        A client that speaks at most TLS 1.1 cannot connect; the same client
        allowed TLS 1.2 can.
        """
        _, old, _ = _connect(
            self.serverFactory(),
            _TestClient(b"a.example", maxVersion=SSL.TLS1_1_VERSION),
        )
        self.assertFalse(old.handshook)
        self.assertIsNotNone(old.lost)
        _, new, _ = _connect(
            self.serverFactory(),
            _TestClient(b"a.example", maxVersion=SSL.TLS1_2_VERSION),
        )
        self.assertTrue(new.handshook)

    def test_minimumTLS13(self) -> None:
        """
        With C{min_version = "1.3"}, a TLS 1.2 client is refused.
        """
        _, client, _ = _connect(
            self.serverFactory(minVersion="1.3"),
            _TestClient(b"a.example", maxVersion=SSL.TLS1_2_VERSION),
        )
        self.assertFalse(client.handshook)
        _, modern, _ = _connect(
            self.serverFactory(minVersion="1.3"), _TestClient(b"a.example")
        )
        self.assertTrue(modern.handshook)

    def test_handshakeTimeout(self) -> None:
        """
        A connection that does not complete its handshake within the
        timeout is aborted.
        """
        clock = Clock()
        protocol = self.serverFactory(clock=clock, timeout=5.0).buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        clock.advance(4.9)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.2)
        self.assertTrue(transport.disconnecting)

    def test_completedHandshakeStopsTimer(self) -> None:
        """
        Once the handshake completed, the timeout no longer applies.
        """
        clock = Clock()
        _, client, pump = _connect(
            self.serverFactory(clock=clock, timeout=5.0), _TestClient(b"a.example")
        )
        self.assertTrue(client.handshook)
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(60)
        pump.flush()
        self.assertIsNone(client.lost)

    def test_closedConnectionStopsTimer(self) -> None:
        """
        A connection closed before its handshake leaves no timer behind.
        """
        clock = Clock()
        protocol = self.serverFactory(clock=clock).buildProtocol(None)
        protocol.makeConnection(StringTransport())
        protocol.connectionLost(Failure(Exception("gone")))
        self.assertEqual(clock.getDelayedCalls(), [])


class BackendTLSTests(_CertificatesTestCase):
    """
    L{BackendTLS}: the client side of connections to C{https://} backends,
    against an in-memory server.
    """

    def backend(self, *paths: str) -> TLSServerFactory:
        """
        @return: A TLS server with the given certificates.
        """
        return self.serverFactory(list(paths), protocols=())

    def test_verifiedWithCAFile(self) -> None:
        """
        A certificate issued by the C{ca_file} for the host name is accepted.
        """
        tls = BackendTLS(self.certs.caPath)
        _, client, _ = _connect(
            self.backend(self.certs.aPath), tls.creatorFor("a.example")
        )
        self.assertTrue(client.handshook)
        self.assertIsNone(client.lost)

    def test_sendsServerName(self) -> None:
        """
        The host name is sent as SNI: the server answers with the matching
        certificate, which is verified.
        """
        tls = BackendTLS(self.certs.caPath)
        _, client, _ = _connect(
            self.backend(self.certs.aPath, self.certs.bPath),
            tls.creatorFor("api.b.example"),
        )
        self.assertTrue(client.handshook)
        self.assertEqual(_commonName(client.peer), "*.b.example")

    def test_wrongHostNameFails(self) -> None:
        """
        A valid certificate for another name fails the connection, named as
        such.
        """
        tls = BackendTLS(self.certs.caPath)
        _, client, _ = _connect(
            self.backend(self.certs.aPath), tls.creatorFor("c.example")
        )
        self.assertFalse(client.handshook)
        assert client.lost is not None
        self.assertTrue(client.lost.check(VerificationError))
        described = describeTLSFailure(client.lost)
        assert described is not None
        self.assertEqual(described.reason, "TLS: certificate does not match host name")
        self.assertTrue(described.handshake)

    def test_expiredFails(self) -> None:
        """
        An expired certificate fails the connection.
        """
        tls = BackendTLS(self.certs.caPath)
        _, client, _ = _connect(
            self.backend(self.certs.oldPath), tls.creatorFor("old.example")
        )
        self.assertFalse(client.handshook)
        assert client.lost is not None
        described = describeTLSFailure(client.lost)
        assert described is not None
        self.assertEqual(described.reason, "TLS: certificate verify failed")

    def test_unknownIssuerFails(self) -> None:
        """
        Without the C{ca_file}, the system trust store does not know the
        test CA: the connection fails.
        """
        _, client, _ = _connect(
            self.backend(self.certs.aPath), BackendTLS().creatorFor("a.example")
        )
        self.assertFalse(client.handshook)

    def test_noVerifyAcceptsAnything(self) -> None:
        """
        With C{tls_verify = false}, an expired certificate for another name
        is accepted, and the host name is still sent.
        """
        tls = BackendTLS(verify=False)
        _, expired, _ = _connect(
            self.backend(self.certs.oldPath), tls.creatorFor("c.example")
        )
        self.assertTrue(expired.handshook)
        _, named, _ = _connect(
            self.backend(self.certs.aPath, self.certs.bPath),
            tls.creatorFor("x.b.example"),
        )
        self.assertEqual(_commonName(named.peer), "*.b.example")

    def test_ipAddressVerified(self) -> None:
        """
        An IP address is verified against the certificate's IP entries.
        """
        tls = BackendTLS(self.certs.caPath)
        _, client, _ = _connect(
            self.backend(self.certs.aPath), tls.creatorFor("127.0.0.1")
        )
        self.assertTrue(client.handshook)

    def test_forPool(self) -> None:
        """
        A pool's C{ca_file} and C{tls_verify} become the L{BackendTLS}.
        """
        pool = PoolConfig(
            name="app",
            backends=(parseBackendSpec("https://a.example", 1),),
            ca_file="/ca.pem",
            tls_verify=False,
        )
        tls = BackendTLS.forPool(pool)
        self.assertEqual((tls.caFile, tls.verify), ("/ca.pem", False))

    def test_otherFailuresAreNotTLS(self) -> None:
        """
        A failure that is no TLS failure is not described.
        """
        self.assertIsNone(describeTLSFailure(Failure(ValueError("x"))))
