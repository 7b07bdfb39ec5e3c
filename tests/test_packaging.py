"""The CLI as a real process, its import footprint, and what the wheel ships."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SVRCTL = Path(sys.executable).parent / "svrctl"

PROBE = """
import sys
from svrctl.cli import cli
for args in (["server", "list"], ["task", "list"], ["task", "show", "t"],
             ["task", "history", "t"], ["server", "show", "s"]):
    try:
        cli(args, prog_name="svrctl")
    except SystemExit as exc:
        assert exc.code in (0, None), (args, exc.code)
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"prefect", "paramiko", "alembic"})
print("HEAVY", heavy)
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("SVRCTL_")}
    e |= {"SVRCTL_HOME": str(tmp_path / "home"), "SVRCTL_TIMEZONE": "UTC"}
    return e


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_console_script_exit_codes(env: dict[str, str]) -> None:
    assert _run([str(SVRCTL), "--help"], env).returncode == 0
    r = _run([str(SVRCTL), "server", "list"], env)
    assert r.returncode == 2
    assert "run `svrctl db upgrade`" in r.stderr
    assert _run([str(SVRCTL), "db", "upgrade"], env).returncode == 0
    r = _run([str(SVRCTL), "server", "add", "x", "--host", "h", "--port", "-1"], env)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.startswith("error: invalid port")
    assert _run([str(SVRCTL), "server", "add", "s", "--host", "h"], env).returncode == 0


def test_read_commands_import_no_prefect_paramiko_or_alembic(env: dict[str, str]) -> None:
    for args in (["db", "upgrade"], ["server", "add", "s", "--host", "h"],
                 ["task", "add", "t", "--server", "s", "--command", "true",
                  "--schedule", "0 */5 * * * *"]):  # fmt: skip
        assert _run([str(SVRCTL), *args], env).returncode == 0
    r = _run([sys.executable, "-c", PROBE], env)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout


def test_wheel_ships_the_prefect_project_inside_the_svrctl_namespace(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("svrctl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "svrctl/cli/__init__.py",
        "svrctl/flows/__init__.py",
        "svrctl/plugins/__init__.py",
        "svrctl/blocks/__init__.py",
        "svrctl/deployments/__init__.py",
        "svrctl/migrations/env.py",
        "svrctl/migrations/script.py.mako",
        "svrctl/migrations/versions/0001_initial_schema.py",
    ):
        assert expected in names
    for module in (ROOT / "svrctl").rglob("*.py"):
        assert module.relative_to(ROOT).as_posix() in names, f"{module} is not packaged"
    top = {n.split("/")[0] for n in names if not n.startswith("svrctl-")}
    assert top == {"svrctl"}, "nothing may be installed under a generic top-level name"
