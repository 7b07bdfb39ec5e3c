"""Schema version checks that need no Alembic import, so the CLI starts fast."""

from __future__ import annotations

from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import OperationalError, ProgrammingError, SQLAlchemyError

from svrctl.exceptions import (
    DatabaseError,
    SchemaMissingError,
    SchemaOutdatedError,
    SchemaTooNewError,
)

__all__ = ["HEAD_REVISION", "KNOWN_REVISIONS", "check_schema", "current_revision"]

# Every migration revision, oldest first. A test keeps this equal to Alembic's history.
KNOWN_REVISIONS: tuple[str, ...] = (
    "0001",
    "0002",
    "0003",
    "0004",
    "0005",
    "0006",
    "0007",
    "0008",
)
HEAD_REVISION = KNOWN_REVISIONS[-1]


def current_revision(engine: Engine) -> str | None:
    """Return the database's Alembic revision, or None when it has no svrctl schema."""
    try:
        with engine.connect() as conn:
            # One query in the usual case; the catalog is asked only when it fails, to
            # tell a database without the table from one that cannot be read.
            try:
                row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
            except (OperationalError, ProgrammingError):
                conn.rollback()
                if not inspect(conn).has_table("alembic_version"):
                    return None
                raise
    except SQLAlchemyError as exc:
        raise DatabaseError(
            f"cannot open the app database at {_safe_url(engine)}: {exc.__class__.__name__}: "
            f"{_first_line(exc)}. Check SVRCTL_DATABASE_URL and that the database server "
            "is running and reachable."
        ) from exc
    return None if row is None else str(row[0])


def check_schema(engine: Engine) -> None:
    """Raise unless the database schema is exactly the one this code was written for."""
    revision = current_revision(engine)
    where = _safe_url(engine)
    if revision is None:
        raise SchemaMissingError(
            f"the app database at {where} has no svrctl schema yet: run `svrctl db upgrade`."
        )
    if revision == HEAD_REVISION:
        return
    if revision in KNOWN_REVISIONS:
        raise SchemaOutdatedError(
            f"the app database at {where} is at schema {revision}, older than this svrctl "
            f"({HEAD_REVISION}): run `svrctl db upgrade`."
        )
    raise SchemaTooNewError(
        f"the app database at {where} is at schema {revision}, which this svrctl does not "
        f"know (its newest is {HEAD_REVISION}): it was written by a newer svrctl. "
        "Upgrade svrctl on this machine; do not downgrade the database."
    )


def _safe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]
