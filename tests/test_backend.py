# -*- test-case-name: tests.test_backend -*-
"""
Tests for L{lbtwist.backend}.
"""

from __future__ import annotations

from typing import cast

from twisted.logger import ILogObserver, LogEvent, Logger, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from lbtwist.backend import (
    CHECK_HISTORY,
    Backend,
    BackendState,
    FAILED_CHECK_LOG_INTERVAL,
    CheckRecord,
    StateChange,
    logFailedCheck,
    logStateChange,
)
from lbtwist.config import BackendConfig, HealthCheckConfig

UP = BackendState.UP
DOWN = BackendState.DOWN
DRAINING = BackendState.DRAINING
DISABLED = BackendState.DISABLED


def makeBackend(
    check: str = "http",
    rise: int = 2,
    fall: int = 3,
    cooldown: float = 10.0,
    passive_fall: int = 3,
    initial_state: str = "down",
) -> Backend:
    """
    Make a backend C{a} at 127.0.0.1:9001 in pool C{app}.

    @param check: The kind of active health check.
    @param rise: Consecutive passed checks needed to go up.
    @param fall: Consecutive failed checks needed to go down.
    @param cooldown: Seconds a passively failed backend is skipped.
    @param passive_fall: Consecutive failed requests needed to go down.
    @param initial_state: The state before the first check.
    @return: The backend.
    """
    config = BackendConfig(
        url="http://127.0.0.1:9001",
        scheme="http",
        host="127.0.0.1",
        port=9001,
        name="a",
        weight=5,
    )
    health = HealthCheckConfig(
        check=check,
        rise=rise,
        fall=fall,
        passive_fall=passive_fall,
        initial_state=initial_state,
    )
    return Backend(config, "app", health, cooldown)


def change(old: BackendState, new: BackendState, reason: str) -> StateChange:
    """
    Make the state change expected of the backend made by L{makeBackend}.

    @param old: The state before.
    @param new: The state after.
    @param reason: Why.
    @return: The change.
    """
    return StateChange(
        pool="app",
        backend="a",
        address="127.0.0.1:9001",
        old=old,
        new=new,
        reason=reason,
    )


def upBackend(
    rise: int = 2, fall: int = 3, cooldown: float = 10.0, passive_fall: int = 3
) -> Backend:
    """
    Make a backend with active HTTP checks and bring it up with one passed
    check.

    @param rise: Consecutive passed checks needed to go up.
    @param fall: Consecutive failed checks needed to go down.
    @param cooldown: Seconds a passively failed backend is skipped.
    @param passive_fall: Consecutive failed requests needed to go down.
    @return: The backend, up.
    """
    backend = makeBackend("http", rise, fall, cooldown, passive_fall)
    backend.checkResult(True, "HTTP 200", 0.0)
    return backend


