"""``svrctl server ...`` on SQLite and PostgreSQL, including every bad input."""

from __future__ import annotations

import json

import pytest
from conftest import Invoke


def _count(svrctl: Invoke) -> int:
    return len(json.loads(svrctl("server", "list", "--json").output))


def test_add_list_show(svrctl: Invoke) -> None:
    r = svrctl(
        "server", "add", "web-1", "--host", "web1.example.lan", "--port", "2222", "--user",
        "deploy", "--key", "~/.ssh/id_web", "--host-key-policy", "accept-new", "--pool", "lab",
        "--tag", "web", "--tag", "prod", "--description", "front",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "✓ added server web-1 (deploy@web1.example.lan:2222" in r.output
    data = json.loads(svrctl("server", "show", "web-1", "--json").output)
    assert data | {"id": 0, "created": None, "updated": None} == {
        "id": 0,
        "name": "web-1",
        "host": "web1.example.lan",
        "port": 2222,
        "username": "deploy",
        "key_path": "~/.ssh/id_web",
        "host_key_policy": "accept-new",
        "work_pool": "lab",
        "tags": ["web", "prod"],
        "description": "front",
        "enabled": True,
        "os_type": None,
        "os_version": None,
        "last_seen": None,
        "jump": None,
        "connect_timeout_seconds": 10,
        "key_passphrase_secret": None,
        "password_secret": None,
        "sudo_password_secret": None,
        "max_concurrent": None,
        "created": None,
        "updated": None,
    }
    listed = svrctl("server", "list")
    assert listed.exit_code == 0
    assert "deploy@web1.example.lan:2222" in listed.output
    assert "web,prod" in listed.output
    human = svrctl("server", "show", "web-1").output
    assert "host_key_policy:  accept-new" in human


def test_defaults(svrctl: Invoke) -> None:
    import getpass

    assert svrctl("server", "add", "a", "--host", "10.0.0.5").exit_code == 0
    data = json.loads(svrctl("server", "show", "a", "--json").output)
    assert data["port"] == 22
    assert data["username"] == getpass.getuser()
    assert data["host_key_policy"] == "strict"
    assert data["key_path"] is None
    assert data["tags"] == []


def test_empty_list(svrctl: Invoke) -> None:
    assert svrctl("server", "list").output.strip() == "(none)"
    assert json.loads(svrctl("server", "list", "--json").output) == []


def test_edit_changes_only_what_is_given(svrctl: Invoke) -> None:
    svrctl("server", "add", "a", "--host", "h1", "--port", "2200", "--tag", "x")
    r = svrctl("server", "edit", "a", "--host", "h2", "--tag", "y", "--tag", "z", "--disabled")
    assert r.exit_code == 0, r.output
    data = json.loads(svrctl("server", "show", "a", "--json").output)
    assert (data["host"], data["port"], data["tags"], data["enabled"]) == (
        "h2",
        2200,
        ["y", "z"],
        False,
    )


def test_rm(svrctl: Invoke) -> None:
    svrctl("server", "add", "a", "--host", "h1")
    r = svrctl("server", "rm", "a")
    assert r.exit_code == 0
    assert "✓ removed server a" in r.output
    assert _count(svrctl) == 0


def test_rm_refuses_a_server_that_tasks_use(svrctl: Invoke) -> None:
    svrctl("server", "add", "a", "--host", "h1")
    svrctl("task", "add", "t", "--server", "a", "--command", "uptime")
    r = svrctl("server", "rm", "a")
    assert r.exit_code == 2
    assert "still the target of task(s) t" in r.output
    assert _count(svrctl) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "a", "--host", "h", "--port", "0"], "invalid port"),
        (["add", "a", "--host", "h", "--port", "65536"], "invalid port"),
        (["add", "a", "--host", "-oProxyCommand=x"], "invalid host"),
        (["add", "a", "--host", "h h"], "invalid host"),
        (["add", "a", "--host", ""], "invalid host"),
        (["add", "a b", "--host", "h"], "invalid name"),
        (["add", "a\nb", "--host", "h"], "invalid name"),
        (["add", "--host", "h", "--", "-x"], "invalid name"),
        (["add", "a" * 65, "--host", "h"], "invalid name"),
        (["add", "a", "--host", "h", "--user", "-l root"], "invalid username"),
        (["add", "a", "--host", "h", "--tag", "a;b"], "invalid tags"),
        (["add", "a", "--host", "h", "--pool", "p q"], "invalid work_pool"),
        (["show", "nope"], "no server named 'nope'"),
        (["edit", "nope", "--port", "23"], "no server named 'nope'"),
        (["rm", "nope"], "no server named 'nope'"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    svrctl: Invoke, args: list[str], message: str
) -> None:
    r = svrctl("server", *args)
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert r.output.startswith("error: ")
    assert _count(svrctl) == 0


