# -*- test-case-name: tests.test_tls -*-
"""
TLS, both ways: terminating it on frontends and speaking it to backends.
This is the only lbtwist module that imports OpenSSL.

Frontends: L{loadServerCertificate} reads one PEM file (private key,
certificate, chain) and checks that the key belongs to the certificate;
L{SNIServerCreator} makes the server side of each connection, choosing the
certificate whose DNS names match the client's server name indication
(C{*.example.com} matches one label), or the first one for an unknown or
absent name. TLS 1.0 and 1.1 are refused, Twisted's default cipher list is
used, and ALPN selects C{http/1.1} for HTTP frontends (nothing for TCP ones).
L{serverTLSFactory} wraps a frontend's protocol factory so that the listen
endpoint stays a plain description (C{tcp:8443}); a connection that has not
completed its handshake within the frontend's C{handshake_timeout} is closed.

Backends: L{BackendTLS} makes the client side for C{https://} backends: the
certificate is verified against the system trust store or the pool's
C{ca_file}, the host name is checked by service-identity and sent as SNI;
a failure fails the connection (L{describeTLSFailure} names it for logs).
With C{tls_verify = false} nothing is verified, but the name is still sent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import connectionDone
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    TLSVersion,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

if TYPE_CHECKING:
    from lbtwist.config import FrontendTLSConfig, PoolConfig

__all__ = [
    "ALPN_HTTP",
    "BackendTLS",
    "CertificateError",
    "SNIServerCreator",
    "TLSFailure",
    "ServerCertificate",
    "checkCAFile",
    "describeTLSFailure",
    "loadServerCertificate",
    "matchesServerName",
    "serverTLSFactory",
]

_log = Logger()

ALPN_HTTP = (b"http/1.1",)
"""The protocols HTTP frontends select by ALPN (lbtwist speaks HTTP/1.1)."""

_MIN_VERSIONS = {"1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}

_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----\r?\n?", re.DOTALL
)
_ServerKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
    | dsa.DSAPrivateKey
)
_SERVER_KEYS = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    dsa.DSAPrivateKey,
)
_KEY_BLOCKS = (b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY")


class CertificateError(ValueError):
    """
    A PEM file cannot be used; C{reason} says why, without the file name,
    e.g. C{"the private key does not match the certificate"}.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@frozen
class ServerCertificate:
    """
    A frontend's certificate, loaded from its PEM file.

    @ivar path: The file it was read from.
    @ivar names: Its DNS names, lower case: the subjectAltName DNS entries,
        or the common name if it has no subjectAltName.
    @ivar key: The private key.
    @ivar certificate: The certificate.
    @ivar chain: The intermediate certificates that follow it.
    """

    path: str
    names: tuple[str, ...]
    key: _ServerKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]


