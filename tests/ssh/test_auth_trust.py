"""Authentication and host-key trust, against real sshd processes on loopback.

Keys: the auto-detection order, encrypted keys and their passphrase (also from a
real Prefect Secret block), password logins, key files that cannot be used.
Trust: unknown host keys under strict, pinning on first contact, changed host
keys (nothing runs), and ``svrctl server trust``.
"""

from __future__ import annotations

import logging
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Invoke
from fixtures.sshd import SshdFactory, SshdTarget, make_key
from helpers_auth import (
    cli,
    copy_key,
    is_root,
    json_out,
    log_lines,
    make_target,
    pin,
    ssh_keygen_fingerprint,
    wait_for_log,
)

from svrctl.db.models import HostKeyPolicy
from svrctl.exceptions import (
    AuthFailedError,
    HostKeyChangedError,
    HostKeyError,
    HostKeyUnknownError,
    KeyFileError,
)
from svrctl.ssh.connection import connect
from svrctl.ssh.fanout import run_command, run_on_many
from svrctl.ssh.keys import AUTO_KEY_NAMES
from svrctl.ssh.probe import test_connection as probe_connection

AUTO_ORDER = ("id_ed25519", "id_rsa", "id_ecdsa")
PASSPHRASE = "correct horse battery staple"
REFUSED = "refused by the server"


@pytest.fixture(autouse=True)
def private_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """HOME is a tmp dir: target_for_server reads ~/.ssh/known_hosts, never the real one."""
    home = tmp_path / "user-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture(scope="module")
