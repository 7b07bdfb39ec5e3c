"""Delivery to real loopback listeners: payloads, auth headers, priorities, timeouts, the log."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from fixtures.notify_listener import NotifyListener, closed_port, text_in_database
from sqlalchemy import select

from svrctl.db.engine import Database
from svrctl.db.models import NotificationLog, NotifyChannel
from svrctl.notify import Event, Notice
from svrctl.notify.channels import add_channel
from svrctl.notify.deliver import deliver, run_url
from svrctl.settings import Settings

GOTIFY_TOKEN = "AgotifyTok3n.x9"
NTFY_TOKEN = "tk_ntfysecrettoken42"
RUN_ID = "0b3e5c1a-1111-2222-3333-444455556666"
RUN_URL = f"http://ui.test:4200/runs/flow-run/{RUN_ID}"

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path / "home",
        timezone="UTC",
        notify_timeout_seconds=2,
        prefect_ui_url="http://ui.test:4200/",
    )


def _notice(
    priority: int = 5, *, url: str | None = RUN_URL, event: Event = Event.FAILURE
) -> Notice:
    return Notice(
        event=event,
        title="backup failed on web-1",
        body="**exit 1** after 3 s\n\n```\nno space left\n```",
        priority=priority,
        task_id=None,
        task_name="backup",
        status="failed",
        flow_run_id=RUN_ID,
        run_url=url,
    )


def _rows(db: Database) -> list[NotificationLog]:
    with db.read() as session:
        return list(session.scalars(select(NotificationLog).order_by(NotificationLog.id)))


def test_gotify_payload_and_token_header(
    database: Database, settings: Settings, notify_listener: NotifyListener
) -> None:
    notify_listener.gotify_token = GOTIFY_TOKEN
    add_channel(database, name="phone", kind="gotify", url=notify_listener.url, token=GOTIFY_TOKEN)
    results = deliver(database, settings, _notice(8), None)
    assert [(r.channel, r.ok, r.error) for r in results] == [("phone", True, None)]
    (req,) = notify_listener.requests
    assert (req.method, req.path, req.query) == ("POST", "/message", {})
    assert req.header("X-Gotify-Key") == GOTIFY_TOKEN
    assert req.header("Content-Type") == "application/json"
    assert req.json() == {
        "priority": 8,
        "title": "backup failed on web-1",
        "message": f"**exit 1** after 3 s\n\n```\nno space left\n```\n\n[View run]({RUN_URL})",
        "extras": {"client::display": {"contentType": "text/markdown"}},
    }
    (row,) = _rows(database)
    assert (row.channel, row.event, row.status, row.ok, row.error) == (
        "phone",
        "failure",
        "failed",
        True,
        None,
    )
    assert (row.task_name, row.flow_run_id) == ("backup", RUN_ID)


@pytest.mark.parametrize(
    ("notice_priority", "channel_priority", "sent"),
    [(1, None, 0), (2, None, 0), (4, None, 3), (5, None, 5), (7, None, 5), (9, None, 8),
     (10, None, 10), (2, 10, 10), (9, 3, 3)],
)  # fmt: skip
def test_gotify_priority_mapping(
    database: Database,
    settings: Settings,
    notify_listener: NotifyListener,
    notice_priority: int,
    channel_priority: int | None,
    sent: int,
) -> None:
    add_channel(
        database,
        name="g",
        kind="gotify",
        url=notify_listener.url + "/",
        token=GOTIFY_TOKEN,
        priority=channel_priority,
        markdown=False,
    )
    assert deliver(database, settings, _notice(notice_priority, url=None), ["g"])[0].ok
    data = notify_listener.requests[0].json()
    assert data["priority"] == sent
    assert "extras" not in data  # markdown off


def test_gotify_under_a_path_and_plain_link(
    database: Database, settings: Settings, notify_listener: NotifyListener
) -> None:
    # Gotify behind a reverse proxy at /gotify: the listener records the path as sent
    add_channel(
        database,
        name="g",
        kind="gotify",
        url=notify_listener.url + "/gotify",
        token=GOTIFY_TOKEN,
        markdown=False,
    )
    deliver(database, settings, _notice(), ["g"])
    (req,) = notify_listener.requests
    assert req.path == "/gotify/message"
    assert req.json()["message"].endswith(f"\n\n{RUN_URL}")


def test_ntfy_payload_view_run_action_and_bearer_token(
    database: Database, settings: Settings, notify_listener: NotifyListener
) -> None:
    add_channel(
        database,
        name="ops",
        kind="ntfy",
        url=notify_listener.url,
        topic="svrctl-alerts",
        token=NTFY_TOKEN,
    )
    results = deliver(database, settings, _notice(9), ["ops"])
    assert results[0].ok, results
    (req,) = notify_listener.requests
    assert (req.method, req.path) == ("POST", "/")
    assert req.json() == {
        "topic": "svrctl-alerts",
        "title": "backup failed on web-1",
        "message": "**exit 1** after 3 s\n\n```\nno space left\n```",
    }
    assert req.header("Authorization") == f"Bearer {NTFY_TOKEN}"
    assert req.header("X-Priority") == "max"
    assert req.header("X-Markdown") == "yes"
    assert req.header("X-Actions") == f"view, View run, {RUN_URL}"
    assert req.header("X-Click") == RUN_URL
    assert req.header("X-Icon") is None  # no image fetched from an outside host


@pytest.mark.parametrize(
    ("notice_priority", "header"),
    [(1, "min"), (2, "min"), (3, "low"), (4, "low"), (5, None), (6, None), (7, "high"),
     (8, "high"), (9, "max"), (10, "max")],
)  # fmt: skip
def test_ntfy_priority_mapping(
    database: Database,
    settings: Settings,
    notify_listener: NotifyListener,
    notice_priority: int,
    header: str | None,
) -> None:
    add_channel(database, name="n", kind="ntfy", url=notify_listener.url, topic="t")
    deliver(database, settings, _notice(notice_priority), None)
    # ntfy's default priority (3) is sent as no header at all
    assert notify_listener.requests[0].header("X-Priority") == header


def test_ntfy_without_token_markdown_or_link(
    database: Database, settings: Settings, notify_listener: NotifyListener
) -> None:
    add_channel(
        database,
        name="n",
        kind="ntfy",
        url=notify_listener.url,
        topic="t",
        priority=4,
        markdown=False,
    )
    assert deliver(database, settings, _notice(1, url=None), None)[0].ok
    (req,) = notify_listener.requests
    assert req.header("Authorization") is None
    assert req.header("X-Markdown") is None
    assert req.header("X-Actions") is None
    assert req.header("X-Priority") == "high"  # the channel's fixed priority wins


def test_apprise_url_channel(
    database: Database, settings: Settings, notify_listener: NotifyListener
) -> None:
    url = f"json://127.0.0.1:{notify_listener.port}/hooks/Zq8secretpath"
    data = add_channel(database, name="hook", kind="apprise", url=url)
    assert data["url"] == "json://…"
    results = deliver(database, settings, _notice(), ["hook"])
    assert results[0].ok, results
    (req,) = notify_listener.requests
    assert (req.method, req.path) == ("POST", "/hooks/Zq8secretpath")
    sent = req.json()
    assert sent["title"] == "backup failed on web-1"
    assert sent["message"].endswith(f"[View run]({RUN_URL})")
    assert sent["type"] == "failure"
    assert text_in_database(database.engine, "Zq8secretpath") == []


def test_down_and_hanging_channels_are_bounded_and_logged(
    database: Database,
    settings: Settings,
    notify_listener: NotifyListener,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from fixtures.notify_listener import NotifyListener as Listener

    caplog.set_level(logging.DEBUG)
    hanging = Listener(host="127.0.0.1", port=0)
    hanging.start()
    try:
        hanging.hang(30)
        down = f"http://127.0.0.1:{closed_port()}"
        add_channel(database, name="down", kind="gotify", url=down, token=GOTIFY_TOKEN)
        add_channel(database, name="hangs", kind="ntfy", url=hanging.url, topic="t",
                    token=NTFY_TOKEN, default=True)  # fmt: skip
        add_channel(database, name="works", kind="ntfy", url=notify_listener.url, topic="t",
                    default=True)  # fmt: skip
        started = time.monotonic()
        results = deliver(database, settings, _notice(), None)
        elapsed = time.monotonic() - started
        assert elapsed < settings.notify_timeout_seconds + 2, elapsed
        hanging.wait_for(1)
    finally:
        hanging.stop()
    by_name = {r.channel: r for r in results}
    assert set(by_name) == {"down", "hangs", "works"}
    assert by_name["works"].ok
    assert not by_name["down"].ok and by_name["down"].error
    assert not by_name["hangs"].ok and by_name["hangs"].error
    assert len(notify_listener.requests) == 1
    rows = {r.channel: r for r in _rows(database)}
    assert (rows["down"].ok, rows["hangs"].ok, rows["works"].ok) == (False, False, True)
    assert rows["down"].error == by_name["down"].error
    failures = [r for r in caplog.records if r.name == "svrctl.notify" and "failed" in r.message]
    assert {r.levelname for r in failures} == {"WARNING"}
    assert any("down" in r.getMessage() for r in failures)
    for token in (GOTIFY_TOKEN, NTFY_TOKEN):
        assert token not in caplog.text
        assert text_in_database(database.engine, token) == []


def test_server_error_is_recorded_without_secrets(
    database: Database,
    settings: Settings,
    notify_listener: NotifyListener,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    notify_listener.fail()
    secret_url = f"json://127.0.0.1:{notify_listener.port}/hook/Hx7tokenpart?token=Qw3qtoken"
    add_channel(database, name="hook", kind="apprise", url=secret_url)
    add_channel(database, name="ops", kind="ntfy", url=notify_listener.url, topic="t",
                token=NTFY_TOKEN)  # fmt: skip
    results = deliver(database, settings, _notice(), ["hook", "ops"])
    assert [r.ok for r in results] == [False, False]
    assert all("500" in (r.error or "") for r in results), results
    assert len(notify_listener.requests) == 2
    for secret in ("Hx7tokenpart", "Qw3qtoken", NTFY_TOKEN):
        assert secret not in caplog.text
        assert text_in_database(database.engine, secret) == []
        assert all(secret not in (r.error or "") for r in results)


def test_channel_selection(
    database: Database, settings: Settings, notify_listener: NotifyListener
) -> None:
    for name, default, summaries in (("a", True, False), ("b", False, True), ("c", True, True)):
        add_channel(database, name=name, kind="ntfy", url=notify_listener.url, topic=name,
                    default=default, summaries=summaries)  # fmt: skip
    with database.write() as session:
        session.scalars(
            select(NotifyChannel).where(NotifyChannel.name == "c")
        ).one().enabled = False

    def sent(*args: object, **kwargs: bool) -> list[str]:
        notify_listener.clear()
        results = deliver(database, settings, _notice(), *args, **kwargs)  # type: ignore[arg-type]
        assert all(r.ok for r in results if r.channel != "gone")
        return sorted(r.json()["topic"] for r in notify_listener.requests)

    assert sent(None) == ["a"]  # the default set, enabled only
    assert sent(["b"]) == ["b"]
    assert sent(["b", "c"]) == ["b"]  # disabled channels are skipped
    assert sent(["a"], summaries=True) == ["b"]  # summaries ignore the names
    results = deliver(database, settings, _notice(), ["gone", "a"])
    assert [(r.channel, r.ok) for r in results] == [("gone", False), ("a", True)]
    assert _rows(database)[-2].channel == "gone"


def test_no_channels_sends_nothing(database: Database, settings: Settings) -> None:
    assert deliver(database, settings, _notice(), None) == []
    assert _rows(database) == []


def test_run_url(settings: Settings) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    assert run_url(settings, "abc") == "http://ui.test:4200/runs/flow-run/abc"
    assert run_url(settings, None) is None
    plain = settings.model_copy(update={"prefect_ui_url": None})
    with temporary_settings(updates={PREFECT_API_URL: "http://prefect.lan:4200/api/"}):
        assert run_url(plain, "abc") == "http://prefect.lan:4200/runs/flow-run/abc"
