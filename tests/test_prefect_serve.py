"""Prefect's server as svrctl starts it: colliding SQLite writes wait for each other, not 503.

svrctl.prefect_serve begins the server's SQLite transactions IMMEDIATE. Without it,
concurrent writes to a real `prefect server start` on SQLite are refused with HTTP 503
(``database is locked``) by the dozen, and Prefect's client retries each 2 s later.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from unittest.mock import MagicMock

import httpx
import pytest
from fixtures.prefect_server import PrefectServer
from prefect.server.database import configurations

from svrctl.prefect_serve import immediate_sqlite_transactions


async def _created(client: httpx.AsyncClient, path: str, body: dict[str, object]) -> str:
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
                log = {"name": "t", "level": 20, "message": "m", "flow_run_id": run}
                log["timestamp"] = "2026-01-01T00:00:00Z"
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


def test_begin_transaction_is_immediate_for_every_transaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = configurations.AioSqliteConfiguration
    monkeypatch.setattr(config, "begin_transaction", config.begin_transaction)
    assert immediate_sqlite_transactions()

    modes = []

    class Session:
        def begin(self) -> MagicMock:
            modes.append(configurations.SQLITE_BEGIN_MODE.get())
            return MagicMock()

    async def begin(with_for_update: bool) -> None:
        async with config.begin_transaction(MagicMock(), Session(), with_for_update):
            pass

    asyncio.run(begin(False))
    asyncio.run(begin(True))
    assert modes == ["IMMEDIATE", "IMMEDIATE"]
    assert configurations.SQLITE_BEGIN_MODE.get() is None


def test_a_prefect_without_the_hook_is_left_alone_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    before = configurations.AioSqliteConfiguration.begin_transaction
    monkeypatch.delattr(configurations, "SQLITE_BEGIN_MODE")
    with caplog.at_level(logging.WARNING, logger="svrctl.prefect_serve"):
        assert not immediate_sqlite_transactions()
    assert configurations.AioSqliteConfiguration.begin_transaction is before
    assert "could not set Prefect's SQLite transactions to IMMEDIATE" in caplog.text
