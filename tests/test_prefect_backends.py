"""The Prefect servers behind ``prefect_api`` and ``prefect_server`` use the test's backend.

A ``[postgres]`` test runs with its app database and Prefect's on PostgreSQL, a
``[sqlite]`` one with both on SQLite. Each check writes a flow through the API that
in-process Prefect points at, then finds it in the database the server should use:
a server that silently kept its state elsewhere fails it.
"""

from __future__ import annotations

import os
import uuid

import pytest
from fixtures.prefect import (
    PREFECT_DB_ENV,
    PrefectTestApi,
    prefect_api_pointed_at,
    sync_database_url,
)
from fixtures.prefect_server import PrefectServer, server_database_url
from sqlalchemy import create_engine, text

from svrctl.db.engine import Database


def _create_flow_in_process() -> str:
    """Create a uniquely named flow through the API that in-process Prefect uses."""
    from prefect.client.orchestration import get_client

    name = f"backend-check-{uuid.uuid4().hex[:12]}"
    with get_client(sync_client=True) as client:
        client.create_flow_from_name(name)
    return name


def _flow_names(prefect_database_url: str) -> set[str]:
    """Read the flow names straight from a Prefect server's database."""
    engine = create_engine(sync_database_url(prefect_database_url))
    try:
        with engine.connect() as conn:
            return set(conn.execute(text("SELECT name FROM flow")).scalars())
    finally:
        engine.dispose()


def _expect_backend(prefect_database_url: str, backend: str) -> None:
    dialect = "postgresql" if backend == "postgres" else "sqlite"
    assert prefect_database_url.startswith(dialect + "+"), prefect_database_url


def test_prefect_api_keeps_its_state_in_the_app_database_backend(
    database: Database, prefect_api: str, prefect_test_api: PrefectTestApi
) -> None:
    app_backend = "postgres" if database.engine.dialect.name == "postgresql" else "sqlite"
    _expect_backend(prefect_test_api.database_url, app_backend)
    assert prefect_test_api.api_url == prefect_api
    name = _create_flow_in_process()
    assert name in _flow_names(prefect_test_api.database_url)


def test_prefect_server_keeps_its_state_in_the_app_database_backend(
    database: Database, prefect_server: PrefectServer
) -> None:
    app_backend = "postgres" if database.engine.dialect.name == "postgresql" else "sqlite"
    database_url = server_database_url(prefect_server)
    _expect_backend(database_url, app_backend)
    name = _create_flow_in_process()
    assert name in _flow_names(database_url)


def test_without_an_app_database_the_environment_picks_the_backend(
    prefect_backend: str, prefect_test_api: PrefectTestApi, prefect_api: str
) -> None:
    assert prefect_backend == (os.environ.get(PREFECT_DB_ENV) or "sqlite")
    _expect_backend(prefect_test_api.database_url, prefect_backend)
    assert _create_flow_in_process() in _flow_names(prefect_test_api.database_url)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.postgres
def test_each_test_is_pointed_at_its_own_server_and_restored_after(
    database_url: str,
    prefect_api: str,
    prefect_api_postgres: PrefectTestApi,
) -> None:
    from prefect.settings import PREFECT_API_URL

    assert prefect_api != prefect_api_postgres.api_url
    assert os.environ["PREFECT_API_URL"] == prefect_api == PREFECT_API_URL.value()
    with prefect_api_pointed_at(prefect_api_postgres.api_url):
        assert os.environ["PREFECT_API_URL"] == prefect_api_postgres.api_url
        assert PREFECT_API_URL.value() == prefect_api_postgres.api_url
        name = _create_flow_in_process()
    assert name in _flow_names(prefect_api_postgres.database_url)
    assert os.environ["PREFECT_API_URL"] == prefect_api == PREFECT_API_URL.value()
    assert _create_flow_in_process() not in _flow_names(prefect_api_postgres.database_url)