class BackendAttributesTests(SynchronousTestCase):
    """
    Tests for the attributes of a new L{Backend}.
    """

    def test_copiesConfig(self) -> None:
        """
        Name, address and weight come from the configuration, the counters
        start at zero.
        """
        backend = makeBackend()
        self.assertEqual(
            (backend.pool, backend.name, backend.address, backend.weight),
            ("app", "a", "127.0.0.1:9001", 5),
        )
        self.assertEqual(
            (backend.active, backend.requests, backend.failures), (0, 0, 0)
        )
        self.assertEqual(
            (backend.lastCheckOk, backend.lastCheckDetail, backend.lastCheckAt),
            (None, "", None),
        )

    def test_startsDownWaitingForFirstCheck(self) -> None:
        """
        With active checks, a backend starts down until its first check.
        """
        for check in ["http", "tcp"]:
            with self.subTest(check=check):
                backend = makeBackend(check=check)
                self.assertIs(backend.state, DOWN)
                self.assertEqual(backend.reason, "waiting for first health check")
                self.assertFalse(backend.available(1000.0))

    def test_initialStateUp(self) -> None:
        """
        With C{initial_state = "up"} and active checks, a backend starts up,
        says why, and C{fall} failed checks take it down.
        """
        backend = makeBackend(initial_state="up", fall=2)
        self.assertIs(backend.state, UP)
        self.assertEqual(backend.reason, 'initial_state = "up"; no health check yet')
        self.assertTrue(backend.available(0.0))
        self.assertIsNone(backend.checkResult(False, "HTTP 500", 1.0))
        self.assertEqual(
            backend.checkResult(False, "HTTP 500", 2.0),
            change(UP, DOWN, "2 consecutive failures (HTTP 500)"),
        )

    def test_initialStateUpFirstCheckPassing(self) -> None:
        """
        With C{initial_state = "up"}, a passing first check changes nothing.
        """
        backend = makeBackend(initial_state="up")
        self.assertIsNone(backend.checkResult(True, "HTTP 200", 1.0))
        self.assertIs(backend.state, UP)

    def test_initialStateIgnoredWithoutChecks(self) -> None:
        """
        Without active checks, a backend starts up whatever
        C{initial_state} says.
        """
        backend = makeBackend(check="none", initial_state="down")
        self.assertIs(backend.state, UP)
        self.assertEqual(backend.reason, "no active health checks")

    def test_startsUpWithoutChecks(self) -> None:
        """
        Without active checks, a backend starts up and available.
        """
        backend = makeBackend(check="none")
        self.assertIs(backend.state, UP)
        self.assertIsNone(backend.downSince)
        self.assertTrue(backend.available(0.0))


