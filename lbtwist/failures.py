# -*- test-case-name: tests.test_failures -*-
"""
The one failure classifier: what went wrong on one attempt to reach a
backend, for HTTP requests, HTTP upgrades and TCP connections alike.

An L{UpstreamFailure} says the kind of failure (one of
L{lbtwist.stats.FAILURE_KINDS}), a short reason for logs, whether the
request may have reached the backend (which decides whether it may be
retried), and whether it was a timeout (504 rather than 502).
"""

from __future__ import annotations

from attrs import frozen
from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.python.failure import Failure

__all__ = ["UpstreamFailure", "classifyConnectFailure", "classifyLostConnection"]

_NOT_SENT = frozenset({"connect_refused", "connect_timeout", "connect_error"})
_TIMEOUTS = frozenset({"connect_timeout", "response_timeout", "read_timeout"})
_UNHEALTHY = frozenset(
    {"connect_refused", "connect_timeout", "connect_error", "response_timeout"}
)


@frozen
class UpstreamFailure(Exception):
    """
    One attempt on one backend failed.

    @ivar kind: One of L{lbtwist.stats.FAILURE_KINDS}: C{connect_refused},
        C{connect_timeout}, C{connect_error} (nothing was sent),
        C{response_timeout}, C{invalid_response}, C{connection_lost},
        C{truncated}; C{read_timeout} is counted as C{truncated}.
    @ivar reason: A short reason for logs, e.g. C{"connection refused"}.
    @ivar responseStarted: Whether any byte of the response had arrived.
    """

    kind: str
    reason: str
    responseStarted: bool = False

    @property
    def sent(self) -> bool:
        """
        Whether the request may have reached the backend.
        """
        return self.kind not in _NOT_SENT

    @property
    def timedOut(self) -> bool:
        """
        Whether this is a timeout (answered 504) rather than a connection or
        protocol failure (502).
        """
        return self.kind in _TIMEOUTS

    @property
    def countsForHealth(self) -> bool:
        """
        Whether this failure is evidence that the backend is unhealthy and
        counts toward C{passive_fall}: a connection failure or no response
        within C{response_timeout}.  An invalid response, a connection lost
        before or during the response and a read timeout show a backend that
        is up but misbehaving on one request; they are counted in the
        statistics only.
        """
        return self.kind in _UNHEALTHY

    @property
    def statsKind(self) -> str:
        """
        The kind as the statistics count it.
        """
        return "truncated" if self.kind == "read_timeout" else self.kind

    def __str__(self) -> str:
        return self.reason


def _tls(failure: Failure) -> UpstreamFailure | None:
    # Imported here: only configurations with TLS backends need OpenSSL.
    from lbtwist.tls import describeTLSFailure

    described = describeTLSFailure(failure)
    if described is None:
        return None
    # A failed handshake means the request never reached the backend.
    kind = "connect_error" if described.handshake else "invalid_response"
    return UpstreamFailure(kind, described.reason)


def classifyConnectFailure(failure: Failure) -> UpstreamFailure:
    """
    Say how a connection attempt to a backend failed.

    @param failure: The failure of an endpoint's C{connect} (possibly after
        a timeout cancelled it).
    @return: A failure of kind C{connect_refused}, C{connect_timeout} or
        C{connect_error}.
    """
    if isinstance(failure.value, UpstreamFailure):
        return failure.value
    if failure.check(ierror.ConnectionRefusedError):
        return UpstreamFailure("connect_refused", "connection refused")
    if failure.check(
        ierror.TimeoutError,
        ierror.TCPTimedOutError,
        ierror.ConnectingCancelledError,
        DeferredTimeoutError,
        CancelledError,
    ):
        return UpstreamFailure("connect_timeout", "connect timeout")
    tls = _tls(failure)
    if tls is not None:
        return UpstreamFailure("connect_error", tls.reason)
    return UpstreamFailure(
        "connect_error", f"cannot connect: {failure.getErrorMessage()}"
    )


def classifyLostConnection(reason: Failure, responseStarted: bool) -> UpstreamFailure:
    """
    Say what it means that a backend connection was lost while a request
    was on it.

    @param reason: Why the connection was lost.
    @param responseStarted: Whether any byte of the response had arrived.
    @return: C{connect_error} for a failed TLS handshake (nothing reached
        the backend), C{invalid_response} for another TLS failure,
        C{truncated} once the response head was relayed, else
        C{connection_lost}.
    """
    tls = _tls(reason)
    if tls is not None:
        return UpstreamFailure(tls.kind, tls.reason, responseStarted)
    if responseStarted:
        return UpstreamFailure("truncated", "connection lost in the response", True)
    return UpstreamFailure("connection_lost", "connection lost before the response")
