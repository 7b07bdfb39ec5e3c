"""``python -m svrctl.prefect_serve``: Prefect's CLI, its SQLite transactions begun IMMEDIATE.

Prefect's server opens the transactions it writes in with SQLite's default, DEFERRED
(IMMEDIATE only where it also locks rows for update). A deferred transaction that has
read and then writes while another connection writes fails at once with ``database is
locked``, whatever the busy timeout. The server answers that request with HTTP 503,
and Prefect's client sends it again only about 2 s later, so a run starts seconds late.
Begun IMMEDIATE, a transaction takes the write lock first, and a colliding one waits
for it (up to the server's 60 s busy timeout) instead of failing.

`svrctl.prefect_server.start_prefect_server` starts ``prefect server start`` through
this module. Nothing changes on PostgreSQL.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

__all__ = ["immediate_sqlite_transactions", "main"]

log = logging.getLogger(__name__)


def immediate_sqlite_transactions() -> bool:
    """Make Prefect's server begin every SQLite transaction IMMEDIATE; tell whether it could."""
    from prefect.server.database import configurations

    config = getattr(configurations, "AioSqliteConfiguration", None)
    mode = getattr(configurations, "SQLITE_BEGIN_MODE", None)
    if config is None or mode is None or not hasattr(config, "begin_transaction"):
        log.warning(
            "svrctl could not set Prefect's SQLite transactions to IMMEDIATE (this Prefect "
            "version has no AioSqliteConfiguration.begin_transaction or SQLITE_BEGIN_MODE); "
            "colliding writes may be answered with HTTP 503 and retried 2 s later"
        )
        return False

    @asynccontextmanager
    async def begin_transaction(
        self: Any, session: Any, with_for_update: bool = False
    ) -> AsyncGenerator[Any, None]:
        """Begin the session's transaction IMMEDIATE (svrctl)."""
        # Prefect's "begin" listener reads the mode whenever a connection begins, also
        # for a plain session opened inside this block. So the mode is IMMEDIATE only
        # while this session's own connection begins; inside the block it is back to
        # what it was (no BEGIN), or a nested read would wait for this very transaction.
        token = mode.set("IMMEDIATE")
        try:
            async with session.begin() as transaction:
                await session.connection()
                mode.reset(token)
                token = None
                yield transaction
        finally:
            if token is not None:
                mode.reset(token)

    config.begin_transaction = begin_transaction
    return True


def main() -> None:
    """Run ``prefect`` with the arguments given, its SQLite transactions begun IMMEDIATE."""
    immediate_sqlite_transactions()
    from prefect.cli import app

    sys.argv[0] = "prefect"
    app()


if __name__ == "__main__":
    main()