class ActiveCheckTests(SynchronousTestCase):
    """
    Tests for L{Backend.checkResult}.
    """

    def test_firstPassedCheckBringsUp(self) -> None:
        """
        The first passed check brings a new backend up at once, whatever
        C{rise} is.
        """
        backend = makeBackend(rise=5)
        self.assertEqual(
            backend.checkResult(True, "HTTP 200", 1.0),
            change(DOWN, UP, "first health check passed (HTTP 200)"),
        )
        self.assertTrue(backend.available(1.0))

    def test_firstPassedCheckAfterFailuresBringsUp(self) -> None:
        """
        Failed checks before the first passed one do not delay it.
        """
        backend = makeBackend(rise=3)
        for now in [1.0, 2.0, 3.0, 4.0]:
            self.assertIsNone(backend.checkResult(False, "connection refused", now))
        self.assertEqual(
            backend.checkResult(True, "connected", 5.0),
            change(DOWN, UP, "first health check passed (connected)"),
        )

    def test_recordsLastCheck(self) -> None:
        """
        Every check result is recorded with its time.
        """
        backend = makeBackend()
        backend.checkResult(True, "HTTP 200", 1.5)
        backend.checkResult(False, "timed out after 1.0s", 3.5)
        self.assertEqual(
            (backend.lastCheckOk, backend.lastCheckDetail, backend.lastCheckAt),
            (False, "timed out after 1.0s", 3.5),
        )

    def test_riseAndFall(self) -> None:
        """
        After the first passed check, C{fall} consecutive failures bring the
        backend down and C{rise} consecutive successes bring it back up; a
        result of the other kind restarts the count.
        """
        backend = upBackend(rise=2, fall=3)
        results = [
            # (ok, detail, expected state after)
            (False, "HTTP 500", UP),
            (False, "HTTP 500", UP),
            (True, "HTTP 200", UP),
            (False, "HTTP 500", UP),
            (False, "HTTP 500", UP),
            (False, "HTTP 500", DOWN),
            (False, "HTTP 500", DOWN),
            (True, "HTTP 200", DOWN),
            (False, "HTTP 503", DOWN),
            (True, "HTTP 200", DOWN),
            (True, "HTTP 204", UP),
            (True, "HTTP 200", UP),
        ]
        states = []
        for now, (ok, detail, _) in enumerate(results, 1):
            backend.checkResult(ok, detail, float(now))
            states.append(backend.state)
        self.assertEqual(states, [state for _, _, state in results])

    def test_fallReason(self) -> None:
        """
        Going down reports the number of consecutive failures and the last
        check's detail.
        """
        backend = upBackend(fall=3)
        self.assertIsNone(backend.checkResult(False, "HTTP 500", 1.0))
        self.assertIsNone(backend.checkResult(False, "HTTP 500", 2.0))
        self.assertEqual(
            backend.checkResult(False, "HTTP 500", 3.0),
            change(UP, DOWN, "3 consecutive failures (HTTP 500)"),
        )
        self.assertEqual(backend.downSince, 3.0)
        self.assertFalse(backend.available(3.0))

    def test_riseReason(self) -> None:
        """
        Coming back up reports C{rise} and the last check's detail.
        """
        backend = upBackend(rise=2, fall=1)
        backend.checkResult(False, "HTTP 500", 1.0)
        self.assertIsNone(backend.checkResult(True, "HTTP 200", 2.0))
        self.assertEqual(
            backend.checkResult(True, "HTTP 204", 3.0),
            change(DOWN, UP, "2 consecutive successes (HTTP 204)"),
        )
        self.assertIsNone(backend.downSince)

    def test_riseOfOne(self) -> None:
        """
        With C{rise = 1} a single passed check brings the backend back up.
        """
        backend = upBackend(rise=1, fall=1)
        backend.checkResult(False, "HTTP 500", 1.0)
        self.assertEqual(
            backend.checkResult(True, "HTTP 200", 2.0),
            change(DOWN, UP, "1 consecutive successes (HTTP 200)"),
        )

    def test_noHalfOpenWithActiveChecks(self) -> None:
        """
        With active checks, a down backend stays unavailable however long it
        has been down.
        """
        backend = upBackend(fall=1, cooldown=10.0)
        backend.checkResult(False, "HTTP 500", 1.0)
        self.assertFalse(backend.available(1000.0))

    def test_drainingAndDisabledUntouchedByChecks(self) -> None:
        """
        Checks do not change a draining or disabled backend, which is never
        available.
        """
        for state in [DRAINING, DISABLED]:
            with self.subTest(state=state):
                backend = upBackend(rise=1, fall=1)
                backend.setState(state, "operator", 1.0)
                for now, ok in enumerate([False, False, True, True, False], 2):
                    detail = "HTTP 200" if ok else "HTTP 500"
                    self.assertIsNone(backend.checkResult(ok, detail, float(now)))
                    self.assertIsNone(backend.requestFailed("timed out", float(now)))
                    self.assertIs(backend.state, state)
                    self.assertFalse(backend.available(float(now)))


