"""Servers and notification channels as Prefect blocks, against a real Prefect API.

Blocks are created and edited the way Prefect's Blocks page does it: a POST or PATCH
of the block document with the block type's latest schema and the form's data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from conftest import Invoke
from fixtures.notify_listener import closed_port, text_in_database
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import BlockDocumentCreate, BlockDocumentUpdate
from prefect.client.schemas.objects import BlockDocument
from prefect.exceptions import ObjectNotFound

from svrctl.blocks_sync import (
    CHANNEL_BLOCK_TYPE,
    EXPORT_MARK,
    SERVER_BLOCK_TYPE,
    block_document_name,
)
from svrctl.db.engine import open_database

TOKEN = "tk-Zq81-very-secret-token"


@pytest.fixture
def sv(svrctl: Invoke, prefect_api: str) -> Invoke:
    """The CLI against the test's Prefect API, with the block types registered and empty.

    The Prefect API is shared by the session: blocks of earlier tests are removed.
    """
    r = svrctl("blocks", "register")
    with client() as c:
        for slug in (SERVER_BLOCK_TYPE, CHANNEL_BLOCK_TYPE):
            for doc in c.read_block_documents_by_type(slug, include_secrets=False):
                c.delete_block_document(doc.id)
    assert r.exit_code == 0, r.output
    assert "svrctl-server" in r.output and "svrctl-notify-channel" in r.output
    return svrctl


def ok(sv: Invoke, *args: str) -> Result:
    r = sv(*args)
    assert r.exit_code == 0, r.output
    return r


def client() -> SyncPrefectClient:
    return get_client(sync_client=True)


def ui_create(slug: str, name: str, data: dict[str, Any]) -> BlockDocument:
    """Create a block document as the Blocks page does: latest schema, the form's data."""
    with client() as c:
        block_type = c.read_block_type_by_slug(slug)
        schema = c.get_most_recent_block_schema_for_block_type(block_type.id)
        assert schema is not None
        return c.create_block_document(
            BlockDocumentCreate(
                name=name, data=data, block_schema_id=schema.id, block_type_id=block_type.id
            )
        )


def ui_edit(slug: str, name: str, **changes: Any) -> None:
    """Change fields of a block document as the Blocks page's edit form does."""
    with client() as c:
        doc = c.read_block_document_by_name(name, slug, include_secrets=False)
        data = {**doc.data, **changes}
        c.update_block_document(doc.id, BlockDocumentUpdate(data=data, merge_existing_data=False))


def read_block(slug: str, name: str) -> BlockDocument:
    with client() as c:
        return c.read_block_document_by_name(name, slug, include_secrets=True)


def block_exists(slug: str, name: str) -> bool:
    try:
        read_block(slug, name)
    except ObjectNotFound:
        return False
    return True


def server(sv: Invoke, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ok(sv, "server", "show", name, "--json").stdout)
    return data


def apply_json(sv: Invoke, *args: str) -> tuple[int, dict[str, Any]]:
    r = sv("blocks", "apply", "--json", *args)
    return r.exit_code, json.loads(r.stdout)


WEB = {
    "name": "Web.1",
    "host": "10.0.0.5",
    "port": 2222,
    "username": "deploy",
    "host_key_policy": "accept-new",
    "tags": ["web", "eu"],
    "description": "front end",
    "enabled": True,
    "connect_timeout_seconds": 7,
    "sudo_password_secret": "web-1-sudo",
    "max_concurrent": 2,
}


def test_block_names_are_prefect_names() -> None:
    assert block_document_name("web-1") == "web-1"
    mixed = block_document_name("Web.1")
    assert mixed.startswith("web-1-") and mixed != block_document_name("web_1")
    assert all(c.islower() or c.isdigit() or c == "-" for c in mixed)


