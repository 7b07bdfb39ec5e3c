"""The notification policy as pure decisions over sequences of run outcomes, and the text.

Each sequence feeds runs at explicit times through :func:`decide`, carrying the
task's state from one run to the next as the hook does, and checks which notices
come out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from svrctl.db.models import RunStatus
from svrctl.notify import Event
from svrctl.notify.messages import (
    RunDetails,
    fenced,
    human_duration,
    inline,
    percent,
    run_notice,
    tail,
)
from svrctl.notify.policy import Decision, RunOutcome, Streak, TaskPolicy, decide

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
S, F, X = RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.TIMED_OUT


@dataclass
class Step:
    """One run of a sequence: its status, minutes after T0, and a plugin finding."""

    status: RunStatus
    minutes: float
    finding: bool = False
    priority: int | None = None


def play(policy: TaskPolicy, steps: list[Step], start: Streak | None = None) -> list[Decision]:
    """Decide every step in turn, the state carried from one to the next."""
    streak = start or Streak()
    out = []
    for step in steps:
        at = T0 + timedelta(minutes=step.minutes)
        decision = decide(policy, streak, RunOutcome(step.status, at, step.finding, step.priority))
        out.append(decision)
        streak = decision.streak
    return out


def events(decisions: list[Decision]) -> list[str | None]:
    return [d.event.value if d.event else None for d in decisions]


# ----------------------------------------------------------------------------- failure


def test_new_tasks_first_failure_is_announced_then_no_duplicates() -> None:
    decisions = play(TaskPolicy(), [Step(F, 0), Step(F, 10), Step(X, 20), Step(F, 30)])
    assert events(decisions) == ["failure", None, None, None]
    first = decisions[0]
    assert first.priority == 8
    assert first.streak == Streak(T0, 1, T0)
    assert decisions[-1].streak == Streak(T0, 4, T0)  # the streak counts every failure


def test_failure_after_a_success_then_recovery_with_downtime() -> None:
    decisions = play(
        TaskPolicy(),
        [Step(S, 0), Step(S, 5), Step(F, 10), Step(F, 20), Step(S, 135), Step(S, 140)],
    )
    assert events(decisions) == [None, None, "failure", None, "recovery", None]
    recovery = decisions[4]
    assert recovery.priority == 5
    assert recovery.downtime == timedelta(minutes=125)
    assert recovery.previous == Streak(T0 + timedelta(minutes=10), 2, T0 + timedelta(minutes=10))
    assert recovery.streak == Streak()
    # a new streak after the recovery is announced again, once
    again = play(TaskPolicy(), [Step(F, 200), Step(F, 210)], start=recovery.streak)
    assert events(again) == ["failure", None]


def test_still_failing_reminds_at_most_every_m_hours() -> None:
    # failures every 30 minutes for 5 hours, reminders every 2 hours
    steps = [Step(F, 30 * i) for i in range(11)] + [Step(S, 330)]
    decisions = play(TaskPolicy(remind_hours=2), steps)
    got = [(i, d.event.value) for i, d in enumerate(decisions) if d.event]
    # t=0 failure; t=120 (2 h after it) still failing; t=240 again; t=330 recovery
    assert got == [(0, "failure"), (4, "still_failing"), (8, "still_failing"), (11, "recovery")]
    reminder = decisions[4]
    assert reminder.priority == 7
    assert reminder.streak == Streak(T0, 5, T0 + timedelta(minutes=120))
    assert decisions[11].downtime == timedelta(minutes=330)


def test_a_reminder_is_due_from_the_last_notice_not_the_first_failure() -> None:
    decisions = play(TaskPolicy(remind_hours=1), [Step(F, 0), Step(F, 59), Step(F, 61)])
    assert events(decisions) == ["failure", None, "still_failing"]
    more = play(TaskPolicy(remind_hours=1), [Step(F, 100), Step(F, 121)], decisions[-1].streak)
    assert events(more) == [None, "still_failing"]  # 61 + 60 = 121


def test_without_a_reminder_interval_a_streak_is_announced_once() -> None:
    decisions = play(TaskPolicy(), [Step(F, 60 * i) for i in range(48)])
    assert events(decisions).count("failure") == 1
    assert set(events(decisions)[1:]) == {None}


def test_threshold_of_n_failures() -> None:
    policy = TaskPolicy(after_failures=3)
    decisions = play(
        policy,
        [Step(F, 0), Step(F, 1), Step(S, 2), Step(F, 3), Step(F, 4), Step(F, 5), Step(F, 6)],
    )
    # two failures then a success: never announced, so no recovery either
    assert events(decisions) == [None, None, None, None, None, "failure", None]
    assert decisions[2].streak == Streak()
    announced = decisions[5]
    assert announced.streak == Streak(T0 + timedelta(minutes=3), 3, T0 + timedelta(minutes=5))
    done = play(policy, [Step(S, 65)], decisions[-1].streak)
    assert events(done) == ["recovery"]
    assert done[0].downtime == timedelta(minutes=62)  # since the streak's first failure


def test_success_opt_in() -> None:
    assert events(play(TaskPolicy(), [Step(S, 0), Step(S, 1)])) == [None, None]
    decisions = play(TaskPolicy(on_success=True), [Step(S, 0), Step(F, 1), Step(S, 2), Step(S, 3)])
    # the recovery replaces the success notice of the same run
    assert events(decisions) == ["success", "failure", "recovery", "success"]
    assert decisions[0].priority == 3


@pytest.mark.parametrize("status", [RunStatus.SKIPPED, RunStatus.CANCELLED])
def test_skipped_and_cancelled_runs_are_ignored(status: RunStatus) -> None:
    decisions = play(
        TaskPolicy(after_failures=2, on_success=True),
        [Step(F, 0), Step(status, 1), Step(F, 2), Step(status, 3), Step(S, 4)],
    )
    # the skipped/cancelled run neither broke the streak of 2 nor counted in it
    assert events(decisions) == [None, None, "failure", None, "recovery"]
    assert not decisions[1].changed and not decisions[3].changed
    assert decisions[2].streak.count == 2
    alone = play(TaskPolicy(on_success=True), [Step(status, 0)])
    assert events(alone) == [None]
    assert alone[0].streak == Streak()


def test_missed_runs_notify_and_leave_the_streak_alone() -> None:
    decisions = play(
        TaskPolicy(), [Step(RunStatus.MISSED, 0), Step(F, 1), Step(RunStatus.MISSED, 2)]
    )
    assert events(decisions) == ["missed", "failure", "missed"]
    assert decisions[0].priority == 6
    assert decisions[0].streak == Streak()
    assert decisions[2].streak == decisions[1].streak
    assert not decisions[2].changed


def test_plugin_findings_at_the_plugins_priority() -> None:
    decisions = play(
        TaskPolicy(),
        [Step(S, 0, finding=True, priority=2), Step(S, 1), Step(S, 2, finding=True, priority=9)],
    )
    assert events(decisions) == ["finding", None, "finding"]
    assert [d.priority for d in decisions] == [2, 0, 9]
    assert decisions[0].finding


def test_a_finding_rides_along_with_the_runs_own_notice() -> None:
    decisions = play(
        TaskPolicy(on_success=True),
        [
            Step(F, 0, finding=True, priority=9),  # failure at the higher priority
            Step(F, 1, finding=True, priority=9),  # already announced: failure rules win
            Step(S, 2, finding=True, priority=2),  # recovery (5) carries the finding
            Step(S, 3, finding=True, priority=7),  # success (3) carries it at 7
        ],
    )
    assert events(decisions) == ["failure", None, "recovery", "success"]
    assert [d.priority for d in decisions] == [9, 0, 5, 7]
    assert [d.finding for d in decisions] == [True, False, True, True]


def test_crashed_counts_as_failure() -> None:
    decisions = play(TaskPolicy(), [Step(RunStatus.CRASHED, 0), Step(S, 1)])
    assert events(decisions) == ["failure", "recovery"]


# ----------------------------------------------------------------------------- messages


def details(**overrides: object) -> RunDetails:
    base: dict[str, object] = {
        "task_id": 7,
        "task_name": "backup",
        "server": "db1",
        "status": "failed",
        "finished_at": T0,
        "duration_ms": 1530,
        "exit_code": 3,
        "error": "exit code 3\ndisk full",
        "output": "copying\ndone 50%\n",
        "flow_run_id": "run-1",
        "run_url": "http://ui.example/runs/flow-run/run-1",
    }
    base.update(overrides)
    return RunDetails(**base)  # type: ignore[arg-type]


def test_failure_message_carries_task_server_status_duration_error_and_tail() -> None:
    decision = play(TaskPolicy(), [Step(F, 0)])[0]
    notice = run_notice(details(), decision)
    assert notice.event is Event.FAILURE
    assert notice.title == "✗ backup failed on db1"
    assert notice.priority == 8
    assert (notice.task_id, notice.task_name, notice.status) == (7, "backup", "failed")
    assert notice.run_url == "http://ui.example/runs/flow-run/run-1"
    assert notice.body == "\n".join(
        [
            "**Task:** backup",
            "**Server:** db1",
            "**Status:** failed (exit code 3)",
            "**Duration:** 1.5 s",
            "**Finished:** 2026-03-01 12:00 UTC",
            "**Failing since:** 2026-03-01 12:00 UTC (1 failed run in a row)",
            "",
            "**Error:**",
            "~~~",
            "exit code 3",
            "disk full",
            "~~~",
            "",
            "**Output** (all of it):",
            "~~~",
            "copying",
            "done 50%",
            "~~~",
        ]
    )


def test_still_failing_and_recovery_titles() -> None:
    decisions = play(
        TaskPolicy(remind_hours=1), [Step(F, 0), Step(F, 30), Step(X, 60), Step(S, 185)]
    )
    still = run_notice(details(status="timed_out", exit_code=None), decisions[2])
    assert still.title == "✗ backup still failing (3 runs since 2026-03-01 12:00 UTC)"
    assert "**Status:** timed\\_out\n" in still.body
    back = run_notice(details(status="success", exit_code=0, error=None), decisions[3])
    assert back.title == "✓ backup recovered after 3 h 5 min"
    assert "**Down for:** 3 h 5 min (3 failed runs since 2026-03-01 12:00 UTC)" in back.body
    assert "**Error:**" not in back.body
    threshold = play(TaskPolicy(after_failures=2), [Step(F, 0), Step(X, 1)])[1]
    assert run_notice(details(status="timed_out"), threshold).title == (
        "✗ backup timed out on db1 (2 runs in a row)"
    )


def test_output_tail_is_capped_and_cannot_escape_its_fence() -> None:
    hostile = "\n".join(f"line {i}" for i in range(100)) + (
        "\n~~~~~\n```\n# heading\n[click](http://evil.example)\n\x1b[31mred\x1b[0m\x07 end\n"
    )
    decision = play(TaskPolicy(), [Step(F, 0)])[0]
    body = run_notice(details(output=hostile, error="``` ~~~ boom"), decision).body
    # the tail: last 20 lines only, terminal escapes and control characters gone
    assert "line 84\n" not in body and "line 85\n" in body and "line 99\n" in body
    assert "\x1b" not in body and "\x07" not in body and "red end" in body
    assert "**Output** (last 20 lines):" in body
    # every fence in the body is longer than any tilde or backtick run inside it
    fences = re.findall(r"^(~{3,})$", body, flags=re.MULTILINE)
    assert fences.count("~~~~~~") == 2  # output: 5 tildes inside, so a fence of 6
    assert fences.count("~~~~") == 2  # error: runs of 3 inside, so a fence of 4
    out = body.split("**Output** (last 20 lines):\n", 1)[1]
    block = out.split("~~~~~~\n", 2)[1]
    assert block.startswith("line 85\n")
    assert "[click](http://evil.example)" in block  # quoted verbatim, inside the block


def test_tail_caps_characters() -> None:
    text, cut = tail("x" * 10_000 + "\n" + "y" * 10)
    assert cut and len(text) <= 1500 and text.endswith("y" * 10)
    assert tail("a\nb\n") == ("a\nb", False)
    assert tail("") == ("", False)


def test_fence_and_inline_escaping() -> None:
    assert fenced("plain") == "~~~\nplain\n~~~"
    assert fenced("a ~~~~~~~ b ``` c") == "~~~~~~~~\na ~~~~~~~ b ``` c\n~~~~~~~~"
    assert inline("a_b *c* [d](e)\nf") == "a\\_b \\*c\\* \\[d\\](e) f"


def test_human_durations_and_percentages() -> None:
    assert human_duration(850) == "850 ms"
    assert human_duration(1530) == "1.5 s"
    assert human_duration(timedelta(minutes=2, seconds=5)) == "2 min 5 s"
    assert human_duration(timedelta(hours=3)) == "3 h"
    assert human_duration(timedelta(days=2, hours=1)) == "2 d 1 h"
    assert human_duration(None) == "-"
    assert (percent(2, 3), percent(3, 3), percent(0, 0), percent(1, 8)) == (
        "66.7%",
        "100%",
        "-",
        "12.5%",
    )
