"""Engines and sessions for the app database, tuned for SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from svrctl.db.schema import check_schema

__all__ = ["Database", "make_engine", "open_database"]

_WRITE_OPTION = "svrctl_write"


def make_engine(url: str, *, busy_timeout_ms: int = 30_000) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout, foreign keys and immediate writes."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        options: dict[str, Any] = {}
        if parsed.get_driver_name() in ("psycopg", "psycopg2"):
            # No hstore columns here: skip the type lookup on every first connect.
            options["use_native_hstore"] = False
        return create_engine(url, pool_pre_ping=True, **options)
    if parsed.database and parsed.database != ":memory:":
        _create_private_file(Path(parsed.database))
    engine = create_engine(url, connect_args={"timeout": busy_timeout_ms / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A write transaction takes the write lock up front: a deferred one that
        # upgrades later can fail with "database is locked" whatever the timeout.
        immediate = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _create_private_file(path: Path) -> None:
    """Create the SQLite file readable by its owner only, or make an existing one so.

    SQLite gives its -wal and -shm files the mode of the database file, so those
    follow; ones already there from a looser time are tightened too.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Only a file that is not there yet is opened: closing any descriptor of a file that
    # SQLite has open in this process drops all its locks on it (POSIX locks belong to
    # the process), and another process could then delete the WAL under our connections.
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    for file in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))):
        _make_private(file)


def _make_private(path: Path) -> None:
    """Drop group and other access from a file of ours; leave other users' files alone."""
    try:
        info = path.stat()
        if info.st_mode & 0o077 and info.st_uid == os.geteuid():
            path.chmod(info.st_mode & 0o700)
    except FileNotFoundError:
        pass


@dataclass
class Database:
    """An open app database: an engine plus session factories for reads and writes."""

    engine: Engine
    _reads: sessionmaker[Session]
    _writes: sessionmaker[Session]

    @classmethod
    def from_engine(cls, engine: Engine) -> Database:
        """Wrap an engine in read and write session factories."""
        write_engine = engine.execution_options(**{_WRITE_OPTION: True})
        return cls(
            engine=engine,
            _reads=sessionmaker(engine, expire_on_commit=False),
            _writes=sessionmaker(write_engine, expire_on_commit=False),
        )

    @contextmanager
    def read(self) -> Iterator[Session]:
        """Yield a session for reading; closing it ends the transaction, writing nothing."""
        with self._reads() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """Yield a session whose changes are committed at the end, or all rolled back."""
        with self._writes.begin() as session:
            yield session

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def open_database(url: str, *, busy_timeout_ms: int = 30_000, check: bool = True) -> Database:
    """Open the app database, refusing one whose schema does not match this code."""
    engine = make_engine(url, busy_timeout_ms=busy_timeout_ms)
    if check:
        try:
            check_schema(engine)
        except BaseException:
            engine.dispose()
            raise
    return Database.from_engine(engine)
