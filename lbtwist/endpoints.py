# -*- test-case-name: tests.test_endpoints -*-
"""
Client endpoints that reach backends: IP literals are connected to
directly, names are resolved by L{HostnameEndpoint}; C{https} backends get
verified TLS (with SNI) on top.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from attrs import field, frozen
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
)
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from lbtwist.config import BackendConfig
from lbtwist.tls import BackendTLS

if TYPE_CHECKING:
    # Only for annotations: twisted.web.client is large, and only HTTP
    # health checks need it.
    from twisted.web.client import URI

__all__ = ["BackendEndpoints", "backendEndpoint"]


@implementer(IAgentEndpointFactory)
@frozen
class BackendEndpoints:
    """
    Builds the endpoints of backend URLs (also an L{IAgentEndpointFactory},
    for the health checks' agent).

    @ivar reactor: The reactor.
    @ivar connectTimeout: Seconds allowed to establish a connection.
    @ivar tls: How to talk TLS to C{https} URLs; by default verified against
        the system trust store.
    """

    reactor: Any
    connectTimeout: float
    tls: BackendTLS = field(factory=BackendTLS, eq=False)

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        """
        @param uri: The backend URI.
        @return: An endpoint connecting to its host and port, over TLS
            (verified, with SNI) for an C{https} URI.
        """
        endpoint = self._tcpEndpoint(uri.host.decode("ascii"), uri.port)
        if uri.scheme == b"https":
            return self.tls.wrap(endpoint, uri.host.decode("ascii"))
        return endpoint

    def forBackend(self, backend: BackendConfig) -> IStreamClientEndpoint:
        """
        @param backend: A backend's configuration (C{http}, C{https} or
            C{tcp}).
        @return: An endpoint connecting to it.
        """
        endpoint = self._tcpEndpoint(backend.host, backend.port)
        if backend.scheme == "https":
            return self.tls.wrap(endpoint, backend.host)
        return endpoint

    def _tcpEndpoint(self, host: str, port: int) -> IStreamClientEndpoint:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return HostnameEndpoint(
                self.reactor, host.encode("idna"), port, timeout=self.connectTimeout
            )
        if address.version == 6:
            return TCP6ClientEndpoint(
                self.reactor, host, port, timeout=self.connectTimeout
            )
        return TCP4ClientEndpoint(self.reactor, host, port, timeout=self.connectTimeout)


def backendEndpoint(
    reactor: Any, backend: BackendConfig, timeout: float, tls: BackendTLS | None = None
) -> IStreamClientEndpoint:
    """
    The endpoint that connects to a backend.

    @param reactor: The reactor.
    @param backend: The backend's configuration.
    @param timeout: Seconds allowed to establish the connection.
    @param tls: TLS settings for an C{https} backend (default: verified
        against the system trust store).
    @return: The endpoint.
    """
    endpoints = BackendEndpoints(reactor, timeout) if tls is None else BackendEndpoints(
        reactor, timeout, tls
    )
    return endpoints.forBackend(backend)
