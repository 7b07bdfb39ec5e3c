"""Secrets never leak: every feature that takes one runs, then everything is searched.

Each secret has a distinctive value (``S3CR3T-<purpose>-<random>``) kept in a
Prefect Secret block of a real ``prefect server start`` of this module's own (its
files in a temp dir). The features that take them run through Prefect's engine
(``svrctl task run``): a server with an encrypted key and its passphrase, the
updates plugin answering a real sudo password prompt over a loopback sshd, the
weather plugin with an API key against a loopback stand-in of OpenWeatherMap,
Gotify, ntfy and Apprise channels with tokens against loopback listeners, a
wrong key and a password login that fail, and every ``--json`` output. Then every
place a value could land is searched for each secret: the Prefect server's log
and raw database files, the app database, every file under ``SVRCTL_HOME``,
everything printed and everything logged.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pwd
import secrets
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import Result
from fixtures.local_users import remove_user, run_root
from fixtures.notify_listener import NotifyListener, text_in_database
from fixtures.runenv import RunEnv
from fixtures.sshd import SshdFactory, SshdTarget, make_key
from prefect.settings import PREFECT_API_URL, temporary_settings

from svrctl.prefect_api import reload_prefect_settings
from svrctl.prefect_server import PrefectServer, start_prefect_server

pytestmark = pytest.mark.sshd


def _secret(purpose: str) -> str:
    return f"S3CR3T-{purpose}-{secrets.token_hex(6)}"


SECRETS = {
    "passphrase": _secret("passphrase"),
    "sudo": _secret("sudo"),
    "password": _secret("password"),
    "api-key": _secret("apikey"),
    "wrong-api-key": _secret("wrongapikey"),
    "gotify": _secret("gotify"),
    "ntfy": _secret("ntfy"),
    "apprise": _secret("apprise"),
    "wrong-gotify": _secret("wronggotify"),
}
SUDO_USER = "svrctl-secsudo"
SUDOERS_DROPIN = Path("/etc/sudoers.d/svrctl-secsudo")
SUDO_LOCK = Path("/run/lock/svrctl-secsudo-test.lock")


# ------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A Prefect server of this module's own, with its database and log in a temp dir."""
    server = start_prefect_server(tmp_path_factory.mktemp("prefect-secrets"))
    try:
        yield server
    finally:
        server.stop()


@dataclass
class SudoServer:
    """An sshd where SUDO_USER logs in with a key, and sudo asks for its password."""

    sshd: SshdTarget
    key: Path
    calls: Path  # the apt-get stand-in that sudo runs writes "UID ARGS" lines here


@pytest.fixture
def sudo_server(sshd_factory: SshdFactory, tmp_path: Path) -> Iterator[SudoServer]:
    """A user whose sudo needs its password (the SECRETS value), reachable over SSH.

    sudo's secure_path puts a stand-in ``apt-get`` first, so ``sudo apt-get update``
    records that it ran as root instead of going to the network.
    """
    if os.geteuid() != 0 or not Path("/usr/bin/sudo").exists():
        pytest.skip("needs root and sudo to create a user with a sudo rule")
    SUDO_LOCK.parent.mkdir(parents=True, exist_ok=True)
    standins = Path(tempfile.mkdtemp(prefix="svrctl-secsudo-", dir="/tmp"))
    with SUDO_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        remove_user(SUDO_USER, SUDOERS_DROPIN)
        try:
            standins.chmod(0o755)
            calls = standins / "calls.log"
            apt = standins / "apt-get"
            apt.write_text(
                f'#!/bin/sh\necho "$(id -u) $*" >> {calls}\n'
                'if [ "$1" = update ]; then exit 0; fi\nexec /usr/bin/apt-get "$@"\n'
            )
            apt.chmod(0o755)
            run_root(["useradd", "--create-home", "--shell", "/bin/bash", SUDO_USER])
            run_root(["chpasswd"], input=f"{SUDO_USER}:{SECRETS['sudo']}\n")
            rule = tmp_path / "sudoers"
            rule.write_text(
                f'Defaults:{SUDO_USER} secure_path="{standins}:/usr/sbin:/usr/bin:/sbin:/bin"\n'
                f"{SUDO_USER} ALL=(ALL) ALL\n"
            )
            run_root(["visudo", "-c", "-q", "-f", str(rule)])
            shutil.copyfile(rule, SUDOERS_DROPIN)
            SUDOERS_DROPIN.chmod(0o440)
            key = make_key(tmp_path / "sudo_user_key", comment="svrctl-test-secsudo")
            user = pwd.getpwnam(SUDO_USER)
            ssh_dir = Path(user.pw_dir) / ".ssh"
            ssh_dir.mkdir(mode=0o700, exist_ok=True)
            (ssh_dir / "authorized_keys").write_text(key.with_name(key.name + ".pub").read_text())
            for path in (ssh_dir, ssh_dir / "authorized_keys"):
                os.chown(path, user.pw_uid, user.pw_gid)
            server = sshd_factory(
                extra_config=[
                    f"Match User {SUDO_USER}",
                    "    AuthorizedKeysFile .ssh/authorized_keys",
                ]
            )
            yield SudoServer(server, key, calls)
        finally:
            remove_user(SUDO_USER, SUDOERS_DROPIN)
            shutil.rmtree(standins, ignore_errors=True)


