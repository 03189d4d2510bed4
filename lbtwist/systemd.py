# -*- test-case-name: tests.test_systemd -*-
"""
Tell systemd how lbtwist is doing: the C{sd_notify} datagram protocol.

systemd passes the path of a datagram socket in C{NOTIFY_SOCKET} (a
filesystem path, or an abstract socket when it starts with C{@}); a service
reports its state by sending newline-separated C{KEY=value} assignments to
it. L{SystemdNotifier} writes those datagrams: C{READY=1} once serving,
C{RELOADING=1} (with C{MONOTONIC_USEC=}) and C{READY=1} around a reload,
C{STOPPING=1} on shutdown, C{STATUS=} lines, and C{WATCHDOG=1} keep-alives.
Outside systemd (no C{NOTIFY_SOCKET}) every call does nothing, and a
datagram that cannot be sent is logged, never raised.

L{SystemdService} joins the service tree: it sends C{READY=1} once every
frontend listens, C{WATCHDOG=1} every half C{WATCHDOG_USEC} on an injected
clock, and C{STOPPING=1} when the tree stops.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import (
    Deferred,
    FirstError,
    gatherResults,
    maybeDeferred,
)
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = [
    "SystemdNotifier",
    "SystemdService",
    "whenListening",
]

_log = Logger()

_T = TypeVar("_T")


def _datagramSocket() -> socket.socket:
    """
    A non-blocking UNIX datagram socket: a full notification queue drops a
    message rather than blocking the reactor.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    return sock


def _monotonicMicroseconds() -> int:
    """
    C{CLOCK_MONOTONIC} in microseconds, the clock C{MONOTONIC_USEC=} is in.
    """
    return time.monotonic_ns() // 1000


def _address(value: str) -> str | None:
    """
    The socket address C{NOTIFY_SOCKET} names, or L{None} when it is unset
    or of a kind lbtwist does not speak (systemd's C{vsock:} form).
    """
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    if value:
        _log.warn(
            "ignoring NOTIFY_SOCKET={value!r}: not an absolute path or "
            "an abstract socket name",
            value=value,
        )
    return None


def _oneLine(text: str) -> str:
    """
    C{text} on one line: a newline would end the assignment early.
    """
    return " ".join(text.splitlines())


