"""Models, migrations and engine settings, on SQLite and PostgreSQL."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from conftest import BACKENDS
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import IntegrityError

from svrctl.db.engine import Database, make_engine, open_database
from svrctl.db.migrate import alembic_config, script_revisions, upgrade
from svrctl.db.models import Base, Server, Task, TaskHistory
from svrctl.db.schema import HEAD_REVISION, KNOWN_REVISIONS, check_schema, current_revision
from svrctl.exceptions import (
    DatabaseError,
    SchemaMissingError,
    SchemaOutdatedError,
    SchemaTooNewError,
)


def test_known_revisions_match_the_migration_scripts() -> None:
    assert script_revisions() == list(KNOWN_REVISIONS)
    assert KNOWN_REVISIONS[-1] == HEAD_REVISION


def test_migrations_match_the_models(database: Database) -> None:
    with database.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_tables_and_indexes_exist(database: Database) -> None:
    insp = inspect(database.engine)
    assert {"servers", "tasks", "task_history", "alembic_version"} <= set(insp.get_table_names())
    indexes = {ix["name"]: ix["column_names"] for ix in insp.get_indexes("task_history")}
    assert indexes["ix_task_history_task_id_started_at_id_status_duration_ms"] == [
        "task_id",
        "started_at",
        "id",
        "status",
        "duration_ms",
    ]
    assert "ix_task_history_task_id_started_at" not in indexes
    assert indexes["ix_task_history_started_at"] == ["started_at"]


def test_downgrade_to_nothing_and_back(database_url: str) -> None:
    engine = make_engine(database_url)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    with pytest.raises(SchemaMissingError):
        check_schema(engine)
    engine.dispose()
    assert upgrade(database_url) == (None, HEAD_REVISION)
    engine = make_engine(database_url)
    check_schema(engine)
    engine.dispose()


def test_upgrade_is_idempotent(database_url: str) -> None:
    assert upgrade(database_url) == (HEAD_REVISION, HEAD_REVISION)


def _set_revision(database: Database, revision: str) -> None:
    with database.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})


def test_a_newer_schema_is_refused(database: Database, database_url: str) -> None:
    _set_revision(database, "9999")
    with pytest.raises(SchemaTooNewError, match="newer svrctl"):
        open_database(database_url)
    with pytest.raises(SchemaTooNewError):
        upgrade(database_url)


def test_an_older_schema_is_refused(database: Database, database_url: str) -> None:
    # Pretend the code knows a later revision than the database has.
    import svrctl.db.schema as schema

    _set_revision(database, KNOWN_REVISIONS[0])
    original = (schema.KNOWN_REVISIONS, schema.HEAD_REVISION)
    schema.KNOWN_REVISIONS = (*original[0], "9998")
    schema.HEAD_REVISION = "9998"
    try:
        with pytest.raises(SchemaOutdatedError, match="svrctl db upgrade"):
            open_database(database_url)
    finally:
        schema.KNOWN_REVISIONS, schema.HEAD_REVISION = original


def test_datetimes_round_trip_as_aware_utc(database: Database) -> None:
    seen = datetime(2026, 3, 29, 1, 30, 15, 123000, tzinfo=UTC)
    with database.write() as s:
        s.add(Server(name="a", host="h", username="u", last_seen=seen))
    with database.read() as s:
        got = s.scalars(select(Server)).one()
    assert got.last_seen == seen
    assert got.last_seen is not None and got.last_seen.tzinfo is not None
    assert got.created.tzinfo is not None


def test_naive_datetimes_are_refused(database: Database) -> None:
    with pytest.raises(Exception, match="naive"), database.write() as s:
        s.add(Server(name="a", host="h", username="u", last_seen=datetime(2026, 1, 1)))


def _task(server: Server | None, name: str = "t") -> Task:
    return Task(name=name, kind="ssh", server=server, command="true", timezone="UTC")


def test_a_server_in_use_cannot_be_deleted(database: Database) -> None:
    with database.write() as s:
        server = Server(name="a", host="h", username="u")
        s.add_all([server, _task(server)])
    with pytest.raises(IntegrityError), database.write() as s:
        s.execute(text("DELETE FROM servers"))


def test_deleting_a_task_deletes_its_history(database: Database) -> None:
    with database.write() as s:
        task = _task(None)
        s.add(task)
        s.flush()
        s.add_all([TaskHistory(task_id=task.id, status="success") for _ in range(3)])
    with database.write() as s:
        s.execute(text("DELETE FROM tasks"))
    with database.read() as s:
        assert s.scalar(select(func.count()).select_from(TaskHistory)) == 0


def test_unique_names(database: Database) -> None:
    with database.write() as s:
        s.add(Server(name="a", host="h", username="u"))
    with pytest.raises(IntegrityError), database.write() as s:
        s.add(Server(name="a", host="h2", username="u"))


def test_history_defaults(database: Database) -> None:
    with database.write() as s:
        task = _task(None)
        s.add(task)
        s.flush()
        s.add(TaskHistory(task_id=task.id))
    with database.read() as s:
        row = s.scalars(select(TaskHistory)).one()
    assert (row.status, row.attempt, row.triggered_by, row.output) == ("running", 1, "manual", "")
    assert row.started_at.tzinfo is not None


def test_sqlite_is_tuned(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x' / 'svrctl.db'}"
    upgrade(url)
    engine = make_engine(url, busy_timeout_ms=1234)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1234
    engine.dispose()
    db_file = tmp_path / "x" / "svrctl.db"
    assert stat.S_IMODE(db_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(db_file.parent.stat().st_mode) == 0o700


def test_sqlite_writes_take_the_lock_up_front(tmp_path: Path) -> None:
    """Two writers never deadlock on lock upgrade: the second waits, then succeeds."""
    import threading

    url = f"sqlite:///{tmp_path / 'svrctl.db'}"
    upgrade(url)
    db = open_database(url)
    with db.write() as s:
        s.add(_task(None))
    errors: list[BaseException] = []

    def bump() -> None:
        try:
            for _ in range(20):
                with db.write() as s:
                    count = s.scalar(select(Task.run_count))
                    s.execute(text("UPDATE tasks SET run_count = :c"), {"c": (count or 0) + 1})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with db.read() as s:
        # read-modify-write inside one write transaction is serialised: no lost update
        assert s.scalar(select(Task.run_count)) == 80
    db.dispose()


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a database with no tables at all: once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    factory = request.getfixturevalue("pg_database_factory")
    url: str = factory()
    yield url
    factory.drop(url)


def test_current_revision_of_an_empty_database(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    assert current_revision(engine) is None
    with pytest.raises(SchemaMissingError, match="svrctl db upgrade"):
        check_schema(engine)
    engine.dispose()


def test_an_unreadable_version_table_is_an_error_not_a_missing_schema(
    empty_database_url: str,
) -> None:
    engine = make_engine(empty_database_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE alembic_version (other INTEGER)"))
    with pytest.raises(DatabaseError, match="cannot open the app database") as caught:
        current_revision(engine)
    assert not isinstance(caught.value, SchemaMissingError)
    engine.dispose()


@pytest.mark.postgres
def test_postgresql_engines_skip_the_hstore_lookup(pg_admin_url: str) -> None:
    # svrctl has no hstore columns; the lookup would cost a query on every first connect
    engine = make_engine(pg_admin_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1
    engine.dispose()
    assert engine.dialect.use_native_hstore is False  # type: ignore[attr-defined]
