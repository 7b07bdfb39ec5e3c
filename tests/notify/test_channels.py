"""Channels: validation, Secret blocks, the default set, removal rules, redaction."""

from __future__ import annotations

import logging

import pytest
from fixtures.notify_listener import text_in_database
from sqlalchemy import select

from svrctl.db.engine import Database
from svrctl.db.models import NotifyChannel, Task
from svrctl.exceptions import BadInputError, ConflictError, NotFoundError
from svrctl.notify.channels import (
    add_channel,
    redact,
    remember_secret,
    remove_channel,
    secret_block_name,
    update_channel,
)
from svrctl.secrets import prefect_secret

TOKEN = "Tgot1fy-token-value"

pytestmark = pytest.mark.usefixtures("prefect_api")


def _names(db: Database) -> list[tuple[str, bool]]:
    with db.read() as session:
        rows = session.scalars(select(NotifyChannel).order_by(NotifyChannel.id))
        return [(r.name, r.is_default) for r in rows]


def test_secret_block_names() -> None:
    assert secret_block_name("phone") == "svrctl-notify-phone"
    assert secret_block_name("Phone") != secret_block_name("phone")
    odd = secret_block_name("ops.team_1")
    assert odd.startswith("svrctl-notify-ops-team-1-")
    assert len(secret_block_name("x" * 64)) <= 63


def test_token_goes_to_a_secret_block_only(database: Database) -> None:
    data = add_channel(database, name="phone", kind="gotify", url="https://g.lan/", token=TOKEN)
    assert data["secret_block"] == "svrctl-notify-phone"
    assert data["url"] == "https://g.lan"
    assert prefect_secret("svrctl-notify-phone") == TOKEN
    assert text_in_database(database.engine, TOKEN) == []


def test_apprise_url_is_the_secret(database: Database) -> None:
    url = "slack://T1234ABCD/B5678EFGH/Xsecretslacktoken42/#ops"
    data = add_channel(database, name="slack", kind="apprise", url=url)
    assert data["url"] == "slack://…"
    assert prefect_secret(data["secret_block"]) == url
    assert text_in_database(database.engine, "Xsecretslacktoken42") == []


def test_first_channel_joins_the_default_set(database: Database) -> None:
    add_channel(database, name="a", kind="ntfy", url="http://n.lan", topic="t")
    add_channel(database, name="b", kind="ntfy", url="http://n.lan", topic="t")
    add_channel(database, name="c", kind="ntfy", url="http://n.lan", topic="t", default=True)
    assert _names(database) == [("a", True), ("b", False), ("c", True)]
    assert (
        add_channel(database, name="d", kind="ntfy", url="http://n.lan", topic="t")["secret_block"]
        is None
    )  # no token, no block