class PassiveTests(SynchronousTestCase):
    """
    Tests for L{Backend.requestFailed} and L{Backend.requestSucceeded}.
    """

    def test_passiveFailuresCountOnTheirOwn(self) -> None:
        """
        Failed requests and failed checks are counted apart: neither helps
        the other reach its limit.
        """
        backend = upBackend(fall=2, passive_fall=2)
        self.assertIsNone(backend.checkResult(False, "HTTP 500", 1.0))
        self.assertIsNone(backend.requestFailed("connection refused", 1.5))
        self.assertIs(backend.state, UP)
        self.assertEqual(
            backend.requestFailed("connection refused", 1.7),
            change(UP, DOWN, "2 consecutive failed requests (connection refused)"),
        )
        self.assertEqual(backend.failures, 2)

    def test_checksFailWhateverTrafficDoes(self) -> None:
        """
        Successful requests between failed checks do not reset the count of
        failed checks: C{fall} failed checks in a row take the backend down
        however much traffic succeeds (traffic cannot mask a failing check).
        """
        backend = upBackend(fall=2)
        now = 1.0
        for ok in [False, False]:
            for _ in range(3):
                self.assertIsNone(backend.requestSucceeded(now))
                now += 0.1
            result = backend.checkResult(ok, "HTTP 500", now)
        self.assertEqual(result, change(UP, DOWN, "2 consecutive failures (HTTP 500)"))
        for _ in range(3):
            self.assertIsNone(backend.requestSucceeded(now))
        self.assertIs(backend.state, DOWN)
        self.assertFalse(backend.available(now + 100))

    def test_successfulRequestIsNotAPassedCheck(self) -> None:
        """
        A successful request neither brings a backend up nor counts toward
        C{rise}: after going down it still takes C{rise} passed checks.
        """
        backend = upBackend(rise=2, fall=1)
        backend.checkResult(False, "HTTP 500", 1.0)
        self.assertIsNone(backend.checkResult(True, "HTTP 200", 2.0))
        self.assertIsNone(backend.requestSucceeded(2.5))
        self.assertIs(backend.state, DOWN)
        self.assertEqual(
            backend.checkResult(True, "HTTP 200", 3.0),
            change(DOWN, UP, "2 consecutive successes (HTTP 200)"),
        )

    def test_passedCheckDoesNotResetPassiveFailures(self) -> None:
        """
        A passed check leaves the count of failed requests alone.
        """
        backend = upBackend(passive_fall=2)
        backend.requestFailed("connection refused", 1.0)
        backend.checkResult(True, "HTTP 200", 1.1)
        self.assertIsNotNone(backend.requestFailed("connection refused", 1.2))
        self.assertIs(backend.state, DOWN)

    def test_successfulRequestResetsFailures(self) -> None:
        """
        A successful request restarts the count of failed requests.
        """
        backend = upBackend(passive_fall=2)
        backend.requestFailed("connection refused", 1.0)
        self.assertIsNone(backend.requestSucceeded(1.1))
        self.assertIsNone(backend.requestFailed("connection refused", 1.2))
        self.assertIs(backend.state, UP)
        self.assertEqual(backend.failures, 2)

    def test_successfulRequestResetsOnlyPassiveFailures(self) -> None:
        """
        A successful request does not restart the count of failed checks.
        """
        backend = upBackend(fall=2)
        backend.checkResult(False, "HTTP 500", 1.0)
        backend.requestSucceeded(1.1)
        self.assertIsNotNone(backend.checkResult(False, "HTTP 500", 2.0))
        self.assertIs(backend.state, DOWN)

    def test_failuresThatDoNotCount(self) -> None:
        """
        A failure that is not evidence of ill health is counted in
        C{failures} but not toward C{passive_fall}.
        """
        backend = upBackend(passive_fall=1)
        self.assertIsNone(backend.requestFailed("invalid response", 1.0, False))
        self.assertIs(backend.state, UP)
        self.assertEqual(backend.failures, 1)
        self.assertIsNotNone(backend.requestFailed("connection refused", 2.0))

    def test_passiveFallZeroDisablesPassiveDetection(self) -> None:
        """
        With C{passive_fall = 0}, no number of failed requests takes a
        backend down, with or without active checks; failures are still
        counted.
        """
        for check in ["http", "none"]:
            with self.subTest(check=check):
                backend = makeBackend(check=check, passive_fall=0)
                backend.checkResult(True, "HTTP 200", 0.0)
                for now in range(1, 20):
                    self.assertIsNone(
                        backend.requestFailed("connection refused", float(now))
                    )
                self.assertIs(backend.state, UP)
                self.assertEqual(backend.failures, 19)

    def test_passiveFallZeroKeepsActiveChecks(self) -> None:
        """
        With C{passive_fall = 0}, active checks still take a backend down.
        """
        backend = upBackend(fall=1, passive_fall=0)
        self.assertIsNotNone(backend.checkResult(False, "HTTP 500", 1.0))
        self.assertIs(backend.state, DOWN)

    def test_passiveDownNeedsRiseChecks(self) -> None:
        """
        A backend taken down by failed requests needs C{rise} passed checks
        to come back, not just one, even if checks had been passing before.
        """
        backend = upBackend(rise=2, passive_fall=2)
        backend.checkResult(True, "HTTP 200", 1.0)
        backend.requestFailed("timed out", 2.0)
        backend.requestFailed("timed out", 2.1)
        self.assertIs(backend.state, DOWN)
        self.assertIsNone(backend.checkResult(True, "HTTP 200", 3.0))
        self.assertIsNotNone(backend.checkResult(True, "HTTP 200", 4.0))
        self.assertIs(backend.state, UP)

    def test_passiveDownBeforeFirstCheck(self) -> None:
        """
        A backend that started up (C{initial_state = "up"}) and was taken
        down by failed requests before any check passed comes up with its
        first passed check.
        """
        backend = makeBackend(initial_state="up", passive_fall=1, rise=3)
        backend.requestFailed("connection refused", 1.0)
        self.assertIs(backend.state, DOWN)
        self.assertEqual(
            backend.checkResult(True, "HTTP 200", 2.0),
            change(DOWN, UP, "first health check passed (HTTP 200)"),
        )

    def test_upAgainStartsPassiveCountAfresh(self) -> None:
        """
        Failed requests before the backend went down do not count once
        checks brought it back.
        """
        backend = upBackend(rise=1, passive_fall=2)
        backend.requestFailed("connection refused", 1.0)
        backend.requestFailed("connection refused", 1.1)
        self.assertIs(backend.state, DOWN)
        backend.requestFailed("connection refused", 1.2)
        backend.checkResult(True, "HTTP 200", 2.0)
        self.assertIs(backend.state, UP)
        self.assertIsNone(backend.requestFailed("connection refused", 2.1))
        self.assertIs(backend.state, UP)

    def test_successfulRequestDoesNotBringUpWithChecks(self) -> None:
        """
        With active checks, only checks bring a down backend up.
        """
        backend = upBackend(passive_fall=1)
        backend.requestFailed("timed out", 1.0)
        self.assertIsNone(backend.requestSucceeded(100.0))
        self.assertIs(backend.state, DOWN)

    def test_fallWithoutChecks(self) -> None:
        """
        Without active checks, C{passive_fall} failed requests take the
        backend down for C{cooldown} seconds.
        """
        backend = makeBackend(check="none", passive_fall=2, cooldown=10.0)
        self.assertIsNone(backend.requestFailed("connection refused", 5.0))
        self.assertEqual(
            backend.requestFailed("connection refused", 6.0),
            change(UP, DOWN, "2 consecutive failed requests (connection refused)"),
        )
        self.assertEqual(backend.downSince, 6.0)
        self.assertFalse(backend.available(15.9))
        self.assertTrue(backend.available(16.0))

    def test_halfOpenSuccessBringsUp(self) -> None:
        """
        A request that succeeds after the cooldown brings the backend up.
        """
        backend = makeBackend(check="none", passive_fall=1, cooldown=10.0)
        backend.requestFailed("connection refused", 0.0)
        self.assertEqual(
            backend.requestSucceeded(12.0),
            change(DOWN, UP, "request succeeded after cooldown"),
        )
        self.assertIsNone(backend.downSince)
        self.assertTrue(backend.available(12.0))

    def test_halfOpenFailureStartsNewCooldown(self) -> None:
        """
        A request that fails after the cooldown keeps the backend down for
        another cooldown.
        """
        backend = makeBackend(check="none", passive_fall=3, cooldown=10.0)
        for now in [0.0, 0.1, 0.2]:
            backend.requestFailed("connection refused", now)
        self.assertIsNone(backend.requestFailed("connection refused", 11.0))
        self.assertIs(backend.state, DOWN)
        self.assertEqual(backend.downSince, 11.0)
        self.assertFalse(backend.available(20.0))
        self.assertTrue(backend.available(21.0))

    def test_lateResultsDuringCooldown(self) -> None:
        """
        Results of requests started before the backend went down neither end
        nor extend its cooldown.
        """
        backend = makeBackend(check="none", passive_fall=1, cooldown=10.0)
        backend.requestFailed("connection refused", 0.0)
        self.assertIsNone(backend.requestSucceeded(1.0))
        self.assertIsNone(backend.requestFailed("timed out", 2.0))
        self.assertEqual((backend.state, backend.downSince), (DOWN, 0.0))


