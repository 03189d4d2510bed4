"""
Tests for L{lbtwist.failures}, the one failure classifier.
"""

from __future__ import annotations

from twisted.internet import error as ierror
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from lbtwist.failures import UpstreamFailure, classifyLostConnection


class UpstreamFailureTests(SynchronousTestCase):
    """
    Tests for L{UpstreamFailure}.
    """

    def test_sentAndTimedOut(self) -> None:
        """
        Connect failures were not sent; timeouts answer 504.
        """
        self.assertFalse(UpstreamFailure("connect_refused", "x").sent)
        self.assertFalse(UpstreamFailure("connect_timeout", "x").sent)
        self.assertTrue(UpstreamFailure("connect_timeout", "x").timedOut)
        self.assertTrue(UpstreamFailure("connection_lost", "x").sent)
        self.assertFalse(UpstreamFailure("connection_lost", "x").timedOut)
        self.assertTrue(UpstreamFailure("response_timeout", "x").timedOut)

    def test_readTimeoutCountedAsTruncated(self) -> None:
        """
        A read timeout is counted as a truncated response.
        """
        self.assertEqual(UpstreamFailure("read_timeout", "x").statsKind, "truncated")

    def test_raisable(self) -> None:
        """
        It can be raised and caught like any exception.
        """
        with self.assertRaises(UpstreamFailure) as caught:
            raise UpstreamFailure("invalid_response", "invalid response: bad")
        self.assertEqual(str(caught.exception), "invalid response: bad")


class ClassifyLostConnectionTests(SynchronousTestCase):
    """
    Tests for L{classifyLostConnection}.
    """

    def test_beforeAndAfterHead(self) -> None:
        """
        Lost before the response head: C{connection_lost}; after it:
        C{truncated}.
        """
        reason = Failure(ierror.ConnectionDone())
        self.assertEqual(classifyLostConnection(reason, False).kind, "connection_lost")
        lost = classifyLostConnection(reason, True)
        self.assertEqual((lost.kind, lost.responseStarted), ("truncated", True))
