"""Helpers for plugin tests: stand-in executables on PATH, a bare PATH, a local run."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from svrctl.local import LocalRunner
from svrctl.plugin import PluginContext, PluginResult, get_plugin, validate_config

# What a plugin's shell scripts need besides the tool under test.
BASIC_TOOLS = ("bash", "sh", "env", "id", "cat", "rm", "mktemp")


def stand_in(bindir: Path, name: str, script: str) -> Path:
    """Write an executable ``#!/bin/sh`` script called ``name`` into ``bindir``."""
    path = bindir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def first_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make a directory and put it first on this process's PATH (runs inherit it)."""
    path = tmp_path / "bin"
    path.mkdir()
    monkeypatch.setenv("PATH", f"{path}:{os.environ['PATH']}")
    return path


def bare_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Set PATH to a directory holding only the basic shell tools (no tool under test)."""
    bare = tmp_path / "bare"
    bare.mkdir()
    for tool in BASIC_TOOLS:
        found = shutil.which(tool)
        if found:
            (bare / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(bare))
    return bare


def run_plugin(name: str, config: dict[str, object], timeout: float = 60) -> PluginResult:
    """Run a plugin on the local host, as a plugin task without a server does."""
    plugin = get_plugin(name)
    validated = validate_config(plugin, config)
    from svrctl.plugin import action_of

    ctx = PluginContext(
        runner=LocalRunner(output_limit=1_000_000, name="here"),
        timeout=timeout,
        action=action_of(plugin, validated),
    )
    try:
        return plugin().run(ctx, validated)
    finally:
        ctx.close()