class SetStateTests(SynchronousTestCase):
    """
    Tests for L{Backend.setState}.
    """

    def test_reportsChange(self) -> None:
        """
        Moving to another state reports the change and records the reason.
        """
        backend = upBackend()
        self.assertEqual(
            backend.setState(DRAINING, "drained by operator", 1.0),
            change(UP, DRAINING, "drained by operator"),
        )
        self.assertEqual(backend.reason, "drained by operator")
        self.assertFalse(backend.available(1.0))

    def test_sameStateIsNoChange(self) -> None:
        """
        Moving to the current state reports nothing.
        """
        backend = upBackend()
        self.assertIsNone(backend.setState(UP, "again", 1.0))


class LogStateChangeTests(SynchronousTestCase):
    """
    Tests for L{logStateChange}.
    """

    def capture(self, change: StateChange) -> LogEvent:
        """
        Log a change and return the one event emitted.

        @param change: The change to log.
        @return: The event.
        """
        events: list[LogEvent] = []
        logStateChange(change, Logger(observer=cast(ILogObserver, events.append)))
        self.assertEqual(len(events), 1)
        return events[0]

    def test_downIsWarning(self) -> None:
        """
        Going down is a warning that reads as one line with the pool,
        address, new state and reason, and carries both states as fields.
        """
        event = self.capture(change(UP, DOWN, "3 consecutive failures (HTTP 500)"))
        self.assertEqual(
            formatEvent(event),
            "backend app/a (127.0.0.1:9001) is down: 3 consecutive failures "
            "(HTTP 500)",
        )
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertEqual(
            {key: event[key] for key in ["pool", "backend", "address", "old", "new"]},
            {
                "pool": "app",
                "backend": "a",
                "address": "127.0.0.1:9001",
                "old": "up",
                "new": "down",
            },
        )
        self.assertEqual(event["reason"], "3 consecutive failures (HTTP 500)")

    def test_otherChangesAreInfo(self) -> None:
        """
        Any change other than going down is informational.
        """
        for old, new in [(DOWN, UP), (UP, DRAINING), (DRAINING, DISABLED)]:
            with self.subTest(new=new):
                event = self.capture(change(old, new, "why"))
                self.assertEqual(event["log_level"], LogLevel.info)
                self.assertEqual(
                    formatEvent(event),
                    f"backend app/a (127.0.0.1:9001) is {new.value}: why",
                )


