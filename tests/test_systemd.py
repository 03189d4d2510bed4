"""
Tests for L{lbtwist.systemd}: the C{sd_notify} datagrams, received on a real
UNIX datagram socket standing in for systemd's C{NOTIFY_SOCKET}, with time on
a L{Clock}; and the unit files and example configuration in
C{contrib/systemd}.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from lbtwist.config import loadConfig
from lbtwist.listener import Listener
from lbtwist.systemd import SystemdNotifier, SystemdService, whenListening

CONTRIB = Path(__file__).resolve().parent.parent / "contrib" / "systemd"

MONOTONIC = 123456789


class _FakeSystemd:
    """
    A UNIX datagram socket bound where C{NOTIFY_SOCKET} points, collecting
    what arrives.

    @ivar environ: An environment naming the socket.
    """

    def __init__(self, case: SynchronousTestCase, abstract: bool = False) -> None:
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        case.addCleanup(self._socket.close)
        if abstract:
            name = "lbtwist-test-" + uuid.uuid4().hex
            self._socket.bind("\0" + name)
            notifySocket = "@" + name
        else:
            # A short directory: socket paths are limited to ~100 bytes.
            directory = tempfile.mkdtemp(prefix="lbtwist-sd-")
            case.addCleanup(shutil.rmtree, directory)
            notifySocket = os.path.join(directory, "notify")
            self._socket.bind(notifySocket)
        self._socket.setblocking(False)
        self.environ = {"NOTIFY_SOCKET": notifySocket}

    def received(self) -> list[bytes]:
        """
        The datagrams that arrived since the last call.
        """
        datagrams = []
        while True:
            try:
                datagrams.append(self._socket.recv(4096))
            except BlockingIOError:
                return datagrams

    def notifier(self, **environ: str) -> SystemdNotifier:
        """
        A notifier sending here, with C{environ} added to its environment.
        """
        return SystemdNotifier({**self.environ, **environ}, monotonic=lambda: MONOTONIC)


class _FailingSocket:
    """
    A socket whose every send fails.
    """

    closed = False

    def sendto(self, data: bytes, address: str) -> int:
        raise OSError(11, "Resource temporarily unavailable")

    def close(self) -> None:
        self.closed = True


def _events(case: SynchronousTestCase) -> EventLoggingObserver:
    """
    Collect the log events emitted until the end of the test.
    """
    observer = EventLoggingObserver()
    globalLogPublisher.addObserver(observer)
    case.addCleanup(globalLogPublisher.removeObserver, observer)
    return observer


class SystemdNotifierTests(SynchronousTestCase):
    """
    L{SystemdNotifier} sends the sd_notify datagrams.
    """

    def setUp(self) -> None:
        self.systemd = _FakeSystemd(self)
        self.notifier = self.systemd.notifier()

    def test_ready(self) -> None:
        """
        C{ready} sends C{READY=1} and a C{STATUS=} line in one datagram.
        """
        self.assertTrue(self.notifier.ready("serving"))
        self.assertEqual(self.systemd.received(), [b"READY=1\nSTATUS=serving\n"])

    def test_readyWithoutStatus(self) -> None:
        """
        C{ready} without a status sends C{READY=1} alone.
        """
        self.notifier.ready()
        self.assertEqual(self.systemd.received(), [b"READY=1\n"])

    def test_abstractSocket(self) -> None:
        """
        A C{NOTIFY_SOCKET} starting with C{@} names a socket in the abstract
        namespace.
        """
        if not sys.platform.startswith("linux"):
            raise self.skipTest("abstract UNIX sockets are Linux-only")
        systemd = _FakeSystemd(self, abstract=True)
        self.assertTrue(systemd.notifier().ready("serving"))
        self.assertEqual(systemd.received(), [b"READY=1\nSTATUS=serving\n"])

    def test_status(self) -> None:
        """
        C{status} sends one C{STATUS=} line; a newline in the text would end
        the assignment, so it becomes a space.
        """
        self.notifier.status("2 of 3 backends up")
        self.notifier.status("line one\nline two")
        self.assertEqual(
            self.systemd.received(),
            [b"STATUS=2 of 3 backends up\n", b"STATUS=line one line two\n"],
        )

    def test_statusIsUTF8(self) -> None:
        """
        Status text is sent as UTF-8.
        """
        self.notifier.status("café")
        self.assertEqual(self.systemd.received(), ["STATUS=café\n".encode()])

    def test_stopping(self) -> None:
        """
        C{stopping} sends C{STOPPING=1}.
        """
        self.notifier.stopping()
        self.assertEqual(self.systemd.received(), [b"STOPPING=1\n"])

    def test_reloading(self) -> None:
        """
        C{reloading} sends C{RELOADING=1} with C{MONOTONIC_USEC=}, as
        C{Type=notify-reload} requires.
        """
        self.notifier.reloading("reloading")
        self.assertEqual(
            self.systemd.received(),
            [b"RELOADING=1\nMONOTONIC_USEC=123456789\nSTATUS=reloading\n"],
        )

    def test_monotonicByDefault(self) -> None:
        """
        By default C{MONOTONIC_USEC=} is C{CLOCK_MONOTONIC} in microseconds.
        """
        import time

        before = time.monotonic_ns() // 1000
        SystemdNotifier(self.systemd.environ).reloading()
        after = time.monotonic_ns() // 1000
        [datagram] = self.systemd.received()
        lines = datagram.decode().splitlines()
        self.assertEqual(lines[0], "RELOADING=1")
        key, value = lines[1].split("=")
        self.assertEqual(key, "MONOTONIC_USEC")
        self.assertTrue(before <= int(value) <= after)

    def test_watchdog(self) -> None:
        """
        C{watchdog} sends C{WATCHDOG=1}.
        """
        self.notifier.watchdog()
        self.assertEqual(self.systemd.received(), [b"WATCHDOG=1\n"])

    def test_noNotifySocket(self) -> None:
        """
        Without C{NOTIFY_SOCKET} nothing is sent, no socket is even made,
        and nothing is logged.
        """
        events = _events(self)
        made: list[object] = []

        def factory() -> socket.socket:
            made.append(None)
            raise AssertionError("no socket expected")

        notifier = SystemdNotifier({}, socketFactory=factory)
        self.assertFalse(notifier.enabled)
        self.assertFalse(notifier.ready("serving"))
        self.assertFalse(notifier.stopping())
        self.assertFalse(notifier.reloading())
        self.assertFalse(notifier.status("x"))
        self.assertFalse(notifier.watchdog())
        self.assertEqual(made, [])
        self.assertEqual(len(events), 0)

    def test_unsupportedAddress(self) -> None:
        """
        A C{NOTIFY_SOCKET} that is neither an absolute path nor C{@name}
        (systemd's C{vsock:} form, a relative path) is logged and ignored.
        """
        events = _events(self)
        notifier = SystemdNotifier({"NOTIFY_SOCKET": "vsock:2:1234"})
        self.assertFalse(notifier.enabled)
        self.assertFalse(notifier.ready())
        self.assertEqual(len(events), 1)
        self.assertIn("vsock:2:1234", formatEvent(events[0]))

    def test_nobodyListening(self) -> None:
        """
        A socket path with nobody bound to it: the send fails, is logged, and
        does not raise.
        """
        events = _events(self)
        directory = tempfile.mkdtemp(prefix="lbtwist-sd-")
        self.addCleanup(shutil.rmtree, directory)
        notifier = SystemdNotifier({"NOTIFY_SOCKET": os.path.join(directory, "gone")})
        self.assertTrue(notifier.enabled)
        self.assertFalse(notifier.ready("serving"))
        self.assertEqual(len(events), 1)
        self.assertIn("READY=1", formatEvent(events[0]))

    def test_sendFails(self) -> None:
        """
        An error from the socket is logged, not raised, and the socket is
        closed.
        """
        events = _events(self)
        sockets: list[_FailingSocket] = []

        def factory() -> Any:
            sockets.append(_FailingSocket())
            return sockets[-1]

        notifier = SystemdNotifier(self.systemd.environ, socketFactory=factory)
        self.assertFalse(notifier.watchdog())
        self.assertEqual(len(events), 1)
        self.assertTrue(sockets[0].closed)

    def test_socketFactoryFails(self) -> None:
        """
        Failing to make the socket at all is logged, not raised.
        """
        events = _events(self)

        def factory() -> socket.socket:
            raise OSError(24, "Too many open files")

        notifier = SystemdNotifier(self.systemd.environ, socketFactory=factory)
        self.assertFalse(notifier.ready())
        self.assertEqual(len(events), 1)

    def test_repeatedFailureLoggedOnce(self) -> None:
        """
        A failure is logged once, not at every watchdog tick, until a send
        succeeds again.
        """
        events = _events(self)
        failing = [True]

        def factory() -> Any:
            if failing[0]:
                return _FailingSocket()
            return socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

        notifier = SystemdNotifier(self.systemd.environ, socketFactory=factory)
        notifier.watchdog()
        notifier.watchdog()
        self.assertEqual(len(events), 1)
        failing[0] = False
        self.assertTrue(notifier.watchdog())
        self.assertEqual(len(events), 2)
        failing[0] = True
        notifier.watchdog()
        self.assertEqual(len(events), 3)


class WatchdogIntervalTests(SynchronousTestCase):
    """
    L{SystemdNotifier.watchdogInterval} reads C{WATCHDOG_USEC} and
    C{WATCHDOG_PID}.
    """

    def interval(self, **environ: str) -> float | None:
        return SystemdNotifier(
            {"NOTIFY_SOCKET": "/run/systemd/notify", **environ}
        ).watchdogInterval()

    def test_halfOfWatchdogUsec(self) -> None:
        """
        The interval is half of C{WATCHDOG_USEC}, in seconds.
        """
        self.assertEqual(self.interval(WATCHDOG_USEC="30000000"), 15.0)

    def test_ownPid(self) -> None:
        """
        A C{WATCHDOG_PID} equal to this process's id enables the watchdog.
        """
        self.assertEqual(
            self.interval(WATCHDOG_USEC="2000000", WATCHDOG_PID=str(os.getpid())),
            1.0,
        )

    def test_otherPid(self) -> None:
        """
        A C{WATCHDOG_PID} naming another process disables it.
        """
        self.assertIsNone(
            self.interval(WATCHDOG_USEC="2000000", WATCHDOG_PID=str(os.getpid() + 1))
        )

    def test_unset(self) -> None:
        """
        Without C{WATCHDOG_USEC} there is no watchdog.
        """
        self.assertIsNone(self.interval())

    def test_invalid(self) -> None:
        """
        A zero, negative or unparsable C{WATCHDOG_USEC} is logged and
        ignored.
        """
        events = _events(self)
        for value in ("0", "-5", "soon", ""):
            self.assertIsNone(self.interval(WATCHDOG_USEC=value))
        self.assertEqual(len(events), 4)

    def test_noNotifySocket(self) -> None:
        """
        Without C{NOTIFY_SOCKET} there is nobody to ping.
        """
        self.assertIsNone(
            SystemdNotifier({"WATCHDOG_USEC": "2000000"}).watchdogInterval()
        )


class _Endpoint:
    """
    A server endpoint whose C{listen} returns a L{Deferred} the test fires.
    """

    def __init__(self) -> None:
        self.listening: Deferred[Any] = Deferred()

    def listen(self, factory: object) -> Deferred[Any]:
        return self.listening


class _Port:
    """
    A listening port that records being stopped.
    """

    stopped = False

    def stopListening(self) -> None:
        self.stopped = True


class SystemdServiceTests(SynchronousTestCase):
    """
    L{SystemdService} reports the service tree's life cycle.
    """

    def setUp(self) -> None:
        self.systemd = _FakeSystemd(self)
        self.clock = Clock()

    def service(self, listening: Any, **environ: str) -> SystemdService:
        return SystemdService(self.clock, self.systemd.notifier(**environ), listening)

    def test_readyOnceEveryListenerListens(self) -> None:
        """
        C{READY=1} is sent when the last listener listens, and not before.
        """
        first: Deferred[Any] = Deferred()
        second: Deferred[Any] = Deferred()
        service = self.service([first, second])
        service.startService()
        self.assertEqual(self.systemd.received(), [])
        first.callback("port 1")
        self.assertEqual(self.systemd.received(), [])
        second.callback("port 2")
        self.assertEqual(
            self.systemd.received(),
            [b"READY=1\nSTATUS=ready, 2 listening sockets\n"],
        )

    def test_listenersKeepTheirResults(self) -> None:
        """
        Waiting for a listener's L{Deferred} leaves its result to the
        callbacks after it.
        """
        listening: Deferred[Any] = Deferred()
        self.service([listening]).startService()
        listening.callback("port")
        self.assertEqual(self.successResultOf(listening), "port")

    def test_callable(self) -> None:
        """
        A callable is called when the service starts (not before) and its
        L{Deferred} is waited for; C{describe} makes the status from the
        result.
        """
        listening: Deferred[Any] = Deferred()
        calls: list[None] = []

        def waitForListeners() -> Deferred[Any]:
            calls.append(None)
            return listening

        service = SystemdService(
            self.clock,
            self.systemd.notifier(),
            waitForListeners,
            describe=lambda result: "listening on " + result,
        )
        self.assertEqual(calls, [])
        service.startService()
        self.assertEqual(calls, [None])
        self.assertEqual(self.systemd.received(), [])
        listening.callback("0.0.0.0:80")
        self.assertEqual(
            self.systemd.received(), [b"READY=1\nSTATUS=listening on 0.0.0.0:80\n"]
        )

    def test_callableReturningDeferreds(self) -> None:
        """
        The callable may return several L{Deferred}s, all waited for.
        """
        first: Deferred[Any] = Deferred()
        second: Deferred[Any] = Deferred()
        self.service(lambda: [first, second]).startService()
        first.callback(1)
        self.assertEqual(self.systemd.received(), [])
        second.callback(2)
        self.assertEqual(len(self.systemd.received()), 1)

    def test_noListeners(self) -> None:
        """
        With nothing to wait for, C{READY=1} is sent at once.
        """
        self.service([]).startService()
        self.assertEqual(
            self.systemd.received(),
            [b"READY=1\nSTATUS=ready, 0 listening sockets\n"],
        )

    def test_listenFailure(self) -> None:
        """
        When a listener fails, C{READY=1} is never sent: the status says why
        and the failure is logged.
        """
        events = _events(self)
        listening: Deferred[Any] = Deferred()
        self.service([succeed(None), listening]).startService()
        listening.errback(CannotListenError("0.0.0.0", 80, OSError("in use")))
        self.assertEqual(
            self.systemd.received(),
            [
                b"STATUS=a frontend is not listening: "
                b"Couldn't listen on 0.0.0.0:80: in use.\n"
            ],
        )
        self.assertEqual(len(self.flushLoggedErrors(CannotListenError)), 1)
        self.assertEqual(len(events), 1)
        # The listener's own chain still has its failure.
        self.failureResultOf(listening, CannotListenError)

    def test_listenFailureFromCallable(self) -> None:
        """
        A callable whose L{Deferred} fails also means no C{READY=1}.
        """
        self.service(
            lambda: fail(CannotListenError("", 443, OSError("no")))
        ).startService()
        [datagram] = self.systemd.received()
        self.assertTrue(datagram.startswith(b"STATUS=a frontend is not listening"))
        self.assertEqual(len(self.flushLoggedErrors(CannotListenError)), 1)

    def test_stopping(self) -> None:
        """
        Stopping the service sends C{STOPPING=1}.
        """
        service = self.service([])
        service.startService()
        self.systemd.received()
        service.stopService()
        self.assertEqual(self.systemd.received(), [b"STOPPING=1\nSTATUS=stopping\n"])

    def test_stoppedBeforeListening(self) -> None:
        """
        Listeners that listen only after the service stopped do not make it
        send C{READY=1}.
        """
        listening: Deferred[Any] = Deferred()
        service = self.service([listening])
        service.startService()
        service.stopService()
        listening.callback("port")
        self.assertEqual(self.systemd.received(), [b"STOPPING=1\nSTATUS=stopping\n"])

    def test_watchdog(self) -> None:
        """
        With C{WATCHDOG_USEC}, C{WATCHDOG=1} is sent every half of it.
        """
        self.service([], WATCHDOG_USEC="30000000").startService()
        self.systemd.received()
        self.clock.advance(14.9)
        self.assertEqual(self.systemd.received(), [])
        self.clock.advance(0.1)
        self.assertEqual(self.systemd.received(), [b"WATCHDOG=1\n"])
        self.clock.advance(15)
        self.assertEqual(self.systemd.received(), [b"WATCHDOG=1\n"])
        self.clock.pump([15] * 3)
        self.assertEqual(self.systemd.received(), [b"WATCHDOG=1\n"] * 3)

    def test_watchdogBeforeReady(self) -> None:
        """
        The watchdog runs from the start, even while listeners are pending.
        """
        self.service([Deferred()], WATCHDOG_USEC="2000000").startService()
        self.clock.advance(1)
        self.assertEqual(self.systemd.received(), [b"WATCHDOG=1\n"])

    def test_watchdogOwnPid(self) -> None:
        """
        A C{WATCHDOG_PID} naming this process keeps the watchdog on.
        """
        self.service(
            [], WATCHDOG_USEC="2000000", WATCHDOG_PID=str(os.getpid())
        ).startService()
        self.systemd.received()
        self.clock.advance(1)
        self.assertEqual(self.systemd.received(), [b"WATCHDOG=1\n"])

    def test_watchdogOtherPid(self) -> None:
        """
        A C{WATCHDOG_PID} naming another process means no C{WATCHDOG=1}.
        """
        self.service(
            [], WATCHDOG_USEC="2000000", WATCHDOG_PID=str(os.getpid() + 1)
        ).startService()
        self.systemd.received()
        self.clock.advance(10)
        self.assertEqual(self.systemd.received(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_noWatchdogUsec(self) -> None:
        """
        Without C{WATCHDOG_USEC} nothing is scheduled.
        """
        self.service([]).startService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_watchdogStopsWithService(self) -> None:
        """
        Stopping the service stops the watchdog.
        """
        service = self.service([], WATCHDOG_USEC="2000000")
        service.startService()
        service.stopService()
        self.systemd.received()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10)
        self.assertEqual(self.systemd.received(), [])

    def test_outsideSystemd(self) -> None:
        """
        Without C{NOTIFY_SOCKET} the service starts and stops, schedules
        nothing and does not even ask whether the listeners listen.
        """
        calls: list[None] = []

        def waitForListeners() -> Deferred[None]:
            calls.append(None)
            return Deferred()

        service = SystemdService(
            self.clock, SystemdNotifier({"WATCHDOG_USEC": "2000000"}), waitForListeners
        )
        service.startService()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        service.stopService()
        self.assertEqual(calls, [])

    def test_reload(self) -> None:
        """
        C{reload} sends C{RELOADING=1} before the reload and C{READY=1} once
        it is done, and passes its result on.
        """
        service = self.service([])
        done: Deferred[str] = Deferred()
        result = service.reload(lambda: done)
        self.assertEqual(
            self.systemd.received(),
            [
                b"RELOADING=1\nMONOTONIC_USEC=123456789\n"
                b"STATUS=reloading the configuration\n"
            ],
        )
        done.callback("new config")
        self.assertEqual(
            self.systemd.received(), [b"READY=1\nSTATUS=configuration reloaded\n"]
        )
        self.assertEqual(self.successResultOf(result), "new config")

    def test_reloadFailure(self) -> None:
        """
        A failed reload still sends C{READY=1} (systemd would otherwise stay
        "reloading"), with a status saying so, and passes the failure on.
        """
        service = self.service([])

        def apply() -> None:
            raise ValueError('pool "app": bad weight')

        result = service.reload(apply)
        received = self.systemd.received()
        self.assertEqual(len(received), 2)
        self.assertEqual(
            received[1],
            b"READY=1\nSTATUS=reload failed: "
            b'pool "app": bad weight\n',
        )
        self.failureResultOf(result, ValueError)


class WhenListeningTests(SynchronousTestCase):
    """
    L{whenListening} waits for L{Listener}s in a tree.
    """

    def setUp(self) -> None:
        self.systemd = _FakeSystemd(self)

    def test_serviceTree(self) -> None:
        """
        In a tree, C{READY=1} follows the last listener's port, and the
        listeners still stop their ports afterwards.
        """
        endpoints = [_Endpoint(), _Endpoint()]
        root = MultiService()
        listeners = [
            Listener(endpoint, Factory(), "tcp:0", f"listener {index}")
            for index, endpoint in enumerate(endpoints)
        ]
        for listener in listeners:
            listener.setServiceParent(root)
        SystemdService(
            Clock(),
            self.systemd.notifier(),
            whenListening(listeners),
            describe=lambda ports: "%d ports" % (len(ports),),
        ).setServiceParent(root)
        root.privilegedStartService()
        root.startService()
        ports = [_Port(), _Port()]
        endpoints[0].listening.callback(ports[0])
        self.assertEqual(self.systemd.received(), [])
        endpoints[1].listening.callback(ports[1])
        self.assertEqual(self.systemd.received(), [b"READY=1\nSTATUS=2 ports\n"])
        root.stopService()
        self.assertEqual(self.systemd.received(), [b"STOPPING=1\nSTATUS=stopping\n"])
        self.assertTrue(all(port.stopped for port in ports))

    def test_calledLate(self) -> None:
        """
        The listeners are looked at when the callable is called, after they
        started: before, they have no L{Deferred} yet.
        """
        endpoint = _Endpoint()
        listener = Listener(endpoint, Factory(), "tcp:0", "listener")
        waitForPorts = whenListening([listener])
        listener.privilegedStartService()
        waiting = waitForPorts()
        self.assertNoResult(waiting)
        port = _Port()
        endpoint.listening.callback(port)
        self.assertEqual(self.successResultOf(waiting), [port])


class ContribTests(SynchronousTestCase):
    """
    The files in C{contrib/systemd} agree with each other and with lbtwist.
    """

    def directives(self, name: str) -> dict[str, list[str]]:
        """
        The C{Key=value} lines of a unit file, every value of each key.
        """
        found: dict[str, list[str]] = {}
        for line in (CONTRIB / name).read_text().splitlines():
            line = line.strip()
            if line and not line.startswith(("#", ";", "[")):
                key, value = line.split("=", 1)
                found.setdefault(key, []).append(value)
        return found

    def test_exampleConfig(self) -> None:
        """
        The example configuration is valid; its frontends listen on the
        socket unit's descriptors in order, and its state file is in the
        service's C{StateDirectory}.
        """
        config = loadConfig(str(CONTRIB / "lbtwist.toml"))
        listen = [d for frontend in config.frontends for d in frontend.listen]
        sockets = self.directives("lbtwist.socket")["ListenStream"]
        self.assertEqual(
            listen,
            ["systemd:domain=INET:index=%d" % (i,) for i in range(len(sockets))],
        )
        self.assertTrue(all(s.startswith("0.0.0.0:") for s in sockets))
        service = self.directives("lbtwist.service")
        [stateDirectory] = service["StateDirectory"]
        self.assertEqual(
            config.settings.state_file, "/var/lib/%s/state.json" % (stateDirectory,)
        )

    def test_serviceUnit(self) -> None:
        """
        The service is C{Type=notify} with a watchdog, accepts notifications
        from twistd itself (kept in the foreground, with no pid file), reloads
        with C{SIGHUP}, and is hardened.
        """
        service = self.directives("lbtwist.service")
        expected = {
            "Type": ["notify"],
            "NotifyAccess": ["main"],
            "WatchdogSec": ["30"],
            "Restart": ["on-failure"],
            "DynamicUser": ["yes"],
            "NoNewPrivileges": ["yes"],
            "ProtectSystem": ["strict"],
            "ProtectHome": ["yes"],
            "PrivateTmp": ["yes"],
            "AmbientCapabilities": ["CAP_NET_BIND_SERVICE"],
            "CapabilityBoundingSet": ["CAP_NET_BIND_SERVICE"],
            "RestrictAddressFamilies": ["AF_UNIX AF_INET AF_INET6"],
        }
        for key, value in expected.items():
            self.assertEqual(service.get(key), value, key)
        [execStart] = service["ExecStart"]
        self.assertIn(" --nodaemon --pidfile= lbtwist --config ", execStart)
        self.assertEqual(service["ExecReload"][-1], "/bin/kill -HUP $MAINPID")
