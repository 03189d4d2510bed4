# -*- test-case-name: tests.test_listener -*-
"""
A service that listens on one endpoint, lbtwist's own in place of
Twisted's C{StreamServerEndpointService}: it does the same job with what
lbtwist needs from it, through public API only.

  - A bind failure that the endpoint reports at once (every TCP, SSL and
    UNIX endpoint does) is raised from L{Listener.privilegedStartService}
    as a one-line L{ListenError}, so that twistd can exit with it instead
    of logging a traceback and running without the port.
  - The listening port is known (L{Listener.port}), and
    L{Listener.whenListening} gives a L{Deferred} that fires with it, for
    systemd's readiness notification.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["StartupError", "ListenError", "listenFailure", "Listener"]

_log = Logger()


class StartupError(Exception):
    """
    lbtwist cannot start; C{str()} of it is one line naming what and why.
    """


class ListenError(StartupError):
    """
    A listener cannot listen; C{str()} of it is one line naming the
    listener, the endpoint and the cause, e.g. C{frontend "web": cannot
    listen on tcp:8080: address already in use}.
    """


def listenFailure(error: BaseException) -> str:
    """
    Why listening (or opening a file) failed, in a few words: C{"address
    already in use"}, C{"permission denied"}, or the error's own text.

    @param error: The exception.
    """
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, OSError):
        cause = getattr(cause, "socketError", None) or cause.__cause__
    if isinstance(cause, OSError) and cause.strerror:
        reason = cause.strerror
        return reason[:1].lower() + reason[1:]
    return str(error) or type(error).__name__


class Listener(Service):
    """
    Listens on one server endpoint with one protocol factory while the
    service runs.

    @ivar endpoint: The server endpoint.
    @ivar factory: The protocol factory.
    @ivar description: The endpoint's description, as configured.
    @ivar label: How errors name the listener, e.g. C{'frontend "web"'}.
    @ivar port: The listening port, once bound and until stopped.
    """

    def __init__(self, endpoint: Any, factory: Any, description: str, label: str) -> None:
        """
        @param endpoint: See L{Listener.endpoint}.
        @param factory: See L{Listener.factory}.
        @param description: See L{Listener.description}.
        @param label: See L{Listener.label}.
        """
        self.endpoint = endpoint
        self.factory = factory
        self.description = description
        self.label = label
        self.port: IListeningPort | None = None
        self._asked = False
        self._listening: Deferred[IListeningPort] | None = None
        self._failure: Failure | None = None
        self._waiters: list[Deferred[IListeningPort]] = []

    def privilegedStartService(self) -> None:
        """
        Start listening (before twistd drops privileges).

        @raise ListenError: If the endpoint fails to listen at once.
        """
        super().privilegedStartService()
        if self._asked:
            return
        self._asked = True
        self._listening = listening = self.endpoint.listen(self.factory)
        listening.addCallbacks(self._bound, self._failed)
        if self._failure is not None:
            error = self._failure.value
            assert error is not None
            raise ListenError(
                f"{self.label}: cannot listen on {self.description}: "
                f"{listenFailure(error)}"
            ) from error

    def startService(self) -> None:
        """
        Start listening, if L{privilegedStartService} has not.
        """
        super().startService()
        self.privilegedStartService()

    def _bound(self, port: IListeningPort) -> None:
        self._listening = None
        self.port = port
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(port)

    def _failed(self, failure: Failure) -> None:
        self._listening = None
        self._failure = failure
        waiters, self._waiters = self._waiters, []
        if not waiters and self.running:
            # Reported later than at once (no endpoint of lbtwist does).
            _log.failure(
                "{label}: cannot listen on {description}",
                failure,
                label=self.label,
                description=self.description,
            )
        for waiter in waiters:
            waiter.errback(failure)

    def whenListening(self) -> Deferred[IListeningPort]:
        """
        @return: A L{Deferred} that fires with the listening port once the
            endpoint listens, or fails with why it could not.
        """
        if self.port is not None:
            return succeed(self.port)
        if self._failure is not None:
            return fail(self._failure)
        waiter: Deferred[IListeningPort] = Deferred()
        self._waiters.append(waiter)
        return waiter

    def stopService(self) -> Deferred[None]:
        """
        Stop listening, or give up listening if it has not happened yet.
        """
        super().stopService()
        self._asked = False
        port, self.port = self.port, None
        listening, self._listening = self._listening, None
        if listening is not None:
            listening.cancel()
        self._failure = None
        if port is None:
            return succeed(None)
        stopped = port.stopListening()
        return succeed(None) if stopped is None else stopped
