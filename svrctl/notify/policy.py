"""Which notices a finished run deserves: pure decisions over a task's failure streak.

The state a decision reads and writes is the task's ``failing_since``,
``failure_streak`` and ``failure_notified_at``; :func:`decide` takes that state,
the task's policy and one run's outcome, and returns what to announce and the new
state. It does no I/O: :mod:`svrctl.notify.after_run` reads and writes the state in
one write transaction around it, so two runs that finish together cannot both
announce the same failure.

The rules (docs/notification-policy.md):

- **failure**: once the streak of consecutive failed runs reaches the task's
  threshold (``notify_after_failures``, 1 by default: the first failure after a
  success, or a new task's first failure), once per streak;
- **still failing**: while the streak goes on, at most every ``notify_remind_hours``
  (never when unset), counted from the last failure or reminder notice;
- **recovery**: the first success after an announced failure, with the downtime;
  a streak that ended below the threshold was never announced and ends silently;
- **success**: each success, when the task opts in (a recovery replaces it);
- **missed**: each run recorded ``missed``;
- **finding**: a plugin result that asks to notify, at the plugin's priority. On
  a run that also has a notice of its own (failure, recovery, ...) the finding rides
  along in that one notice, at the higher of both priorities; on a failed run with
  no notice of its own (below the threshold, or already announced) it is not sent:
  failures follow the failure rules, whatever the plugin asks.

``skipped`` and ``cancelled`` runs are neither failures nor successes: they leave
the streak alone and announce nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from svrctl.db.models import RunStatus
from svrctl.notify import Event

__all__ = [
    "PRIORITIES",
    "Decision",
    "RunOutcome",
    "Streak",
    "TaskPolicy",
    "decide",
]

# Priority (1-10) of each kind of notice; a finding carries the plugin's own.
PRIORITIES: dict[Event, int] = {
    Event.FAILURE: 8,
    Event.STILL_FAILING: 7,
    Event.MISSED: 6,
    Event.RECOVERY: 5,
    Event.SUCCESS: 3,
    Event.FINDING: 5,
}


@dataclass(frozen=True)
class TaskPolicy:
    """A task's notification settings.

    Attributes:
        after_failures: Announce a failure once this many runs in a row failed (>= 1).
        remind_hours: Remind at most this often while the task keeps failing (None: never).
        on_success: Announce every success.
    """

    after_failures: int = 1
    remind_hours: float | None = None
    on_success: bool = False


@dataclass(frozen=True)
class Streak:
    """A task's notification state: its current run of failures and when it was announced.

    Attributes:
        failing_since: When the first failed run of the streak finished (None: not failing).
        count: Failed runs in a row.
        notified_at: When the streak was last announced (failure or reminder); None
            while it has not been.
    """

    failing_since: datetime | None = None
    count: int = 0
    notified_at: datetime | None = None


@dataclass(frozen=True)
class RunOutcome:
    """What the policy needs to know of one finished run.

    Attributes:
        status: The run's final status.
        at: When it finished.
        finding: A plugin result asked to notify.
        finding_priority: The priority the plugin asked for.
    """

    status: RunStatus
    at: datetime
    finding: bool = False
    finding_priority: int | None = None


@dataclass(frozen=True)
class Decision:
    """What to announce about one run, and the task's state after it.

    Attributes:
        event: The notice to send (None: nothing).
        priority: Its priority (1-10).
        streak: The task's notification state after the run.
        previous: The state before the run.
        finding: The notice carries a plugin's finding.
        downtime: For a recovery, how long the task was failing.
    """

    event: Event | None
    priority: int
    streak: Streak
    previous: Streak
    finding: bool = False
    downtime: timedelta | None = None

    @property
    def changed(self) -> bool:
        """Tell whether the task's state must be written."""
        return self.streak != self.previous


def _plugin_priority(outcome: RunOutcome) -> int:
    return max(1, min(10, outcome.finding_priority or PRIORITIES[Event.FINDING]))


def decide(policy: TaskPolicy, streak: Streak, outcome: RunOutcome) -> Decision:
    """Return what to announce about ``outcome`` and the task's state after it."""
    status = outcome.status
    now = outcome.at

    def nothing(new: Streak = streak) -> Decision:
        return Decision(None, 0, new, streak)

    def notice(event: Event, new: Streak, downtime: timedelta | None = None) -> Decision:
        priority = PRIORITIES[event]
        if outcome.finding:
            priority = max(priority, _plugin_priority(outcome))
        return Decision(event, priority, new, streak, outcome.finding, downtime)

    if status is RunStatus.MISSED:
        # a missed run did not run: it neither breaks nor extends the streak
        return notice(Event.MISSED, streak)
    if status.counts_as_failure:
        count = streak.count + 1
        failing = Streak(streak.failing_since or now, count, streak.notified_at)
        if streak.notified_at is None:
            if count >= max(1, policy.after_failures):
                return notice(Event.FAILURE, replace(failing, notified_at=now))
            return nothing(failing)
        remind = policy.remind_hours
        if remind and remind > 0 and now - streak.notified_at >= timedelta(hours=remind):
            return notice(Event.STILL_FAILING, replace(failing, notified_at=now))
        return nothing(failing)
    if status is RunStatus.SUCCESS:
        cleared = Streak()
        if streak.notified_at is not None:
            since = streak.failing_since or streak.notified_at
            return notice(Event.RECOVERY, cleared, downtime=max(now - since, timedelta(0)))
        if policy.on_success:
            return notice(Event.SUCCESS, cleared)
        if outcome.finding:
            return Decision(Event.FINDING, _plugin_priority(outcome), cleared, streak, True)
        return nothing(cleared)
    # skipped, cancelled (and running): neither a failure nor a success
    return nothing()