def test_prefect_cli_registers_the_block_types(prefect_api: str) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    prefect = Path(sys.executable).with_name("prefect")
    r = subprocess.run(
        [str(prefect), "block", "register", "-m", "svrctl.blocks"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    with client() as c:
        server_type = c.read_block_type_by_slug(SERVER_BLOCK_TYPE)
        channel_type = c.read_block_type_by_slug(CHANNEL_BLOCK_TYPE)
        schema = c.get_most_recent_block_schema_for_block_type(server_type.id)
        channel_schema = c.get_most_recent_block_schema_for_block_type(channel_type.id)
    assert server_type.name == "svrctl Server"
    assert channel_type.name == "svrctl Notification Channel"
    assert server_type.description and "source of truth" in server_type.description
    assert schema is not None and channel_schema is not None
    props = schema.fields["properties"]
    assert set(props) >= {
        "name",
        "host",
        "port",
        "username",
        "key_path",
        "host_key_policy",
        "work_pool",
        "tags",
        "description",
        "enabled",
        "jump",
        "connect_timeout_seconds",
        "key_passphrase_secret",
        "password_secret",
        "sudo_password_secret",
        "max_concurrent",
    }
    assert all(p.get("description") for k, p in props.items() if k != "description")
    policy = schema.fields["definitions"]["HostKeyPolicy"]
    assert policy["enum"] == ["strict", "accept-new"]
    kinds = channel_schema.fields["definitions"]["ChannelKind"]["enum"]
    assert kinds == ["gotify", "ntfy", "apprise"]
    assert channel_schema.fields["secret_fields"] == ["token"]


def test_block_from_the_blocks_page_is_applied(sv: Invoke, database_url: str) -> None:
    doc_name = block_document_name("Web.1")
    ui_create(SERVER_BLOCK_TYPE, doc_name, WEB)
    code, report = apply_json(sv)
    assert code == 0, report
    assert [(a["op"], a["name"], a["done"]) for a in report["actions"]] == [("add", "Web.1", True)]
    row = server(sv, "Web.1")
    for key, value in WEB.items():
        assert row[key] == value, key
    # applied once: a second apply finds nothing to do
    code, report = apply_json(sv)
    assert code == 0 and report["actions"] == [] and report["unchanged"] == 1


def test_dry_run_writes_nothing(sv: Invoke) -> None:
    ui_create(SERVER_BLOCK_TYPE, "db-1", {"name": "db-1", "host": "db1.example.org"})
    code, report = apply_json(sv, "--dry-run")
    assert code == 0 and report["dry_run"] is True
    assert [(a["op"], a["done"]) for a in report["actions"]] == [("add", False)]
    assert sv("server", "show", "db-1").exit_code == 2


def test_export_writes_database_edits_to_the_block(sv: Invoke) -> None:
    ok(sv, "server", "add", "app-1", "--host", "10.1.0.1", "--user", "ops", "--tag", "app")
    r = ok(sv, "blocks", "export")
    assert "+ create block app-1 of server app-1" in r.output
    assert read_block(SERVER_BLOCK_TYPE, "app-1").data["host"] == "10.1.0.1"
    ok(sv, "server", "edit", "app-1", "--port", "2200", "--description", "edited in the db")
    r = ok(sv, "blocks", "export")
    assert "~ rewrite block app-1 from server app-1: port, description" in r.output
    data = read_block(SERVER_BLOCK_TYPE, "app-1").data
    assert (data["port"], data["description"], data["username"]) == (
        2200,
        "edited in the db",
        "ops",
    )
    # nothing differs any more: nothing is written
    report = json.loads(ok(sv, "blocks", "export", "--json").stdout)
    assert report["actions"] == [] and report["unchanged"] == 1


def test_a_newer_block_edit_wins(sv: Invoke) -> None:
    ok(sv, "server", "add", "app-2", "--host", "10.1.0.2")
    ok(sv, "blocks", "export")
    ui_edit(SERVER_BLOCK_TYPE, "app-2", host="10.1.0.22", tags=["blue"], enabled=False)
    r = ok(sv, "blocks", "export")  # the export leaves a newer block edit alone
    assert "holds an edit of server app-2 newer than the database" in r.output
    assert read_block(SERVER_BLOCK_TYPE, "app-2").data["host"] == "10.1.0.22"
    code, report = apply_json(sv)
    assert code == 0, report
    assert report["actions"][0]["op"] == "update"
    assert report["actions"][0]["fields"] == ["host", "tags", "enabled"]
    row = server(sv, "app-2")
    assert (row["host"], row["tags"], row["enabled"]) == ("10.1.0.22", ["blue"], False)


def test_a_newer_database_edit_wins(sv: Invoke) -> None:
    ok(sv, "server", "add", "app-3", "--host", "10.1.0.3")
    ok(sv, "blocks", "export")
    ui_edit(SERVER_BLOCK_TYPE, "app-3", host="10.9.9.9")
    ok(sv, "server", "edit", "app-3", "--description", "changed after the block")
    code, report = apply_json(sv)
    assert code == 0 and report["actions"] == []
    assert any("the database wins" in n for n in report["notes"])
    assert server(sv, "app-3")["host"] == "10.1.0.3"
    r = ok(sv, "blocks", "export")
    assert "~ rewrite block app-3 from server app-3: host, description" in r.output
    data = read_block(SERVER_BLOCK_TYPE, "app-3").data
    assert (data["host"], data["description"]) == ("10.1.0.3", "changed after the block")


def test_an_invalid_block_is_refused_and_changes_nothing(sv: Invoke, database_url: str) -> None:
    ui_create(SERVER_BLOCK_TYPE, "bad-1", {"name": "bad-1", "host": "not a host!"})
    ok(sv, "server", "add", "app-4", "--host", "10.1.0.4")
    ok(sv, "blocks", "export")
    ui_edit(SERVER_BLOCK_TYPE, "app-4", port=2201, jump="nowhere")
    ui_create(SERVER_BLOCK_TYPE, "other-name", {"name": "app-5", "host": "10.1.0.5"})
    r = sv("blocks", "apply")
    assert r.exit_code == 1, r.output
    assert "! server block bad-1 (server bad-1), field host: invalid host: host 'not a host!'" in (
        r.output
    )
    assert "! server block app-4 (server app-4), field jump: no server named 'nowhere'" in r.output
    assert "field name: a block is named after its server" in r.output
    assert "'app-5' is 'app-5', not 'other-name'" in r.output
    assert sv("server", "show", "bad-1").exit_code == 2
    assert sv("server", "show", "app-5").exit_code == 2
    assert server(sv, "app-4")["port"] == 22  # the valid port of the refused block is not taken
    db = open_database(database_url)
    try:
        assert text_in_database(db.engine, "not a host") == []
    finally:
        db.dispose()


def test_channel_token_stays_secret(sv: Invoke, database_url: str) -> None:
    ui_create(
        CHANNEL_BLOCK_TYPE,
        "ops",
        {
            "name": "ops",
            "kind": "ntfy",
            "url": "https://ntfy.example.org",
            "topic": "alerts",
            "token": TOKEN,
            "priority": 4,
            "summaries": True,
        },
    )
    r = ok(sv, "sync")  # svrctl sync applies the blocks first, then exports
    assert TOKEN not in r.output
    channel = json.loads(ok(sv, "notify", "list", "--json").stdout)[0]
    assert (channel["name"], channel["kind"], channel["topic"], channel["priority"]) == (
        "ops",
        "ntfy",
        "alerts",
        4,
    )
    assert channel["summaries"] is True and channel["default"] is True
    secret = read_block("secret", channel["secret_block"])
    assert secret.data["value"] == TOKEN  # where `svrctl notify add` keeps it
    assert read_block(CHANNEL_BLOCK_TYPE, "ops").data["token"] is None  # moved out
    db = open_database(database_url)
    try:
        assert text_in_database(db.engine, TOKEN) == []
    finally:
        db.dispose()
    # a new token typed into the form replaces the secret, and never prints
    new_token = "tk-second-token-0042"
    ui_edit(CHANNEL_BLOCK_TYPE, "ops", token=new_token, markdown=False)
    r = sv("blocks", "apply")
    assert r.exit_code == 0, r.output
    assert "~ update channel ops from block ops: markdown, token" in r.output
    assert new_token not in r.output
    assert read_block("secret", channel["secret_block"]).data["value"] == new_token
    r = ok(sv, "blocks", "export", "--json")
    assert new_token not in r.output
    assert read_block(CHANNEL_BLOCK_TYPE, "ops").data["token"] is None


def test_an_invalid_channel_block_is_refused(sv: Invoke) -> None:
    ui_create(
        CHANNEL_BLOCK_TYPE,
        "gt",
        {"name": "gt", "kind": "gotify", "url": "https://gotify.example.org"},
    )
    ui_create(
        CHANNEL_BLOCK_TYPE,
        "nt",
        {"name": "nt", "kind": "ntfy", "url": "ftp://x", "topic": "a", "token": TOKEN},
    )
    r = sv("blocks", "apply")
    assert r.exit_code == 1
    assert "! channel block gt (channel gt), field token: invalid token (--token): a gotify" in (
        r.output
    )
    assert "! channel block nt (channel nt), field url:" in r.output
    assert TOKEN not in r.output
    assert json.loads(ok(sv, "notify", "list", "--json").stdout) == []


def test_removal_deletes_the_block(
    sv: Invoke, prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok(sv, "server", "add", "gone-1", "--host", "10.2.0.1")
    ok(sv, "server", "add", "kept-1", "--host", "10.2.0.2")
    ok(sv, "notify", "add", "pager", "--kind", "ntfy", "--url", "https://n.example.org",
       "--topic", "p")  # fmt: skip
    ok(sv, "blocks", "export")
    assert block_exists(SERVER_BLOCK_TYPE, "gone-1") and block_exists(CHANNEL_BLOCK_TYPE, "pager")
    r = ok(sv, "server", "rm", "gone-1")
    assert r.stderr == ""
    assert not block_exists(SERVER_BLOCK_TYPE, "gone-1")
    assert block_exists(SERVER_BLOCK_TYPE, "kept-1")
    ok(sv, "notify", "rm", "pager")
    assert not block_exists(CHANNEL_BLOCK_TYPE, "pager")
    # no Prefect API: the removal says the block is left behind
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{closed_port()}/api")
    r = ok(sv, "server", "rm", "kept-1")
    assert "the server block kept-1 (if any) was not deleted" in r.stderr
    assert "`svrctl sync`" in r.stderr
    # back online: the block svrctl wrote does not bring the server back, the export drops it
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    assert block_exists(SERVER_BLOCK_TYPE, "kept-1")
    code, report = apply_json(sv)
    assert code == 0 and report["actions"] == []
    assert any("no longer in the database" in n for n in report["notes"])
    assert sv("server", "show", "kept-1").exit_code == 2
    r = ok(sv, "blocks", "export")
    assert "- delete block kept-1 of server kept-1" in r.output
    assert not block_exists(SERVER_BLOCK_TYPE, "kept-1")


def test_blocks_another_database_exported_are_not_imported(sv: Invoke) -> None:
    """A fresh app database on a Prefect server that holds the blocks of another one."""
    ui_create(
        SERVER_BLOCK_TYPE,
        "old-1",
        {"name": "old-1", "host": "10.3.0.1", EXPORT_MARK: True},  # as the export writes it
    )
    ui_create(SERVER_BLOCK_TYPE, "new-1", {"name": "new-1", "host": "10.3.0.2"})  # a person's
    r = ok(sv, "sync")
    assert "+ add server new-1 from block new-1" in r.output
    assert "- delete block old-1 of server old-1" in r.output
    assert server(sv, "new-1")["host"] == "10.3.0.2"
    assert sv("server", "show", "old-1").exit_code == 2
    assert not block_exists(SERVER_BLOCK_TYPE, "old-1")
    assert read_block(SERVER_BLOCK_TYPE, "new-1").data[EXPORT_MARK] is True


def test_a_sync_registers_the_block_types_once(
    sv: Invoke, database_url: str, prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import svrctl.blocks_sync as blocks_sync

    calls: list[str] = []
    register = blocks_sync.register_block_types

    def counted(api_url: str) -> list[str]:
        calls.append(api_url)
        return register(api_url)

    monkeypatch.setattr(blocks_sync, "register_block_types", counted)
    ok(sv, "server", "add", "app-2", "--host", "10.1.0.2", "--user", "ops")
    db = open_database(database_url)
    try:
        report = blocks_sync.sync_blocks(db, prefect_api)
    finally:
        db.dispose()
    assert report.ok, report.lines()
    assert calls == [prefect_api]
    assert block_exists(SERVER_BLOCK_TYPE, block_document_name("app-2"))
