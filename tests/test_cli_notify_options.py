"""``task add/edit --notify/--notify-after/--notify-remind/--notify-success``."""

from __future__ import annotations

import json

import pytest
from conftest import Invoke

from svrctl.db.engine import Database
from svrctl.db.models import NotifyChannel


@pytest.fixture
def channels(svrctl: Invoke, database: Database) -> Invoke:
    with database.write() as session:
        for name in ("ops", "phone"):
            session.add(NotifyChannel(name=name, kind="ntfy", url="http://127.0.0.1:9/", topic="t"))
    assert svrctl("task", "add", "t", "--local", "--command", "true").exit_code == 0
    return svrctl


def _show(svrctl: Invoke) -> dict[str, object]:
    data: dict[str, object] = json.loads(svrctl("task", "show", "t", "--json").output)
    return data


def test_defaults(channels: Invoke) -> None:
    t = _show(channels)
    assert (t["notify"], t["notify_after_failures"], t["notify_remind_hours"]) == (None, 1, None)
    assert t["notify_on_success"] is False


def test_set_and_clear(channels: Invoke) -> None:
    r = channels(
        "task", "edit", "t", "--notify", "ops, phone,ops", "--notify-after", "3",
        "--notify-remind", "6", "--notify-success",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    t = _show(channels)
    assert t["notify"] == ["ops", "phone"]
    assert (t["notify_after_failures"], t["notify_remind_hours"]) == (3, 6.0)
    assert t["notify_on_success"] is True
    r = channels("task", "edit", "t", "--notify", "", "--notify-remind", "0", "--no-notify-success")
    assert r.exit_code == 0, r.output
    t = _show(channels)
    assert (t["notify"], t["notify_remind_hours"], t["notify_on_success"]) == (None, None, False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--notify", "nope"], "no notification channel named 'nope'"),
        (["--notify", "ops,bad name"], "notification channel 'bad name' is not valid"),
        (["--notify-after", "0"], "invalid notify_after_failures"),
        (["--notify-remind", "-1"], "invalid notify_remind_hours"),
    ],
)
def test_bad_values_are_refused(channels: Invoke, args: list[str], message: str) -> None:
    r = channels("task", "edit", "t", *args)
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert _show(channels)["notify"] is None
