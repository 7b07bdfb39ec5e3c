"""Process settings: one pydantic-settings class, every field an ``SVRCTL_`` variable."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "detect_local_timezone", "load_settings", "normalise_database_url"]

_MIB = 1024 * 1024


def detect_local_timezone() -> str:
    """Return this machine's IANA time zone name, or ``UTC`` when it cannot be told."""
    candidates: list[str] = []
    tz_env = os.environ.get("TZ", "").lstrip(":")
    if tz_env:
        candidates.append(tz_env)
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text(encoding="utf-8").strip())
    try:
        target = os.readlink("/etc/localtime")
    except OSError:
        target = ""
    if "zoneinfo/" in target:
        candidates.append(target.split("zoneinfo/", 1)[1])
    for name in candidates:
        if name and _is_zone(name):
            return name
    return "UTC"


def _is_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


class Settings(BaseSettings):
    """Settings of one svrctl process, read from ``SVRCTL_*`` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="SVRCTL_", env_nested_delimiter="__", extra="ignore", validate_default=True
    )

    home: Path = Field(
        default_factory=lambda: Path.home() / ".svrctl",
        description="Folder for svrctl's own files (database, known_hosts), mode 0700.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL of the app database; empty means a SQLite file in home.",
    )
    timezone: str = Field(
        default_factory=detect_local_timezone,
        description="Default IANA time zone of task schedules.",
    )
    ssh_key_dir: Path = Field(
        default_factory=lambda: Path.home() / ".ssh",
        description="Where SSH keys are looked for when a server names none.",
    )
    output_limit_bytes: int = Field(
        default=_MIB, ge=1024, description="Bytes kept of each output stream of a run."
    )
    history_retention_days: int = Field(
        default=30, ge=1, description="Days of run history kept by the retention cleanup."
    )
    ssh_idle_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How long a worker keeps an idle SSH connection for reuse; 0 disables.",
    )
    sqlite_busy_timeout_ms: int = Field(
        default=30_000, ge=0, description="How long SQLite waits for a lock before failing."
    )
    prefect_ui_url: str | None = Field(
        default=None,
        description="Prefect UI address for links in notifications (default: the API URL "
        "without /api).",
    )
    notify_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=120,
        description="How long one notification may take before it counts as failed.",
    )

    @field_validator("home", "ssh_key_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("timezone", mode="after")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if not _is_zone(value):
            msg = f"unknown time zone {value!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'"
            raise ValueError(msg)
        return value

    @property
    def resolved_database_url(self) -> str:
        """Return the database URL, defaulting to ``sqlite:///<home>/svrctl.db``."""
        if self.database_url:
            return normalise_database_url(self.database_url)
        return f"sqlite:///{self.home / 'svrctl.db'}"

    def ensure_home(self) -> Path:
        """Create the home folder with mode 0700 if needed (tightening it if looser); return it."""
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.home.stat().st_mode & 0o077:
            self.home.chmod(0o700)
        return self.home


def normalise_database_url(url: str) -> str:
    """Map plain ``postgresql://`` URLs onto the psycopg 3 driver that svrctl ships."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def load_settings() -> Settings:
    """Read settings from the environment, turning validation errors into a clear message."""
    from pydantic import ValidationError

    from svrctl.exceptions import BadInputError

    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"SVRCTL_{'_'.join(str(p) for p in err['loc']).upper()}: "
            f"{str(err['msg']).removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise BadInputError(f"invalid settings: {problems}", field="settings") from exc
