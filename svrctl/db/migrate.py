"""Create or migrate the app database with Alembic."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from svrctl.db.engine import make_engine
from svrctl.db.schema import HEAD_REVISION, KNOWN_REVISIONS, current_revision
from svrctl.exceptions import SchemaTooNewError

__all__ = ["alembic_config", "script_revisions", "upgrade"]


def alembic_config() -> Config:
    """Return an Alembic config pointing at svrctl's packaged migrations."""
    cfg = Config()
    cfg.set_main_option("script_location", "svrctl:migrations")
    return cfg


def script_revisions() -> list[str]:
    """Return the revision ids of the packaged migrations, oldest first."""
    script = ScriptDirectory.from_config(alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def upgrade(url: str, *, busy_timeout_ms: int = 30_000) -> tuple[str | None, str]:
    """Migrate the database at ``url`` to the newest schema; return (before, after) revisions."""
    engine = make_engine(url, busy_timeout_ms=busy_timeout_ms)
    try:
        before = current_revision(engine)
        if before is not None and before not in KNOWN_REVISIONS:
            raise SchemaTooNewError(
                f"the app database is at schema {before}, newer than this svrctl "
                f"({HEAD_REVISION}): upgrade svrctl instead."
            )
        if before != HEAD_REVISION:
            cfg = alembic_config()
            with engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        return before, HEAD_REVISION
    finally:
        engine.dispose()