def test_duplicate_name(svrctl: Invoke) -> None:
    svrctl("server", "add", "a", "--host", "h1")
    r = svrctl("server", "add", "a", "--host", "h2")
    assert r.exit_code == 2
    assert "a server named 'a' already exists" in r.output
    assert json.loads(svrctl("server", "show", "a", "--json").output)["host"] == "h1"


def test_bad_edit_changes_nothing(svrctl: Invoke) -> None:
    svrctl("server", "add", "a", "--host", "h1")
    r = svrctl("server", "edit", "a", "--host", "h2", "--port", "99999")
    assert r.exit_code == 2
    assert json.loads(svrctl("server", "show", "a", "--json").output)["host"] == "h1"


def test_bad_host_key_policy_is_a_usage_error(svrctl: Invoke) -> None:
    r = svrctl("server", "add", "a", "--host", "h", "--host-key-policy", "off")
    assert r.exit_code == 2
    assert "'off' is not one of 'strict', 'accept-new'" in r.output


def test_ipv6_and_brackets(svrctl: Invoke) -> None:
    assert svrctl("server", "add", "a", "--host", "[::1]").exit_code == 0
    assert json.loads(svrctl("server", "show", "a", "--json").output)["host"] == "::1"


def test_connection_options(svrctl: Invoke) -> None:
    assert svrctl("server", "add", "bastion", "--host", "b").exit_code == 0
    r = svrctl(
        "server", "add", "inner", "--host", "10.1.0.5", "--jump", "bastion",
        "--connect-timeout", "5", "--key-passphrase-secret", "inner-key-pass",
        "--password-secret", "inner-pw", "--sudo-password-secret", "inner-sudo",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    data = json.loads(svrctl("server", "show", "inner", "--json").output)
    assert (data["jump"], data["connect_timeout_seconds"]) == ("bastion", 5)
    assert (data["key_passphrase_secret"], data["password_secret"]) == (
        "inner-key-pass",
        "inner-pw",
    )
    assert data["sudo_password_secret"] == "inner-sudo"
    # a jump host in use cannot be removed; '' clears the option
    r = svrctl("server", "rm", "bastion")
    assert r.exit_code == 2
    assert "jump host of inner" in r.output
    assert svrctl("server", "edit", "inner", "--jump", "", "--password-secret", "").exit_code == 0
    data = json.loads(svrctl("server", "show", "inner", "--json").output)
    assert (data["jump"], data["password_secret"]) == (None, None)
    assert svrctl("server", "rm", "bastion").exit_code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--jump", "nope"], "no server named 'nope'"),
        (["--jump", "a"], "cannot be its own jump host"),
        (["--connect-timeout", "0"], "invalid connect_timeout_seconds"),
        (["--sudo-password-secret", "Not_A_Block"], "not a Prefect block name"),
    ],
)
def test_bad_connection_options(svrctl: Invoke, args: list[str], message: str) -> None:
    r = svrctl("server", "add", "a", "--host", "h", *args)
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert _count(svrctl) == 0


def test_jump_hosts_may_not_loop(svrctl: Invoke) -> None:
    svrctl("server", "add", "a", "--host", "h")
    svrctl("server", "add", "b", "--host", "h", "--jump", "a")
    r = svrctl("server", "edit", "a", "--jump", "b")
    assert r.exit_code == 2
    assert "may not form a loop" in r.output
