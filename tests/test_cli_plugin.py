"""``svrctl plugin list/show``, with built-ins and a third-party plugin found by entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Invoke

THIRD_PARTY = """
from pydantic import BaseModel, ConfigDict, Field
from svrctl.plugin import Plugin, PluginContext, PluginResult


class PingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = Field(description="Host to ping.")
    count: int = Field(default=3, ge=1)


class PingPlugin(Plugin):
    name = "ping"
    description = "Ping a host from the target."
    config_model = PingConfig
    actions = ("check", "report")

    def run(self, ctx: PluginContext, config: BaseModel) -> PluginResult:
        assert isinstance(config, PingConfig)
        result = ctx.runner.run(f"echo pinged {config.host}", timeout=ctx.timeout)
        return PluginResult(success=result.success, summary=result.stdout.strip())
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A directory on PYTHONPATH holding a third-party plugin distribution."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "svrctl_ping.py").write_text(THIRD_PARTY)
    info = root / "svrctl_ping-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: svrctl-ping\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[svrctl.plugins]\nping = svrctl_ping:PingPlugin\n")
    return root


def _svrctl(site: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(site), SVRCTL_HOME=str(tmp_path / "home"))
    return subprocess.run(
        [str(Path(sys.executable).parent / "svrctl"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_list_shows_builtins(svrctl: Invoke) -> None:
    r = svrctl("plugin", "list", "--json")
    assert r.exit_code == 0, r.output
    rows = {p["name"]: p for p in json.loads(r.output)}
    assert {"echo", "health"} <= set(rows)
    assert rows["health"]["source"] == "built-in"
    assert rows["health"]["actions"] == ["check"]
    text = svrctl("plugin", "list").output
    assert "health" in text and "built-in" in text


def test_show_prints_the_config_schema(svrctl: Invoke) -> None:
    r = svrctl("plugin", "show", "health")
    assert r.exit_code == 0, r.output
    assert "actions: check" in r.output
    assert "memory_percent" in r.output and "number >0 <=100 or null" in r.output
    data = json.loads(svrctl("plugin", "show", "health", "--json").output)
    assert data["config_schema"]["properties"]["sample_seconds"]["default"] == 1.0


def test_show_unknown_plugin(svrctl: Invoke) -> None:
    r = svrctl("plugin", "show", "nope")
    assert r.exit_code == 2
    assert "no plugin named 'nope'" in r.output and "health" in r.output


def test_third_party_plugin_is_found_listed_and_validated(site: Path, tmp_path: Path) -> None:
    r = _svrctl(site, tmp_path, "plugin", "list", "--json")
    assert r.returncode == 0, r.stderr
    rows = {p["name"]: p for p in json.loads(r.stdout)}
    assert rows["ping"]["source"] == "entry point svrctl_ping:PingPlugin (svrctl-ping)"
    assert rows["ping"]["actions"] == ["check", "report"]
    shown = _svrctl(site, tmp_path, "plugin", "show", "ping")
    assert "host" in shown.stdout and "(required)" in shown.stdout
    assert _svrctl(site, tmp_path, "db", "upgrade").returncode == 0
    bad = _svrctl(site, tmp_path, "task", "add", "p", "--plugin", "ping", "--config", "{}")
    assert bad.returncode == 2
    assert "plugin_config" in bad.stderr or "host" in bad.stderr
    good = _svrctl(
        site, tmp_path, "task", "add", "p", "--plugin", "ping", "--config", '{"host": "h"}'
    )
    assert good.returncode == 0, good.stderr
    run = _svrctl(site, tmp_path, "task", "run", "p")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "pinged h" in run.stdout