def _readPEM(path: str) -> list[tuple[bytes, bytes]]:
    """
    @return: The C{(label, block)} pairs of a PEM file, in order.
    @raise CertificateError: If it cannot be read.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as e:
        raise CertificateError(f"cannot read: {e.strerror or e}") from None
    return [(match[1], match[0]) for match in _PEM_BLOCK.finditer(data)]


def _dnsNames(certificate: x509.Certificate) -> tuple[str, ...]:
    """
    @return: The DNS names of C{certificate} (see L{ServerCertificate.names}).
    """
    try:
        extension = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
    except x509.ExtensionNotFound:
        names = [
            str(attribute.value)
            for attribute in certificate.subject.get_attributes_for_oid(
                NameOID.COMMON_NAME
            )
        ]
    else:
        names = extension.value.get_values_for_type(x509.DNSName)
    return tuple(name.lower().rstrip(".") for name in names)


def _loadCertificates(blocks: Sequence[bytes]) -> list[x509.Certificate]:
    try:
        return [x509.load_pem_x509_certificate(block) for block in blocks]
    except ValueError as e:
        raise CertificateError(f"invalid certificate: {e}") from None


def loadServerCertificate(path: str) -> ServerCertificate:
    """
    Read a frontend's PEM file: one unencrypted private key, its certificate,
    then the chain (in any order of blocks, the first certificate being the
    server's).

    @param path: The file's name.
    @return: The certificate, ready to serve.
    @raise CertificateError: Saying what is missing, broken or mismatched.
    """
    blocks = _readPEM(path)
    keys = [block for label, block in blocks if label in _KEY_BLOCKS]
    if any(label == b"ENCRYPTED PRIVATE KEY" for label, _ in blocks):
        raise CertificateError("the private key is encrypted (not supported)")
    if not keys:
        raise CertificateError("no private key (expected a PEM PRIVATE KEY block)")
    if len(keys) > 1:
        raise CertificateError("more than one private key")
    certificates = _loadCertificates(
        [block for label, block in blocks if label == b"CERTIFICATE"]
    )
    if not certificates:
        raise CertificateError("no certificate (expected a PEM CERTIFICATE block)")
    try:
        key = serialization.load_pem_private_key(keys[0], password=None)
    except (ValueError, TypeError) as e:
        raise CertificateError(f"invalid private key: {e}") from None
    publicInfo = (
        serialization.Encoding.DER,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    leaf = certificates[0]
    if key.public_key().public_bytes(*publicInfo) != leaf.public_key().public_bytes(
        *publicInfo
    ):
        raise CertificateError("the private key does not match the certificate")
    if not isinstance(key, _SERVER_KEYS):
        raise CertificateError(f"unsupported private key: {type(key).__name__}")
    return ServerCertificate(
        path=path,
        names=_dnsNames(leaf),
        key=key,
        certificate=leaf,
        chain=tuple(certificates[1:]),
    )


def checkCAFile(path: str) -> None:
    """
    Check that a pool's C{ca_file} holds at least one PEM certificate.

    @param path: The file's name.
    @raise CertificateError: If it cannot be read or holds none.
    """
    if not _loadCertificates(_caBlocks(path)):
        raise CertificateError("no certificate (expected PEM CERTIFICATE blocks)")


def _caBlocks(path: str) -> list[bytes]:
    return [block for label, block in _readPEM(path) if label == b"CERTIFICATE"]


def matchesServerName(pattern: str, name: str) -> bool:
    """
    Whether a certificate's DNS name covers a server name.

    @param pattern: A DNS name of a certificate, lower case; C{*.example.com}
        matches exactly one label in front of C{example.com}.
    @param name: The server name a client asked for.
    """
    name = name.lower().rstrip(".")
    if pattern.startswith("*."):
        label, dot, rest = name.partition(".")
        return bool(label) and bool(dot) and rest == pattern[2:]
    return pattern == name


def chooseCertificate(
    certificates: Sequence[ServerCertificate], serverName: str | None
) -> int:
    """
    @param certificates: A frontend's certificates, in configuration order.
    @param serverName: The client's SNI, if any.
    @return: The index of the certificate to serve: the first whose names
        include C{serverName} exactly, else the first matching by a
        wildcard, else the first one.
    """
    if not serverName:
        return 0
    for exact in (True, False):
        for index, certificate in enumerate(certificates):
            for pattern in certificate.names:
                if pattern.startswith("*.") == (not exact) and matchesServerName(
                    pattern, serverName
                ):
                    return index
    return 0


@implementer(IOpenSSLServerConnectionCreator)
class SNIServerCreator:
    """
    Makes the server side of a frontend's TLS connections: one context per
    certificate, switched to by the client's server name.

    @ivar certificates: The certificates, the first one the default.
    """

    def __init__(
        self,
        certificates: Sequence[ServerCertificate],
        minVersion: str = "1.2",
        protocols: Sequence[bytes] = (),
    ) -> None:
        """
        @param certificates: At least one certificate.
        @param minVersion: C{"1.2"} or C{"1.3"}.
        @param protocols: What ALPN may select, preferred first; empty for
            no ALPN.
        """
        if not certificates:
            raise ValueError("at least one certificate is needed")
        self.certificates = tuple(certificates)
        self._protocols = tuple(protocols)
        self._contexts = [
            self._context(certificate, _MIN_VERSIONS[minVersion])
            for certificate in self.certificates
        ]
        self._contexts[0].set_tlsext_servername_callback(self._serverNameReceived)

    def _context(self, certificate: ServerCertificate, minimum: Any) -> SSL.Context:
        # pyOpenSSL takes cryptography's objects (and deprecates its own);
        # CertificateOptions only hands them on.
        options = CertificateOptions(
            privateKey=certificate.key,  # type: ignore[arg-type]
            certificate=certificate.certificate,  # type: ignore[arg-type]
            extraCertChain=list(certificate.chain),  # type: ignore[arg-type]
            raiseMinimumTo=minimum,
        )
        context: SSL.Context = options.getContext()
        # Twisted's own selection would add the wrapped factory's protocols
        # (twisted.web's Site offers h2); lbtwist selects only its own.
        context.set_alpn_select_callback(self._selectProtocol)
        context.set_info_callback(_handshakeInfo)
        return context

    def _selectProtocol(self, connection: SSL.Connection, offered: list[bytes]) -> Any:
        for protocol in self._protocols:
            if protocol in offered:
                return protocol
        return SSL.NO_OVERLAPPING_PROTOCOLS

    def _serverNameReceived(self, connection: SSL.Connection) -> None:
        raw = connection.get_servername()
        name = raw.decode("ascii", "replace") if raw else None
        index = chooseCertificate(self.certificates, name)
        if index:
            connection.set_context(self._contexts[index])

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        """
        @param tlsProtocol: The L{TLSMemoryBIOProtocol} of the connection.
        @return: A new server connection using the first certificate until
            the client's server name says otherwise.
        """
        connection = SSL.Connection(self._contexts[0], None)
        connection.set_app_data(tlsProtocol)
        return connection


def _handshakeInfo(connection: SSL.Connection, where: int, ret: int) -> None:
    """
    OpenSSL's info callback: tell the connection's protocol when its
    handshake is done.
    """
    if where & SSL.SSL_CB_HANDSHAKE_DONE:
        protocol = connection.get_app_data()
        done = getattr(protocol, "handshakeDone", None)
        if done is not None:
            done()


class _TimedHandshakeTLS(BufferingTLSTransport):
    """
    A server TLS connection closed if its handshake does not complete within
    the factory's C{handshakeTimeout}.
    """

    factory: TLSServerFactory
    _handshakeTimer: Any = None

    def makeConnection(self, transport: Any) -> None:
        factory = self.factory
        self._handshakeTimer = factory.clock.callLater(
            factory.handshakeTimeout, self._handshakeTimedOut
        )
        super().makeConnection(transport)

    def handshakeDone(self) -> None:
        """
        The handshake completed: stop the timer.
        """
        timer, self._handshakeTimer = self._handshakeTimer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _handshakeTimedOut(self) -> None:
        self._handshakeTimer = None
        peer = self.transport.getPeer() if self.transport is not None else None
        _log.info(
            "{frontend}: closing connection from {client}: no TLS handshake "
            "within {timeout} seconds",
            frontend=self.factory.frontendName,
            client=getattr(peer, "host", "-"),
            timeout=self.factory.handshakeTimeout,
        )
        self.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.handshakeDone()
        super().connectionLost(reason)


class TLSServerFactory(TLSMemoryBIOFactory):
    """
    Terminates TLS in front of a frontend's factory, with a handshake
    timeout.

    @ivar clock: Schedules the handshake timeouts.
    @ivar handshakeTimeout: Seconds a connection has to complete its
        handshake.
    @ivar frontendName: The frontend's name, for the log.
    """

    protocol = _TimedHandshakeTLS

    def __init__(
        self,
        creator: SNIServerCreator,
        wrappedFactory: IProtocolFactory,
        clock: IReactorTime,
        handshakeTimeout: float,
        frontendName: str = "-",
    ) -> None:
        super().__init__(creator, False, wrappedFactory, clock)
        self.clock = clock
        self.handshakeTimeout = handshakeTimeout
        self.frontendName = frontendName


def serverTLSFactory(
    reactor: IReactorTime,
    frontendName: str,
    tls: FrontendTLSConfig,
    factory: IProtocolFactory,
    protocols: Sequence[bytes],
) -> TLSServerFactory:
    """
    Wrap a frontend's factory so that its connections are TLS.

    @param reactor: The clock of the handshake timeouts.
    @param frontendName: The frontend's name, for the log.
    @param tls: The frontend's C{[frontend.tls]} settings.
    @param factory: The frontend's protocol factory.
    @param protocols: What ALPN may select (L{ALPN_HTTP} for HTTP
        frontends, nothing for TCP ones).
    @raise CertificateError: If a certificate file cannot be loaded (the
        configuration checked them already).
    """
    creator = SNIServerCreator(
        [loadServerCertificate(path) for path in tls.certificates],
        tls.min_version,
        protocols,
    )
    return TLSServerFactory(
        creator, factory, reactor, tls.handshake_timeout, frontendName
    )


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """
    The client side of a connection to a backend that is not verified
    (C{tls_verify = false}); the host name is still sent as SNI.
    """

    def __init__(self, context: SSL.Context, hostname: str) -> None:
        self._context = context
        self._serverName = (
            None
            if isIPAddress(hostname) or isIPv6Address(hostname)
            else hostname.encode("idna")
        )

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        if self._serverName is not None:
            connection.set_tlsext_host_name(self._serverName)
        return connection


class BackendTLS:
    """
    How a pool talks TLS to its C{https://} backends.

    @ivar caFile: The pool's C{ca_file}, or L{None} for the system trust
        store.
    @ivar verify: The pool's C{tls_verify}.
    """

    def __init__(self, caFile: str | None = None, verify: bool = True) -> None:
        self.caFile = caFile
        self.verify = verify
        self._creators: dict[str, IOpenSSLClientConnectionCreator] = {}
        self._trustRoot: Any = None
        self._unverified: SSL.Context | None = None

    @classmethod
    def forPool(cls, pool: PoolConfig) -> BackendTLS:
        """
        @param pool: A pool's configuration.
        @return: Its TLS settings.
        """
        return cls(pool.ca_file, pool.tls_verify)

    def creatorFor(self, hostname: str) -> IOpenSSLClientConnectionCreator:
        """
        @param hostname: The backend's host, as in its URL.
        @return: The client connection creator for it (cached).
        """
        creator = self._creators.get(hostname)
        if creator is None:
            creator = self._creators[hostname] = self._newCreator(hostname)
        return creator

    def _newCreator(self, hostname: str) -> IOpenSSLClientConnectionCreator:
        if not self.verify:
            if self._unverified is None:
                self._unverified = CertificateOptions(verify=False).getContext()
            return _Unverified(self._unverified, hostname)
        if self._trustRoot is None:
            if self.caFile is None:
                self._trustRoot = platformTrust()
            else:
                self._trustRoot = trustRootFromCertificates(
                    [Certificate.loadPEM(block) for block in _caBlocks(self.caFile)]
                )
        creator: IOpenSSLClientConnectionCreator = optionsForClientTLS(
            hostname, trustRoot=self._trustRoot
        )
        return creator

    def wrap(
        self, endpoint: IStreamClientEndpoint, hostname: str
    ) -> IStreamClientEndpoint:
        """
        @param endpoint: Connects to the backend over TCP.
        @param hostname: The backend's host, as in its URL.
        @return: An endpoint whose connections are TLS to that host.
        """
        wrapped: IStreamClientEndpoint = wrapClientTLS(
            self.creatorFor(hostname), endpoint
        )
        return wrapped


_HANDSHAKE_WORDS = ("certificate", "handshake", "alert", "version", "protocol")


@frozen
class TLSFailure:
    """
    A TLS failure of a connection to a backend, described.

    @ivar reason: For the log: C{"TLS: certificate verify failed"}.
    @ivar handshake: Whether it happened during the handshake (so nothing
        was sent to the backend).
    """

    reason: str
    handshake: bool


def describeTLSFailure(failure: Failure) -> TLSFailure | None:
    """
    Name a TLS failure for the log.

    @param failure: Why a connection to a backend failed or was lost.
    @return: A L{TLSFailure} (C{"TLS: certificate verify failed"}, C{"TLS:
        certificate does not match host name"}, ...), or L{None} if it is
        no TLS failure.
    """
    error = failure.value
    if isinstance(error, VerificationError):
        return TLSFailure("TLS: certificate does not match host name", True)
    if isinstance(error, SSL.Error):
        reasons = [
            str(entry[2])
            for entry in (error.args[0] if error.args else [])
            if isinstance(entry, tuple) and len(entry) == 3
        ]
        text = "; ".join(reasons) or str(error) or "handshake failed"
        handshake = any(word in text.lower() for word in _HANDSHAKE_WORDS)
        return TLSFailure(f"TLS: {text}", handshake)
    return None
