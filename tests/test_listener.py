# -*- test-case-name: tests.test_listener -*-
"""
Tests for L{lbtwist.listener}.
"""

from __future__ import annotations

import errno
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.trial.unittest import SynchronousTestCase

from lbtwist.listener import ListenError, Listener, listenFailure


class _Port:
    """
    A listening port that records being stopped.
    """

    stopped = False

    def stopListening(self) -> None:
        self.stopped = True


class _Endpoint:
    """
    A server endpoint whose C{listen} gives a prepared result.
    """

    def __init__(self, result: Deferred[Any]) -> None:
        self.result = result
        self.calls = 0

    def listen(self, factory: object) -> Deferred[Any]:
        self.calls += 1
        return self.result


def inUse() -> CannotListenError:
    return CannotListenError("127.0.0.1", 8080, OSError(errno.EADDRINUSE, "Address already in use"))


class ListenerTests(SynchronousTestCase):
    """
    Tests for L{Listener}.
    """

    def test_listensOnce(self) -> None:
        """
        The port is known once bound, C{startService} after
        C{privilegedStartService} does not listen again, and stopping stops
        the port.
        """
        port = _Port()
        endpoint = _Endpoint(succeed(port))
        listener = Listener(endpoint, Factory(), "tcp:8080", 'frontend "web"')
        listener.privilegedStartService()
        listener.startService()
        self.assertEqual(endpoint.calls, 1)
        self.assertIs(listener.port, port)
        self.assertIs(self.successResultOf(listener.whenListening()), port)
        self.successResultOf(listener.stopService())
        self.assertTrue(port.stopped)
        self.assertIsNone(listener.port)

    def test_failureAtOnceRaises(self) -> None:
        """
        An endpoint that fails at once makes L{privilegedStartService} raise
        a one-line L{ListenError} naming the listener, the description and
        the cause.
        """
        listener = Listener(
            _Endpoint(fail(inUse())), Factory(), "tcp:8080", 'frontend "web"'
        )
        error = self.assertRaises(ListenError, listener.privilegedStartService)
        self.assertEqual(
            str(error), 'frontend "web": cannot listen on tcp:8080: address already in use'
        )
        self.failureResultOf(listener.whenListening(), CannotListenError)

    def test_laterResult(self) -> None:
        """
        When the endpoint answers later, L{whenListening} waits for it; a
        later failure fails the waiters, and stopping before it cancels the
        attempt.
        """
        result: Deferred[Any] = Deferred()
        listener = Listener(_Endpoint(result), Factory(), "systemd:0", "admin")
        listener.startService()
        waiting = listener.whenListening()
        self.assertNoResult(waiting)
        port = _Port()
        result.callback(port)
        self.assertIs(self.successResultOf(waiting), port)

        later: Deferred[Any] = Deferred()
        failing = Listener(_Endpoint(later), Factory(), "systemd:1", "admin")
        failing.startService()
        waiting = failing.whenListening()
        later.errback(inUse())
        self.failureResultOf(waiting, CannotListenError)

        pending: Deferred[Any] = Deferred()
        stopped = Listener(_Endpoint(pending), Factory(), "systemd:2", "admin")
        stopped.startService()
        self.successResultOf(stopped.stopService())
        self.assertTrue(pending.called)

    def test_listenFailure(self) -> None:
        """
        The cause is the socket error's text, in lower case first; other
        errors say what they are.
        """
        self.assertEqual(listenFailure(inUse()), "address already in use")
        self.assertEqual(listenFailure(ValueError("bad")), "bad")
        self.assertEqual(listenFailure(ValueError()), "ValueError")