def keyring(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One key of each auto-detected type (id_dsa too when ssh-keygen still makes one)."""
    folder = tmp_path_factory.mktemp("keyring")
    make_key(folder / "id_ed25519", "ed25519")
    make_key(folder / "id_rsa", "rsa", bits=2048)
    make_key(folder / "id_ecdsa", "ecdsa")
    try:
        make_key(folder / "id_dsa", "dsa")
    except RuntimeError:
        (folder / "id_dsa").unlink(missing_ok=True)
    return folder


@pytest.fixture
def key_dir(keyring: Path, tmp_path: Path) -> Path:
    """A private copy of the keyring (mode 0600), to use as a target's key dir."""
    folder = tmp_path / "keys"
    for key in keyring.iterdir():
        if not key.name.endswith(".pub"):
            copy_key(key, folder / key.name)
    return folder


def _fingerprint_of(key: Path) -> str:
    return ssh_keygen_fingerprint(key.with_name(key.name + ".pub"))


def _host_fingerprint(sshd: SshdTarget) -> str:
    return _fingerprint_of(sshd.host_key)


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def _is_encrypted(key: Path) -> bool:
    """Ask ssh-keygen (not svrctl) whether the key needs a passphrase."""
    probe = subprocess.run(
        ["ssh-keygen", "-y", "-P", "", "-f", str(key)],
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.returncode != 0


def _add_server(svrctl: Invoke, name: str, sshd: SshdTarget, *extra: str) -> None:
    result = svrctl(
        "server", "add", name, "--host", sshd.host, "--port", str(sshd.port),
        "--user", sshd.username, *extra,
    )  # fmt: skip
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------- key detection


@pytest.mark.parametrize("authorized", AUTO_ORDER)
def test_auto_detected_keys_are_tried_in_order(
    authorized: str,
    key_dir: Path,
    sshd_factory: SshdFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = sshd_factory(authorized_keys=[key_dir / authorized])
    target = make_target(server, tmp_path, key_path=None, key_dir=key_dir)
    pin(server, tmp_path / "known_hosts")
    caplog.set_level(logging.INFO, logger="svrctl.ssh")

    with connect(target) as session:
        assert session.auth_method == str(key_dir / authorized)
        result = session.run("echo authenticated", timeout=10)
    assert result.stdout == "authenticated\n"

    present = [name for name in AUTO_KEY_NAMES if (key_dir / name).exists()]
    assert present[:3] == list(AUTO_ORDER)
    messages = _messages(caplog)
    assert [m for m in messages if m.startswith("Found SSH key: ")] == [
        f"Found SSH key: {key_dir / name}" for name in present
    ]
    assert f"Successfully connected with key: {key_dir / authorized}" in messages
    # sshd saw the keys before the authorized one, refused them in order, and no later one.
    accepted = wait_for_log(server, "Accepted publickey")
    assert len(accepted) == 1
    assert accepted[0].endswith(_fingerprint_of(key_dir / authorized))
    earlier = AUTO_ORDER[: AUTO_ORDER.index(authorized)]
    failed = [line.split()[-1] for line in log_lines(server, "Failed publickey")]
    assert failed == [_fingerprint_of(key_dir / name) for name in earlier]


@pytest.mark.filterwarnings("ignore:SSH DSA keys are deprecated")
def test_no_key_accepted_lists_every_key_tried_in_order(
    key_dir: Path, sshd: SshdTarget, tmp_path: Path
) -> None:
    # The shared sshd authorizes only its own user key, none of these.
    target = make_target(sshd, tmp_path, key_path=None, key_dir=key_dir)
    pin(sshd, tmp_path / "known_hosts")
    with pytest.raises(AuthFailedError) as info:
        connect(target)
    err = info.value
    assert [(Path(path).name, why) for path, why in err.tried[:3]] == [
        (name, REFUSED) for name in AUTO_ORDER
    ]
    if (key_dir / "id_dsa").exists():
        # paramiko 5 cannot use DSA keys: the key is listed with the reason, not a crash.
        assert len(err.tried) == 4
        path, why = err.tried[3]
        assert path == str(key_dir / "id_dsa")
        assert why.startswith("not a usable private key"), why
    else:
        assert len(err.tried) == 3
    for name in AUTO_ORDER:
        assert f"{key_dir / name}: {REFUSED}" in err.message
    assert f"authentication as {sshd.username!r} on {sshd.host}:{sshd.port} failed" in err.message
    assert (err.host, err.port, err.user) == (sshd.host, sshd.port, sshd.username)


def test_empty_key_dir_says_where_it_looked(sshd: SshdTarget, tmp_path: Path) -> None:
    empty = tmp_path / "empty-key-dir"
    empty.mkdir()
    target = make_target(sshd, tmp_path, key_path=None, key_dir=empty)
    pin(sshd, tmp_path / "known_hosts")
    with pytest.raises(AuthFailedError) as info:
        connect(target)
    assert info.value.tried == []
    assert f"no key found (looked in {empty})" in info.value.message


def test_connection_test_logs_and_reports(
    sshd: SshdTarget, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = make_target(sshd, tmp_path)
    pin(sshd, tmp_path / "known_hosts")
    caplog.set_level(logging.INFO, logger="svrctl.ssh")
    report = probe_connection(target)
    messages = _messages(caplog)
    assert f"Testing SSH connection to {sshd.username}@{sshd.host}:{sshd.port}" in messages
    assert f"Successfully connected with key: {sshd.user_key}" in messages
    assert report.auth == str(sshd.user_key)
    assert report.host_key == f"ssh-ed25519 {_host_fingerprint(sshd)}"


# --------------------------------------------------------------- encrypted keys


@pytest.mark.parametrize(
    ("key_type", "key_format"),
    [
        pytest.param("ed25519", None, id="ed25519"),
        pytest.param("ecdsa", None, id="ecdsa"),
        pytest.param("rsa", "PEM", id="rsa-pem"),
    ],
)
def test_encrypted_key_with_its_passphrase(
    key_type: str, key_format: str | None, sshd_factory: SshdFactory, tmp_path: Path
) -> None:
    bits = 2048 if key_type == "rsa" else None
    key = make_key(
        tmp_path / "k" / "id_enc", key_type, PASSPHRASE, bits=bits, key_format=key_format
    )
    assert _is_encrypted(key)
    server = sshd_factory(authorized_keys=[key])
    target = make_target(server, tmp_path, key_path=key, passphrase=PASSPHRASE)
    pin(server, tmp_path / "known_hosts")
    with connect(target) as session:
        assert session.auth_method == str(key)
        assert session.run("echo in", timeout=10).stdout == "in\n"
    assert wait_for_log(server, "Accepted publickey")[0].endswith(_fingerprint_of(key))


def test_encrypted_key_without_passphrase(sshd: SshdTarget, tmp_path: Path) -> None:
    key = make_key(tmp_path / "k" / "id_locked", "ed25519", PASSPHRASE)
    target = make_target(sshd, tmp_path, key_path=key)
    pin(sshd, tmp_path / "known_hosts")
    with pytest.raises(KeyFileError) as info:
        connect(target)
    message = info.value.message
    assert f"cannot use the key {key} for {target.where}" in message
    assert "encrypted" in message
    assert "--key-passphrase-secret" in message


def test_encrypted_key_with_wrong_passphrase(sshd: SshdTarget, tmp_path: Path) -> None:
    key = make_key(tmp_path / "k" / "id_locked", "ed25519", PASSPHRASE)
    target = make_target(sshd, tmp_path, key_path=key, passphrase="not the passphrase")
    pin(sshd, tmp_path / "known_hosts")
    with pytest.raises(KeyFileError) as info:
        connect(target)
    assert str(key) in info.value.message
    assert "passphrase does not decrypt" in info.value.message


def test_passphrase_does_not_spoil_a_plain_key(sshd: SshdTarget, tmp_path: Path) -> None:
    # A server whose passphrase secret is set can still use keys that are not encrypted.
    target = make_target(sshd, tmp_path, passphrase=PASSPHRASE)
    pin(sshd, tmp_path / "known_hosts")
    with connect(target) as session:
        assert session.auth_method == str(sshd.user_key)


def test_auto_detected_encrypted_key(sshd_factory: SshdFactory, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    locked = make_key(keys / "id_ed25519", "ed25519", PASSPHRASE)
    plain = make_key(keys / "id_rsa", "rsa", bits=2048)  # not authorized
    server = sshd_factory(authorized_keys=[locked])
    pin(server, tmp_path / "known_hosts")
    target = make_target(server, tmp_path, key_path=None, key_dir=keys)

    with pytest.raises(AuthFailedError) as info:
        connect(target)
    (first, why_first), (second, why_second) = info.value.tried
    assert (first, second) == (str(locked), str(plain))
    assert why_first.startswith("it is encrypted and no passphrase was given")
    assert why_second == REFUSED

    with connect(target.with_changes(passphrase=PASSPHRASE)) as session:
        assert session.auth_method == str(locked)


# ---------------------------------------------------------- refused and unusable


def test_wrong_user_lists_the_keys_tried(sshd: SshdTarget, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    copy_key(sshd.user_key, keys / "id_ed25519")
    make_key(keys / "id_ecdsa", "ecdsa")
    pin(sshd, tmp_path / "known_hosts")
    target = make_target(sshd, tmp_path, key_path=None, key_dir=keys)
    with connect(target) as session:  # the right user gets in with the same keys
        assert session.auth_method == str(keys / "id_ed25519")

    with pytest.raises(AuthFailedError) as info:
        connect(target.with_changes(username="svrctl-nobody"))
    assert info.value.tried == [
        (str(keys / "id_ed25519"), REFUSED),
        (str(keys / "id_ecdsa"), REFUSED),
    ]
    assert "authentication as 'svrctl-nobody'" in info.value.message
    assert str(keys / "id_ecdsa") in info.value.message
    assert info.value.user == "svrctl-nobody"


def test_key_the_server_does_not_accept(sshd: SshdTarget, tmp_path: Path) -> None:
    stranger = make_key(tmp_path / "k" / "id_stranger", "ed25519")
    target = make_target(sshd, tmp_path, key_path=stranger)
    pin(sshd, tmp_path / "known_hosts")
    with pytest.raises(AuthFailedError) as info:
        connect(target)
    assert info.value.tried == [(str(stranger), REFUSED)]
    assert f"{stranger}: {REFUSED}" in info.value.message
    # The key really was offered to sshd, which turned it down.
    offered = wait_for_log(sshd, _fingerprint_of(stranger))
    assert [line.split(" from ")[0] for line in offered] == [
        f"Failed publickey for {sshd.username}"
    ]


def test_key_file_readable_by_others(sshd: SshdTarget, tmp_path: Path) -> None:
    key = copy_key(sshd.user_key, tmp_path / "k" / "id_open", mode=0o644)
    target = make_target(sshd, tmp_path, key_path=key)
    pin(sshd, tmp_path / "known_hosts")
    with pytest.raises(KeyFileError) as info:
        connect(target)
    assert f"chmod 600 {key}" in info.value.message
    assert "0644" in info.value.message
    key.chmod(0o600)  # the permissions were the only problem
    with connect(target) as session:
        assert session.auth_method == str(key)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("this is not a key\n", id="text"),
        pytest.param(
            "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAbm90IGEga2V5\n"
            "-----END OPENSSH PRIVATE KEY-----\n",
            id="bad-body",
        ),
        pytest.param("public", id="public-key"),
        pytest.param("truncated", id="truncated"),
    ],
)
def test_malformed_key_file(content: str, sshd: SshdTarget, tmp_path: Path) -> None:
    key = tmp_path / "k" / "id_broken"
    key.parent.mkdir()
    if content == "public":
        content = sshd.user_public_key + "\n"
    elif content == "truncated":
        whole = sshd.user_key.read_text()
        content = whole[: len(whole) // 2]
    key.write_text(content)
    key.chmod(0o600)
    target = make_target(sshd, tmp_path, key_path=key)
    pin(sshd, tmp_path / "known_hosts")
    with pytest.raises(KeyFileError) as info:
        connect(target)
    assert f"cannot use the key {key}" in info.value.message
    assert "not a usable private key" in info.value.message


def test_missing_key_file(sshd: SshdTarget, tmp_path: Path) -> None:
    key = tmp_path / "k" / "id_gone"
    target = make_target(sshd, tmp_path, key_path=key)
    pin(sshd, tmp_path / "known_hosts")
    with pytest.raises(KeyFileError) as info:
        connect(target)
    assert f"cannot use the key {key}" in info.value.message
    assert "no such file" in info.value.message


# ------------------------------------------------------------------ host keys


def test_unknown_host_key_under_strict_then_trust(
    svrctl: Invoke, svrctl_env: Path, sshd: SshdTarget, tmp_path: Path
) -> None:
    known = svrctl_env / "known_hosts"
    target = make_target(sshd, tmp_path, name="web-1", known_hosts=known)
    expected = _host_fingerprint(sshd)

    with pytest.raises(HostKeyUnknownError) as info:
        connect(target)
    err = info.value
    assert expected in err.message
    assert "svrctl server trust web-1" in err.message
    assert (err.key_type, err.fingerprint) == ("ssh-ed25519", expected)
    assert not known.exists()

    _add_server(svrctl, "web-1", sshd, "--key", str(sshd.user_key))
    declined = cli("server", "trust", "web-1", input="n\n")
    assert declined.exit_code == 1
    assert f"presents ssh-ed25519 {expected}" in declined.output
    assert not known.exists()

    trusted = svrctl("server", "trust", "web-1", "--yes")
    assert trusted.exit_code == 0, trusted.output
    assert f"web-1 ([{sshd.host}]:{sshd.port}) presents ssh-ed25519 {expected}" in trusted.output
    assert f"✓ pinned in {known}" in trusted.output
    assert known.read_text() == sshd.host_key_line + "\n"
    assert stat.S_IMODE(known.stat().st_mode) == 0o600
    with connect(target) as session:
        assert session.run("echo trusted", timeout=10).stdout == "trusted\n"

    again = svrctl("server", "trust", "web-1")  # no --yes: nothing to confirm
    assert again.exit_code == 0, again.output
    assert "✓ already trusted" in again.output
    as_json = svrctl("server", "trust", "web-1", "--json")
    assert as_json.exit_code == 0, as_json.output
    assert json_out(as_json) == {
        "server": "web-1",
        "key_type": "ssh-ed25519",
        "fingerprint": expected,
        "state": "already-trusted",
    }
    assert known.read_text() == sshd.host_key_line + "\n"


def test_accept_new_pins_on_first_contact(
    sshd: SshdTarget, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    known = tmp_path / "state" / "known_hosts"
    target = make_target(
        sshd, tmp_path, known_hosts=known, host_key_policy=HostKeyPolicy.ACCEPT_NEW
    )
    caplog.set_level(logging.INFO, logger="svrctl.ssh")
    with connect(target) as session:
        assert session.run("echo first", timeout=10).stdout == "first\n"
    assert known.read_text() == sshd.host_key_line + "\n"
    assert stat.S_IMODE(known.stat().st_mode) == 0o600
    assert stat.S_IMODE(known.parent.stat().st_mode) == 0o700
    pinned = [m for m in _messages(caplog) if m.startswith("Pinned new host key")]
    assert len(pinned) == 1
    assert _host_fingerprint(sshd) in pinned[0]

    caplog.clear()
    with connect(target) as session:
        assert session.run("echo second", timeout=10).stdout == "second\n"
    assert not [m for m in _messages(caplog) if m.startswith("Pinned new host key")]
    assert known.read_text() == sshd.host_key_line + "\n"
    # The pin is what a strict target trusts now.
    with connect(target.with_changes(host_key_policy=HostKeyPolicy.STRICT)) as session:
        assert session.run("echo strict", timeout=10).stdout == "strict\n"


def test_changed_host_key_runs_nothing_until_trusted_again(
    svrctl: Invoke, svrctl_env: Path, sshd_factory: SshdFactory, tmp_path: Path
) -> None:
    server = sshd_factory()
    known = svrctl_env / "known_hosts"
    _add_server(svrctl, "box", server, "--key", str(server.user_key))
    first = svrctl("server", "trust", "box", "--yes", "--json")
    assert first.exit_code == 0, first.output
    old_fp = _host_fingerprint(server)
    assert json_out(first) == {
        "server": "box",
        "key_type": "ssh-ed25519",
        "fingerprint": old_fp,
        "state": "pinned",
    }
    old_line = server.host_key_line
    strict = make_target(server, tmp_path, name="box", known_hosts=known)
    assert run_command(strict, "true", timeout=10).success

    server.restart(new_host_key=True)
    new_fp = _host_fingerprint(server)
    assert new_fp != old_fp
    marker = tmp_path / "marker"
    for policy in HostKeyPolicy:
        target = strict.with_changes(host_key_policy=policy)
        with pytest.raises(HostKeyChangedError) as info:
            run_command(target, f"touch {marker}", timeout=10)
        err = info.value
        assert "HOST KEY CHANGED" in err.message
        assert f"presents ssh-ed25519 {new_fp}" in err.message
        assert f"pinned key is ssh-ed25519 {old_fp}" in err.message
        assert "svrctl server trust box" in err.message
        assert (err.key_type, err.fingerprint) == ("ssh-ed25519", new_fp)
    outcomes = run_on_many(
        [strict, strict.with_changes(host_key_policy=HostKeyPolicy.ACCEPT_NEW)],
        f"touch {marker}",
        timeout=10,
    )
    assert [type(o.error) for o in outcomes] == [HostKeyChangedError, HostKeyChangedError]
    assert [o.result for o in outcomes] == [None, None]
    assert not marker.exists()
    assert known.read_text() == old_line + "\n"  # accept-new did not overwrite the pin

    tested = svrctl("server", "test", "box")
    assert tested.exit_code == 1
    assert "HOST KEY CHANGED" in tested.output
    edited = svrctl("server", "edit", "box", "--host-key-policy", "accept-new")
    assert edited.exit_code == 0, edited.output
    tested = svrctl("server", "test", "box", "--json")
    assert tested.exit_code == 1
    assert json_out(tested)["error_type"] == "HostKeyChangedError"
    assert known.read_text() == old_line + "\n"

    replaced = svrctl("server", "trust", "box", "--yes")
    assert replaced.exit_code == 0, replaced.output
    assert f"REPLACES the pinned key ssh-ed25519 {old_fp}" in replaced.output
    assert f"presents ssh-ed25519 {new_fp}" in replaced.output
    assert known.read_text() == server.host_key_line + "\n"
    result = run_command(strict, f"touch {marker}", timeout=10)
    assert result.success
    assert marker.exists()


def test_host_key_of_another_type_is_a_changed_key(
    svrctl: Invoke, svrctl_env: Path, sshd_factory: SshdFactory, tmp_path: Path
) -> None:
    server = sshd_factory()
    known = pin(server, svrctl_env / "known_hosts")
    _add_server(svrctl, "box", server, "--key", str(server.user_key))
    target = make_target(server, tmp_path, name="box", known_hosts=known)
    server.host_key_type = "rsa"  # the server now has only an RSA host key
    server.restart(new_host_key=True)

    marker = tmp_path / "marker"
    with pytest.raises(HostKeyChangedError) as info:
        run_command(target, f"touch {marker}", timeout=10)
    assert "HOST KEY CHANGED" in info.value.message
    assert "ssh-ed25519" in info.value.message
    assert not marker.exists()

    replaced = svrctl("server", "trust", "box", "--yes", "--json")
    assert replaced.exit_code == 0, replaced.output
    assert json_out(replaced) == {
        "server": "box",
        "key_type": "ssh-rsa",
        "fingerprint": _host_fingerprint(server),
        "state": "replaced",
    }
    assert known.read_text() == server.host_key_line + "\n"
    assert run_command(target, f"touch {marker}", timeout=10).success
    assert marker.exists()


def test_known_hosts_lines_paramiko_cannot_read_are_skipped(
    sshd: SshdTarget, tmp_path: Path
) -> None:
    # A user's known_hosts may hold comments, CA keys and damaged lines next to pins.
    other = make_key(tmp_path / "ca" / "ca_key", "ed25519")
    users = tmp_path / "user_known_hosts"
    users.write_text(
        "# hosts of the lab\n"
        f"@cert-authority *.example.org {sshd.user_public_key}\n"
        "damaged.example.org ssh-ed25519 !!!not-base64\n"
        f"{sshd.host_key_line}\n"
        f"other.example.org {other.with_name('ca_key.pub').read_text().strip()}\n"
    )
    target = make_target(sshd, tmp_path, user_known_hosts=users)
    with connect(target) as session:
        assert session.run("echo ok", timeout=10).stdout == "ok\n"
    assert not (tmp_path / "known_hosts").exists()


def test_revoked_host_key_is_refused(sshd: SshdTarget, tmp_path: Path) -> None:
    key_type, blob = sshd.host_key_line.split()[1:3]
    users = tmp_path / "user_known_hosts"
    users.write_text(f"@revoked * {key_type} {blob}\n")
    target = make_target(
        sshd, tmp_path, user_known_hosts=users, host_key_policy=HostKeyPolicy.ACCEPT_NEW
    )
    marker = tmp_path / "marker"
    with pytest.raises(HostKeyError) as info:
        run_command(target, f"touch {marker}", timeout=10)
    assert "@revoked" in info.value.message
    assert _host_fingerprint(sshd) in info.value.message
    assert not marker.exists()
    assert not (tmp_path / "known_hosts").exists()  # accept-new pinned nothing


def test_trust_keeps_comments_when_it_replaces_a_pin(
    svrctl: Invoke, svrctl_env: Path, sshd_factory: SshdFactory
) -> None:
    server = sshd_factory()
    known = svrctl_env / "known_hosts"
    known.parent.mkdir(parents=True, exist_ok=True)
    known.write_text(f"# pinned by hand, see ticket 42\n{server.host_key_line}\n")
    _add_server(svrctl, "box", server, "--key", str(server.user_key))
    server.restart(new_host_key=True)
    replaced = svrctl("server", "trust", "box", "--yes", "--json")
    assert replaced.exit_code == 0, replaced.output
    assert json_out(replaced)["state"] == "replaced"
    assert known.read_text() == f"# pinned by hand, see ticket 42\n{server.host_key_line}\n"
    assert svrctl("server", "test", "box").exit_code == 0


# ----------------------------------------------------- secrets from Prefect blocks


@pytest.mark.parametrize(
    ("name", "value", "complaint"),
    [
        ("Bad_Name", "v", "is not a Prefect block name"),
        ("-leading-dash", "v", "is not a Prefect block name"),
        ("has space", "v", "is not a Prefect block name"),
        ("x" * 64, "v", "is not a Prefect block name"),
        ("fine-name", "", "the secret value is empty"),
    ],
)
def test_secret_set_rejects_bad_input(
    prefect_api: str, name: str, value: str, complaint: str
) -> None:
    result = cli("secret", "set", "--stdin", "--", name, input=value + "\n")
    assert result.exit_code == 2, result.output
    assert complaint in result.stderr
    assert "saved" not in result.output


def test_key_passphrase_from_a_prefect_secret(
    prefect_api: str,
    svrctl: Invoke,
    svrctl_env: Path,
    sshd_factory: SshdFactory,
    tmp_path: Path,
) -> None:
    from prefect.blocks.system import Secret

    key = make_key(tmp_path / "k" / "id_web", "ed25519", PASSPHRASE)
    server = sshd_factory(authorized_keys=[key])
    pin(server, svrctl_env / "known_hosts")
    block = f"web-pass-{uuid.uuid4().hex[:8]}"

    saved = cli("secret", "set", block, "--stdin", input=PASSPHRASE + "\n")
    assert saved.exit_code == 0, saved.output
    assert f"✓ saved Secret block {block}" in saved.output
    assert PASSPHRASE not in saved.output
    assert Secret.load(block, _sync=True).get() == PASSPHRASE  # type: ignore[call-arg,union-attr]

    _add_server(svrctl, "web", server, "--key", str(key), "--key-passphrase-secret", block)
    tested = svrctl("server", "test", "web", "--json")
    assert tested.exit_code == 0, tested.output
    report = json_out(tested)
    assert report["ok"] is True
    assert report["auth"] == str(key)
    assert PASSPHRASE not in tested.output

    # The same key without the secret cannot be used.
    _add_server(svrctl, "web-nopass", server, "--key", str(key))
    tested = svrctl("server", "test", "web-nopass", "--json")
    assert tested.exit_code == 1
    failure = json_out(tested)
    assert failure["error_type"] == "KeyFileError"
    assert "encrypted" in failure["error"]

    # A secret that does not exist is a clear error, exit 2.
    _add_server(
        svrctl, "web-missing", server, "--key", str(key),
        "--key-passphrase-secret", f"no-such-secret-{uuid.uuid4().hex[:8]}",
    )  # fmt: skip
    tested = svrctl("server", "test", "web-missing")
    assert tested.exit_code == 2
    assert "there is no Prefect Secret block named" in tested.output


@pytest.fixture
def password_user() -> Iterator[tuple[str, str]]:
    """A local user with a password (no home, /bin/sh), deleted afterwards."""
    if not is_root():
        pytest.skip("creating a local user for the password login needs root")
    name = f"svt{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    subprocess.run(
        ["useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/bin/sh", name],
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            ["chpasswd"], input=f"{name}:{password}\n", text=True, check=True, capture_output=True
        )
        yield name, password
    finally:
        subprocess.run(["userdel", "--force", name], check=False, capture_output=True)


def test_password_login_from_a_prefect_secret(
    prefect_api: str,
    password_user: tuple[str, str],
    svrctl: Invoke,
    svrctl_env: Path,
    sshd_factory: SshdFactory,
) -> None:
    user, password = password_user
    server = sshd_factory(extra_config=["PasswordAuthentication yes"])
    pin(server, svrctl_env / "known_hosts")
    good, bad = (f"pw-{uuid.uuid4().hex[:8]}" for _ in range(2))
    assert cli("secret", "set", good, "--stdin", input=password + "\n").exit_code == 0
    assert cli("secret", "set", bad, "--stdin", input="not-the-password\n").exit_code == 0

    # No key anywhere (SVRCTL_SSH_KEY_DIR is empty): only the password can get in.
    for name, block in (("pw-ok", good), ("pw-bad", bad)):
        result = svrctl(
            "server", "add", name, "--host", server.host, "--port", str(server.port),
            "--user", user, "--password-secret", block,
        )  # fmt: skip
        assert result.exit_code == 0, result.output

    tested = svrctl("server", "test", "pw-ok", "--json")
    assert tested.exit_code == 0, tested.output
    report = json_out(tested)
    assert report["auth"] == "password"
    assert report["where"] == f"{user}@{server.host}:{server.port}"
    assert wait_for_log(server, f"Accepted password for {user}")
    assert password not in tested.output

    refused = svrctl("server", "test", "pw-bad", "--json")
    assert refused.exit_code == 1
    failure = json_out(refused)
    assert failure["error_type"] == "AuthFailedError"
    assert f"password: {REFUSED}" in failure["error"]
    assert wait_for_log(server, f"Failed password for {user}")