@dataclass
class Weather:
    """A loopback stand-in of OpenWeatherMap's API; a wrong key gets a 401."""

    url: str
    queries: list[dict[str, str]]


@pytest.fixture
def weather() -> Iterator[Weather]:
    """Serve the geocoding and current-weather endpoints on 127.0.0.1."""
    queries: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            split = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(split.query).items()}
            queries.append(query)
            body: Any
            if query.get("appid") != SECRETS["api-key"]:
                # A server that echoes the key it refused, as some APIs do.
                status, body = 401, {"cod": 401, "message": f"Invalid API key {query}"}
            elif split.path == "/geo/1.0/direct":
                status, body = 200, [{"name": "Austin", "lat": 30.27, "lon": -97.74}]
            else:
                status = 200
                body = {
                    "weather": [{"description": "clear sky"}],
                    "main": {"temp": 21.3, "feels_like": 20.6, "humidity": 40},
                    "wind": {"speed": 3.6},
                }
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Weather(f"http://127.0.0.1:{server.server_address[1]}", queries)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def env(
    prefect: PrefectServer, run_env: RunEnv, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunEnv]:
    """``run_env`` whose Prefect API (runs, logs, Secret blocks) is this module's server.

    Prefect's global settings are refreshed too: plugin steps run in threads, which
    see those and not a context's temporary settings.
    """
    before = os.environ.get("PREFECT_API_URL")
    monkeypatch.setenv("PREFECT_API_URL", prefect.api_url)
    reload_prefect_settings()
    try:
        with temporary_settings(updates={PREFECT_API_URL: prefect.api_url}):
            yield run_env
    finally:
        if before is None:
            monkeypatch.delenv("PREFECT_API_URL")
        else:
            monkeypatch.setenv("PREFECT_API_URL", before)
        reload_prefect_settings()


# --------------------------------------------------------------------------- helpers


class Outputs:
    """Everything the CLI printed in this test, command by command."""

    def __init__(self, env: RunEnv) -> None:
        self.env = env
        self.texts: list[str] = []

    def run(self, *args: str, code: int = 0) -> Result:
        result = self.env.svrctl(*args)
        self.texts.append(result.stdout + result.stderr)
        if result.exit_code != code:
            pytest.fail(f"svrctl {' '.join(args)} exited {result.exit_code}:\n{result.output}")
        return result

    def json(self, *args: str, code: int = 0) -> Any:
        return json.loads(self.run(*args, "--json", code=code).stdout)