class BackendRecordTests(SynchronousTestCase):
    """
    What a backend remembers for the stats page: check history, time of the
    last state change, and the label log lines use.
    """

    def _backend(self, name: str | None = None) -> Backend:
        config = BackendConfig(
            url="http://127.0.0.1:9102",
            scheme="http",
            host="127.0.0.1",
            port=9102,
            **({} if name is None else {"name": name}),
        )
        return Backend(config, "app", HealthCheckConfig(), cooldown=5.0, now=100.0)

    def test_checkHistoryKeepsTheLastTen(self) -> None:
        """
        Only the last L{CHECK_HISTORY} check results are kept, oldest first.
        """
        backend = self._backend()
        for i in range(CHECK_HISTORY + 3):
            backend.checkResult(i % 2 == 0, f"check {i}", float(i))
        self.assertEqual(
            [record.detail for record in backend.checkHistory],
            [f"check {i}" for i in range(3, CHECK_HISTORY + 3)],
        )
        self.assertEqual(
            backend.checkHistory[-1], CheckRecord(at=12.0, ok=True, detail="check 12")
        )

    def test_stateSinceFollowsStateChanges(self) -> None:
        """
        C{stateSince} starts at creation and moves with every state change,
        not with checks that change nothing.
        """
        backend = self._backend()
        self.assertEqual(backend.stateSince, 100.0)
        backend.checkResult(False, "connection refused", 101.0)
        self.assertEqual(backend.stateSince, 100.0)
        backend.checkResult(True, "TCP connect", 102.0)
        self.assertEqual(backend.stateSince, 102.0)

    def test_labelNamesPoolNameAndAddress(self) -> None:
        """
        A named backend's label carries its address in parentheses; one
        named by its address shows it once.
        """
        self.assertEqual(self._backend("one").label, "app/one (127.0.0.1:9102)")
        self.assertEqual(self._backend().label, "app/127.0.0.1:9102")


