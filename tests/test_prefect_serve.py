"""Prefect's server as svrctl starts it: colliding SQLite writes wait for each other, not 503.

svrctl.prefect_serve begins the server's SQLite transactions IMMEDIATE. Without it,
concurrent writes to a real `prefect server start` on SQLite are refused with HTTP 503
(``database is locked``) by the dozen, and Prefect's client retries each 2 s later.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fixtures.prefect_server import PrefectServer
from prefect.server.database import configurations

from svrctl.prefect_serve import immediate_sqlite_transactions


async def _created(client: httpx.AsyncClient, path: str, body: Mapping[str, object]) -> str:
    """POST until created (setup only, so that a refused request shows in the counts)."""
    for _ in range(50):
        response = await client.post(path, json=body)
        if response.status_code != 503:
            break
        await asyncio.sleep(0.2)
    response.raise_for_status()
    created: str = response.json()["id"]
    return created


async def _collide(api_url: str, rounds: int, width: int) -> Counter[tuple[str, int]]:
    """Send ``width`` label updates, run creations and log writes at once, ``rounds`` times."""
    # No retries here: each request's first answer counts.
    async with httpx.AsyncClient(base_url=api_url, timeout=120) as client:
        flow = await _created(client, "/flows/", {"name": "collide"})
        done = {"flow_id": flow, "state": {"type": "COMPLETED"}}
        runs = [await _created(client, "/flow_runs/", done) for _ in range(width)]
        answers: Counter[tuple[str, int]] = Counter()
        for i in range(rounds):
            requests = {}
            for n, run in enumerate(runs):
                log = {
                    "name": "t",
                    "level": 20,
                    "message": "m",
                    "timestamp": "2026-01-01T00:00:00Z",
                    "flow_run_id": run,
                }
                requests[f"labels {n}"] = client.patch(f"/flow_runs/{run}/labels", json={i: n})
                requests[f"create {n}"] = client.post("/flow_runs/", json=done)
                requests[f"logs {n}"] = client.post("/logs/", json=[log])
            for name, response in zip(
                requests, await asyncio.gather(*requests.values()), strict=True
            ):
                answers[name.split()[0], response.status_code] += 1
        return answers


def test_colliding_writes_all_succeed(prefect_server_sqlite: PrefectServer) -> None:
    answers = asyncio.run(_collide(prefect_server_sqlite.api_url, rounds=3, width=20))
    # Each of the 180 requests succeeded at its first try; none was refused with 503.
    assert answers == {("labels", 204): 60, ("create", 201): 60, ("logs", 201): 60}
    assert "database is locked" not in prefect_server_sqlite.log.read_text(errors="replace")


def test_pausing_a_work_queue_answers_at_once(prefect_server_sqlite: PrefectServer) -> None:
    # Pausing emits a status event whose plain session reads inside the update's
    # transaction: it must not wait for that transaction (60 s, then 503).
    with httpx.Client(base_url=prefect_server_sqlite.api_url, timeout=120) as client:
        pool = f"pause-{uuid.uuid4().hex[:8]}"
        client.post("/work_pools/", json={"name": pool, "type": "process"}).raise_for_status()
        queue = client.post(f"/work_pools/{pool}/queues", json={"name": "q"})
        queue.raise_for_status()
        for paused in (True, False):
            started = time.monotonic()
            answer = client.patch(f"/work_queues/{queue.json()['id']}", json={"is_paused": paused})
            assert (answer.status_code, paused) == (204, paused), answer.text
            assert time.monotonic() - started < 10
        assert client.get(f"/work_queues/{queue.json()['id']}").json()["is_paused"] is False


def test_a_transaction_takes_the_write_lock_at_once_and_nested_reads_do_not_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_class = configurations.AioSqliteConfiguration
    monkeypatch.setattr(config_class, "begin_transaction", config_class.begin_transaction)
    assert immediate_sqlite_transactions()
    path = tmp_path / "prefect.db"
    with closing(sqlite3.connect(path)) as setup:
        setup.execute("PRAGMA journal_mode = WAL")
        setup.execute("CREATE TABLE t (x INTEGER)")
    config = config_class(connection_url=f"sqlite+aiosqlite:///{path}")

    def other_writer_is_locked_out() -> bool:
        with closing(sqlite3.connect(path, timeout=0, isolation_level=None)) as other:
            try:
                other.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                return "locked" in str(exc)
            other.execute("ROLLBACK")
            return False

    async def check(with_for_update: bool, rows_before: int) -> None:
        engine = await config.engine()
        async with await config.session(engine) as outer:
            async with config.begin_transaction(outer, with_for_update):
                # The write lock is taken at BEGIN, before any statement.
                assert other_writer_is_locked_out()
                assert configurations.SQLITE_BEGIN_MODE.get() is None
                # A plain session opened inside reads at once.
                async with await config.session(engine) as inner:
                    read = await inner.execute(sa.text("SELECT count(*) FROM t"))
                    assert read.scalar() == rows_before
                await outer.execute(sa.text("INSERT INTO t VALUES (1)"))
            assert not other_writer_is_locked_out()

    asyncio.run(asyncio.wait_for(check(False, rows_before=0), timeout=20))
    asyncio.run(asyncio.wait_for(check(True, rows_before=1), timeout=20))
    with closing(sqlite3.connect(path)) as after:
        assert after.execute("SELECT count(*) FROM t").fetchone() == (2,)


def test_a_prefect_without_the_hook_is_left_alone_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    before = configurations.AioSqliteConfiguration.begin_transaction
    monkeypatch.delattr(configurations, "SQLITE_BEGIN_MODE")
    with caplog.at_level(logging.WARNING, logger="svrctl.prefect_serve"):
        assert not immediate_sqlite_transactions()
    assert configurations.AioSqliteConfiguration.begin_transaction is before
    assert "could not set Prefect's SQLite transactions to IMMEDIATE" in caplog.text