def _set_secret(out: Outputs, name: str, value: str) -> None:
    from click.testing import CliRunner

    from svrctl.cli import cli

    result = CliRunner().invoke(
        cli, ["secret", "set", name, "--stdin"], input=value + "\n", catch_exceptions=False
    )
    out.texts.append(result.stdout + result.stderr)
    assert result.exit_code == 0, result.output


def _files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _leaks(secret: str, places: dict[str, bytes | str]) -> list[str]:
    needle = secret.encode()
    found = []
    for where, data in places.items():
        raw = data.encode() if isinstance(data, str) else data
        if needle in raw:
            found.append(where)
    return found


def _wait_for_run_logs(prefect: PrefectServer, marker: str, timeout: float = 60) -> None:
    """Flush this process's Prefect log queue; wait until the server stored ``marker``."""
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(marker.encode() in data for data in _files(prefect.home).values()):
            return
        time.sleep(0.5)
    raise AssertionError(f"the run log line {marker!r} never reached Prefect's database")


# ------------------------------------------------------------------------------ test


def test_no_secret_leaks_anywhere(
    env: RunEnv,
    prefect: PrefectServer,
    sudo_server: SudoServer,
    sshd_factory: SshdFactory,
    weather: Weather,
    notify_listener: NotifyListener,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)  # paramiko's, httpx's and apprise's debug logs too
    out = Outputs(env)
    seen = f"visible-{secrets.token_hex(4)}"  # printed by every run: proves the search works
    notify_listener.gotify_token = SECRETS["gotify"]

    for block, key in (
        ("sec-pass", "passphrase"), ("sec-sudo", "sudo"), ("sec-password", "password"),
        ("sec-owm", "api-key"), ("sec-owm-wrong", "wrong-api-key"),
    ):  # fmt: skip
        _set_secret(out, block, SECRETS[key])

    # A server with an encrypted key; the passphrase comes from its Secret block.
    encrypted = make_key(tmp_path / "enc_key", passphrase=SECRETS["passphrase"])
    enc = sshd_factory(authorized_keys=[encrypted])
    out.json(
        "server", "add", "enc", "--host", enc.host, "--port", str(enc.port),
        "--user", enc.username, "--key", str(encrypted),
        "--key-passphrase-secret", "sec-pass",
    )  # fmt: skip
    # The sudo user's server: sudo's password comes from its Secret block.
    sudo = sudo_server.sshd
    out.json(
        "server", "add", "sudo", "--host", sudo.host, "--port", str(sudo.port),
        "--user", SUDO_USER, "--key", str(sudo_server.key),
        "--sudo-password-secret", "sec-sudo",
    )  # fmt: skip
    # A password login that the server refuses: the error path that raises.
    out.json(
        "server", "add", "pw", "--host", enc.host, "--port", str(enc.port),
        "--user", enc.username, "--key", str(tmp_path / "no-such-key"),
        "--password-secret", "sec-password",
    )  # fmt: skip
    for name in ("enc", "sudo", "pw"):
        out.json("server", "trust", name, "--yes")

    # Notification channels with tokens, and one whose token the server refuses.
    url = notify_listener.url
    out.json("notify", "add", "gotify", "--kind", "gotify", "--url", url,
             "--token", SECRETS["gotify"])  # fmt: skip
    out.json("notify", "add", "ntfy", "--kind", "ntfy", "--url", url, "--topic", "alerts",
             "--token", SECRETS["ntfy"])  # fmt: skip
    apprise_url = f"json://127.0.0.1:{notify_listener.port}/{SECRETS['apprise']}"
    out.json("notify", "add", "apprise", "--kind", "apprise", "--url", apprise_url)
    out.json("notify", "add", "refused", "--kind", "gotify", "--url", url,
             "--token", SECRETS["wrong-gotify"])  # fmt: skip
    channels = "gotify,ntfy,apprise,refused"

    tasks = {
        "enc-run": ("--server", "enc", "--command", f"echo {seen}-enc"),
        "sudo-run": (
            "--plugin", "updates", "--server", "sudo",
            "--config", json.dumps({"manager": "apt", "refresh": True}),
        ),
        "weather": (
            "--plugin", "weather",
            "--config", json.dumps({"location": "Austin,TX,US", "api_key_secret": "sec-owm",
                                    "base_url": weather.url, "days": 0}),
        ),
        "weather-wrong-key": (
            "--plugin", "weather",
            "--config", json.dumps({"location": "Austin,TX,US",
                                    "api_key_secret": "sec-owm-wrong",
                                    "base_url": weather.url, "days": 0}),
        ),
        "pw-run": ("--server", "pw", "--command", f"echo {seen}-pw"),
    }  # fmt: skip
    for name, options in tasks.items():
        out.json("task", "add", name, *options, "--notify", channels, "--notify-success")

    results = {}
    for name in tasks:
        failing = name in ("weather-wrong-key", "pw-run")
        results[name] = out.json("task", "run", name, code=1 if failing else 0)
    # Each feature really used its secret.
    assert results["enc-run"]["output"] == f"{seen}-enc\n"
    assert sudo_server.calls.read_text().splitlines()[0] == "0 update -qq"
    assert "updates pending" in results["sudo-run"]["output"]
    assert "Austin" in results["weather"]["output"]
    assert {q.get("appid") for q in weather.queries} >= {SECRETS["api-key"]}
    assert "refused the API key" in results["weather-wrong-key"]["error"]
    assert "authentication" in results["pw-run"]["error"]
    sent = notify_listener.wait_for(4 * len(tasks), timeout=60)
    tokens = [r.header("X-Gotify-Key") or r.header("Authorization") or r.path for r in sent]
    assert any(SECRETS["gotify"] in t for t in tokens if t)
    assert any(SECRETS["ntfy"] in t for t in tokens if t)
    assert any(SECRETS["apprise"] in t for t in tokens if t)
    payloads = {f"notification {i}": r.body for i, r in enumerate(sent)}
    assert any(seen.encode() in body for body in payloads.values())  # the bodies are searched

    for args in (
        ("server", "list"), ("server", "show", "enc"), ("server", "show", "sudo"),
        ("task", "list"), ("task", "show", "weather"), ("task", "history", "enc-run"),
        ("task", "history", "pw-run"), ("notify", "list"), ("notify", "log"),
    ):  # fmt: skip
        out.json(*args)
    log_row = [r for r in out.json("notify", "log") if r["channel"] == "refused"]
    assert log_row and log_row[0]["ok"] is False

    _wait_for_run_logs(prefect, f"{seen}-enc")
    captured = capfd.readouterr()
    home = env.settings.home
    places: dict[str, bytes | str] = {
        **{f"prefect server file {p}": d for p, d in _files(prefect.home).items()},
        **{f"SVRCTL_HOME file {p}": d for p, d in _files(home).items()},
        **{f"CLI output {i}": text for i, text in enumerate(out.texts)},
        **payloads,
        "log records": caplog.text,
        "stdout": captured.out,
        "stderr": captured.err,
    }
    # The searched places do hold what the runs printed and logged.
    assert _leaks(f"{seen}-enc", places), "the search found nothing the runs printed"
    assert any("prefect server file" in w for w in _leaks(f"{seen}-enc", places))
    if env.db.engine.dialect.name == "sqlite":  # the app database is a file in SVRCTL_HOME
        assert any("SVRCTL_HOME file" in w for w in _leaks(f"{seen}-enc", places))
    assert text_in_database(env.db.engine, f"{seen}-enc"), "the app database search sees nothing"
    for purpose, value in SECRETS.items():
        assert _leaks(value, places) == [], f"the {purpose} secret leaked"
        assert text_in_database(env.db.engine, value) == [], f"the {purpose} secret is stored"
    # Prefect keeps the Secret blocks themselves encrypted: names in clear, values not.
    raw = b"".join(_files(prefect.home).values())
    assert b"sec-sudo" in raw and SECRETS["sudo"].encode() not in raw
    for path in (home / "known_hosts", home / "svrctl.db"):
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
