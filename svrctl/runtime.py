"""Process-wide handles for code running inside a worker: settings and the app database."""

from __future__ import annotations

import threading

from svrctl.db.engine import Database, open_database
from svrctl.settings import Settings, load_settings

__all__ = ["app_database", "app_settings", "reset"]

_lock = threading.Lock()
_settings: Settings | None = None
_databases: dict[str, Database] = {}


def app_settings() -> Settings:
    """Return the settings of this process, read once."""
    global _settings
    with _lock:
        if _settings is None:
            _settings = load_settings()
        return _settings


def app_database(settings: Settings | None = None) -> Database:
    """Return the open app database for the settings' URL, opened and checked once."""
    settings = settings or app_settings()
    url = settings.resolved_database_url
    with _lock:
        db = _databases.get(url)
        if db is None:
            settings.ensure_home()
            db = open_database(url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
            _databases[url] = db
        return db


def reset() -> None:
    """Forget the cached settings and close cached databases (tests, config reloads)."""
    global _settings
    with _lock:
        _settings = None
        for db in _databases.values():
            db.dispose()
        _databases.clear()