@pytest.mark.parametrize(
    ("kwargs", "field", "text"),
    [
        ({"kind": "gotify", "url": "ftp://g.lan", "token": TOKEN}, "url", "http:// or https://"),
        ({"kind": "gotify", "url": "https://g.lan"}, "token", "needs its app token"),
        ({"kind": "gotify", "url": "https://u:p@g.lan", "token": TOKEN}, "url", "credentials"),
        ({"kind": "ntfy", "url": "https://n.lan"}, "topic", "needs --topic"),
        ({"kind": "ntfy", "url": "https://n.lan", "topic": "a b"}, "topic", "letters, digits"),
        ({"kind": "ntfy", "url": "https://n.lan/sub", "topic": "t"}, "url", "has a path"),
        ({"kind": "ntfy", "url": "https://n.lan", "topic": "t", "priority": 6}, "priority", "1-5"),
        ({"kind": "gotify", "url": "https://g", "token": TOKEN, "priority": 11}, "priority",
         "0-10"),
        ({"kind": "apprise", "url": "nosuchscheme://Xsecret99"}, "url", "apprise cannot use"),
        ({"kind": "apprise", "url": "json://h", "priority": 3}, "priority", "from its URL"),
        ({"kind": "pager", "url": "https://p"}, "kind", "gotify, ntfy or apprise"),
    ],
)  # fmt: skip
def test_bad_input_writes_nothing(
    database: Database, kwargs: dict[str, object], field: str, text: str
) -> None:
    with pytest.raises(BadInputError) as caught:
        add_channel(database, name="x", **kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert text in caught.value.message
    assert "Xsecret99" not in caught.value.message
    assert _names(database) == []
    with pytest.raises(Exception, match="no Prefect Secret block"):
        prefect_secret(secret_block_name("x"))


def test_duplicate_name_is_a_conflict(database: Database) -> None:
    add_channel(database, name="a", kind="ntfy", url="http://n.lan", topic="t")
    with pytest.raises(ConflictError, match="exists already"):
        add_channel(database, name="a", kind="gotify", url="http://g.lan", token="other-token")
    with pytest.raises(BadInputError) as caught:
        add_channel(database, name="bad name", kind="ntfy", url="http://n.lan", topic="t")
    assert caught.value.field == "name"


def test_edit(database: Database) -> None:
    add_channel(database, name="a", kind="ntfy", url="http://n.lan", topic="t")
    data = update_channel(
        database, "a", token="tk_newtoken1", priority=2, default=False, summaries=True
    )
    assert (data["priority"], data["default"], data["summaries"]) == (2, False, True)
    assert prefect_secret(data["secret_block"]) == "tk_newtoken1"
    data = update_channel(database, "a", clear_priority=True, enabled=False, topic="u")
    assert (data["priority"], data["enabled"], data["topic"]) == (None, False, "u")
    with pytest.raises(BadInputError, match="1-5"):
        update_channel(database, "a", priority=9)
    with pytest.raises(NotFoundError):
        update_channel(database, "nope", enabled=True)


def test_remove_refuses_while_tasks_name_it_then_removes_the_block(database: Database) -> None:
    from prefect.blocks.system import Secret

    add_channel(database, name="a", kind="gotify", url="http://g.lan", token=TOKEN)
    with database.write() as session:
        session.add(Task(name="backup", kind="local", command="true", timezone="UTC", notify=["a"]))
    with pytest.raises(ConflictError, match="backup"):
        remove_channel(database, "a")
    assert _names(database) == [("a", True)]
    with database.write() as session:
        session.scalars(select(Task)).one().notify = None
    assert remove_channel(database, "a") is None
    assert _names(database) == []
    with pytest.raises(ValueError):
        Secret.load("svrctl-notify-a", _sync=True)  # type: ignore[call-arg]
    with pytest.raises(NotFoundError):
        remove_channel(database, "a")


def test_redact_hides_secrets_and_url_parts(caplog: pytest.LogCaptureFixture) -> None:
    remember_secret("discord://Wh00kid123/Tok3nPart456?avatar=no&key=Qk9value")
    text = "POST /api/webhooks/Wh00kid123/Tok3nPart456?key=Qk9value failed"
    assert redact(text) == "POST /api/webhooks/***/***?key=*** failed"
    caplog.set_level(logging.DEBUG)
    logging.getLogger("apprise").debug("headers: %s", {"Authorization": "Bearer Tok3nPart456"})
    assert "Tok3nPart456" not in caplog.text
    assert "Bearer ***" in caplog.text


def test_no_row_when_the_secret_block_cannot_be_saved(database: Database) -> None:
    from fixtures.notify_listener import closed_port
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    from svrctl.exceptions import SecretError

    down = f"http://127.0.0.1:{closed_port()}/api"
    with (
        temporary_settings(updates={PREFECT_API_URL: down, PREFECT_CLIENT_MAX_RETRIES: 0}),
        pytest.raises(SecretError, match="nothing was changed") as caught,
    ):
        add_channel(database, name="a", kind="gotify", url="http://g.lan", token=TOKEN)
    assert TOKEN not in caught.value.message
    assert _names(database) == []
