"""A private PostgreSQL instance for tests that stop and start the database server.

The shared cluster (``SVRCTL_TEST_PG_URL``) serves every other test and must
never be stopped. A test that takes the database away starts its own instance:
``initdb`` into a fresh directory owned by the ``postgres`` user, then
``pg_ctl start``/``stop`` on a port of its own, with its socket in that
directory. Authentication is ``trust`` on loopback: the instance listens on
127.0.0.1 only and lives as long as the test.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from fixtures.sshd import free_port

__all__ = ["PG_BIN", "PrivatePostgres", "private_postgres", "start_private_postgres"]

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "postgres"
REQUIRE_ENV = "SVRCTL_TEST_REQUIRE_PG"
START_TIMEOUT = 60.0


@dataclass
class PrivatePostgres:
    """One PostgreSQL server of a test: its data directory, port and socket directory."""

    root: Path
    port: int

    @property
    def data(self) -> Path:
        """Return the data directory."""
        return self.root / "data"

    @property
    def log(self) -> Path:
        """Return the server's log file."""
        return self.root / "server.log"

    def url(self, database: str = "postgres", user: str = PG_USER) -> str:
        """Return a SQLAlchemy URL (psycopg driver) for ``database`` on this server."""
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{database}"

    def _pg_ctl(self, *args: str, timeout: float = START_TIMEOUT) -> None:
        argv = [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), *args]
        result = _as_postgres(argv, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(
                f"pg_ctl {args[0]} failed ({result.returncode}): {result.stdout}{result.stderr}\n"
                + self.log_tail()
            )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg_ctl("start", "-w", "-t", str(int(START_TIMEOUT)), "-o", options)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.accepting():
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL on port {self.port} never accepted connections")
            time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect clients, roll back their transactions)."""
        if self.running():
            self._pg_ctl("stop", "-w", "-m", mode)

    def running(self) -> bool:
        """Tell whether the server's postmaster is alive."""
        argv = [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "status"]
        return _as_postgres(argv, timeout=30).returncode == 0

    def accepting(self) -> bool:
        """Tell whether a client can connect right now."""
        try:
            with psycopg.connect(self.libpq("postgres"), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def libpq(self, database: str) -> str:
        """Return a libpq URL for ``database`` as the superuser."""
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str, owner: str = "svrctl") -> str:
        """Create a role ``owner`` (if missing) and a database it owns; return its URL."""
        with psycopg.connect(self.libpq("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (owner,)).fetchone()
            if exists is None:
                conn.execute(f'CREATE ROLE "{owner}" LOGIN')
            conn.execute(f'CREATE DATABASE "{name}" OWNER "{owner}"')
        return self.url(name, owner)

    def log_tail(self, lines: int = 20) -> str:
        """Return the end of the server's log."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def remove(self) -> None:
        """Stop the server (immediately) and delete its directory."""
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def _as_postgres(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool as the ``postgres`` user (root drops to it)."""
    if os.geteuid() == 0:
        argv = ["runuser", "-u", PG_USER, "--", *argv]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
        cwd="/",
    )


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)")
    pytest.skip(reason)


def start_private_postgres() -> PrivatePostgres:
    """Create and start a fresh PostgreSQL instance on a free loopback port."""
    if not (PG_BIN / "initdb").exists():
        _unavailable(f"{PG_BIN / 'initdb'} not found (PostgreSQL 15 server binaries)")
    try:
        owner = pwd.getpwnam(PG_USER)
    except KeyError:
        _unavailable(f"no {PG_USER!r} user to run a private PostgreSQL as")
        raise
    if os.geteuid() not in (0, owner.pw_uid):
        _unavailable(f"a private PostgreSQL needs root or the {PG_USER!r} user")
    # Under /tmp and owned by postgres: pytest's own tmp dirs are private to root.
    root = Path(tempfile.mkdtemp(prefix="svrctl-pg-"))
    os.chown(root, owner.pw_uid, owner.pw_gid)
    server = PrivatePostgres(root, free_port())
    init = [str(PG_BIN / "initdb"), "-D", str(server.data), "-U", PG_USER, "--auth=trust"]
    result = _as_postgres([*init, "--no-sync", "-E", "UTF8"], timeout=120)
    if result.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed ({result.returncode}): {result.stdout}{result.stderr}")
    try:
        server.start()
    except BaseException:
        server.remove()
        raise
    return server


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of this test's own, removed when the test ends."""
    server = start_private_postgres()
    try:
        yield server
    finally:
        server.remove()
