"""PostgreSQL for `svrctl up --postgres URL`: parse the URL, and make sure a database exists.

One URL names the app database; Prefect's database is the same name with
``_prefect`` appended on the same server and role (Prefect and svrctl both keep an
Alembic ``alembic_version`` table, so they cannot share one database).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "APP_DB_VARIABLE",
    "PREFECT_DATABASE_SUFFIX",
    "PREFECT_DB_VARIABLE",
    "PostgresTarget",
    "ensure_postgres_database",
    "is_postgres",
    "parse_postgres_url",
    "shown_url",
]

# `svrctl up --postgres .../NAME` keeps Prefect's tables in the database NAME_prefect:
# both use Alembic's `alembic_version` table, so they cannot share one database.
PREFECT_DATABASE_SUFFIX = "_prefect"
PREFECT_DB_VARIABLE = "PREFECT_SERVER_DATABASE_CONNECTION_URL"
APP_DB_VARIABLE = "SVRCTL_DATABASE_URL"
POSTGRES_CONNECT_TIMEOUT = 5


@dataclass(frozen=True)
class PostgresTarget:
    """The two databases `svrctl up --postgres URL` uses on one PostgreSQL server.

    Attributes:
        app_url: SQLAlchemy URL of the app database (psycopg 3), for SVRCTL_DATABASE_URL.
        prefect_url: SQLAlchemy URL of Prefect's database (asyncpg), for
            PREFECT_SERVER_DATABASE_CONNECTION_URL.
    """

    app_url: str
    prefect_url: str


_POSTGRES_FORM = "postgresql://USER:PASSWORD@HOST[:PORT]/DATABASE"
_DB_NAME_MAX = 63 - len(PREFECT_DATABASE_SUFFIX)


def parse_postgres_url(url: str) -> PostgresTarget:
    """Check a ``--postgres`` URL; return the app and Prefect database URLs it stands for.

    The app database is the URL's database; Prefect's is the same name with
    ``_prefect`` appended, on the same server, as the same user.

    Raises:
        BadInputError: the URL is not ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE``.
            The message never contains the password.
    """
    import re

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from svrctl.exceptions import BadInputError

    def bad(why: str) -> BadInputError:
        return BadInputError(
            f"invalid postgres: {why}; the form is {_POSTGRES_FORM}", field="postgres"
        )

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise bad("--postgres is not a database URL") from None
    if parsed.drivername not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise bad(f"the scheme is {parsed.drivername!r}, not postgresql")
    if not parsed.host:
        raise bad("the URL names no host")
    if not parsed.username:
        raise bad("the URL names no user")
    if not parsed.database:
        raise bad("the URL names no database")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", parsed.database) or (
        len(parsed.database) > _DB_NAME_MAX
    ):
        raise bad(
            f"the database name {parsed.database!r} must be 1-{_DB_NAME_MAX} letters, digits "
            "or _, not starting with a digit"
        )
    if parsed.query:
        raise bad(
            "--postgres takes no ?options; for TLS or other connection options set "
            f"{APP_DB_VARIABLE} and {PREFECT_DB_VARIABLE} instead (docs/production.md)"
        )
    try:
        parsed.port  # noqa: B018 - a bad port raises here
    except ValueError:
        raise bad("the port is not a number") from None
    app = parsed.set(drivername="postgresql+psycopg")
    prefect = parsed.set(
        drivername="postgresql+asyncpg", database=parsed.database + PREFECT_DATABASE_SUFFIX
    )
    return PostgresTarget(
        app.render_as_string(hide_password=False), prefect.render_as_string(hide_password=False)
    )


def shown_url(url: str) -> str:
    """Return ``url`` with its password hidden."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _scrub(text: str, password: str | None, known: str) -> str:
    """Tidy a driver message; hide the password, unless it is part of what is shown anyway."""
    text = " ".join(text.split()).rstrip(".?! ")
    return text.replace(password, "***") if password and password not in known else text


def ensure_postgres_database(url: str, variable: str, *, create: bool = True) -> bool:
    """Check that the PostgreSQL database of ``url`` answers; create it if missing.

    ``url`` is a SQLAlchemy URL with any ``postgresql`` driver; ``variable`` names
    where it came from, for messages. Returns True when the database was created.

    Raises:
        BadInputError: the server cannot be reached, refuses the login, or the
            database is missing and cannot be created. The message says what,
            why and what to do, and never contains the password.
    """
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    from svrctl.exceptions import BadInputError

    parsed = make_url(url)
    password = parsed.password if isinstance(parsed.password, str) else None
    params: dict[str, object] = {
        "host": parsed.host,
        "port": parsed.port,
        "user": parsed.username,
        "password": password,
        "dbname": parsed.database,
        "connect_timeout": POSTGRES_CONNECT_TIMEOUT,
    }
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        params |= {k: v for k, v in parsed.query.items() if isinstance(v, str)}
    params = {k: v for k, v in params.items() if v is not None}
    where = f"{parsed.host}:{parsed.port or 5432}"
    known = f"{parsed.username} {parsed.host} {parsed.database}"

    def connect(dbname: str) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(**(params | {"dbname": dbname}), autocommit=True)  # type: ignore[arg-type]

    try:
        with connect(str(parsed.database)):
            return False
    except psycopg.Error as exc:
        missing = "does not exist" in str(exc) and f'"{parsed.database}"' in str(exc)
        reason = _scrub(str(exc), password, known)
        if not missing:
            raise BadInputError(
                f"cannot connect to PostgreSQL at {where} for {shown_url(url)} ({variable}): "
                f"{reason}. Check that PostgreSQL runs and accepts connections from this "
                "machine, and the user and password in the URL",
                field="postgres",
            ) from None
    todo = (
        f"create it (as a PostgreSQL superuser: `createdb -O {parsed.username} "
        f"{parsed.database}`) and start svrctl up again"
    )
    if not create:
        raise BadInputError(
            f"the database {parsed.database} does not exist on {where} ({variable}): {todo}",
            field="postgres",
        )
    try:
        with connect("postgres") as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(parsed.database))))
    except psycopg.Error as exc:
        reason = _scrub(str(exc), password, known)
        raise BadInputError(
            f"the database {parsed.database} does not exist on {where} ({variable}), and "
            f"user {parsed.username} cannot create it ({reason}): {todo}",
            field="postgres",
        ) from None
    return True


def is_postgres(url: str) -> bool:
    """Tell whether a database URL points at PostgreSQL."""
    return url.startswith(("postgresql", "postgres:", "postgres+"))
