"""Checks that the shared sshd and PostgreSQL fixtures do what the suite relies on."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import psycopg
import pytest
from fixtures.postgres import PgDatabaseFactory, libpq_url
from fixtures.sshd import SshdFactory, SshdTarget, make_key, public_key_text
from sqlalchemy import create_engine, text

# ----------------------------------------------------------------------------- sshd


@pytest.mark.sshd
def test_sshd_accepts_user_key(sshd: SshdTarget) -> None:
    result = sshd.run("echo ok")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.sshd
def test_sshd_logs_in_as_current_user(sshd: SshdTarget) -> None:
    result = sshd.run("id -un", check=True)
    assert result.stdout.strip() == sshd.username


@pytest.mark.sshd
def test_sshd_target_fields(sshd: SshdTarget) -> None:
    assert sshd.host == "127.0.0.1"
    assert sshd.running
    assert sshd.pid is not None
    assert sshd.user_key.with_name(sshd.user_key.name + ".pub").exists()
    assert "PRIVATE KEY" in sshd.user_key.read_text()
    assert sshd.host_key_line.startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 AAAA")
    assert sshd.host_key_line.split()[1:] == public_key_text(sshd.host_key).split()[:2]
    assert sshd.sshd_config.is_file()


@pytest.mark.sshd
def test_sshd_serves_banner(sshd: SshdTarget) -> None:
    with socket.create_connection((sshd.host, sshd.port), timeout=5) as sock:
        assert sock.recv(64).startswith(b"SSH-2.0-")


@pytest.mark.sshd
def test_sshd_refuses_unauthorized_key(sshd: SshdTarget, tmp_path: Path) -> None:
    other = make_key(tmp_path / "other_key")
    result = sshd.run("echo ok", key=other)
    assert result.returncode == 255
    assert "Permission denied" in result.stderr
    assert "ok" not in result.stdout


@pytest.mark.sshd
def test_authorize_adds_a_key(sshd_factory: SshdFactory, tmp_path: Path) -> None:
    target = sshd_factory()
    extra = make_key(tmp_path / "extra_key", "ecdsa")
    assert target.run("true", key=extra).returncode == 255
    target.authorize(extra)
    assert target.run("echo ok", key=extra, check=True).stdout.strip() == "ok"


@pytest.mark.sshd
def test_authorized_keys_argument(sshd_factory: SshdFactory, tmp_path: Path) -> None:
    extra = make_key(tmp_path / "rsa_key", "rsa", bits=2048)
    target = sshd_factory(authorized_keys=[extra])
    assert target.run("echo ok", key=extra, check=True).stdout.strip() == "ok"
    assert target.run("echo ok", check=True).stdout.strip() == "ok"


@pytest.mark.sshd
def test_restart_with_new_host_key_breaks_old_known_hosts(
    sshd_factory: SshdFactory, tmp_path: Path
) -> None:
    target = sshd_factory()
    old_line = target.host_key_line
    old_known_hosts = target.write_known_hosts(tmp_path / "old_known_hosts")
    port = target.port

    target.restart(new_host_key=True)

    assert target.port == port
    assert target.host_key_line != old_line
    assert target.host_key_line.startswith(f"[127.0.0.1]:{port} ssh-ed25519 ")
    stale = target.run("echo ok", known_hosts=old_known_hosts)
    assert stale.returncode == 255
    assert "Host key verification failed" in stale.stderr
    assert target.run("echo ok", check=True).stdout.strip() == "ok"


@pytest.mark.sshd
def test_restart_keeps_host_key_by_default(sshd_factory: SshdFactory) -> None:
    target = sshd_factory()
    old_line = target.host_key_line
    old_pid = target.pid
    target.restart()
    assert target.host_key_line == old_line
    assert target.pid != old_pid
    assert target.run("echo ok", check=True).stdout.strip() == "ok"


@pytest.mark.sshd
def test_stop_refuses_connections_and_start_brings_it_back(sshd_factory: SshdFactory) -> None:
    target = sshd_factory()
    target.stop()
    assert not target.running
    with pytest.raises(OSError), socket.create_connection((target.host, target.port), timeout=2):
        pass
    target.start()
    assert target.run("echo ok", check=True).stdout.strip() == "ok"


@pytest.mark.sshd
def test_two_factory_sshds_at_once(sshd_factory: SshdFactory) -> None:
    first = sshd_factory()
    second = sshd_factory(host_key_type="rsa")
    assert first.port != second.port
    assert first.running and second.running
    assert " ssh-rsa " in second.host_key_line
    assert first.run("echo one", check=True).stdout.strip() == "one"
    assert second.run("echo two", check=True).stdout.strip() == "two"
    # Each server only knows its own user key.
    assert first.run("true", key=second.user_key).returncode == 255


@pytest.mark.sshd
def test_extra_config_overrides_defaults(sshd_factory: SshdFactory) -> None:
    target = sshd_factory(
        extra_config=["MaxSessions 7", "Match Address 127.0.0.1", "  Banner none"]
    )
    config = target.sshd_config.read_text().splitlines()
    assert config.index("MaxSessions 7") < config.index("MaxSessions 100")
    assert config[-2:] == ["Match Address 127.0.0.1", "  Banner none"]
    assert target.run("echo ok", check=True).stdout.strip() == "ok"


@pytest.mark.parametrize(
    ("key_type", "passphrase", "header"),
    [
        ("ed25519", "", "OPENSSH PRIVATE KEY"),
        ("rsa", "secret", "OPENSSH PRIVATE KEY"),
        ("ecdsa", "", "OPENSSH PRIVATE KEY"),
    ],
)
def test_make_key(tmp_path: Path, key_type: str, passphrase: str, header: str) -> None:
    key = make_key(tmp_path / "k", key_type, passphrase)
    assert header in key.read_text()
    assert public_key_text(key).split()[0] in {"ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256"}
    # ssh-keygen -y can read the key back only with the right passphrase.
    ok = subprocess.run(
        ["ssh-keygen", "-y", "-P", passphrase, "-f", str(key)], capture_output=True, check=False
    )
    assert ok.returncode == 0
    if passphrase:
        bad = subprocess.run(
            ["ssh-keygen", "-y", "-P", "wrong", "-f", str(key)], capture_output=True, check=False
        )
        assert bad.returncode != 0


def test_make_key_pem_format(tmp_path: Path) -> None:
    key = make_key(tmp_path / "pem", "rsa", bits=2048, key_format="PEM")
    assert key.read_text().startswith("-----BEGIN RSA PRIVATE KEY-----")


# ------------------------------------------------------------------------- postgres


def test_libpq_url_strips_driver() -> None:
    assert (
        libpq_url("postgresql+psycopg://u:p@127.0.0.1:5433/db")
        == "postgresql://u:p@127.0.0.1:5433/db"
    )
    assert libpq_url("postgresql://u@h/db") == "postgresql://u@h/db"


@pytest.mark.postgres
def test_pg_database_create_use_drop(pg_database_factory: PgDatabaseFactory) -> None:
    url = pg_database_factory()
    assert url.startswith("postgresql+psycopg://")
    name = url.rsplit("/", 1)[1]
    assert name.startswith("svrctl_test_")
    assert pg_database_factory.exists(url)

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE hosts (id serial PRIMARY KEY, name text NOT NULL)"))
            conn.execute(text("INSERT INTO hosts (name) VALUES ('web1'), ('web2')"))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM hosts")).scalar_one() == 2
    finally:
        engine.dispose()

    # A connection still open does not prevent the drop (WITH (FORCE)).
    lingering = psycopg.connect(libpq_url(url))
    try:
        pg_database_factory.drop(url)
    finally:
        lingering.close()

    assert not pg_database_factory.exists(url)
    assert name not in pg_database_factory.created
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(libpq_url(url), connect_timeout=3).close()


@pytest.mark.postgres
def test_pg_database_from_template(pg_database_factory: PgDatabaseFactory) -> None:
    template_url = pg_database_factory()
    with psycopg.connect(libpq_url(template_url), autocommit=True) as conn:
        conn.execute("CREATE TABLE seeded (x int)")
        conn.execute("INSERT INTO seeded VALUES (42)")
    template_name = template_url.rsplit("/", 1)[1]

    copy_url = pg_database_factory(template=template_name)
    assert copy_url != template_url
    with psycopg.connect(libpq_url(copy_url)) as conn:
        row = conn.execute("SELECT x FROM seeded").fetchone()
    assert row == (42,)


@pytest.mark.postgres
def test_pg_database_fixture(pg_database: str) -> None:
    with psycopg.connect(libpq_url(pg_database)) as conn:
        row = conn.execute("SELECT current_database(), current_user").fetchone()
    assert row is not None
    assert row[0] == pg_database.rsplit("/", 1)[1]


@pytest.mark.sshd
def test_stop_ends_open_sessions(sshd_factory: SshdFactory) -> None:
    target = sshd_factory()
    proc = subprocess.Popen(
        target.ssh_command("echo started; sleep 60"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "started"
        target.stop()
        assert proc.wait(timeout=10) != 0
    finally:
        proc.kill()
        proc.wait()
