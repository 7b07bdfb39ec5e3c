"""``svrctl notify add/list/edit/test/log/rm`` on SQLite and PostgreSQL, with real listeners."""

from __future__ import annotations

import json
import logging

import pytest
from conftest import Invoke
from fixtures.notify_listener import NotifyListener, closed_port, text_in_database

from svrctl.db.engine import Database

GOTIFY_TOKEN = "AcliGotifyTok3n"
NTFY_TOKEN = "tk_cliNtfyTok3n77"
APPRISE_SECRET = "Zz9appriseHookSecret"

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture
def cli(svrctl: Invoke, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    monkeypatch.setenv("SVRCTL_NOTIFY_TIMEOUT_SECONDS", "2")
    monkeypatch.setenv("SVRCTL_PREFECT_UI_URL", "http://ui.test")
    return svrctl


def _ok(cli: Invoke, *args: str) -> str:
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return result.output


def test_add_list_test_log_rm(
    cli: Invoke,
    database: Database,
    notify_listener: NotifyListener,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = notify_listener.url
    outputs = [
        _ok(cli, "notify", "add", "phone", "--kind", "gotify", "--url", url,
            "--token", GOTIFY_TOKEN),
        _ok(cli, "notify", "add", "ops", "--kind", "ntfy", "--url", url, "--topic", "alerts",
            "--token", NTFY_TOKEN, "--summaries"),
        _ok(cli, "notify", "add", "hook", "--kind", "apprise", "--url",
            f"json://127.0.0.1:{notify_listener.port}/{APPRISE_SECRET}", "--default"),
    ]  # fmt: skip
    assert "✓ added channel phone (gotify → http://127.0.0.1" in outputs[0]
    assert "default" in outputs[0]  # the first channel joins the default set
    assert "svrctl-notify-phone" in outputs[0]
    listed = json.loads(_ok(cli, "notify", "list", "--json"))
    assert [(c["name"], c["default"], c["summaries"]) for c in listed] == [
        ("hook", True, False),
        ("ops", False, True),
        ("phone", True, False),
    ]
    assert listed[0]["url"] == "json://…"
    table = _ok(cli, "notify", "list")
    assert "alerts" in table and "json://…" in table

    tested = _ok(cli, "notify", "test", "ops")
    assert "✓ ops: delivered in" in tested
    (req,) = notify_listener.requests
    assert req.header("Authorization") == f"Bearer {NTFY_TOKEN}"
    assert req.json()["title"] == "svrctl test notification"
    assert json.loads(_ok(cli, "notify", "test", "phone", "--json"))["ok"] is True
    assert notify_listener.requests[1].header("X-Gotify-Key") == GOTIFY_TOKEN

    notify_listener.fail()
    failed = cli("notify", "test", "hook")
    assert failed.exit_code == 1
    assert "✗ hook: not delivered" in failed.output and "500" in failed.output

    log = json.loads(_ok(cli, "notify", "log", "--json"))
    assert [(e["channel"], e["event"], e["ok"]) for e in log] == [
        ("hook", "test", False),
        ("phone", "test", True),
        ("ops", "test", True),
    ]
    assert "500" in log[0]["error"]
    assert len(json.loads(_ok(cli, "notify", "log", "--json", "--limit", "1"))) == 1
    assert json.loads(_ok(cli, "notify", "log", "--json", "--task", "backup")) == []
    human = _ok(cli, "notify", "log", "--channel", "hook")
    assert "hook" in human and "phone" not in human

    removed = _ok(cli, "notify", "rm", "hook")
    assert "✓ removed channel hook" in removed
    assert [c["name"] for c in json.loads(_ok(cli, "notify", "list", "--json"))] == [
        "ops",
        "phone",
    ]
    everything = "\n".join([*outputs, table, tested, failed.output, human, removed, caplog.text])
    for secret in (GOTIFY_TOKEN, NTFY_TOKEN, APPRISE_SECRET):
        assert secret not in everything
        assert text_in_database(database.engine, secret) == []


def test_test_exits_non_zero_when_the_channel_is_down(cli: Invoke) -> None:
    down = f"http://127.0.0.1:{closed_port()}"
    _ok(cli, "notify", "add", "n", "--kind", "ntfy", "--url", down, "--topic", "t")
    result = cli("notify", "test", "n", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert (data["channel"], data["ok"]) == ("n", False)
    assert data["error"]
    assert cli("notify", "test", "nope").exit_code == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "gotify", "--url", "gotify.lan", "--token", "x1234"], "invalid url (--url)"),
        (["--kind", "gotify", "--url", "https://g.lan"], "invalid token (--token)"),
        (["--kind", "ntfy", "--url", "https://n.lan"], "invalid topic (--topic)"),
        (["--kind", "ntfy", "--url", "https://n.lan", "--topic", "t", "--priority", "7"],
         "invalid priority (--priority)"),
        (["--kind", "apprise", "--url", "bogus://Yy8secretthing"], "invalid url (--url)"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_naming_the_option(cli: Invoke, args: list[str], message: str) -> None:
    result = cli("notify", "add", "x", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Yy8secretthing" not in result.output
    assert json.loads(_ok(cli, "notify", "list", "--json")) == []


def test_rm_refuses_a_channel_a_task_names(cli: Invoke) -> None:
    _ok(cli, "notify", "add", "ops", "--kind", "ntfy", "--url", "http://n.lan", "--topic", "t")
    _ok(cli, "task", "add", "backup", "--local", "--command", "true", "--notify", "ops")
    result = cli("notify", "rm", "ops")
    assert result.exit_code == 2
    assert "named by task(s) backup" in result.output
    _ok(cli, "task", "edit", "backup", "--notify", "")
    _ok(cli, "notify", "rm", "ops")


def test_edit(cli: Invoke) -> None:
    _ok(cli, "notify", "add", "a", "--kind", "gotify", "--url", "http://g.lan", "--token", "tok1x")
    out = _ok(cli, "notify", "edit", "a", "--no-default", "--summaries", "--priority", "9",
              "--token", "Tnewtoken99", "--json")  # fmt: skip
    data = json.loads(out)
    assert (data["default"], data["summaries"], data["priority"]) == (False, True, 9)
    assert "Tnewtoken99" not in out
    data = json.loads(_ok(cli, "notify", "edit", "a", "--priority", "", "--disabled", "--json"))
    assert (data["priority"], data["enabled"]) == (None, False)
    bad = cli("notify", "edit", "a", "--priority", "11")
    assert bad.exit_code == 2 and "invalid priority (--priority)" in bad.output