def capture() -> tuple[Logger, list[LogEvent]]:
    """
    @return: A logger and the list its events go to.
    """
    events: list[LogEvent] = []
    return Logger(observer=cast(ILogObserver, events.append)), events


class FailedCheckReasonTests(SynchronousTestCase):
    """
    A backend that is down says why in its C{reason}, check after check.
    """

    def test_everyFailedCheckUpdatesTheReason(self) -> None:
        """
        Each failed check of a down backend becomes its reason, replacing
        "waiting for first health check" and the previous failure.
        """
        backend = makeBackend()
        backend.checkResult(False, "HTTP 404 on GET /healthz (expected 200-399)", 1.0)
        self.assertEqual(backend.reason, "HTTP 404 on GET /healthz (expected 200-399)")
        backend.checkResult(False, "connection refused", 2.0)
        self.assertEqual(backend.reason, "connection refused")
        self.assertIs(backend.state, DOWN)

    def test_passedCheckShortOfRise(self) -> None:
        """
        A passed check that does not yet bring a down backend up says how
        far it is.
        """
        backend = makeBackend(rise=3, fall=1)
        backend.checkResult(True, "HTTP 200", 1.0)
        backend.checkResult(False, "HTTP 500", 2.0)
        self.assertIs(backend.state, DOWN)
        backend.checkResult(True, "HTTP 200", 3.0)
        self.assertEqual(backend.reason, "1 of 3 consecutive successes (HTTP 200)")

    def test_operatorReasonsAreKept(self) -> None:
        """
        A draining backend keeps the operator's reason whatever checks say.
        """
        backend = makeBackend()
        backend.setState(DRAINING, "drained by operator", 1.0)
        backend.checkResult(False, "connection refused", 2.0)
        self.assertEqual(backend.reason, "drained by operator")

    def test_upBackendKeepsItsReasonUntilFall(self) -> None:
        """
        A failed check short of C{fall} does not touch an up backend's
        reason; the one that takes it down gives the transition's reason.
        """
        backend = makeBackend(fall=2, initial_state="up")
        backend.checkResult(False, "timed out after 1.0s", 1.0)
        self.assertEqual(backend.reason, 'initial_state = "up"; no health check yet')
        backend.checkResult(False, "timed out after 1.0s", 2.0)
        self.assertEqual(
            backend.reason, "2 consecutive failures (timed out after 1.0s)"
        )


