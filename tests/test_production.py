"""The production files in deploy/ and docs/production.md.

No Docker engine runs where the tests run: the compose file is checked by a
compose client's own parser (`docker compose config` or Debian's
`docker-compose config`, which scripts/test installs), the systemd units by
`systemd-analyze verify` where it exists and by their keys, and every command
they run by svrctl's own command-line parser.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from svrctl.cli import cli as svrctl_cli

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
DOCKERFILE = DEPLOY / "Dockerfile"
SERVER_UNIT = DEPLOY / "systemd" / "svrctl-server.service"
WORKER_UNIT = DEPLOY / "systemd" / "svrctl-worker@.service"
DOC = ROOT / "docs" / "production.md"

# The variables of issue 8, each explained in .env.example and docs/production.md.
VARIABLES = [
    "PREFECT_SERVER_DATABASE_CONNECTION_URL",
    "SVRCTL_DATABASE_URL",
    "PREFECT_API_URL",
    "PREFECT_SERVER_API_AUTH_STRING",
    "PREFECT_API_AUTH_STRING",
    "PREFECT_SERVER_ENCRYPTION_KEY",
    "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED",
]


def compose_client() -> list[str]:
    """The command of a compose client that can parse files here; skip when there is none."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=30
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    pytest.skip(
        "no compose client (docker compose plugin or docker-compose); scripts/test installs one"
    )


def compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "SVRCTL_", "POSTGRES_", "COMPOSE_"))
    }
    return subprocess.run(
        [*compose_client(), "--env-file", str(env_file), "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=DEPLOY,
    )


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """The compose file as the compose client resolves it with .env.example."""
    result = compose_config(ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = yaml.safe_load(result.stdout)
    return parsed


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def parses_as_svrctl(argv: list[str]) -> None:
    """Fail unless ``argv`` (after ``svrctl``) is a valid svrctl command line."""
    command: click.Command = svrctl_cli
    ctx = click.Context(svrctl_cli, info_name="svrctl")
    args = list(argv)
    name = "svrctl"
    while isinstance(command, click.Group):
        name, *args = args
        sub = command.get_command(ctx, name)
        assert sub is not None, f"svrctl has no command {name!r}: {argv}"
        command = sub
    command.make_context(name, args, parent=ctx)  # raises click.UsageError on bad options


# ------------------------------------------------------------------------- compose


def test_compose_file_parses_and_has_the_services(config: dict[str, Any]) -> None:
    services = config["services"]
    assert set(services) == {"postgres", "prefect-server", "migrate", "worker"}
    for name in ("prefect-server", "migrate", "worker"):
        build = services[name]["build"]
        assert Path(build["context"]).resolve() == ROOT
        assert (ROOT / build["dockerfile"]).resolve() == DOCKERFILE
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert "/api/health" in " ".join(services["prefect-server"]["healthcheck"]["test"])
    assert services["prefect-server"]["command"][:3] == ["prefect", "server", "start"]


def test_compose_start_order_waits_for_health_and_the_migration(config: dict[str, Any]) -> None:
    services = config["services"]

    def conditions(name: str) -> dict[str, str]:
        return {k: v["condition"] for k, v in services[name]["depends_on"].items()}

    assert conditions("prefect-server") == {"postgres": "service_healthy"}
    assert conditions("migrate") == {"postgres": "service_healthy"}
    assert conditions("worker") == {
        "prefect-server": "service_healthy",
        "migrate": "service_completed_successfully",
    }
    # The first-start migration is a one-shot service.
    assert services["migrate"]["command"] == ["svrctl", "db", "upgrade"]
    assert str(services["migrate"]["restart"]) == "no"
    parses_as_svrctl(services["migrate"]["command"][1:])
    # The worker command is a real svrctl command line, stopped the clean way.
    assert services["worker"]["command"][0] == "svrctl"
    parses_as_svrctl(services["worker"]["command"][1:])
    assert services["worker"]["stop_signal"] == "SIGINT"


def test_compose_passes_each_service_its_variables(config: dict[str, Any]) -> None:
    services = config["services"]
    server = services["prefect-server"]["environment"]
    worker = services["worker"]["environment"]
    migrate = services["migrate"]["environment"]
    assert server["PREFECT_SERVER_DATABASE_CONNECTION_URL"].startswith(
        "postgresql+asyncpg://svrctl:"
    )
    assert server["PREFECT_SERVER_DATABASE_CONNECTION_URL"].endswith("@postgres:5432/prefect")
    assert server["PREFECT_SERVER_API_AUTH_STRING"]  # auth on
    assert worker["PREFECT_API_AUTH_STRING"] == server["PREFECT_SERVER_API_AUTH_STRING"]
    assert server["PREFECT_SERVER_ENCRYPTION_KEY"]
    assert "flow_runs" in server["PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED"].split(",")
    assert worker["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert worker["SVRCTL_DATABASE_URL"] == migrate["SVRCTL_DATABASE_URL"]
    assert worker["SVRCTL_DATABASE_URL"].endswith("@postgres:5432/svrctl")
    # The app database and Prefect's are separate databases (both use alembic_version).
    password = services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert f":{password}@" in worker["SVRCTL_DATABASE_URL"]
    assert f":{password}@" in server["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    init = (DEPLOY / "postgres-init.sql").read_text()
    assert re.search(r"^CREATE DATABASE prefect;", init, re.M)


def test_compose_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = compose_config(empty)
    assert result.returncode != 0
    assert "set POSTGRES_PASSWORD in deploy/.env" in result.stderr or (
        "set it in deploy/.env" in result.stderr
    ), result.stderr


def test_env_example_documents_every_variable_the_compose_file_uses() -> None:
    example = env_example()
    for name in VARIABLES:
        assert example.get(name), f"{name} has no example value in deploy/.env.example"
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    assert used <= set(example), f"not in .env.example: {used - set(example)}"
    text = ENV_EXAMPLE.read_text()
    # Each variable has a comment above it.
    for name in example:
        before = text.split(f"\n{name}=", 1)[0].rstrip().splitlines()[-1]
        assert before.startswith("#") or before.startswith(tuple(example)), name
    assert example["PREFECT_API_AUTH_STRING"] == example["PREFECT_SERVER_API_AUTH_STRING"]
    assert "Fernet.generate_key()" in text


def test_dockerfile_uses_the_python_image_and_pip_install_dot() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11[-\w.]*$", text, re.M)
    assert re.search(r"^RUN pip install --no-cache-dir \. ", text, re.M)
    # Everything the package build maps into svrctl.* is copied in.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    copied = set(re.findall(r"^COPY (\S+) ", text, re.M))
    assert folders <= copied, folders - copied
    assert re.search(r"^COPY pyproject\.toml README\.md ", text, re.M)


# ------------------------------------------------------------------------- systemd


def unit_entries(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Parse a unit file: section -> [(key, value)], keys may repeat."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = []
            continue
        assert current is not None, f"{path.name}: {line!r} before any section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
        sections[current].append((key, value))
    return sections


def one(entries: list[tuple[str, str]], key: str) -> str:
    values = [v for k, v in entries if k == key]
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


@pytest.mark.parametrize("unit", [SERVER_UNIT, WORKER_UNIT], ids=lambda p: p.name)
def test_systemd_units_have_the_keys_a_service_needs(unit: Path) -> None:
    sections = unit_entries(unit)
    assert set(sections) == {"Unit", "Service", "Install"}
    service = sections["Service"]
    assert one(service, "User") == "svrctl"
    assert one(service, "EnvironmentFile").startswith("/etc/svrctl/")
    assert one(service, "Restart") == "on-failure"
    assert one(sections["Install"], "WantedBy") == "multi-user.target"
    assert "network-online.target" in one(sections["Unit"], "After")
    environment = dict(v.split("=", 1) for k, v in service if k == "Environment")
    assert environment["SVRCTL_HOME"] == "/var/lib/svrctl"
    exec_start = shlex.split(one(service, "ExecStart"))
    assert exec_start[0] == "/opt/svrctl/bin/svrctl"
    argv = [a.replace("%i", "dmz").replace("%H", "host") for a in exec_start[1:]]
    parses_as_svrctl(argv)


def test_systemd_server_unit_runs_svrctl_up_and_the_worker_unit_a_pool() -> None:
    server = unit_entries(SERVER_UNIT)["Service"]
    assert shlex.split(one(server, "ExecStart"))[1:3] == ["up", "--no-demo"]
    assert one(server, "KillSignal") == "SIGINT"  # svrctl up stops cleanly on SIGINT
    worker = unit_entries(WORKER_UNIT)
    assert shlex.split(one(worker["Service"], "ExecStart"))[1:4] == ["worker", "--pool", "%i"]
    assert one(worker["Unit"], "StartLimitIntervalSec") == "0"


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt install systemd)")
    svrctl = str(Path(sys.executable).parent / "svrctl")
    names = []
    for unit, name in ((SERVER_UNIT, SERVER_UNIT.name), (WORKER_UNIT, "svrctl-worker@dmz.service")):
        # verify checks that ExecStart's program exists: point it at this venv's svrctl.
        text = unit.read_text().replace("/opt/svrctl/bin/svrctl", svrctl)
        (tmp_path / name).write_text(text)
        names.append(f"./{name}")
    result = subprocess.run(
        [analyze, "verify", "--man=no", *names],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    if result.returncode != 0 and "Failed to" in result.stderr and "svrctl" not in result.stderr:
        pytest.skip(f"systemd-analyze cannot run here: {result.stderr.strip()}")
    # Unknown keys and bad values are only warnings: any output about the units fails.
    problems = [line for line in result.stderr.splitlines() if "svrctl" in line]
    assert result.returncode == 0 and not problems, result.stderr


# ---------------------------------------------------------------------------- docs


def test_production_doc_explains_the_layout_and_every_variable() -> None:
    text = DOC.read_text()
    for name in VARIABLES:
        assert f"`{name}`" in text, f"docs/production.md does not explain {name}"
    assert "```mermaid" in text or re.search(r"```(text)?\n[^`]*PostgreSQL[^`]*worker", text)
    for needle in (
        "svrctl up --postgres",
        "svrctl worker --pool",
        "docker compose up",
        "svrctl-server.service",
        "svrctl-worker@.service",
        "backup",
    ):
        assert needle in text, needle
    # The worker's fail-fast messages are the ones the doc quotes.
    assert "does not answer" in text