class SystemdNotifier:
    """
    Sends C{sd_notify} messages to the socket in C{NOTIFY_SOCKET}.

    Every method returns whether a datagram was sent; none of them raises.
    Without C{NOTIFY_SOCKET} they do nothing and return C{False}.

    @ivar address: The socket address messages go to (an abstract name
        begins with a NUL byte), or L{None} outside systemd.
    """

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        socketFactory: Callable[[], socket.socket] = _datagramSocket,
        monotonic: Callable[[], int] = _monotonicMicroseconds,
    ) -> None:
        """
        @param environ: The environment to read C{NOTIFY_SOCKET},
            C{WATCHDOG_USEC} and C{WATCHDOG_PID} from; L{os.environ} by
            default.
        @param socketFactory: Makes the C{AF_UNIX}/C{SOCK_DGRAM} socket for
            one message (closed after sending).
        @param monotonic: C{CLOCK_MONOTONIC} in microseconds, sent with
            C{RELOADING=1}.
        """
        self._environ = os.environ if environ is None else environ
        self._socketFactory = socketFactory
        self._monotonic = monotonic
        self.address = _address(self._environ.get("NOTIFY_SOCKET", ""))
        self._failing = False

    @property
    def enabled(self) -> bool:
        """
        Whether there is a socket to notify (lbtwist runs under systemd).
        """
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """
        Send one datagram of C{KEY=value} assignments, each followed by a
        newline. A failure is logged once until a datagram goes through again.

        @param assignments: For example C{"READY=1"}, C{"STATUS=serving"}.
        @return: Whether the datagram was sent.
        """
        if self.address is None:
            return False
        message = "".join(assignment + "\n" for assignment in assignments)
        try:
            sock = self._socketFactory()
            try:
                sock.sendto(message.encode("utf-8"), self.address)
            finally:
                sock.close()
        except OSError as e:
            if not self._failing:
                _log.warn(
                    "could not notify systemd at {address!r} ({datagram!r}): "
                    "{error}",
                    address=self.address.replace("\0", "@"),
                    datagram=message,
                    error=e,
                )
            self._failing = True
            return False
        if self._failing:
            _log.info("notifying systemd works again")
        self._failing = False
        return True

    def ready(self, status: str | None = None) -> bool:
        """
        C{READY=1}: startup (or a reload) is finished and lbtwist serves.

        @param status: An optional C{STATUS=} line sent with it.
        """
        return self.notify("READY=1", *self._status(status))

    def reloading(self, status: str | None = None) -> bool:
        """
        C{RELOADING=1} with C{MONOTONIC_USEC=}, as C{Type=notify-reload}
        requires; follow it with L{ready} once the reload is done (or has
        failed and the old configuration keeps serving).

        @param status: An optional C{STATUS=} line sent with it.
        """
        return self.notify(
            "RELOADING=1",
            "MONOTONIC_USEC=%d" % (self._monotonic(),),
            *self._status(status),
        )

    def stopping(self, status: str | None = None) -> bool:
        """
        C{STOPPING=1}: lbtwist is shutting down.

        @param status: An optional C{STATUS=} line sent with it.
        """
        return self.notify("STOPPING=1", *self._status(status))

    def status(self, text: str) -> bool:
        """
        C{STATUS=}: a line C{systemctl status} shows.

        @param text: The status; newlines become spaces.
        """
        return self.notify(*self._status(text))

    def watchdog(self) -> bool:
        """
        C{WATCHDOG=1}: lbtwist's event loop is alive.
        """
        return self.notify("WATCHDOG=1")

    def watchdogInterval(self) -> float | None:
        """
        How often to send C{WATCHDOG=1}: half of C{WATCHDOG_USEC}, in
        seconds, as C{sd_watchdog_enabled} advises.

        @return: Seconds, or L{None} when there is no watchdog for this
            process: no socket, C{WATCHDOG_USEC} unset, zero or invalid, or
            C{WATCHDOG_PID} set to another process.
        """
        if not self.enabled:
            return None
        usec = self._environ.get("WATCHDOG_USEC")
        if usec is None:
            return None
        pid = self._environ.get("WATCHDOG_PID")
        if pid is not None and pid != str(os.getpid()):
            return None
        try:
            microseconds = int(usec)
        except ValueError:
            microseconds = 0
        if microseconds <= 0:
            _log.warn("ignoring WATCHDOG_USEC={usec!r}", usec=usec)
            return None
        return microseconds / 2 / 1_000_000

    @staticmethod
    def _status(text: str | None) -> tuple[str, ...]:
        return () if text is None else ("STATUS=" + _oneLine(text),)


def _observe(deferred: Deferred[_T]) -> Deferred[_T]:
    """
    A new L{Deferred} that fires with C{deferred}'s result, leaving
    C{deferred}'s own callback chain (and its result) as it was.
    """
    observer: Deferred[_T] = Deferred()

    def passOn(result: Any) -> Any:
        if isinstance(result, Failure):
            observer.errback(result)
        else:
            observer.callback(result)
        return result

    deferred.addBoth(passOn)
    return observer


def whenListening(listeners: Iterable[Any]) -> Callable[[], Deferred[list[Any]]]:
    """
    For L{SystemdService}: a callable that waits for every listener (a
    L{lbtwist.listener.Listener}) to listen, and fires with their listening
    ports.

    @param listeners: The listening services, read when the callable is
        called (that is, when the service tree has started).
    """

    def waitForPorts() -> Deferred[list[Any]]:
        return gatherResults(
            [listener.whenListening() for listener in listeners],
            consumeErrors=True,
        )

    return waitForPorts