class WhenCheckedTests(SynchronousTestCase):
    """
    L{Backend.whenChecked} and L{Backend.awaitingFirstCheck}.
    """

    def test_awaitingFirstCheck(self) -> None:
        """
        Only a backend that checks actively, starts down and has no result
        yet is awaiting its first check.
        """
        backend = makeBackend()
        self.assertTrue(backend.awaitingFirstCheck)
        backend.checkResult(False, "connection refused", 1.0)
        self.assertFalse(backend.awaitingFirstCheck)
        self.assertFalse(makeBackend(initial_state="up").awaitingFirstCheck)
        self.assertFalse(makeBackend(check="none").awaitingFirstCheck)
        disabled = makeBackend()
        disabled.setState(DISABLED, "disabled by operator", 0.0)
        self.assertFalse(disabled.awaitingFirstCheck)

    def test_calledOnceAfterTheResultIsRecorded(self) -> None:
        """
        The callback runs after the result is applied, and only once.
        """
        backend = makeBackend()
        seen: list[BackendState] = []
        backend.whenChecked(lambda: seen.append(backend.state))
        backend.checkResult(True, "HTTP 200", 1.0)
        backend.checkResult(True, "HTTP 200", 2.0)
        self.assertEqual(seen, [UP])

    def test_cancel(self) -> None:
        """
        A cancelled callback is not called; cancelling twice is harmless.
        """
        backend = makeBackend()
        seen: list[int] = []
        cancel = backend.whenChecked(lambda: seen.append(1))
        cancel()
        cancel()
        backend.checkResult(True, "HTTP 200", 1.0)
        self.assertEqual(seen, [])


class LogFailedCheckTests(SynchronousTestCase):
    """
    L{logFailedCheck}: the failed checks of a down backend are logged the
    first time, then at most once a minute.
    """

    def fail_(self, backend: Backend, now: float, log: Logger) -> None:
        """
        Record a failed check at C{now} and log it as the service does.
        """
        backend.checkResult(False, "HTTP 404 on GET /healthz (expected 200-399)", now)
        logFailedCheck(backend, now, log)

    def test_firstThenOncePerInterval(self) -> None:
        """
        The first failure is logged, the next ones only once
        L{FAILED_CHECK_LOG_INTERVAL} has passed since the last line.
        """
        log, events = capture()
        backend = makeBackend()
        for second in range(0, 125, 2):
            self.fail_(backend, float(second), log)
        self.assertEqual(FAILED_CHECK_LOG_INTERVAL, 60.0)
        self.assertEqual(len(events), 3)
        self.assertEqual(
            formatEvent(events[0]),
            "backend app/a (127.0.0.1:9001) is down: health check failed: "
            "HTTP 404 on GET /healthz (expected 200-399) (1 failed in a row)",
        )
        self.assertEqual(events[0]["log_level"], LogLevel.warn)
        self.assertEqual(
            {key: events[0][key] for key in ("pool", "backend", "address")},
            {"pool": "app", "backend": "a", "address": "127.0.0.1:9001"},
        )
        self.assertEqual(events[1]["failures"], 31)
        self.assertEqual(events[2]["failures"], 61)

    def test_perBackend(self) -> None:
        """
        Each backend has its own throttle.
        """
        log, events = capture()
        one, two = makeBackend(), makeBackend()
        self.fail_(one, 0.0, log)
        self.fail_(two, 1.0, log)
        self.assertEqual(len(events), 2)

    def test_upBackendsAreNotLogged(self) -> None:
        """
        A failed check of an up backend, short of C{fall}, is not logged
        here (the state change is logged when it goes down).
        """
        log, events = capture()
        backend = makeBackend(initial_state="up")
        self.fail_(backend, 0.0, log)
        self.assertEqual(events, [])

    def test_goingDownStartsTheInterval(self) -> None:
        """
        The check that takes a backend down is named by the state change;
        the next failure is logged a full interval later.
        """
        log, events = capture()
        backend = makeBackend(fall=1, initial_state="up")
        self.fail_(backend, 0.0, log)
        self.fail_(backend, 30.0, log)
        self.assertEqual(events, [])
        self.fail_(backend, 60.0, log)
        self.assertEqual(len(events), 1)

    def test_newOutageLoggedAtOnce(self) -> None:
        """
        After the backend was up again, the first failed check of its next
        outage (taken down by traffic) is logged at once.
        """
        log, events = capture()
        backend = makeBackend(rise=1)
        self.fail_(backend, 0.0, log)
        backend.checkResult(True, "HTTP 200", 2.0)
        backend.setState(DOWN, "3 consecutive failed requests (connection refused)", 3.0)
        self.fail_(backend, 4.0, log)
        self.assertEqual(len(events), 2)

