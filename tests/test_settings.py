"""Settings: defaults, environment variables and validation."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from svrctl.exceptions import BadInputError
from svrctl.settings import Settings, detect_local_timezone, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("SVRCTL_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))


def test_defaults(tmp_path: Path) -> None:
    s = Settings()
    assert s.home == tmp_path / ".svrctl"
    assert s.ssh_key_dir == tmp_path / ".ssh"
    assert s.output_limit_bytes == 1024 * 1024
    assert s.history_retention_days == 30
    assert s.resolved_database_url == f"sqlite:///{tmp_path / '.svrctl' / 'svrctl.db'}"
    assert s.timezone == detect_local_timezone()


def test_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SVRCTL_HOME", "~/elsewhere")
    monkeypatch.setenv("SVRCTL_DATABASE_URL", "postgresql://u:p@db/svrctl")
    monkeypatch.setenv("SVRCTL_TIMEZONE", "Europe/Berlin")
    monkeypatch.setenv("SVRCTL_SSH_KEY_DIR", "/keys")
    monkeypatch.setenv("SVRCTL_OUTPUT_LIMIT_BYTES", "4096")
    monkeypatch.setenv("SVRCTL_HISTORY_RETENTION_DAYS", "7")
    s = Settings()
    assert s.home == tmp_path / "elsewhere"
    assert s.resolved_database_url == "postgresql+psycopg://u:p@db/svrctl"
    assert s.timezone == "Europe/Berlin"
    assert s.ssh_key_dir == Path("/keys")
    assert (s.output_limit_bytes, s.history_retention_days) == (4096, 7)


def test_init_beats_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SVRCTL_TIMEZONE", "Europe/Berlin")
    assert Settings(timezone="Asia/Tokyo").timezone == "Asia/Tokyo"


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("SVRCTL_TIMEZONE", "Mars/Olympus", "SVRCTL_TIMEZONE: unknown time zone"),
        ("SVRCTL_OUTPUT_LIMIT_BYTES", "10", "SVRCTL_OUTPUT_LIMIT_BYTES"),
        ("SVRCTL_HISTORY_RETENTION_DAYS", "0", "SVRCTL_HISTORY_RETENTION_DAYS"),
        ("SVRCTL_OUTPUT_LIMIT_BYTES", "lots", "SVRCTL_OUTPUT_LIMIT_BYTES"),
    ],
)
def test_bad_values_are_named(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, message: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(BadInputError, match=message):
        load_settings()


def test_home_is_private(tmp_path: Path) -> None:
    home = Settings().ensure_home()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    home.chmod(0o755)
    Settings().ensure_home()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_timezone_detection_follows_tz(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/Chicago")
    assert detect_local_timezone() == "America/Chicago"
    monkeypatch.setenv("TZ", "Not/AZone")
    assert detect_local_timezone() != "Not/AZone"


def test_bad_settings_make_the_cli_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from svrctl.cli import cli

    monkeypatch.setenv("SVRCTL_TIMEZONE", "Mars/Olympus")
    r = CliRunner().invoke(cli, ["server", "list"])
    assert r.exit_code == 2
    assert "invalid settings: SVRCTL_TIMEZONE" in r.output


def test_readme_lists_every_setting() -> None:
    from pathlib import Path

    from svrctl.settings import Settings

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    missing = [
        f"SVRCTL_{name.upper()}"
        for name in Settings.model_fields
        if f"`SVRCTL_{name.upper()}`" not in readme
    ]
    assert missing == []