Listening = Callable[[], Deferred[Any] | Iterable[Deferred[Any]]]
"""
What L{SystemdService} waits for: a zero-argument callable returning a
L{Deferred} or some L{Deferred}s.
"""


def _status(result: Any) -> str:
    if isinstance(result, list):
        return "ready, %d listening sockets" % (len(result),)
    return "ready"


class SystemdService(Service):
    """
    Reports lbtwist's life cycle to systemd.

    On start it waits for every frontend to listen, then sends C{READY=1}
    with a C{STATUS=} line; while running it sends C{WATCHDOG=1} every half
    C{WATCHDOG_USEC} (when systemd set a watchdog for this process); on stop
    it sends C{STOPPING=1}. Add it to the tree after the listeners, so that
    it starts after them and stops before them.

    @ivar notifier: Sends the messages; the reload code may use it too, or
        L{reload}.
    """

    name = "systemd"

    def __init__(
        self,
        clock: IReactorTime,
        notifier: SystemdNotifier,
        listening: Listening | Iterable[Deferred[Any]],
        describe: Callable[[Any], str] = _status,
    ) -> None:
        """
        @param clock: Schedules the watchdog keep-alives.
        @param notifier: Sends the messages.
        @param listening: A callable called on start, returning a
            L{Deferred} (or some L{Deferred}s) that fires when every frontend
            listens, such as L{whenListening}'s; or the L{Deferred}s
            themselves.
        @param describe: Turns what C{listening} fired with (a list for
            several L{Deferred}s) into the C{STATUS=} sent with C{READY=1}.
        """
        self.clock = clock
        self.notifier = notifier
        self._listening = listening
        self._describe = describe
        self._watchdog: LoopingCall | None = None

    def _waitForListeners(self) -> Deferred[Any]:
        listening = self._listening
        waiting = listening() if callable(listening) else listening
        if isinstance(waiting, Deferred):
            return waiting
        return gatherResults(
            [_observe(deferred) for deferred in waiting], consumeErrors=True
        )

    def startService(self) -> None:
        """
        Start the watchdog and send C{READY=1} once every frontend listens.
        """
        super().startService()
        interval = self.notifier.watchdogInterval()
        if interval is not None:
            loop = self._watchdog = LoopingCall(self.notifier.watchdog)
            loop.clock = self.clock
            loop.start(interval, now=False)
        if not self.notifier.enabled:
            return
        maybeDeferred(self._waitForListeners).addCallbacks(
            self._ready, self._notListening
        )

    def _ready(self, result: Any) -> None:
        if self.running:
            self.notifier.ready(self._describe(result))

    def _notListening(self, reason: Failure) -> None:
        if isinstance(reason.value, FirstError):
            reason = reason.value.subFailure
        _log.failure("not telling systemd READY=1: a frontend is not listening", reason)
        if self.running:
            self.notifier.status(
                "a frontend is not listening: %s" % (reason.getErrorMessage(),)
            )

    def stopService(self) -> None:
        """
        Stop the watchdog and send C{STOPPING=1}.
        """
        super().stopService()
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        self._watchdog = None
        self.notifier.stopping("stopping")

    def reload(self, apply: Callable[[], Any]) -> Deferred[Any]:
        """
        Run a reload between C{RELOADING=1} and C{READY=1}. systemd keeps
        the unit "reloading" until C{READY=1}, so it is sent whatever the
        outcome: a failed reload leaves the old configuration serving.

        @param apply: Does the reload; may return a L{Deferred}.
        @return: A L{Deferred} with C{apply}'s result or failure.
        """
        self.notifier.reloading("reloading the configuration")

        def done(result: Any) -> Any:
            if isinstance(result, Failure):
                self.notifier.ready(
                    "reload failed: %s"
                    % (result.getErrorMessage(),)
                )
            else:
                self.notifier.ready("configuration reloaded")
            return result

        return maybeDeferred(apply).addBoth(done)
