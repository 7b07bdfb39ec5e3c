"""Start and stop a local `prefect server start` process with its files under a home folder.

Its database is SQLite in that folder, unless PREFECT_SERVER_DATABASE_CONNECTION_URL
(in the environment or ``extra_env``) names another, such as PostgreSQL. The server runs
through `svrctl.prefect_serve`, so that its colliding SQLite writes wait for each other
instead of failing with HTTP 503.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from svrctl.exceptions import SvrctlError

__all__ = ["PrefectServer", "PrefectServerError", "free_port", "start_prefect_server"]


class PrefectServerError(SvrctlError):
    """The local Prefect server did not start."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Tell whether nothing listens on ``host:port`` (closed connections do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class PrefectServer:
    """A running Prefect server process."""

    home: Path
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def api_url(self) -> str:
        """Return the API URL."""
        return f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        """Return the UI URL."""
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """Return environment variables that point a client at this server."""
        return {"PREFECT_API_URL": self.api_url}

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server and its children."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_prefect_server(
    home: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    timeout: float = 120.0,
    extra_env: dict[str, str] | None = None,
    progress: Callable[[float], None] | None = None,
) -> PrefectServer:
    """Start `prefect server start` with its database under ``home``; wait until healthy.

    ``progress`` is called about once a second with the seconds waited so far.
    """
    import httpx

    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    port = port or free_port(host)
    log = home / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": os.environ.get(
            "PREFECT_SERVER_ANALYTICS_ENABLED", "false"
        ),
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        # The UI calls the API at this URL; Prefect's default is port 4200 whatever --port says.
        "PREFECT_SERVER_UI_API_URL": f"http://{host}:{port}/api",
        **{k: v for k, v in os.environ.items() if k.startswith("PREFECT_SERVER_")},
        **(extra_env or {}),
    }
    # Prefect's own CLI, with its SQLite writes begun IMMEDIATE (svrctl.prefect_serve).
    command = [sys.executable, "-m", "svrctl.prefect_serve", "server", "start"]
    # The database and the log are the owner's only (umask 077 for what the server creates).
    with os.fdopen(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as out:
        process = subprocess.Popen(
            [*command, "--host", host, "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            umask=0o077,
        )
    server = PrefectServer(home, host, port, process, log)
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise PrefectServerError(
                f"prefect server exited early (code {process.returncode}); its log "
                f"({log}) ends with:\n{_tail(log)}"
            )
        try:
            if httpx.get(server.api_url + "/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if progress is not None:
            progress(time.monotonic() - started)
        time.sleep(1.0)
    server.stop()
    raise PrefectServerError(
        f"prefect server was not healthy after {timeout:g} s; its log ({log}) ends with:\n"
        f"{_tail(log)}"
    )


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
