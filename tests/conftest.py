"""Shared fixtures: app databases on SQLite and PostgreSQL, and a CLI runner."""

from __future__ import annotations

import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from svrctl.db.engine import Database, open_database
from svrctl.db.migrate import upgrade

pytest_plugins = [
    "fixtures.sshd",
    "fixtures.postgres",
    "fixtures.prefect",
    "fixtures.prefect_server",
    "fixtures.runenv",
    "fixtures.notify_listener",
]

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def pytest_configure(config: pytest.Config) -> None:
    """Let the processes that tests start be stopped with SIGINT, as Ctrl-C would.

    A shell without job control starts a background command (``scripts/test &``) with
    SIGINT ignored, and every process started from it inherits that: a worker or
    ``svrctl up`` would then ignore the SIGINT a test sends it.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def forget_remembered_secrets() -> Iterator[None]:
    """Start each test with no secret remembered for redaction by an earlier test.

    A process remembers every token it has seen (svrctl.notify.channels) and hides it
    in all later output; one test's token (say, the user name of a URL) must not
    change what the next test prints.
    """
    yield
    channels = sys.modules.get("svrctl.notify.channels")
    if channels is not None:
        with channels._secrets_lock:
            channels._secrets.clear()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies, so migrations run once."""
    path = tmp_path_factory.mktemp("sqlite-template") / "svrctl.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_template(pg_admin_url: str, pg_database_factory: Callable[..., str]) -> str:
    """Name of a migrated PostgreSQL database used as a template for each test's database."""
    from sqlalchemy.engine import make_url

    url = pg_database_factory()
    upgrade(url)
    name = make_url(url).database
    assert name
    return name


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh, migrated app database: once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "home" / "svrctl.db"
        path.parent.mkdir(mode=0o700)
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        path.chmod(0o600)
        yield f"sqlite:///{path}"
        return
    factory = request.getfixturevalue("pg_database_factory")
    url: str = factory(template=request.getfixturevalue("pg_template"))
    yield url
    factory.drop(url)


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """The open app database of ``database_url``."""
    db = open_database(database_url)
    yield db
    db.dispose()


@pytest.fixture
def svrctl_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str) -> Path:
    """Point svrctl's settings at a private home and the test's database; return the home."""
    home = tmp_path / "home"
    monkeypatch.setenv("SVRCTL_HOME", str(home))
    monkeypatch.setenv("SVRCTL_DATABASE_URL", database_url)
    monkeypatch.setenv("SVRCTL_TIMEZONE", "UTC")
    monkeypatch.setenv("SVRCTL_SSH_KEY_DIR", str(tmp_path / "ssh"))
    return home


Invoke = Callable[..., Result]


@pytest.fixture
def svrctl(svrctl_env: Path) -> Invoke:
    """Run ``svrctl ARGS...`` in-process and return click's Result."""
    from svrctl.cli import cli

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), prog_name="svrctl", catch_exceptions=False)

    return invoke
