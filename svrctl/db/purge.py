"""Delete old rows in batches, oldest first, each batch one short write transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select, text
from sqlalchemy.orm import InstrumentedAttribute, Session

from svrctl.db.engine import Database

__all__ = ["purge_before"]

# Page cache of a SQLite purge batch (KiB): every index page a batch changes stays in
# memory until the commit writes it once, instead of spilling to the WAL again and again.
_SQLITE_CACHE_KIB = 65_536


def purge_before(
    db: Database,
    column: InstrumentedAttribute[datetime],
    cutoff: datetime,
    *where: ColumnElement[bool],
    batch: int = 50_000,
) -> int:
    """Delete the rows whose ``column`` is before ``cutoff`` and that match ``where``.

    Each batch deletes one range of ``column`` holding about ``batch`` rows, found
    through the column's index; the next range starts where the last one ended, so no
    batch walks over what an earlier one deleted (PostgreSQL keeps dead index entries
    until a vacuum) and no ids travel to the client. Returns how many rows went.
    """
    table: Any = column.class_
    lower: datetime | None = None
    total = 0
    while True:
        with db.write() as session:
            restore = _grow_sqlite_cache(session)
            since = [column >= lower] if lower is not None else []
            upper = session.scalar(
                select(column)
                .where(column < cutoff, *since)
                .order_by(column)
                .offset(batch)
                .limit(1)
            )
            if upper is not None and upper == lower:
                # more than ``batch`` rows at one instant: take that instant alone
                span = [column == lower]
                upper = session.scalar(
                    select(func.min(column)).where(column > lower, column < cutoff)
                )
            else:
                span = [*since, column < (cutoff if upper is None else upper)]
            removed: Any = session.execute(
                delete(table).where(*span, *where).execution_options(synchronize_session=False)
            )
            total += int(removed.rowcount)
            if restore is not None:
                session.execute(text(f"PRAGMA cache_size={int(restore)}"))
        if upper is None:
            return total
        lower = upper


def _grow_sqlite_cache(session: Session) -> int | None:
    """Give a SQLite connection a larger page cache; return its old size (None elsewhere)."""
    if session.get_bind().dialect.name != "sqlite":
        return None
    old = int(session.execute(text("PRAGMA cache_size")).scalar_one())
    session.execute(text(f"PRAGMA cache_size=-{_SQLITE_CACHE_KIB}"))
    return old
